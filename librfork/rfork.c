/*
 * librfork.so: loaded with LD_PRELOAD by `rfork run`. Replaces fork() (and its glibc aliases) so that
 * the child may run on another node while the parent keeps an ordinary child.
 *
 * After a real fork the parent returns at once. The child asks the node daemon (rforkd, at
 * $RFORK_SOCKET) where to run and blocks reading the answer; meanwhile the daemon checkpoints it with
 * CRIU and restores the copy on the target node. The local copy then either
 *   - continues as a plain child (placement chose this node, or placement failed: one line on stderr),
 *   - or execs the stand-in, which keeps the child's PID and descriptors on this node and relays them.
 * The restored copy reads "you are remote" from the same (replaced) socket and returns 0 from fork().
 *
 * Nothing here writes to the program's stdio except that one line for a failed placement.
 */
#define _GNU_SOURCE
#include "include/rfork.h"
#include "internal.h"
#include "safe.h"
#include "wire.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <linux/futex.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))

extern char **environ;

typedef pid_t (*fork_fn)(void);

static fork_fn real_fork_fn, real_underscore_fork_fn;
static int is_remote;      /* this process was restored on another node */
static __thread int depth; /* re-entrancy guard */
static struct rfork_frame reply; /* only the child touches it */
static char standin_default[PATH_MAX]; /* ../libexec/rfork/rfork-standin next to this library, found at load */

/*
 * Shared memory across nodes. A process that maps shared anonymous memory (MAP_SHARED|MAP_ANONYMOUS,
 * inherited across fork) hands rforkd a userfaultfd of its own: through it rforkd fetches, protects and
 * drops pages of that memory in this process when a child shares it from another node. A parent makes
 * one before it forks (its child names it in the placement request, and rforkd takes it from the parent);
 * a child makes its own once placed, here or on the target, and gives it over (RFORK_MSG_SHM_ATTACH).
 */
static int shm_uffd = -1;       /* this process's userfaultfd, once made */
static int parent_uffd = -1;    /* in a child: its parent's, by number in the parent (or -errno) */
static int parent_uffd_set;     /* whether parent_uffd says anything */

/* Calls fn(line, arg) for each line of /proc/self/maps (lines longer than 511 bytes are skipped) until fn
 * returns nonzero, and returns that (0 at the end). Only open/read/close: a child of a threaded parent,
 * or a signal handler, may call it. */
static int maps_each(int (*fn)(const char *line, void *arg), void *arg)
{
    int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    char buf[1024]; /* on the stack: two threads may fork at once */
    char line[512];
    size_t len = 0;
    int r = 0, skipping = 0;
    ssize_t n;
    while (!r && (n = read(fd, buf, sizeof buf)) > 0) {
        for (ssize_t i = 0; i < n && !r; i++) {
            char c = buf[i];
            if (c != '\n') {
                if (len < sizeof line - 1)
                    line[len++] = c;
                else
                    skipping = 1;
                continue;
            }
            line[len] = 0;
            if (!skipping)
                r = fn(line, arg);
            len = 0;
            skipping = 0;
        }
    }
    close(fd);
    return r;
}

int rfork_maps_each(int (*fn)(const char *line, void *arg), void *arg) { return maps_each(fn, arg); }

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* Whether a maps line is memory rforkd keeps coherent across nodes (SharedMemory.isCoherentAcrossNodes):
 * shared ('s'), of shared anonymous memory, a memfd, or an unlinked file under /dev/shm. The path is the
 * first '/' of the line (nothing before it has one). */
static int line_is_coherent(const char *line)
{
    const char *sp = strchr(line, ' ');
    const char *path = strchr(line, '/');
    if (!sp || strlen(sp) <= 5 || sp[4] != 's' || !path)
        return 0;
    return strcmp(path, "/dev/zero (deleted)") == 0 || strncmp(path, "/memfd:", 7) == 0 ||
           (strncmp(path, "/dev/shm/", 9) == 0 && ends_with(path, " (deleted)"));
}

static int found_coherent(const char *line, void *arg)
{
    (void)arg;
    return line_is_coherent(line);
}

/* Whether this process maps memory that may be shared across nodes. */
static int maps_coherent(void) { return maps_each(found_coherent, NULL) != 0; }

/* Reads a decimal number at *p and moves *p past it; how many digits it had (0: none, *out untouched). */
static int read_decimal(const char **p, unsigned long long *out)
{
    unsigned long long v = 0;
    int digits = 0;
    for (; **p >= '0' && **p <= '9'; (*p)++, digits++)
        v = v * 10 + (unsigned long long)(**p - '0');
    if (digits)
        *out = v;
    return digits;
}

