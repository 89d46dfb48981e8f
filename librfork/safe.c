/* Async-signal-safe text, environment and descriptor listing: see safe.h. */
#define _GNU_SOURCE
#include "safe.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

extern char **environ;

void sb_init(struct sbuf *b, char *p, size_t cap)
{
    b->p = p;
    b->cap = cap;
    b->len = 0;
    b->over = cap == 0;
    if (cap)
        p[0] = 0;
}

void sb_chr(struct sbuf *b, char c)
{
    if (b->len + 1 < b->cap) {
        b->p[b->len++] = c;
        b->p[b->len] = 0;
    } else {
        b->over = 1;
    }
}

void sb_str(struct sbuf *b, const char *s)
{
    while (*s)
        sb_chr(b, *s++);
}

static void sb_digits(struct sbuf *b, unsigned long long v, unsigned base)
{
    char d[24];
    int n = 0;
    do {
        d[n++] = "0123456789abcdef"[v % base];
        v /= base;
    } while (v);
    while (n > 0)
        sb_chr(b, d[--n]);
}

void sb_udec(struct sbuf *b, unsigned long long v) { sb_digits(b, v, 10); }
void sb_hex(struct sbuf *b, unsigned long long v) { sb_digits(b, v, 16); }

void sb_dec(struct sbuf *b, long long v)
{
    if (v < 0) {
        sb_chr(b, '-');
        sb_digits(b, 0ull - (unsigned long long)v, 10);
    } else {
        sb_digits(b, (unsigned long long)v, 10);
    }
}

int safe_atoi(const char *s)
{
    long long v = 0;
    if (!*s)
        return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        v = v * 10 + (*s - '0');
        if (v > INT32_MAX)
            return -1;
    }
    return (int)v;
}

const char *safe_getenv(const char *name)
{
    size_t l = strlen(name);
    for (char **e = environ; e && *e; e++)
        if (strncmp(*e, name, l) == 0 && (*e)[l] == '=')
            return *e + l + 1;
    return NULL;
}

const char *safe_strerror(int e)
{
    const char *s = strerrordesc_np(e);
    return s ? s : "unknown error";
}

void safe_say(const char *first, ...)
{
    char line[1024];
    struct sbuf b;
    sb_init(&b, line, sizeof line);
    va_list ap;
    va_start(ap, first);
    for (const char *s = first; s; s = va_arg(ap, const char *))
        sb_str(&b, s);
    va_end(ap);
    if (b.over && b.len > 0)
        line[b.len - 1] = '\n'; /* cut: still one line */
    int saved = errno;
    while (write(2, line, b.len) < 0 && errno == EINTR) {
    }
    errno = saved;
}

int safe_each_fd(int (*fn)(int fd, void *arg), void *arg) { return safe_each_number("/proc/self/fd", fn, arg); }

int safe_each_number(const char *dir, int (*fn)(int n, void *arg), void *arg)
{
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return -1;
    /* /proc/self/fd is positioned by descriptor number, so closing listed descriptors is safe. */
    _Alignas(struct dirent64) char buf[4096];
    for (;;) {
        ssize_t n = getdents64(dfd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = errno;
            close(dfd);
            errno = e;
            return -1;
        }
        if (n == 0)
            break;
        for (ssize_t off = 0; off < n;) {
            struct dirent64 *d = (struct dirent64 *)(buf + off);
            off += d->d_reclen;
            int fd = safe_atoi(d->d_name);
            if (fd < 0 || fd == dfd)
                continue;
            int r = fn(fd, arg);
            if (r) {
                close(dfd);
                return r;
            }
        }
    }
    close(dfd);
    return 0;
}
