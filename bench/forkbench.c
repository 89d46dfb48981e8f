/*
 * The benchmark's workload: an ordinary program, run under plain fork and under `rfork run`.
 * Each mode prints one JSON object per trial on stdout. A child's time is compared with its parent's
 * through CLOCK_REALTIME: CRIU restores a child in a time namespace that keeps its CLOCK_MONOTONIC
 * continuous from the dump, so the two monotonic clocks differ by the migration time.
 *
 *   forkbench latency MIB TRIALS   parent blocked, child running, all inherited memory read
 *   forkbench pipe MIB             throughput parent -> child, and 1-byte round trips
 *   forkbench rate COUNT INFLIGHT  forks per second, at most INFLIGHT children at once
 *   forkbench hold MIB             touch MIB, say READY, sleep (for the CRIU baselines)
 *   forkbench children N           fork N children that sleep; print their PIDs; wait for stdin EOF
 *   forkbench fill MIB             write MIB of fresh memory, then the same memory again (no fork: what
 *                                  this machine charges for new pages, which every restored child needs)
 *   forkbench shm-pingpong ROUNDS  parent and child take turns adding to one shared word (MAP_SHARED
 *                                  anonymous memory): microseconds per turn handed over
 *   forkbench shm-false SECONDS    parent and child each add to their own word of one shared page for
 *                                  SECONDS: both rates (false sharing)
 *   forkbench shm-readers N PAGES  the parent writes a table of PAGES pages once; N children each read
 *                                  it 10 times over: milliseconds for all
 *   forkbench shm-bulk MIB         a child writes MIB of shared memory; then the parent reads it all:
 *                                  MiB/s of each
 */
