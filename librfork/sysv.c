/*
 * System V shared memory that can follow children to other nodes.
 *
 * rforkd keeps memfd mappings coherent across nodes with a userfaultfd, but the mapping of a System V
 * segment cannot be registered with one (UFFDIO_REGISTER fails with EINVAL on this kernel). So before a
 * fork that may be placed on another node, a process that alone attaches a segment no other process can
 * find by a key (made with IPC_PRIVATE, or already removed) moves the segment into a memfd: the contents
 * are copied, the memfd is mapped over each attach at the same address, and the segment is removed.
 * From then on the segment's id works through this table, in this process and in the children that
 * inherit it: shmat maps the memfd, shmdt unmaps it, shmctl answers from what the segment was.
 *
 * The same happens when `rfork migrate` moves a running process (rfork.c's move, every other thread
 * parked in its handler, so none can write during the copy; a thread parked inside shmat or shmdt holds
 * the table, and the segments then stay: the move is refused by the daemon's memory check).
 *
 * Left alone (a child holding it stays home, with the line naming it): a segment with a key another
 * process could shmget, one another process attaches, one attached in parts (mprotect split it), and,
 * at a fork, every segment of a process with several threads (one could write during the copy).
 *
 * Once the memory is shared with another node, librfork has reduced the memfd descriptor to O_PATH (it
 * cannot be mapped again): a new shmat then maps the pages of an attach this process still has
 * (mremap with old size 0 makes a second mapping of a shared mapping's pages) and asks rforkd to watch
 * every mapping of it before it returns. With no attach left it fails with EINVAL and a line.
 */
#define _GNU_SOURCE
#include "internal.h"
#include "safe.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/syscall.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))

#define SYSV_MAX 64        /* segments moved into memfds, per process */
#define SYSV_ATTACH_MAX 16 /* attaches of one segment in one process */

struct segment {
    int used;
    int id;          /* the System V id the program knows */
    int fd;          /* the memfd (close-on-exec), -1 once closed */
    size_t mapped;   /* bytes mapped per attach: the size rounded up to pages */
    int removed;     /* IPC_RMID was asked (or the segment was already removed when moved) */
    struct shmid_ds ds; /* what IPC_STAT said when it was moved */
    void *attach[SYSV_ATTACH_MAX];
};

static struct segment seg[SYSV_MAX];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
/* Whether this process (or the parent it was forked from) ever attached a segment through the kernel:
 * until then a fork reads no memory map for segments (every attach comes through shmat below). */
static int attached;

/* One mapping of a System V segment in this process, from /proc/self/maps. */
struct sysv_map {
    unsigned long start, end, offset;
    int id, prot;
};

struct sysv_scan {
    struct sysv_map map[SYSV_MAX];
    int n, overflow;
};

/* "START-END PERMS OFFSET DEV INODE /SYSV0000abcd (deleted)": the inode is the segment's id. */
static int scan_line(const char *line, void *arg)
{
    struct sysv_scan *s = arg;
    const char *path = strchr(line, '/');
    if (!path || strncmp(path, "/SYSV", 5) != 0)
        return 0;
    char *p;
    unsigned long start = strtoul(line, &p, 16);
    if (*p != '-')
        return 0;
    unsigned long end = strtoul(p + 1, &p, 16);
    if (*p != ' ' || strlen(p) < 6)
        return 0;
    int prot = (p[1] == 'r' ? PROT_READ : 0) | (p[2] == 'w' ? PROT_WRITE : 0) | (p[3] == 'x' ? PROT_EXEC : 0);
    unsigned long offset = strtoul(p + 6, &p, 16);
    strtoul(p, &p, 16); /* device major */
    if (*p == ':')
        strtoul(p + 1, &p, 16);
    unsigned long id = strtoul(p, NULL, 10);
    if (s->n == SYSV_MAX) {
        s->overflow = 1;
        return 1;
    }
    s->map[s->n++] = (struct sysv_map){.start = start, .end = end, .offset = offset, .id = (int)id, .prot = prot};
    return 0;
}

static struct segment *find(int id)
{
    for (int i = 0; i < SYSV_MAX; i++)
        if (seg[i].used && seg[i].id == id)
            return &seg[i];
    return NULL;
}

/* The number of threads of this process (/proc/self/status), 0 when it cannot be read. */
static int thread_count(void)
{
    int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    char buf[4096];
    ssize_t r = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (r <= 0)
        return 0;
    buf[r] = 0;
    const char *t = strstr(buf, "\nThreads:");
    return t ? atoi(t + 9) : 0;
}

