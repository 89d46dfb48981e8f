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
#include "wire.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))

typedef pid_t (*fork_fn)(void);

static fork_fn real_fork_fn, real_underscore_fork_fn;
static int is_remote;      /* this process was restored on another node */
static __thread int depth; /* re-entrancy guard */
static struct rfork_frame reply; /* only the child touches it */

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

static void say(const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n > 0)
        (void)rfork_write_all(2, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

struct channel {
    int fd;
    int kind;
    char id[PATH_MAX + 16];
};

/* Appends printf-style text to buf at *off; returns -1 when it does not fit. */
static int append(char *buf, size_t cap, size_t *off, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf + *off, cap - *off, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= cap - *off)
        return -1;
    *off += (size_t)n;
    return 0;
}

/* The mount id of an open descriptor (from /proc/self/fdinfo), or -1. */
static int mount_id(int fd)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
    int f = open(path, O_RDONLY | O_CLOEXEC);
    if (f < 0)
        return -1;
    ssize_t n = read(f, buf, sizeof buf - 1);
    close(f);
    if (n <= 0)
        return -1;
    buf[n] = 0;
    char *m = strstr(buf, "mnt_id:");
    return m ? atoi(m + 7) : -1;
}

static char unmovable[2 * PATH_MAX]; /* why the child cannot leave, when collect_channels says so */

/* Finds the descriptors the remote child needs relayed: pipes, terminals and writable files.
 * Returns -2 (reason in unmovable) when the child holds something that cannot follow it. */
static int collect_channels(int ctl, struct channel *ch, int max)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    int dfd = dirfd(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        int fd = atoi(e->d_name);
        if (fd == ctl || fd == dfd)
            continue;
        struct stat st;
        if (fstat(fd, &st) < 0)
            continue;
        char link[PATH_MAX], path[32];
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        ssize_t l = readlink(path, link, sizeof link - 1);
        if (l < 0)
            continue;
        link[l] = 0;
        int acc = fcntl(fd, F_GETFL) & O_ACCMODE;
        struct channel c = {.fd = fd, .kind = 0};
        if (S_ISFIFO(st.st_mode) && strncmp(link, "pipe:", 5) == 0) {
            c.kind = acc == O_RDONLY ? RFORK_CHANNEL_INPUT : RFORK_CHANNEL_OUTPUT;
            /* Directional names: the child often holds both ends right after pipe(); fork(). */
            snprintf(c.id, sizeof c.id, "pipe:[%lu]%c", (unsigned long)st.st_ino,
                     c.kind == RFORK_CHANNEL_INPUT ? 'r' : 'w');
        } else if (S_ISCHR(st.st_mode) && isatty(fd)) {
            c.kind = RFORK_CHANNEL_TERMINAL;
            snprintf(c.id, sizeof c.id, "tty[%lx:%lx]", (unsigned long)st.st_rdev, (unsigned long)st.st_dev);
        } else if (S_ISREG(st.st_mode) && acc != O_RDONLY && link[0] == '/' && !strstr(link, " (deleted)")) {
            /* A file the child writes is relayed: the remote node may not see the same mount, and a file
             * that grows between dump and restore would make CRIU refuse it. */
            c.kind = RFORK_CHANNEL_FILE;
            int mnt = mount_id(fd);
            if (mnt < 0)
                continue;
            /* CRIU's name for a file marked external at dump (--external) and supplied at restore. */
            snprintf(c.id, sizeof c.id, "file[%x:%lx]", (unsigned)mnt, (unsigned long)st.st_ino);
        } else if (S_ISSOCK(st.st_mode)) {
            /* Its peer stays here: a moved copy would hold a dead connection. */
            snprintf(unmovable, sizeof unmovable, "the child holds a socket (descriptor %d, %s), which rfork cannot move yet",
                     fd, link);
            closedir(d);
            return -2;
        } else {
            continue; /* left to CRIU (read-only files, devices...), which restores or refuses it */
        }
        int dup = 0;
        for (int i = 0; i < n; i++)
            if (strcmp(ch[i].id, c.id) == 0)
                dup = 1;
        if (dup)
            continue;
        if (n == max) {
            closedir(d);
            errno = EMFILE;
            return -1;
        }
        ch[n++] = c;
    }
    closedir(d);
    /* A read end whose write end the child holds too: many children never close the end they do not
     * use, so such a read end is relayed only once the remote child reads it. */
    for (int i = 0; i < n; i++) {
        size_t l = strlen(ch[i].id);
        if (ch[i].kind != RFORK_CHANNEL_INPUT || l < 2)
            continue;
        for (int j = 0; j < n; j++)
            if (ch[j].kind == RFORK_CHANNEL_OUTPUT && strncmp(ch[j].id, ch[i].id, l - 1) == 0 && ch[j].id[l - 1] == 'w')
                ch[i].kind = RFORK_CHANNEL_LAZY_INPUT;
    }
    return n;
}

