/*
 * generate — the free-form endpoint, whole or streamed; see generate.h.
 *
 * A stream's pieces wait in a list until h2o takes them (one h2o_send at a
 * time; h2o calls proceed when it is done with the last), and each piece's
 * cost is credited back to the worker only then. h2o may call proceed from
 * inside h2o_send, so pump() never nests.
 *
 * The Triton flavours differ from /v1 only where a chunk or an answer
 * arrives (stream_chunk, stream_respond): GENERATE_TRITON never starts a
 * stream but holds its one event until END; GENERATE_TRITON_STREAM frames
 * every chunk as an SSE event. When the model's answer does not fit the
 * endpoint, stream_fail lets go of the job (its worker is told to CANCEL)
 * and answers the client at once, so nothing more of the model's reaches
 * the client.
 */
#include "generate.h"

#include "infer.h"

#include "api.h"
#include "clock.h"
#include "http.h"
#include "inst.h"
#include "proto.h"
#include "sb.h"
#include "sessreq.h"
#include "xmalloc.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- a whole answer ---- */

/*
 * The parts of a worker's GENERATE_RESULT (body, already given to the
 * request's pool): the content type it names, copied into the pool, and its
 * data, inside body. Returns 0, or -1 after answering 502 (the instance is
 * then replaced).
 */
static int whole_parts(api_pending *p, uint8_t *body, size_t len, const char **content_type, uint8_t **data,
                       size_t *data_len)
{
    h2o_req_t *req = p->req;
    const char *metap;
    size_t meta_len;
    const uint8_t *d;
    json_t *meta = NULL;
    const char *ct;
    if (proto_split_body(body, len, &metap, &meta_len, &d, data_len) < 0 ||
        !(meta = json_loadb(metap, meta_len, 0, NULL)) ||
        !(ct = json_string_value(json_object_get(meta, "content_type"))) || !*ct || strpbrk(ct, "\r\n")) {
        json_decref(meta);
        http_error(req, 502, 0, "model '%s' instance %d (pid %d) sent a malformed GENERATE_RESULT; it is replaced",
                   model_name(p->model), p->inst_id, p->inst_pid);
        return -1;
    }
    *content_type = h2o_strdup(&req->pool, ct, strlen(ct)).base;
    json_decref(meta);
    *data = (uint8_t *)d; /* inside body, which is ours */
    return 0;
}

/* /v1: the answer goes out as the model made it. */
static int whole_respond(api_pending *p, uint8_t *body, size_t len)
{
    http_own(p->req, body);
    const char *ct;
    uint8_t *data;
    size_t data_len;
    if (whole_parts(p, body, len, &ct, &data, &data_len) < 0)
        return 1;
    http_send(p->req, 200, ct, data, data_len);
    return 0;
}

/* ---- a stream ---- */

typedef enum framing { FRAMING_SSE, FRAMING_NDJSON } framing;

/* A Triton object as iovecs (triton_object), and an SSE event of one: "data: ", the object, "\n\n". */
#define TRITON_IOV 4
#define PIECE_IOV (TRITON_IOV + 2)

/* One piece of the response: a chunk in its framing, or a heartbeat. */
typedef struct piece {
    struct piece *next;
    uint8_t *body; /* the chunk's frame body, or NULL */
    uint32_t cost; /* credited back to the worker once sent */
    int niov;
    h2o_iovec_t iov[PIECE_IOV];
} piece;

#define PUMP_BATCH 64

typedef struct stream_pending {
    api_pending base;
    h2o_generator_t gen;
    generate_flavour flavour;
    framing framing;
    uint8_t started;  /* the response's headers went out with the first chunk */
    uint8_t events;
    uint8_t sending;  /* an h2o_send is in progress */
    uint8_t pumping;
    uint8_t ended;    /* END or an error came: the response ends once the pieces are sent */
    uint8_t failed;
    uint8_t finished; /* the last h2o_send went out */
    piece *queue, **tail; /* waiting for h2o */
    piece *sent;          /* in the send in progress */
    uint32_t sent_cost;
    char *final;          /* the error event that ends a failed event stream; owned */
    size_t final_len;
    uint64_t last_write_ms;
    struct stream_pending *hb_next, *hb_prev; /* the heartbeat list: started SSE streams */
    /* GENERATE_TRITON: the one event so far, held until END (one_body, its frame body, owned) */
    uint8_t *one_body;
    const uint8_t *one_data;
    size_t one_len;
    h2o_iovec_t tags[4]; /* triton_tag's texts, in the request's pool, made when first needed */
} stream_pending;