/* Moves segment `id`, whose mappings here are `maps` (n of them), into a memfd; 0 when done. */
static int move_segment(int id, const struct sysv_map *maps, int n)
{
    struct shmid_ds ds;
    if (syscall(SYS_shmctl, id, IPC_STAT, &ds) != 0)
        return -1;
    int removed = (ds.shm_perm.mode & SHM_DEST) != 0;
    /* Another process attaches it, or could find it by its key. */
    if ((ds.shm_perm.__key != IPC_PRIVATE && !removed) || ds.shm_nattch != (shmatt_t)n)
        return -1;
    long page = sysconf(_SC_PAGESIZE);
    size_t mapped = (ds.shm_segsz + (size_t)page - 1) & ~((size_t)page - 1);
    if (n > SYSV_ATTACH_MAX)
        return -1;
    for (int i = 0; i < n; i++) /* each attach whole: not split by mprotect or a partial munmap */
        if (maps[i].offset != 0 || maps[i].end - maps[i].start != mapped)
            return -1;
    struct segment *slot = NULL;
    for (int i = 0; i < SYSV_MAX && !slot; i++)
        if (!seg[i].used)
            slot = &seg[i];
    if (!slot)
        return -1;
    int fd = memfd_create("rfork-sysv", MFD_CLOEXEC);
    if (fd < 0)
        return -1;
    /* The contents, through an attach of our own (the program's may be read-only or inaccessible). */
    void *src = (void *)syscall(SYS_shmat, id, NULL, SHM_RDONLY);
    int ok = src != (void *)-1 && ftruncate(fd, (off_t)mapped) == 0;
    for (size_t done = 0; ok && done < ds.shm_segsz;) {
        ssize_t w = pwrite(fd, (char *)src + done, ds.shm_segsz - done, (off_t)done);
        if (w <= 0)
            ok = 0;
        else
            done += (size_t)w;
    }
    if (src != (void *)-1)
        syscall(SYS_shmdt, src);
    for (int i = 0; ok && i < n; i++)
        if (mmap((void *)maps[i].start, mapped, maps[i].prot, MAP_SHARED | MAP_FIXED, fd, 0) == MAP_FAILED) {
            if (i > 0) { /* some attaches are the memfd already: both must stay one memory */
                safe_say("rfork: cannot map the memfd of System V segment over its attaches (",
                         safe_strerror(errno), "); ending\n", (char *)NULL);
                _exit(127);
            }
            ok = 0;
        }
    if (!ok) {
        close(fd);
        return -1;
    }
    if (!removed)
        syscall(SYS_shmctl, id, IPC_RMID, NULL); /* no attach is left: it is gone */
    *slot = (struct segment){.used = 1, .id = id, .fd = fd, .mapped = mapped, .removed = removed, .ds = ds};
    for (int i = 0; i < n; i++)
        slot->attach[i] = (void *)maps[i].start;
    return 0;
}

void rfork_sysv_move(int parked)
{
    /* A move reads the map whatever the flag says: a segment attached by a raw system call moves too (and
     * is known from then on), and a move happens once, not at every fork. */
    if (!parked && !__atomic_load_n(&attached, __ATOMIC_ACQUIRE))
        return;
    struct sysv_scan scan = {.n = 0, .overflow = 0};
    if (rfork_maps_each(scan_line, &scan) < 0 || scan.n == 0 || scan.overflow || (!parked && thread_count() != 1))
        return;
    /* Parked threads may have stopped inside shmat or shmdt, holding the table: the segments then stay. */
    if (parked ? pthread_mutex_trylock(&lock) != 0 : pthread_mutex_lock(&lock) != 0)
        return;
    for (int i = 0; i < scan.n; i++) {
        int id = scan.map[i].id, first = 1;
        for (int j = 0; j < i; j++)
            first = first && scan.map[j].id != id;
        if (!first || find(id))
            continue;
        struct sysv_map maps[SYSV_ATTACH_MAX];
        int n = 0;
        for (int j = i; j < scan.n; j++)
            if (scan.map[j].id == id && n < SYSV_ATTACH_MAX)
                maps[n++] = scan.map[j];
        move_segment(id, maps, n);
    }
    pthread_mutex_unlock(&lock);
}

/* Frees a slot no attach uses once the program removed it. */
static void release_if_done(struct segment *s)
{
    if (!s->removed)
        return;
    for (int i = 0; i < SYSV_ATTACH_MAX; i++)
        if (s->attach[i])
            return;
    if (s->fd >= 0)
        close(s->fd);
    memset(s, 0, sizeof *s);
}

/* A new attach of segment s, whose memfd is O_PATH: the pages of an attach it has, mapped again (at
 * addr, which must be free), then watched by rforkd. (void *)-1 with *err set when it cannot be. */
