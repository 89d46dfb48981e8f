/* Synchronization across nodes through process-shared objects in shared anonymous memory: POSIX unnamed
 * semaphores handed back and forth, a mutex several processes contend for, and a condition variable
 * between a producer and a consumer; then named POSIX semaphores (sem_open, unlinked at once, as
 * multiprocessing makes them: files under /dev/shm) handed back and forth; then unnamed semaphores
 * between two processes that block every signal. Each rests on futexes: a wake on one node must reach a waiter on
 * another. Prints what it counted (the same under plain fork and under rfork run); exits 1 if anything
 * is wrong or a child fails. Each child says on stderr which host it runs on. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define ROUNDS 100
#define WORKERS 3
#define INCREMENTS 300
#define ITEMS 200
#define RING 8
#define NAMED_ROUNDS 30
#define BLOCKED_ROUNDS 12

struct shared {
    sem_t ping, pong;
    long value;
    pthread_mutex_t lock;
    long counter;
    pthread_mutex_t ring_lock;
    pthread_cond_t not_empty, not_full;
    int ring[RING];
    int head, count;
    long named_value;
    sem_t blocked_ping, blocked_pong;
    long blocked_value;
};

static void where(const char *who)
{
    char host[64] = "";
    gethostname(host, sizeof host);
    fprintf(stderr, "%s runs on %s\n", who, host);
}

/* sem_wait, but a wake lost for good fails the run after 10 s instead of hanging it (these waiters block
 * every signal, so nothing else would end them). */
static int wait_long(sem_t *sem)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    t.tv_sec += 10;
    while (sem_timedwait(sem, &t) != 0)
        if (errno != EINTR)
            return -1;
    return 0;
}

