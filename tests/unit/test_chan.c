/*
 * Unit tests of chan, the daemon's frame reader and writer. Reader: frames
 * split across any reads, a body read straight into its buffer, memory that
 * follows the data and not the claim, bad headers, pausing and reset.
 * Writer, over a real socket pair: a frame larger than the socket buffer is
 * partly queued and arrives whole and in order, a dead peer is reported
 * through on_error, a stopped writer drops frames; held frames go out only
 * at the flush, together and in order, a direct write behind them, and a
 * hold larger than the socket queues the rest of all. (The sanitizer build's
 * leak check vouches that every frame is freed.)
 */
#include "chan.h"
#include "check.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

static int frames, errors, last_err, pause_next;
static uint32_t last_len;
static uint8_t last_first;

static int on_frame(chan_reader *r, const proto_header *h, uint8_t *body)
{
    (void)r;
    frames++;
    last_len = h->length;
    last_first = body ? body[0] : 0;
    free(body);
    if (pause_next) {
        pause_next = 0;
        return 1;
    }
    return 0;
}

static void on_error(chan_reader *r, int err, const char *what)
{
    (void)r;
    (void)what;
    errors++;
    last_err = err;
}

/* Feeds n bytes in reads of at most step bytes. */
static void feed(chan_reader *r, const uint8_t *p, size_t n, size_t step)
{
    while (n) {
        char *base;
        size_t room;
        chan_reader_buffer(r, &base, &room);
        size_t k = room < step ? room : step;
        if (k > n)
            k = n;
        memcpy(base, p, k);
        chan_reader_consume(r, base, k);
        p += k;
        n -= k;
    }
}

static size_t frame(uint8_t *out, uint8_t type, uint64_t id, uint32_t len, uint8_t fill)
{
    proto_header_encode(out, type, id, len);
    memset(out + PROTO_HEADER_SIZE, fill, len);
    return PROTO_HEADER_SIZE + len;
}

static void reset_counts(void)
{
    frames = errors = last_err = pause_next = 0;
    last_len = 0;
    last_first = 0;
}

static void frames_across_any_reads(void)
{
    static uint8_t buf[3 * PROTO_HEADER_SIZE + 10 + 200000];
    size_t n = frame(buf, PROTO_PONG, 1, 0, 0);
    n += frame(buf + n, PROTO_READY, 0, 10, 7);
    n += frame(buf + n, PROTO_INFER_RESULT, 2, 200000, 9);
    size_t steps[] = {1, 7, 16, 4096, 100000};
    for (size_t s = 0; s < sizeof steps / sizeof steps[0]; s++) {
        reset_counts();
        chan_reader r;
        chan_reader_init(&r, PROTO_MAX_BODY, on_frame, on_error, NULL);
        feed(&r, buf, n, steps[s]);
        CHECK(frames == 3 && errors == 0);
        CHECK(last_len == 200000 && last_first == 9);
        chan_reader_close(&r);
    }
}

static void memory_follows_the_data(void)
{
    reset_counts();
    chan_reader r;
    chan_reader_init(&r, PROTO_MAX_BODY, on_frame, on_error, NULL);
    uint8_t head[PROTO_HEADER_SIZE + 100];
    proto_header_encode(head, PROTO_INFER_RESULT, 1, 1u << 30); /* claims 1 GiB */
    memset(head + PROTO_HEADER_SIZE, 0, 100);
    feed(&r, head, sizeof head, sizeof head);
    CHECK(frames == 0 && errors == 0);
    CHECK(r.body_cap <= 64 * 1024);
    static uint8_t more[300000];
    feed(&r, more, sizeof more, 65536);
    CHECK(r.body_cap <= 2 * (sizeof more + 100));
    chan_reader_close(&r);
}

