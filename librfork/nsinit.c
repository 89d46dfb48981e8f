/*
 * rfork-nsinit: started by rforkd on the target node, once per remote child.
 * It creates a new PID and mount namespace, becomes its init (PID 1), mounts a fresh /proc, and runs
 * `criu restore` so the child comes back with the same PID it has on its home node. The descriptors the
 * child used on its home node are replaced (CRIU --inherit-fd) by pipes and sockets whose other ends it
 * keeps and relays over its socket to the daemon (each channel at most a window of bytes ahead of what the
 * stand-in acknowledged, see wire.h). It reports the child's stops, continues and end, and
 * delivers the signals the daemon forwards. The namespace, and everything in it, ends with it.
 *
 * usage: rfork-nsinit CTL_FD IMAGE_DIR CRIU PID SOCKET_INODE [CHANNEL:KIND:FD:CRIU_ID ...] [sock:FD:INODE ...]
 *
 * sock:FD:INODE: a socket the daemon passed as descriptor FD, given to the restored tree in place of the
 * socket INODE in its images (a stand-in of the job saved with it, reconnected to this node's daemon).
 * IMAGE_DIR/rfork-input-N.img, when there: bytes that were in input channel N's pipe at a checkpoint's cut
 * (CRIU does not refill a pipe it is given), written to the child's new pipe first. IMAGE_DIR/rfork-closed-
 * N.img: channel N had been closed on this side at the cut; closed again (after those bytes).
 */
#define _GNU_SOURCE
#include "wire.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

static struct rfork_frame frame;
static unsigned char buf[RFORK_DATA_CHUNK];

/* Input a channel holds until the child's pipe takes it. The stand-in sends at most a window ahead of our
 * acknowledgements (one read of its source may overshoot; the daemons may merge frames), so this is
 * allocated once, before the restore, and input never needs memory later: a failure to get it is a
 * failed restore (the child runs on at home), not input lost on the way. */
#define INPUT_CAP ((size_t)RFORK_WINDOW + RFORK_FRAME_MAX)

struct chan {
    int kind;
    int ours;  /* our end, -1 when closed */
    int child; /* the end the child inherits */
    char *id;
    unsigned char *pending; /* input not yet accepted by the child's pipe; INPUT_CAP bytes */
    size_t plen;
    int eof_after; /* close ours once pending is written */
    off_t sent;    /* FILE: how much of the memfd has been relayed */
    int pty_slave; /* TERMINAL: our copy of the child's end, to adjust it once restored */
    int fd;        /* the descriptor number in the child */
    int demanded;  /* LAZY_INPUT: a read was asked of the stand-in and its bytes have not come yet */
    int watch;     /* FILE: inotify watch */
    uint64_t key;  /* the child's end as a checkpoint names it: pipe or memfd inode, terminal rdev */
    struct rfork_flow flow;
};

static int mark_wanted; /* a checkpoint's INPUT marker came: echo it once every input is in the pipes */

/* Until when the child counts as streaming a lazy channel (a demand was answered lately): its reads are
 * then looked for every 200 µs instead of every 5 ms, since its next read follows at once, and the task
 * that made the last demand is looked at first (one /proc read instead of a walk of the namespace). */
static uint64_t streaming_until;
#define STREAMING_NS 50000000u
static pid_t last_pid, last_tid;

static int inotify_fd = -1;

static int is_input(int kind) { return kind == RFORK_CHANNEL_INPUT || kind == RFORK_CHANNEL_LAZY_INPUT; }

static int ctl;
static pid_t child;
static struct chan ch[RFORK_MAX_CHANNELS];
static int n;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void send_event(uint32_t kind, int32_t code)
{
    unsigned char p[8];
    memcpy(p, &kind, 4);
    memcpy(p + 4, &code, 4);
    rfork_send(ctl, RFORK_MSG_EVENT, p, sizeof p, NULL, 0);
}

/* Relays what the child appended to a FILE channel's memfd, then frees those pages; while the window is
 * open, or all of it when the child has ended (`final`: nsinit cannot wait for acknowledgements then). */
static void relay_file(int i, int final)
{
    struct stat st;
    while (ch[i].ours >= 0 && (final || rfork_flow_open(&ch[i].flow)) && fstat(ch[i].ours, &st) == 0 &&
           st.st_size > ch[i].sent) {
        size_t want = (size_t)(st.st_size - ch[i].sent);
        if (want > sizeof buf)
            want = sizeof buf;
        ssize_t r = pread(ch[i].ours, buf, want, ch[i].sent);
        if (r <= 0)
            break;
        rfork_flow_send(ctl, &ch[i].flow, (uint32_t)i, buf, (size_t)r);
        fallocate(ch[i].ours, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, ch[i].sent, r);
        ch[i].sent += r;
    }
}

