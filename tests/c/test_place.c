/*
 * librfork's child side (rfork.c, spawn.c) against a fake rforkd: the placement request it sends, the
 * verdicts (local with a reason, remote, stand-in, a reply of the largest frame size), RFORK_REMOTE=1 for
 * what a remote child execs (also through posix_spawn with the caller's own envp), and file actions that
 * are never dropped (more than 256 live posix_spawn_file_actions_t; an action the library cannot replay).
 *
 * Built twice: with AddressSanitizer, and with -DMALLOC_TRAP (no ASan: it replaces malloc), where every
 * fork goes through _Fork() (no atfork handlers) and the child's placement code must not call malloc,
 * free or dladdr (a lock another thread of a multithreaded parent may hold for good): the trap ends the
 * child with status 98 if it does.
 */
#define _GNU_SOURCE
#include "../../librfork/include/rfork.h"
#include "../../librfork/wire.h"
#include "check.h"

#include <dirent.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;
static char dir[] = "/tmp/rfork-test-place.XXXXXX";
static char sock_path[100];

#ifdef MALLOC_TRAP
static volatile int trap; /* set around _Fork(): the child inherits it set */
static void trapped(const char *what)
{
    static const char head[] = "test_place: the child called ";
    if (write(2, head, sizeof head - 1) < 0 || write(2, what, strlen(what)) < 0 || write(2, " after _Fork\n", 13) < 0) {
    }
    _exit(98);
}
void *__libc_malloc(size_t);
void *__libc_calloc(size_t, size_t);
void *__libc_realloc(void *, size_t);
void __libc_free(void *);
void *malloc(size_t n)
{
    if (trap)
        trapped("malloc");
    return __libc_malloc(n);
}
void *calloc(size_t n, size_t m)
{
    if (trap)
        trapped("calloc");
    return __libc_calloc(n, m);
}
void *realloc(void *p, size_t n)
{
    if (trap)
        trapped("realloc");
    return __libc_realloc(p, n);
}
void free(void *p)
{
    if (trap)
        trapped("free");
    __libc_free(p);
}
int dladdr(const void *addr, Dl_info *info)
{
    if (trap)
        trapped("dladdr");
    int (*real)(const void *, Dl_info *) = (int (*)(const void *, Dl_info *))dlsym(RTLD_NEXT, "dladdr");
    return real(addr, info);
}
#define ARM() (trap = 1)
#define DISARM() (trap = 0)
#define FORK() _Fork()
#else
#define ARM() ((void)0)
#define DISARM() ((void)0)
#define FORK() fork()
#endif

/* ---- the fake rforkd: one request per connection; the verdict is chosen by the request's node ---- */

static void daemon_reply(int c, const char *req)
{
    static unsigned char big[RFORK_FRAME_MAX];
    const char *node = strstr(req, "\nnode ");
    node = node ? node + 6 : "-";
    if (strncmp(node, "local\n", 6) == 0) {
        rfork_send(c, RFORK_MSG_FORK_REPLY, "Lthe fake daemon keeps it here", 30, NULL, 0);
    } else if (strncmp(node, "remote\n", 7) == 0) {
        rfork_send(c, RFORK_MSG_FORK_REPLY, "R", 1, NULL, 0);
    } else if (strncmp(node, "standin\n", 8) == 0) {
        rfork_send(c, RFORK_MSG_FORK_REPLY, "Ssession-7", 10, NULL, 0);
        char b[16];
        while (read(c, b, sizeof b) > 0) { /* until the stand-in ends */
        }
    } else if (strncmp(node, "big\n", 4) == 0) {
        /* A reply of the largest frame (type byte and payload): a verdict and a long reason. */
        memset(big, 'x', sizeof big);
        big[0] = 'L';
        memcpy(big + 1, "long reason ", 12);
        rfork_send(c, RFORK_MSG_FORK_REPLY, big, sizeof big - 1, NULL, 0);
    }
}

static void fake_daemon(int listener)
{
    static struct rfork_frame f;
    for (;;) {
        int c = accept(listener, NULL, NULL);
        if (c < 0)
            _exit(0);
        if (rfork_recv(c, &f) == 1 && f.type == RFORK_MSG_FORK_REQUEST) {
            char path[300];
            snprintf(path, sizeof path, "%s/request", dir);
            int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
            if (write(fd, f.data, f.len) < 0) {
            }
            close(fd);
            snprintf(path, sizeof path, "%s/count", dir);
            fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0600);
            if (write(fd, "x", 1) < 0) {
            }
            close(fd);
            daemon_reply(c, (char *)f.data);
        }
        close(c);
    }
}

