/*
 * Local frames: what librfork, the stand-in and the namespace init say to the node daemon over
 * unix sockets on one node. The Swift side mirrors every constant in
 * Sources/RforkWire/LocalFrame.swift; change both together.
 *
 * A frame is a 4-byte length (host byte order) of what follows, a 1-byte type, then the payload.
 */
#ifndef RFORK_WIRE_H
#define RFORK_WIRE_H

#include <stddef.h>
#include <stdint.h>

#define RFORK_FRAME_MAX (1u << 20)     /* largest body a frame may carry */
#define RFORK_DATA_CHUNK (64u * 1024u) /* largest data payload a helper sends at once */
/* Flow control, per channel: the sending helper keeps at most RFORK_WINDOW bytes that the receiving
 * helper has not acknowledged (ACK frames, one per RFORK_ACK_EVERY bytes it consumed), so a fast writer
 * and a slow reader never pile data up in the daemons or the helpers. */
#define RFORK_WINDOW (4u << 20)
#define RFORK_ACK_EVERY (RFORK_WINDOW / 4)

enum rfork_msg {
    RFORK_MSG_FORK_REQUEST = 1, /* library -> daemon: text lines "key value" (see rfork.c) */
    RFORK_MSG_FORK_REPLY = 2,   /* daemon -> library: verdict byte, then text */
    RFORK_MSG_DATA = 3,         /* u32 channel, bytes */
    RFORK_MSG_EOF = 4,          /* u32 channel */
    RFORK_MSG_SIGNAL = 5,       /* u32 signal number: stand-in -> daemon -> namespace init */
    RFORK_MSG_EVENT = 6,        /* u32 kind, i32 code: namespace init -> daemon -> stand-in */
    RFORK_MSG_RESTORED = 7,     /* namespace init -> daemon: u64 restore nanoseconds */
    RFORK_MSG_FAILED = 8,       /* namespace init -> daemon: text reason */
    RFORK_MSG_QUERY = 9,        /* CLI -> daemon: text query ("nodes", "ps") */
    RFORK_MSG_ANSWER = 10,      /* daemon -> CLI: JSON text */
    RFORK_MSG_ABORT = 11,       /* daemon -> namespace init: kill the child and leave */
    RFORK_MSG_DEMAND = 12,      /* namespace init -> daemon -> stand-in: u32 channel, u32 bytes: the child
                                 * reads it now; the stand-in makes one read(2) of at most that many bytes.
                                 * Bytes RFORK_DEMAND_EAGER: see below */
    RFORK_MSG_ACK = 13,         /* either way, helper to helper: u32 channel, u32 bytes consumed */
    RFORK_MSG_MIGRATE = 14,     /* CLI -> daemon: "pid N\nnode NAME\n"; ANSWER (JSON) once the move ended */
    RFORK_MSG_CHECKPOINT = 15,  /* CLI -> daemon: "pid N\ndir PATH\nleave 0|1\n"; ANSWER (JSON) once saved */
    RFORK_MSG_RESTART = 16,     /* CLI -> daemon: "dir PATH\nnode NAME|-\n"; FORK_REPLY: the CLI becomes the stand-in */
    RFORK_MSG_SCHEDULE = 17,    /* rfork run -> daemon: "pid N\ndir PATH\nevery SECONDS\n"; ANSWER (JSON) */
    RFORK_MSG_PROGRESS = 18,    /* daemon -> CLI: one line of text, how a move goes, before its ANSWER */
    RFORK_MSG_SHM_ATTACH = 19,  /* library -> daemon: "pid N\nuffd FD\n" (or "uffderr ERRNO"); FORK_REPLY */
    RFORK_MSG_UNIX_CONNECT = 20, /* library -> daemon, on the program's own socket: an absolute AF_UNIX path
                                  * this node lacks; FORK_REPLY 'A' (the socket now relays to the node that
                                  * has it) or 'F' */
    RFORK_MSG_MARK = 21,        /* a checkpoint's marker, u32 phase (RFORK_MARK_*), through a job's relays */
};

/* Phases of RFORK_MSG_MARK. A checkpoint of a job with processes on several nodes takes one consistent
 * cut of every part by flushing each stand-in's channels with markers (Chandy-Lamport):
 *   INPUT:  daemon -> stand-in: stop reading input channels, and echo the marker after all the bytes
 *           read before it; the daemons pass it to the remote child's namespace init, which echoes it
 *           once all of them are in the child's pipes, followed by (u32 channel, u64 key) for every
 *           channel: the inode of its pipe or memfd, or the rdev of its terminal, as the child sees it.
 *   OUTPUT: daemon -> namespace init (the child is frozen): send everything the child wrote, then the
 *           marker; the daemons pass it to the stand-in, which echoes it once every byte before it is
 *           written to the parent's side.
 *   RESUME: daemon -> stand-in: read input channels again; a second u32, when not 0, says the remote
 *           side is a new one (a restart) and flow-control counts start from zero. */
#define RFORK_MARK_INPUT 1
#define RFORK_MARK_OUTPUT 2
#define RFORK_MARK_RESUME 3
/* In the INPUT echo's channel numbers: the namespace init had closed its end (the input had ended, or the
 * output's reader was gone), so a restart closes it again. */
#define RFORK_MARK_CLOSED 2147483648