/* The child is blocked reading lazy channel i for `want` bytes: the stand-in makes that read on the
 * original end (others may read it too: it must take no more than the child's read would). Only once the
 * bytes of the previous demand are in, and the child's pipe is empty (it is blocked, so it has read them). */
static int demand(int i, unsigned long want)
{
    int queued = 0;
    if (ch[i].kind != RFORK_CHANNEL_LAZY_INPUT || ch[i].demanded || ch[i].ours < 0 || ch[i].plen ||
        ioctl(ch[i].ours, FIONREAD, &queued) != 0 || queued > 0)
        return 0;
    ch[i].demanded = 1;
    uint32_t msg[2] = {(uint32_t)i, want > RFORK_FRAME_MAX / 2 ? RFORK_FRAME_MAX / 2 : (uint32_t)want};
    if (msg[1] == 0)
        msg[1] = 1;
    rfork_send(ctl, RFORK_MSG_DEMAND, msg, sizeof msg, NULL, 0);
    return 1;
}

/* Whether any lazy read end may be read by the child (its reads are watched). */
static int lazy_waiting(void)
{
    for (int i = 0; i < n; i++)
        if (ch[i].kind == RFORK_CHANNEL_LAZY_INPUT && ch[i].ours >= 0)
            return 1;
    return 0;
}

/* Reads `len` bytes at `addr` of process pid's memory; 0 when done. */
static int peek(pid_t pid, unsigned long addr, void *out, size_t len)
{
    struct iovec local = {.iov_base = out, .iov_len = len};
    struct iovec remote = {.iov_base = (void *)addr, .iov_len = len};
    return process_vm_readv(pid, &local, 1, &remote, 1, 0) == (ssize_t)len ? 0 : -1;
}

/* The descriptors a blocked child waits to read, found in its system call's arguments. */
#define WAITED_MAX 64
struct waited {
    int fd[WAITED_MAX];
    int n;
};

static void add_waited(struct waited *w, int fd)
{
    if (w->n < WAITED_MAX && fd >= 0)
        w->fd[w->n++] = fd;
}

/* poll/ppoll on `nfds` pollfds at `addr`: those asking for input. */
static void polled(struct waited *w, pid_t pid, unsigned long addr, unsigned long nfds)
{
    struct pollfd p[WAITED_MAX];
    if (nfds > WAITED_MAX)
        nfds = WAITED_MAX;
    if (peek(pid, addr, p, nfds * sizeof p[0]) != 0)
        return;
    for (unsigned long j = 0; j < nfds; j++)
        if (p[j].events & POLLIN)
            add_waited(w, p[j].fd);
}

/* select/pselect6 on `nfds` descriptors with its read set at `readfds`. */
static void selected(struct waited *w, pid_t pid, unsigned long readfds, unsigned long nfds)
{
    unsigned long set[1024 / (8 * sizeof(unsigned long))];
    unsigned long bits = 8 * sizeof set[0];
    if (readfds == 0)
        return;
    if (nfds > 1024)
        nfds = 1024;
    size_t words = (nfds + bits - 1) / bits;
    if (words == 0 || peek(pid, readfds, set, words * sizeof set[0]) != 0)
        return;
    for (unsigned long fd = 0; fd < nfds; fd++)
        if ((set[fd / bits] >> (fd % bits)) & 1)
            add_waited(w, (int)fd);
}

/* epoll_wait on `epfd`: the descriptors its epoll watches for input (its fdinfo lists each one:
 * "tfd:        5 events:       19 data: ..."). */
static void epolled(struct waited *w, pid_t pid, int epfd)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fdinfo/%d", (int)pid, epfd);
    FILE *f = fopen(path, "re");
    if (!f)
        return;
    char line[256];
    while (fgets(line, sizeof line, f)) {
        int tfd = -1;
        unsigned events = 0;
        if (sscanf(line, "tfd: %d events: %x", &tfd, &events) == 2 && (events & POLLIN))
            add_waited(w, tfd);
    }
    fclose(f);
}

/* Whether descriptor `fd` of process pid is the read end of lazy channel i's pipe (the child may have
 * moved it since the fork: a shell's pipeline command reads it as its stdin). */
static int is_channel(pid_t pid, int fd, int i)
{
    struct stat ours, theirs;
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd/%d", (int)pid, fd);
    return fstat(ch[i].ours, &ours) == 0 && stat(path, &theirs) == 0 && S_ISFIFO(theirs.st_mode) &&
           theirs.st_ino == ours.st_ino && theirs.st_dev == ours.st_dev;
}

/* Is thread tid of process pid blocked on one of the lazy read ends? (/proc/PID/task/TID/syscall:
 * "NR ARG1 ARG2 ARG3 ...") Blocked in read(2), the demand is the size it reads. Blocked waiting for input
 * in poll, select or epoll, which says no size, it is what a pipe holds (64 KiB): the read that follows
 * takes what it wants and the rest waits in the child's pipe for its next read (with other readers of
 * the same pipe waiting too, the child may take bytes one of them would have read; it still reads them,
 * unless it ends first). Whether it waits on one. */
