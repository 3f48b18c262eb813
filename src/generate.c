/*
 * generate — the free-form endpoint, whole or streamed; see generate.h.
 *
 * A stream's pieces wait in a list until h2o takes them (one h2o_send at a
 * time; h2o calls proceed when it is done with the last), and each piece's
 * cost is credited back to the worker only then. h2o may call proceed from
 * inside h2o_send, so pump() never nests.
 */
#include "generate.h"

#include "api.h"
#include "clock.h"
#include "http.h"
#include "inst.h"
#include "proto.h"
#include "sb.h"
#include "xmalloc.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- a whole answer ---- */

static int whole_respond(api_pending *p, int status, const char *msg, uint8_t *body, size_t len)
{
    h2o_req_t *req = p->req;
    if (status != 200) {
        http_error(req, status, status == 503 ? 1 : 0, "%s", msg);
        return 0;
    }
    http_own(req, body);
    const char *metap;
    size_t meta_len, data_len;
    const uint8_t *data;
    json_t *meta = NULL;
    const char *ct;
    if (proto_split_body(body, len, &metap, &meta_len, &data, &data_len) < 0 ||
        !(meta = json_loadb(metap, meta_len, 0, NULL)) ||
        !(ct = json_string_value(json_object_get(meta, "content_type"))) || !*ct || strpbrk(ct, "\r\n")) {
        json_decref(meta);
        http_error(req, 502, 0, "model '%s' instance %d (pid %d) sent a malformed GENERATE_RESULT; it is replaced",
                   model_name(p->model), p->inst_id, p->inst_pid);
        return 1;
    }
    h2o_iovec_t ctv = h2o_strdup(&req->pool, ct, strlen(ct));
    json_decref(meta);
    http_send(req, 200, ctv.base, data, data_len);
    return 0;
}

/* ---- a stream ---- */

typedef enum framing { FRAMING_SSE, FRAMING_NDJSON } framing;

/* One piece of the response: a chunk in its framing, or a heartbeat. */
typedef struct piece {
    struct piece *next;
    uint8_t *body; /* the chunk's frame body, or NULL */
    uint32_t cost; /* credited back to the worker once sent */
    int niov;
    h2o_iovec_t iov[3];
} piece;

#define PUMP_BATCH 64

typedef struct stream_pending {
    api_pending base;
    h2o_generator_t gen;
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
        h2o_iovec_t iov[3 * PUMP_BATCH + 1];
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

static void stream_chunk(api_pending *base, job *j, const job_chunk *c)
{
    stream_pending *s = (stream_pending *)base;
    if (!base->req || s->finished) {
        free(c->body);
        inst_credit(j->inst, j, c->cost);
        return;
    }
    if (c->first)
        start_stream(s, c->events, c->content_type);
    if (!c->events && !c->len) { /* an empty byte chunk carries nothing */
        free(c->body);
        inst_credit(j->inst, j, c->cost);
        return;
    }
    piece *p = xmalloc(sizeof *p);
    p->next = NULL;
    p->body = c->body;
    p->cost = c->cost;
    h2o_iovec_t data = h2o_iovec_init(c->data, c->len);
    if (!c->events) {
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
    *s->tail = p;
    s->tail = &p->next;
    pump(s);
}

static int stream_respond(api_pending *base, job *j, int status, const char *msg, uint8_t *body, size_t len)
{
    (void)j;
    stream_pending *s = (stream_pending *)base;
    if (!s->started) {
        if (status == 200 && body == NULL) /* END before any chunk: an empty event stream */
            start_stream(s, 1, NULL);
        else
            return whole_respond(base, status, msg, body, len); /* a whole answer, or an error before the stream */
    }
    free(body);
    s->ended = 1;
    if (status != 200) {
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
    }
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

void generate_handle(h2o_req_t *req, model *m)
{
    if (registry_draining()) {
        http_error(req, 503, 1, "model '%s': corral is shutting down", model_name(m));
        return;
    }
    const h2o_iovec_t *ctype = NULL;
    ssize_t ci = h2o_find_header(&req->headers, H2O_TOKEN_CONTENT_TYPE, -1);
    if (ci >= 0)
        ctype = &req->headers.entries[ci].value;
    const char *ct = "application/octet-stream";
    size_t ct_len = strlen(ct);
    if (ctype) {
        ct = ctype->base;
        ct_len = ctype->len;
    }
    int priority = 0;
    int ndjson = accepts(req, "application/x-ndjson");
    int stream = ndjson || accepts(req, "text/event-stream");
    /* A JSON body must parse: the model should not have to report our client's syntax errors. */
    if (ct_len >= 16 && strncmp(ct, "application/json", 16) == 0) {
        json_error_t jerr;
        json_t *root = json_loadb(req->entity.base ? req->entity.base : "", req->entity.len, 0, &jerr);
        if (!root) {
            http_error(req, 400, 0, "malformed JSON body for model '%s': %s (line %d, column %d)", model_name(m),
                       jerr.text, jerr.line, jerr.column);
            return;
        }
        json_t *prio = json_object_get(json_object_get(root, "parameters"), "priority");
        const manifest *mf = model_manifest(m);
        int levels = mf ? mf->priority_levels : 1;
        if (prio && (!json_is_integer(prio) || json_integer_value(prio) < 0 || json_integer_value(prio) > levels)) {
            json_decref(root);
            http_error(req, 400, 0,
                       "model '%s': parameters.priority must be an integer from 0 (the model's default) to %d, "
                       "its lowest level",
                       model_name(m), levels);
            return;
        }
        json_t *st = json_is_object(root) ? json_object_get(root, "stream") : NULL;
        if (st && !json_is_boolean(st)) {
            json_decref(root);
            http_error(req, 400, 0, "model '%s': \"stream\" must be true or false", model_name(m));
            return;
        }
        if (st)
            stream = json_is_true(st) || (stream && !json_is_false(st));
        priority = prio ? (int)json_integer_value(prio) : 0;
        json_decref(root);
    }
    sb meta;
    sb_init(&meta, 128);
    sb_adds(&meta, "{\"id\":\"\",\"content_type\":");
    sb_json_str(&meta, ct, ct_len);
    if (stream)
        sb_adds(&meta, ",\"stream\":true");
    sb_addc(&meta, '}');
    job *j = job_new(m, PROTO_GENERATE, priority);
    j->stream = (uint8_t)stream;
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
    s->framing = ndjson ? FRAMING_NDJSON : FRAMING_SSE;
    s->tail = &s->queue;
    s->base.respond = stream_respond;
    s->base.on_chunk = stream_chunk;
    s->base.on_dispose = stream_dispose;
    api_submit(&s->base, j);
}
