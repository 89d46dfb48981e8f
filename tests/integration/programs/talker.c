/* A long-running process to move while it talks: prints "pid N", then "tick I HOST" every 2 ms, answers
 * each line it reads on stdin with "echo LINE HOST", prints "signal USR1 HOST" on SIGUSR1 and exits with
 * N on the line "exit N". Ticks are numbered, so a lost, repeated or reordered line shows. With an
 * argument T, T more threads print "thread K I HOST" every 3 ms, numbered the same way. With a second
 * argument M, it first fills M MiB of memory (a move then has that much to carry). */
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t usr1;
static void on_usr1(int s) { (void)s; usr1 = 1; }

static void *worker(void *arg)
{
    long k = (long)arg;
    char host[64];
    for (unsigned long i = 0;; i++) {
        gethostname(host, sizeof host);
        printf("thread %ld %lu %s\n", k, i, host);
        usleep(3000);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    signal(SIGUSR1, on_usr1);
    setvbuf(stdout, NULL, _IOLBF, 0);
    size_t mib = argc > 2 ? (size_t)atol(argv[2]) : 0;
    char *memory = mib ? malloc(mib << 20) : NULL;
    if (mib && !memory)
        return 4;
    for (size_t i = 0; i < (mib << 20); i += 4096)
        memory[i] = (char)i;
    printf("pid %d\n", (int)getpid());
    for (long k = 1; argc > 1 && k <= atol(argv[1]); k++) {
        pthread_t t;
        pthread_create(&t, NULL, worker, (void *)k);
    }
    char host[64], line[256];
    size_t have = 0;
    for (unsigned long tick = 0;; tick++) {
        gethostname(host, sizeof host);
        printf("tick %lu %s\n", tick, host);
        if (usr1) {
            usr1 = 0;
            printf("signal USR1 %s\n", host);
        }
        struct pollfd p = {.fd = 0, .events = POLLIN};
        if (poll(&p, 1, 2) > 0) {
            ssize_t n = read(0, line + have, sizeof line - 1 - have);
            if (n <= 0)
                return 3;
            have += (size_t)n;
            line[have] = 0;
            char *nl;
            while ((nl = strchr(line, '\n')) != NULL) {
                *nl = 0;
                if (strncmp(line, "exit ", 5) == 0) {
                    /* Not exit(): glibc's exit flushes stdout without taking its lock, under a thread that
                     * may be writing its line, and that line can come out twice (with or without rfork).
                     * With the lock held, no thread is inside printf; _exit flushes nothing again. */
                    int code = atoi(line + 5);
                    flockfile(stdout);
                    fflush(stdout);
                    _exit(code);
                }
                printf("echo %s %s\n", line, host);
                size_t used = (size_t)(nl + 1 - line);
                memmove(line, nl + 1, have - used + 1);
                have -= used;
            }
        }
    }
}