/* A maps line's device and inode ("start-end perms offset MM:mm inode path"); 0 when unreadable. */
static int line_object(const char *line, unsigned *major, unsigned *minor, unsigned long long *inode)
{
    const char *p = line;
    for (int field = 0; field < 3; field++) {
        p = strchr(p, ' ');
        if (!p)
            return 0;
        while (*p == ' ')
            p++;
    }
    unsigned v[2] = {0, 0};
    for (int part = 0; part < 2; part++) {
        int digits = 0;
        for (; *p && *p != ':' && *p != ' '; p++, digits++) {
            int d = *p >= '0' && *p <= '9' ? *p - '0' : *p >= 'a' && *p <= 'f' ? *p - 'a' + 10 : -1;
            if (d < 0)
                return 0;
            v[part] = v[part] * 16 + (unsigned)d;
        }
        if (!digits || *p != (part == 0 ? ':' : ' '))
            return 0;
        p++;
    }
    unsigned long long ino = 0;
    if (!read_decimal(&p, &ino))
        return 0;
    *major = v[0];
    *minor = v[1];
    *inode = ino;
    return 1;
}

struct seal {
    unsigned long long inode;
    unsigned major, minor;
    int found;
};

static int find_object(const char *line, void *arg)
{
    struct seal *s = arg;
    unsigned major, minor;
    unsigned long long inode;
    if (line_is_coherent(line) && line_object(line, &major, &minor, &inode) && inode == s->inode) {
        s->major = major;
        s->minor = minor;
        s->found = 1;
    }
    return s->found;
}

static int seal_fd(int fd, void *arg)
{
    const struct seal *s = arg;
    struct stat st;
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || (fl & O_PATH) || fstat(fd, &st) != 0 || st.st_ino != s->inode ||
        major(st.st_dev) != s->major || minor(st.st_dev) != s->minor)
        return 0;
    char path[32];
    struct sbuf b;
    sb_init(&b, path, sizeof path);
    sb_str(&b, "/proc/self/fd/");
    sb_dec(&b, fd);
    int cloexec = fcntl(fd, F_GETFD) & FD_CLOEXEC;
    int p = open(path, O_PATH | O_CLOEXEC);
    if (p >= 0) {
        dup3(p, fd, cloexec ? O_CLOEXEC : 0);
        close(p);
    }
    return 0;
}

/* Memory shared across nodes is kept coherent through its mappings only: read(2) and write(2) through a
 * descriptor would see this node's copy. Every descriptor of the object this process maps with `inode`
 * becomes an O_PATH descriptor of it (same number, same close-on-exec): fstat still works, reading,
 * writing and mapping fail with EBADF. Async-signal-safe. */
static void seal_object(unsigned long long inode)
{
    struct seal s = {.inode = inode};
    if (maps_each(find_object, &s))
        safe_each_fd(seal_fd, &s);
}

/* RFORK_SEAL_SIGNAL from rforkd, its value the inode of an object that has become shared across nodes,
 * or RFORK_SEAL_RELEASE_UFFD: this process closes its userfaultfd, of which rforkd holds a copy, so that
 * CRIU can save it; a later fork() makes a new one. */
static void on_seal_signal(int signo, siginfo_t *info, void *context)
{
    (void)signo;
    (void)context;
    int saved_errno = errno;
    if (info && info->si_code == SI_QUEUE) {
        unsigned long long value = (unsigned long long)(uintptr_t)info->si_value.sival_ptr;
        if (value == RFORK_SEAL_RELEASE_UFFD) {
            int fd = __atomic_exchange_n(&shm_uffd, -1, __ATOMIC_ACQ_REL);
            if (fd >= 0)
                close(fd);
        } else {
            seal_object(value);
        }
    }
    errno = saved_errno;
}

/* The reply to SHM_ATTACH: "seal INODE ..." names the objects it maps that are shared across nodes. */
static void seal_listed(const char *text)
{
    if (strncmp(text, "seal", 4) != 0)
        return;
    const char *p = text + 4;
    while (*p == ' ') {
        p++;
        unsigned long long inode = 0;
        if (read_decimal(&p, &inode))
            seal_object(inode);
    }
}

/* A new userfaultfd of this process that handles faults inside system calls too (rforkd needs that: a
 * read(2) into shared memory faults in the kernel). An unprivileged process gets one from the system call
 * only with vm.unprivileged_userfaultfd=1; else (EPERM) from /dev/userfaultfd, if the administrator lets
 * its user open that device (a group, say), which leaves the sysctl alone for everyone else. -1 with
 * errno (the system call's) when neither gives one. Async-signal-safe. */
