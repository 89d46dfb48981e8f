/*
 * rfork-standin: what the local copy of a remotely running child becomes (exec'd by librfork).
 * It keeps the child's PID, its place in the parent's process tree and the descriptors the remote
 * child uses, and relays them over its socket to the node daemon:
 *   - data read from input channels goes out (at most a window ahead of what the remote child's side
 *     acknowledged), data for output channels is written to them and acknowledged;
 *   - every signal it receives is forwarded to the remote child;
 *   - when the remote child stops it stops itself; when it ends, the stand-in ends the same way, so
 *     the parent's wait() sees the exact status.
 *
 * usage: rfork-standin CTL_FD SESSION [CHANNEL:FD:KIND ...]     (all signals already blocked)
 */
#define _GNU_SOURCE
#include "wire.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <fcntl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static struct rfork_frame frame;
static unsigned char buf[RFORK_DATA_CHUNK];
static struct rfork_flow flow[RFORK_MAX_CHANNELS];

struct chan {
    int fd;
    int kind;
};

/* What the remote child wrote to a pipe that is full here: written as the pipe takes it, never blocking, so
 * that the stand-in keeps reading its socket. At most a flow-control window, as the sender keeps to it. A
 * pipe is written through a descriptor of its own opened non-blocking (the inherited one shares its
 * flags with the parent's, which must not change); anything else is written whole, blocking. */
struct outq {
    unsigned char *buf;
    size_t len, cap;
    int nb; /* the pipe opened anew with O_NONBLOCK; -1 before, -2 when not a pipe (or not possible) */
};
static struct outq outq[RFORK_MAX_CHANNELS];

/* Channel i's non-blocking descriptor, or -1 to write it whole (not a pipe, or it cannot be reopened). */
static int nonblocking(int i, int fd)
{
    if (outq[i].nb == -1) {
        struct stat st;
        char path[64];
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        outq[i].nb = fstat(fd, &st) == 0 && S_ISFIFO(st.st_mode) ? open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC) : -2;
        if (outq[i].nb < 0)
            outq[i].nb = -2;
    }
    return outq[i].nb >= 0 ? outq[i].nb : -1;
}

static void die_like(int kind, int code)
{
    if (kind == RFORK_EVENT_EXITED)
        _exit(code & 0xff);
    /* End by the same signal, without a core file of our own. */
    struct rlimit none = {0, 0};
    setrlimit(RLIMIT_CORE, &none);
    signal(code, SIG_DFL);
    sigset_t one;
    sigemptyset(&one);
    sigaddset(&one, code);
    kill(getpid(), code);
    sigprocmask(SIG_UNBLOCK, &one, NULL);
    kill(getpid(), SIGKILL);
    _exit(128 + code);
}

static void stop_like(int sig)
{
    if (sig == SIGSTOP || sig <= 0 || sig >= NSIG) {
        kill(getpid(), SIGSTOP);
        return;
    }
    /* Stop with the same signal so the parent's WSTOPSIG matches. */
    struct sigaction dfl = {.sa_handler = SIG_DFL}, old;
    sigaction(sig, &dfl, &old);
    sigset_t one;
    sigemptyset(&one);
    sigaddset(&one, sig);
    kill(getpid(), sig);
    sigprocmask(SIG_UNBLOCK, &one, NULL);
    sigprocmask(SIG_BLOCK, &one, NULL);
    sigaction(sig, &old, NULL);
}

static struct chan ch[RFORK_MAX_CHANNELS];
static int n;
static int ctl;

/* The reader of output channel i is gone: what waits for it is dropped (consumed, so the sender goes on),
 * and the remote writer sees end of stream. */
