/*
 * librfork's System V segments moved into memfds before a fork or a move (sysv.c): what is moved (a
 * private segment only this process attaches, a removed one), what is left alone (a key another process
 * could use, a second attacher, a second thread at a fork but not at a move, which parks it), and the
 * segment's id afterwards (contents kept, shared with a child, attached again, detached, stat, removed,
 * refused once its memfd is O_PATH).
 */
#define _GNU_SOURCE
#include "../../librfork/internal.h"
#include "check.h"

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/* The path /proc/self/maps gives the mapping at addr ("" when none). */
static void mapping_path(const void *addr, char *out, size_t len)
{
    out[0] = 0;
    FILE *f = fopen("/proc/self/maps", "re");
    if (!f)
        return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        unsigned long start = 0, end = 0;
        if (sscanf(line, "%lx-%lx", &start, &end) == 2 && (unsigned long)addr >= start && (unsigned long)addr < end) {
            char *path = strchr(line, '/');
            snprintf(out, len, "%s", path ? path : "");
            break;
        }
    }
    fclose(f);
}

static int fd_count(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    for (struct dirent *e; d && (e = readdir(d));)
        n += e->d_name[0] != '.';
    if (d)
        closedir(d);
    return n;
}

static int kernel_knows(int id)
{
    struct shmid_ds ds;
    return syscall(SYS_shmctl, id, IPC_STAT, &ds) == 0;
}

static void *idle(void *arg)
{
    int fd = *(int *)arg;
    char c;
    return read(fd, &c, 1) < 0 ? NULL : arg;
}

