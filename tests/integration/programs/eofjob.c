/* A parent sends its child all its numbers at once and closes the pipe; the child (on another node) takes
 * one every 5 ms until end of file and prints their sum. Saved after the parent closed, the child's end of
 * file must still come after a restart (its pipe's writer is gone), or it would wait for ever. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

int main(void)
{
    printf("pid %d\n", (int)getpid());
    fflush(stdout);
    int p[2];
    if (pipe(p))
        return 2;
    pid_t child = fork();
    if (child == 0) {
        close(p[1]);
        long v, sum = 0, count = 0;
        while (read(p[0], &v, sizeof v) == sizeof v) {
            sum += v;
            count++;
            usleep(5000);
        }
        printf("child: sum %ld of %ld numbers\n", sum, count);
        fflush(stdout);
        _exit(0);
    }
    close(p[0]);
    for (long i = 1; i <= 300; i++)
        if (write(p[1], &i, sizeof i) != sizeof i)
            return 3;
    close(p[1]);
    int st;
    waitpid(child, &st, 0);
    printf("parent: child exit %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    return 0;
}
