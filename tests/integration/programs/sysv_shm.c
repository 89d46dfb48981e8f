/*
 * A System V segment shared by a parent and its children. The parent makes it (IPC_PRIVATE, or with a
 * key from ftok), attaches it and puts a process-shared mutex, a counter, an atomic counter and one slot
 * per child in it; 3 children each add ITER times to both counters (under the mutex, and atomically),
 * attach the segment again and write their slot through that attach; the parent waits, attaches it
 * again read-only and prints what it reads there, the segment's size by IPC_STAT, and removes it. Each
 * child says where it ran on stderr ("child runs on NODE").
 *
 * usage: sysv_shm private|removed|key   (removed: IPC_RMID before the forks)
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/shm.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#define CHILDREN 3
#define ITER 20000

struct shared {
    pthread_mutex_t lock;
    long counter;
    long atomic;
    long slot[CHILDREN];
};

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "private";
    key_t key = IPC_PRIVATE;
    if (strcmp(mode, "key") == 0 && (key = ftok("/", 'r' + (getpid() & 0x3f))) == -1) {
        perror("ftok");
        return 1;
    }
    int id = shmget(key, 8192, IPC_CREAT | 0600);
    if (id < 0) {
        perror("shmget");
        return 1;
    }
    struct shared *s = shmat(id, NULL, 0);
    if (s == (void *)-1) {
        perror("shmat");
        return 1;
    }
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    pthread_mutex_init(&s->lock, &a);
    if (strcmp(mode, "removed") == 0 && shmctl(id, IPC_RMID, NULL) != 0) {
        perror("shmctl IPC_RMID");
        return 1;
    }
    for (int c = 0; c < CHILDREN; c++) {
        pid_t pid = fork();
        if (pid < 0) {
            perror("fork");
            return 1;
        }
        if (pid == 0) {
            struct utsname u;
            uname(&u);
            fprintf(stderr, "child runs on %s\n", u.nodename);
            for (int i = 0; i < ITER; i++) {
                pthread_mutex_lock(&s->lock);
                s->counter++;
                pthread_mutex_unlock(&s->lock);
                __atomic_add_fetch(&s->atomic, 1, __ATOMIC_SEQ_CST);
            }
            struct shared *again = shmat(id, NULL, 0);
            if (again == (void *)-1) {
                perror("child: shmat again");
                _exit(1);
            }
            again->slot[c] = 1000 + c;
            shmdt(again);
            shmdt(s);
            _exit(0);
        }
    }
    int failed = 0;
    for (int c = 0; c < CHILDREN; c++) {
        int status = 0;
        if (wait(&status) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
            failed++;
    }
    printf("children failed %d\n", failed);
    struct shared *mine = s;
    s = shmat(id, NULL, SHM_RDONLY);
    if (s == (void *)-1) {
        perror("parent: shmat again");
        return 1;
    }
    printf("counter %ld atomic %ld\n", s->counter, __atomic_load_n(&s->atomic, __ATOMIC_SEQ_CST));
    printf("slots");
    for (int c = 0; c < CHILDREN; c++)
        printf(" %ld", s->slot[c]);
    printf("\n");
    struct shmid_ds ds;
    if (shmctl(id, IPC_STAT, &ds) != 0)
        perror("shmctl IPC_STAT");
    else
        printf("size %zu\n", (size_t)ds.shm_segsz);
    if (shmdt(s) != 0 || shmdt(mine) != 0)
        perror("shmdt");
    if (strcmp(mode, "removed") != 0 && shmctl(id, IPC_RMID, NULL) != 0)
        perror("shmctl IPC_RMID");
    return 0;
}