static int make_userfaultfd(void)
{
    int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    if (fd >= 0 || errno != EPERM)
        return fd;
    int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
    if (dev >= 0) {
        fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
        close(dev);
        if (fd >= 0)
            return fd;
    }
    errno = EPERM;
    return -1;
}

/* Gives this process's userfaultfd to rforkd at sock; 1 when rforkd covers its shared memory. A restored
 * child that cannot be covered must not run on with the copy of the memory it was restored with: it ends
 * with one line. */
static int attach_shared(const char *sock, int remote)
{
    int uffd = shm_uffd >= 0 ? shm_uffd : make_userfaultfd();
    int err = uffd < 0 ? errno : 0;
    char msg[128];
    struct sbuf b;
    sb_init(&b, msg, sizeof msg);
    sb_str(&b, "pid ");
    sb_dec(&b, getpid());
    sb_str(&b, uffd >= 0 ? "\nuffd " : "\nuffderr ");
    sb_dec(&b, uffd >= 0 ? uffd : err);
    sb_chr(&b, '\n');
    /* The parent's too, by its number in the parent: a child kept here may be the only one to name it. */
    if (parent_uffd_set) {
        sb_str(&b, parent_uffd >= 0 ? "puffd " : "puffderr ");
        sb_dec(&b, parent_uffd >= 0 ? parent_uffd : -parent_uffd);
        sb_chr(&b, '\n');
    }
    const char *why = "cannot reach rforkd";
    int ok = 0;
    int c = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct sbuf p;
    sb_init(&p, sa.sun_path, sizeof sa.sun_path);
    sb_str(&p, sock);
    if (c >= 0 && !p.over && connect(c, (struct sockaddr *)&sa, sizeof sa) == 0 &&
        rfork_send(c, RFORK_MSG_SHM_ATTACH, msg, b.len, NULL, 0) == 0) {
        int r = rfork_recv(c, &reply);
        if (r > 0 && reply.type == RFORK_MSG_FORK_REPLY && reply.len >= 1) {
            ok = reply.data[0] == RFORK_SHM_ATTACHED;
            why = reply.len > 1 ? (const char *)reply.data + 1 : "refused";
        }
    }
    if (c >= 0)
        close(c);
    if (ok) {
        shm_uffd = uffd;
        seal_listed(why);
        return 1;
    }
    if (uffd >= 0 && uffd != shm_uffd)
        close(uffd);
    if (remote) {
        safe_say("rfork: the remote child cannot share its parent's memory here: ", why, "\n", (char *)NULL);
        raise(SIGKILL);
        _exit(137);
    }
    return 0;
}

int rfork_shm_rewatch(void)
{
    const char *sock = getenv("RFORK_SOCKET");
    if (!sock || !*sock || shm_uffd < 0)
        return 0;
    return attach_shared(sock, 0);
}

static __thread int use_underscore_fork; /* this fork came in through _Fork() */

static pid_t real_fork(void)
{
    fork_fn *slot = use_underscore_fork ? &real_underscore_fork_fn : &real_fork_fn;
    if (!*slot)
        *slot = (fork_fn)dlsym(RTLD_NEXT, use_underscore_fork ? "_Fork" : "fork");
    if (!*slot) {
        errno = ENOSYS;
        return -1;
    }
    return (*slot)();
}

/*
 * Everything from here to rfork_place_child runs in the child between the fork and its return or exec.
 * After _Fork() (no atfork handlers) a lock another thread of the parent held stays held for good, so
 * this code is async-signal-safe: no malloc, stdio, printf family, opendir, setenv or dladdr (see safe.h).
 */

/* "rfork: " + the pieces + "; child PID runs locally\n" on stderr. */
#define SAY_LOCAL(...)                                                                             \
    do {                                                                                           \
        if (!quiet) {                                                                              \
            char pid_[24];                                                                         \
            struct sbuf pb_;                                                                       \
            sb_init(&pb_, pid_, sizeof pid_);                                                      \
            sb_dec(&pb_, getpid());                                                                \
            safe_say("rfork: ", __VA_ARGS__, "; child ", pid_, " runs locally\n", (char *)NULL);  \
        }                                                                                          \
    } while (0)

struct channel {
    int fd;
    int kind;
    char id[PATH_MAX + 16];
};

