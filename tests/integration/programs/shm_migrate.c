/* A parent and its child take turns adding one to a counter in shared memory (each yields while it
 * waits). The child says where it starts; the parent writes the child's PID to argv[1] so a test can move
 * the child meanwhile. Once the child sees itself on another node it notes the counter, says where it is,
 * and the game goes on for argv[2] (default 2000) more turns. Each side counts its own adds: the counter
 * must equal their sum (no add lost, none seen twice), and the child's exit status must arrive. Gives up
 * after 60 s with no move. */
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct game {
    int counter;
    int end;        /* 0 until the child has moved; then the counter at which both stop */
    int child_adds; /* the child's count, written when it stops */
};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Waits for the turn of `odd`, then adds one: 0; 1 once the game is over; -1 after the deadline. */
static int turn(struct game *g, int odd, double deadline)
{
    for (;;) {
        int v = __atomic_load_n(&g->counter, __ATOMIC_SEQ_CST);
        int end = __atomic_load_n(&g->end, __ATOMIC_SEQ_CST);
        if (end && v >= end)
            return 1;
        if ((v & 1) == odd)
            break;
        if (now() > deadline)
            return -1;
        sched_yield();
    }
    __atomic_add_fetch(&g->counter, 1, __ATOMIC_SEQ_CST);
    return 0;
}

int main(int argc, char **argv)
{
    int more = argc > 2 ? atoi(argv[2]) : 2000;
    struct game *g = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (g == MAP_FAILED)
        return 2;
    double deadline = now() + 60;
    pid_t child = fork();
    if (child == 0) {
        char start[64], h[64];
        gethostname(start, sizeof start);
        fprintf(stderr, "child starts on %s\n", start);
        int r, adds = 0;
        while ((r = turn(g, 1, deadline)) == 0) {
            adds++;
            if (adds % 50 == 0 && !g->end && gethostname(h, sizeof h) == 0 && strcmp(h, start) != 0) {
                __atomic_store_n(&g->end, __atomic_load_n(&g->counter, __ATOMIC_SEQ_CST) + more, __ATOMIC_SEQ_CST);
                fprintf(stderr, "child moved to %s\n", h);
            }
        }
        g->child_adds = adds;
        _exit(r < 0 ? 3 : 0);
    }
    if (argc > 1) {
        FILE *f = fopen(argv[1], "w");
        if (f) {
            fprintf(f, "%d\n", (int)child);
            fclose(f);
        }
    }
    int r, adds = 0;
    while ((r = turn(g, 0, deadline)) == 0)
        adds++;
    int st;
    waitpid(child, &st, 0);
    printf("counter %s, child exit %d\n", g->counter == adds + g->child_adds && g->end ? "right" : "WRONG",
           WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
    if (g->counter != adds + g->child_adds)
        printf("counter %d, parent %d, child %d\n", g->counter, adds, g->child_adds);
    return r < 0 ? 1 : 0;
}
