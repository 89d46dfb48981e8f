/* Processes on several nodes read, write and atomically add in shared anonymous memory inherited across
 * fork, in a random order fixed by a seed per process, and check what sequential consistency promises:
 *  - atomic adds are never lost: the total is the sum of every process's adds;
 *  - reads of one location never go back in time (each process's own counter, all on one page, so the
 *    page is falsely shared by every writer);
 *  - message passing: a process writes its data page, then its flag; whoever sees the flag sees the data.
 * Every check runs in every process. Prints the totals (the same under plain fork and under rfork run,
 * since the seeds fix every process's operations) and the violations; exits 1 on any violation.
 * usage: shm_stress [PROCESSES [ROUNDS [KIND]]], KIND anon (MAP_SHARED|MAP_ANONYMOUS, the default), memfd
 * or posix (shm_open, unlinked at once); each child says on stderr which host it ran on. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAXP 8
#define PAGE 4096

struct layout {
    long total;                 /* page 0: atomic adds */
    char pad0[PAGE - sizeof(long)];
    long slot[MAXP];            /* page 1: each process's own counter */
    char pad1[PAGE - MAXP * sizeof(long)];
    long flag[MAXP];            /* page 2: each process's last message number */
    char pad2[PAGE - MAXP * sizeof(long)];
    long result[MAXP];          /* page 3: each process's adds, set at its end */
    long ready;                 /* processes that have started: all start together */
    char pad3[PAGE - (MAXP + 1) * sizeof(long)];
    struct {
        long value;             /* pages 4..: each process's message data, a page each */
        char pad[PAGE - sizeof(long)];
    } data[MAXP];
};

static unsigned long next(unsigned long *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* What process i does: counts of adds and own-counter writes are returned for the parent's check. */
static long run(struct layout *m, int i, int n, int rounds, long *writes, int check)
{
    unsigned long seed = 0x9e3779b97f4a7c15ul * (unsigned long)(i + 1);
    long adds = 0, mine = 0, violations = 0;
    long seen[MAXP] = {0};
    *writes = 0;
    for (int r = 0; r < rounds; r++) {
        switch (next(&seed) % 4) {
        case 0:
            if (check)
                __atomic_add_fetch(&m->total, 1, __ATOMIC_SEQ_CST);
            adds++;
            break;
        case 1:
            if (check)
                __atomic_store_n(&m->slot[i], __atomic_load_n(&m->slot[i], __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED);
            (*writes)++;
            break;
        case 2:
            for (int j = 0; check && j < n; j++) {
                long v = __atomic_load_n(&m->slot[j], __ATOMIC_RELAXED);
                if (v < seen[j]) {
                    fprintf(stderr, "process %d: counter %d went back from %ld to %ld\n", i, j, seen[j], v);
                    violations++;
                }
                seen[j] = v;
            }
            break;
        case 3:
            mine++;
            if (!check)
                break;
            m->data[i].value = mine;
            __atomic_store_n(&m->flag[i], mine, __ATOMIC_RELEASE);
            for (int j = 0; j < n; j++) {
                long f = __atomic_load_n(&m->flag[j], __ATOMIC_ACQUIRE);
                long d = *(volatile long *)&m->data[j].value;
                if (d < f) {
                    fprintf(stderr, "process %d: saw flag %ld of %d but its data %ld\n", i, f, j, d);
                    violations++;
                }
            }
            break;
        }
    }
    if (check)
        m->result[i] = adds;
    return violations ? -1 : adds;
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 3;
    int rounds = argc > 2 ? atoi(argv[2]) : 400;
    if (n < 1 || n > MAXP || rounds < 1)
        return 2;
    const char *kind = argc > 3 ? argv[3] : "anon";
    struct layout *m = MAP_FAILED;
    if (strcmp(kind, "anon") == 0) {
        m = mmap(NULL, sizeof *m, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    } else {
        int fd = -1;
        if (strcmp(kind, "memfd") == 0) {
            fd = memfd_create("shm_stress", 0);
        } else if (strcmp(kind, "posix") == 0) {
            char name[64];
            snprintf(name, sizeof name, "/rfork-stress-%d", (int)getpid());
            fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
            shm_unlink(name);
        }
        if (fd >= 0 && ftruncate(fd, sizeof *m) == 0)
            m = mmap(NULL, sizeof *m, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (fd >= 0)
            close(fd);
    }
    if (m == MAP_FAILED)
        return 2;
    pid_t pids[MAXP];
    for (int i = 0; i < n; i++) {
        pids[i] = fork();
        if (pids[i] == 0) {
            char host[64] = "";
            gethostname(host, sizeof host);
            fprintf(stderr, "process %d runs on %s\n", i, host);
            __atomic_add_fetch(&m->ready, 1, __ATOMIC_SEQ_CST);
            while (__atomic_load_n(&m->ready, __ATOMIC_SEQ_CST) < n)
                sched_yield();
            long writes;
            _exit(run(m, i, n, rounds, &writes, 1) < 0 ? 1 : 0);
        }
    }
    int failed = 0;
    for (int i = 0; i < n; i++) {
        int st;
        waitpid(pids[i], &st, 0);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
            failed++;
    }
    long sum = 0, bad = 0;
    for (int i = 0; i < n; i++) {
        long writes, adds = run(m, i, n, rounds, &writes, 0);
        if (m->result[i] != adds || m->slot[i] != writes) {
            fprintf(stderr, "process %d: %ld adds and counter %ld, expected %ld and %ld\n", i, m->result[i],
                    m->slot[i], adds, writes);
            bad++;
        }
        sum += adds;
    }
    printf("total %ld of %ld\n", m->total, sum);
    for (int i = 0; i < n; i++)
        printf("process %d: counter %ld, adds %ld, messages %ld\n", i, m->slot[i], m->result[i], m->flag[i]);
    printf("processes failing their checks: %d, wrong results: %ld\n", failed, bad);
    return failed || bad || m->total != sum ? 1 : 0;
}
