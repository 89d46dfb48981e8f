#include "crfork.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <sched.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Whether descriptor number fd is one of the sources. */
static int is_source(const int *fds, int count, int fd)
{
    for (int i = 0; i < count; i++)
        if (fds[i] == fd)
            return 1;
    return 0;
}

pid_t crfork_spawn(const char *path, char *const argv[], char *const envp[], const int *fds, int count,
                   int setsid)
{
    if (count < 0 || (count > 0 && !fds))
        return -EINVAL;
    for (int i = 0; i < count; i++)
        if (fds[i] < 0)
            return -EBADF;
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&attr);
    /* Placing fds[i] at i (in order) can clobber a later source that sits at a lower slot, so the sources
     * that sit in 0..count-1 first move to temporary numbers: each at least count (no placement writes
     * there) and no source's number (so a move clobbers no source). Sources from count up stay put. */
    int temp[count > 0 ? count : 1];
    int next = count, rc = 0;
    for (int i = 0; i < count && rc == 0; i++) {
        temp[i] = fds[i];
        if (fds[i] >= count)
            continue;
        while (is_source(fds, count, next))
            next++;
        temp[i] = next++;
        rc = posix_spawn_file_actions_adddup2(&fa, fds[i], temp[i]);
    }
    for (int i = 0; i < count && rc == 0; i++)
        rc = posix_spawn_file_actions_adddup2(&fa, temp[i], i);
    if (rc == 0)
        rc = posix_spawn_file_actions_addclosefrom_np(&fa, count);
    if (rc != 0) {
        posix_spawn_file_actions_destroy(&fa);
        posix_spawnattr_destroy(&attr);
        return -rc;
    }
    short flags = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF;
    if (setsid)
        flags |= POSIX_SPAWN_SETSID;
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setflags(&attr, flags);
    pid_t pid;
    rc = posix_spawn(&pid, path, &fa, &attr, argv, envp);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    return rc == 0 ? pid : -rc;
}

pid_t crfork_wait(pid_t pid, int *status, int flags)
{
    for (;;) {
        pid_t r = waitpid(pid, status, flags);
        if (r >= 0)
            return r;
        if (errno != EINTR)
            return -errno;
    }
}

int crfork_wifexited(int status) { return WIFEXITED(status); }
int crfork_wexitstatus(int status) { return WEXITSTATUS(status); }
int crfork_wifsignaled(int status) { return WIFSIGNALED(status); }
int crfork_wtermsig(int status) { return WTERMSIG(status); }

char crfork_proc_state(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = 0;
    char *paren = strrchr(buf, ')');
    return paren && paren[1] == ' ' ? paren[2] : 0;
}

int crfork_socketpair(int fds[2])
{
    return socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0 ? 0 : -errno;
}

unsigned long long crfork_monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (unsigned long long)ts.tv_sec * 1000000000ull + (unsigned long long)ts.tv_nsec;
}

int crfork_malloc_thresholds(int mmap_bytes, int trim_bytes)
{
    return mallopt(M_MMAP_THRESHOLD, mmap_bytes) && mallopt(M_TRIM_THRESHOLD, trim_bytes);
}

int crfork_rename_exchange(const char *a, const char *b)
{
    return renameat2(AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE);
}

int crfork_pidfd_open(pid_t pid) { return (int)syscall(SYS_pidfd_open, pid, 0); }

int crfork_pidfd_send_signal(int pidfd, int sig) { return (int)syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0); }

int crfork_setfsuid(unsigned uid) { return (int)syscall(SYS_setfsuid, uid); }

int crfork_setfsgid(unsigned gid) { return (int)syscall(SYS_setfsgid, gid); }

int crfork_allowed_cpus(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0)
        return -1;
    return CPU_COUNT(&set);
}