static int wait_all(pid_t *pids, int n)
{
    int bad = 0;
    for (int i = 0; i < n; i++) {
        int st;
        if (waitpid(pids[i], &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
            bad++;
    }
    return bad;
}

int main(void)
{
    struct shared *s = mmap(NULL, sizeof *s, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (s == MAP_FAILED)
        return 2;
    pthread_mutexattr_t ma;
    pthread_condattr_t ca;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
    pthread_condattr_init(&ca);
    pthread_condattr_setpshared(&ca, PTHREAD_PROCESS_SHARED);
    sem_init(&s->ping, 1, 0);
    sem_init(&s->pong, 1, 0);
    sem_init(&s->blocked_ping, 1, 0);
    sem_init(&s->blocked_pong, 1, 0);
    pthread_mutex_init(&s->lock, &ma);
    pthread_mutex_init(&s->ring_lock, &ma);
    pthread_cond_init(&s->not_empty, &ca);
    pthread_cond_init(&s->not_full, &ca);
    int failed = 0;

    /* Semaphores: the parent posts, the child waits, adds and posts back. */
    pid_t c = fork();
    if (c == 0) {
        where("semaphore child");
        for (int i = 0; i < ROUNDS; i++) {
            sem_wait(&s->ping);
            s->value++;
            sem_post(&s->pong);
        }
        _exit(0);
    }
    for (int i = 0; i < ROUNDS; i++) {
        sem_post(&s->ping);
        sem_wait(&s->pong);
    }
    failed += wait_all(&c, 1);
    printf("semaphores: %d rounds, value %ld\n", ROUNDS, s->value);

    /* A mutex contended by workers on several nodes. */
    pid_t w[WORKERS];
    for (int i = 0; i < WORKERS; i++) {
        w[i] = fork();
        if (w[i] == 0) {
            where("mutex worker");
            for (int k = 0; k < INCREMENTS; k++) {
                pthread_mutex_lock(&s->lock);
                long v = s->counter;
                s->counter = v + 1;
                pthread_mutex_unlock(&s->lock);
            }
            _exit(0);
        }
    }
    failed += wait_all(w, WORKERS);
    printf("mutex: %d workers, counter %ld\n", WORKERS, s->counter);

    /* A condition variable: the child produces into a small ring, the parent consumes. */
    c = fork();
    if (c == 0) {
        where("producer");
        for (int i = 1; i <= ITEMS; i++) {
            pthread_mutex_lock(&s->ring_lock);
            while (s->count == RING)
                pthread_cond_wait(&s->not_full, &s->ring_lock);
            s->ring[(s->head + s->count) % RING] = i;
            s->count++;
            pthread_cond_signal(&s->not_empty);
            pthread_mutex_unlock(&s->ring_lock);
        }
        _exit(0);
    }
    long sum = 0;
    for (int i = 0; i < ITEMS; i++) {
        pthread_mutex_lock(&s->ring_lock);
        while (s->count == 0)
            pthread_cond_wait(&s->not_empty, &s->ring_lock);
        sum += s->ring[s->head];
        s->head = (s->head + 1) % RING;
        s->count--;
        pthread_cond_signal(&s->not_full);
        pthread_mutex_unlock(&s->ring_lock);
    }
    failed += wait_all(&c, 1);
    printf("condition variable: %d items, sum %ld\n", ITEMS, sum);

    /* Named semaphores, unlinked at once: each is a small file mapping of its own. */
    char ping_name[64], pong_name[64];
    snprintf(ping_name, sizeof ping_name, "/rfork-sync-ping-%d", (int)getpid());
    snprintf(pong_name, sizeof pong_name, "/rfork-sync-pong-%d", (int)getpid());
    sem_t *ping = sem_open(ping_name, O_CREAT | O_EXCL, 0600, 0);
    sem_t *pong = sem_open(pong_name, O_CREAT | O_EXCL, 0600, 0);
    sem_unlink(ping_name);
    sem_unlink(pong_name);
    if (ping == SEM_FAILED || pong == SEM_FAILED)
        return 2;
    c = fork();
    if (c == 0) {
        where("named semaphore child");
        for (int i = 0; i < NAMED_ROUNDS; i++) {
            sem_wait(ping);
            s->named_value++;
            sem_post(pong);
        }
        _exit(0);
    }
    for (int i = 0; i < NAMED_ROUNDS; i++) {
        sem_post(ping);
        sem_wait(pong);
    }
    failed += wait_all(&c, 1);
    printf("named semaphores: %d rounds, value %ld\n", NAMED_ROUNDS, s->named_value);

    /* Waiters that block every signal (as sigwait users do): rforkd cannot interrupt them, so a wake
     * from another node must reach them another way. Posts come at once, after a few milliseconds and
     * after longer than rforkd's 20 ms scan, so waiters both seen and not yet seen asleep are covered. */
    static const int pause_us[] = {0, 3000, 40000};
    sigset_t all, before;
    sigfillset(&all);
    c = fork();
    if (c == 0) {
        where("blocked-signals child");
        pthread_sigmask(SIG_SETMASK, &all, NULL);
        for (int i = 0; i < BLOCKED_ROUNDS; i++) {
            if (wait_long(&s->blocked_ping) != 0) {
                fprintf(stderr, "blocked-signals child: no post in 10 s\n");
                _exit(1);
            }
            s->blocked_value++;
            usleep(pause_us[(i + 1) % 3]);
            sem_post(&s->blocked_pong);
        }
        _exit(0);
    }
    pthread_sigmask(SIG_SETMASK, &all, &before);
    for (int i = 0; i < BLOCKED_ROUNDS; i++) {
        usleep(pause_us[i % 3]);
        sem_post(&s->blocked_ping);
        if (wait_long(&s->blocked_pong) != 0) {
            fprintf(stderr, "blocked-signals parent: no post in 10 s\n");
            break;
        }
    }
    pthread_sigmask(SIG_SETMASK, &before, NULL);
    failed += wait_all(&c, 1);
    printf("semaphores with every signal blocked: %d rounds, value %ld\n", BLOCKED_ROUNDS, s->blocked_value);

    int ok = s->value == ROUNDS && s->counter == (long)WORKERS * INCREMENTS && sum == (long)ITEMS * (ITEMS + 1) / 2 &&
             s->named_value == NAMED_ROUNDS && s->blocked_value == BLOCKED_ROUNDS;
    printf("children failed: %d\n", failed);
    return ok && !failed ? 0 : 1;
}
