/* Sources/CRforkSystem/shim.c: crfork_spawn places each source descriptor at its slot, whatever numbers
 * the sources have (the daemon's descriptors may sit at 1000 and above, or inside 0..count-1). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "crfork.h"
#include "check.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* Spawns a shell that writes its slot number i to descriptor i for every slot, with fds[i] (the write
 * end of pipe i) placed there, and checks what each pipe got. `at` are the numbers to put the sources at. */
static void place(const int *at, int count)
{
    int rd[16];
    for (int i = 0; i < count; i++) {
        int p[2];
        CHECK(pipe(p) == 0);
        rd[i] = fcntl(p[0], F_DUPFD_CLOEXEC, 2000 + i);
        int w = fcntl(p[1], F_DUPFD_CLOEXEC, 3000 + i);
        close(p[0]);
        close(p[1]);
        CHECK(rd[i] >= 2000 && w >= 3000);
        CHECK(dup3(w, at[i], O_CLOEXEC) == at[i]);
        close(w);
    }
    char script[512] = "";
    for (int i = 0; i < count; i++) {
        size_t l = strlen(script);
        snprintf(script + l, sizeof script - l, "echo %d >&%d; ", i, i);
    }
    /* Nothing but the slots is open in the child. */
    size_t l = strlen(script);
    snprintf(script + l, sizeof script - l, "[ -e /proc/self/fd/%d ] && echo leaked >&0; exit 0", count + 1);
    char *argv[] = {"sh", "-c", script, NULL};
    pid_t pid = crfork_spawn("/bin/sh", argv, environ, at, count, 0);
    for (int i = 0; i < count; i++)
        close(at[i]);
    /* Some sources took the numbers of this test's stdin, stdout and stderr: back to the saved ones. */
    for (int i = 0; i < 3; i++)
        dup2(500 + i, i);
    CHECK(pid > 0);
    int st = 0;
    CHECK(crfork_wait(pid, &st, 0) == pid && crfork_wifexited(st) && crfork_wexitstatus(st) == 0);
    for (int i = 0; i < count; i++) {
        char got[64] = "", want[16];
        ssize_t n = read(rd[i], got, sizeof got - 1);
        got[n > 0 ? n : 0] = 0;
        snprintf(want, sizeof want, "%d\n", i);
        if (strcmp(got, want) != 0)
            fprintf(stderr, "slot %d (source at %d): got '%s'\n", i, at[i], got);
        CHECK(strcmp(got, want) == 0);
        close(rd[i]);
    }
}

/* crfork_unix_connect: the server sees the abstract name the socket was bound to, and bytes pass; a path
 * nobody listens on and a name too long fail with errno. */
static void unix_connect(void)
{
    char path[] = "/tmp/rfork-test-shim-XXXXXX";
    CHECK(mkdtemp(path) != NULL);
    char sock[64];
    snprintf(sock, sizeof sock, "%s/s", path);
    int l = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    memcpy(a.sun_path, sock, strlen(sock) + 1);
    CHECK(bind(l, (struct sockaddr *)&a, sizeof a) == 0 && listen(l, 1) == 0);
    int c = crfork_unix_connect(sock, "rfork-relay/test/1");
    CHECK(c >= 0);
    CHECK((fcntl(c, F_GETFL) & O_NONBLOCK) && (fcntl(c, F_GETFD) & FD_CLOEXEC));
    int s = accept(l, NULL, NULL);
    CHECK(s >= 0);
    struct sockaddr_un peer;
    socklen_t len = sizeof peer;
    CHECK(getpeername(s, (struct sockaddr *)&peer, &len) == 0);
    CHECK(len == offsetof(struct sockaddr_un, sun_path) + 1 + strlen("rfork-relay/test/1"));
    CHECK(peer.sun_path[0] == 0 && memcmp(peer.sun_path + 1, "rfork-relay/test/1", 18) == 0);
    CHECK(write(c, "hi", 2) == 2);
    char buf[2];
    CHECK(read(s, buf, 2) == 2 && memcmp(buf, "hi", 2) == 0);
    close(s);
    close(c);
    /* The name is free again once the socket is closed. */
    c = crfork_unix_connect(sock, "rfork-relay/test/1");
    CHECK(c >= 0);
    close(c);
    close(l);
    unlink(sock);
    errno = 0;
    CHECK(crfork_unix_connect(sock, "rfork-relay/test/2") == -1 && errno == ENOENT);
    char longname[200];
    memset(longname, 'x', sizeof longname - 1);
    longname[sizeof longname - 1] = 0;
    CHECK(crfork_unix_connect(sock, longname) == -1 && errno == ENAMETOOLONG);
    rmdir(path);
}

int main(void)
{
    for (int i = 0; i < 3; i++)
        dup2(i, 500 + i);
    struct rlimit rl;
    CHECK(getrlimit(RLIMIT_NOFILE, &rl) == 0);
    if (rl.rlim_cur < 4096 && rl.rlim_max >= 4096) {
        rl.rlim_cur = 4096;
        CHECK(setrlimit(RLIMIT_NOFILE, &rl) == 0);
    }
    /* Sources at 1000 and above: moving one to 1000 + i must not clobber another already there. */
    place((int[]){1001, 1000}, 2);
    place((int[]){1000, 1002, 1001}, 3);
    /* Sources inside the slots, swapped and shifted, and one already at its own slot. */
    place((int[]){4, 3, 1000, 1, 0}, 5);
    place((int[]){1, 2, 0}, 3);
    place((int[]){0, 5, 7}, 3);
    unix_connect();
    TEST_DONE("shim");
}
