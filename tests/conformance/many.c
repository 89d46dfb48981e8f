/* Several children at once (spread over the nodes), each with its own exit code. */
#include "common.h"

int main(void)
{
    pid_t pids[6];
    for (int i = 0; i < 6; i++) {
        pids[i] = fork();
        CHECK(pids[i] >= 0);
        if (pids[i] == 0) {
            where("child");
            usleep(50000 * (6 - i));
            _exit(10 + i);
        }
    }
    for (int i = 0; i < 6; i++) {
        int st;
        CHECK(waitpid(pids[i], &st, 0) == pids[i]);
        char what[32];
        snprintf(what, sizeof what, "child %d", i);
        describe(what, st);
    }
    return 0;
}