/* The mount id of an open descriptor (from /proc/self/fdinfo), or -1. */
static int mount_id(int fd)
{
    char path[64], buf[1024];
    struct sbuf b;
    sb_init(&b, path, sizeof path);
    sb_str(&b, "/proc/self/fdinfo/");
    sb_dec(&b, fd);
    int f = open(path, O_RDONLY | O_CLOEXEC);
    if (f < 0)
        return -1;
    ssize_t n = read(f, buf, sizeof buf - 1);
    close(f);
    if (n <= 0)
        return -1;
    buf[n] = 0;
    char *m = strstr(buf, "mnt_id:");
    if (!m)
        return -1;
    m += 7;
    while (*m == ' ' || *m == '\t')
        m++;
    long v = -1;
    for (; *m >= '0' && *m <= '9' && v < INT_MAX / 10; m++)
        v = (v < 0 ? 0 : v * 10) + (*m - '0');
    return (int)v;
}

static char unmovable[2 * PATH_MAX]; /* why the child cannot leave, when collect_channels says so */

struct collect {
    int ctl;
    struct channel *ch;
    int n, max;
};

/* One descriptor for collect_channels: 0 to go on, -2 for an unmovable one, -1/errno when full. */
static int collect_one(int fd, void *arg)
{
    struct collect *c = arg;
    if (fd == c->ctl)
        return 0;
    struct stat st;
    if (fstat(fd, &st) < 0)
        return 0;
    char link[PATH_MAX], path[32];
    struct sbuf b;
    sb_init(&b, path, sizeof path);
    sb_str(&b, "/proc/self/fd/");
    sb_dec(&b, fd);
    ssize_t l = readlink(path, link, sizeof link - 1);
    if (l < 0)
        return 0;
    link[l] = 0;
    int acc = fcntl(fd, F_GETFL) & O_ACCMODE;
    struct termios t;
    struct channel ch = {.fd = fd, .kind = 0};
    sb_init(&b, ch.id, sizeof ch.id);
    if (S_ISFIFO(st.st_mode) && strncmp(link, "pipe:", 5) == 0) {
        /* Every pipe's read end is relayed only as the remote child reads it: at the fork its parent holds
         * it too (and may read it, as a shell reads its script or a program its input after starting
         * workers), and many children never close the end they do not use. Reading ahead for a child that
         * never reads would take bytes the parent reads. The home rforkd makes it read ahead once its
         * stand-in holds the only read end on the home node. */
        ch.kind = acc == O_RDONLY ? RFORK_CHANNEL_LAZY_INPUT : RFORK_CHANNEL_OUTPUT;
        /* Directional names: the child often holds both ends right after pipe(); fork(). */
        sb_str(&b, "pipe:[");
        sb_udec(&b, (unsigned long)st.st_ino);
        sb_chr(&b, ']');
        sb_chr(&b, ch.kind == RFORK_CHANNEL_OUTPUT ? 'w' : 'r');
    } else if (S_ISCHR(st.st_mode) && tcgetattr(fd, &t) == 0) {
        ch.kind = RFORK_CHANNEL_TERMINAL;
        sb_str(&b, "tty[");
        sb_hex(&b, (unsigned long)st.st_rdev);
        sb_chr(&b, ':');
        sb_hex(&b, (unsigned long)st.st_dev);
        sb_chr(&b, ']');
    } else if (S_ISREG(st.st_mode) && acc != O_RDONLY && link[0] == '/' &&
               (!strstr(link, " (deleted)") || (acc == O_WRONLY && strncmp(link, "/memfd:", 7) == 0))) {
        /* A file the child writes is relayed: the remote node may not see the same mount, and a file
         * that grows between dump and restore would make CRIU refuse it. A memfd it only writes (a
         * remote child's output file is one, made by rfork-nsinit) is relayed too, so that writes
         * reach the one memfd, not a private copy; one it may read is shared memory (kept home). */
        ch.kind = RFORK_CHANNEL_FILE;
        int mnt = mount_id(fd);
        if (mnt < 0)
            return 0;
        /* CRIU's name for a file marked external at dump (--external) and supplied at restore. */
        sb_str(&b, "file[");
        sb_hex(&b, (unsigned)mnt);
        sb_chr(&b, ':');
        sb_hex(&b, (unsigned long)st.st_ino);
        sb_chr(&b, ']');
    } else if (S_ISSOCK(st.st_mode)) {
        /* Its peer stays here: a moved copy would hold a dead connection. */
        sb_init(&b, unmovable, sizeof unmovable);
        sb_str(&b, "the child holds a socket (descriptor ");
        sb_dec(&b, fd);
        sb_str(&b, ", ");
        sb_str(&b, link);
        sb_str(&b, "), which rfork cannot move yet");
        return -2;
    } else {
        return 0; /* left to CRIU (read-only files, devices...), which restores or refuses it */
    }
    for (int i = 0; i < c->n; i++)
        if (strcmp(c->ch[i].id, ch.id) == 0)
            return 0;
    if (c->n == c->max) {
        errno = EMFILE;
        return -1;
    }
    c->ch[c->n++] = ch;
    return 0;
}