static int check_task(pid_t pid, pid_t tid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/task/%d/syscall", (int)pid, (int)tid);
    int f = open(path, O_RDONLY | O_CLOEXEC);
    if (f < 0)
        return 0;
    ssize_t r = read(f, line, sizeof line - 1);
    close(f);
    if (r <= 0)
        return 0;
    line[r] = 0;
    long nr = -1;
    unsigned long arg = 0, arg2 = 0, arg3 = 0, arg4 = 0, arg5 = 0;
    if (sscanf(line, "%ld %lx %lx %lx %lx %lx", &nr, &arg, &arg2, &arg3, &arg4, &arg5) < 4)
        return 0;
    struct waited w = {.n = 0};
    int waiting = 0; /* it waits on a lazy read end (asked for now, or already) */
    unsigned long want = 65536;
    if (nr == SYS_read || nr == SYS_pread64) {
        add_waited(&w, (int)arg);
        want = arg3;
    } else if (nr == SYS_readv || nr == SYS_preadv) { /* the third argument counts iovecs, not bytes */
        add_waited(&w, (int)arg);
        want = RFORK_FRAME_MAX / 2;
    } else if (nr == SYS_splice) { /* splice(fd_in, off_in, fd_out, off_out, len, flags) */
        add_waited(&w, (int)arg);
        want = arg5;
    }
#ifdef SYS_poll
    else if (nr == SYS_poll)
        polled(&w, tid, arg, arg2);
#endif
    else if (nr == SYS_ppoll)
        polled(&w, tid, arg, arg2);
#ifdef SYS_select
    else if (nr == SYS_select)
        selected(&w, tid, arg2, arg);
#endif
    else if (nr == SYS_pselect6)
        selected(&w, tid, arg2, arg);
#ifdef SYS_epoll_wait
    else if (nr == SYS_epoll_wait)
        epolled(&w, pid, (int)arg);
#endif
    else if (nr == SYS_epoll_pwait || nr == SYS_epoll_pwait2)
        epolled(&w, pid, (int)arg);
    for (int i = 0; i < n; i++) {
        if (ch[i].kind != RFORK_CHANNEL_LAZY_INPUT || ch[i].ours < 0)
            continue;
        for (int k = 0; k < w.n; k++)
            if (is_channel(pid, w.fd[k], i)) {
                if (demand(i, want)) {
                    last_pid = pid;
                    last_tid = tid;
                }
                waiting = 1;
                break;
            }
    }
    return waiting;
}

/* Every process of this namespace but nsinit (the child, its descendants, and the stand-ins of those
 * placed further on, which read the child's pipes for them): is any of their threads blocked on a lazy
 * read end? */
static void check_demand(void)
{
    if (last_pid > 0 && check_task(last_pid, last_tid))
        return;
    DIR *procs = opendir("/proc");
    if (!procs)
        return;
    for (struct dirent *e; (e = readdir(procs));) {
        pid_t pid = (pid_t)atoi(e->d_name);
        if (pid <= 1 || pid == getpid())
            continue;
        char path[64];
        snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
        DIR *tasks = opendir(path);
        if (!tasks)
            continue;
        for (struct dirent *t; (t = readdir(tasks));) {
            pid_t tid = (pid_t)atoi(t->d_name);
            if (tid > 0)
                check_task(pid, tid);
        }
        closedir(tasks);
    }
    closedir(procs);
}

/* Sends output of channel i. The pty turned "\n" into "\r\n"; the home terminal will do that itself. */
static void send_output(int i, ssize_t r)
{
    size_t len = (size_t)r;
    if (ch[i].kind == RFORK_CHANNEL_TERMINAL) {
        size_t w = 0;
        for (size_t k = 0; k < len; k++)
            if (!(buf[k] == '\r' && k + 1 < len && buf[k + 1] == '\n'))
                buf[w++] = buf[k];
        len = w;
    }
    rfork_flow_send(ctl, &ch[i].flow, (uint32_t)i, buf, len);
}

/* Sends what the child wrote and is still in our pipes (called before reporting its end). */
static void drain_outputs(int final)
{
    /* The child is gone: it reads no more, so the stand-in must stop reading for it, and before it
     * writes the child's last output into pipes it may also hold the read end of. */
    for (int i = 0; final && i < n; i++) {
        if (ch[i].ours >= 0 && is_input(ch[i].kind)) {
            uint32_t id = (uint32_t)i;
            rfork_send(ctl, RFORK_MSG_EOF, &id, sizeof id, NULL, 0);
            close(ch[i].ours);
            ch[i].ours = -1;
        }
    }
    for (int i = 0; i < n; i++) {
        if (ch[i].ours >= 0 && ch[i].kind == RFORK_CHANNEL_FILE)
            relay_file(i, final);
        if (ch[i].ours < 0 || is_input(ch[i].kind) || ch[i].kind == RFORK_CHANNEL_FILE)
            continue;
        for (;;) {
            ssize_t r = read(ch[i].ours, buf, sizeof buf);
            if (r > 0) {
                send_output(i, r);
                continue;
            }
            if (r == 0 || (r < 0 && errno != EINTR && errno != EAGAIN) || final) {
                if (r == 0) {
                    uint32_t id = (uint32_t)i;
                    rfork_send(ctl, RFORK_MSG_EOF, &id, sizeof id, NULL, 0);
                    close(ch[i].ours);
                    ch[i].ours = -1;
                }
            }
            break;
        }
    }
}

