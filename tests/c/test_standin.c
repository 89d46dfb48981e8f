/* rfork-standin's failures before it relays anything: a signalfd it cannot get, or a bad channel argument.
 * Either way one line on stderr, and it ends as if killed by SIGKILL (its socket closes, so the daemon
 * ends the remote child); never a stand-in that silently drops the child's signals. standin.c is included
 * whole, its main renamed and signalfd replaced by one that can be told to fail. */
#define _GNU_SOURCE
#include <sys/signalfd.h>
#include <errno.h>
static int signalfd_fails;
static int fake_signalfd(int fd, const void *mask, int flags)
{
    if (signalfd_fails) {
        errno = EMFILE;
        return -1;
    }
    return signalfd(fd, mask, flags);
}
#define signalfd fake_signalfd
#define main standin_main
#include "../../librfork/standin.c"
#undef main
#undef signalfd
#include "check.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>

/* Runs the stand-in's main in a child with these arguments; returns its wait status and its stderr. */
static int run(char **argv, int argc, char *err, size_t cap, int *ctl_closed)
{
    int sp[2], ep[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sp) == 0 && pipe(ep) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        close(sp[0]);
        close(ep[0]);
        dup2(sp[1], 3);
        dup2(ep[1], 2);
        _exit(standin_main(argc, argv));
    }
    close(sp[1]);
    close(ep[1]);
    int st = -1;
    CHECK(waitpid(pid, &st, 0) == pid);
    ssize_t n = read(ep[0], err, cap - 1);
    err[n > 0 ? n : 0] = 0;
    char b;
    *ctl_closed = read(sp[0], &b, 1) == 0;
    close(sp[0]);
    close(ep[0]);
    return st;
}

/* The next frame on fd within `ms` milliseconds: its type, or 0 when none came. */
static int next_frame(int fd, int ms, struct rfork_frame *f)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, ms) != 1)
        return 0;
    return rfork_recv(fd, f) > 0 ? f->type : -1;
}

static struct rfork_frame got;

/* A checkpoint's markers (wire.h, RFORK_MSG_MARK): after INPUT the stand-in echoes it and reads its input
 * channels no more; OUTPUT is echoed; RESUME makes it read again. */
static void markers(void)
{
    int sp[2], in[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sp) == 0 && pipe(in) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        close(sp[0]);
        close(in[1]);
        dup2(sp[1], 3);
        dup2(in[0], 4);
        char *argv[] = {"rfork-standin", "3", "session-1", "0:4:1", NULL};
        _exit(standin_main(4, argv));
    }
    close(sp[1]);
    close(in[0]);
    CHECK(write(in[1], "abc", 3) == 3);
    CHECK(next_frame(sp[0], 2000, &got) == RFORK_MSG_DATA && got.len == 7 && memcmp(got.data + 4, "abc", 3) == 0);
    uint32_t phase = RFORK_MARK_INPUT;
    CHECK(rfork_send(sp[0], RFORK_MSG_MARK, &phase, 4, NULL, 0) == 0);
    CHECK(next_frame(sp[0], 2000, &got) == RFORK_MSG_MARK && got.len == 4 && got.data[0] == RFORK_MARK_INPUT);
    CHECK(write(in[1], "def", 3) == 3);
    CHECK(next_frame(sp[0], 200, &got) == 0); /* paused: "def" stays in the pipe */
    phase = RFORK_MARK_OUTPUT;
    CHECK(rfork_send(sp[0], RFORK_MSG_MARK, &phase, 4, NULL, 0) == 0);
    CHECK(next_frame(sp[0], 2000, &got) == RFORK_MSG_MARK && got.data[0] == RFORK_MARK_OUTPUT);
    uint32_t resume[2] = {RFORK_MARK_RESUME, 1};
    CHECK(rfork_send(sp[0], RFORK_MSG_MARK, resume, sizeof resume, NULL, 0) == 0);
    CHECK(next_frame(sp[0], 2000, &got) == RFORK_MSG_DATA && got.len == 7 && memcmp(got.data + 4, "def", 3) == 0);
    uint32_t end[2] = {RFORK_EVENT_EXITED, 5};
    CHECK(rfork_send(sp[0], RFORK_MSG_EVENT, end, sizeof end, NULL, 0) == 0);
    int st = -1;
    CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 5);
    close(sp[0]);
    close(in[1]);
}

/* A full pipe here does not stop the stand-in from reading its socket: what the child wrote waits in its
 * queue (its OUTPUT marker is echoed at once), then reaches the pipe whole and in order. */
static void full_pipe(void)
{
    int sp[2], out[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sp) == 0 && pipe(out) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        close(sp[0]);
        close(out[0]);
        dup2(sp[1], 3);
        dup2(out[1], 4);
        char *argv[] = {"rfork-standin", "3", "session-1", "0:4:2", NULL};
        _exit(standin_main(4, argv));
    }
    close(sp[1]);
    close(out[1]);
    static unsigned char chunk[10000];
    for (int k = 0; k < 20; k++) { /* 200000 bytes, three times the pipe */
        for (size_t j = 0; j < sizeof chunk; j++)
            chunk[j] = (unsigned char)(k * 31 + j);
        uint32_t id = 0;
        CHECK(rfork_send(sp[0], RFORK_MSG_DATA, &id, 4, chunk, sizeof chunk) == 0);
    }
    uint32_t phase = RFORK_MARK_OUTPUT;
    CHECK(rfork_send(sp[0], RFORK_MSG_MARK, &phase, 4, NULL, 0) == 0);
    CHECK(next_frame(sp[0], 2000, &got) == RFORK_MSG_MARK && got.data[0] == RFORK_MARK_OUTPUT);
    static unsigned char all[200000];
    size_t have = 0;
    while (have < sizeof all) {
        ssize_t r = read(out[0], all + have, sizeof all - have);
        CHECK(r > 0);
        have += (size_t)r;
    }
    for (size_t j = 0; j < sizeof all; j++)
        CHECK(all[j] == (unsigned char)((j / sizeof chunk) * 31 + j % sizeof chunk));
    uint32_t end[2] = {RFORK_EVENT_EXITED, 0};
    CHECK(rfork_send(sp[0], RFORK_MSG_EVENT, end, sizeof end, NULL, 0) == 0);
    int st = -1;
    CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    close(sp[0]);
    close(out[0]);
}

int main(void)
{
    markers();
    full_pipe();

    char err[1024];
    int closed = 0;

    signalfd_fails = 1;
    char *a1[] = {"rfork-standin", "3", "session-1", NULL};
    int st = run(a1, 3, err, sizeof err, &closed);
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    CHECK(strstr(err, "rfork: the stand-in of remote child ") == err);
    CHECK(strstr(err, "cannot receive its signals (signalfd: Too many open files); ending the child\n") != NULL);
    CHECK(closed);

    signalfd_fails = 0;
    char *a2[] = {"rfork-standin", "3", "session-1", "0:1:2", "7:1:2", NULL};
    st = run(a2, 5, err, sizeof err, &closed);
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    CHECK(strstr(err, "got a bad channel argument '7:1:2'; ending the child\n") != NULL);
    CHECK(closed);

    TEST_DONE("standin");
}