static void bad_headers(void)
{
    reset_counts();
    chan_reader r;
    chan_reader_init(&r, 4096, on_frame, on_error, NULL);
    uint8_t buf[PROTO_HEADER_SIZE * 2];
    proto_header_encode(buf, PROTO_INFER_RESULT, 1, 5000); /* over this reader's limit */
    proto_header_encode(buf + PROTO_HEADER_SIZE, PROTO_PONG, 1, 0);
    feed(&r, buf, sizeof buf, sizeof buf);
    CHECK(errors == 1 && last_err == -EMSGSIZE && frames == 0);
    feed(&r, buf + PROTO_HEADER_SIZE, PROTO_HEADER_SIZE, 16); /* stopped: dropped */
    CHECK(frames == 0 && errors == 1);
    chan_reader_reset(&r);
    feed(&r, buf + PROTO_HEADER_SIZE, PROTO_HEADER_SIZE, 16);
    CHECK(frames == 1);
    buf[4] = 9; /* version 9 */
    feed(&r, buf, PROTO_HEADER_SIZE, 16);
    CHECK(errors == 2 && last_err == -EPROTO);
    chan_reader_close(&r);
}

static void pause_keeps_the_rest(void)
{
    reset_counts();
    chan_reader r;
    chan_reader_init(&r, PROTO_MAX_BODY, on_frame, on_error, NULL);
    uint8_t buf[PROTO_HEADER_SIZE * 3];
    for (int k = 0; k < 3; k++)
        proto_header_encode(buf + k * PROTO_HEADER_SIZE, PROTO_PONG, (uint64_t)k, 0);
    pause_next = 1;
    feed(&r, buf, sizeof buf, sizeof buf);
    CHECK(frames == 1); /* paused after the first: two stay staged */
    uint8_t one[PROTO_HEADER_SIZE];
    proto_header_encode(one, PROTO_PONG, 9, 0);
    feed(&r, one, sizeof one, sizeof one);
    CHECK(frames == 4);
    chan_reader_close(&r);
}

/* ---- writer ---- */

static int write_errors, last_write_err;

static void on_write_error(chan_writer *w, int err)
{
    (void)w;
    write_errors++;
    last_write_err = err;
}

typedef struct pair {
    uv_loop_t loop;
    uv_pipe_t pipe; /* the writer's end */
    int peer;       /* the other end, non-blocking */
    chan_writer w;
} pair;

static void pair_open(pair *p)
{
    int sv[2];
    int small = 16 * 1024;
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    fcntl(sv[1], F_SETFL, O_NONBLOCK);
    uv_loop_init(&p->loop);
    uv_pipe_init(&p->loop, &p->pipe, 0);
    CHECK(uv_pipe_open(&p->pipe, sv[0]) == 0);
    p->peer = sv[1];
    chan_writer_init(&p->w, (uv_stream_t *)&p->pipe, on_write_error, p);
    write_errors = last_write_err = 0;
}

static void pair_close(pair *p)
{
    if (p->peer >= 0)
        close(p->peer);
    uv_close((uv_handle_t *)&p->pipe, NULL);
    uv_run(&p->loop, UV_RUN_DEFAULT);
    CHECK(uv_loop_close(&p->loop) == 0);
}

/* Reads from the peer while running the loop, until n bytes came or nothing moves for a while. */
static size_t drain(pair *p, uint8_t *out, size_t n)
{
    size_t got = 0;
    for (int idle = 0; got < n && idle < 2000; idle++) {
        uv_run(&p->loop, UV_RUN_NOWAIT);
        ssize_t k = read(p->peer, out + got, n - got);
        if (k > 0) {
            got += (size_t)k;
            idle = 0;
        } else {
            usleep(500);
        }
    }
    return got;
}

