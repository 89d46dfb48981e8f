/* Linux calls Swift cannot make directly. Every symbol is prefixed crfork_. */
#ifndef CRFORK_SYSTEM_H
#define CRFORK_SYSTEM_H

#include <sys/types.h>

/* posix_spawn with the given descriptors placed at 0..count-1 (fds[i] becomes descriptor i), every
 * other descriptor closed, in a new session when setsid is nonzero. Returns the pid or -errno. */
/* Sets the calling thread's nice value (setpriority on its thread ID); 0, or the errno. */
int crfork_set_thread_nice(int nice);

/* The calling thread's nice value, from the kernel (getpriority on its thread ID). */
int crfork_thread_nice(void);

pid_t crfork_spawn(const char *path, char *const argv[], char *const envp[], const int *fds, int count,
                   int setsid);

/* waitpid that retries EINTR. Returns the pid, 0 (WNOHANG, nothing), or -errno. */
pid_t crfork_wait(pid_t pid, int *status, int flags);

int crfork_wifexited(int status);
int crfork_wexitstatus(int status);
int crfork_wifsignaled(int status);
int crfork_wtermsig(int status);

/* The state letter of /proc/PID/stat ('T' stopped), or 0 when the process is gone. */
char crfork_proc_state(pid_t pid);

/* A connected unix stream socket pair, close-on-exec; 0 or -errno. */
int crfork_socketpair(int fds[2]);

/* CLOCK_MONOTONIC in nanoseconds (machine-wide, comparable with librfork's timestamps). */
unsigned long long crfork_monotonic_ns(void);
/* How many CPUs the calling thread may run on, or -1. */
int crfork_allowed_cpus(void);

/* mallopt(M_MMAP_THRESHOLD) and mallopt(M_TRIM_THRESHOLD), in bytes; 0 on failure. */
int crfork_malloc_thresholds(int mmap_bytes, int trim_bytes);

/* Swaps two paths in one step (renameat2 RENAME_EXCHANGE): 0, or -1/errno. */
int crfork_rename_exchange(const char *a, const char *b);

/* pidfd_open(2) and pidfd_send_signal(2): -1/errno on failure. */
int crfork_pidfd_open(pid_t pid);
int crfork_pidfd_send_signal(int pidfd, int sig);
/* pidfd_send_signal(2) with a value (si_code SI_QUEUE, as sigqueue(3) sends): -1/errno on failure. */
int crfork_pidfd_sigqueue(int pidfd, int sig, unsigned long long value);

/* setfsuid(2)/setfsgid(2) as raw system calls: they change the calling thread's file system identity only. */
int crfork_setfsuid(unsigned uid);
int crfork_setfsgid(unsigned gid);

/* Shared memory across nodes: a process's userfaultfd, taken and driven by rforkd (which acts on that
 * process's memory through it). Every call returns 0 (or the count asked for) or -errno. */

/* pidfd_getfd(2): a copy of descriptor fd of the process behind pidfd. */
int crfork_pidfd_getfd(int pidfd, int fd);
/* UFFDIO_API with missing and write-protect faults on shared memory (shmem). */
int crfork_uffd_api(int uffd);
/* UFFDIO_REGISTER of [start, start+len) for missing and write-protect faults; EBUSY when already done. */
int crfork_uffd_register(int uffd, unsigned long start, unsigned long len);
/* UFFDIO_COPY of len bytes from src to dst (write-protected when wp), waking the faulting threads. */
int crfork_uffd_copy(int uffd, unsigned long dst, const void *src, unsigned long len, int wp);
/* UFFDIO_WRITEPROTECT: protect (wp) or unprotect [start, start+len); unprotecting wakes when wake. */
int crfork_uffd_writeprotect(int uffd, unsigned long start, unsigned long len, int wp, int wake);
/* UFFDIO_WAKE on [start, start+len). */
int crfork_uffd_wake(int uffd, unsigned long start, unsigned long len);
/* One message: 1 with a page fault (address, write, wp), 2 with another event, 0 when none waits, or
 * -errno. */
int crfork_uffd_read(int uffd, unsigned long *address, int *write, int *wp);
/* fallocate(PUNCH_HOLE|KEEP_SIZE): the bytes read as zero and every process mapping them faults. */
int crfork_punch(int fd, long long offset, long long len);
/* fallocate(KEEP_SIZE): holes in the range become zero pages; present pages stay as they are. */
int crfork_allocate(int fd, long long offset, long long len);

/* tgkill(2): a signal to one thread of a process; 0 or -1/errno. */
int crfork_tgkill(pid_t pid, pid_t tid, int sig);

/* futex(FUTEX_WAKE) of every waiter on the shared futex word at addr (a word of a MAP_SHARED mapping: the
 * kernel keys it by the object and offset, so waiters of other processes mapping it are woken); the
 * number woken, or -1/errno. */
int crfork_futex_wake_shared(const void *addr);

/* futex(FUTEX_WAIT) on the shared word at addr while it holds expected, for at most timeout_ms (tests
 * wait on a word this way); 0 when woken, or -1/errno (EAGAIN: the word differed; ETIMEDOUT). */
int crfork_futex_wait_shared(const void *addr, unsigned expected, long timeout_ms);

/* The calling thread's id. */
pid_t crfork_gettid(void);

/* A nonblocking AF_UNIX stream socket bound to the abstract name `name` (what the other end's
 * getpeername() shows) and connected to the socket at `path`; the descriptor, or -1/errno (EAGAIN: the
 * listener's backlog is full). */
int crfork_unix_connect(const char *path, const char *name);

/* The layout of struct ucred (SO_PEERCRED). */
struct crfork_ucred {
    pid_t pid;
    uid_t uid;
    gid_t gid;
};

#endif
