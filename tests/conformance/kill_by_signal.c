/* wait() reports a child killed by a signal: one it raises itself (default action). */
#include "common.h"

int main(void)
{
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        where("child");
        raise(SIGUSR1);
        _exit(0);
    }
    int st;
    CHECK(waitpid(pid, &st, 0) == pid);
    describe("child", st);
    return 0;
}
