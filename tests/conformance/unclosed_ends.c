/* Children that never close the pipe ends they do not use (common in real code): one reads what the
 * parent writes, one writes what the parent reads. The parent must get every byte in both cases. */
#include "common.h"

int main(void)
{
    int down[2], up[2];
    CHECK(pipe(down) == 0 && pipe(up) == 0);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) { /* keeps all four ends */
        where("child");
        char buf[16] = "";
        CHECK(read(down[0], buf, 4) == 4);
        dprintf(up[1], "child got %s\n", buf);
        _exit(0);
    }
    usleep(200000);
    CHECK(write(down[1], "ping", 4) == 4);
    char line[64] = "";
    CHECK(read(up[0], line, sizeof line - 1) > 0);
    fputs(line, stdout);
    int st;
    CHECK(waitpid(pid, &st, 0) == pid);
    describe("child", st);

    int res[2];
    CHECK(pipe(res) == 0);
    for (int round = 0; round < 3; round++) {
        pid = fork();
        CHECK(pid >= 0);
        if (pid == 0) { /* writes, never closes the read end */
            where("writer child");
            long v = 1000 + round;
            CHECK(write(res[1], &v, sizeof v) == (ssize_t)sizeof v);
            _exit(0);
        }
        long v = 0;
        CHECK(read(res[0], &v, sizeof v) == (ssize_t)sizeof v);
        printf("parent read %ld\n", v);
        CHECK(waitpid(pid, &st, 0) == pid);
    }
    return 0;
}