static stream_pending *heartbeats;
static uv_timer_t heartbeat_timer;
static int heartbeat_init;

static void free_pieces(piece *p)
{
    while (p) {
        piece *next = p->next;
        free(p->body);
        free(p);
        p = next;
    }
}

/* h2o is done with the last send: its pieces go, and their bytes are credited back. */
static void release_sent(stream_pending *s)
{
    free_pieces(s->sent);
    s->sent = NULL;
    job *j = s->base.job; /* NULL once the stream ended: nothing waits for credit */
    if (j && j->inst && s->sent_cost)
        inst_credit(j->inst, j, s->sent_cost);
    s->sent_cost = 0;
}

static void pump(stream_pending *s)
{
    if (s->pumping)
        return;
    s->pumping = 1;
    while (!s->sending && !s->finished && s->base.req && (s->queue || s->ended)) {
        h2o_iovec_t iov[PIECE_IOV * PUMP_BATCH + 1];
        size_t n = 0;
        piece **sent_tail = &s->sent;
        for (int k = 0; k < PUMP_BATCH && s->queue; k++) {
            piece *p = s->queue;
            s->queue = p->next;
            p->next = NULL;
            *sent_tail = p;
            sent_tail = &p->next;
            for (int i = 0; i < p->niov; i++)
                iov[n++] = p->iov[i];
            s->sent_cost += p->cost;
        }
        if (!s->queue)
            s->tail = &s->queue;
        h2o_send_state_t state = H2O_SEND_STATE_IN_PROGRESS;
        if (!s->queue && s->ended) {
            if (s->failed && !s->events) {
                state = H2O_SEND_STATE_ERROR; /* truncated: a byte stream cannot say why */
            } else {
                if (s->final)
                    iov[n++] = h2o_iovec_init(s->final, s->final_len);
                state = H2O_SEND_STATE_FINAL;
            }
        }
        s->last_write_ms = now_ms();
        if (state != H2O_SEND_STATE_IN_PROGRESS) {
            /* The request may be gone when h2o_send returns: nothing of s is touched after it. */
            s->finished = 1;
            s->pumping = 0;
            h2o_send(s->base.req, iov, n, state);
            return;
        }
        s->sending = 1;
        h2o_send(s->base.req, iov, n, state);
    }
    s->pumping = 0;
}

static void on_proceed(h2o_generator_t *g, h2o_req_t *req)
{
    (void)req;
    stream_pending *s = (stream_pending *)((char *)g - offsetof(stream_pending, gen));
    s->sending = 0;
    release_sent(s);
    pump(s);
}

static void on_stop(h2o_generator_t *g, h2o_req_t *req)
{
    (void)req;
    stream_pending *s = (stream_pending *)((char *)g - offsetof(stream_pending, gen));
    s->finished = 1; /* the response is being torn down: nothing more is sent */
}

static void heartbeat_fire(uv_timer_t *t)
{
    uint64_t now = now_ms();
    for (stream_pending *s = heartbeats; s; s = s->hb_next) {
        if (s->sending || s->queue || s->finished || now - s->last_write_ms < GENERATE_HEARTBEAT_MS)
            continue;
        piece *p = xcalloc(1, sizeof *p);
        p->niov = 1;
        p->iov[0] = h2o_iovec_init(H2O_STRLIT(": keep-alive\n\n"));
        *s->tail = p;
        s->tail = &p->next;
        pump(s);
    }
    if (!heartbeats)
        uv_timer_stop(t);
}

static void heartbeat_add(stream_pending *s)
{
    if (!heartbeat_init) {
        uv_timer_init(s->base.req->conn->ctx->loop, &heartbeat_timer);
        heartbeat_init = 1;
    }
    s->hb_next = heartbeats;
    if (heartbeats)
        heartbeats->hb_prev = s;
    heartbeats = s;
    if (!uv_is_active((uv_handle_t *)&heartbeat_timer))
        uv_timer_start(&heartbeat_timer, heartbeat_fire, 1000, 1000);
}

