/* A CPU-bound worker for the balancing tests: `spin calibrate` prints how many rounds one second of CPU
 * takes here; `spin ROUNDS NAME` does that many rounds and prints the node it started and ended on. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static volatile unsigned long sink;

static void round_of_work(void)
{
    for (unsigned long i = 0; i < 100000; i++)
        sink += i * i;
}

int main(int argc, char **argv)
{
    char start[64] = "", end[64] = "";
    if (argc == 2) {
        struct timespec t0, t;
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t0);
        unsigned long rounds = 0;
        do {
            round_of_work();
            rounds++;
            clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
        } while ((t.tv_sec - t0.tv_sec) + (t.tv_nsec - t0.tv_nsec) / 1e9 < 1.0);
        printf("%lu\n", rounds);
        return 0;
    }
    if (argc != 3)
        return 2;
    gethostname(start, sizeof start - 1);
    unsigned long rounds = strtoul(argv[1], NULL, 10);
    for (unsigned long r = 0; r < rounds; r++)
        round_of_work();
    gethostname(end, sizeof end - 1);
    printf("%s start %s end %s\n", argv[2], start, end);
    return 0;
}
