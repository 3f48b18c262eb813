/*
 * Unit tests of chan, the daemon's frame reader: frames split across any
 * reads, a body read straight into its buffer, memory that follows the
 * data and not the claim, bad headers, pausing and reset.
 */
#include "chan.h"
#include "check.h"

#include <errno.h>
#include <stdlib.h>

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

CHECK_MAIN(CASE(frames_across_any_reads), CASE(memory_follows_the_data), CASE(bad_headers), CASE(pause_keeps_the_rest))
