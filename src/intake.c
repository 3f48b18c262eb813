/*
 * intake — connection intake: lingering close and the request-body budget;
 * see intake.h for what is charged and why h2o_socket_read_start is
 * defined here.
 *
 * What must stay true:
 *  - I.total is the sum of every live connection's held plus the decoded
 *    bodies requests hold (intake_hold), and held is h1_held plus what the
 *    connection's HTTP/2 streams hold;
 *  - h2o reads max_request_entity_size only while reading a connection,
 *    and each of those reads is preceded, on the loop thread and with
 *    nothing in between, by before_read for that same connection (from
 *    on_read, or from h2o_socket_read_start when h2o resumes reading and
 *    goes on to parse what is already buffered). So the value h2o reads is
 *    always the one computed for the connection it reads;
 *  - an intake connection outlives h2o's socket and every request on it:
 *    h2o disposes its requests, then closes the socket (on_h2o_closed),
 *    then libuv closes the handle (on_tcp_closed), which frees it, or
 *    lingers first.
 */
#include "intake.h"

#include "log.h"
#include "xmalloc.h"

#include <assert.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/*
 * libh2o exports picohttpparser, the parser h2o reads HTTP/1 heads with,
 * but Debian installs no header for it; this is the declaration of
 * deps/picohttpparser/picohttpparser.h in h2o 2.2.5.
 */
struct phr_header {
    const char *name; /* NULL on a folded continuation line */
    size_t name_len;
    const char *value;
    size_t value_len;
};
int phr_parse_request(const char *buf, size_t len, const char **method, size_t *method_len, const char **path,
                      size_t *path_len, int *minor_version, struct phr_header *headers, size_t *num_headers,
                      size_t last_len);

enum intake_proto { PROTO_HTTP1, PROTO_HTTP2 };

typedef struct intake_conn {
    uv_tcp_t tcp;           /* first: h2o's close callback gets this handle */
    h2o_socket_t *sock;     /* h2o's; NULL once h2o closed it */
    h2o_socket_cb h2o_read; /* h2o's read callback, called from on_read */
    void *h1_conn;          /* h2o's HTTP/1 connection (sock->data); a new one there means HTTP/2 */
    enum intake_proto proto;
    int reading;            /* inside on_read */
    size_t held;            /* charged to the budget */
    size_t limit;           /* what h2o was last told for this connection */
    /* HTTP/1: the request at the start of the input */
    int busy;               /* its head has been read */
    size_t scanned;         /* input looked at while the head was incomplete */
    size_t head_len;
    intake_head head;
    size_t h1_held;         /* held for HTTP/1 bodies */
    intake_h2 *h2;          /* HTTP/2 only; owned */
    /* lingering close */
    int linger_fd;          /* a duplicate of the socket's descriptor; -1: none */
    uv_poll_t poll;
    uv_timer_t timer;
    uint64_t linger_since;
    size_t linger_bytes;
    int closing;            /* lingering handles still to close */
} intake_conn;

static struct {
    uv_loop_t *loop;
    h2o_globalconf_t *conf; /* not owned */
    size_t max_body, cap;
    size_t total;           /* held by every connection together */
    size_t linger_max;
    int checked;            /* a connection showed whether the read hook took */
    int off;                /* it did not: no budget */
    void (*read_start)(h2o_socket_t *sock, h2o_socket_cb cb); /* libh2o's */
} I;

/* Lingering reads land here and are dropped (the loop thread only). */
static char linger_scratch[64 << 10];

static void on_read(h2o_socket_t *sock, const char *err);
static void on_h2o_closed(void *data);

/* ---- the pure parts ---- */

size_t intake_limit(size_t max_body, size_t cap, size_t others)
{
    size_t room = cap > others ? cap - others : 0;
    return room < max_body ? room : max_body;
}

