/* rfork-nsinit's pieces that run without a namespace: the reason it gives for a failed restore (from
 * CRIU's restore.log, which may be empty) and the input path with its flow control (every byte taken is
 * written to the child's pipe and acknowledged; nothing is dropped, and a sender that keeps to the window
 * never stalls). nsinit.c is included whole, its main renamed. */
#define main nsinit_main
#include "../../librfork/nsinit.c"
#undef main
#include "check.h"

#include <sys/wait.h>

static char dir[] = "/tmp/rfork-test-nsinit.XXXXXX";

static void write_log(const char *text)
{
    char path[256];
    snprintf(path, sizeof path, "%s/restore.log", dir);
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

/* report_failure's FAILED frame text. */
static void failed_text(const char *what, char *out, size_t cap)
{
    int sp[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sp) == 0);
    ctl = sp[0];
    report_failure(dir, what);
    CHECK(rfork_recv(sp[1], &frame) == 1 && frame.type == RFORK_MSG_FAILED);
    snprintf(out, cap, "%.*s", (int)frame.len, (char *)frame.data);
    close(sp[0]);
    close(sp[1]);
}

/* Leaves stack garbage where report_failure's buffers will be (what an uninitialised read would see). */
static __attribute__((noinline)) void dirty_stack(void)
{
    volatile char junk[32768];
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = 'X';
}

static void restore_reasons(void)
{
    char got[8192];
    CHECK(mkdtemp(dir) != NULL);

    dirty_stack();
    failed_text("criu restore failed", got, sizeof got); /* no log at all */
    CHECK(strcmp(got, "criu restore failed") == 0);

    write_log(""); /* an empty log: no line to quote */
    dirty_stack();
    failed_text("criu restore failed", got, sizeof got);
    if (strcmp(got, "criu restore failed") != 0)
        fprintf(stderr, "empty log gave: '%.80s'\n", got);
    CHECK(strcmp(got, "criu restore failed") == 0);

    write_log("(00.001) a\n(00.002) Error (criu/x.c:1): RLIMIT_NOFILE noise\n(00.003) Error (criu/y.c:2): the cause\n"
              "(00.004) Error (criu/z.c:3): a later one\n(00.005) last words\n");
    failed_text("criu restore failed", got, sizeof got);
    CHECK(strcmp(got, "criu restore failed: (00.003) Error (criu/y.c:2): the cause") == 0);

    write_log("(00.001) first\n(00.002) Restore finished badly\n"); /* no error line: the last line */
    failed_text("criu restore failed", got, sizeof got);
    CHECK(strcmp(got, "criu restore failed: (00.002) Restore finished badly") == 0);

    write_log("one line without an end"); /* a last line without its newline */
    failed_text("x", got, sizeof got);
    CHECK(strcmp(got, "x: one line without an end") == 0);

    char path[256];
    snprintf(path, sizeof path, "%s/restore.log", dir);
    unlink(path);
    rmdir(dir);
}

/* One input channel whose pipe the test reads as the child would; ctl is a socket pair whose other end
 * the test reads as the stand-in would (for ACKs). */
static int child_end, standin_end;

static void setup_input(void)
{
    int p[2], sp[2];
    CHECK(pipe(p) == 0 && socketpair(AF_UNIX, SOCK_STREAM, 0, sp) == 0);
    fcntl(p[1], F_SETFL, O_NONBLOCK);
    fcntl(p[0], F_SETFL, O_NONBLOCK);
    ctl = sp[0];
    standin_end = sp[1];
    fcntl(standin_end, F_SETFL, O_NONBLOCK);
    n = 1;
    ch[0] = (struct chan){.kind = RFORK_CHANNEL_INPUT, .ours = p[1], .child = p[0]};
    ch[0].pending = malloc(INPUT_CAP);
    CHECK(ch[0].pending != NULL);
    child_end = p[0];
}

/* The stand-in's side: ACK frames that arrived, applied to its window. */
static void read_acks(struct rfork_flow *flow, uint64_t *acked)
{
    while (rfork_recv(standin_end, &frame) == 1) {
        CHECK(frame.type == RFORK_MSG_ACK);
        uint32_t id, bytes;
        memcpy(&id, frame.data, 4);
        memcpy(&bytes, frame.data + 4, 4);
        CHECK(id == 0);
        *acked += bytes;
        rfork_flow_acked(flow, frame.data, frame.len);
    }
}

static void input_flow(void)
{
    setup_input();
    static unsigned char chunk[RFORK_DATA_CHUNK], got[RFORK_DATA_CHUNK];
    struct rfork_flow flow = {0};
    uint64_t sent = 0, received = 0, acked = 0, total = 5 * (uint64_t)RFORK_WINDOW + 12345;
    unsigned char expect = 0;
    int rounds = 0, mismatch = 0;
    /* A sender that keeps to the window and a reader slower than it: all arrives, in order. */
    while (received < total && rounds++ < 1000000) {
        if (sent < total && rfork_flow_open(&flow)) {
            size_t len = total - sent < sizeof chunk ? (size_t)(total - sent) : sizeof chunk;
            for (size_t i = 0; i < len; i++)
                chunk[i] = (unsigned char)(sent + i);
            CHECK(take_input(0, chunk, len, 1) == 0);
            flow.unacked += (uint32_t)len;
            sent += len;
        }
        if (rounds % 3 == 0) {
            ssize_t r = read(child_end, got, 4096);
            for (ssize_t i = 0; i < r; i++)
                mismatch |= got[i] != expect++;
            if (r > 0)
                received += (uint64_t)r;
            flush_input(0); /* the pipe has room again (POLLOUT) */
        }
        read_acks(&flow, &acked);
    }
    CHECK(received == total && !mismatch);
    CHECK(ch[0].plen == 0);
    /* Acknowledged in batches: all but what is left below one batch. */
    CHECK(acked == total - total % RFORK_ACK_EVERY);

    /* A sender past the window is refused loudly: the caller ends the child; nothing is dropped quietly. */
    size_t taken = 0;
    static unsigned char big[RFORK_FRAME_MAX];
    int r = 0, errp[2];
    CHECK(pipe(errp) == 0);
    int saved = dup(2);
    dup2(errp[1], 2);
    while ((r = take_input(0, big, sizeof big - 5, 0)) == 0)
        taken += sizeof big - 5;
    dup2(saved, 2);
    close(saved);
    close(errp[1]);
    char said[512] = "";
    ssize_t sl = read(errp[0], said, sizeof said - 1);
    said[sl > 0 ? sl : 0] = 0;
    close(errp[0]);
    CHECK(r == -1);
    CHECK(strstr(said, "rfork-nsinit: input channel 0 of child ") == said && strstr(said, "beyond its flow-control window"));
    CHECK(taken <= INPUT_CAP && ch[0].plen == taken);
    CHECK(taken + (sizeof big - 5) > INPUT_CAP);
    close(child_end);
    close(ch[0].ours);
    close(ctl);
    close(standin_end);
    free(ch[0].pending);
}

int main(void)
{
    restore_reasons();
    input_flow();
    TEST_DONE("nsinit");
}
