/*
 * Unit tests of intake's pure parts: the per-connection limit, reading an
 * HTTP/1 head the way h2o does, and following HTTP/2 frames to know what
 * each stream's body holds.
 */
#include "check.h"
#include "intake.h"

#include <stdint.h>
#include <string.h>

#define MiB ((size_t)1 << 20)

static void limit_is_the_smaller_room(void)
{
    CHECK(intake_limit(3 * MiB, 4 * MiB, 0) == 3 * MiB);
    CHECK(intake_limit(3 * MiB, 4 * MiB, 3 * MiB) == MiB);
    CHECK(intake_limit(3 * MiB, 4 * MiB, 4 * MiB) == 0);
    CHECK(intake_limit(3 * MiB, 4 * MiB, 5 * MiB) == 0); /* over by a read: no room, no wrap-around */
}

static int head(const char *text, intake_head *h)
{
    memset(h, 0x5a, sizeof *h);
    return intake_parse_head(text, strlen(text), 0, h);
}

static void heads_as_h2o_reads_them(void)
{
    intake_head h;
    const char *get = "GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n";
    CHECK(head(get, &h) == (int)strlen(get) && h.body == INTAKE_BODY_NONE && !h.expect_continue);
    CHECK(head("POST /a HTTP/1.1\r\nContent-Length: 3145728\r\n\r\nbody", &h) == 45);
    CHECK(h.body == INTAKE_BODY_LENGTH && h.content_length == 3145728);
    CHECK(head("POST /a HTTP/1.1\r\ncontent-LENGTH: 7\r\nContent-Length: 9\r\n\r\n", &h) > 0);
    CHECK(h.body == INTAKE_BODY_LENGTH && h.content_length == 7); /* the first one counts */
    CHECK(head("POST /a HTTP/1.1\r\nContent-Length: 7\r\nTransfer-Encoding: chunked\r\n\r\n", &h) > 0);
    CHECK(h.body == INTAKE_BODY_CHUNKED); /* Transfer-Encoding wins, wherever it is */
    CHECK(head("POST /a HTTP/1.1\r\nTransfer-Encoding: Chunked\r\nContent-Length: 7\r\n\r\n", &h) > 0);
    CHECK(h.body == INTAKE_BODY_CHUNKED);
    CHECK(head("POST /a HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", &h) > 0 && h.body == INTAKE_BODY_INVALID);
    CHECK(head("POST /a HTTP/1.1\r\nContent-Length: 12x\r\n\r\n", &h) > 0 && h.body == INTAKE_BODY_INVALID);
    CHECK(head("POST /a HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n", &h) > 0);
    CHECK(h.body == INTAKE_BODY_LENGTH && h.expect_continue);
    CHECK(head("POST /a HTTP/1.1\r\nExpect: 200-ok\r\nContent-Length: 5\r\n\r\n", &h) > 0);
    CHECK(h.body == INTAKE_BODY_INVALID); /* 417 */
    CHECK(head("GET /a HTTP/1.1\r\nExpect: 200-ok\r\n\r\n", &h) > 0 && h.body == INTAKE_BODY_NONE);
    CHECK(head("POST /a HTTP/1.1\r\nContent-Length: 5\r\n", &h) == -2);
    CHECK(head("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", &h) == -1); /* h2o's cue for HTTP/2 */
    /* an incremental parse with last_len finds the same head */
    const char *text = "POST /a HTTP/1.1\r\nContent-Length: 11\r\n\r\n";
    CHECK(intake_parse_head(text, 20, 0, &h) == -2);
    CHECK(intake_parse_head(text, strlen(text), 20, &h) == (int)strlen(text) && h.content_length == 11);
}

/* Appends one frame to buf at *len. */
static void frame(uint8_t *buf, size_t *len, uint8_t type, uint8_t flags, uint32_t id, size_t payload_len)
{
    uint8_t *p = buf + *len;
    p[0] = (uint8_t)(payload_len >> 16);
    p[1] = (uint8_t)(payload_len >> 8);
    p[2] = (uint8_t)payload_len;
    p[3] = type;
    p[4] = flags;
    p[5] = (uint8_t)(id >> 24);
    p[6] = (uint8_t)(id >> 16);
    p[7] = (uint8_t)(id >> 8);
    p[8] = (uint8_t)id;
    memset(p + 9, 0, payload_len);
    *len += 9 + payload_len;
}

enum { DATA = 0, HEADERS = 1, RST = 3, SETTINGS = 4 };
enum { END_STREAM = 1, END_HEADERS = 4, PADDED = 8 };

static uint8_t buf[1 << 20];

