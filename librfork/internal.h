/* Shared between the parts of librfork. */
#ifndef RFORK_INTERNAL_H
#define RFORK_INTERNAL_H
#include <sys/types.h>

/* fork() with placement: allow_remote 0 is a plain fork. node NULL uses the policy. */
pid_t rfork_do_fork(const char *node, int allow_remote);
/* In a freshly forked child: asks where to run and moves there (returns locally or remotely). */
void rfork_place_child(const char *node, unsigned long long t0);
unsigned long long rfork_now_ns(void);
/* A copy of envp (pointers only, in fresh pages; never freed) without any RFORK_REMOTE and with
 * RFORK_REMOTE=1, for what a remote child execs; NULL when memory is short. Async-signal-safe. */
char **rfork_remote_env(char *const envp[]);
/* Whether forks from this process are placed at all (a daemon is configured and this is not remote). */
int rfork_placement_wanted(void);
/* Calls fn(line, arg) for each line of /proc/self/maps until fn returns nonzero; returns that, or 0. */
int rfork_maps_each(int (*fn)(const char *line, void *arg), void *arg);
/* Before a fork that may be placed elsewhere (parked 0), or a move with every other thread parked (1):
 * moves the System V segments only this process attaches, and no other can find by a key, into memfds at
 * the same addresses (sysv.c). Async-signal-safe with parked 1. */
void rfork_sysv_move(int parked);
/* After this process mapped memory that is shared across nodes again (a new attach of a moved System V
 * segment): asks rforkd to watch every mapping of it; 1 when it does. */
int rfork_shm_rewatch(void);

#endif
