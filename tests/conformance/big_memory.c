/* A child with much memory (post-copy moves it: the child runs before its pages arrive) sees exactly
 * the memory its parent had at fork(): every page, including untouched (zero) ones, and none of the
 * parent's later writes; its own writes stick. Arguments: [MiB [early]]; "early" prints "child running"
 * on stdout before the child reads its memory (the integration tests break the transfer then). */
#include "common.h"
#include <stdint.h>
#include <sys/mman.h>

static uint64_t word(size_t i) { return (i + 1) * 0x9E3779B97F4A7C15ULL; }

int main(int argc, char **argv)
{
    size_t mib = argc > 1 ? (size_t)atol(argv[1]) : 96;
    int early = argc > 2 && strcmp(argv[2], "early") == 0;
    size_t words = (mib << 20) / sizeof(uint64_t);
    uint64_t *m = mmap(NULL, mib << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(m != MAP_FAILED);
    for (size_t i = 0; i < words; i++)
        if ((i / 512) % 64 != 63) /* every 64th page stays untouched: it must read as zeros */
            m[i] = word(i);
    int p[2];
    CHECK(pipe(p) == 0);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        close(p[0]);
        if (early) {
            printf("child running\n");
            fflush(stdout);
        }
        where("child");
        size_t wrong = 0;
        for (size_t i = 0; i < words; i++)
            wrong += m[i] != ((i / 512) % 64 != 63 ? word(i) : 0);
        for (size_t i = 0; i < words; i += 512) /* write to every page, then read it back */
            m[i] = ~word(i);
        for (size_t i = 0; i < words; i += 512)
            wrong += m[i] != ~word(i);
        dprintf(p[1], "%zu\n", wrong);
        _exit(7);
    }
    close(p[1]);
    for (size_t i = 0; i < words; i += 512) /* the parent's later writes are its own */
        m[i] = 0;
    char buf[64] = "";
    ssize_t n = read(p[0], buf, sizeof buf - 1);
    printf("child saw the parent's memory at fork, and its own writes: %s\n",
           n > 0 && atol(buf) == 0 ? "yes" : n > 0 ? "no" : "no report");
    int st;
    CHECK(waitpid(pid, &st, 0) == pid);
    describe("child", st);
    return 0;
}