static pid_t start_daemon(void)
{
    int l = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sock_path, sizeof sock_path, "%s/rforkd.sock", dir);
    memcpy(sa.sun_path, sock_path, sizeof sock_path);
    CHECK(bind(l, (struct sockaddr *)&sa, sizeof sa) == 0 && listen(l, 16) == 0);
    pid_t d = rfork_local();
    if (d == 0)
        fake_daemon(l);
    close(l); /* the children must not hold it: a socket keeps a child local */
    return d;
}

static int requests(void)
{
    char path[300];
    struct stat st;
    snprintf(path, sizeof path, "%s/count", dir);
    return stat(path, &st) == 0 ? (int)st.st_size : 0;
}

static void slurp(const char *name, char *out, size_t cap)
{
    char path[300];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    out[0] = 0;
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return;
    ssize_t n = read(fd, out, cap - 1);
    out[n > 0 ? n : 0] = 0;
    close(fd);
}

/* ---- the stand-in: the test binary exec'd as rfork-standin; reports what it was given ---- */

static int standin_main(int argc, char **argv)
{
    char report[4096] = "";
    int ctl = atoi(argv[1]);
    int ok = argc >= 3 && strcmp(argv[2], "session-7") == 0;
    struct stat st;
    ok &= fstat(ctl, &st) == 0 && S_ISSOCK(st.st_mode);
    int chans[RFORK_MAX_CHANNELS], n = 0;
    for (int i = 3; i < argc && n < RFORK_MAX_CHANNELS; i++) {
        int id, fd, kind;
        ok &= sscanf(argv[i], "%d:%d:%d", &id, &fd, &kind) == 3 && id == n && fcntl(fd, F_GETFD) == 0;
        chans[n++] = fd;
    }
    /* Nothing else is open: the library closed every other descriptor. */
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    while (d && (e = readdir(d))) {
        int fd = atoi(e->d_name);
        if (e->d_name[0] == '.' || fd == dirfd(d))
            continue;
        int known = fd == ctl;
        for (int i = 0; i < n; i++)
            known |= fd == chans[i];
        if (!known)
            snprintf(report + strlen(report), sizeof report - strlen(report), "extra fd %d; ", fd);
        ok &= known;
    }
    if (d)
        closedir(d);
    snprintf(report + strlen(report), sizeof report - strlen(report), "%s ctl %d channels %d\n", ok ? "ok" : "bad", ctl, n);
    char path[300];
    snprintf(path, sizeof path, "%s/standin", getenv("TEST_DIR"));
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (write(fd, report, strlen(report)) < 0) {
    }
    return ok ? 0 : 1;
}

/* ---- fork() through the library ---- */

/* Forks with RFORK_NODE=node, stderr of the child into dir/err; the child runs `then` and exits with
 * its result. Returns the child's wait status. */
static int fork_with(const char *node, int (*then)(void))
{
    setenv("RFORK_NODE", node, 1);
    char path[300];
    snprintf(path, sizeof path, "%s/err", dir);
    int err = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    int saved = dup(2);
    dup2(err, 2);
    close(err);
    ARM();
    pid_t pid = FORK();
    DISARM();
    if (pid == 0)
        _exit(then());
    dup2(saved, 2);
    close(saved);
    CHECK(pid > 0);
    int st = -1;
    CHECK(waitpid(pid, &st, 0) == pid);
    return st;
}

static int stays_local(void) { return rfork_is_remote() ? 1 : 0; }
static int not_reached(void) { return 3; }

static int is_remote_with_env(void)
{
    const char *r = getenv("RFORK_REMOTE");
    int count = 0;
    for (char **e = environ; *e; e++)
        count += strncmp(*e, "RFORK_REMOTE=", 13) == 0;
    if (!rfork_is_remote() || !r || strcmp(r, "1") != 0 || count != 1)
        return 1;
    /* What it execs sees it too (execl uses environ). */
    char cmd[400];
    snprintf(cmd, sizeof cmd, "echo \"$RFORK_REMOTE\" > %s/exec-env", dir);
    execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
    return 2;
}

