/* A parent and its child hand a counter back and forth through shared memory of one kind (argv[1]):
 * anon (MAP_SHARED|MAP_ANONYMOUS), sysv (shmget(IPC_PRIVATE)/shmat, removed at once), sysvkey (shmget with
 * a key, removed at the end), posix (shm_open, unlinked at once), named
 * (shm_open, unlinked at the end), memfd, memfd2 (a memfd mapped twice: the parent takes its turns through
 * the second mapping), file (a writable shared mapping of argv[2]). With a private copy on another node the two would never meet again: the
 * child gives up after 10 s and the program fails. Prints the final counter and the child's status; says
 * on stderr where the parent and the child run. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define ROUNDS 1000

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Waits until *c has the parity `odd`, then increments it; 0 or -1 after 10 s. */
static int turn(volatile int *c, int odd)
{
    double deadline = now() + 10;
    while ((*c & 1) != odd) {
        if (now() > deadline)
            return -1;
        sched_yield();
    }
    __atomic_add_fetch(c, 1, __ATOMIC_SEQ_CST);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return 2;
    const char *kind = argv[1];
    size_t size = 4096;
    void *p = MAP_FAILED;
    int shm_id = -1;
    void *second = MAP_FAILED;
    if (strcmp(kind, "anon") == 0) {
        p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    } else if (strcmp(kind, "sysv") == 0 || strcmp(kind, "sysvkey") == 0) {
        key_t key = strcmp(kind, "sysv") == 0 ? IPC_PRIVATE : (key_t)(0x52500000 | (getpid() & 0xffff));
        shm_id = shmget(key, size, IPC_CREAT | 0600);
        if (shm_id >= 0) {
            p = shmat(shm_id, NULL, 0);
            if (key == IPC_PRIVATE)
                shmctl(shm_id, IPC_RMID, NULL);
            if (p == (void *)-1)
                p = MAP_FAILED;
        }
    } else {
        int fd = -1;
        char name[64];
        if (strcmp(kind, "posix") == 0 || strcmp(kind, "named") == 0) {
            snprintf(name, sizeof name, "/rfork-pingpong-%d", (int)getpid());
            fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
            if (strcmp(kind, "posix") == 0)
                shm_unlink(name);
        } else if (strcmp(kind, "memfd") == 0 || strcmp(kind, "memfd2") == 0) {
            fd = memfd_create("pingpong", 0);
        } else if (strcmp(kind, "file") == 0 && argc > 2) {
            fd = open(argv[2], O_RDWR | O_CREAT | O_TRUNC, 0600);
        }
        if (fd >= 0 && ftruncate(fd, size) == 0)
            p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (p != MAP_FAILED && strcmp(kind, "memfd2") == 0)
            second = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (fd >= 0)
            close(fd);
    }
    if (p == MAP_FAILED) {
        perror(kind);
        return 2;
    }
    volatile int *counter = p;
    volatile int *mine = second != MAP_FAILED ? second : p; /* where the parent takes its turns */
    char where[64];
    gethostname(where, sizeof where);
    fprintf(stderr, "parent runs on %s\n", where);
    pid_t child = fork();
    if (child == 0) {
        char h[64];
        gethostname(h, sizeof h);
        fprintf(stderr, "child runs on %s\n", h);
        for (int i = 0; i < ROUNDS; i++)
            if (turn(counter, 1) < 0)
                _exit(3);
        _exit(0);
    }
    int ok = 1;
    for (int i = 0; i < ROUNDS && ok; i++)
        ok = turn(mine, 0) == 0;
    int st;
    waitpid(child, &st, 0);
    if (strcmp(kind, "named") == 0) {
        char name[64];
        snprintf(name, sizeof name, "/rfork-pingpong-%d", (int)getpid());
        shm_unlink(name);
    }
    if (strcmp(kind, "sysvkey") == 0)
        shmctl(shm_id, IPC_RMID, NULL);
    printf("%s: counter %d, child exit %d\n", kind, *counter, WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
    return ok && *counter == 2 * ROUNDS ? 0 : 1;
}