int intake_parse_head(const char *buf, size_t len, size_t last_len, intake_head *out)
{
    const char *method, *path;
    size_t method_len, path_len, num_headers = H2O_MAX_HEADERS;
    int minor_version;
    struct phr_header headers[H2O_MAX_HEADERS];
    int n = phr_parse_request(buf, len, &method, &method_len, &path, &path_len, &minor_version, headers, &num_headers,
                              last_len);
    if (n < 0)
        return n;
    const struct phr_header *entity = NULL, *expect = NULL;
    for (size_t i = 0; i < num_headers; i++) {
        const struct phr_header *h = &headers[i];
        if (!h->name)
            continue;
        if (h2o_lcstris(h->name, h->name_len, H2O_STRLIT("transfer-encoding")))
            entity = h;
        else if (h2o_lcstris(h->name, h->name_len, H2O_STRLIT("content-length")) && !entity)
            entity = h;
        else if (h2o_lcstris(h->name, h->name_len, H2O_STRLIT("expect")))
            expect = h;
    }
    out->body = INTAKE_BODY_NONE;
    out->content_length = 0;
    out->expect_continue = 0;
    if (!entity)
        return n; /* h2o looks at Expect only when a body comes */
    if (expect && !h2o_lcstris(expect->value, expect->value_len, H2O_STRLIT("100-continue"))) {
        out->body = INTAKE_BODY_INVALID; /* 417 */
        return n;
    }
    if (entity->name_len == sizeof "transfer-encoding" - 1) {
        out->body = h2o_lcstris(entity->value, entity->value_len, H2O_STRLIT("chunked")) ? INTAKE_BODY_CHUNKED
                                                                                         : INTAKE_BODY_INVALID;
    } else {
        size_t cl = h2o_strtosize(entity->value, entity->value_len);
        out->body = cl == SIZE_MAX ? INTAKE_BODY_INVALID : INTAKE_BODY_LENGTH;
        out->content_length = cl == SIZE_MAX ? 0 : cl;
    }
    out->expect_continue = expect != NULL && out->body != INTAKE_BODY_INVALID;
    return n;
}

#define H2_PREFACE_LEN 24     /* "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" */
#define H2_FRAME_HEADER_LEN 9
#define H2_MAX_FRAME 16384    /* h2o's SETTINGS_MAX_FRAME_SIZE: a longer frame closes the connection */
enum { H2_DATA = 0, H2_HEADERS = 1, H2_RST_STREAM = 3 };
enum { H2_END_STREAM = 0x1, H2_PADDED = 0x8 };

static intake_h2_stream *h2_find(intake_h2 *h, uint32_t id)
{
    for (size_t i = 0; i < h->count; i++)
        if (h->streams[i].id == id)
            return &h->streams[i];
    return NULL;
}

static void h2_drop(intake_h2 *h, intake_h2_stream *s)
{
    *s = h->streams[--h->count];
}

static intake_h2_stream *h2_add(intake_h2 *h, uint32_t id)
{
    if (h->count == INTAKE_H2_STREAMS) {
        h->overflow = 1;
        return NULL;
    }
    intake_h2_stream *s = &h->streams[h->count++];
    s->id = id;
    s->receiving = 1;
    s->bytes = 0;
    return s;
}

/*
 * Mirrors lib/http2/connection.c of h2o 2.2.5: a HEADERS frame without
 * END_STREAM opens a body; handle_data_frame keeps a DATA payload unless
 * the stream's body plus it passes max_request_entity_size, when it resets
 * the stream (REFUSED_STREAM); END_STREAM on DATA or on trailing HEADERS
 * ends the body. Where h2o would close the connection instead, the walk
 * stops: everything is released with the connection.
 */
