/* rfork-standin's failures before it relays anything: a signalfd it cannot get, or a bad channel argument.
 * Either way one line on stderr, and it ends as if killed by SIGKILL (its socket closes, so the daemon
 * ends the remote child); never a stand-in that silently drops the child's signals. standin.c is included
 * whole, its main renamed and signalfd replaced by one that can be told to fail. */
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

int main(void)
{
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
