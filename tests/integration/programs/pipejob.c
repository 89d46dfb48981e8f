/* A two-process job joined by a pipe: the child sends 1..N (one a millisecond), the parent adds them up
 * and prints the sum. Prints "pid P" first, so the job can be checkpointed midway; its final line must be
 * the same however often it was saved, ended and restarted. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 3000;
    printf("pid %d\n", (int)getpid());
    fflush(stdout);
    int p[2];
    if (pipe(p))
        return 2;
    pid_t child = fork();
    if (child == 0) {
        close(p[0]);
        for (long i = 1; i <= n; i++) {
            if (write(p[1], &i, sizeof i) != sizeof i)
                _exit(3);
            usleep(1000);
        }
        _exit(0);
    }
    close(p[1]);
    long v, sum = 0, count = 0;
    ssize_t r;
    while ((r = read(p[0], &v, sizeof v)) == sizeof v) {
        sum += v;
        count++;
    }
    int st;
    waitpid(child, &st, 0);
    char host[64];
    gethostname(host, sizeof host);
    fprintf(stderr, "job ends on %s\n", host);
    printf("sum %ld of %ld numbers, child exit %d\n", sum, count, WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    return count == n ? 0 : 1;
}