int main(void)
{
    char path[512];
    int fds_before = fd_count();

    /* A private segment only this process attaches: moved, contents and id kept. */
    int id = shmget(IPC_PRIVATE, 10000, IPC_CREAT | 0600);
    CHECK(id >= 0);
    unsigned char *a = shmat(id, NULL, 0);
    CHECK(a != (void *)-1);
    for (int i = 0; i < 10000; i++)
        a[i] = (unsigned char)(i * 7);
    rfork_sysv_move(0);
    mapping_path(a, path, sizeof path);
    CHECK(strncmp(path, "/memfd:rfork-sysv", 17) == 0);
    CHECK(!kernel_knows(id)); /* the segment itself is gone */
    int same = 1;
    for (int i = 0; i < 10000; i++)
        same = same && a[i] == (unsigned char)(i * 7);
    CHECK(same);
    struct shmid_ds ds;
    CHECK(shmctl(id, IPC_STAT, &ds) == 0);
    CHECK(ds.shm_segsz == 10000 && ds.shm_nattch == 1 && !(ds.shm_perm.mode & SHM_DEST));
    /* Shared with a child, as a segment is. */
    pid_t pid = fork();
    if (pid == 0) {
        a[5000] = 42;
        _exit(0);
    }
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid && status == 0);
    CHECK(a[5000] == 42);
    /* Attached again: the same memory. */
    unsigned char *b = shmat(id, NULL, SHM_RDONLY);
    CHECK(b != (void *)-1 && b != a);
    a[1] = 99;
    CHECK(b != (void *)-1 && b[1] == 99);
    CHECK(shmctl(id, IPC_STAT, &ds) == 0 && ds.shm_nattch == 2);
    /* At an address already mapped, without SHM_REMAP: EINVAL, as the kernel says. */
    errno = 0;
    CHECK(shmat(id, a, 0) == (void *)-1 && errno == EINVAL);
    CHECK(shmdt(b) == 0);
    mapping_path(b, path, sizeof path);
    CHECK(strncmp(path, "/memfd:", 7) != 0);
    CHECK(shmctl(id, IPC_RMID, NULL) == 0);
    CHECK(shmctl(id, IPC_STAT, &ds) == 0 && (ds.shm_perm.mode & SHM_DEST));
    CHECK(shmdt(a) == 0);
    CHECK(fd_count() == fds_before); /* the memfd is closed with the last attach after IPC_RMID */
    errno = 0;
    CHECK(shmctl(id, IPC_STAT, &ds) == -1 && errno == EINVAL);

    /* A segment with a key another process could shmget: left alone. */
    key_t key = (key_t)(0x52460000 | (getpid() & 0xffff));
    int kid = shmget(key, 4096, IPC_CREAT | IPC_EXCL | 0600);
    CHECK(kid >= 0);
    void *k = shmat(kid, NULL, 0);
    rfork_sysv_move(0);
    mapping_path(k, path, sizeof path);
    CHECK(strncmp(path, "/SYSV", 5) == 0 && kernel_knows(kid));
    /* Once removed, nobody can find it: moved. */
    CHECK(shmctl(kid, IPC_RMID, NULL) == 0);
    rfork_sysv_move(0);
    mapping_path(k, path, sizeof path);
    CHECK(strncmp(path, "/memfd:rfork-sysv", 17) == 0);
    CHECK(shmctl(kid, IPC_STAT, &ds) == 0 && (ds.shm_perm.mode & SHM_DEST));
    CHECK(shmdt(k) == 0);

    /* A segment another process attaches too: left alone. */
    int pid2_pipe[2];
    CHECK(pipe(pid2_pipe) == 0);
    int sid = shmget(IPC_PRIVATE, 4096, IPC_CREAT | 0600);
    void *s = shmat(sid, NULL, 0);
    pid = fork(); /* attached in the child as well, which waits */
    if (pid == 0) {
        char c;
        close(pid2_pipe[1]);
        _exit(read(pid2_pipe[0], &c, 1) < 0);
    }
    close(pid2_pipe[0]);
    rfork_sysv_move(0);
    mapping_path(s, path, sizeof path);
    CHECK(strncmp(path, "/SYSV", 5) == 0);
    close(pid2_pipe[1]);
    CHECK(waitpid(pid, &status, 0) == pid);

    /* With a second thread (it could write during the copy): left alone. */
    int tp[2];
    CHECK(pipe(tp) == 0);
    pthread_t t;
    CHECK(pthread_create(&t, NULL, idle, &tp[0]) == 0);
    ((volatile char *)s)[100] = 42;
    rfork_sysv_move(0);
    mapping_path(s, path, sizeof path);
    CHECK(strncmp(path, "/SYSV", 5) == 0);
    /* The same at a move, with every other thread parked: moved, contents kept. */
    rfork_sysv_move(1);
    mapping_path(s, path, sizeof path);
    CHECK(strncmp(path, "/memfd:rfork-sysv", 17) == 0);
    CHECK(((volatile char *)s)[100] == 42);
    CHECK(!kernel_knows(sid));
    close(tp[1]);
    pthread_join(t, NULL);
    close(tp[0]);

    /* Moved, then its memfd reduced to O_PATH (as when its memory is shared with another node): a new
     * attach fails with EINVAL; the attach it had still works. */
    rfork_sysv_move(0);
    mapping_path(s, path, sizeof path);
    CHECK(strncmp(path, "/memfd:rfork-sysv", 17) == 0);
    int memfd = -1;
    DIR *d = opendir("/proc/self/fd");
    for (struct dirent *e; d && (e = readdir(d));) {
        char link[256], lp[300];
        snprintf(lp, sizeof lp, "/proc/self/fd/%s", e->d_name);
        ssize_t l = readlink(lp, link, sizeof link - 1);
        if (l > 0 && (link[l] = 0, strncmp(link, "/memfd:rfork-sysv", 17) == 0))
            memfd = atoi(e->d_name);
    }
    if (d)
        closedir(d);
    CHECK(memfd >= 0);
    char fdpath[64];
    snprintf(fdpath, sizeof fdpath, "/proc/self/fd/%d", memfd);
    int opath = open(fdpath, O_PATH | O_CLOEXEC);
    CHECK(opath >= 0 && dup3(opath, memfd, O_CLOEXEC) == memfd);
    close(opath);
    int devnull = open("/dev/null", O_WRONLY); /* the line librfork says goes here */
    int saved = dup(2);
    dup2(devnull, 2);
    errno = 0;
    void *again = shmat(sid, NULL, 0);
    int err = errno;
    dup2(saved, 2);
    close(saved);
    close(devnull);
    CHECK(again == (void *)-1 && err == EINVAL);
    ((volatile char *)s)[0] = 1;
    CHECK(shmctl(sid, IPC_RMID, NULL) == 0 && shmdt(s) == 0);
    CHECK(fd_count() == fds_before);

    /* An id the table does not know goes to the kernel. */
    errno = 0;
    CHECK(shmat(-1, NULL, 0) == (void *)-1 && errno == EINVAL);
    CHECK(shmdt((void *)4096) == -1);
    TEST_DONE("sysv");
}