static void fork_verdicts(void)
{
    char text[8192], want[512];
    int before = requests();

    /* A verdict to stay, with a reason: one line on stderr, the child goes on locally. */
    int p[2];
    CHECK(pipe(p) == 0);
    int st = fork_with("local", stays_local);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CHECK(requests() == before + 1);
    slurp("err", text, sizeof text);
    CHECK(strstr(text, "rfork: the fake daemon keeps it here; child ") == text && strstr(text, " runs locally\n"));
    /* The request: the same text the daemon has always parsed (formatted here with printf). */
    slurp("request", text, sizeof text);
    snprintf(want, sizeof want, "uid %u\n", (unsigned)getuid());
    CHECK(strncmp(text, "pid ", 4) == 0 && strstr(text, want));
    CHECK(strstr(text, "\npolicy -\nnode local\nt0 ") && strstr(text, "\npostcopy -\n"));
    struct stat pst;
    fstat(p[0], &pst);
    snprintf(want, sizeof want, " %d %d pipe:[%lu]w\n", RFORK_CHANNEL_OUTPUT, p[1], (unsigned long)pst.st_ino);
    CHECK(strstr(text, want) != NULL);
    snprintf(want, sizeof want, " %d %d pipe:[%lu]r\n", RFORK_CHANNEL_LAZY_INPUT, p[0], (unsigned long)pst.st_ino);
    CHECK(strstr(text, want) != NULL);
    /* The child's stderr is a file it writes: named by mount and inode, in hex. */
    char fdinfo[64], info[512];
    snprintf(fdinfo, sizeof fdinfo, "%s/err", dir);
    int errfd = open(fdinfo, O_WRONLY);
    struct stat est;
    fstat(errfd, &est);
    snprintf(fdinfo, sizeof fdinfo, "/proc/self/fdinfo/%d", errfd);
    int fi = open(fdinfo, O_RDONLY);
    ssize_t il = read(fi, info, sizeof info - 1);
    info[il > 0 ? il : 0] = 0;
    close(fi);
    close(errfd);
    const char *m = strstr(info, "mnt_id:");
    snprintf(want, sizeof want, " %d 2 file[%x:%lx]\n", RFORK_CHANNEL_FILE, m ? (unsigned)atoi(m + 7) : 0u,
             (unsigned long)est.st_ino);
    CHECK(strstr(text, want) != NULL);
    close(p[0]);
    close(p[1]);

    /* The largest reply frame: terminated in bounds (ASan watches the library's static reply). */
    st = fork_with("big", stays_local);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    slurp("err", text, sizeof text);
    CHECK(strstr(text, "rfork: long reason xxx") == text);

    /* Remote: RFORK_REMOTE=1 in environ, once, and in what the child execs. */
    st = fork_with("remote", is_remote_with_env);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    slurp("exec-env", text, sizeof text);
    CHECK(strcmp(text, "1\n") == 0);

    /* A child holding a socket stays, and says which. */
    int sp[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sp) == 0);
    before = requests();
    st = fork_with("remote", stays_local);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CHECK(requests() == before);
    slurp("err", text, sizeof text);
    snprintf(want, sizeof want, "rfork: the child holds a socket (descriptor %d, socket:[", sp[0]);
    CHECK(strstr(text, want) == text && strstr(text, "]), which rfork cannot move yet; child "));
    close(sp[0]);
    close(sp[1]);

    /* Stand-in: only the socket and the channels stay open across the exec. */
    int q[2];
    CHECK(pipe(q) == 0);
    int junk = open("/dev/null", O_RDONLY); /* not a channel: closed */
    st = fork_with("standin", not_reached);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    slurp("standin", text, sizeof text);
    CHECK(strncmp(text, "ok ctl ", 7) == 0);
    if (strncmp(text, "ok ctl ", 7) != 0)
        dprintf(check_fd, "stand-in: %s\n", text);
    close(junk);
    close(q[0]);
    close(q[1]);
}

/* ---- posix_spawn through the library ---- */

static int spawn_env_program(posix_spawn_file_actions_t *fa, const char *out)
{
    char cmd[400];
    snprintf(cmd, sizeof cmd, "env > %s/%s", dir, out);
    char *argv[] = {"sh", "-c", cmd, NULL};
    char *envp[] = {"PATH=/usr/bin:/bin", "RFORK_REMOTE=0", NULL}; /* the caller's own environment */
    pid_t pid;
    int rc = posix_spawn(&pid, "/bin/sh", fa, NULL, argv, envp);
    CHECK(rc == 0);
    int st = -1;
    CHECK(rc != 0 || waitpid(pid, &st, 0) == pid);
    return st;
}

