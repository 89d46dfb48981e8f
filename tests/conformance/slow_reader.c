/* A fast writer and a slow reader both ways: the parent writes MIB (argument, default 8) MiB to a child
 * that sleeps before reading, then the child writes as much back to a parent that sleeps before reading.
 * Checksums both ways. Under rfork, flow control must make each writer wait (as with a local pipe)
 * instead of piling the bytes up in the daemons; the integration suite watches their memory meanwhile. */
#include "common.h"

static unsigned long sum_bytes(const unsigned char *b, size_t n, unsigned long s)
{
    for (size_t i = 0; i < n; i++)
        s = s * 31 + b[i];
    return s;
}

static void fill(unsigned char *b, size_t n, size_t block)
{
    for (size_t i = 0; i < n; i++)
        b[i] = (unsigned char)(block * 7 + i);
}

int main(int argc, char **argv)
{
    size_t mib = argc > 1 ? (size_t)atol(argv[1]) : 8, blocks = mib * 16; /* 64 KiB blocks */
    int down[2], up[2];
    CHECK(pipe(down) == 0 && pipe(up) == 0);
    static unsigned char buf[65536];
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        close(down[1]);
        close(up[0]);
        where("child");
        sleep(2); /* the parent's writes must wait, not pile up */
        unsigned long s = 0, total = 0;
        ssize_t n;
        while ((n = read(down[0], buf, sizeof buf)) > 0) {
            s = sum_bytes(buf, (size_t)n, s);
            total += (unsigned long)n;
        }
        printf("child read %lu bytes, sum %lu\n", total, s);
        fflush(stdout);
        s = 0;
        for (size_t i = 0; i < blocks; i++) {
            fill(buf, sizeof buf, i);
            s = sum_bytes(buf, sizeof buf, s);
            CHECK(write(up[1], buf, sizeof buf) == (ssize_t)sizeof buf);
        }
        printf("child wrote %zu bytes, sum %lu\n", blocks * sizeof buf, s);
        fflush(stdout);
        _exit(0);
    }
    close(down[0]);
    close(up[1]);
    unsigned long s = 0;
    for (size_t i = 0; i < blocks; i++) {
        fill(buf, sizeof buf, i + 1);
        s = sum_bytes(buf, sizeof buf, s);
        CHECK(write(down[1], buf, sizeof buf) == (ssize_t)sizeof buf);
    }
    printf("parent wrote %zu bytes, sum %lu\n", blocks * sizeof buf, s); /* before the child can see EOF */
    fflush(stdout);
    close(down[1]);
    sleep(3); /* now the child's writes must wait */
    unsigned long total = 0;
    ssize_t n;
    s = 0;
    while ((n = read(up[0], buf, sizeof buf)) > 0) {
        s = sum_bytes(buf, (size_t)n, s);
        total += (unsigned long)n;
    }
    int st;
    CHECK(waitpid(pid, &st, 0) == pid);
    printf("parent read %lu bytes, sum %lu\n", total, s);
    describe("child", st);
    return 0;
}