unsigned long long rfork_now_ns(void);
static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static const char *helper_path(const char *env, const char *name, char *buf, size_t cap)
{
    const char *p = getenv(env);
    if (p && *p)
        return p;
    Dl_info info;
    if (!dladdr((void *)&helper_path, &info) || !info.dli_fname)
        return NULL;
    snprintf(buf, cap, "%s", info.dli_fname);
    char *slash = strrchr(buf, '/');
    if (!slash)
        return NULL;
    *slash = 0;
    size_t used = strlen(buf);
    snprintf(buf + used, cap - used, "/../libexec/rfork/%s", name);
    return buf;
}

/* The local copy becomes the stand-in: keeps only the relayed descriptors and the socket, then execs. */
static void become_standin(int ctl, struct channel *ch, int n, const char *session)
{
    char pathbuf[PATH_MAX];
    const char *standin = helper_path("RFORK_STANDIN", "rfork-standin", pathbuf, sizeof pathbuf);
    static char args[RFORK_MAX_CHANNELS][48];
    char ctlarg[16];
    char *argv[RFORK_MAX_CHANNELS + 4];
    int a = 0;
    snprintf(ctlarg, sizeof ctlarg, "%d", ctl);
    argv[a++] = "rfork-standin";
    argv[a++] = ctlarg;
    argv[a++] = (char *)session;
    for (int i = 0; i < n; i++) {
        snprintf(args[i], sizeof args[i], "%d:%d:%d", i, ch[i].fd, ch[i].kind);
        argv[a++] = args[i];
    }
    argv[a] = NULL;

    /* Keep ctl and the channel descriptors across exec; drop everything else. */
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        int dfd = dirfd(d), fds[1024], nfds = 0;
        struct dirent *e;
        while ((e = readdir(d)) != NULL && nfds < 1024) {
            if (e->d_name[0] == '.')
                continue;
            int fd = atoi(e->d_name);
            if (fd != dfd)
                fds[nfds++] = fd;
        }
        closedir(d);
        for (int i = 0; i < nfds; i++) {
            int keep = fds[i] == ctl;
            for (int j = 0; j < n; j++)
                keep |= fds[i] == ch[j].fd;
            if (!keep)
                close(fds[i]);
            else
                fcntl(fds[i], F_SETFD, 0);
        }
    }
    if (standin)
        execv(standin, argv);
    /* The child already runs remotely; without a stand-in its parent cannot follow it. */
    say("rfork: cannot start the stand-in %s: %s; reinstall rfork\n", standin ? standin : "(not found)",
        strerror(errno));
    _exit(127);
}