static int output_gone(int i)
{
    size_t dropped = outq[i].len;
    outq[i].len = 0;
    close(ch[i].fd);
    ch[i].fd = -1;
    if (outq[i].nb >= 0)
        close(outq[i].nb);
    outq[i].nb = -2;
    uint32_t id = (uint32_t)i;
    if (rfork_send(ctl, RFORK_MSG_EOF, &id, sizeof id, NULL, 0) < 0)
        return -1;
    return dropped ? rfork_flow_consumed(ctl, &flow[i], id, dropped) : 0;
}

/* Writes what channel i holds as far as its pipe takes it now (all of it with `whole`, blocking: before the
 * channel's end or the child's, whose order the parent sees). 0, or -1 when the socket failed. */
static int flush_output(int i, int whole)
{
    while (outq[i].len && ch[i].fd >= 0) {
        int nb = whole ? -1 : nonblocking(i, ch[i].fd);
        ssize_t w = write(nb >= 0 ? nb : ch[i].fd, outq[i].buf, outq[i].len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno == EAGAIN)
            return 0;
        if (w < 0) {
            if (errno == EBADF) { /* a read-only file: what the child writes there is lost, as it would be */
                size_t dropped = outq[i].len;
                outq[i].len = 0;
                return rfork_flow_consumed(ctl, &flow[i], (uint32_t)i, dropped);
            }
            return output_gone(i);
        }
        memmove(outq[i].buf, outq[i].buf + w, outq[i].len - (size_t)w);
        outq[i].len -= (size_t)w;
        if (rfork_flow_consumed(ctl, &flow[i], (uint32_t)i, (size_t)w) < 0)
            return -1;
    }
    return 0;
}

/* A DATA frame for output channel i: queued, then written as far as the pipe takes it. */
static int take_output(int i, const unsigned char *p, size_t len)
{
    if (ch[i].fd < 0) /* its reader is gone: dropped, and consumed */
        return rfork_flow_consumed(ctl, &flow[i], (uint32_t)i, len);
    if (outq[i].len + len > outq[i].cap) {
        size_t cap = outq[i].cap ? outq[i].cap : 65536;
        while (cap < outq[i].len + len)
            cap *= 2;
        unsigned char *b = realloc(outq[i].buf, cap);
        if (!b) /* no memory for it: written whole, blocking, as the stand-in always could */
            return rfork_write_all(ch[i].fd, p, len) < 0 && errno != EBADF ? output_gone(i)
                                                                          : rfork_flow_consumed(ctl, &flow[i], (uint32_t)i, len);
        outq[i].buf = b;
        outq[i].cap = cap;
    }
    memcpy(outq[i].buf + outq[i].len, p, len);
    outq[i].len += len;
    return flush_output(i, 0);
}

