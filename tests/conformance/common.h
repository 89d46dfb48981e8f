/* Helpers for conformance programs. Each program prints what it observes to stdout; the runner compares
 * the output under a plain fork with the output under `rfork run`. Lines that must differ (the node a
 * child ran on) go to stderr. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void describe(const char *what, int status)
{
    if (WIFEXITED(status))
        printf("%s: exited %d\n", what, WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        printf("%s: killed by signal %d\n", what, WTERMSIG(status));
    else if (WIFSTOPPED(status))
        printf("%s: stopped by signal %d\n", what, WSTOPSIG(status));
    else if (WIFCONTINUED(status))
        printf("%s: continued\n", what);
    fflush(stdout);
}

static void where(const char *who)
{
    char host[256] = "";
    gethostname(host, sizeof host);
    fprintf(stderr, "%s runs on %s\n", who, host);
}

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            printf("check failed: %s (line %d, errno %d)\n", #cond, __LINE__, errno);              \
            fflush(stdout);                                                                        \
            exit(99);                                                                              \
        }                                                                                          \
    } while (0)
