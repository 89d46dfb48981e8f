/* Local frame I/O shared by librfork and its helpers. Async-signal-safe: no malloc, no stdio. */
#include "wire.h"

#include <errno.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

int rfork_write_all(int fd, const void *p, size_t n)
{
    const unsigned char *c = p;
    while (n > 0) {
        ssize_t w = write(fd, c, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

int rfork_send(int fd, uint8_t type, const void *a, size_t alen, const void *b, size_t blen)
{
    uint32_t len = (uint32_t)(1 + alen + blen);
    struct iovec iov[4] = {
        {&len, sizeof len}, {&type, 1}, {(void *)a, alen}, {(void *)b, blen},
    };
    size_t total = sizeof len + len;
    int cnt = 4, i = 0;
    if (1 + alen + blen > RFORK_FRAME_MAX) {
        errno = EMSGSIZE;
        return -1;
    }
    while (total > 0) {
        ssize_t w = writev(fd, iov + i, cnt - i);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        total -= (size_t)w;
        while (i < cnt && (size_t)w >= iov[i].iov_len) {
            w -= (ssize_t)iov[i].iov_len;
            i++;
        }
        if (i < cnt) {
            iov[i].iov_base = (char *)iov[i].iov_base + w;
            iov[i].iov_len -= (size_t)w;
        }
    }
    return 0;
}

static int read_exact(int fd, void *p, size_t n)
{
    unsigned char *c = p;
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, c + got, n - got);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (r == 0)
            return got == 0 ? 0 : (errno = EPROTO, -1);
        got += (size_t)r;
    }
    return 1;
}

int rfork_recv(int fd, struct rfork_frame *f)
{
    uint32_t len;
    int r = read_exact(fd, &len, sizeof len);
    if (r <= 0)
        return r;
    if (len < 1 || len > RFORK_FRAME_MAX) {
        errno = EPROTO;
        return -1;
    }
    r = read_exact(fd, f->buf, len);
    if (r <= 0)
        return r < 0 ? -1 : (errno = EPROTO, -1);
    f->buf[len] = 0; /* in bounds: buf has RFORK_FRAME_MAX + 1 bytes */
    f->type = f->buf[0];
    f->data = f->buf + 1;
    f->len = len - 1;
    return 1;
}

int rfork_flow_open(const struct rfork_flow *f) { return f->unacked < RFORK_WINDOW; }

int rfork_flow_send(int fd, struct rfork_flow *f, uint32_t id, const void *p, size_t n)
{
    if (rfork_send(fd, RFORK_MSG_DATA, &id, sizeof id, p, n) < 0)
        return -1;
    f->unacked += (uint32_t)n;
    return 0;
}

int rfork_flow_consumed(int fd, struct rfork_flow *f, uint32_t id, size_t n)
{
    f->consumed += (uint32_t)n;
    if (f->consumed < RFORK_ACK_EVERY)
        return 0;
    unsigned char p[8];
    memcpy(p, &id, 4);
    memcpy(p + 4, &f->consumed, 4);
    f->consumed = 0;
    return rfork_send(fd, RFORK_MSG_ACK, p, sizeof p, NULL, 0);
}

void rfork_flow_acked(struct rfork_flow *f, const unsigned char *payload, uint32_t len)
{
    uint32_t n;
    if (len < 8)
        return;
    memcpy(&n, payload + 4, 4);
    f->unacked = n > f->unacked ? 0 : f->unacked - n;
}
