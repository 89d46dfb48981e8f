/* The child reads stdin to its end and writes stdout and stderr; the parent only waits. */
#include "common.h"
#include <ctype.h>

int main(void)
{
    fflush(stdout);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        where("child");
        int c;
        unsigned long n = 0;
        while ((c = getchar()) != EOF) {
            putchar(toupper(c));
            n++;
        }
        printf("child read %lu bytes from stdin\n", n);
        fflush(stdout);
        _exit(0);
    }
    int st;
    CHECK(waitpid(pid, &st, 0) == pid);
    describe("child", st);
    return 0;
}