void intake_h2_walk(intake_h2 *h, const uint8_t *p, size_t len, size_t limit)
{
    if (h->preface) {
        if (len < H2_PREFACE_LEN)
            return;
        p += H2_PREFACE_LEN;
        len -= H2_PREFACE_LEN;
        h->preface = 0;
    }
    while (len >= H2_FRAME_HEADER_LEN) {
        size_t flen = (size_t)p[0] << 16 | (size_t)p[1] << 8 | p[2];
        uint8_t type = p[3], flags = p[4];
        uint32_t id = ((uint32_t)p[5] << 24 | (uint32_t)p[6] << 16 | (uint32_t)p[7] << 8 | p[8]) & 0x7fffffff;
        if (flen > H2_MAX_FRAME || len < H2_FRAME_HEADER_LEN + flen)
            return;
        const uint8_t *payload = p + H2_FRAME_HEADER_LEN;
        intake_h2_stream *s = id ? h2_find(h, id) : NULL;
        if (type == H2_DATA && id) {
            size_t n = flen;
            if (flags & H2_PADDED) {
                if (flen < 1 || flen < 1 + (size_t)payload[0])
                    return;
                n = flen - 1 - payload[0];
            }
            if (!s && id > h->max_id) { /* opened where the walk did not look (an upgrade's leftovers) */
                h->max_id = id;
                s = h2_add(h, id);
            }
            if (s && s->receiving) {
                if (s->bytes + n > limit)
                    h2_drop(h, s);
                else {
                    s->bytes += n;
                    if (flags & H2_END_STREAM)
                        s->receiving = 0;
                }
            }
        } else if (type == H2_HEADERS && id) {
            if (s) { /* trailers */
                if (flags & H2_END_STREAM)
                    s->receiving = 0;
            } else if (id > h->max_id) {
                h->max_id = id;
                if (!(flags & H2_END_STREAM))
                    h2_add(h, id);
            }
        } else if (type == H2_RST_STREAM && s)
            h2_drop(h, s);
        p += H2_FRAME_HEADER_LEN + flen;
        len -= H2_FRAME_HEADER_LEN + flen;
    }
}

size_t intake_h2_held(const intake_h2 *h)
{
    size_t sum = 0;
    for (size_t i = 0; i < h->count; i++)
        sum += h->streams[i].bytes;
    return sum;
}

size_t intake_h2_allowance(const intake_h2 *h)
{
    const intake_h2_stream *only = NULL;
    for (size_t i = 0; i < h->count; i++)
        if (h->streams[i].receiving) {
            if (only)
                return 0;
            only = &h->streams[i];
        }
    return only ? only->bytes : 0;
}

int intake_h2_forget(intake_h2 *h, uint32_t id)
{
    intake_h2_stream *s = h2_find(h, id);
    if (!s)
        return 0;
    h2_drop(h, s);
    return 1;
}

/* ---- the budget ---- */

static void recharge(intake_conn *c)
{
    size_t held = c->h1_held + (c->h2 ? intake_h2_held(c->h2) : 0);
    assert(I.total >= c->held);
    I.total = I.total - c->held + held;
    c->held = held;
}

static intake_conn *conn_of(h2o_socket_t *sock)
{
    return sock->on_close.cb == on_h2o_closed ? sock->on_close.data : NULL;
}

static intake_conn *conn_of_req(h2o_req_t *req)
{
    if (!req->conn || !req->conn->callbacks->get_socket)
        return NULL;
    h2o_socket_t *sock = req->conn->callbacks->get_socket(req->conn);
    return sock ? conn_of(sock) : NULL;
}

static void become_http2(intake_conn *c)
{
    c->proto = PROTO_HTTP2;
    c->busy = 0;
    c->h2 = calloc(1, sizeof *c->h2);
    if (c->h2)
        c->h2->preface = 1;
}

/* The HTTP/1 head at the start of the input, once complete: its body is charged if it fits. */
static void note_head(intake_conn *c)
{
    h2o_buffer_t *in = c->sock->input;
    size_t len = in->size < H2O_MAX_REQLEN ? in->size : H2O_MAX_REQLEN;
    int n = intake_parse_head(in->bytes, len, c->scanned, &c->head);
    if (n == -2) {
        c->scanned = len;
        return;
    }
    c->scanned = 0;
    if (n == -1) {
        /* h2o takes this for HTTP/2 with prior knowledge (lib/http1.c); anything else gets 400 */
        if (I.conf->http1.upgrade_to_http2 && in->size >= 12 && memcmp(in->bytes, "PRI * HTTP/2", 12) == 0)
            become_http2(c);
        return;
    }
    c->busy = 1;
    c->head_len = (size_t)n;
    size_t limit = intake_limit(I.max_body, I.cap, I.total - c->held);
    if (c->head.body != INTAKE_BODY_LENGTH || c->head.content_length > limit)
        return; /* no body, chunked (charged as it comes), or h2o refuses it */
    c->h1_held = c->head.content_length;
    recharge(c);
    /* The charge is the claim; memory is not: h2o's buffer grows as the
     * body's bytes arrive, so a head that claims 900 MB and sends nothing
     * costs nothing (reserving the claim up front once made such a head
     * fatal under an address-space limit). */
}

