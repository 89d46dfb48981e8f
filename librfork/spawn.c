/*
 * posix_spawn() and posix_spawnp() as placed forks, so that programs which start their children this
 * way (GNU make, for one) can have them run on other nodes. The file actions are recorded by wrapping
 * the public posix_spawn_file_actions_* calls, then replayed in the child before exec. Anything this
 * cannot reproduce goes to the real posix_spawn, which runs the child locally.
 */
#define _GNU_SOURCE
#include "include/rfork.h"
#include "internal.h"
#include "safe.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))

enum kind { A_CLOSE, A_DUP2, A_OPEN, A_CHDIR, A_FCHDIR, A_CLOSEFROM };

struct action {
    enum kind kind;
    int fd, newfd, oflag;
    mode_t mode;
    char *path;
};

/* The actions recorded for one posix_spawn_file_actions_t, in a list with no limit on its length. */
struct record {
    const posix_spawn_file_actions_t *key;
    int n, cap, bad; /* bad: an action we could not record: spawn locally */
    struct action *a;
    struct record *next;
};

static struct record *records;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

/* Under lock. With create, adds a record when there is none (NULL only when out of memory). */
static struct record *find(const posix_spawn_file_actions_t *fa, int create)
{
    for (struct record *r = records; r; r = r->next)
        if (r->key == fa)
            return r;
    if (!create)
        return NULL;
    struct record *r = calloc(1, sizeof *r);
    if (r) {
        r->key = fa;
        r->next = records;
        records = r;
    }
    return r;
}

/* Records one action. One that cannot be recorded (out of memory) is not dropped silently: the record is
 * marked bad, or, with no record at all, the count of glibc's actions no longer matches (see spawn()). */
static void add(const posix_spawn_file_actions_t *fa, struct action act)
{
    pthread_mutex_lock(&lock);
    struct record *r = find(fa, 1);
    if (r && r->n == r->cap) {
        int cap = r->cap ? 2 * r->cap : 8;
        struct action *grown = realloc(r->a, (size_t)cap * sizeof *grown);
        if (grown) {
            r->a = grown;
            r->cap = cap;
        }
    }
    int path_ok = !((act.kind == A_OPEN || act.kind == A_CHDIR) && !act.path); /* strdup may fail */
    if (r && r->n < r->cap && path_ok) {
        r->a[r->n++] = act;
    } else {
        if (r)
            r->bad = 1;
        free(act.path);
    }
    pthread_mutex_unlock(&lock);
}

static void forget(const posix_spawn_file_actions_t *fa)
{
    pthread_mutex_lock(&lock);
    for (struct record **p = &records; *p; p = &(*p)->next) {
        struct record *r = *p;
        if (r->key != fa)
            continue;
        *p = r->next;
        for (int i = 0; i < r->n; i++)
            free(r->a[i].path);
        free(r->a);
        free(r);
        break;
    }
    pthread_mutex_unlock(&lock);
}

#define REAL(name, type) ((type)dlsym(RTLD_NEXT, name))

EXPORT int posix_spawn_file_actions_init(posix_spawn_file_actions_t *fa)
{
    forget(fa);
    return REAL("posix_spawn_file_actions_init", int (*)(posix_spawn_file_actions_t *))(fa);
}

EXPORT int posix_spawn_file_actions_destroy(posix_spawn_file_actions_t *fa)
{
    forget(fa);
    return REAL("posix_spawn_file_actions_destroy", int (*)(posix_spawn_file_actions_t *))(fa);
}

EXPORT int posix_spawn_file_actions_addclose(posix_spawn_file_actions_t *fa, int fd)
{
    int r = REAL("posix_spawn_file_actions_addclose", int (*)(posix_spawn_file_actions_t *, int))(fa, fd);
    if (r == 0)
        add(fa, (struct action){.kind = A_CLOSE, .fd = fd});
    return r;
}