static void h2_streams_are_followed(void)
{
    static intake_h2 h;
    memset(&h, 0, sizeof h);
    h.preface = 1;
    size_t len = 0;
    memcpy(buf, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 24);
    len = 24;
    frame(buf, &len, SETTINGS, 0, 0, 0);
    frame(buf, &len, HEADERS, END_HEADERS, 1, 20);
    frame(buf, &len, DATA, 0, 1, 16384);
    frame(buf, &len, HEADERS, END_HEADERS | END_STREAM, 3, 20); /* no body: not followed */
    frame(buf, &len, DATA, 0, 1, 1000);
    intake_h2_walk(&h, buf, len, 3 * MiB);
    CHECK(!h.preface && h.count == 1 && intake_h2_held(&h) == 17384);
    CHECK(intake_h2_allowance(&h) == 17384);

    /* an incomplete frame is left for the next read, as h2o leaves it */
    len = 0;
    frame(buf, &len, DATA, END_STREAM, 1, 100);
    intake_h2_walk(&h, buf, len - 1, 3 * MiB);
    CHECK(intake_h2_held(&h) == 17384);
    intake_h2_walk(&h, buf, len, 3 * MiB);
    CHECK(intake_h2_held(&h) == 17484 && intake_h2_allowance(&h) == 0); /* done: no stream receives */

    /* padding is not kept; a second stream receiving: no allowance */
    len = 0;
    frame(buf, &len, HEADERS, END_HEADERS, 5, 10);
    frame(buf, &len, DATA, PADDED, 5, 50);
    buf[len - 50] = 9; /* pad length: 1 + 9 bytes are no body */
    frame(buf, &len, HEADERS, END_HEADERS, 7, 10);
    frame(buf, &len, DATA, 0, 7, 10);
    intake_h2_walk(&h, buf, len, 3 * MiB);
    CHECK(h.count == 3 && intake_h2_held(&h) == 17484 + 40 + 10 && intake_h2_allowance(&h) == 0);

    /* over the limit: h2o resets the stream, and what it held is gone */
    len = 0;
    frame(buf, &len, DATA, 0, 7, 16384);
    intake_h2_walk(&h, buf, len, 16000);
    CHECK(h.count == 2 && intake_h2_held(&h) == 17484 + 40);
    /* later DATA for that stream (in flight when h2o reset it) is dropped by h2o */
    intake_h2_walk(&h, buf, len, 3 * MiB);
    CHECK(h.count == 2 && intake_h2_held(&h) == 17484 + 40);

    /* the client resets a stream; trailers end a body */
    len = 0;
    frame(buf, &len, RST, 0, 5, 4);
    intake_h2_walk(&h, buf, len, 3 * MiB);
    CHECK(h.count == 1 && intake_h2_held(&h) == 17484);
    len = 0;
    frame(buf, &len, HEADERS, END_HEADERS, 9, 10);
    frame(buf, &len, DATA, 0, 9, 5);
    frame(buf, &len, HEADERS, END_HEADERS | END_STREAM, 9, 10);
    intake_h2_walk(&h, buf, len, 3 * MiB);
    CHECK(h.count == 2 && intake_h2_allowance(&h) == 0);

    /* a stream opened unseen (an upgrade's leftovers) is picked up at its first DATA */
    len = 0;
    frame(buf, &len, DATA, 0, 11, 30);
    intake_h2_walk(&h, buf, len, 3 * MiB);
    CHECK(h.count == 3 && h.max_id == 11 && intake_h2_allowance(&h) == 30);

    /* disposed requests */
    CHECK(intake_h2_forget(&h, 1) && !intake_h2_forget(&h, 1));
    CHECK(intake_h2_forget(&h, 9) && intake_h2_held(&h) == 30);

    /* a frame longer than h2o takes ends the walk (h2o closes the connection) */
    len = 0;
    frame(buf, &len, DATA, 0, 11, 16385);
    intake_h2_walk(&h, buf, len, 3 * MiB);
    CHECK(intake_h2_held(&h) == 30);
}

static void h2_table_overflow(void)
{
    static intake_h2 h;
    memset(&h, 0, sizeof h);
    size_t len = 0;
    for (uint32_t i = 0; i <= INTAKE_H2_STREAMS; i++)
        frame(buf, &len, HEADERS, END_HEADERS, 2 * i + 1, 0);
    intake_h2_walk(&h, buf, len, 3 * MiB);
    CHECK(h.count == INTAKE_H2_STREAMS && h.overflow);
}

CHECK_MAIN(CASE(limit_is_the_smaller_room), CASE(heads_as_h2o_reads_them), CASE(h2_streams_are_followed),
           CASE(h2_table_overflow))
