/*
 * intake — connection intake: lingering close and the request-body budget.
 *
 * Every accepted TCP connection goes through intake_accept, which hands it
 * to h2o with a small record of ours (an intake connection) attached. Two
 * jobs are done there, both below h2o's request layer:
 *
 * Lingering close. When h2o answers a request with an error and closes the
 * connection while the client is still sending its body (413 at the
 * request head), closing the socket with unread input makes the kernel
 * send a reset, and a client that writes its whole body before reading
 * (python requests, Triton's sync client) sees "connection reset" instead
 * of the answer. intake_linger keeps a duplicate of the socket's
 * descriptor; once h2o has closed its own, intake shuts down the sending
 * side and reads and discards what the client still sends, until end of
 * file, INTAKE_LINGER_IDLE_MS without a byte, INTAKE_LINGER_TOTAL_MS in
 * all or max(--max-body, INTAKE_LINGER_MIN_BYTES) bytes, then closes.
 * A client that closed first is closed at once.
 *
 * The request-body budget (--max-inflight-body). h2o buffers a whole
 * request body before any handler runs, checking it only against
 * h2o_globalconf_t.max_request_entity_size, which it reads live: at the
 * head of an HTTP/1 request with a Content-Length, on every read of a
 * chunked one, on every HTTP/2 DATA frame. Intake sees each connection's
 * input before h2o does, charges the bodies it will hold to one account
 * and sets that limit, for the connection about to be read, to
 * min(--max-body, budget - what the other connections hold). So h2o itself
 * refuses the request that would pass the budget with its 413, which the
 * error filter (http.c) turns into 503 + Retry-After when the body is
 * within --max-body (intake_refused tells). What is charged:
 *  - HTTP/1, Content-Length: the declared length, from the head (parsed
 *    with libh2o's picohttpparser, as h2o parses it) until h2o starts
 *    reading the next request or closes the connection (a charge, not an
 *    allocation: h2o's buffer grows only as the bytes arrive);
 *  - HTTP/1, chunked: the decoded bytes buffered so far; h2o stops the body
 *    (413, or 503 as above) when it would reach the limit;
 *  - HTTP/2: the DATA bytes of each stream, from frame headers read before
 *    h2o reads them, until the request is disposed (intake_request_started
 *    arranges that), the client resets the stream or h2o refuses it (with
 *    RST_STREAM REFUSED_STREAM: HTTP/2 has no answer to a refused body).
 * Memory for request bodies thus stays within the budget plus at most one
 * read's worth of input per connection. A body decoded from a
 * Content-Encoding (http.c) is charged too, once decoded (intake_hold).
 *
 * h2o installs a socket's read callback anew (h2o_socket_read_start) each
 * time it resumes reading: after every HTTP/1 response, after a
 * 100-continue, on a switch to HTTP/2. To stay in front of every read
 * intake defines h2o_socket_read_start itself, wrapping the callback on
 * its own sockets and calling libh2o's; libh2o calls the function through
 * its procedure linkage table, so the executable's definition is the one
 * bound. The first accepted connection checks that this took; if not, the
 * budget is off and an error is logged.
 *
 * Threads: the loop thread only. Errors: intake_init returns 0 or a
 * negative errno value. Nothing is allocated per read or per HTTP/1
 * request; an HTTP/2 request with a body takes one pool entry for its
 * release hook.
 */
#ifndef CORRAL_INTAKE_H
#define CORRAL_INTAKE_H

#include <h2o.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define INTAKE_LINGER_IDLE_MS 2000
#define INTAKE_LINGER_TOTAL_MS 30000
#define INTAKE_LINGER_MIN_BYTES ((size_t)64 << 20)

/*
 * Sets the module up: conf is h2o's global configuration (not owned; its
 * max_request_entity_size is steered from now on), max_body the
 * per-request limit, max_inflight the budget for all bodies together
 * (at least max_body).
 */
int intake_init(uv_loop_t *loop, h2o_globalconf_t *conf, size_t max_body, size_t max_inflight);