EXPORT int posix_spawn_file_actions_adddup2(posix_spawn_file_actions_t *fa, int fd, int newfd)
{
    int r = REAL("posix_spawn_file_actions_adddup2", int (*)(posix_spawn_file_actions_t *, int, int))(fa, fd, newfd);
    if (r == 0)
        add(fa, (struct action){.kind = A_DUP2, .fd = fd, .newfd = newfd});
    return r;
}

EXPORT int posix_spawn_file_actions_addopen(posix_spawn_file_actions_t *restrict fa, int fd,
                                            const char *restrict path, int oflag, mode_t mode)
{
    int r = REAL("posix_spawn_file_actions_addopen",
                 int (*)(posix_spawn_file_actions_t *, int, const char *, int, mode_t))(fa, fd, path, oflag, mode);
    if (r == 0)
        add(fa, (struct action){.kind = A_OPEN, .fd = fd, .path = strdup(path), .oflag = oflag, .mode = mode});
    return r;
}

EXPORT int posix_spawn_file_actions_addchdir_np(posix_spawn_file_actions_t *restrict fa, const char *restrict path)
{
    int r = REAL("posix_spawn_file_actions_addchdir_np", int (*)(posix_spawn_file_actions_t *, const char *))(fa, path);
    if (r == 0)
        add(fa, (struct action){.kind = A_CHDIR, .path = strdup(path)});
    return r;
}

EXPORT int posix_spawn_file_actions_addfchdir_np(posix_spawn_file_actions_t *fa, int fd)
{
    int r = REAL("posix_spawn_file_actions_addfchdir_np", int (*)(posix_spawn_file_actions_t *, int))(fa, fd);
    if (r == 0)
        add(fa, (struct action){.kind = A_FCHDIR, .fd = fd});
    return r;
}

EXPORT int posix_spawn_file_actions_addclosefrom_np(posix_spawn_file_actions_t *fa, int from)
{
    int r = REAL("posix_spawn_file_actions_addclosefrom_np", int (*)(posix_spawn_file_actions_t *, int))(fa, from);
    if (r == 0)
        add(fa, (struct action){.kind = A_CLOSEFROM, .fd = from});
    return r;
}

static int close_if_cloexec(int fd, void *arg)
{
    (void)arg;
    int fl = fcntl(fd, F_GETFD);
    if (fl >= 0 && (fl & FD_CLOEXEC))
        close(fd);
    return 0;
}

/* Closes what exec would close, so the child is placed (and dumped) as it will be after exec. */
static void close_cloexec(void) { (void)safe_each_fd(close_if_cloexec, NULL); }

