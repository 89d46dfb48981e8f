/* SIGSTOP stops the child (no output while stopped, waitpid sees it stopped), SIGCONT resumes it. */
#include "common.h"
#include <poll.h>

static int quiet_for(int fd, int ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, ms) == 0;
}

static void drain(int fd)
{
    char buf[4096];
    while (!quiet_for(fd, 300))
        if (read(fd, buf, sizeof buf) <= 0)
            break;
}

int main(void)
{
    int p[2];
    CHECK(pipe(p) == 0);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        close(p[0]);
        where("child");
        for (int i = 0;; i++) {
            dprintf(p[1], "tick %d\n", i);
            usleep(20000);
        }
    }
    close(p[1]);
    char buf[4096];
    CHECK(read(p[0], buf, sizeof buf) > 0); /* it runs */
    CHECK(kill(pid, SIGSTOP) == 0);
    int st;
    CHECK(waitpid(pid, &st, WUNTRACED) == pid);
    describe("child", st);
    drain(p[0]); /* what it wrote before it stopped */
    printf("quiet while stopped: %s\n", quiet_for(p[0], 500) ? "yes" : "no");
    CHECK(kill(pid, SIGCONT) == 0);
    CHECK(waitpid(pid, &st, WCONTINUED) == pid);
    describe("child", st);
    printf("runs again: %s\n", read(p[0], buf, sizeof buf) > 0 ? "yes" : "no");
    CHECK(kill(pid, SIGKILL) == 0);
    CHECK(waitpid(pid, &st, 0) == pid);
    describe("child", st);
    return 0;
}