static void heartbeat_remove(stream_pending *s)
{
    if (!s->hb_prev && heartbeats != s)
        return;
    if (s->hb_prev)
        s->hb_prev->hb_next = s->hb_next;
    else
        heartbeats = s->hb_next;
    if (s->hb_next)
        s->hb_next->hb_prev = s->hb_prev;
    s->hb_next = s->hb_prev = NULL;
}

static void stream_dispose(api_pending *base)
{
    stream_pending *s = (stream_pending *)base;
    heartbeat_remove(s);
    free_pieces(s->queue);
    free_pieces(s->sent);
    s->queue = s->sent = NULL;
    free(s->final);
    s->final = NULL;
    free(s->one_body);
    s->one_body = NULL;
}

/* Sends the response's headers: the first chunk says what the stream is. */
static void start_stream(stream_pending *s, int events, const char *content_type)
{
    h2o_req_t *req = s->base.req;
    s->started = 1;
    s->events = (uint8_t)events;
    req->res.status = 200;
    req->res.reason = "OK";
    const char *ct = !events ? content_type
                     : s->framing == FRAMING_NDJSON ? "application/x-ndjson"
                                                    : "text/event-stream; charset=utf-8";
    h2o_iovec_t ctv = h2o_strdup(&req->pool, ct, strlen(ct));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, ctv.base, ctv.len);
    if (events)
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-cache"));
    s->gen.proceed = on_proceed;
    s->gen.stop = on_stop;
    s->last_write_ms = now_ms();
    h2o_start_response(req, &s->gen);
    if (events && s->framing == FRAMING_SSE)
        heartbeat_add(s);
}

/* ---- Triton's objects ---- */

/* Whether a content type is application/json, parameters aside. */
static int is_json_type(const char *ct)
{
    while (*ct == ' ' || *ct == '\t')
        ct++;
    size_t n = strcspn(ct, ";");
    while (n && (ct[n - 1] == ' ' || ct[n - 1] == '\t'))
        n--;
    return n == 16 && strncasecmp(ct, "application/json", 16) == 0;
}

/* What goes after the '{' of an object that lacks model_name (bit 0 of missing) or model_version (bit 1). */
static h2o_iovec_t triton_tag(stream_pending *s, int missing)
{
    assert(missing > 0 && missing < 4);
    if (!s->tags[missing].base) {
        const char *name = model_name(s->base.model);
        sb b;
        sb_init(&b, 64);
        if (missing & 1) {
            sb_adds(&b, "\"model_name\":");
            sb_json_str(&b, name, strlen(name));
        }
        if (missing & 2)
            sb_adds(&b, missing & 1 ? ",\"model_version\":\"1\"" : "\"model_version\":\"1\"");
        s->tags[missing] = h2o_strdup(&s->base.req->pool, b.p, b.len);
        sb_free(&b);
    }
    return s->tags[missing];
}

/*
 * A Triton answer object: the model's JSON text (len bytes at data) with
 * "model_name" and "model_version" put first when the model left them out,
 * as Triton's responses carry them. The model's own bytes go out as they
 * are, in out (at most TRITON_IOV iovecs pointing into data and the pool):
 * nothing is re-serialised, so its numbers and key order survive. Returns
 * the number of iovecs, or -1 when the text is not a JSON object.
 */
static int triton_object(stream_pending *s, const uint8_t *data, size_t len, h2o_iovec_t *out)
{
    json_t *v = json_loadb((const char *)data, len, JSON_ALLOW_NUL, NULL);
    if (!json_is_object(v)) {
        json_decref(v);
        return -1;
    }
    int missing = (json_object_get(v, "model_name") ? 0 : 1) | (json_object_get(v, "model_version") ? 0 : 2);
    int empty = json_object_size(v) == 0;
    json_decref(v);
    if (!missing) {
        out[0] = h2o_iovec_init(data, len);
        return 1;
    }
    size_t brace = 0;
    while (data[brace] != '{') /* only JSON whitespace comes before it: the text parsed as an object */
        brace++;
    int n = 0;
    out[n++] = h2o_iovec_init(data, brace + 1);
    out[n++] = triton_tag(s, missing);
    if (!empty)
        out[n++] = h2o_iovec_init(H2O_STRLIT(","));
    out[n++] = h2o_iovec_init(data + brace + 1, len - brace - 1);
    assert(n <= TRITON_IOV);
    return n;
}