/* Before h2o reads c's input: charges what it is about to take, sets its limit. */
static void before_read(intake_conn *c)
{
    h2o_buffer_t *in = c->sock->input;
    if (c->proto == PROTO_HTTP1 && !c->busy && in->size)
        note_head(c);
    if (c->proto == PROTO_HTTP2) {
        if (!c->h2) { /* out of memory when it became HTTP/2: no bodies then */
            c->limit = 0;
        } else {
            /* Each stream is checked alone, so with several receiving the
             * limit leaves out what they all hold; with one, what it holds
             * is its own and only the rest counts. */
            c->limit = c->h2->overflow ? 0
                                       : intake_limit(I.max_body, I.cap, I.total - intake_h2_allowance(c->h2));
            intake_h2_walk(c->h2, (const uint8_t *)in->bytes, in->size, c->limit);
            recharge(c);
        }
    } else
        c->limit = intake_limit(I.max_body, I.cap, I.total - c->held);
    I.conf->max_request_entity_size = c->limit;
}

/* After h2o read c's input: a chunked body is charged what h2o decoded so far. */
static void after_read(intake_conn *c)
{
    if (c->proto != PROTO_HTTP1 || !c->busy || c->head.body != INTAKE_BODY_CHUNKED)
        return;
    size_t size = c->sock->input->size;
    c->h1_held = size > c->head_len ? size - c->head_len : 0;
    recharge(c);
}

/* h2o resumes reading c outside on_read: a response is done, a 100 Continue sent, or HTTP/2 begins. */
static void on_resume(intake_conn *c, h2o_socket_t *sock)
{
    if (c->proto == PROTO_HTTP1 && c->h1_conn && sock->data != c->h1_conn)
        become_http2(c); /* Upgrade: h2c; that request's input stays with h2o, and charged, until the close */
    else if (c->proto == PROTO_HTTP1 && c->busy) {
        if (c->head.expect_continue)
            c->head.expect_continue = 0; /* 100 Continue went out; the body comes now */
        else {
            c->busy = 0; /* answered: h2o has dropped the request's input */
            c->h1_held = 0;
            recharge(c);
        }
    }
    before_read(c); /* h2o goes on to parse whatever is buffered already */
}

static void on_read(h2o_socket_t *sock, const char *err)
{
    intake_conn *c = sock->on_close.data;
    if (err) {
        c->h2o_read(sock, err); /* h2o closes the connection */
        return;
    }
    c->reading = 1;
    before_read(c);
    c->h2o_read(sock, NULL);
    if (c->sock)
        after_read(c);
    c->reading = 0;
}

static void (*real_read_start(void))(h2o_socket_t *, h2o_socket_cb)
{
    if (!I.read_start)
        I.read_start = (void (*)(h2o_socket_t *, h2o_socket_cb))dlsym(RTLD_NEXT, "h2o_socket_read_start");
    if (!I.read_start) {
        fprintf(stderr, "corral: can't happen: libh2o has no h2o_socket_read_start (%s)\n", dlerror());
        abort();
    }
    return I.read_start;
}

/*
 * libh2o's h2o_socket_read_start, wrapped: on a socket of ours the read
 * callback h2o asks for is kept and on_read installed in its place.
 */
void h2o_socket_read_start(h2o_socket_t *sock, h2o_socket_cb cb)
{
    intake_conn *c = conn_of(sock);
    if (c) {
        c->h2o_read = cb;
        cb = on_read;
        if (!c->h1_conn)
            c->h1_conn = sock->data;
        if (!c->reading)
            on_resume(c, sock);
    }
    real_read_start()(sock, cb);
}

/* ---- requests ---- */

typedef struct intake_release {
    intake_conn *conn; /* outlives the request */
    uint32_t id;
} intake_release;

static void on_request_disposed(void *p)
{
    intake_release *r = p;
    intake_conn *c = r->conn;
    if (c->h2 && intake_h2_forget(c->h2, r->id))
        recharge(c);
}