/* Writes pending input into the child's pipe; what it took (or what is dropped) is acknowledged. */
static void flush_input(int i)
{
    size_t off = 0;
    while (off < ch[i].plen && ch[i].ours >= 0) {
        ssize_t w = write(ch[i].ours, ch[i].pending + off, ch[i].plen - off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                break;
            off = ch[i].plen; /* the child closed its end: drop */
            break;
        }
        off += (size_t)w;
    }
    if (off > 0) {
        memmove(ch[i].pending, ch[i].pending + off, ch[i].plen - off);
        ch[i].plen -= off;
        rfork_flow_consumed(ctl, &ch[i].flow, (uint32_t)i, off);
    }
    if (ch[i].plen == 0 && ch[i].eof_after && ch[i].ours >= 0) {
        close(ch[i].ours);
        ch[i].ours = -1;
    }
}

/* Keeps a DATA frame's bytes for input channel i (written to the child's pipe once it is restored).
 * 0, or -1 when the stand-in sent beyond its window: a broken peer, and nothing here may drop input. */
static int take_input(int i, const unsigned char *p, size_t len, int restored)
{
    if (len > INPUT_CAP - ch[i].plen) {
        fprintf(stderr,
                "rfork-nsinit: input channel %d of child %d got %zu bytes beyond its flow-control window "
                "(%zu pending); ending the child\n",
                i, (int)child, len, ch[i].plen);
        return -1;
    }
    memcpy(ch[i].pending + ch[i].plen, p, len);
    ch[i].plen += len;
    if (restored)
        flush_input(i);
    return 0;
}

/* Terminal input is not relayed: a read in canonical mode sees end of file. */
static void settle_terminal(int i)
{
    struct termios t;
    if (tcgetattr(ch[i].pty_slave, &t) == 0) {
        if (t.c_lflag & ICANON) {
            char eof = (char)t.c_cc[VEOF];
            if (write(ch[i].ours, &eof, 1) < 0) {
            }
        }
    }
    close(ch[i].pty_slave);
    ch[i].pty_slave = -1;
}

/* Reports the child's end after what it wrote; the namespace ends when nsinit returns. */
static int report_end(int status)
{
    drain_outputs(1);
    if (WIFEXITED(status))
        send_event(RFORK_EVENT_EXITED, WEXITSTATUS(status));
    else
        send_event(RFORK_EVENT_KILLED, WTERMSIG(status));
    return 0;
}

/* Why a restore failed, from CRIU's restore.log in dir: its first real error line, else its last line;
 * "" without a log. */
static void restore_log_reason(const char *dir, char *out, size_t cap)
{
    char path[4096], line[4096], last[4096] = "";
    out[0] = 0;
    snprintf(path, sizeof path, "%s/restore.log", dir);
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    while (fgets(line, sizeof line, f)) {
        if (strstr(line, "RLIMIT_NOFILE")) /* harmless, and said by every restore here */
            continue;
        if (!out[0] && strstr(line, "Error") && !strstr(line, "FAILED"))
            snprintf(out, cap, "%s", line); /* the first real error says why */
        snprintf(last, sizeof last, "%s", line);
    }
    fclose(f);
    if (!out[0]) /* no error line: the log's last line says most (none in an empty log) */
        snprintf(out, cap, "%s", last);
    size_t l = strlen(out);
    if (l && out[l - 1] == '\n')
        out[l - 1] = 0;
}

/* Tells the daemon the restore failed: it runs the child on at home, and says why there. */
static void send_failed(const char *msg) { rfork_send(ctl, RFORK_MSG_FAILED, msg, strlen(msg), NULL, 0); }

/* The same with `what`, then CRIU's reason from its log. */
static void report_failure(const char *dir, const char *what)
{
    char reason[4096], msg[8192];
    restore_log_reason(dir, reason, sizeof reason);
    if (reason[0])
        snprintf(msg, sizeof msg, "%s: %s", what, reason);
    else
        snprintf(msg, sizeof msg, "%s", what);
    send_failed(msg);
}

