/* A child (placed wherever rfork run places it) opens shared memory and a semaphore by name, and a
 * System V segment by key ("open": O_CREAT alone, IPC_CREAT alone), or makes new ones that no name finds
 * elsewhere ("new": O_CREAT|O_EXCL, IPC_PRIVATE), then removes them and prints "done"; it says on stderr
 * where it runs. Away from its job's home, librfork says in one line per call that the names opened are
 * this node's own. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <semaphore.h>
#include <stdio.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/wait.h>
#include <unistd.h>

static int opens(int fresh)
{
    char sem_name[64], shm_name[64];
    snprintf(sem_name, sizeof sem_name, "/rfork-named-sem-%d", (int)getpid());
    snprintf(shm_name, sizeof shm_name, "/rfork-named-shm-%d", (int)getpid());
    int excl = fresh ? O_EXCL : 0;
    sem_t *sem = sem_open(sem_name, O_CREAT | excl, 0600, 0);
    int fd = shm_open(shm_name, O_CREAT | O_RDWR | excl, 0600);
    int id = shmget(fresh ? IPC_PRIVATE : (key_t)(0x52460000 + (getpid() & 0xffff)), 4096, IPC_CREAT | 0600);
    if (sem == SEM_FAILED || fd < 0 || id < 0)
        return 2;
    sem_close(sem);
    sem_unlink(sem_name);
    close(fd);
    shm_unlink(shm_name);
    shmctl(id, IPC_RMID, NULL);
    printf("done\n");
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv)
{
    int fresh = argc > 1 && strcmp(argv[1], "new") == 0;
    fflush(stdout);
    pid_t c = fork();
    if (c < 0)
        return 2;
    if (c == 0) {
        char host[64] = "";
        gethostname(host, sizeof host);
        fprintf(stderr, "child runs on %s\n", host);
        _exit(opens(fresh));
    }
    int st;
    return waitpid(c, &st, 0) == c && WIFEXITED(st) ? WEXITSTATUS(st) : 2;
}