void intake_request_started(h2o_req_t *req)
{
    if (req->version < 0x200 || I.off)
        return; /* HTTP/1: released when h2o reads the next request */
    h2o_iovec_t (*stream_id)(h2o_req_t *) = req->conn->callbacks->log_.http2.stream_id;
    intake_conn *c = conn_of_req(req);
    if (!c || !c->h2 || !stream_id)
        return;
    h2o_iovec_t text = stream_id(req);
    uint32_t id = 0;
    for (size_t i = 0; i < text.len && text.base[i] >= '0' && text.base[i] <= '9'; i++)
        id = id * 10 + (uint32_t)(text.base[i] - '0');
    if (!h2_find(c->h2, id))
        return;
    intake_release *r = h2o_mem_alloc_shared(&req->pool, sizeof *r, on_request_disposed);
    r->conn = c;
    r->id = id;
}

static void on_hold_disposed(void *p)
{
    size_t n = *(size_t *)p;
    assert(I.total >= n);
    I.total -= n;
}

int intake_hold(h2o_req_t *req, size_t n, size_t *held, size_t *cap)
{
    if (I.off || n == 0)
        return 0;
    if (I.total > I.cap || n > I.cap - I.total) {
        *held = I.total;
        *cap = I.cap;
        return -1;
    }
    size_t *charge = h2o_mem_alloc_shared(&req->pool, sizeof *charge, on_hold_disposed);
    *charge = n;
    I.total += n;
    return 0;
}

int intake_refused(h2o_req_t *req, size_t *held, size_t *cap)
{
    intake_conn *c = conn_of_req(req);
    if (!c || !c->sock || I.off || c->proto != PROTO_HTTP1 || !c->busy || c->limit >= I.max_body)
        return 0;
    if (c->head.body == INTAKE_BODY_LENGTH) {
        if (c->head.content_length > I.max_body)
            return 0;
    } else if (c->head.body == INTAKE_BODY_CHUNKED) {
        size_t size = c->sock->input->size;
        if (size > c->head_len && size - c->head_len >= I.max_body)
            return 0;
    } else
        return 0;
    *held = I.total - c->held;
    *cap = I.cap;
    return 1;
}

/* ---- lingering close ---- */

void intake_linger(h2o_req_t *req)
{
    if (req->version >= 0x200 || req->http1_is_persistent)
        return;
    intake_conn *c = conn_of_req(req);
    if (!c || !c->sock || c->linger_fd >= 0)
        return;
    int fd = h2o_socket_get_fd(c->sock);
    if (fd >= 0)
        c->linger_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0); /* -1: closed at once, as before */
}

static void on_linger_closed(uv_handle_t *h)
{
    intake_conn *c = h->data;
    if (--c->closing)
        return;
    log_debug("lingering close: %zu bytes read and dropped in %" PRIu64 " ms", c->linger_bytes,
              uv_now(I.loop) - c->linger_since);
    close(c->linger_fd);
    free(c);
}

static void linger_end(intake_conn *c)
{
    if (c->closing)
        return;
    c->closing = 2;
    uv_close((uv_handle_t *)&c->poll, on_linger_closed);
    uv_close((uv_handle_t *)&c->timer, on_linger_closed);
}

static void on_linger_timeout(uv_timer_t *t)
{
    linger_end(t->data);
}

static void on_linger_readable(uv_poll_t *p, int status, int events)
{
    intake_conn *c = p->data;
    (void)events;
    if (status < 0) {
        linger_end(c);
        return;
    }
    for (int i = 0; i < 16; i++) { /* then let the loop run; the poll fires again */
        ssize_t n = recv(c->linger_fd, linger_scratch, sizeof linger_scratch, MSG_DONTWAIT);
        if (n > 0) {
            c->linger_bytes += (size_t)n;
            if (c->linger_bytes > I.linger_max) {
                linger_end(c);
                return;
            }
        } else if (n < 0 && errno == EINTR)
            continue;
        else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        else { /* end of file: the client read the answer and closed; or an error */
            linger_end(c);
            return;
        }
    }
    uint64_t spent = uv_now(I.loop) - c->linger_since;
    if (spent >= INTAKE_LINGER_TOTAL_MS) {
        linger_end(c);
        return;
    }
    uint64_t left = INTAKE_LINGER_TOTAL_MS - spent;
    uv_timer_start(&c->timer, on_linger_timeout, left < INTAKE_LINGER_IDLE_MS ? left : INTAKE_LINGER_IDLE_MS, 0);
}