/* A system call failed before the restore: reports `what` and errno as the reason; returns 1 to exit. */
static int fail(const char *dir, const char *what)
{
    char msg[512];
    snprintf(msg, sizeof msg, "%s: %s", what, strerror(errno));
    report_failure(dir, msg);
    return 1;
}

/* A checkpoint's restart: channel i had been closed on this side at the cut (its input had ended, or
 * its output's reader was gone): closed again once the child is restored (see usage). */
static void closed_at_cut(const char *dir, int i)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/rfork-closed-%d.img", dir, i);
    if (access(path, F_OK) == 0)
        ch[i].eof_after = 1;
}

/* A checkpoint's restart: what was in input channel i's pipe at the cut goes first (see usage). */
static int preload(const char *dir, int i)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/rfork-input-%d.img", dir, i);
    int f = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (f < 0)
        return errno == ENOENT ? 0 : -1;
    size_t have = 0;
    ssize_t r;
    while (have < INPUT_CAP && (r = read(f, ch[i].pending + have, INPUT_CAP - have)) > 0)
        have += (size_t)r;
    close(f);
    ch[i].plen = have;
    return 0;
}

/* Echoes a checkpoint's INPUT marker once every input the stand-in sent is in the child's pipes, with
 * every channel's key (wire.h, RFORK_MSG_MARK). */
static void answer_mark(void)
{
    if (!mark_wanted)
        return;
    for (int i = 0; i < n; i++)
        if (ch[i].ours >= 0 && is_input(ch[i].kind) && ch[i].plen)
            return;
    mark_wanted = 0;
    unsigned char p[4 + RFORK_MAX_CHANNELS * 12];
    uint32_t phase = RFORK_MARK_INPUT;
    memcpy(p, &phase, 4);
    size_t len = 4;
    for (int i = 0; i < n; i++) {
        uint32_t id = (uint32_t)i | (ch[i].ours < 0 ? RFORK_MARK_CLOSED : 0);
        memcpy(p + len, &id, 4);
        memcpy(p + len + 4, &ch[i].key, 8);
        len += 12;
    }
    rfork_send(ctl, RFORK_MSG_MARK, p, len, NULL, 0);
}

