/*
 * events — the history and the subscribers; see events.h.
 */
#include "events.h"

#include "clock.h"
#include "http.h"
#include "log.h"
#include "sb.h"
#include "xmalloc.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

typedef struct event {
    uint64_t id;
    char *text; /* the SSE frame, owned */
    size_t len;
} event;

typedef struct sub {
    h2o_req_t *req; /* NULL once disposed */
    h2o_generator_t gen;
    uint64_t cursor; /* the id of the next event to send */
    int sending;     /* an h2o_send is in progress */
    int finished;    /* the final send went out (or the response is stopping) */
    uint64_t last_write_ms;
    sb out;          /* the bytes of the send in progress */
    struct sub *next, *prev;
} sub;

static struct {
    event ring[EVENTS_HISTORY];
    uint64_t next_id; /* the id the next event gets; ids start at 1 */
    sub *subs;
    uv_timer_t heartbeat;
    int heartbeat_init;
    int stopping;
} E = {.next_id = 1};

uint64_t events_last_id(void)
{
    return E.next_id - 1;
}

/* The oldest id still in the history (next_id when it is empty). */
static uint64_t oldest_id(void)
{
    return E.next_id > EVENTS_HISTORY ? E.next_id - EVENTS_HISTORY : 1;
}

/*
 * Once stopping, the history is freed when no subscriber is left to read
 * it: one that was mid-send at events_shutdown still sends what it had not
 * had, and then the end of its stream, at its proceed.
 */
static void free_history_when_done(void)
{
    if (!E.stopping || E.subs)
        return;
    for (size_t i = 0; i < EVENTS_HISTORY; i++) {
        free(E.ring[i].text);
        E.ring[i].text = NULL;
        E.ring[i].len = 0;
    }
}

static void sub_unlink(sub *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else if (E.subs == s)
        E.subs = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->next = s->prev = NULL;
    free_history_when_done();
}

/* Sends what the subscriber has not had yet, one h2o_send at a time. */
static void pump(sub *s, int final)
{
    if (!s->req || s->sending || s->finished)
        return;
    s->out.len = 0;
    h2o_send_state_t state = final ? H2O_SEND_STATE_FINAL : H2O_SEND_STATE_IN_PROGRESS;
    if (s->cursor < oldest_id()) {
        /* It fell out of the history: its events are gone, and it is not kept waiting for more. */
        sb_adds(&s->out, ": events were lost: this subscriber read too slowly; reconnect with Last-Event-ID\n\n");
        state = H2O_SEND_STATE_FINAL;
    } else {
        for (; s->cursor < E.next_id; s->cursor++) {
            const event *e = &E.ring[s->cursor % EVENTS_HISTORY];
            sb_add(&s->out, e->text, e->len);
        }
    }
    if (!s->out.len && state == H2O_SEND_STATE_IN_PROGRESS)
        return;
    h2o_iovec_t buf = h2o_iovec_init(s->out.p, s->out.len);
    s->last_write_ms = now_ms();
    if (state == H2O_SEND_STATE_FINAL) {
        s->finished = 1;
        sub_unlink(s);
    } else {
        s->sending = 1;
    }
    h2o_send(s->req, &buf, 1, state); /* may call proceed at once, or dispose the request */
}

static void on_proceed(h2o_generator_t *g, h2o_req_t *req)
{
    (void)req;
    sub *s = (sub *)((char *)g - offsetof(sub, gen));
    s->sending = 0;
    pump(s, E.stopping);
}

static void on_stop(h2o_generator_t *g, h2o_req_t *req)
{
    (void)req;
    sub *s = (sub *)((char *)g - offsetof(sub, gen));
    s->finished = 1;
    sub_unlink(s);
}

static void sub_dispose(void *ptr)
{
    sub *s = ptr;
    s->req = NULL;
    sub_unlink(s);
    sb_free(&s->out);
}

static void heartbeat_fire(uv_timer_t *t)
{
    uint64_t now = now_ms();
    for (sub *s = E.subs, *next; s; s = next) {
        next = s->next;
        if (s->sending || s->finished || now - s->last_write_ms < EVENTS_HEARTBEAT_MS)
            continue;
        s->out.len = 0;
        sb_adds(&s->out, ": keep-alive\n\n");
        h2o_iovec_t buf = h2o_iovec_init(s->out.p, s->out.len);
        s->sending = 1;
        s->last_write_ms = now;
        h2o_send(s->req, &buf, 1, H2O_SEND_STATE_IN_PROGRESS);
    }
    if (!E.subs)
        uv_timer_stop(t);
}

