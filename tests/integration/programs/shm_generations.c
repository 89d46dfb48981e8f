/* Shared anonymous memory across three generations: the grandparent maps it and keeps its child here
 * (rfork_local, when the preload library provides it); that child forks a grandchild, which may run on
 * another node and writes. The grandparent, which never forked a remote child itself, must read what the
 * grandchild wrote (not a zero page of its own). Prints the values read; exits 1 if one is wrong. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

int main(void)
{
    volatile long *m = mmap(NULL, 8 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return 2;
    for (int i = 0; i < 8; i++)
        m[i * 512] = 1;
    pid_t (*local_fork)(void) = (pid_t(*)(void))dlsym(RTLD_DEFAULT, "rfork_local");
    pid_t p = local_fork ? local_fork() : fork();
    if (p == 0) {
        pid_t c = fork();
        if (c == 0) {
            char host[64] = "";
            gethostname(host, sizeof host);
            fprintf(stderr, "grandchild runs on %s\n", host);
            for (int i = 0; i < 8; i++)
                m[i * 512] = 100 + i;
            _exit(0);
        }
        int st;
        waitpid(c, &st, 0);
        _exit(WIFEXITED(st) ? WEXITSTATUS(st) : 1);
    }
    int st;
    waitpid(p, &st, 0);
    int bad = !WIFEXITED(st) || WEXITSTATUS(st) != 0;
    for (int i = 0; i < 8; i++) {
        printf("page %d: %ld\n", i, m[i * 512]);
        bad |= m[i * 512] != 100 + i;
    }
    return bad;
}
