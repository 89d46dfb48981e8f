/*
 * Async-signal-safe helpers for the code that runs in a child between fork() (or _Fork(), which runs no
 * atfork handlers) and exec: another thread of the parent may have held a lock of malloc, stdio or the
 * dynamic loader at the fork, and in the child nobody ever releases it. So nothing here allocates, locks
 * or uses stdio, locale or the loader: text is formatted by hand into caller buffers and directories are
 * read with getdents64 into a stack buffer.
 */
#ifndef RFORK_SAFE_H
#define RFORK_SAFE_H

#include <stddef.h>

/* Text built into a fixed buffer; always terminated. `over` is set once something did not fit. */
struct sbuf {
    char *p;
    size_t cap, len;
    int over;
};
void sb_init(struct sbuf *b, char *p, size_t cap);
void sb_str(struct sbuf *b, const char *s);
void sb_chr(struct sbuf *b, char c);
void sb_dec(struct sbuf *b, long long v);   /* like %lld */
void sb_udec(struct sbuf *b, unsigned long long v); /* like %llu */
void sb_hex(struct sbuf *b, unsigned long long v);  /* like %llx */

/* A decimal number made of digits only (a descriptor's name in /proc/self/fd), or -1. */
int safe_atoi(const char *s);
/* getenv without locale or locks (reads environ). */
const char *safe_getenv(const char *name);
/* The English description of an errno value, from libc's static table (no translation, no allocation). */
const char *safe_strerror(int e);
/* Writes the pieces (up to a NULL) to stderr as one write; a line longer than 1 KiB is cut. */
void safe_say(const char *first, ...) __attribute__((sentinel));

/* Calls fn(fd, arg) for each descriptor open in this process (as listed in /proc/self/fd), except the one
 * used to list them; fn may close descriptors. Stops early when fn returns nonzero, and returns that.
 * 0 once all were seen, -1/errno when /proc/self/fd cannot be read. */
int safe_each_fd(int (*fn)(int fd, void *arg), void *arg);
/* The same for every entry of `dir` named by a number (/proc/self/task: the threads). */
int safe_each_number(const char *dir, int (*fn)(int n, void *arg), void *arg);

#endif
