/* SIGCHLD reaches the parent when the remote child ends. */
#include "common.h"

static volatile sig_atomic_t chld;
static void on_chld(int s) { (void)s; chld = 1; }

int main(void)
{
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGCHLD);
    sigprocmask(SIG_BLOCK, &block, &old);
    struct sigaction sa = {.sa_handler = on_chld};
    sigaction(SIGCHLD, &sa, NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        sigprocmask(SIG_SETMASK, &old, NULL);
        where("child");
        usleep(100000);
        _exit(7);
    }
    while (!chld)
        sigsuspend(&old);
    printf("parent got SIGCHLD\n");
    int st;
    CHECK(waitpid(pid, &st, 0) == pid);
    describe("child", st);
    return 0;
}
