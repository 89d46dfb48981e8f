/* Prints how far the child's CLOCK_MONOTONIC and CLOCK_BOOTTIME stand from its parent's, in
 * microseconds, measured against CLOCK_REALTIME on both sides (nodes keep realtime in sync). A child
 * moved to another node must agree with its parent within milliseconds. */
#include <stdio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long long ns(clockid_t c)
{
    struct timespec ts;
    clock_gettime(c, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* (clock - realtime) read back to back. */
static long long offset(clockid_t c)
{
    long long r1 = ns(CLOCK_REALTIME), v = ns(c), r2 = ns(CLOCK_REALTIME);
    return v - (r1 + r2) / 2;
}

int main(void)
{
    long long mono = offset(CLOCK_MONOTONIC), boot = offset(CLOCK_BOOTTIME);
    int fds[2];
    if (pipe(fds))
        return 2;
    pid_t p = fork();
    if (p == 0) {
        char h[64];
        gethostname(h, sizeof h);
        fprintf(stderr, "child runs on %s\n", h);
        long long d[2] = {offset(CLOCK_MONOTONIC) - mono, offset(CLOCK_BOOTTIME) - boot};
        if (write(fds[1], d, sizeof d) != sizeof d)
            _exit(1);
        _exit(0);
    }
    close(fds[1]);
    long long d[2];
    if (read(fds[0], d, sizeof d) != sizeof d)
        return 1;
    int st;
    waitpid(p, &st, 0);
    printf("monotonic %lld us, boottime %lld us\n", d[0] / 1000, d[1] / 1000);
    return 0;
}
