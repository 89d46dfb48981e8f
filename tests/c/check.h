/* A minimal harness for librfork's C unit tests: CHECK fails the test with the file and line. */
#ifndef RFORK_TEST_CHECK_H
#define RFORK_TEST_CHECK_H
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int check_failures;
static int check_fd = 2; /* where failures are told: a test that redirects stderr points this elsewhere */

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            dprintf(check_fd, "%s:%d: check failed: %s (errno %d)\n", __FILE__, __LINE__, #cond, errno); \
            check_failures++;                                                                      \
        }                                                                                          \
    } while (0)

#define TEST_DONE(name)                                                                            \
    do {                                                                                           \
        if (check_failures) {                                                                      \
            dprintf(check_fd, "FAIL %s: %d check(s) failed\n", name, check_failures);               \
            return 1;                                                                              \
        }                                                                                          \
        printf("ok   %s\n", name);                                                                 \
        return 0;                                                                                  \
    } while (0)

#endif