static void spawns(void)
{
    char text[8192];
    /* The children's "runs locally" lines go to a file. */
    char errpath[300];
    snprintf(errpath, sizeof errpath, "%s/err", dir);
    int err = open(errpath, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    int saved = dup(2);
    dup2(err, 2);
    close(err);

    /* Remote: the program gets RFORK_REMOTE=1 (once) although the caller passed its own envp. */
    setenv("RFORK_NODE", "remote", 1);
    int before = requests();
    int st = spawn_env_program(NULL, "spawn-env");
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CHECK(requests() == before + 1);
    slurp("spawn-env", text, sizeof text);
    CHECK(strstr(text, "RFORK_REMOTE=1\n") && !strstr(text, "RFORK_REMOTE=0") && strstr(text, "PATH=/usr/bin:/bin\n"));

    /* More live file-action objects than the library once had room for: the last one's actions run. */
    setenv("RFORK_NODE", "local", 1);
    enum { MANY = 300 };
    static posix_spawn_file_actions_t fas[MANY];
    int p[2];
    CHECK(pipe(p) == 0);
    for (int i = 0; i < MANY; i++) {
        posix_spawn_file_actions_init(&fas[i]);
        posix_spawn_file_actions_adddup2(&fas[i], p[1], 1);
        posix_spawn_file_actions_addclose(&fas[i], p[0]);
    }
    char *argv[] = {"echo", "through the pipe", NULL};
    pid_t pid;
    before = requests();
    CHECK(posix_spawn(&pid, "/bin/echo", &fas[MANY - 1], NULL, argv, environ) == 0);
    CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CHECK(requests() == before + 1); /* it was placed (here: kept local by the daemon) */
    close(p[1]);
    ssize_t n = read(p[0], text, sizeof text - 1);
    text[n > 0 ? n : 0] = 0;
    CHECK(strcmp(text, "through the pipe\n") == 0);
    close(p[0]);
    for (int i = 0; i < MANY; i++)
        posix_spawn_file_actions_destroy(&fas[i]);

    /* An action the library cannot replay (added by a call it does not wrap): the real posix_spawn
     * runs the child, never a placed child without it. */
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    CHECK(pipe(p) == 0);
    posix_spawn_file_actions_adddup2(&fa, p[1], 1);
    int (*tcsetpgrp_np)(posix_spawn_file_actions_t *, int) =
        (int (*)(posix_spawn_file_actions_t *, int))dlsym(RTLD_DEFAULT, "posix_spawn_file_actions_addtcsetpgrp_np");
    if (tcsetpgrp_np) {
        CHECK(tcsetpgrp_np(&fa, p[1]) == 0);
        before = requests();
        char *a2[] = {"echo", "x", NULL};
        int rc = posix_spawn(&pid, "/bin/echo", &fa, NULL, a2, environ);
        if (rc == 0)
            waitpid(pid, &st, 0);
        CHECK(requests() == before); /* not placed: glibc's spawn ran it (and refused a pipe for a tty) */
    }
    posix_spawn_file_actions_destroy(&fa);
    close(p[0]);
    close(p[1]);
    dup2(saved, 2);
    close(saved);
}

int main(int argc, char **argv)
{
    if (strcmp(argv[0], "rfork-standin") == 0)
        return standin_main(argc, argv);
    check_fd = fcntl(2, F_DUPFD_CLOEXEC, 100);
    CHECK(mkdtemp(dir) != NULL);
    setenv("TEST_DIR", dir, 1);
    char self[4096];
    ssize_t l = readlink("/proc/self/exe", self, sizeof self - 1);
    self[l > 0 ? l : 0] = 0;
    setenv("RFORK_STANDIN", self, 1);
    /* The first fork resolves the real fork (dlsym may allocate): not under the trap. */
    pid_t warm = FORK();
    if (warm == 0)
        _exit(0);
    waitpid(warm, NULL, 0);

    pid_t d = start_daemon();
    setenv("RFORK_SOCKET", sock_path, 1);
    signal(SIGPIPE, SIG_IGN);

    fork_verdicts();
    spawns(); /* posix_spawn's child comes from fork() (atfork handlers run): the trap stays off */
    kill(d, SIGKILL);
    waitpid(d, NULL, 0);
    const char *names[] = {"request", "count", "err", "exec-env", "standin", "spawn-env", "rforkd.sock"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        char path[300];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        unlink(path);
    }
    rmdir(dir);
#ifdef MALLOC_TRAP
    TEST_DONE("place (_Fork, no malloc in the child)");
#else
    TEST_DONE("place");
#endif
}