/* ---- chunks and the end ---- */

static void queue_piece(stream_pending *s, piece *p)
{
    *s->tail = p;
    s->tail = &p->next;
}

/* The stream ends with msg: an error event, or for bytes a truncated response. */
static void end_with_error(stream_pending *s, const char *msg)
{
    s->ended = 1;
    s->failed = 1;
    if (s->events) {
        size_t n;
        char *e = http_error_text(&n, "%s", msg);
        const char *pre = s->framing == FRAMING_SSE ? "data: " : "";
        const char *post = s->framing == FRAMING_SSE ? "\n\n" : "\n";
        s->final_len = strlen(pre) + n + strlen(post);
        s->final = xmalloc(s->final_len + 1);
        snprintf(s->final, s->final_len + 1, "%s%s%s", pre, e, post);
        free(e);
    }
    pump(s);
}

/*
 * The model's answer does not fit the endpoint: its job is let go of (the
 * worker told to CANCEL, what it still sends dropped), and the client gets
 * an error response, or the error event that ends a started stream.
 */
static void stream_fail(stream_pending *s, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void stream_fail(stream_pending *s, int status, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (s->base.job)
        s->base.job->failed_status = (uint16_t)status; /* the model failed it, not a departed client */
    api_release_job(&s->base);
    if (s->started) {
        end_with_error(s, msg);
        return;
    }
    s->finished = 1;
    http_error(s->base.req, status, 0, "%s", msg);
}

/* GENERATE_TRITON: a chunk is held, not sent; a second one is the client's mistake. */
static void triton_one_chunk(stream_pending *s, job *j, const job_chunk *c)
{
    const char *name = model_name(s->base.model);
    inst_credit(j->inst, j, c->cost); /* held here, not in the window: the worker must get to its END */
    if (!c->events) {
        free(c->body);
        stream_fail(s, 500,
                    "model '%s' streamed bytes of '%s'; Triton's generate endpoints take JSON objects (events)", name,
                    c->content_type);
        return;
    }
    if (!s->one_body) {
        s->one_body = c->body;
        s->one_data = c->data;
        s->one_len = c->len;
        return;
    }
    free(c->body);
    stream_fail(s, 400,
                "model '%s' produced more than one response; /generate answers with exactly one: use "
                "/v2/models/%s/generate_stream for a model that streams",
                name, name);
}

static void stream_chunk(api_pending *base, job *j, const job_chunk *c)
{
    stream_pending *s = (stream_pending *)base;
    if (!base->req || s->finished) {
        free(c->body);
        inst_credit(j->inst, j, c->cost);
        return;
    }
    if (s->flavour == GENERATE_TRITON) {
        triton_one_chunk(s, j, c);
        return;
    }
    if (!c->events && !c->len && s->flavour == GENERATE_V1) { /* an empty byte chunk carries nothing */
        if (c->first)
            start_stream(s, 0, c->content_type);
        free(c->body);
        inst_credit(j->inst, j, c->cost);
        return;
    }
    piece *p = xmalloc(sizeof *p);
    p->next = NULL;
    p->body = c->body;
    p->cost = c->cost;
    h2o_iovec_t data = h2o_iovec_init(c->data, c->len);
    if (s->flavour == GENERATE_TRITON_STREAM) {
        int n = c->events ? triton_object(s, c->data, c->len, p->iov + 1) : -1;
        if (n < 0) {
            free(p);
            free(c->body);
            inst_credit(j->inst, j, c->cost);
            if (c->events)
                stream_fail(s, 500, "model '%s' streamed an event that is not a JSON object; Triton's generate "
                                    "endpoints take JSON objects", model_name(base->model));
            else
                stream_fail(s, 500,
                            "model '%s' streamed bytes of '%s'; Triton's generate endpoints take JSON objects "
                            "(events)",
                            model_name(base->model), c->content_type);
            return;
        }
        p->iov[0] = h2o_iovec_init(H2O_STRLIT("data: "));
        p->iov[1 + n] = h2o_iovec_init(H2O_STRLIT("\n\n"));
        p->niov = n + 2;
    } else if (!c->events) {
        p->niov = 1;
        p->iov[0] = data;
    } else if (s->framing == FRAMING_NDJSON) {
        p->niov = 2;
        p->iov[0] = data;
        p->iov[1] = h2o_iovec_init(H2O_STRLIT("\n"));
    } else {
        p->niov = 3;
        p->iov[0] = h2o_iovec_init(H2O_STRLIT("data: "));
        p->iov[1] = data;
        p->iov[2] = h2o_iovec_init(H2O_STRLIT("\n\n"));
    }
    if (c->first)
        start_stream(s, c->events, c->content_type);
    queue_piece(s, p);
    pump(s);
}

/*
 * A Triton flavour's whole answer (a GENERATE_RESULT): a JSON object is the
 * response, or generate_stream's one event; any other type is refused.
 */
static int triton_whole(stream_pending *s, job *j, uint8_t *body, size_t len)
{
    h2o_req_t *req = s->base.req;
    const char *name = model_name(s->base.model);
    http_own(req, body);
    const char *ct;
    uint8_t *data;
    size_t data_len;
    if (whole_parts(&s->base, body, len, &ct, &data, &data_len) < 0)
        return 1;
    if (!is_json_type(ct)) {
        sessreq_drop(j->sess); /* the client gets an error: the model's update is not stored */
        http_error(req, 500, 0,
                   "model '%s' answered with content type '%s'; Triton's generate endpoints take one JSON object "
                   "(application/json) or a stream of them",
                   name, ct);
        return 0;
    }
    h2o_iovec_t obj[TRITON_IOV];
    int n = triton_object(s, data, data_len, obj);
    if (n < 0) {
        sessreq_drop(j->sess); /* the client gets an error: the model's update is not stored */
        http_error(req, 500, 0, "model '%s' answered with a body that is not a JSON object; Triton's generate "
                                "endpoints take one JSON object",
                   name);
        return 0;
    }
    if (s->flavour == GENERATE_TRITON) {
        http_sendv(req, 200, "application/json", obj, (size_t)n);
        return 0;
    }
    /* An event is one line. A raw line break in valid JSON lies outside its strings: a space says the same
     * (obj points into data, so it follows). */
    for (size_t i = 0; i < data_len; i++)
        if (data[i] == '\n' || data[i] == '\r')
            data[i] = ' ';
    piece *p = xcalloc(1, sizeof *p); /* its bytes are the pool's (http_own): nothing of its own to free */
    p->iov[0] = h2o_iovec_init(H2O_STRLIT("data: "));
    memcpy(p->iov + 1, obj, (size_t)n * sizeof obj[0]);
    p->iov[1 + n] = h2o_iovec_init(H2O_STRLIT("\n\n"));
    p->niov = n + 2;
    start_stream(s, 1, NULL);
    queue_piece(s, p);
    s->ended = 1;
    pump(s);
    return 0;
}

/* GENERATE_TRITON at END: the one event is the answer. */
static void triton_one_end(stream_pending *s, job *j)
{
    h2o_req_t *req = s->base.req;
    const char *name = model_name(s->base.model);
    if (!s->one_body) {
        sessreq_drop(j->sess); /* the client gets an error: the model's update is not stored */
        http_error(req, 500, 0, "model '%s' ended its stream without a response", name);
        return;
    }
    /* The pool's before anything is sent: the request may be gone once the answer is. */
    http_own(req, s->one_body);
    s->one_body = NULL;
    h2o_iovec_t obj[TRITON_IOV];
    int n = triton_object(s, s->one_data, s->one_len, obj);
    if (n < 0) {
        sessreq_drop(j->sess); /* the client gets an error: the model's update is not stored */
        http_error(req, 500, 0, "model '%s' streamed an event that is not a JSON object; Triton's generate "
                                "endpoints take JSON objects", name);
    } else {
        http_sendv(req, 200, "application/json", obj, (size_t)n);
    }
}

static int stream_respond(api_pending *base, job *j, int status, const char *msg, uint8_t *body, size_t len)
{
    stream_pending *s = (stream_pending *)base;
    if (!s->started) {
        if (status != 200) { /* an error before the stream: an ordinary error response */
            http_error(base->req, status, status == 503 ? 1 : 0, "%s", msg);
            return 0;
        }
        if (body) /* a whole answer */
            return s->flavour == GENERATE_V1 ? whole_respond(base, body, len) : triton_whole(s, j, body, len);
        if (s->flavour == GENERATE_TRITON) {
            triton_one_end(s, j);
            return 0;
        }
        start_stream(s, 1, NULL); /* END before any chunk: an empty event stream */
    }
    free(body);
    if (status != 200) {
        end_with_error(s, msg);
        return 0;
    }
    s->ended = 1;
    pump(s);
    return 0;
}

/* ---- the request ---- */

/* Whether the Accept header names type (a media range, parameters ignored). */
static int accepts(h2o_req_t *req, const char *type)
{
    const h2o_iovec_t *a = http_header(req, "accept");
    size_t n = strlen(type);
    if (!a)
        return 0;
    for (size_t i = 0; i + n <= a->len; i++)
        if (h2o_lcstris(a->base + i, n, type, n) && (i == 0 || a->base[i - 1] == ' ' || a->base[i - 1] == ','))
            return 1;
    return 0;
}

/*
 * A JSON body, parsed with jansson's flags; NULL after answering 400. The
 * model should not have to report our client's syntax errors.
 */
static json_t *parse_body(h2o_req_t *req, model *m, size_t flags)
{
    json_error_t jerr;
    json_t *root = json_loadb(req->entity.base ? req->entity.base : "", req->entity.len, flags, &jerr);
    if (!root)
        http_error(req, 400, 0, "malformed JSON body for model '%s': %s (line %d, column %d)", model_name(m),
                   jerr.text, jerr.line, jerr.column);
    return root;
}

/* parameters.priority of a JSON body, 0 when absent; -1 after answering 400. */
static int body_priority(h2o_req_t *req, model *m, json_t *root)
{
    json_t *prio = json_object_get(json_object_get(root, "parameters"), "priority");
    const manifest *mf = model_manifest(m);
    int levels = mf ? mf->priority_levels : 1;
    if (prio && (!json_is_integer(prio) || json_integer_value(prio) < 0 || json_integer_value(prio) > levels)) {
        http_error(req, 400, 0,
                   "model '%s': parameters.priority must be an integer from 0 (the model's default) to %d, "
                   "its lowest level",
                   model_name(m), levels);
        return -1;
    }
    return prio ? (int)json_integer_value(prio) : 0;
}

/*
 * The session a JSON body names ("session": "ID"), copied into the
 * request's pool, over the Session-Id header's (which any body may use);
 * naming two different ones is a 400. Returns 0, or -1 after answering.
 */
static int body_session(h2o_req_t *req, model *m, json_t *root, h2o_iovec_t *sess)
{
    json_t *v = json_object_get(root, "session");
    if (!v)
        return 0;
    if (!json_is_string(v)) {
        http_error(req, 400, 0, "model '%s': \"session\" must be a string, the id of a session", model_name(m));
        return -1;
    }
    size_t n = json_string_length(v);
    if (sess->base && !h2o_memis(sess->base, sess->len, json_string_value(v), n)) {
        http_error(req, 400, 0, "model '%s': the body's \"session\" and the Session-Id header name different "
                   "sessions", model_name(m));
        return -1;
    }
    *sess = h2o_strdup(&req->pool, json_string_value(v), n);
    return 0;
}

/*
 * /v1: the body goes in whatever type the client sent; a JSON one must
 * parse, and may ask for a stream ("stream": true) as Accept may.
 * Returns 0, or -1 after answering.
 */
static int v1_options(h2o_req_t *req, model *m, const char **ct, size_t *ct_len, int *priority, int *stream,
                      int *ndjson, h2o_iovec_t *sess)
{
    ssize_t ci = h2o_find_header(&req->headers, H2O_TOKEN_CONTENT_TYPE, -1);
    *ct = "application/octet-stream";
    *ct_len = strlen(*ct);
    if (ci >= 0) {
        *ct = req->headers.entries[ci].value.base;
        *ct_len = req->headers.entries[ci].value.len;
    }
    *ndjson = accepts(req, "application/x-ndjson");
    *stream = *ndjson || accepts(req, "text/event-stream");
    if (!(*ct_len >= 16 && strncmp(*ct, "application/json", 16) == 0))
        return 0;
    json_t *root = parse_body(req, m, 0);
    if (!root)
        return -1;
    int rc = *priority = body_priority(req, m, root);
    json_t *st = json_is_object(root) ? json_object_get(root, "stream") : NULL;
    if (rc >= 0 && st && !json_is_boolean(st)) {
        http_error(req, 400, 0, "model '%s': \"stream\" must be true or false", model_name(m));
        rc = -1;
    }
    if (st)
        *stream = json_is_true(st) || (*stream && !json_is_false(st));
    if (rc >= 0)
        rc = body_session(req, m, root, sess);
    json_decref(root);
    return rc < 0 ? -1 : 0;
}

/*
 * Triton's: the body is a JSON object whatever its Content-Type says (a bare
 * curl -d is refused earlier, by access). Its "stream" is the model's
 * business: the endpoint decides, and the worker is always asked for a
 * stream, so that /generate can tell a second response from the first.
 * Returns 0, or -1 after answering.
 */
static int triton_options(h2o_req_t *req, model *m, int *priority, h2o_iovec_t *sess, job *j)
{
    json_t *root = parse_body(req, m, JSON_DECODE_ANY); /* a scalar gets the message below */
    if (!root)
        return -1;
    int rc = 0;
    char why[320];
    if (!json_is_object(root)) {
        http_error(req, 400, 0, "model '%s': the generate request body must be a JSON object", model_name(m));
        rc = -1;
    } else if (infer_sequence_parameters(json_object_get(root, "parameters"), j, why, sizeof why)) {
        /* Triton's sequences, as on infer (docs/sessions.md) */
        http_error(req, 400, 0, "model '%s': %s", model_name(m), why);
        rc = -1;
    } else {
        rc = *priority = body_priority(req, m, root);
        if (rc >= 0)
            rc = body_session(req, m, root, sess);
    }
    json_decref(root);
    return rc < 0 ? -1 : 0;
}

void generate_handle(h2o_req_t *req, model *m, generate_flavour flavour)
{
    if (registry_draining()) {
        http_error(req, 503, 1, "model '%s': corral is shutting down", model_name(m));
        return;
    }
    const char *ct = "application/json";
    size_t ct_len = strlen(ct);
    int priority = 0, stream = 1, ndjson = 0;
    const h2o_iovec_t *hs = http_header(req, "session-id");
    h2o_iovec_t sess = hs ? *hs : h2o_iovec_init(NULL, 0);
    job *j = job_new(m, PROTO_GENERATE, 0);
    if (flavour == GENERATE_V1 ? v1_options(req, m, &ct, &ct_len, &priority, &stream, &ndjson, &sess) < 0
                               : triton_options(req, m, &priority, &sess, j) < 0) {
        job_free(j);
        return;
    }
    j->priority = priority;
    j->stream = (uint8_t)stream;
    char why[300];
    if (sess.base && sessreq_attach(j, sess.base, sess.len, why, sizeof why) < 0) {
        job_free(j);
        http_error(req, 400, 0, "model '%s': the request's session: %s", model_name(m), why);
        return;
    }
    sb meta;
    sb_init(&meta, 128 + (j->sess ? sessreq_meta_size(j->sess) : 0));
    sb_addc(&meta, '{');
    if (j->sess) { /* first, as infer.c puts it (sessreq.h) */
        sessreq_meta(&meta, j->sess);
        sb_addc(&meta, ',');
    }
    sb_adds(&meta, "\"id\":\"\",\"content_type\":");
    sb_json_str(&meta, ct, ct_len);
    if (stream)
        sb_adds(&meta, ",\"stream\":true");
    infer_sequence_meta(&meta, j);
    sb_addc(&meta, '}');
    job_piece body = {(const uint8_t *)req->entity.base, req->entity.len};
    int rc = job_build_frame(j, meta.p, meta.len, &body, 1, NULL);
    size_t total = 4 + meta.len + req->entity.len;
    sb_free(&meta);
    if (rc < 0) {
        job_free(j);
        if (rc == -EFBIG)
            http_error(req, 413, 0, "request body is larger than the protocol's 1 GiB frame limit");
        else
            http_error(req, 503, 1, "model '%s': cannot allocate %zu bytes for the request now", model_name(m), total);
        return;
    }
    stream_pending *s = (stream_pending *)api_pending_new(req, m, sizeof *s);
    s->flavour = flavour;
    s->framing = ndjson ? FRAMING_NDJSON : FRAMING_SSE;
    s->tail = &s->queue;
    s->base.respond = stream_respond;
    s->base.on_chunk = stream_chunk;
    s->base.on_dispose = stream_dispose;
    api_submit(&s->base, j);
}
