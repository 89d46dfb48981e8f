/* A remote child can fork again and exec: it runs a shell pipeline and reports its status. */
#include "common.h"

int main(void)
{
    fflush(stdout);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        where("child");
        pid_t g = fork();
        CHECK(g >= 0);
        if (g == 0) {
            execl("/bin/sh", "sh", "-c", "echo grandchild says hi | tr a-z A-Z; (exit 5)", (char *)NULL);
            _exit(127);
        }
        int st;
        CHECK(waitpid(g, &st, 0) == g);
        describe("grandchild", st);
        execl("/bin/sh", "sh", "-c", "echo child exec ok; exit 9", (char *)NULL);
        _exit(127);
    }
    int st;
    CHECK(waitpid(pid, &st, 0) == pid);
    describe("child", st);
    return 0;
}
