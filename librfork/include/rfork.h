/*
 * rfork.h: explicit remote fork for programs that want to choose where a child runs.
 *
 * Programs started under `rfork run` need none of this: their fork() already places children.
 * Link with -lrfork (or run under `rfork run`, which preloads the same library).
 */
#ifndef RFORK_H
#define RFORK_H

#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Forks onto the named node ("node2"); NULL or "" uses the placement policy of `rfork run`.
 * Same contract as fork(): the child's PID in the parent, 0 in the child, -1 and errno on error.
 * If the child cannot run on that node it runs locally and one line on stderr says why. */
pid_t rfork_on(const char *node);

/* A plain fork() that never leaves this node. */
pid_t rfork_local(void);

/* 1 in a child that runs on another node than its parent, else 0. */
int rfork_is_remote(void);

#ifdef __cplusplus
}
#endif

#endif
