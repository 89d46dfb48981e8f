/* A memfd kept open and mapped shared; the child (placed on another node) and then the parent read it
 * through the descriptor and through the mapping. Under rfork, once the memory is shared across nodes,
 * both descriptors are O_PATH: read(2) fails with EBADF (it would see one node's copy), fstat works, and
 * the mapping is coherent (the parent sees the child's 42). A second child, forked holding the O_PATH
 * descriptor, moves too (CRIU restores an O_PATH memfd descriptor) and sees and writes the memory. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
int main(void)
{
    int fd = memfd_create("kept", 0);
    if (fd < 0 || ftruncate(fd, 8192)) return 2;
    volatile int *m = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) return 2;
    m[0] = 1;
    pid_t p = fork();
    if (p == 0) {
        char h[64]; gethostname(h, 64); fprintf(stderr, "child runs on %s\n", h);
        int v; ssize_t n = pread(fd, &v, sizeof v, 0);
        struct stat st; int f = fstat(fd, &st);
        printf("child: read %s, fstat %s size %lld, mapped %d\n", n < 0 ? strerror(errno) : "ok", f ? "fails" : "ok", (long long)st.st_size, m[0]);
        fflush(stdout);
        m[0] = 42;
        _exit(0);
    }
    int st; waitpid(p, &st, 0);
    p = fork();
    if (p == 0) {
        char h[64]; gethostname(h, 64); fprintf(stderr, "child runs on %s\n", h);
        struct stat s2; int f = fstat(fd, &s2);
        printf("second child: fstat %s, mapped %d\n", f ? "fails" : "ok", m[0]);
        fflush(stdout);
        m[0] = 43;
        _exit(0);
    }
    waitpid(p, &st, 0);
    int v = 0; ssize_t n = pread(fd, &v, sizeof v, 0);
    printf("parent: read %s, mapped %d\n", n < 0 ? strerror(errno) : "ok", m[0]);
    return 0;
}
