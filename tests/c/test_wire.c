/* wire.c: frame limits, and the terminator a receiver may write after a frame of the largest size. */
#define _GNU_SOURCE
#include "../../librfork/wire.h"
#include "check.h"

#include <pthread.h>
#include <stdint.h>
#include <sys/socket.h>
#include <unistd.h>

static struct rfork_frame frame; /* static like librfork's `reply`: ASan guards the globals' ends */
static unsigned char payload[RFORK_FRAME_MAX];

struct sender {
    int fd;
    size_t len;
};

static void *send_one(void *arg)
{
    struct sender *s = arg;
    if (rfork_send(s->fd, RFORK_MSG_FORK_REPLY, payload, s->len, NULL, 0) < 0)
        perror("rfork_send");
    return NULL;
}

/* Sends one frame with a payload of len bytes through a socket pair and receives it into `frame`. */
static int round_trip(size_t len)
{
    int sp[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sp) < 0)
        return -1;
    struct sender s = {sp[0], len};
    pthread_t t;
    pthread_create(&t, NULL, send_one, &s);
    int r = rfork_recv(sp[1], &frame);
    pthread_join(t, NULL);
    close(sp[0]);
    close(sp[1]);
    return r;
}

int main(void)
{
    for (size_t i = 0; i < sizeof payload; i++)
        payload[i] = (unsigned char)('a' + i % 26);

    /* The largest frame: type byte plus RFORK_FRAME_MAX - 1 payload bytes. */
    CHECK(round_trip(RFORK_FRAME_MAX - 1) == 1);
    CHECK(frame.type == RFORK_MSG_FORK_REPLY);
    CHECK(frame.len == RFORK_FRAME_MAX - 1);
    CHECK(memcmp(frame.data, payload, frame.len) == 0);
    /* rfork.c terminates the reply text this way: in bounds, and already done by rfork_recv. */
    CHECK(frame.data[frame.len] == 0);
    frame.data[frame.len] = 0;

    /* A small frame is terminated too (the byte after it is not left over from the big one). */
    CHECK(round_trip(3) == 1);
    CHECK(frame.len == 3 && memcmp(frame.data, "abc", 3) == 0 && frame.data[3] == 0);

    /* One byte more than the largest frame is refused by the sender. */
    int sp[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sp) == 0);
    errno = 0;
    CHECK(rfork_send(sp[0], RFORK_MSG_DATA, payload, RFORK_FRAME_MAX, NULL, 0) == -1 && errno == EMSGSIZE);

    /* A header that announces too much, or nothing, is a protocol error for the receiver. */
    uint32_t len = RFORK_FRAME_MAX + 1;
    CHECK(write(sp[0], &len, sizeof len) == sizeof len);
    errno = 0;
    CHECK(rfork_recv(sp[1], &frame) == -1 && errno == EPROTO);
    len = 0;
    CHECK(write(sp[0], &len, sizeof len) == sizeof len);
    errno = 0;
    CHECK(rfork_recv(sp[1], &frame) == -1 && errno == EPROTO);

    /* A frame cut short by the end of the stream is an error; an end between frames is not. */
    len = 10;
    CHECK(write(sp[0], &len, sizeof len) == sizeof len && write(sp[0], "abc", 3) == 3);
    close(sp[0]);
    errno = 0;
    CHECK(rfork_recv(sp[1], &frame) == -1 && errno == EPROTO);
    close(sp[1]);
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sp) == 0);
    close(sp[0]);
    CHECK(rfork_recv(sp[1], &frame) == 0);
    close(sp[1]);

    /* Flow control: a window's worth shuts the source; acknowledgements in batches reopen it. */
    struct rfork_flow sender = {0}, receiver = {0};
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sp) == 0);
    CHECK(rfork_flow_open(&sender));
    sender.unacked = RFORK_WINDOW;
    CHECK(!rfork_flow_open(&sender));
    CHECK(rfork_flow_consumed(sp[0], &receiver, 7, RFORK_ACK_EVERY - 1) == 0); /* not yet a batch */
    CHECK(rfork_flow_consumed(sp[0], &receiver, 7, 1) == 0);                   /* one ACK */
    CHECK(receiver.consumed == 0);
    CHECK(rfork_recv(sp[1], &frame) == 1 && frame.type == RFORK_MSG_ACK && frame.len == 8);
    uint32_t ch, n;
    memcpy(&ch, frame.data, 4);
    memcpy(&n, frame.data + 4, 4);
    CHECK(ch == 7 && n == RFORK_ACK_EVERY);
    rfork_flow_acked(&sender, frame.data, frame.len);
    CHECK(sender.unacked == RFORK_WINDOW - RFORK_ACK_EVERY && rfork_flow_open(&sender));
    rfork_flow_acked(&sender, frame.data, 4); /* short: ignored */
    CHECK(sender.unacked == RFORK_WINDOW - RFORK_ACK_EVERY);
    close(sp[0]);
    close(sp[1]);

    TEST_DONE("wire");
}
