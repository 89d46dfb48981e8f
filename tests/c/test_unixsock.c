/*
 * librfork's connect() (unixsock.c) against a fake rforkd: a connection to an AF_UNIX path this node
 * lacks is asked of rforkd on the program's own socket; on 'A' the socket carries the program's bytes to
 * rforkd (which relays them), on 'F' connect() fails with the first error and the socket is a fresh,
 * unconnected one (so it can still connect elsewhere); without RFORK_SOCKET, for abstract names and
 * datagram sockets nothing changes; descriptors cannot be sent through a relayed socket (EOPNOTSUPP),
 * and still can through any other. Run with AddressSanitizer and UBSan.
 */
#define _GNU_SOURCE
#include "../../librfork/wire.h"
#include "check.h"

#include <fcntl.h>
#include <pthread.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static char dir[] = "/tmp/rfork-test-unixsock.XXXXXX";
static char sock_path[100];
static int listener = -1;
static char verdict = 'A';
static char asked[256];
static char got[64];

/* The fake rforkd: one client; records the path asked, answers `verdict`, then (on 'A') echoes what the
 * program sends, upper-cased, as a relay to a server elsewhere would carry it. */
static void *daemon_thread(void *arg)
{
    (void)arg;
    int c = accept(listener, NULL, NULL);
    if (c < 0)
        return NULL;
    static struct rfork_frame f;
    if (rfork_recv(c, &f) > 0 && f.type == RFORK_MSG_UNIX_CONNECT) {
        snprintf(asked, sizeof asked, "%s", (const char *)f.data);
        rfork_send(c, RFORK_MSG_FORK_REPLY, &verdict, 1, verdict == 'F' ? "no node has it" : NULL,
                   verdict == 'F' ? 14 : 0);
        if (verdict == 'A') {
            ssize_t n = read(c, got, sizeof got - 1);
            for (ssize_t i = 0; i < n; i++)
                got[i] = (char)(got[i] >= 'a' && got[i] <= 'z' ? got[i] - 32 : got[i]);
            if (n > 0 && write(c, got, (size_t)n) != n)
                got[0] = 0;
        }
    }
    close(c);
    return NULL;
}

/* sendmsg() of one byte with descriptor 0 attached. */
static ssize_t send_descriptor(int s)
{
    char byte = 'x';
    struct iovec iov = {.iov_base = &byte, .iov_len = 1};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } u;
    memset(&u, 0, sizeof u);
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf};
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    int zero = 0;
    memcpy(CMSG_DATA(c), &zero, sizeof zero);
    return sendmsg(s, &msg, 0);
}

static struct sockaddr_un at(const char *path)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
    return a;
}

int main(void)
{
    CHECK(mkdtemp(dir) != NULL);
    snprintf(sock_path, sizeof sock_path, "%s/rforkd.sock", dir);
    listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un l = at(sock_path);
    CHECK(bind(listener, (struct sockaddr *)&l, sizeof l) == 0 && listen(listener, 4) == 0);
    char missing[160];
    snprintf(missing, sizeof missing, "%s/elsewhere/listener-1", dir);
    struct sockaddr_un m = at(missing);

    /* Without RFORK_SOCKET: the error as it was. */
    unsetenv("RFORK_SOCKET");
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    CHECK(connect(s, (struct sockaddr *)&m, sizeof m) == -1 && errno == ENOENT);
    close(s);

    setenv("RFORK_SOCKET", sock_path, 1);
    /* A datagram socket, and an abstract name, are never relayed. */
    s = socket(AF_UNIX, SOCK_DGRAM, 0);
    CHECK(connect(s, (struct sockaddr *)&m, sizeof m) == -1 && errno == ENOENT);
    close(s);
    struct sockaddr_un abstract = {.sun_family = AF_UNIX};
    memcpy(abstract.sun_path, "\0rfork-test-none", 16);
    s = socket(AF_UNIX, SOCK_STREAM, 0);
    CHECK(connect(s, (struct sockaddr *)&abstract, offsetof(struct sockaddr_un, sun_path) + 16) == -1 &&
          errno == ECONNREFUSED);
    close(s);

    /* 'A': connected, and the socket carries the program's bytes (non-blocking and close-on-exec kept). */
    pthread_t t;
    verdict = 'A';
    pthread_create(&t, NULL, daemon_thread, NULL);
    s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(connect(s, (struct sockaddr *)&m, sizeof m) == 0);
    CHECK(strcmp(asked, missing) == 0);
    CHECK(send_descriptor(s) == -1 && errno == EOPNOTSUPP);
    CHECK(write(s, "hello", 5) == 5);
    char back[8] = {0};
    CHECK(read(s, back, sizeof back) == 5 && memcmp(back, "HELLO", 5) == 0);
    CHECK(fcntl(s, F_GETFD) & FD_CLOEXEC);
    close(s);
    pthread_join(t, NULL);

    /* A relative path is asked for as an absolute one. */
    CHECK(chdir(dir) == 0);
    pthread_create(&t, NULL, daemon_thread, NULL);
    s = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un rel = at("elsewhere/listener-1");
    CHECK(connect(s, (struct sockaddr *)&rel, sizeof rel) == 0);
    CHECK(strcmp(asked, missing) == 0);
    close(s);
    pthread_join(t, NULL);

    /* 'F': the first error, and a fresh socket that can still connect (here, to a real listener). */
    verdict = 'F';
    pthread_create(&t, NULL, daemon_thread, NULL);
    s = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
    CHECK(connect(s, (struct sockaddr *)&m, sizeof m) == -1 && errno == ENOENT);
    pthread_join(t, NULL);
    CHECK(fcntl(s, F_GETFL) & O_NONBLOCK);
    char real[160];
    snprintf(real, sizeof real, "%s/real.sock", dir);
    int r = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un ra = at(real);
    CHECK(bind(r, (struct sockaddr *)&ra, sizeof ra) == 0 && listen(r, 1) == 0);
    CHECK(connect(s, (struct sockaddr *)&ra, sizeof ra) == 0);
    int accepted = accept(r, NULL, NULL);
    CHECK(send_descriptor(s) == 1); /* not relayed: descriptors go */
    CHECK(send_descriptor(accepted) == 1);
    close(accepted);
    close(s);

    /* The server's end of a relayed connection: its peer is rforkd's socket bound to an abstract
     * RFORK_RELAY_NAME... name; descriptors are refused there too. Another abstract name is not. */
    const char *names[] = {"\0" RFORK_RELAY_NAME "node2/7", "\0rfork-other"};
    for (int k = 0; k < 2; k++) {
        size_t nlen = 1 + strlen(names[k] + 1);
        struct sockaddr_un bound = {.sun_family = AF_UNIX};
        memcpy(bound.sun_path, names[k], nlen);
        s = socket(AF_UNIX, SOCK_STREAM, 0);
        CHECK(bind(s, (struct sockaddr *)&bound, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + nlen)) == 0);
        CHECK(connect(s, (struct sockaddr *)&ra, sizeof ra) == 0);
        accepted = accept(r, NULL, NULL);
        CHECK(accepted >= 0);
        if (k == 0)
            CHECK(send_descriptor(accepted) == -1 && errno == EOPNOTSUPP);
        else
            CHECK(send_descriptor(accepted) == 1);
        close(accepted);
        close(s);
    }
    close(r);

    unlink(real);
    unlink(sock_path);
    close(listener);
    rmdir(dir);
    TEST_DONE("unixsock");
}
