/* A job whose processes share memory, to be saved and restarted midway: shared anonymous memory holding
 * a process-shared mutex and a counter, and a named POSIX semaphore unlinked at once (a file under
 * /dev/shm, as multiprocessing makes them). WORKERS children add to the counter under the mutex, slowly,
 * and post the semaphore when done; the parent waits for each post and each exit, then prints the sum,
 * the same under plain fork and under rfork, whenever the job is saved and wherever it is restarted.
 * Prints "pid N" (the parent) and "worker N" (each child) first, and on stderr the host it ends on. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define WORKERS 3
#define ROUNDS 60

struct shared {
    pthread_mutex_t lock;
    long counter;
    long rounds[WORKERS];
};

int main(void)
{
    struct shared *s = mmap(NULL, sizeof *s, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (s == MAP_FAILED)
        return 2;
    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
    pthread_mutex_init(&s->lock, &ma);
    char name[64];
    snprintf(name, sizeof name, "/shmjob-%d", (int)getpid());
    sem_t *done = sem_open(name, O_CREAT | O_EXCL, 0600, 0);
    if (done == SEM_FAILED)
        return 2;
    sem_unlink(name);
    printf("pid %d\n", (int)getpid());
    fflush(stdout);
    pid_t pids[WORKERS];
    for (int w = 0; w < WORKERS; w++) {
        pids[w] = fork();
        if (pids[w] < 0)
            return 2;
        if (pids[w] == 0) {
            for (int i = 0; i < ROUNDS; i++) {
                pthread_mutex_lock(&s->lock);
                s->counter += (long)(w + 1) * (i + 1);
                s->rounds[w]++;
                pthread_mutex_unlock(&s->lock);
                struct timespec t = {0, 50 * 1000 * 1000};
                nanosleep(&t, NULL);
            }
            sem_post(done);
            _exit(0);
        }
        printf("worker %d\n", (int)pids[w]);
        fflush(stdout);
    }
    int bad = 0;
    for (int w = 0; w < WORKERS; w++)
        if (sem_wait(done) != 0)
            bad++;
    for (int w = 0; w < WORKERS; w++) {
        int st;
        if (waitpid(pids[w], &st, 0) != pids[w] || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
            bad++;
    }
    long rounds = 0;
    for (int w = 0; w < WORKERS; w++)
        rounds += s->rounds[w];
    printf("sum %ld rounds %ld\n", s->counter, rounds);
    char host[64] = "";
    gethostname(host, sizeof host);
    fprintf(stderr, "job ends on %s\n", host);
    return bad ? 1 : 0;
}