void events_emit(const char *kind, json_t *data)
{
    if (E.stopping) { /* the streams are ending: nobody would read it */
        json_decref(data);
        return;
    }
    char when[32];
    log_timestamp(when, sizeof when);
    sb b;
    sb_init(&b, 256);
    uint64_t id = E.next_id;
    sb_printf(&b, "id: %llu\nevent: %s\ndata: {\"time\":\"%s\"", (unsigned long long)id, kind, when);
    /* data's members follow "time" (one line: compact JSON escapes every control character). */
    char *rest = json_dumps(data, JSON_COMPACT);
    if (rest && rest[0] == '{' && rest[1] != '}') {
        sb_addc(&b, ',');
        sb_adds(&b, rest + 1);
    } else {
        sb_addc(&b, '}');
    }
    free(rest);
    json_decref(data);
    sb_adds(&b, "\n\n");
    event *e = &E.ring[id % EVENTS_HISTORY];
    free(e->text);
    e->id = id;
    e->text = sb_take(&b, &e->len);
    E.next_id++;
    for (sub *s = E.subs, *next; s; s = next) {
        next = s->next; /* pump may unlink s */
        pump(s, 0);
    }
}

/* The Last-Event-ID header as a number; -1 when absent or not a number. */
static long long last_event_id(h2o_req_t *req)
{
    const h2o_iovec_t *v = http_header(req, "last-event-id");
    if (!v || v->len == 0 || v->len > 20)
        return -1;
    unsigned long long n = 0;
    for (size_t i = 0; i < v->len; i++) {
        if (v->base[i] < '0' || v->base[i] > '9')
            return -1;
        n = n * 10 + (unsigned long long)(v->base[i] - '0');
    }
    return n > (unsigned long long)INT64_MAX ? -1 : (long long)n;
}

void events_handle(h2o_req_t *req)
{
    if (!h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET"))) {
        http_method_not_allowed(req, "GET");
        return;
    }
    if (E.stopping) {
        http_error(req, 503, 1, "corral is shutting down");
        return;
    }
    sub *s = h2o_mem_alloc_shared(&req->pool, sizeof *s, sub_dispose);
    memset(s, 0, sizeof *s);
    s->req = req;
    sb_init(&s->out, 512);
    long long last = last_event_id(req);
    /* After the last one it saw; without one, only events from now on. */
    s->cursor = last < 0 ? E.next_id : (uint64_t)last + 1;
    if (s->cursor > E.next_id)
        s->cursor = E.next_id; /* from the future (an earlier daemon's ids): from now on */
    else if (s->cursor < oldest_id())
        s->cursor = oldest_id(); /* older than the history: from the oldest kept */
    req->res.status = 200;
    req->res.reason = "OK";
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                   H2O_STRLIT("text/event-stream; charset=utf-8"));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-cache"));
    s->gen.proceed = on_proceed;
    s->gen.stop = on_stop;
    s->next = E.subs;
    if (E.subs)
        E.subs->prev = s;
    E.subs = s;
    if (!E.heartbeat_init) {
        uv_timer_init(req->conn->ctx->loop, &E.heartbeat);
        E.heartbeat_init = 1;
    }
    if (!uv_is_active((uv_handle_t *)&E.heartbeat))
        uv_timer_start(&E.heartbeat, heartbeat_fire, 1000, 1000);
    h2o_start_response(req, &s->gen);
    /* The headers and a first line go out now, so the client knows it is subscribed. */
    sb_printf(&s->out, ": corral events; the newest id is %llu\n\n", (unsigned long long)events_last_id());
    h2o_iovec_t buf = h2o_iovec_init(s->out.p, s->out.len);
    s->sending = 1;
    s->last_write_ms = now_ms();
    h2o_send(req, &buf, 1, H2O_SEND_STATE_IN_PROGRESS); /* proceed sends the backlog */
}

void events_shutdown(void)
{
    E.stopping = 1;
    for (sub *s = E.subs, *next; s; s = next) {
        next = s->next;
        if (!s->sending)
            pump(s, 1);
        /* one mid-send gets the rest and its end at its proceed (on_proceed pumps with E.stopping) */
    }
    if (E.heartbeat_init)
        uv_close((uv_handle_t *)&E.heartbeat, NULL);
    free_history_when_done();
}
