/* A job three processes deep, spread so that each level runs on another node: the top process prints
 * "pid P" and sends N numbers down to its child, which passes each on, plus one, to its own child (the
 * grandchild), which sends its square back up to the top through a pipe the top made; the top prints
 * the sum of the squares and how many came. Bytes are on their way at every level all the time (the
 * grandchild takes 1 ms per number), and the result is the same however the job was saved and restarted. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static int status_of(pid_t pid)
{
    int st;
    if (waitpid(pid, &st, 0) != pid)
        return 9;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 2500;
    printf("pid %d\n", (int)getpid());
    fflush(stdout);
    int down[2], up[2];
    if (pipe(down) || pipe(up))
        return 2;
    pid_t child = fork();
    if (child < 0)
        return 2;
    if (child == 0) {
        close(down[1]);
        close(up[0]);
        int next[2];
        if (pipe(next))
            _exit(2);
        pid_t grandchild = fork();
        if (grandchild < 0)
            _exit(2);
        if (grandchild == 0) {
            close(next[1]);
            close(down[0]);
            long v;
            while (read(next[0], &v, sizeof v) == sizeof v) {
                long sq = v * v;
                if (write(up[1], &sq, sizeof sq) != sizeof sq)
                    _exit(3);
                usleep(1000);
            }
            _exit(0);
        }
        close(next[0]);
        close(up[1]);
        long v;
        while (read(down[0], &v, sizeof v) == sizeof v) {
            v += 1;
            if (write(next[1], &v, sizeof v) != sizeof v)
                _exit(3);
        }
        close(next[1]);
        _exit(status_of(grandchild));
    }
    close(down[0]);
    close(up[1]);
    for (long i = 1; i <= n; i++)
        if (write(down[1], &i, sizeof i) != sizeof i)
            return 4;
    close(down[1]);
    long sq, sum = 0, count = 0;
    while (read(up[0], &sq, sizeof sq) == sizeof sq) {
        sum += sq;
        count++;
    }
    int st = status_of(child);
    printf("sum of squares %ld of %ld numbers, child ended with %d\n", sum, count, st);
    return count == n && st == 0 ? 0 : 1;
}