/* Starts lingering on c->linger_fd; -1 when the socket is to be closed now. */
static int linger_start(intake_conn *c)
{
    char byte;
    ssize_t n = recv(c->linger_fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
        return -1; /* the client closed first, or the connection is broken */
    if (shutdown(c->linger_fd, SHUT_WR) < 0 || uv_poll_init(I.loop, &c->poll, c->linger_fd) < 0)
        return -1;
    uv_timer_init(I.loop, &c->timer);
    c->poll.data = c->timer.data = c;
    c->linger_since = uv_now(I.loop);
    if (uv_poll_start(&c->poll, UV_READABLE, on_linger_readable) < 0) {
        linger_end(c);
        return 0;
    }
    uv_timer_start(&c->timer, on_linger_timeout, INTAKE_LINGER_IDLE_MS, 0);
    return 0;
}

/* ---- connections ---- */

/* h2o closed its socket (it has disposed every request on it). */
static void on_h2o_closed(void *data)
{
    intake_conn *c = data;
    c->sock = NULL;
    c->h1_held = 0;
    free(c->h2);
    c->h2 = NULL;
    recharge(c);
}

/* libuv closed the handle (h2o's socket is freed): linger, or free. */
static void on_tcp_closed(uv_handle_t *h)
{
    intake_conn *c = (intake_conn *)h;
    assert(!c->sock && c->held == 0);
    if (c->linger_fd >= 0 && linger_start(c) == 0)
        return;
    if (c->linger_fd >= 0)
        close(c->linger_fd);
    free(c);
}

uv_tcp_t *intake_tcp_new(uv_loop_t *loop)
{
    intake_conn *c = xcalloc(1, sizeof *c);
    c->linger_fd = -1;
    c->limit = I.max_body;
    uv_tcp_init(loop, &c->tcp);
    return &c->tcp;
}

void intake_tcp_discard(uv_tcp_t *tcp)
{
    uv_close((uv_handle_t *)tcp, on_tcp_closed);
}

void intake_accept(h2o_accept_ctx_t *ctx, uv_tcp_t *tcp)
{
    intake_conn *c = (intake_conn *)tcp;
    h2o_socket_t *sock = h2o_uv_socket_create((uv_stream_t *)tcp, on_tcp_closed);
    c->sock = sock;
    sock->on_close.cb = on_h2o_closed;
    sock->on_close.data = c;
    h2o_accept(ctx, sock);
    if (!I.checked && c->sock) {
        I.checked = 1;
        if (c->sock->_cb.read != on_read) {
            I.off = 1;
            I.conf->max_request_entity_size = I.max_body;
            log_error("libh2o does not call h2o_socket_read_start through its symbol table, so corral cannot see "
                      "request bodies coming: --max-inflight-body is not enforced");
        }
    }
}

int intake_init(uv_loop_t *loop, h2o_globalconf_t *conf, size_t max_body, size_t max_inflight)
{
    I.loop = loop;
    I.conf = conf;
    I.max_body = max_body;
    I.cap = max_inflight < max_body ? max_body : max_inflight;
    I.linger_max = max_body > INTAKE_LINGER_MIN_BYTES ? max_body : INTAKE_LINGER_MIN_BYTES;
    I.read_start = (void (*)(h2o_socket_t *, h2o_socket_cb))dlsym(RTLD_NEXT, "h2o_socket_read_start");
    if (!I.read_start) {
        log_error("cannot find libh2o's h2o_socket_read_start: %s", dlerror());
        return -ENOSYS;
    }
    conf->max_request_entity_size = intake_limit(I.max_body, I.cap, 0);
    log_debug("request bodies: at most %zu bytes each and %zu bytes together", I.max_body, I.cap);
    return 0;
}

int64_t intake_default_max_inflight(int64_t max_body)
{
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    int64_t memory = pages > 0 && page > 0 ? (int64_t)pages * page : 0;
    FILE *f = fopen("/sys/fs/cgroup/memory.max", "r"); /* "max" when unlimited */
    if (f) {
        long long limit;
        if (fscanf(f, "%lld", &limit) == 1 && limit > 0 && (memory == 0 || limit < memory))
            memory = limit;
        fclose(f);
    }
    return memory / 4 > max_body ? memory / 4 : max_body;
}
