/* Signals sent to the child's PID reach it: a handled one, then a default-action one; and SIGKILL. */
#include "common.h"

static volatile sig_atomic_t got;
static void on_usr1(int s) { got = s; }

int main(void)
{
    int ready[2], report[2];
    CHECK(pipe(ready) == 0 && pipe(report) == 0);
    signal(SIGUSR1, on_usr1);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        close(ready[0]);
        close(report[0]);
        where("child");
        CHECK(write(ready[1], "r", 1) == 1);
        while (!got)
            pause();
        dprintf(report[1], "child handled signal %d\n", (int)got);
        for (;;)
            pause(); /* until SIGTERM */
    }
    close(ready[1]);
    close(report[1]);
    char c;
    CHECK(read(ready[0], &c, 1) == 1);
    CHECK(kill(pid, SIGUSR1) == 0);
    char buf[128] = "";
    ssize_t n = read(report[0], buf, sizeof buf - 1);
    CHECK(n > 0);
    fputs(buf, stdout);
    CHECK(kill(pid, SIGTERM) == 0);
    int st;
    CHECK(waitpid(pid, &st, 0) == pid);
    describe("first child", st);

    /* SIGKILL */
    pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        where("second child");
        for (;;)
            pause();
    }
    usleep(300000);
    CHECK(kill(pid, SIGKILL) == 0);
    CHECK(waitpid(pid, &st, 0) == pid);
    describe("second child", st);
    return 0;
}
