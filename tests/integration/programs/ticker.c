/* A worker to move: prints "ticker K I HOST" every 5 ms for MS milliseconds, then exits with status K.
 * Lines are numbered, so a lost, repeated or reordered one shows. Usage: ticker K MS */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static long long now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

int main(int argc, char **argv)
{
    if (argc != 3)
        return 99;
    int k = atoi(argv[1]);
    long long end = now_ms() + atol(argv[2]);
    setvbuf(stdout, NULL, _IOLBF, 0);
    char host[64];
    for (unsigned long i = 0; now_ms() < end; i++) {
        gethostname(host, sizeof host);
        printf("ticker %d %lu %s\n", k, i, host);
        usleep(5000);
    }
    return k;
}