/* Before the child's end, a stop, or a channel's end is passed on: what it wrote before, written. */
static void flush_all(void)
{
    for (int i = 0; i < n; i++)
        flush_output(i, 1);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "rfork-standin: started by hand; it is run by librfork\n");
        return 2;
    }
    ctl = atoi(argv[1]);
    n = 0;
    for (int i = 3; i < argc && n < RFORK_MAX_CHANNELS; i++) {
        int id, fd, kind;
        if (sscanf(argv[i], "%d:%d:%d", &id, &fd, &kind) != 3 || id != n) {
            fprintf(stderr, "rfork: the stand-in of remote child %d got a bad channel argument '%s'; ending the child\n",
                    getpid(), argv[i]);
            die_like(RFORK_EVENT_KILLED, SIGKILL); /* our socket closes: the daemon ends the remote child */
        }
        ch[n].fd = fd;
        ch[n].kind = kind;
        outq[n].nb = -1;
        n++;
    }
    signal(SIGPIPE, SIG_IGN); /* a closed reader shows as EPIPE on our writes */
    /* A lazy channel's original end may have other readers (the parent, siblings): it is read only when
     * the remote child reads, one read(2) of at most what the child asked for per demand (`budget`), so
     * the stand-in never takes bytes another reader should get. */
    int readable[RFORK_MAX_CHANNELS];
    size_t budget[RFORK_MAX_CHANNELS];
    for (int i = 0; i < n; i++) {
        readable[i] = ch[i].kind == RFORK_CHANNEL_INPUT;
        budget[i] = sizeof buf;
    }
    int paused = 0; /* a checkpoint's cut is being taken: input channels are not read (RFORK_MSG_MARK) */
    sigset_t all;
    sigfillset(&all);
    sigdelset(&all, SIGPIPE);
    sigprocmask(SIG_SETMASK, &all, NULL);
    int sfd = signalfd(-1, &all, SFD_CLOEXEC);
    if (sfd < 0) {
        /* Signals sent to the child's PID could not be forwarded: the parent could not control it. */
        fprintf(stderr, "rfork: the stand-in of remote child %d cannot receive its signals (signalfd: %s); ending the child\n",
                getpid(), strerror(errno));
        die_like(RFORK_EVENT_KILLED, SIGKILL); /* our socket closes: the daemon ends the remote child */
    }

    for (;;) {
        struct pollfd p[RFORK_MAX_CHANNELS + 2];
        int map[RFORK_MAX_CHANNELS + 2], np = 0;
        p[np] = (struct pollfd){.fd = ctl, .events = POLLIN};
        map[np++] = -1;
        p[np] = (struct pollfd){.fd = sfd, .events = POLLIN};
        map[np++] = -2;
        for (int i = 0; i < n; i++) {
            short ev = 0;
            if (ch[i].fd >= 0 && readable[i] && !paused && rfork_flow_open(&flow[i]))
                ev |= POLLIN;
            if (ch[i].fd >= 0 && outq[i].len)
                ev |= POLLOUT;
            if (ev) {
                p[np] = (struct pollfd){.fd = ch[i].fd, .events = ev};
                map[np++] = i;
            }
        }
        if (poll(p, (nfds_t)np, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        for (int k = 0; k < np; k++) {
            if (!p[k].revents)
                continue;
            if (map[k] == -2) {
                struct signalfd_siginfo si;
                if (read(sfd, &si, sizeof si) == (ssize_t)sizeof si) {
                    uint32_t sig = si.ssi_signo;
                    /* A child of this stand-in ended (the copies of descendants that moved with the
                     * process, ended by rforkd): reaped here; the moved process has its own. */
                    if (sig == SIGCHLD && si.ssi_code > 0) {
                        while (waitpid(-1, NULL, WNOHANG) > 0) {
                        }
                        continue;
                    }
                    if (rfork_send(ctl, RFORK_MSG_SIGNAL, &sig, sizeof sig, NULL, 0) < 0)
                        goto lost;
                }
            } else if (map[k] >= 0 && ch[map[k]].kind != RFORK_CHANNEL_INPUT &&
                       ch[map[k]].kind != RFORK_CHANNEL_LAZY_INPUT) {
                /* An output channel's queue: POLLOUT, or POLLERR (the reader is gone). It may have been
                 * emptied by a frame handled earlier in this round: then there is nothing to do. */
                if (flush_output(map[k], 0) < 0)
                    goto lost;
            } else if (map[k] >= 0) {
                int i = map[k];
                /* A frame handled earlier in this round may have closed it, paused the stand-in (a
                 * checkpoint's marker: nothing may be read after its echo) or ended a lazy read. */
                if (ch[i].fd < 0 || paused || !readable[i])
                    continue;
                size_t want = ch[i].kind == RFORK_CHANNEL_LAZY_INPUT && budget[i] < sizeof buf ? budget[i] : sizeof buf;
                ssize_t r = read(ch[i].fd, buf, want);
                if (r < 0 && (errno == EINTR || errno == EAGAIN))
                    continue;
                if (r > 0 && ch[i].kind == RFORK_CHANNEL_LAZY_INPUT)
                    readable[i] = 0; /* until the child reads again */
                uint32_t id = (uint32_t)i;
                if (r > 0) {
                    if (rfork_flow_send(ctl, &flow[i], id, buf, (size_t)r) < 0)
                        goto lost;
                } else {
                    readable[i] = 0;
                    close(ch[i].fd);
                    ch[i].fd = -1;
                    if (rfork_send(ctl, RFORK_MSG_EOF, &id, sizeof id, NULL, 0) < 0)
                        goto lost;
                }
            } else {
                int r = rfork_recv(ctl, &frame);
                if (r <= 0)
                    goto lost;
                uint32_t a = 0;
                int32_t code = 0;
                if (frame.len >= 4)
                    memcpy(&a, frame.data, 4);
                switch (frame.type) {
                case RFORK_MSG_DATA:
                    /* Written, queued for a full pipe, or dropped (its reader is gone): consumed once written
                     * or dropped, so the remote side may send more. */
                    if (frame.len >= 4 && a < (uint32_t)n && take_output((int)a, frame.data + 4, frame.len - 4) < 0)
                        goto lost;
                    break;
                case RFORK_MSG_ACK:
                    if (a < (uint32_t)n)
                        rfork_flow_acked(&flow[a], frame.data, frame.len);
                    break;
                case RFORK_MSG_DEMAND: /* the remote child reads this lazy channel now: one read(2) for it */
                    if (a < (uint32_t)n && ch[a].fd >= 0 && ch[a].kind == RFORK_CHANNEL_LAZY_INPUT) {
                        uint32_t want = 0;
                        if (frame.len >= 8)
                            memcpy(&want, frame.data + 4, 4);
                        readable[a] = 1;
                        budget[a] = want ? want : sizeof buf;
                        if (want == (uint32_t)RFORK_DEMAND_EAGER) /* the only reader left: read ahead */
                            ch[a].kind = RFORK_CHANNEL_INPUT;
                    }
                    break;
                case RFORK_MSG_MARK: /* a checkpoint's marker: see wire.h */
                    if (a == RFORK_MARK_RESUME) {
                        uint32_t fresh = 0;
                        if (frame.len >= 8)
                            memcpy(&fresh, frame.data + 4, 4);
                        paused = 0;
                        if (fresh) /* restarted: a new namespace init counts from zero, and so do we */
                            memset(flow, 0, sizeof flow);
                        break;
                    }
                    if (a == RFORK_MARK_INPUT)
                        paused = 1;
                    if ((a == RFORK_MARK_INPUT || a == RFORK_MARK_OUTPUT) &&
                        rfork_send(ctl, RFORK_MSG_MARK, &a, sizeof a, NULL, 0) < 0)
                        goto lost;
                    break;
                case RFORK_MSG_EOF:
                    if (a < (uint32_t)n && ch[a].fd >= 0 && flush_output((int)a, 1) < 0)
                        goto lost;
                    if (a < (uint32_t)n && outq[a].nb >= 0) {
                        close(outq[a].nb);
                        outq[a].nb = -2;
                    }
                    if (a < (uint32_t)n && ch[a].fd >= 0) {
                        close(ch[a].fd);
                        ch[a].fd = -1;
                    }
                    break;
                case RFORK_MSG_EVENT:
                    if (frame.len >= 8)
                        memcpy(&code, frame.data + 4, 4);
                    flush_all(); /* the parent sees what the child wrote before its end or stop */
                    if (a == RFORK_EVENT_EXITED || a == RFORK_EVENT_KILLED)
                        die_like((int)a, code);
                    else if (a == RFORK_EVENT_STOPPED)
                        stop_like(code);
                    break;
                default:
                    break;
                }
            }
        }
    }
lost:
    /* The daemon is gone, and with it the only way to the remote child: the child is lost. */
    fprintf(stderr, "rfork: lost the link to the remote child %d; reporting it killed\n", getpid());
    die_like(RFORK_EVENT_KILLED, SIGKILL);
    return 1;
}
