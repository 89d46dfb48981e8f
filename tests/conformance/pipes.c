/* Pipes both ways: 4 MiB down to the child, its checksum and 4 MiB back up; EOF both ways. */
#include "common.h"

#define SIZE (4 << 20)

static unsigned long sum_bytes(const unsigned char *b, size_t n, unsigned long s)
{
    for (size_t i = 0; i < n; i++)
        s = s * 31 + b[i];
    return s;
}

int main(void)
{
    int down[2], up[2];
    CHECK(pipe(down) == 0 && pipe(up) == 0);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        close(down[1]);
        close(up[0]);
        where("child");
        static unsigned char buf[65536];
        unsigned long s = 0, total = 0;
        ssize_t n;
        while ((n = read(down[0], buf, sizeof buf)) > 0) {
            s = sum_bytes(buf, (size_t)n, s);
            total += (unsigned long)n;
        }
        dprintf(up[1], "child read %lu bytes, sum %lu, then end of file\n", total, s);
        for (int i = 0; i < SIZE / 65536; i++) {
            memset(buf, 'a' + i % 26, sizeof buf);
            CHECK(write(up[1], buf, sizeof buf) == (ssize_t)sizeof buf);
        }
        _exit(0);
    }
    close(down[0]);
    close(up[1]);
    static unsigned char buf[65536];
    unsigned long s = 0;
    for (int i = 0; i < SIZE / 65536; i++) {
        for (size_t k = 0; k < sizeof buf; k++)
            buf[k] = (unsigned char)(k * 13 + (size_t)i);
        s = sum_bytes(buf, sizeof buf, s);
        CHECK(write(down[1], buf, sizeof buf) == (ssize_t)sizeof buf);
    }
    close(down[1]);
    printf("parent sent %d bytes, sum %lu\n", SIZE, s);
    unsigned long total = 0, us = 0;
    ssize_t n;
    char line[256];
    size_t ll = 0;
    int in_line = 1;
    while ((n = read(up[0], buf, sizeof buf)) > 0) {
        size_t off = 0;
        while (in_line && off < (size_t)n) {
            char c = (char)buf[off++];
            if (ll < sizeof line - 1)
                line[ll++] = c;
            if (c == '\n')
                in_line = 0;
        }
        us = sum_bytes(buf + off, (size_t)n - off, us);
        total += (unsigned long)n - off;
    }
    line[ll] = 0;
    fputs(line, stdout);
    printf("parent read %lu bytes back, sum %lu, then end of file\n", total, us);
    int st;
    CHECK(waitpid(pid, &st, 0) == pid);
    describe("child", st);
    return 0;
}