/* Verdicts in a FORK_REPLY. */
#define RFORK_VERDICT_LOCAL 'L'   /* run here as a plain child; text = reason when placement failed */
#define RFORK_VERDICT_STANDIN 'S' /* the child runs remotely: become its stand-in; text = session */
#define RFORK_VERDICT_REMOTE 'R'  /* you are the restored copy on the target node */
#define RFORK_SHM_ATTACHED 'A'    /* SHM_ATTACH answered: rforkd covers this process's shared memory */
#define RFORK_SHM_REFUSED 'F'     /* SHM_ATTACH answered: it does not; text = why */

/* Channel kinds, also in proto/peer.proto (ChannelKind). */
enum rfork_channel_kind {
    RFORK_CHANNEL_INPUT = 1,    /* the child reads it */
    RFORK_CHANNEL_OUTPUT = 2,   /* the child writes it */
    RFORK_CHANNEL_TERMINAL = 3, /* a terminal: output relayed, input reads end of file */
    RFORK_CHANNEL_FILE = 4,     /* a regular file the child writes: a memfd on the target, growth relayed */
    RFORK_CHANNEL_LAZY_INPUT = 5, /* a pipe's read end: relayed as the child reads it */
};

/* Event kinds, also in proto/peer.proto (ChildEvent.Kind). */
enum rfork_event_kind {
    RFORK_EVENT_EXITED = 1,
    RFORK_EVENT_KILLED = 2,
    RFORK_EVENT_STOPPED = 3,
    RFORK_EVENT_CONTINUED = 4,
};

#define RFORK_MAX_CHANNELS 64

/* rforkd sends it to a process started under `rfork run` that `rfork migrate` asked to move; librfork's
 * handler asks to be placed. SIGRTMAX - 2 with glibc (a constant here: SIGRTMAX is a function call). */
#define RFORK_MIGRATE_SIGNAL 62
/* rforkd interrupts a process asleep on a futex in shared memory with it; librfork's handler does nothing
 * (SA_RESTART): the kernel restarts the wait, which reads the futex word again. */
#define RFORK_KICK_SIGNAL 61
/* rforkd sends it (with sigqueue's value: an inode) to a local process that maps memory which has just
 * become shared across nodes; librfork's handler reduces its descriptors of that object to O_PATH, so that
 * read(2) and write(2), which would see only this node's copy, fail instead (EBADF). */
#define RFORK_SEAL_SIGNAL 60
/* The same signal with this value (no object has inode 0) asks the process to close its userfaultfd
 * (rforkd holds its own copy): CRIU cannot save one, and a checkpoint takes every process of a job. */
#define RFORK_SEAL_RELEASE_UFFD 0
/* A DEMAND of this many bytes, from the home daemon to the stand-in and (through the target daemon) to the
 * namespace init: the stand-in holds the only read end of this lazy channel's pipe on the home node (no
 * other process has one, as root's scan of /proc found), so nobody else can lose bytes to it: it is read
 * as an input channel from now on, ahead of the child's reads, within the flow-control window. */
#define RFORK_DEMAND_EAGER 4294967295
/* On the server's node, rforkd's end of a relayed AF_UNIX connection is bound to an abstract name that
 * starts with this (the server's getpeername() shows it): librfork refuses to send descriptors on it. */
#define RFORK_RELAY_NAME "rfork-relay/"

/* A received frame; data points into buf. rfork_recv terminates the payload: data[len] is 0, also for a
 * frame of RFORK_FRAME_MAX bytes (hence the one spare byte), so a text payload is a C string. */
struct rfork_frame {
    uint8_t type;
    uint32_t len; /* payload length */
    unsigned char *data;
    unsigned char buf[RFORK_FRAME_MAX + 1];
};

/* Sends one frame made of a header and two payload pieces (either may be empty). 0 or -1/errno. */
int rfork_send(int fd, uint8_t type, const void *a, size_t alen, const void *b, size_t blen);
/* Reads one whole frame (blocking), payload terminated (see struct rfork_frame). 1 on a frame, 0 on clean
 * end of stream, -1/errno on error. */
int rfork_recv(int fd, struct rfork_frame *f);
/* Flow control of one channel, on both helpers' sides. */
struct rfork_flow {
    uint32_t unacked;  /* sender: bytes sent and not yet acknowledged */
    uint32_t consumed; /* receiver: bytes consumed and not yet acknowledged */
};
/* Sender: may this channel's source be read now? */
int rfork_flow_open(const struct rfork_flow *f);
/* Sender: sends `n` bytes of channel `id` as a DATA frame and counts them against the window. 0 or -1/errno. */
int rfork_flow_send(int fd, struct rfork_flow *f, uint32_t id, const void *p, size_t n);
/* Receiver: `n` more bytes of channel `id` were consumed (or dropped); acknowledges them in batches.
 * 0 or -1/errno (the send failed). */
int rfork_flow_consumed(int fd, struct rfork_flow *f, uint32_t id, size_t n);
/* Sender: an ACK frame's payload arrived for this channel. */
void rfork_flow_acked(struct rfork_flow *f, const unsigned char *payload, uint32_t len);

/* Writes everything, retrying on EINTR and short writes. 0 or -1/errno. */
int rfork_write_all(int fd, const void *p, size_t n);

#endif
