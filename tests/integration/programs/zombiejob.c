/* A job whose children end long before their parent reaps them: the parent prints "pid P", starts
 * 3 children that each print a line and end at once with their own status (one killed by a signal),
 * and one that sleeps on, sleeps itself for 3 s (a checkpoint finds 3 zombies and a sleeper), then
 * reaps them all in order and prints what each ended with: the same after any restart. */
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define KIDS 4

int main(void)
{
    printf("pid %d\n", (int)getpid());
    fflush(stdout);
    pid_t kids[KIDS];
    for (int k = 0; k < KIDS; k++) {
        kids[k] = fork();
        if (kids[k] < 0)
            return 2;
        if (kids[k] == 0) {
            if (k == KIDS - 1) { /* the sleeper */
                struct timespec t = {4, 0};
                while (nanosleep(&t, &t) != 0)
                    ;
                _exit(40);
            }
            printf("child %d ends\n", k);
            fflush(stdout);
            if (k == 2)
                raise(SIGTERM);
            _exit(10 + k);
        }
    }
    struct timespec t = {3, 0};
    while (nanosleep(&t, &t) != 0)
        ;
    printf("reaped");
    for (int k = 0; k < KIDS; k++) {
        int st;
        if (waitpid(kids[k], &st, 0) != kids[k])
            return 3;
        if (WIFEXITED(st))
            printf(" exit %d", WEXITSTATUS(st));
        else
            printf(" signal %d", WTERMSIG(st));
    }
    printf("\n");
    return 0;
}
