/*
 * A running process with two threads and a System V segment, moved by `rfork migrate` (a test moves it;
 * this program only says where it is). It makes the segment (IPC_PRIVATE, or with a key from ftok),
 * attaches it, and both threads keep adding to the segment: each to its own counter and both to a shared
 * atomic total. It writes its PID to argv[1]. Once it sees itself on another node, each thread adds 2000
 * times more; then the counters must equal what each thread counted, a second attach must see the same
 * total, and IPC_STAT must still give the size. It prints one line:
 *   "segment right on NODE, second attach agrees, size 8192"  (or what was wrong),
 * removes the segment and exits 0. Without a move within argv[3] seconds (default 60) it prints
 * "stayed on NODE" after the same checks.
 *
 * usage: sysv_migrate PIDFILE private|key [SECONDS]
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/shm.h>
#include <time.h>
#include <unistd.h>

#define SIZE 8192
#define MORE 2000

struct shared {
    long mine[2];
    long total;
};

static struct shared *s;
static char start[64];
static double deadline;
static int moved; /* set by the main thread once the process runs elsewhere */

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

struct worker {
    int index;
    long adds;
};

static void *work(void *arg)
{
    struct worker *w = arg;
    long after = -1;
    struct timespec pause = {0, 200000};
    for (;;) {
        if (after < 0 && __atomic_load_n(&moved, __ATOMIC_SEQ_CST))
            after = 0;
        if (after >= MORE || (after < 0 && now() > deadline))
            break;
        s->mine[w->index]++;
        __atomic_add_fetch(&s->total, 1, __ATOMIC_SEQ_CST);
        w->adds++;
        if (after >= 0)
            after++;
        nanosleep(&pause, NULL);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: sysv_migrate PIDFILE private|key [SECONDS]\n");
        return 2;
    }
    key_t key = IPC_PRIVATE;
    if (strcmp(argv[2], "key") == 0 && (key = ftok("/", 'm' + (getpid() & 0x3f))) == -1) {
        perror("ftok");
        return 1;
    }
    int id = shmget(key, SIZE, IPC_CREAT | 0600);
    if (id < 0) {
        perror("shmget");
        return 1;
    }
    s = shmat(id, NULL, 0);
    if (s == (void *)-1) {
        perror("shmat");
        return 1;
    }
    gethostname(start, sizeof start);
    deadline = now() + (argc > 3 ? atof(argv[3]) : 60);
    struct worker w[2] = {{.index = 0}, {.index = 1}};
    pthread_t t;
    if (pthread_create(&t, NULL, work, &w[1]) != 0)
        return 1;
    FILE *f = fopen(argv[1], "w");
    if (f) {
        fprintf(f, "%d\n", (int)getpid());
        fclose(f);
    }
    /* The main thread watches where it runs between its own adds. */
    pthread_t self_worker;
    if (pthread_create(&self_worker, NULL, work, &w[0]) != 0)
        return 1;
    char h[64] = "";
    while (now() < deadline) {
        if (gethostname(h, sizeof h) == 0 && strcmp(h, start) != 0) {
            __atomic_store_n(&moved, 1, __ATOMIC_SEQ_CST);
            break;
        }
        usleep(10000);
    }
    pthread_join(self_worker, NULL);
    pthread_join(t, NULL);
    gethostname(h, sizeof h);

    char wrong[256] = "";
    size_t n = 0;
    for (int i = 0; i < 2; i++)
        if (s->mine[i] != w[i].adds)
            n += snprintf(wrong + n, sizeof wrong - n, "thread %d counted %ld, segment %ld; ", i, w[i].adds,
                          s->mine[i]);
    if (s->total != w[0].adds + w[1].adds)
        n += snprintf(wrong + n, sizeof wrong - n, "total %ld, threads %ld; ", s->total, w[0].adds + w[1].adds);
    struct shared *again = shmat(id, NULL, SHM_RDONLY);
    if (again == (void *)-1)
        n += snprintf(wrong + n, sizeof wrong - n, "second shmat failed: %m; ");
    else if (again->total != s->total)
        n += snprintf(wrong + n, sizeof wrong - n, "second attach reads %ld; ", again->total);
    struct shmid_ds ds;
    if (shmctl(id, IPC_STAT, &ds) != 0 || ds.shm_segsz != SIZE)
        n += snprintf(wrong + n, sizeof wrong - n, "IPC_STAT failed or wrong size; ");
    if (n)
        printf("WRONG on %s: %s\n", h, wrong);
    else if (moved)
        printf("segment right on %s, second attach agrees, size %d\n", h, SIZE);
    else
        printf("stayed on %s\n", h);
    if (again != (void *)-1)
        shmdt(again);
    shmctl(id, IPC_RMID, NULL);
    shmdt(s);
    return 0;
}