/* A TCP handle for the listener to accept into, initialised on loop. */
uv_tcp_t *intake_tcp_new(uv_loop_t *loop);
/* Closes and frees a handle from intake_tcp_new that was never accepted. */
void intake_tcp_discard(uv_tcp_t *tcp);
/* Hands an accepted connection (from intake_tcp_new) to h2o. */
void intake_accept(h2o_accept_ctx_t *ctx, uv_tcp_t *tcp);

/*
 * Called by the handler for every request it gets: an HTTP/2 request with
 * a body gets a hook on its pool that releases the body's charge. A few
 * comparisons for any other request.
 */
void intake_request_started(h2o_req_t *req);

/*
 * For h2o's own 413: whether it refused req because the budget is spent
 * (the body is within --max-body). Then *held is what the other
 * connections hold and *cap the budget.
 */
int intake_refused(h2o_req_t *req, size_t *held, size_t *cap);

/*
 * Charges n more bytes that req holds (its body, decoded from a
 * Content-Encoding) to the budget until req is disposed. Returns -1, with
 * *held what is charged now and *cap the budget, when they would pass it.
 */
int intake_hold(h2o_req_t *req, size_t n, size_t *held, size_t *cap);

/* h2o answers req and then closes its HTTP/1 connection: linger then. */
void intake_linger(h2o_req_t *req);

/* The default --max-inflight-body: a quarter of memory (of the cgroup's
 * limit when that is lower than physical memory), at least max_body. */
int64_t intake_default_max_inflight(int64_t max_body);

/* ---- pure parts, exposed for tests/unit/test_intake.c ---- */

/* The limit for one connection: min(max_body, cap - others), 0 when others >= cap. */
size_t intake_limit(size_t max_body, size_t cap, size_t others);

enum intake_body { INTAKE_BODY_NONE, INTAKE_BODY_LENGTH, INTAKE_BODY_CHUNKED, INTAKE_BODY_INVALID };

typedef struct intake_head {
    enum intake_body body; /* INVALID: h2o answers 400 or 417 */
    size_t content_length; /* INTAKE_BODY_LENGTH only */
    int expect_continue;   /* h2o sends 100 Continue before it reads the body */
} intake_head;

/*
 * Reads an HTTP/1 request head at buf the way h2o's http1.c does (the
 * first Content-Length counts; any Transfer-Encoding wins). last_len: how
 * much of buf an earlier call saw (0 the first time). Returns the head's
 * length, -2 while incomplete, -1 when buf holds no HTTP/1 request.
 */
int intake_parse_head(const char *buf, size_t len, size_t last_len, intake_head *out);

/* The HTTP/2 streams of one connection that hold or receive a body. */
#define INTAKE_H2_STREAMS 128

typedef struct intake_h2_stream {
    uint32_t id;
    int receiving; /* END_STREAM not seen yet */
    size_t bytes;  /* DATA payload h2o keeps for it */
} intake_h2_stream;

typedef struct intake_h2 {
    int preface;     /* the 24-byte client preface is still ahead */
    int overflow;    /* a stream could not be tracked: no more bodies on this connection */
    uint32_t max_id; /* highest stream id seen */
    size_t count;
    intake_h2_stream streams[INTAKE_H2_STREAMS];
} intake_h2;

/*
 * Follows the complete frames at p (what h2o reads next), predicting h2o's
 * decisions under limit: a stream whose body would pass it is reset by
 * h2o, so it is dropped here.
 */
void intake_h2_walk(intake_h2 *h, const uint8_t *p, size_t len, size_t limit);
/* What the streams hold together. */
size_t intake_h2_held(const intake_h2 *h);
/* The bytes of the only stream still receiving; 0 unless exactly one is. */
size_t intake_h2_allowance(const intake_h2 *h);
/* Drops stream id; returns whether it was tracked. */
int intake_h2_forget(intake_h2 *h, uint32_t id);

#endif
