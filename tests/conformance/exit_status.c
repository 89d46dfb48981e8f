/* fork() returns the child's PID to the parent and 0 to the child; getpid() in the child equals what
 * the parent got; the child has the parent's memory; wait() reports the exact exit code. */
#include "common.h"

static char memory[1 << 20];

int main(void)
{
    for (size_t i = 0; i < sizeof memory; i++)
        memory[i] = (char)(i * 7);
    int p[2];
    CHECK(pipe(p) == 0);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        close(p[0]);
        where("child");
        long sum = 0;
        for (size_t i = 0; i < sizeof memory; i++)
            sum += memory[i];
        pid_t me = getpid();
        dprintf(p[1], "%d %ld\n", (int)me, sum);
        _exit(42);
    }
    close(p[1]);
    char buf[128] = "";
    ssize_t n = read(p[0], buf, sizeof buf - 1);
    CHECK(n > 0);
    int cpid;
    long sum;
    CHECK(sscanf(buf, "%d %ld", &cpid, &sum) == 2);
    long expect = 0;
    for (size_t i = 0; i < sizeof memory; i++)
        expect += memory[i];
    printf("child saw its own pid: %s\n", cpid == pid ? "yes" : "no");
    printf("child saw parent's memory: %s\n", sum == expect ? "yes" : "no");
    int st;
    CHECK(waitpid(pid, &st, 0) == pid);
    describe("child", st);
    return 0;
}
