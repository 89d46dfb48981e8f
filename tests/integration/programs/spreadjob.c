/* A job spread over nodes, with bytes always on their way both ways: the parent feeds each of 4 workers
 * numbers through its own pipe (a few ahead of what the worker has answered), and every worker sends back
 * the square of each number through one shared pipe. The parent prints "pid P" first and, at the end, the
 * sum of the squares and how many came: the same however often the job was saved, ended and restarted. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#define WORKERS 4
#define AHEAD 8

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 1500; /* numbers per worker */
    printf("pid %d\n", (int)getpid());
    fflush(stdout);
    int back[2], to[WORKERS][2];
    if (pipe(back))
        return 2;
    pid_t kids[WORKERS];
    for (int w = 0; w < WORKERS; w++) {
        if (pipe(to[w]))
            return 2;
        kids[w] = fork();
        if (kids[w] == 0) {
            close(back[0]);
            close(to[w][1]);
            long v;
            while (read(to[w][0], &v, sizeof v) == sizeof v) {
                long sq[2] = {w, v * v};
                if (write(back[1], sq, sizeof sq) != sizeof sq)
                    _exit(3);
                usleep(1000);
            }
            _exit(0);
        }
        close(to[w][0]);
    }
    close(back[1]);
    long sent[WORKERS] = {0}, got[WORKERS] = {0}, sum = 0, count = 0;
    for (int w = 0; w < WORKERS; w++)
        for (; sent[w] < AHEAD && sent[w] < n; sent[w]++) {
            long v = w * n + sent[w] + 1;
            if (write(to[w][1], &v, sizeof v) != sizeof v)
                return 4;
        }
    long sq[2];
    while (count < WORKERS * n && read(back[0], sq, sizeof sq) == sizeof sq) {
        int w = (int)sq[0];
        if (w < 0 || w >= WORKERS)
            return 5;
        sum += sq[1];
        count++;
        got[w]++;
        if (sent[w] < n) {
            long v = w * n + sent[w] + 1;
            if (write(to[w][1], &v, sizeof v) != sizeof v)
                return 4;
            sent[w]++;
        }
        if (sent[w] == n && got[w] == n)
            close(to[w][1]);
    }
    int failed = 0;
    for (int w = 0; w < WORKERS; w++) {
        int st;
        waitpid(kids[w], &st, 0);
        failed += !WIFEXITED(st) || WEXITSTATUS(st) != 0;
    }
    printf("sum of squares %ld of %ld numbers, %d workers failed\n", sum, count, failed);
    return count == WORKERS * n && !failed ? 0 : 1;
}
