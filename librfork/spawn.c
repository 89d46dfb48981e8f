/*
 * posix_spawn() and posix_spawnp() as placed forks, so that programs which start their children this
 * way (GNU make, for one) can have them run on other nodes. The file actions are recorded by wrapping
 * the public posix_spawn_file_actions_* calls, then replayed in the child before exec. Anything this
 * cannot reproduce goes to the real posix_spawn, which runs the child locally.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <dirent.h>
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

struct record {
    const posix_spawn_file_actions_t *key;
    int n, cap, bad; /* bad: an action we could not record: spawn locally */
    struct action *a;
};

#define MAX_RECORDS 256
static struct record records[MAX_RECORDS];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static struct record *find(const posix_spawn_file_actions_t *fa, int create)
{
    struct record *free_slot = NULL;
    for (int i = 0; i < MAX_RECORDS; i++) {
        if (records[i].key == fa)
            return &records[i];
        if (!records[i].key && !free_slot)
            free_slot = &records[i];
    }
    if (create && free_slot) {
        memset(free_slot, 0, sizeof *free_slot);
        free_slot->key = fa;
    }
    return create ? free_slot : NULL;
}

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
    if (r && r->n < r->cap)
        r->a[r->n++] = act;
    else if (r)
        r->bad = 1;
    else
        free(act.path);
    pthread_mutex_unlock(&lock);
}

static void forget(const posix_spawn_file_actions_t *fa)
{
    pthread_mutex_lock(&lock);
    struct record *r = find(fa, 0);
    if (r) {
        for (int i = 0; i < r->n; i++)
            free(r->a[i].path);
        free(r->a);
        memset(r, 0, sizeof *r);
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

/* Closes what exec would close, so the child is placed (and dumped) as it will be after exec. */
static void close_cloexec(void)
{
    int fds[1024], n = 0;
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && n < 1024)
        if (e->d_name[0] != '.')
            fds[n++] = atoi(e->d_name);
    int dfd = dirfd(d);
    for (int i = 0; i < n; i++) {
        int fl = fds[i] == dfd ? -1 : fcntl(fds[i], F_GETFD);
        if (fl >= 0 && (fl & FD_CLOEXEC))
            close(fds[i]);
    }
    closedir(d);
}

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
    if (fa) {
        pthread_mutex_lock(&lock);
        rec = find(fa, 0);
        pthread_mutex_unlock(&lock);
    }
    short flags = 0;
    if (attr)
        posix_spawnattr_getflags(attr, &flags);
    /* No record: initialized (under the preload) but no action added yet, so none to replay. */
    int unsupported = (rec && rec->bad) || (flags & (POSIX_SPAWN_SETSCHEDULER | POSIX_SPAWN_SETSCHEDPARAM));
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