static void writer_queues_only_the_rest(void)
{
    pair p;
    pair_open(&p);
    size_t big = 1 << 20;
    uint8_t *frame = malloc(PROTO_HEADER_SIZE + big);
    proto_header_encode(frame, PROTO_INFER, 7, (uint32_t)big);
    for (size_t i = 0; i < big; i++)
        frame[PROTO_HEADER_SIZE + i] = (uint8_t)(i * 31);
    chan_writer_write(&p.w, frame, PROTO_HEADER_SIZE + big); /* more than the socket takes at once */
    CHECK(uv_stream_get_write_queue_size((uv_stream_t *)&p.pipe) > 0);
    CHECK(uv_stream_get_write_queue_size((uv_stream_t *)&p.pipe) < big);
    chan_writer_send(&p.w, PROTO_PING, 9, NULL, 0); /* queued behind it: order kept */
    size_t total = 2 * PROTO_HEADER_SIZE + big;
    uint8_t *got = malloc(total);
    CHECK(drain(&p, got, total) == total);
    proto_header h;
    CHECK(proto_header_decode(got, total, PROTO_MAX_BODY, &h) == 0 && h.type == PROTO_INFER && h.id == 7 &&
          h.length == big);
    int same = 1;
    for (size_t i = 0; i < big; i++)
        same &= got[PROTO_HEADER_SIZE + i] == (uint8_t)(i * 31);
    CHECK(same);
    CHECK(proto_header_decode(got + PROTO_HEADER_SIZE + big, PROTO_HEADER_SIZE, PROTO_MAX_BODY, &h) == 0 &&
          h.type == PROTO_PING && h.id == 9 && h.length == 0);
    CHECK(write_errors == 0);
    CHECK(uv_stream_get_write_queue_size((uv_stream_t *)&p.pipe) == 0);
    free(got);
    pair_close(&p);
}

static void writer_reports_a_dead_peer(void)
{
    pair p;
    pair_open(&p);
    close(p.peer);
    p.peer = -1;
    chan_writer_send(&p.w, PROTO_SHUTDOWN, 0, NULL, 0);
    CHECK(write_errors == 1 && last_write_err == UV_EPIPE);
    pair_close(&p);
}

static void stopped_writer_drops_frames(void)
{
    pair p;
    pair_open(&p);
    chan_writer_stop(&p.w);
    chan_writer_send(&p.w, PROTO_LOAD, 0, "{}", 2);
    uint8_t got[64];
    CHECK(drain(&p, got, 1) == 0 && write_errors == 0);
    chan_writer_reset(&p.w);
    chan_writer_send(&p.w, PROTO_LOAD, 0, "{}", 2);
    CHECK(drain(&p, got, PROTO_HEADER_SIZE + 2) == PROTO_HEADER_SIZE + 2);
    CHECK(got[PROTO_HEADER_SIZE] == '{' && write_errors == 0);
    pair_close(&p);
}

static uint8_t *ping_frame(uint64_t id)
{
    uint8_t *f = malloc(PROTO_HEADER_SIZE);
    proto_header_encode(f, PROTO_PING, id, 0);
    return f;
}

