/*
 * Names are each node's own. A process that runs away from its job's home node (a remote child, a moved
 * process, what they exec) and opens shared memory or a semaphore *by name* (shm_open, sem_open, or
 * shmget/semget with a key) gets its node's object, not the one of that name at home or on another
 * node: two processes that meet only through such a name on different nodes do not see each other (a
 * semaphore posted on one never wakes the other). rfork cannot share names across nodes yet, so such an
 * open says so in one line (once per kind of call in a process) and then goes ahead as the call asked.
 * Creating a new object (O_CREAT|O_EXCL, IPC_CREAT|IPC_EXCL, IPC_PRIVATE) is not an open by name:
 * nothing elsewhere can be meant (multiprocessing makes its semaphores so), and nothing is said.
 */
#define _GNU_SOURCE
#include "safe.h"
#include "include/rfork.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <semaphore.h>
#include <stdarg.h>
#include <sys/ipc.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/stat.h>

#define EXPORT __attribute__((visibility("default")))

typedef int (*shm_open_fn)(const char *, int, mode_t);
typedef sem_t *(*sem_open_fn)(const char *, int, ...);
typedef int (*shmget_fn)(key_t, size_t, int);
typedef int (*semget_fn)(key_t, int, int);

static void *next_symbol(void **cache, const char *name)
{
    void *f = __atomic_load_n(cache, __ATOMIC_ACQUIRE);
    if (!f) {
        f = dlsym(RTLD_NEXT, name);
        __atomic_store_n(cache, f, __ATOMIC_RELEASE);
    }
    return f;
}

/* Says once per call (`said`) that `what` opened by name here is this node's own. */
static void say_node_own(int *said, const char *call, const char *what)
{
    if (!rfork_is_remote() || __atomic_exchange_n(said, 1, __ATOMIC_ACQ_REL))
        return;
    safe_say("rfork: ", call, " of ", what,
             " on this node: this process runs away from its job's home node, and names are each node's own, "
             "so processes on other nodes that open it get another object (names are not shared across "
             "nodes yet)\n",
             (char *)NULL);
}

EXPORT int shm_open(const char *name, int oflag, mode_t mode)
{
    static void *cache;
    static int said;
    shm_open_fn real = (shm_open_fn)next_symbol(&cache, "shm_open");
    if (!real) {
        errno = ENOSYS;
        return -1;
    }
    if ((oflag & (O_CREAT | O_EXCL)) != (O_CREAT | O_EXCL))
        say_node_own(&said, "shm_open", name);
    return real(name, oflag, mode);
}

EXPORT sem_t *sem_open(const char *name, int oflag, ...)
{
    static void *cache;
    static int said;
    sem_open_fn real = (sem_open_fn)next_symbol(&cache, "sem_open");
    if (!real) {
        errno = ENOSYS;
        return SEM_FAILED;
    }
    if ((oflag & (O_CREAT | O_EXCL)) != (O_CREAT | O_EXCL))
        say_node_own(&said, "sem_open", name);
    if (!(oflag & O_CREAT))
        return real(name, oflag);
    va_list ap;
    va_start(ap, oflag);
    mode_t mode = va_arg(ap, mode_t);
    unsigned value = va_arg(ap, unsigned);
    va_end(ap);
    return real(name, oflag, mode, value);
}

/* "key 0x..." of a System V key, into buf. */
static const char *key_text(char *buf, size_t cap, key_t key)
{
    struct sbuf b;
    sb_init(&b, buf, cap);
    sb_str(&b, "key 0x");
    sb_hex(&b, (unsigned)key);
    return buf;
}

static int by_key(key_t key, int flags)
{
    return key != IPC_PRIVATE && (flags & (IPC_CREAT | IPC_EXCL)) != (IPC_CREAT | IPC_EXCL);
}

EXPORT int shmget(key_t key, size_t size, int flags)
{
    static void *cache;
    static int said;
    shmget_fn real = (shmget_fn)next_symbol(&cache, "shmget");
    if (!real) {
        errno = ENOSYS;
        return -1;
    }
    if (by_key(key, flags)) {
        char buf[32];
        say_node_own(&said, "shmget", key_text(buf, sizeof buf, key));
    }
    return real(key, size, flags);
}

EXPORT int semget(key_t key, int count, int flags)
{
    static void *cache;
    static int said;
    semget_fn real = (semget_fn)next_symbol(&cache, "semget");
    if (!real) {
        errno = ENOSYS;
        return -1;
    }
    if (by_key(key, flags)) {
        char buf[32];
        say_node_own(&said, "semget", key_text(buf, sizeof buf, key));
    }
    return real(key, count, flags);
}