#define _GNU_SOURCE
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long long clock_ns(clockid_t id)
{
    struct timespec t;
    clock_gettime(id, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

static long long now_ns(void) { return clock_ns(CLOCK_MONOTONIC); }
static long long wall_ns(void) { return clock_ns(CLOCK_REALTIME); } /* comparable across a restore */

static unsigned char *touch(size_t mib)
{
    size_t n = mib << 20;
    unsigned char *m = mmap(NULL, n ? n : 1, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        exit(2);
    for (size_t i = 0; i < n; i += 4096)
        m[i] = (unsigned char)(i >> 12);
    return m;
}

static int read_all(int fd, void *p, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, (char *)p + got, n - got);
        if (r <= 0)
            return -1;
        got += (size_t)r;
    }
    return 0;
}

static int latency(size_t mib, int trials)
{
    unsigned char *m = touch(mib);
    char home[64] = "";
    gethostname(home, sizeof home);
    for (int t = 0; t < trials; t++) {
        int p[2];
        if (pipe(p) < 0)
            return 1;
        long long t0 = wall_ns();
        pid_t pid = fork();
        long long t1 = wall_ns();
        if (pid == 0) {
            long long running = wall_ns();
            unsigned long sum = 0;
            for (size_t i = 0; i < mib << 20; i += 4096)
                sum += m[i];
            long long all = wall_ns();
            char here[64] = "";
            gethostname(here, sizeof here);
            long long out[4] = {running, all, (long long)sum, strcmp(here, home) != 0};
            if (write(p[1], out, sizeof out) < 0)
                _exit(1);
            _exit(0);
        }
        close(p[1]);
        long long in[4];
        int ok = read_all(p[0], in, sizeof in) == 0;
        close(p[0]);
        int st;
        waitpid(pid, &st, 0);
        if (!ok || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
            printf("{\"error\":\"trial %d failed\"}\n", t);
        else
            printf("{\"blocked_ms\":%.4f,\"running_ms\":%.4f,\"memory_ms\":%.4f,\"moved\":%lld}\n", (t1 - t0) / 1e6,
                   (in[0] - t0) / 1e6, (in[1] - t0) / 1e6, in[3]);
        fflush(stdout);
    }
    return 0;
}

static int pipe_bench(size_t mib)
{
    int down[2], up[2];
    if (pipe(down) < 0 || pipe(up) < 0)
        return 1;
    static char buf[1 << 16];
    pid_t pid = fork();
    if (pid == 0) {
        close(down[1]);
        close(up[0]);
        char c = 'r';
        if (write(up[1], &c, 1) != 1) /* running */
            _exit(1);
        size_t total = 0;
        ssize_t r;
        while (total < mib << 20 && (r = read(down[0], buf, sizeof buf)) > 0)
            total += (size_t)r;
        if (write(up[1], &c, 1) != 1) /* all received */
            _exit(1);
        for (int i = 0; i < 1000; i++) /* echo */
            if (read(down[0], &c, 1) != 1 || write(up[1], &c, 1) != 1)
                _exit(1);
        _exit(0);
    }
    close(down[0]);
    close(up[1]);
    char c;
    if (read(up[0], &c, 1) != 1)
        return 1;
    memset(buf, 'x', sizeof buf);
    long long t0 = now_ns();
    for (size_t sent = 0; sent < mib << 20; sent += sizeof buf)
        if (write(down[1], buf, sizeof buf) != (ssize_t)sizeof buf)
            return 1;
    if (read(up[0], &c, 1) != 1)
        return 1;
    long long t1 = now_ns();
    for (int i = 0; i < 1000; i++)
        if (write(down[1], &c, 1) != 1 || read(up[0], &c, 1) != 1)
            return 1;
    long long t2 = now_ns();
    int st;
    waitpid(pid, &st, 0);
    printf("{\"throughput_mib_s\":%.1f,\"rtt_us\":%.1f}\n", (double)mib / ((t1 - t0) / 1e9), (t2 - t1) / 1e3 / 1000);
    return 0;
}

static int rate(int count, int inflight)
{
    long long t0 = now_ns();
    int running = 0, started = 0, failed = 0;
    while (started < count || running > 0) {
        while (started < count && running < inflight) {
            pid_t pid = fork();
            if (pid == 0)
                _exit(0);
            if (pid < 0)
                return 1;
            started++;
            running++;
        }
        int st;
        if (wait(&st) > 0) {
            running--;
            failed += !WIFEXITED(st) || WEXITSTATUS(st) != 0;
        }
    }
    double s = (now_ns() - t0) / 1e9;
    printf("{\"forks\":%d,\"seconds\":%.3f,\"forks_per_s\":%.1f,\"failed\":%d}\n", count, s, count / s, failed);
    return 0;
}

static int children(int n)
{
    pid_t pids[256];
    for (int i = 0; i < n && i < 256; i++) {
        pids[i] = fork();
        if (pids[i] == 0) {
            for (;;)
                pause();
        }
    }
    sleep(1);
    for (int i = 0; i < n && i < 256; i++)
        printf("%d\n", pids[i]);
    fflush(stdout);
    char c;
    while (read(0, &c, 1) > 0) {
    }
    for (int i = 0; i < n && i < 256; i++) {
        kill(pids[i], SIGKILL);
        waitpid(pids[i], NULL, 0);
    }
    return 0;
}

static int fill(size_t mib)
{
    size_t n = mib << 20;
    unsigned char *m = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return 2;
    long long t0 = now_ns();
    memset(m, 1, n);
    long long t1 = now_ns();
    memset(m, 2, n);
    long long t2 = now_ns();
    munmap(m, n);
    printf("{\"fresh_ms\":%.2f,\"again_ms\":%.2f}\n", (t1 - t0) / 1e6, (t2 - t1) / 1e6);
    return 0;
}

static volatile unsigned long spin_sink;

/* One round of CPU work. */
static void spin_round(void)
{
    for (unsigned long i = 0; i < 100000; i++)
        spin_sink += i * i;
}

/* `workers N SECONDS`: N CPU-bound children of SECONDS of CPU each (calibrated here, on this node's CPU);
 * the wall time until all ended, and how many ended on another node than they started on. */
static int workers(int n, double seconds)
{
    struct timespec t0, t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t0);
    unsigned long per_second = 0;
    do {
        spin_round();
        per_second++;
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    } while ((t.tv_sec - t0.tv_sec) + (t.tv_nsec - t0.tv_nsec) / 1e9 < 0.5);
    per_second *= 2;
    unsigned long rounds = (unsigned long)(per_second * seconds);
    int fds[2];
    if (pipe(fds) < 0)
        return 2;
    char here[64] = "";
    gethostname(here, sizeof here - 1);
    long long start = now_ns();
    for (int i = 0; i < n; i++) {
        pid_t pid = fork();
        if (pid < 0)
            return 2;
        if (pid == 0) {
            close(fds[0]);
            for (unsigned long r = 0; r < rounds; r++)
                spin_round();
            char end[64] = "";
            gethostname(end, sizeof end - 1);
            char moved = strcmp(end, here) != 0;
            if (write(fds[1], &moved, 1) != 1)
                _exit(3);
            _exit(0);
        }
    }
    close(fds[1]);
    int moved = 0;
    char c;
    while (read(fds[0], &c, 1) == 1)
        moved += c;
    while (wait(NULL) > 0)
        ;
    printf("{\"wall_ms\":%.1f,\"moved\":%d}\n", (now_ns() - start) / 1e6, moved);
    return 0;
}

static void *shared_pages(size_t bytes)
{
    void *m = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    return m == MAP_FAILED ? NULL : m;
}

static int wait_child(pid_t p)
{
    int st;
    return waitpid(p, &st, 0) == p && WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

static int shm_pingpong(int rounds)
{
    volatile long *c = shared_pages(4096);
    if (!c || rounds < 2)
        return 2;
    pid_t p = fork();
    if (p == 0) {
        for (int i = 0; i < rounds; i++) {
            while ((*c & 1) != 1)
                ;
            __atomic_add_fetch(c, 1, __ATOMIC_SEQ_CST);
        }
        _exit(0);
    }
    long long t0 = 0;
    for (int i = 0; i < rounds; i++) {
        while ((*c & 1) != 0)
            ;
        if (i == 1)
            t0 = now_ns(); /* from the second turn: the child runs by then */
        __atomic_add_fetch(c, 1, __ATOMIC_SEQ_CST);
    }
    while (*c != 2L * rounds)
        ;
    long long t = now_ns() - t0;
    if (wait_child(p))
        return 1;
    /* Each round is two turns handed over: parent to child and back. */
    printf("{\"turn_us\":%.2f,\"rounds\":%d}\n", t / 1e3 / (2.0 * (rounds - 1)), rounds);
    return 0;
}

static int shm_false(double seconds)
{
    volatile long *w = shared_pages(4096);
    if (!w)
        return 2;
    w[8] = 0; /* ready */
    pid_t p = fork();
    if (p == 0) {
        __atomic_add_fetch(&w[8], 1, __ATOMIC_SEQ_CST);
        while (__atomic_load_n(&w[9], __ATOMIC_SEQ_CST) == 0)
            __atomic_add_fetch(&w[1], 1, __ATOMIC_RELAXED);
        _exit(0);
    }
    while (__atomic_load_n(&w[8], __ATOMIC_SEQ_CST) == 0)
        ;
    long long t0 = now_ns(), end = t0 + (long long)(seconds * 1e9);
    long mine = 0, theirs0 = __atomic_load_n(&w[1], __ATOMIC_RELAXED);
    while (now_ns() < end) {
        __atomic_add_fetch(&w[0], 1, __ATOMIC_RELAXED);
        mine++;
    }
    long theirs = __atomic_load_n(&w[1], __ATOMIC_RELAXED) - theirs0;
    double s = (now_ns() - t0) / 1e9;
    __atomic_store_n(&w[9], 1, __ATOMIC_SEQ_CST);
    if (wait_child(p))
        return 1;
    printf("{\"parent_per_s\":%.0f,\"child_per_s\":%.0f}\n", mine / s, theirs / s);
    return 0;
}

static int shm_readers(int n, int pages)
{
    size_t bytes = (size_t)pages * 4096;
    volatile long *t = shared_pages(bytes + 4096);
    if (!t || n < 1 || n > 64)
        return 2;
    volatile long *ready = t + pages * 512; /* the last page: start and finish counts */
    for (int i = 0; i < pages; i++)
        t[i * 512] = i + 1;
    pid_t kids[64];
    for (int k = 0; k < n; k++) {
        kids[k] = fork();
        if (kids[k] == 0) {
            __atomic_add_fetch(&ready[0], 1, __ATOMIC_SEQ_CST);
            while (__atomic_load_n(&ready[0], __ATOMIC_SEQ_CST) < n)
                ;
            long sum = 0;
            for (int r = 0; r < 10; r++)
                for (int i = 0; i < pages; i++)
                    sum += t[i * 512];
            _exit(sum == 10L * pages * (pages + 1) / 2 ? 0 : 1);
        }
    }
    while (__atomic_load_n(&ready[0], __ATOMIC_SEQ_CST) < n)
        usleep(100);
    long long t0 = now_ns();
    int bad = 0;
    for (int k = 0; k < n; k++)
        bad += wait_child(kids[k]) != 0;
    printf("{\"ms\":%.2f,\"readers\":%d,\"pages\":%d,\"bad\":%d}\n", (now_ns() - t0) / 1e6, n, pages, bad);
    return bad ? 1 : 0;
}

static int shm_bulk(size_t mib)
{
    size_t bytes = mib << 20;
    volatile long *m = shared_pages(bytes + 4096);
    if (!m)
        return 2;
    volatile long *flag = m + bytes / sizeof(long);
    pid_t p = fork();
    if (p == 0) {
        long long t0 = wall_ns();
        for (size_t i = 0; i < bytes / sizeof(long); i += 512)
            m[i] = (long)i;
        flag[1] = wall_ns() - t0;
        _exit(0);
    }
    if (wait_child(p))
        return 1;
    long long t0 = now_ns();
    long bad = 0;
    for (size_t i = 0; i < bytes / sizeof(long); i += 512)
        bad += m[i] != (long)i;
    double readMs = (now_ns() - t0) / 1e6;
    printf("{\"child_write_mib_s\":%.1f,\"parent_read_mib_s\":%.1f,\"bad\":%ld}\n", mib / (flag[1] / 1e9),
           mib / (readMs / 1e3), bad);
    return bad ? 1 : 0;
}

int main(int argc, char **argv)
{
    if (argc >= 3 && strcmp(argv[1], "shm-pingpong") == 0)
        return shm_pingpong(atoi(argv[2]));
    if (argc >= 3 && strcmp(argv[1], "shm-false") == 0)
        return shm_false(atof(argv[2]));
    if (argc >= 4 && strcmp(argv[1], "shm-readers") == 0)
        return shm_readers(atoi(argv[2]), atoi(argv[3]));
    if (argc >= 3 && strcmp(argv[1], "shm-bulk") == 0)
        return shm_bulk((size_t)atol(argv[2]));
    if (argc >= 4 && strcmp(argv[1], "latency") == 0)
        return latency((size_t)atol(argv[2]), atoi(argv[3]));
    if (argc >= 3 && strcmp(argv[1], "pipe") == 0)
        return pipe_bench((size_t)atol(argv[2]));
    if (argc >= 4 && strcmp(argv[1], "rate") == 0)
        return rate(atoi(argv[2]), atoi(argv[3]));
    if (argc >= 3 && strcmp(argv[1], "hold") == 0) {
        touch((size_t)atol(argv[2]));
        printf("READY\n");
        fflush(stdout);
        for (;;)
            pause();
    }
    if (argc >= 3 && strcmp(argv[1], "dirty") == 0) {
        /* A process that keeps writing its memory (one byte a page, round robin), for migration. */
        size_t n = (size_t)atol(argv[2]) << 20;
        volatile unsigned char *m = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED)
            return 2;
        memset((void *)m, 1, n);
        printf("READY %d\n", (int)getpid());
        fflush(stdout);
        for (size_t i = 0;; i = (i + 4096) % n)
            m[i]++;
    }
    if (argc >= 3 && strcmp(argv[1], "children") == 0)
        return children(atoi(argv[2]));
    if (argc >= 3 && strcmp(argv[1], "fill") == 0)
        return fill((size_t)atol(argv[2]));
    if (argc >= 4 && strcmp(argv[1], "workers") == 0)
        return workers(atoi(argv[2]), atof(argv[3]));
    fprintf(stderr, "usage: forkbench latency MIB TRIALS | pipe MIB | rate COUNT INFLIGHT | hold MIB | dirty MIB | children N | fill MIB | workers N SECONDS | shm-pingpong ROUNDS | shm-false SECONDS | shm-readers N PAGES | shm-bulk MIB\n");
    return 2;
}
