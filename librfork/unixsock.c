/*
 * AF_UNIX paths across nodes. A process of a job that connects to a socket path its node does not have
 * (ENOENT or ECONNREFUSED: a server its parent or a sibling runs on another node, such as the Manager of
 * Python's multiprocessing) is connected through rforkd to the node where that path is bound: the
 * program's own socket connects to rforkd, asks for the path (RFORK_MSG_UNIX_CONNECT) and, once rforkd
 * says yes, carries the program's bytes to the server there and back. If no node has it, the socket is
 * replaced by a fresh one and connect() fails as it did.
 *
 * Only stream sockets, and pathnames (not abstract names). Descriptors (SCM_RIGHTS) cannot travel such a
 * connection: sendmsg() with them on a relayed socket fails with EOPNOTSUPP and one line, rather than
 * the bytes arriving without them. That holds at both ends: the client's socket is connected to rforkd's
 * socket path, and the server's accepted socket to rforkd's socket bound to an abstract name starting
 * with RFORK_RELAY_NAME.
 */
#define _GNU_SOURCE
#include "safe.h"
#include "wire.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stddef.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))

typedef int (*connect_fn)(int, const struct sockaddr *, socklen_t);
typedef ssize_t (*sendmsg_fn)(int, const struct msghdr *, int);

/* The next definition of `name` (libc's), looked up once into *cache. */
static void *next_symbol(void **cache, const char *name)
{
    void *f = __atomic_load_n(cache, __ATOMIC_ACQUIRE);
    if (!f) {
        f = dlsym(RTLD_NEXT, name);
        __atomic_store_n(cache, f, __ATOMIC_RELEASE);
    }
    return f;
}

static connect_fn real_connect(void)
{
    static void *cache;
    return (connect_fn)next_symbol(&cache, "connect");
}

/* Turns fd back into an unconnected socket of the same kind (it is connected to rforkd now). */
static void renew(int fd, int domain, int type, int flags, int fdflags)
{
    int s = socket(domain, type | ((flags & O_NONBLOCK) ? SOCK_NONBLOCK : 0), 0);
    if (s < 0)
        return;
    dup3(s, fd, (fdflags & FD_CLOEXEC) ? O_CLOEXEC : 0);
    close(s);
}

/* Asks rforkd, on fd itself, for a relay to `path`. 1 when fd now relays to it. */
static int relay(int fd, const char *sock, const char *path)
{
    struct sockaddr_un d = {.sun_family = AF_UNIX};
    struct sbuf b;
    sb_init(&b, d.sun_path, sizeof d.sun_path);
    sb_str(&b, sock);
    if (b.over || real_connect()(fd, (struct sockaddr *)&d, sizeof d) != 0)
        return 0;
    if (rfork_send(fd, RFORK_MSG_UNIX_CONNECT, path, strlen(path), NULL, 0) != 0)
        return 0;
    /* A frame is 1 MiB: mapped for this answer only. (A static __thread one gave every thread of every
     * process under rfork run 1 MiB of zeroed, so dirty, memory, and every remote fork 1 MiB more to copy.) */
    struct rfork_frame *answer = mmap(NULL, sizeof *answer, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (answer == MAP_FAILED)
        return 0;
    int ok = rfork_recv(fd, answer) > 0 && answer->type == RFORK_MSG_FORK_REPLY && answer->len >= 1 &&
             answer->data[0] == 'A';
    munmap(answer, sizeof *answer);
    return ok;
}

/* Whether fd is a socket relayed through rforkd: a client's, connected to rforkd's socket path, or a
 * server's, connected to rforkd's socket bound to an abstract RFORK_RELAY_NAME... */
static int relayed(int fd)
{
    struct sockaddr_un peer;
    socklen_t len = sizeof peer;
    if (getpeername(fd, (struct sockaddr *)&peer, &len) != 0 || peer.sun_family != AF_UNIX ||
        len <= offsetof(struct sockaddr_un, sun_path))
        return 0;
    size_t have = len - offsetof(struct sockaddr_un, sun_path), prefix = strlen(RFORK_RELAY_NAME);
    if (peer.sun_path[0] == 0)
        return have >= 1 + prefix && memcmp(peer.sun_path + 1, RFORK_RELAY_NAME, prefix) == 0;
    const char *sock = safe_getenv("RFORK_SOCKET");
    size_t plen = strnlen(peer.sun_path, have);
    return sock && *sock && plen == strlen(sock) && memcmp(peer.sun_path, sock, plen) == 0;
}

static int carries_descriptors(const struct msghdr *msg)
{
    if (!msg || !msg->msg_control || msg->msg_controllen < sizeof(struct cmsghdr))
        return 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR((struct msghdr *)msg, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
            return 1;
    return 0;
}

EXPORT ssize_t sendmsg(int fd, const struct msghdr *msg, int flags)
{
    static void *cache;
    sendmsg_fn real = (sendmsg_fn)next_symbol(&cache, "sendmsg");
    if (!real) {
        errno = ENOSYS;
        return -1;
    }
    if (carries_descriptors(msg) && relayed(fd)) {
        safe_say("rfork: descriptors cannot be passed through a connection to another node\n", (char *)NULL);
        errno = EOPNOTSUPP;
        return -1;
    }
    return real(fd, msg, flags);
}

EXPORT int connect(int fd, const struct sockaddr *addr, socklen_t len)
{
    connect_fn real = real_connect();
    if (!real) {
        errno = ENOSYS;
        return -1;
    }
    int r = real(fd, addr, len);
    if (r == 0 || !addr || addr->sa_family != AF_UNIX || (errno != ENOENT && errno != ECONNREFUSED))
        return r;
    int saved = errno;
    const struct sockaddr_un *un = (const struct sockaddr_un *)addr;
    size_t off = offsetof(struct sockaddr_un, sun_path);
    size_t max = len > off ? len - off : 0;
    if (max > sizeof un->sun_path)
        max = sizeof un->sun_path;
    size_t plen = strnlen(un->sun_path, max);
    const char *sock = safe_getenv("RFORK_SOCKET");
    int type = 0;
    socklen_t tl = sizeof type;
    if (plen == 0 || !sock || !*sock || getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) != 0 || type != SOCK_STREAM) {
        errno = saved;
        return r;
    }
    /* The absolute path, as rforkd and the other node see it. */
    char path[PATH_MAX + sizeof un->sun_path + 2];
    size_t at = 0;
    if (un->sun_path[0] != '/') {
        if (!getcwd(path, PATH_MAX)) {
            errno = saved;
            return r;
        }
        at = strlen(path);
        path[at++] = '/';
    }
    memcpy(path + at, un->sun_path, plen);
    path[at + plen] = 0;
    if (strcmp(path, sock) == 0) { /* rforkd's own socket: nothing to look for elsewhere */
        errno = saved;
        return r;
    }
    int flags = fcntl(fd, F_GETFL), fdflags = fcntl(fd, F_GETFD);
    if (flags < 0 || fdflags < 0) {
        errno = saved;
        return r;
    }
    if (flags & O_NONBLOCK)
        fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    int ok = relay(fd, sock, path);
    if (!ok)
        renew(fd, AF_UNIX, SOCK_STREAM, flags, fdflags);
    else if (flags & O_NONBLOCK)
        fcntl(fd, F_SETFL, flags);
    if (ok)
        return 0;
    errno = saved;
    return -1;
}