/* Runs in the child right after the real fork. Returns to continue as the (local or remote) child. */
void rfork_place_child(const char *node, unsigned long long t0)
{
    const char *sock = getenv("RFORK_SOCKET");
    if ((!sock || !*sock) && node && *node)
        sock = "/run/rfork/rforkd.sock";
    const char *policy = getenv("RFORK_POLICY");
    if (is_remote || !sock || !*sock)
        return;
    if (!node || !*node) {
        node = getenv("RFORK_NODE");
        if ((!node || !*node) && policy && strcmp(policy, "local") == 0)
            return;
    }

    sigset_t all, old;
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, &old);
    int saved_errno = errno;

    int ctl = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", sock);
    if (ctl < 0 || connect(ctl, (struct sockaddr *)&sa, sizeof sa) < 0) {
        say("rfork: cannot reach rforkd at %s (%s); child %d runs locally\n", sock, strerror(errno), getpid());
        goto local;
    }

    static struct channel ch[RFORK_MAX_CHANNELS];
    int n = collect_channels(ctl, ch, RFORK_MAX_CHANNELS);
    if (n == -2) {
        say("rfork: %s; child %d runs locally\n", unmovable, getpid());
        goto local;
    }
    if (n < 0) {
        say("rfork: cannot list the child's descriptors (%s); child %d runs locally\n", strerror(errno), getpid());
        goto local;
    }
    struct stat st;
    fstat(ctl, &st);
    static char req[RFORK_FRAME_MAX / 4];
    size_t off = 0;
    const char *postcopy = getenv("RFORK_POST_COPY");
    int bad = append(req, sizeof req, &off, "pid %d\nuid %u\nsock %lu\npolicy %s\nnode %s\nt0 %llu\npostcopy %s\n",
                     getpid(), (unsigned)getuid(), (unsigned long)st.st_ino, policy && *policy ? policy : "-",
                     node && *node ? node : "-", (unsigned long long)t0,
                     postcopy && *postcopy && !strchr(postcopy, '\n') ? postcopy : "-");
    for (int i = 0; i < n && !bad; i++)
        bad = append(req, sizeof req, &off, "ch %d %d %d %s\n", i, ch[i].kind, ch[i].fd, ch[i].id);
    if (bad || rfork_send(ctl, RFORK_MSG_FORK_REQUEST, req, off, NULL, 0) < 0) {
        say("rfork: cannot send the placement request (%s); child %d runs locally\n", strerror(errno), getpid());
        goto local;
    }
    int r = rfork_recv(ctl, &reply);
    if (r <= 0 || reply.type != RFORK_MSG_FORK_REPLY || reply.len < 1) {
        say("rfork: rforkd closed the placement request; child %d runs locally\n", getpid());
        goto local;
    }
    reply.data[reply.len] = 0;
    switch (reply.data[0]) {
    case RFORK_VERDICT_STANDIN:
        become_standin(ctl, ch, n, (char *)reply.data + 1);
        break; /* not reached */
    case RFORK_VERDICT_REMOTE:
        is_remote = 1;
        setenv("RFORK_REMOTE", "1", 1);
        break;
    default:
        if (reply.len > 1)
            say("rfork: %s; child %d runs locally\n", (char *)reply.data + 1, getpid());
        break;
    }
local:
    if (ctl >= 0)
        close(ctl);
    errno = saved_errno;
    sigprocmask(SIG_SETMASK, &old, NULL);
}

unsigned long long rfork_now_ns(void) { return now_ns(); }

int rfork_placement_wanted(void)
{
    const char *sock = getenv("RFORK_SOCKET"), *policy = getenv("RFORK_POLICY");
    if (is_remote || !sock || !*sock)
        return 0;
    const char *node = getenv("RFORK_NODE");
    return (node && *node) || !policy || strcmp(policy, "local") != 0;
}

/* A process exec'd by a remote child is remote too: it forks on its own node. */
__attribute__((constructor)) static void rfork_init(void)
{
    const char *r = getenv("RFORK_REMOTE");
    is_remote = r && *r == '1';
}

pid_t rfork_do_fork(const char *node, int allow_remote)
{
    if (depth > 0)
        return real_fork();
    depth++;
    uint64_t t0 = now_ns();
    pid_t pid = real_fork();
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
EXPORT pid_t rfork_local(void) { return rfork_do_fork(NULL, 0); }
EXPORT int rfork_is_remote(void) { return is_remote; }