static int init_main(int argc, char **argv)
{
    const char *dir = argv[2], *criu = argv[3];
    child = (pid_t)atoi(argv[4]);
    const char *sockino = argv[5];

    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 || mount("proc", "/proc", "proc", 0, NULL) < 0) {
        report_failure(dir, "cannot mount /proc in the child's PID namespace");
        return 1;
    }
    setsid();

    /* The replacement for the child's socket to its home daemon: it reads "you are remote" there. */
    int sp[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sp) < 0)
        return fail(dir, "socketpair failed");
    fcntl(sp[1], F_SETFD, FD_CLOEXEC);
    unsigned char verdict = RFORK_VERDICT_REMOTE;
    rfork_send(sp[1], RFORK_MSG_FORK_REPLY, &verdict, 1, NULL, 0);

    static char inherit[RFORK_MAX_CHANNELS + 1][4200];
    char *cargv[2 * RFORK_MAX_CHANNELS + 20];
    int a = 0;
    cargv[a++] = (char *)criu;
    cargv[a++] = "restore";
    cargv[a++] = "-D";
    cargv[a++] = (char *)dir;
    cargv[a++] = "-o";
    cargv[a++] = "restore.log";
    cargv[a++] = "--shell-job";
    cargv[a++] = "--restore-detached";
    cargv[a++] = "--restore-sibling";
    /* The child joins the cgroups of this node (rforkd's, which nsinit is in), not those it had where it
     * was dumped: a node's load and memory are its own. */
    cargv[a++] = "--manage-cgroups=ignore";
    if (getenv("RFORK_LAZY_PAGES")) /* post-copy: memory comes from criu lazy-pages on demand */
        cargv[a++] = "--lazy-pages";
    snprintf(inherit[0], sizeof inherit[0], "fd[%d]:socket:[%s]", sp[0], sockino);
    cargv[a++] = "--inherit-fd";
    cargv[a++] = inherit[0];

    static char given[RFORK_MAX_CHANNELS][64];
    int ngiven = 0;
    for (int i = 6; i < argc && n < RFORK_MAX_CHANNELS; i++) {
        int id, kind, fd, used = 0;
        unsigned long long inode = 0;
        if (strncmp(argv[i], "sock:", 5) == 0) {
            if (sscanf(argv[i] + 5, "%d:%llu", &fd, &inode) != 2 || fd < 0 || ngiven == RFORK_MAX_CHANNELS) {
                report_failure(dir, "bad socket argument");
                return 1;
            }
            snprintf(given[ngiven], sizeof given[ngiven], "fd[%d]:socket:[%llu]", fd, inode);
            cargv[a++] = "--inherit-fd";
            cargv[a++] = given[ngiven++];
            continue;
        }
        if (sscanf(argv[i], "%d:%d:%d:%n", &id, &kind, &fd, &used) != 3 || id != n || !used) {
            report_failure(dir, "bad channel argument");
            return 1;
        }
        int p[2];
        if (kind == RFORK_CHANNEL_FILE) {
            /* CRIU reopens it through /proc (a pipe would do for that, a socket would not); the child's
             * writes land in the memfd from offset 0 and its growth is relayed. */
            int m = memfd_create("rfork-file", 0);
            if (m < 0)
                return fail(dir, "memfd_create failed");
            /* Without the watch the child's writes would not be relayed until its end. */
            if (inotify_fd < 0 && (inotify_fd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK)) < 0)
                return fail(dir, "inotify_init1 failed");
            char self[64];
            snprintf(self, sizeof self, "/proc/self/fd/%d", m);
            ch[n] = (struct chan){.kind = kind, .ours = m, .child = m, .id = argv[i] + used};
            struct stat mst;
            if (fstat(m, &mst) == 0)
                ch[n].key = (uint64_t)mst.st_ino;
            ch[n].watch = inotify_add_watch(inotify_fd, self, IN_MODIFY);
            if (ch[n].watch < 0)
                return fail(dir, "inotify_add_watch failed");
            snprintf(inherit[n + 1], sizeof inherit[n + 1], "fd[%d]:%s", m, ch[n].id);
            cargv[a++] = "--inherit-fd";
            cargv[a++] = inherit[n + 1];
            n++;
            continue;
        } else if (kind == RFORK_CHANNEL_TERMINAL) {
            /* A pty of our own: CRIU sets the terminal's settings on it and isatty() holds remotely. */
            int master = posix_openpt(O_RDWR | O_NOCTTY);
            if (master < 0 || grantpt(master) < 0 || unlockpt(master) < 0)
                return fail(dir, "cannot open a pseudo-terminal");
            const char *name = ptsname(master);
            int slave = name ? open(name, O_RDWR | O_NOCTTY) : -1;
            if (slave < 0)
                return fail(dir, "cannot open a pseudo-terminal's slave");
            ch[n] = (struct chan){.kind = kind, .ours = master, .child = slave, .id = argv[i] + used};
            ch[n].pty_slave = fcntl(slave, F_DUPFD_CLOEXEC, 0);
            if (ch[n].pty_slave < 0)
                return fail(dir, "dup failed");
            struct stat tst;
            if (fstat(slave, &tst) == 0)
                ch[n].key = (uint64_t)tst.st_rdev;
        } else {
            if (pipe(p) < 0)
                return fail(dir, "pipe failed");
            if (is_input(kind)) {
                ch[n] = (struct chan){.kind = kind, .ours = p[1], .child = p[0], .id = argv[i] + used};
                if (!(ch[n].pending = malloc(INPUT_CAP)))
                    return fail(dir, "no memory for an input channel");
            } else
                ch[n] = (struct chan){.kind = kind, .ours = p[0], .child = p[1], .id = argv[i] + used};
            struct stat pst;
            if (fstat(p[0], &pst) == 0)
                ch[n].key = (uint64_t)pst.st_ino;
            if (is_input(kind) && preload(dir, n) < 0)
                return fail(dir, "cannot read a checkpoint's pipe contents");
            closed_at_cut(dir, n);
        }
        ch[n].fd = fd;
        fcntl(ch[n].ours, F_SETFD, FD_CLOEXEC);
        fcntl(ch[n].ours, F_SETFL, O_NONBLOCK);
        snprintf(inherit[n + 1], sizeof inherit[n + 1], "fd[%d]:%s", ch[n].child, ch[n].id);
        cargv[a++] = "--inherit-fd";
        cargv[a++] = inherit[n + 1];
        n++;
    }
    cargv[a] = NULL;

    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_BLOCK, &chld, NULL);
    /* Without it neither CRIU's end nor the child's would ever be seen. */
    int sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0)
        return fail(dir, "signalfd failed");

    uint64_t t0 = now_ns();
    pid_t criu_pid = fork();
    if (criu_pid < 0)
        return fail(dir, "cannot start criu: fork failed");
    if (criu_pid == 0) {
        sigprocmask(SIG_UNBLOCK, &chld, NULL);
        int devnull = open("/dev/null", O_RDWR);
        if (devnull < 0)
            _exit(127); /* seen as a failed restore */
        dup2(devnull, 0);
        dup2(devnull, 1);
        dup2(devnull, 2);
        execv(criu, cargv);
        _exit(127);
    }
    close(sp[0]);
    for (int i = 0; i < n; i++)
        if (ch[i].child != ch[i].ours)
            close(ch[i].child);
    int restored = 0, early = 0, early_status = 0; /* the child may end before CRIU's exit is seen */

    for (;;) {
        struct pollfd p[RFORK_MAX_CHANNELS + 2];
        int map[RFORK_MAX_CHANNELS + 2], np = 0;
        p[np] = (struct pollfd){.fd = ctl, .events = POLLIN};
        map[np++] = -1;
        p[np] = (struct pollfd){.fd = sfd, .events = POLLIN};
        map[np++] = -2;
        if (inotify_fd >= 0 && restored) {
            p[np] = (struct pollfd){.fd = inotify_fd, .events = POLLIN};
            map[np++] = -3;
        }
        for (int i = 0; restored && i < n; i++) {
            if (ch[i].ours < 0 || ch[i].kind == RFORK_CHANNEL_FILE)
                continue;
            if (!is_input(ch[i].kind) && !rfork_flow_open(&ch[i].flow))
                continue; /* the stand-in has a window's worth to write: the child's writes wait in the pipe */
            /* An input pipe is polled even with nothing to write: POLLERR says the child closed its end. */
            short ev = ch[i].plen ? POLLOUT : 0;
            if (ch[i].kind != RFORK_CHANNEL_INPUT)
                ev |= POLLIN;
            p[np] = (struct pollfd){.fd = ch[i].ours, .events = ev};
            map[np++] = i;
        }
        answer_mark(); /* an input channel may have closed meanwhile */
        int lazy = restored && lazy_waiting();
        struct timespec wait = {.tv_sec = 0, .tv_nsec = now_ns() < streaming_until ? 200000 : 5000000};
        if (ppoll(p, (nfds_t)np, lazy ? &wait : NULL, NULL) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (lazy)
            check_demand();
        /* First, input pipes the child no longer reads: the stand-in must stop reading the original end
         * (else it takes what the parent's other readers should get) before any output is relayed. */
        for (int k = 0; k < np; k++) {
            int i = map[k];
            if (i >= 0 && is_input(ch[i].kind) && (p[k].revents & POLLERR) && ch[i].ours >= 0) {
                uint32_t id = (uint32_t)i;
                rfork_send(ctl, RFORK_MSG_EOF, &id, sizeof id, NULL, 0);
                close(ch[i].ours);
                ch[i].ours = -1;
                ch[i].plen = 0;
                p[k].revents = 0;
            }
        }
        for (int k = 0; k < np; k++) {
            if (!p[k].revents)
                continue;
            if (map[k] == -3) {
                char ev[4096];
                while (read(inotify_fd, ev, sizeof ev) > 0) {
                }
                for (int i = 0; i < n; i++)
                    if (ch[i].kind == RFORK_CHANNEL_FILE)
                        relay_file(i, 0);
            } else if (map[k] == -2) {
                struct signalfd_siginfo si;
                while (read(sfd, &si, sizeof si) > 0) {
                }
                for (;;) {
                    int st;
                    pid_t w = waitpid(-1, &st, WNOHANG | WUNTRACED | WCONTINUED);
                    if (w <= 0)
                        break;
                    if (w == criu_pid) {
                        if (WIFEXITED(st) && WEXITSTATUS(st) == 0 && (early || kill(child, 0) == 0)) {
                            uint64_t took = now_ns() - t0;
                            restored = 1;
                            close(sp[1]);
                            for (int i = 0; i < n; i++) /* closed at a checkpoint's cut: closed again */
                                if (ch[i].eof_after && ch[i].ours >= 0 && !(is_input(ch[i].kind) && ch[i].plen)) {
                                    close(ch[i].ours);
                                    ch[i].ours = -1;
                                }
                            for (int i = 0; i < n; i++)
                                if (ch[i].kind == RFORK_CHANNEL_TERMINAL)
                                    settle_terminal(i);
                            rfork_send(ctl, RFORK_MSG_RESTORED, &took, sizeof took, NULL, 0);
                            for (int i = 0; i < n; i++)
                                if (ch[i].kind == RFORK_CHANNEL_FILE)
                                    relay_file(i, 0); /* written before the watch was polled */
                            if (early)
                                return report_end(early_status);
                        } else if (WIFSIGNALED(st)) {
                            char msg[64];
                            snprintf(msg, sizeof msg, "criu restore was killed by signal %d", WTERMSIG(st));
                            send_failed(msg);
                            return 1;
                        } else {
                            report_failure(dir, "criu restore failed");
                            return 1;
                        }
                    } else if (w == child && !restored) {
                        /* Ended before CRIU's exit was reaped: kept, and reported only if CRIU succeeded
                         * (otherwise it was CRIU's half-restored task). */
                        if (!WIFSTOPPED(st) && !WIFCONTINUED(st)) {
                            early = 1;
                            early_status = st;
                        }
                    } else if (w == child) {
                        if (WIFSTOPPED(st)) {
                            send_event(RFORK_EVENT_STOPPED, WSTOPSIG(st));
                        } else if (WIFCONTINUED(st)) {
                            send_event(RFORK_EVENT_CONTINUED, 0);
                        } else {
                            return report_end(st);
                        }
                    }
                }
            } else if (map[k] == -1) {
                int r = rfork_recv(ctl, &frame);
                if (r <= 0) {
                    kill(child, SIGKILL); /* the home node is gone: so is the child's parent */
                    return 1;
                }
                uint32_t a = 0;
                if (frame.len >= 4)
                    memcpy(&a, frame.data, 4);
                if (frame.type == RFORK_MSG_SIGNAL) {
                    kill(child, (int)a);
                } else if (frame.type == RFORK_MSG_ABORT) {
                    kill(child, SIGKILL);
                    return 1;
                } else if (frame.type == RFORK_MSG_DATA && frame.len >= 4 && a < (uint32_t)n && ch[a].ours >= 0 &&
                           is_input(ch[a].kind)) {
                    if (ch[a].kind == RFORK_CHANNEL_LAZY_INPUT && ch[a].demanded)
                        streaming_until = now_ns() + STREAMING_NS;
                    ch[a].demanded = 0; /* the demanded read's bytes */
                    if (take_input((int)a, frame.data + 4, frame.len - 4, restored) < 0) {
                        if (!restored)
                            send_failed("the stand-in sent input beyond its flow-control window");
                        kill(child, SIGKILL); /* the namespace, and the child, end with nsinit */
                        return 1;
                    }
                } else if (frame.type == RFORK_MSG_MARK && a == RFORK_MARK_INPUT) {
                    mark_wanted = 1;
                    answer_mark();
                } else if (frame.type == RFORK_MSG_MARK && a == RFORK_MARK_OUTPUT) {
                    /* The child is frozen: all it wrote goes out before the marker (files past the
                     * window too: what is in the memfd now is finite, and a restart makes a new one). */
                    for (int i = 0; i < n; i++)
                        if (ch[i].ours >= 0 && ch[i].kind == RFORK_CHANNEL_FILE)
                            relay_file(i, 1);
                    drain_outputs(0);
                    rfork_send(ctl, RFORK_MSG_MARK, &a, sizeof a, NULL, 0);
                } else if (frame.type == RFORK_MSG_DEMAND && frame.len >= 8 && a < (uint32_t)n &&
                           ch[a].kind == RFORK_CHANNEL_LAZY_INPUT) {
                    uint32_t want = 0;
                    memcpy(&want, frame.data + 4, 4);
                    if (want == (uint32_t)RFORK_DEMAND_EAGER) { /* the stand-in reads ahead now: no more demands */
                        ch[a].kind = RFORK_CHANNEL_INPUT;
                        ch[a].demanded = 0;
                    }
                } else if (frame.type == RFORK_MSG_ACK && a < (uint32_t)n) {
                    rfork_flow_acked(&ch[a].flow, frame.data, frame.len);
                    if (ch[a].kind == RFORK_CHANNEL_FILE && restored)
                        relay_file((int)a, 0);
                } else if (frame.type == RFORK_MSG_EOF && a < (uint32_t)n && ch[a].ours >= 0) {
                    if (is_input(ch[a].kind)) {
                        ch[a].eof_after = 1;
                        flush_input((int)a);
                    } else {
                        close(ch[a].ours); /* the home reader is gone: remote writers get EPIPE */
                        ch[a].ours = -1;
                    }
                }
            } else {
                int i = map[k];
                if (p[k].revents & POLLOUT) {
                    flush_input(i);
                    answer_mark();
                }
                if (is_input(ch[i].kind) || ch[i].ours < 0 || !(p[k].revents & (POLLIN | POLLHUP | POLLERR)))
                    continue;
                ssize_t r = read(ch[i].ours, buf, sizeof buf);
                if (r < 0 && (errno == EINTR || errno == EAGAIN))
                    continue;
                uint32_t id = (uint32_t)i;
                if (r > 0) {
                    send_output(i, r);
                } else {
                    rfork_send(ctl, RFORK_MSG_EOF, &id, sizeof id, NULL, 0);
                    close(ch[i].ours);
                    ch[i].ours = -1;
                }
            }
        }
    }
    kill(child, SIGKILL);
    return 1;
}

int main(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr, "rfork-nsinit: started by hand; it is run by rforkd\n");
        return 2;
    }
    ctl = atoi(argv[1]);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (unshare(CLONE_NEWPID | CLONE_NEWNS) < 0) {
        char msg[256];
        snprintf(msg, sizeof msg, "cannot create a PID namespace: %s", strerror(errno));
        send_failed(msg);
        return 1;
    }
    pid_t init = fork();
    if (init < 0) {
        char msg[256];
        snprintf(msg, sizeof msg, "cannot start the namespace init: fork failed: %s", strerror(errno));
        send_failed(msg);
        return 1;
    }
    if (init == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        _exit(init_main(argc, argv));
    }
    close(ctl);
    int st;
    while (waitpid(init, &st, 0) < 0 && errno == EINTR) {
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : 1;
}