static void *attach_again(struct segment *s, const void *addr, int flags, int *err)
{
    void *from = NULL;
    for (int k = 0; k < SYSV_ATTACH_MAX && !from; k++)
        from = s->attach[k];
    const char *why = NULL;
    void *p = MAP_FAILED;
    uintptr_t at = (uintptr_t)addr;
    if (at && (flags & SHM_RND))
        at &= ~(uintptr_t)(SHMLBA - 1);
    if (!from) {
        why = "this process has no attach of it left to map again";
    } else if (at) {
        /* mremap cannot refuse a used address itself: a placeholder claims it first. */
        void *hold = mmap((void *)at, s->mapped, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
        if (hold == MAP_FAILED) {
            *err = errno == EEXIST ? EINVAL : errno;
            return (void *)-1;
        }
        p = mremap(from, 0, s->mapped, MREMAP_MAYMOVE | MREMAP_FIXED, (void *)at);
        if (p == MAP_FAILED)
            munmap(hold, s->mapped);
    } else {
        p = mremap(from, 0, s->mapped, MREMAP_MAYMOVE);
    }
    if (!why && p == MAP_FAILED)
        why = "cannot map its pages again";
    if (!why && mprotect(p, s->mapped, (flags & SHM_RDONLY) ? PROT_READ : PROT_READ | PROT_WRITE) != 0)
        why = "cannot protect the new attach";
    if (!why && !rfork_shm_rewatch())
        why = "rforkd does not watch the new attach";
    if (!why)
        return p;
    if (p != MAP_FAILED)
        munmap(p, s->mapped);
    char num[24];
    struct sbuf b;
    sb_init(&b, num, sizeof num);
    sb_dec(&b, s->id);
    safe_say("rfork: shmat of System V segment ", num, " (its memory is shared with another node) fails: ", why,
             "\n", (char *)NULL);
    *err = EINVAL;
    return (void *)-1;
}

EXPORT void *shmat(int id, const void *addr, int flags)
{
    pthread_mutex_lock(&lock);
    struct segment *s = find(id);
    if (!s) {
        pthread_mutex_unlock(&lock);
        void *p = (void *)syscall(SYS_shmat, id, addr, flags);
        if (p != (void *)-1)
            __atomic_store_n(&attached, 1, __ATOMIC_RELEASE);
        return p;
    }
    void *result = (void *)-1;
    int err = EINVAL;
    int slot = -1;
    for (int i = 0; i < SYSV_ATTACH_MAX && slot < 0; i++)
        if (!s->attach[i])
            slot = i;
    int status = s->fd >= 0 ? fcntl(s->fd, F_GETFL) : -1;
    if (slot < 0) {
        err = EMFILE;
    } else if (status < 0 || (status & O_PATH)) {
        /* The memory is shared with another node: a second mapping of an attach's pages, watched. */
        result = attach_again(s, addr, flags, &err);
        if (result != (void *)-1)
            s->attach[slot] = result;
    } else {
        uintptr_t at = (uintptr_t)addr;
        if (at && (flags & SHM_RND))
            at &= ~(uintptr_t)(SHMLBA - 1);
        int prot = (flags & SHM_RDONLY) ? PROT_READ : PROT_READ | PROT_WRITE;
        if (flags & SHM_EXEC)
            prot |= PROT_EXEC;
        int mflags = MAP_SHARED | (at ? ((flags & SHM_REMAP) ? MAP_FIXED : MAP_FIXED_NOREPLACE) : 0);
        void *p = mmap((void *)at, s->mapped, prot, mflags, s->fd, 0);
        if (p != MAP_FAILED) {
            s->attach[slot] = p;
            result = p;
        } else {
            err = errno == EEXIST ? EINVAL : errno;
        }
    }
    pthread_mutex_unlock(&lock);
    if (result == (void *)-1)
        errno = err;
    return result;
}

EXPORT int shmdt(const void *addr)
{
    pthread_mutex_lock(&lock);
    for (int i = 0; i < SYSV_MAX; i++)
        for (int k = 0; seg[i].used && k < SYSV_ATTACH_MAX; k++)
            if (seg[i].attach[k] == addr) {
                munmap(seg[i].attach[k], seg[i].mapped);
                seg[i].attach[k] = NULL;
                release_if_done(&seg[i]);
                pthread_mutex_unlock(&lock);
                return 0;
            }
    pthread_mutex_unlock(&lock);
    return (int)syscall(SYS_shmdt, addr);
}

EXPORT int shmctl(int id, int cmd, struct shmid_ds *buf)
{
    pthread_mutex_lock(&lock);
    struct segment *s = cmd == IPC_STAT || cmd == IPC_SET || cmd == IPC_RMID || cmd == SHM_LOCK ||
                                cmd == SHM_UNLOCK
                            ? find(id)
                            : NULL;
    if (!s) {
        pthread_mutex_unlock(&lock);
        return (int)syscall(SYS_shmctl, id, cmd, buf);
    }
    int r = 0;
    if (cmd == IPC_STAT) {
        if (!buf) {
            errno = EFAULT;
            r = -1;
        } else {
            *buf = s->ds;
            buf->shm_nattch = 0;
            for (int k = 0; k < SYSV_ATTACH_MAX; k++)
                buf->shm_nattch += s->attach[k] != NULL;
            if (s->removed)
                buf->shm_perm.mode |= SHM_DEST;
        }
    } else if (cmd == IPC_SET) {
        if (!buf) {
            errno = EFAULT;
            r = -1;
        } else {
            s->ds.shm_perm.uid = buf->shm_perm.uid;
            s->ds.shm_perm.gid = buf->shm_perm.gid;
            s->ds.shm_perm.mode = (s->ds.shm_perm.mode & ~0777u) | (buf->shm_perm.mode & 0777u);
        }
    } else if (cmd == IPC_RMID) {
        s->removed = 1;
        release_if_done(s);
    }
    pthread_mutex_unlock(&lock);
    return r;
}
