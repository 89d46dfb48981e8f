/*
 * The demo's sample program: an ordinary C program that knows nothing of rfork. The parent fills
 * 16 MiB with data, forks 4 workers that each sum a quarter of it, and collects their results
 * through a pipe. Under `rfork run` the workers run on other nodes with the parent's memory.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define WORKERS 4
#define WORDS (16u << 20) / sizeof(unsigned long)

int main(void)
{
    unsigned long *data = malloc(WORDS * sizeof *data);
    if (!data)
        return 1;
    for (size_t i = 0; i < WORDS; i++)
        data[i] = i * 2654435761u;
    int p[2];
    if (pipe(p) < 0)
        return 1;
    pid_t pids[WORKERS];
    for (int w = 0; w < WORKERS; w++) {
        pids[w] = fork();
        if (pids[w] < 0)
            return 1;
        if (pids[w] == 0) {
            close(p[0]);
            unsigned long sum = 0;
            for (size_t i = w * (WORDS / WORKERS); i < (w + 1) * (WORDS / WORKERS); i++)
                sum += data[i];
            char host[64] = "";
            gethostname(host, sizeof host);
            dprintf(p[1], "%d %d %s %lu\n", w, getpid(), host, sum);
            _exit(w);
        }
    }
    close(p[1]);
    FILE *in = fdopen(p[0], "r");
    unsigned long total = 0, expect = 0, sum;
    int w, pid;
    char host[64];
    while (fscanf(in, "%d %d %63s %lu", &w, &pid, host, &sum) == 4) {
        printf("worker %d  pid %-7d ran on %-8s partial sum %lu\n", w, pid, host, sum);
        total += sum;
    }
    for (int k = 0; k < WORKERS; k++) {
        int st;
        waitpid(pids[k], &st, 0);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != k)
            printf("worker %d ended wrongly (status %#x)\n", k, st);
    }
    for (size_t i = 0; i < WORDS; i++)
        expect += data[i];
    printf("total %lu: %s\n", total, total == expect ? "matches the parent's own sum" : "WRONG");
    return total == expect ? 0 : 1;
}