/* Finds the descriptors the remote child needs relayed: pipes, terminals and writable files.
 * Returns -2 (reason in unmovable) when the child holds something that cannot follow it. */
static int collect_channels(int ctl, struct channel *ch, int max)
{
    struct collect c = {.ctl = ctl, .ch = ch, .n = 0, .max = max};
    int r = safe_each_fd(collect_one, &c);
    if (r == -2)
        return -2;
    if (r < 0)
        return -1;
    return c.n;
}

unsigned long long rfork_now_ns(void);
static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static char remote_var[] = "RFORK_REMOTE=1";

char **rfork_remote_env(char *const envp[])
{
    size_t n = 0;
    for (char *const *e = envp; e && *e; e++)
        n++;
    char **env = mmap(NULL, (n + 2) * sizeof *env, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (env == MAP_FAILED)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (strncmp(envp[i], "RFORK_REMOTE=", 13) != 0)
            env[k++] = envp[i];
    env[k++] = remote_var;
    env[k] = NULL;
    return env;
}

struct keep {
    int ctl;
    const struct channel *ch;
    int n;
};

static int close_unless_kept(int fd, void *arg)
{
    const struct keep *k = arg;
    int keep = fd == k->ctl;
    for (int j = 0; j < k->n; j++)
        keep |= fd == k->ch[j].fd;
    if (!keep)
        close(fd);
    return 0;
}

/* The local copy becomes the stand-in: keeps only the relayed descriptors and the socket, then execs. */
static void become_standin(int ctl, struct channel *ch, int n, const char *session)
{
    const char *standin = safe_getenv("RFORK_STANDIN");
    if (!standin || !*standin)
        standin = standin_default[0] ? standin_default : NULL;
    static char args[RFORK_MAX_CHANNELS][48];
    char ctlarg[16];
    char *argv[RFORK_MAX_CHANNELS + 4];
    int a = 0;
    struct sbuf b;
    sb_init(&b, ctlarg, sizeof ctlarg);
    sb_dec(&b, ctl);
    argv[a++] = "rfork-standin";
    argv[a++] = ctlarg;
    argv[a++] = (char *)session;
    for (int i = 0; i < n; i++) {
        sb_init(&b, args[i], sizeof args[i]);
        sb_dec(&b, i);
        sb_chr(&b, ':');
        sb_dec(&b, ch[i].fd);
        sb_chr(&b, ':');
        sb_dec(&b, ch[i].kind);
        argv[a++] = args[i];
    }
    argv[a] = NULL;

    /* Keep ctl and the channel descriptors across exec; drop everything else. */
    fcntl(ctl, F_SETFD, 0);
    for (int j = 0; j < n; j++)
        fcntl(ch[j].fd, F_SETFD, 0);
    struct keep k = {.ctl = ctl, .ch = ch, .n = n};
    (void)safe_each_fd(close_unless_kept, &k);
    if (standin)
        execv(standin, argv);
    /* The child already runs remotely; without a stand-in its parent cannot follow it. */
    safe_say("rfork: cannot start the stand-in ", standin ? standin : "(not found)", ": ", safe_strerror(errno),
             "; reinstall rfork\n", (char *)NULL);
    _exit(127);
}

/* Asks rforkd where to run and goes there: a freshly forked child, or (migrate) a running process that
 * rforkd signalled because `rfork migrate` asked to move it. A migrating process says nothing on stderr:
 * the command that asked hears how it went. Returns to continue here, or as the restored copy. */
static void place(const char *node, unsigned long long t0, int migrate)
{
    const char *sock = safe_getenv("RFORK_SOCKET");
    if ((!sock || !*sock) && node && *node)
        sock = "/run/rfork/rforkd.sock";
    const char *policy = safe_getenv("RFORK_POLICY");
    /* A remote child asks its node's rforkd too: its forks are placed from there, and it is moved on from
     * there (CRIU dumps it from inside the child's namespaces). */
    if (!sock || !*sock)
        return;
    if (!node || !*node) {
        node = safe_getenv("RFORK_NODE");
        if ((!node || !*node) && policy && strcmp(policy, "local") == 0 && !migrate) {
            if (maps_coherent())
                attach_shared(sock, 0);
            return;
        }
    }

    const int quiet = migrate;
    sigset_t all, old;
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, &old);
    int saved_errno = errno;

    /* A moving process's System V segments become memfds first (every other thread is parked), so they
     * move with it. */
    if (migrate)
        rfork_sysv_move(1);
    /* A process that moves while it maps shared memory holds its userfaultfd, which CRIU cannot save:
     * rforkd keeps the copy it took (given now if it never was), and the process makes a new one where it
     * goes on (below). */
    if (migrate && maps_coherent()) {
        if (shm_uffd < 0)
            attach_shared(sock, 0);
        if (shm_uffd >= 0) {
            close(shm_uffd);
            shm_uffd = -1;
        }
    }

    int ctl = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct sbuf b;
    sb_init(&b, sa.sun_path, sizeof sa.sun_path);
    sb_str(&b, sock);
    if (b.over)
        errno = ENAMETOOLONG;
    if (ctl < 0 || b.over || connect(ctl, (struct sockaddr *)&sa, sizeof sa) < 0) {
        /* A remote child carries its home's socket path: a node whose rforkd listens elsewhere keeps its
         * forks, as before nested placement, without a line each. */
        if (!is_remote)
            SAY_LOCAL("cannot reach rforkd at ", sock, " (", safe_strerror(errno), ")");
        goto local;
    }

    static struct channel ch[RFORK_MAX_CHANNELS];
    int n = collect_channels(ctl, ch, RFORK_MAX_CHANNELS);
    if (n == -2) {
        SAY_LOCAL(unmovable);
        goto local;
    }
    if (n < 0) {
        SAY_LOCAL("cannot list the child's descriptors (", safe_strerror(errno), ")");
        goto local;
    }
    struct stat st;
    fstat(ctl, &st);
    static char req[RFORK_FRAME_MAX / 4];
    const char *postcopy = safe_getenv("RFORK_POST_COPY");
    sb_init(&b, req, sizeof req);
    sb_str(&b, "pid ");
    sb_dec(&b, getpid());
    sb_str(&b, "\nuid ");
    sb_udec(&b, (unsigned)getuid());
    sb_str(&b, "\nsock ");
    sb_udec(&b, (unsigned long)st.st_ino);
    sb_str(&b, "\npolicy ");
    sb_str(&b, policy && *policy ? policy : "-");
    sb_str(&b, "\nnode ");
    sb_str(&b, node && *node ? node : "-");
    sb_str(&b, "\nt0 ");
    sb_udec(&b, t0);
    sb_str(&b, "\npostcopy ");
    sb_str(&b, postcopy && *postcopy && !strchr(postcopy, '\n') ? postcopy : "-");
    sb_chr(&b, '\n');
    if (migrate)
        sb_str(&b, "migrate 1\n");
    if (parent_uffd_set && !migrate) {
        sb_str(&b, parent_uffd >= 0 ? "puffd " : "puffderr ");
        sb_dec(&b, parent_uffd >= 0 ? parent_uffd : -parent_uffd);
        sb_chr(&b, '\n');
    }
    for (int i = 0; i < n; i++) {
        sb_str(&b, "ch ");
        sb_dec(&b, i);
        sb_chr(&b, ' ');
        sb_dec(&b, ch[i].kind);
        sb_chr(&b, ' ');
        sb_dec(&b, ch[i].fd);
        sb_chr(&b, ' ');
        sb_str(&b, ch[i].id);
        sb_chr(&b, '\n');
    }
    if (b.over)
        errno = EMSGSIZE;
    if (b.over || rfork_send(ctl, RFORK_MSG_FORK_REQUEST, req, b.len, NULL, 0) < 0) {
        SAY_LOCAL("cannot send the placement request (", safe_strerror(errno), ")");
        goto local;
    }
    int r = rfork_recv(ctl, &reply);
    if (r <= 0 || reply.type != RFORK_MSG_FORK_REPLY || reply.len < 1) {
        SAY_LOCAL("rforkd closed the placement request");
        goto local;
    }
    /* rfork_recv terminated the payload: the reason or session after the verdict is a C string. */
    switch (reply.data[0]) {
    case RFORK_VERDICT_STANDIN:
        become_standin(ctl, ch, n, (char *)reply.data + 1);
        break; /* not reached */
    case RFORK_VERDICT_REMOTE: {
        is_remote = 1;
        /* What this process execs is remote too (RFORK_REMOTE=1): a fresh environ array, since setenv
         * would allocate. A later setenv copies it into one of its own. */
        char **env = rfork_remote_env(environ);
        if (env)
            environ = env;
        else
            safe_say("rfork: out of memory: the remote child's environment lacks RFORK_REMOTE=1\n", (char *)NULL);
        break;
    }
    default:
        if (reply.len > 1)
            SAY_LOCAL((char *)reply.data + 1);
        break;
    }
local:
    if (ctl >= 0)
        close(ctl);
    /* Placed here or restored there, by whichever path (moved or not): a process that maps shared memory
     * gives its userfaultfd, so it is watched should that memory be (or become) shared across nodes. */
    if (maps_coherent())
        attach_shared(sock, is_remote);
    errno = saved_errno;
    sigprocmask(SIG_SETMASK, &old, NULL);
}