/* In the child: replays the file actions and attributes, places itself, then execs. Never returns. */
static void become(const char *path, int search, struct record *rec, const posix_spawnattr_t *attr,
                   char *const argv[], char *const envp[], unsigned long long t0)
{
    for (int i = 0; rec && i < rec->n; i++) {
        struct action *a = &rec->a[i];
        int ok = 0;
        switch (a->kind) {
        case A_CLOSE:
            close(a->fd);
            ok = 1;
            break;
        case A_DUP2:
            ok = a->fd == a->newfd ? fcntl(a->fd, F_SETFD, 0) == 0 : dup2(a->fd, a->newfd) >= 0;
            break;
        case A_OPEN: {
            int fd = open(a->path, a->oflag, a->mode);
            ok = fd >= 0 && (fd == a->fd || (dup2(fd, a->fd) >= 0 && close(fd) == 0));
            break;
        }
        case A_CHDIR:
            ok = chdir(a->path) == 0;
            break;
        case A_FCHDIR:
            ok = fchdir(a->fd) == 0;
            break;
        case A_CLOSEFROM:
            closefrom(a->fd);
            ok = 1;
            break;
        }
        if (!ok)
            _exit(127);
    }
    short flags = 0;
    if (attr) {
        posix_spawnattr_getflags(attr, &flags);
        if (flags & POSIX_SPAWN_SETSID)
            setsid();
        if (flags & POSIX_SPAWN_SETPGROUP) {
            pid_t pg = 0;
            posix_spawnattr_getpgroup(attr, &pg);
            setpgid(0, pg);
        }
        if (flags & POSIX_SPAWN_RESETIDS) {
            if (setgid(getgid()) < 0 || setuid(getuid()) < 0)
                _exit(127);
        }
        if (flags & POSIX_SPAWN_SETSIGDEF) {
            sigset_t def;
            posix_spawnattr_getsigdefault(attr, &def);
            for (int s = 1; s < NSIG; s++)
                if (sigismember(&def, s) == 1)
                    signal(s, SIG_DFL);
        }
        if (flags & POSIX_SPAWN_SETSIGMASK) {
            sigset_t mask;
            posix_spawnattr_getsigmask(attr, &mask);
            sigprocmask(SIG_SETMASK, &mask, NULL);
        }
    }
    close_cloexec();
    rfork_place_child(NULL, t0);
    /* A remote child's program is remote too (RFORK_REMOTE=1, for rfork_is_remote()): the caller's envp gets
     * RFORK_REMOTE=1, which rfork_place_child could only put in environ. */
    if (rfork_is_remote()) {
        char **env = rfork_remote_env(envp);
        if (env)
            envp = env;
        else
            safe_say("rfork: out of memory: the remote child's environment lacks RFORK_REMOTE=1\n", (char *)NULL);
    }
    if (search)
        execvpe(path, argv, envp);
    else
        execve(path, argv, envp);
    _exit(127);
}

static int spawn(pid_t *pid, const char *path, int search, const posix_spawn_file_actions_t *fa,
                 const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
    struct record *rec = NULL;
    int complete = 1;
    if (fa) {
        pthread_mutex_lock(&lock);
        rec = find(fa, 0);
        /* Every action glibc holds must be one we recorded and can replay. Not so when recording failed,
         * for actions added before this library was loaded, or through a call it does not wrap
         * (posix_spawn_file_actions_addtcsetpgrp_np): then the child is spawned locally, never placed
         * without them. No record and no action: nothing to replay. */
        complete = fa->__used == (rec ? rec->n : 0) && !(rec && rec->bad);
        pthread_mutex_unlock(&lock);
    }
    short flags = 0;
    if (attr)
        posix_spawnattr_getflags(attr, &flags);
    int unsupported = !complete || (flags & (POSIX_SPAWN_SETSCHEDULER | POSIX_SPAWN_SETSCHEDPARAM));
    if (!rfork_placement_wanted() || unsupported) {
        typedef int (*fn)(pid_t *, const char *, const posix_spawn_file_actions_t *, const posix_spawnattr_t *,
                          char *const[], char *const[]);
        fn real = REAL(search ? "posix_spawnp" : "posix_spawn", fn);
        return real(pid, path, fa, attr, argv, envp);
    }
    unsigned long long t0 = rfork_now_ns();
    pid_t child = rfork_do_fork(NULL, 0); /* placed in become(), once the file actions are done */
    if (child < 0)
        return errno;
    if (child == 0)
        become(path, search, rec, attr, argv, envp, t0);
    if (pid)
        *pid = child;
    return 0;
}

EXPORT int posix_spawn(pid_t *restrict pid, const char *restrict path, const posix_spawn_file_actions_t *fa,
                       const posix_spawnattr_t *restrict attr, char *const argv[restrict], char *const envp[restrict])
{
    return spawn(pid, path, 0, fa, attr, argv, envp);
}

EXPORT int posix_spawnp(pid_t *restrict pid, const char *restrict file, const posix_spawn_file_actions_t *fa,
                        const posix_spawnattr_t *restrict attr, char *const argv[restrict], char *const envp[restrict])
{
    return spawn(pid, file, 1, fa, attr, argv, envp);
}