/* Held frames go out only at the flush, together, in order; a direct write goes after them. */
static void held_frames_go_out_together_in_order(void)
{
    pair p;
    pair_open(&p);
    CHECK(chan_writer_hold(&p.w, ping_frame(1), PROTO_HEADER_SIZE) == 1);
    CHECK(chan_writer_hold(&p.w, ping_frame(2), PROTO_HEADER_SIZE) == 0);
    CHECK(chan_writer_holding(&p.w));
    uint8_t got[20 * PROTO_HEADER_SIZE];
    CHECK(read(p.peer, got, sizeof got) < 0); /* nothing written yet */
    chan_writer_hold(&p.w, ping_frame(3), PROTO_HEADER_SIZE);
    chan_writer_flush(&p.w);
    CHECK(!chan_writer_holding(&p.w));
    CHECK(drain(&p, got, 3 * PROTO_HEADER_SIZE) == 3 * PROTO_HEADER_SIZE);
    proto_header h;
    for (int i = 0; i < 3; i++)
        CHECK(proto_header_decode(got + i * PROTO_HEADER_SIZE, PROTO_HEADER_SIZE, PROTO_MAX_BODY, &h) == 0 &&
              h.id == (uint64_t)i + 1);
    /* A frame written directly while some are held goes after them. */
    chan_writer_hold(&p.w, ping_frame(4), PROTO_HEADER_SIZE);
    chan_writer_send(&p.w, PROTO_SHUTDOWN, 0, NULL, 0);
    CHECK(!chan_writer_holding(&p.w));
    CHECK(drain(&p, got, 2 * PROTO_HEADER_SIZE) == 2 * PROTO_HEADER_SIZE);
    CHECK(proto_header_decode(got, PROTO_HEADER_SIZE, PROTO_MAX_BODY, &h) == 0 && h.id == 4);
    CHECK(proto_header_decode(got + PROTO_HEADER_SIZE, PROTO_HEADER_SIZE, PROTO_MAX_BODY, &h) == 0 &&
          h.type == PROTO_SHUTDOWN);
    /* More than CHAN_WRITER_HOLD: the full hold is written, the next held anew. */
    for (int i = 0; i <= CHAN_WRITER_HOLD; i++)
        chan_writer_hold(&p.w, ping_frame(100 + (uint64_t)i), PROTO_HEADER_SIZE);
    CHECK(drain(&p, got, CHAN_WRITER_HOLD * PROTO_HEADER_SIZE) == CHAN_WRITER_HOLD * PROTO_HEADER_SIZE);
    CHECK(chan_writer_holding(&p.w));
    chan_writer_flush(&p.w);
    CHECK(drain(&p, got, PROTO_HEADER_SIZE) == PROTO_HEADER_SIZE);
    CHECK(proto_header_decode(got, PROTO_HEADER_SIZE, PROTO_MAX_BODY, &h) == 0 && h.id == 100 + CHAN_WRITER_HOLD);
    /* Stopping drops what is held, unwritten and without an error. */
    chan_writer_hold(&p.w, ping_frame(7), PROTO_HEADER_SIZE);
    chan_writer_stop(&p.w);
    CHECK(!chan_writer_holding(&p.w));
    chan_writer_flush(&p.w);
    CHECK(drain(&p, got, 1) == 0 && write_errors == 0);
    pair_close(&p);
}

/* Held frames larger than the socket takes at once: the rest of all of them is queued, in order. */
static void held_frames_queue_only_the_rest(void)
{
    pair p;
    pair_open(&p);
    size_t big = 256 * 1024;
    for (uint64_t id = 1; id <= 3; id++) {
        uint8_t *f = malloc(PROTO_HEADER_SIZE + big);
        proto_header_encode(f, PROTO_INFER, id, (uint32_t)big);
        memset(f + PROTO_HEADER_SIZE, (int)id, big);
        chan_writer_hold(&p.w, f, PROTO_HEADER_SIZE + big);
    }
    chan_writer_flush(&p.w);
    CHECK(uv_stream_get_write_queue_size((uv_stream_t *)&p.pipe) > 0);
    size_t total = 3 * (PROTO_HEADER_SIZE + big);
    uint8_t *got = malloc(total);
    CHECK(drain(&p, got, total) == total);
    int same = 1;
    for (uint64_t id = 1; id <= 3; id++) {
        const uint8_t *at = got + (id - 1) * (PROTO_HEADER_SIZE + big);
        proto_header h;
        same &= proto_header_decode(at, PROTO_HEADER_SIZE, PROTO_MAX_BODY, &h) == 0 && h.id == id;
        for (size_t i = 0; i < big; i++)
            same &= at[PROTO_HEADER_SIZE + i] == (uint8_t)id;
    }
    CHECK(same && write_errors == 0);
    free(got);
    pair_close(&p);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN); /* as the daemon does: a dead peer is an error, not a signal */
    static const check_case cases[] = {CASE(frames_across_any_reads), CASE(memory_follows_the_data),
                                       CASE(bad_headers), CASE(pause_keeps_the_rest),
                                       CASE(writer_queues_only_the_rest), CASE(writer_reports_a_dead_peer),
                                       CASE(stopped_writer_drops_frames), CASE(held_frames_go_out_together_in_order),
                                       CASE(held_frames_queue_only_the_rest)};
    return check_run(cases, sizeof cases / sizeof cases[0]);
}