void rfork_place_child(const char *node, unsigned long long t0) { place(node, t0, 0); }

/*
 * Moving a multi-threaded process: the thread that takes rforkd's signal first leads. It sends the
 * signal to every other thread, and each of those parks in its handler (a futex wait) until the move has
 * ended, so the whole process is at rest, with no thread writing output, when CRIU takes it: the local
 * copy execs the stand-in (which ends the parked threads), and the restored copy wakes them on the target.
 */
static int leader;           /* TID of the thread leading a move, 0 when none */
static int parked;           /* threads waiting in their handler */
static unsigned park_gate;   /* futex word: changes when the parked threads may go */

static long futex(unsigned *word, int op, unsigned val)
{
    return syscall(SYS_futex, word, op, val, NULL, NULL, 0);
}

struct stop_others {
    int self;
    int sent; /* threads signalled in this round */
};

static int signal_thread(int tid, void *arg)
{
    struct stop_others *s = arg;
    if (tid != s->self && syscall(SYS_tgkill, getpid(), tid, RFORK_MIGRATE_SIGNAL) == 0)
        s->sent++;
    return 0;
}

static int count_thread(int tid, void *arg)
{
    (void)tid;
    (*(int *)arg)++;
    return 0;
}

/* Parks every other thread; 0 once all are parked, -1 when one does not come within 2 s. */
static int park_others(int self)
{
    struct stop_others s = {.self = self};
    if (safe_each_number("/proc/self/task", signal_thread, &s) < 0)
        return -1;
    for (int waited = 0;; waited++) {
        int threads = 0;
        if (safe_each_number("/proc/self/task", count_thread, &threads) < 0)
            return -1;
        if (__atomic_load_n(&parked, __ATOMIC_ACQUIRE) >= threads - 1)
            return 0;
        if (waited >= 20000)
            return -1;
        if (waited % 1000 == 999) { /* a thread created meanwhile has not been asked yet */
            s.sent = 0;
            (void)safe_each_number("/proc/self/task", signal_thread, &s);
        }
        struct timespec ts = {0, 100000};
        nanosleep(&ts, NULL);
    }
}

