#include "crfork.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <limits.h>
#include <linux/futex.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
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

int crfork_set_thread_nice(int nice)
{
    return setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), nice) == 0 ? 0 : errno;
}

int crfork_thread_nice(void)
{
    errno = 0;
    return getpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid));
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

int crfork_pidfd_sigqueue(int pidfd, int sig, unsigned long long value)
{
    siginfo_t info;
    memset(&info, 0, sizeof info);
    info.si_signo = sig;
    info.si_code = SI_QUEUE;
    info.si_pid = getpid();
    info.si_uid = getuid();
    info.si_value.sival_ptr = (void *)(uintptr_t)value;
    return (int)syscall(SYS_pidfd_send_signal, pidfd, sig, &info, 0);
}

int crfork_setfsuid(unsigned uid) { return (int)syscall(SYS_setfsuid, uid); }

int crfork_setfsgid(unsigned gid) { return (int)syscall(SYS_setfsgid, gid); }

int crfork_allowed_cpus(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0)
        return -1;
    return CPU_COUNT(&set);
}

#ifndef SYS_pidfd_getfd
#define SYS_pidfd_getfd 438
#endif

int crfork_pidfd_getfd(int pidfd, int fd)
{
    int r = (int)syscall(SYS_pidfd_getfd, pidfd, fd, 0);
    return r < 0 ? -errno : r;
}

int crfork_uffd_api(int uffd)
{
    struct uffdio_api api = {.api = UFFD_API,
                             .features = UFFD_FEATURE_MISSING_SHMEM | UFFD_FEATURE_WP_HUGETLBFS_SHMEM};
    return ioctl(uffd, UFFDIO_API, &api) < 0 ? -errno : 0;
}

int crfork_uffd_register(int uffd, unsigned long start, unsigned long len)
{
    struct uffdio_register r = {.range = {.start = start, .len = len},
                                .mode = UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP};
    return ioctl(uffd, UFFDIO_REGISTER, &r) < 0 ? -errno : 0;
}

int crfork_uffd_copy(int uffd, unsigned long dst, const void *src, unsigned long len, int wp)
{
    struct uffdio_copy c = {
        .dst = dst, .src = (unsigned long)src, .len = len, .mode = wp ? UFFDIO_COPY_MODE_WP : 0};
    return ioctl(uffd, UFFDIO_COPY, &c) < 0 ? -errno : 0;
}

int crfork_uffd_writeprotect(int uffd, unsigned long start, unsigned long len, int wp, int wake)
{
    struct uffdio_writeprotect w = {.range = {.start = start, .len = len},
                                    .mode = wp ? UFFDIO_WRITEPROTECT_MODE_WP
                                               : (wake ? 0 : UFFDIO_WRITEPROTECT_MODE_DONTWAKE)};
    return ioctl(uffd, UFFDIO_WRITEPROTECT, &w) < 0 ? -errno : 0;
}

int crfork_uffd_wake(int uffd, unsigned long start, unsigned long len)
{
    struct uffdio_range r = {.start = start, .len = len};
    return ioctl(uffd, UFFDIO_WAKE, &r) < 0 ? -errno : 0;
}

int crfork_uffd_read(int uffd, unsigned long *address, int *write, int *wp)
{
    struct uffd_msg m;
    ssize_t n = read(uffd, &m, sizeof m);
    if (n < 0)
        return errno == EAGAIN ? 0 : -errno;
    if (n != (ssize_t)sizeof m)
        return -EIO;
    if (m.event != UFFD_EVENT_PAGEFAULT)
        return 2;
    *address = (unsigned long)m.arg.pagefault.address;
    *write = (m.arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WRITE) != 0;
    *wp = (m.arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP) != 0;
    return 1;
}

int crfork_punch(int fd, long long offset, long long len)
{
    return fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, len) < 0 ? -errno : 0;
}

int crfork_allocate(int fd, long long offset, long long len)
{
    return fallocate(fd, FALLOC_FL_KEEP_SIZE, offset, len) < 0 ? -errno : 0;
}

int crfork_tgkill(pid_t pid, pid_t tid, int sig) { return (int)syscall(SYS_tgkill, pid, tid, sig); }

int crfork_futex_wake_shared(const void *addr)
{
    return (int)syscall(SYS_futex, addr, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

int crfork_futex_wait_shared(const void *addr, unsigned expected, long timeout_ms)
{
    struct timespec t = {.tv_sec = timeout_ms / 1000, .tv_nsec = (timeout_ms % 1000) * 1000000L};
    return (int)syscall(SYS_futex, addr, FUTEX_WAIT, expected, &t, NULL, 0);
}

pid_t crfork_gettid(void) { return (pid_t)syscall(SYS_gettid); }

int crfork_unix_connect(const char *path, const char *name)
{
    struct sockaddr_un bound = {.sun_family = AF_UNIX}, to = {.sun_family = AF_UNIX};
    size_t nlen = strlen(name), plen = strlen(path);
    if (nlen + 1 > sizeof bound.sun_path || plen >= sizeof to.sun_path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(bound.sun_path + 1, name, nlen); /* sun_path[0] stays 0: an abstract name */
    memcpy(to.sun_path, path, plen);
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s < 0)
        return -1;
    if (bind(s, (struct sockaddr *)&bound, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + nlen)) != 0 ||
        connect(s, (struct sockaddr *)&to, sizeof to) != 0) {
        int e = errno;
        close(s);
        errno = e;
        return -1;
    }
    return s;
}