static void release_others(void)
{
    __atomic_add_fetch(&park_gate, 1, __ATOMIC_RELEASE);
    futex(&park_gate, FUTEX_WAKE_PRIVATE, INT_MAX);
    while (__atomic_load_n(&parked, __ATOMIC_ACQUIRE) > 0) {
        struct timespec ts = {0, 50000};
        nanosleep(&ts, NULL);
    }
}

/* RFORK_MIGRATE_SIGNAL from rforkd: `rfork migrate` asked to move this process. The leading thread asks to
 * be placed exactly as a freshly forked child does (all of place() is async-signal-safe), with every
 * signal blocked meanwhile: the local copy becomes the stand-in, or the restored copy returns from here
 * on the target and goes on with what it was doing (interrupted system calls restart). */
static void on_migrate_signal(int signo, siginfo_t *info, void *context)
{
    (void)signo;
    (void)info;
    (void)context;
    int saved_errno = errno;
    int self = (int)syscall(SYS_gettid);
    int expected = 0;
    if (!__atomic_compare_exchange_n(&leader, &expected, self, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
        if (expected != self) { /* another thread leads: wait here until it is done */
            unsigned gate = __atomic_load_n(&park_gate, __ATOMIC_ACQUIRE);
            __atomic_add_fetch(&parked, 1, __ATOMIC_ACQ_REL);
            while (__atomic_load_n(&park_gate, __ATOMIC_ACQUIRE) == gate)
                futex(&park_gate, FUTEX_WAIT_PRIVATE, gate);
            __atomic_sub_fetch(&parked, 1, __ATOMIC_ACQ_REL);
        }
        errno = saved_errno;
        return;
    }
    /* A fork in progress says no (rforkd's deadline). */
    if (depth == 0 && park_others(self) == 0) {
        depth++;
        place(NULL, now_ns(), 1);
        depth--;
    }
    release_others();
    __atomic_store_n(&leader, 0, __ATOMIC_RELEASE);
    errno = saved_errno;
}

unsigned long long rfork_now_ns(void) { return now_ns(); }

int rfork_placement_wanted(void)
{
    const char *sock = getenv("RFORK_SOCKET"), *policy = getenv("RFORK_POLICY");
    if (!sock || !*sock)
        return 0;
    const char *node = getenv("RFORK_NODE");
    return (node && *node) || !policy || strcmp(policy, "local") != 0;
}

/* Signal RFORK_KICK_SIGNAL: nothing to do; being interrupted is the point (see wire.h). */
static void on_kick_signal(int signo, siginfo_t *info, void *context)
{
    (void)signo;
    (void)info;
    (void)context;
}

/* Installs handler for sig, with SA_SIGINFO and SA_RESTART; `all` blocks every other signal meanwhile. */
static void catch_signal(int sig, void (*handler)(int, siginfo_t *, void *), int all)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = handler;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    if (all)
        sigfillset(&sa.sa_mask);
    else
        sigemptyset(&sa.sa_mask);
    sigaction(sig, &sa, NULL);
}

/* A process exec'd by a remote child is remote too (it asks its own node's rforkd, like any). */
__attribute__((constructor)) static void rfork_init(void)
{
    const char *r = getenv("RFORK_REMOTE");
    is_remote = r && *r == '1';
    const char *sock = getenv("RFORK_SOCKET");
    if (sock && *sock) {
        catch_signal(RFORK_MIGRATE_SIGNAL, on_migrate_signal, 1);
        catch_signal(RFORK_KICK_SIGNAL, on_kick_signal, 0);
        catch_signal(RFORK_SEAL_SIGNAL, on_seal_signal, 0);
    }
    /* The stand-in's default path, found now: dladdr takes the loader's lock, which a child must not. */
    Dl_info info;
    if (dladdr((void *)&rfork_init, &info) && info.dli_fname) {
        const char *slash = strrchr(info.dli_fname, '/');
        if (slash) {
            struct sbuf b;
            sb_init(&b, standin_default, sizeof standin_default);
            for (const char *c = info.dli_fname; c < slash; c++)
                sb_chr(&b, *c);
            sb_str(&b, "/../libexec/rfork/rfork-standin");
            if (b.over)
                standin_default[0] = 0;
        }
    }
}

pid_t rfork_do_fork(const char *node, int allow_remote)
{
    if (depth > 0)
        return real_fork();
    depth++;
    uint64_t t0 = now_ns();
    /* A parent that maps shared anonymous memory makes its userfaultfd now, while it is itself: its child
     * names it to rforkd, which takes it from here should the child share that memory from elsewhere. */
    const char *sock = getenv("RFORK_SOCKET");
    /* System V segments only this process can reach become memfds, which can follow the child. */
    if (allow_remote && rfork_placement_wanted())
        rfork_sysv_move(0);
    int uffd_err = 0;
    if (__atomic_load_n(&shm_uffd, __ATOMIC_ACQUIRE) < 0 && sock && *sock && maps_coherent()) {
        /* Two threads forking at once make one userfaultfd between them. */
        int fd = make_userfaultfd();
        uffd_err = fd < 0 ? errno : 0;
        int none = -1;
        if (fd >= 0 && !__atomic_compare_exchange_n(&shm_uffd, &none, fd, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
            close(fd);
    }
    int mine = shm_uffd;
    int have = shm_uffd >= 0 || uffd_err != 0;
    pid_t pid = real_fork();
    if (pid == 0) {
        /* The child's copy is its parent's userfaultfd: not its own, and nothing CRIU could move. */
        parent_uffd = mine >= 0 ? mine : -uffd_err;
        parent_uffd_set = have;
        if (shm_uffd >= 0)
            close(shm_uffd);
        shm_uffd = -1;
    }
    if (pid == 0 && allow_remote)
        rfork_place_child(node, t0);
    depth--;
    return pid;
}

EXPORT pid_t fork(void) { return rfork_do_fork(NULL, 1); }
EXPORT pid_t __fork(void) { return rfork_do_fork(NULL, 1); }
EXPORT pid_t __libc_fork(void) { return rfork_do_fork(NULL, 1); }
/* glibc's fork without atfork handlers (2.34+). */
EXPORT pid_t _Fork(void)
{
    use_underscore_fork = 1;
    pid_t pid = rfork_do_fork(NULL, 1);
    use_underscore_fork = 0;
    return pid;
}
EXPORT pid_t rfork_on(const char *node) { return rfork_do_fork(node, 1); }
EXPORT pid_t rfork_local(void)
{
    pid_t pid = rfork_do_fork(NULL, 0);
    /* A child kept here still gives its userfaultfd if it maps shared memory (see attach_shared). */
    const char *sock = pid == 0 ? safe_getenv("RFORK_SOCKET") : NULL;
    if (sock && *sock && maps_coherent())
        attach_shared(sock, 0);
    return pid;
}
EXPORT int rfork_is_remote(void) { return is_remote; }
