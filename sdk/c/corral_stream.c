/*
 * corral_stream.c — requests in flight and what the daemon says about them
 * while they run: CANCEL (give up) and CREDIT (bytes of a stream passed on
 * to the client), and the streamed answers that CREDIT paces.
 *
 * The reader or health thread applies CANCEL and CREDIT under the flight
 * lock; a model thread in corral_stream_* waits on the flight's condition
 * while its stream's window is full. A request leaves the table just before
 * its final frame is written, so nothing touches it once it is answered.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "corral_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void corral__flight_init(corral__flight *f, corral__chan *chan)
{
    memset(f, 0, sizeof *f);
    pthread_mutex_init(&f->mu, NULL);
    pthread_cond_init(&f->cond, NULL);
    f->chan = chan;
    f->window = PROTO_STREAM_WINDOW;
}

void corral__flight_destroy(corral__flight *f)
{
    free(f->reqs);
    pthread_cond_destroy(&f->cond);
    pthread_mutex_destroy(&f->mu);
}

/* Marks req cancelled (and so its views, which read its flag) and tells whoever waits; under f->mu. */
static void cancel_locked(corral__flight *f, corral_request *req)
{
    if (req->cancelled)
        return;
    __atomic_store_n(&req->cancelled, 1, __ATOMIC_RELEASE);
    if (req->on_cancel)
        req->on_cancel(req->on_cancel_arg);
    for (size_t i = 0; i < req->nviews; i++)
        if (req->views[i]->on_cancel)
            req->views[i]->on_cancel(req->views[i]->on_cancel_arg);
    pthread_cond_broadcast(&f->cond);
}

void corral__flight_set_views(corral__flight *f, corral_request *batch, corral_request **views, size_t n)
{
    pthread_mutex_lock(&f->mu);
    batch->views = views;
    batch->nviews = views ? n : 0;
    pthread_mutex_unlock(&f->mu);
}

int corral__flight_add(corral__flight *f, corral_request *req)
{
    int rc = 0;
    pthread_mutex_lock(&f->mu);
    for (size_t i = 0; i < f->n; i++) {
        if (f->reqs[i]->frame_id == req->frame_id) {
            rc = -EEXIST;
            goto out;
        }
    }
    if (f->n == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 16;
        corral_request **grown = realloc(f->reqs, cap * sizeof *grown);
        if (!grown) {
            rc = -ENOMEM;
            goto out;
        }
        f->reqs = grown;
        f->cap = cap;
    }
    f->reqs[f->n++] = req;
    req->flight = f;
    if (req->frame_id > f->highest)
        f->highest = req->frame_id;
    for (size_t i = 0; i < f->nearly; i++) {
        if (f->early[i] == req->frame_id) {
            f->early[i] = f->early[--f->nearly];
            cancel_locked(f, req);
            break;
        }
    }
out:
    pthread_mutex_unlock(&f->mu);
    return rc;
}

void corral__flight_remove(corral__flight *f, uint64_t id)
{
    pthread_mutex_lock(&f->mu);
    for (size_t i = 0; i < f->n; i++) {
        if (f->reqs[i]->frame_id == id) {
            f->reqs[i]->flight = NULL;
            f->reqs[i] = f->reqs[--f->n];
            break;
        }
    }
    pthread_mutex_unlock(&f->mu);
}

/* Remembers a CANCEL for a request not read yet; when full, the oldest id (the smallest) gives way. */
static void remember_early(corral__flight *f, uint64_t id)
{
    for (size_t i = 0; i < f->nearly; i++)
        if (f->early[i] == id)
            return;
    if (f->nearly < CORRAL__EARLY_CANCELS) {
        f->early[f->nearly++] = id;
        return;
    }
    size_t oldest = 0;
    for (size_t i = 1; i < f->nearly; i++)
        if (f->early[i] < f->early[oldest])
            oldest = i;
    f->early[oldest] = id;
}

int corral__flight_control(corral__flight *f, const corral__frame *fr, const char **what)
{
    uint32_t want = fr->h.type == PROTO_CREDIT ? 4 : 0;
    if (fr->h.id == 0 || fr->h.length != want) {
        *what = fr->h.type == PROTO_CREDIT ? "CREDIT needs a request id and a 4-byte body"
                                           : "CANCEL needs a request id and an empty body";
        return -EPROTO;
    }
    pthread_mutex_lock(&f->mu);
    corral_request *req = NULL;
    for (size_t i = 0; i < f->n && !req; i++)
        if (f->reqs[i]->frame_id == fr->h.id)
            req = f->reqs[i];
    if (!req) {
        /* Answered already (moot), or a CANCEL that overtook its request. */
        if (fr->h.type == PROTO_CANCEL && fr->h.id > f->highest)
            remember_early(f, fr->h.id);
    } else if (fr->h.type == PROTO_CANCEL) {
        cancel_locked(f, req);
    } else {
        uint32_t n = proto_get_u32(fr->body);
        req->unacked = n >= req->unacked ? 0 : req->unacked - n;
        pthread_cond_broadcast(&f->cond);
    }
    pthread_mutex_unlock(&f->mu);
    return 0;
}

/* ---- the model's calls ---- */

int corral_request_streamed(const corral_request *req)
{
    return req && req->stream;
}

int corral_request_cancelled(const corral_request *req)
{
    if (req && req->batch_of) /* one of infer_batch's requests: cancelled with its batch */
        req = req->batch_of;
    return req && __atomic_load_n(&req->cancelled, __ATOMIC_ACQUIRE);
}

void corral_request_on_cancel(const corral_request *req, void (*fn)(void *arg), void *arg)
{
    corral_request *mut = (corral_request *)req; /* control fields are the SDK's, behind const */
    if (!req)
        return;
    /* A view's CANCEL comes to its batch, so the batch's flight lock guards the view's fields. */
    corral__flight *f = req->batch_of ? req->batch_of->flight : req->flight;
    if (f)
        pthread_mutex_lock(&f->mu);
    mut->on_cancel = fn;
    mut->on_cancel_arg = arg;
    if (fn && corral_request_cancelled(req))
        fn(arg);
    if (f)
        pthread_mutex_unlock(&f->mu);
}

int corral_request_sleep(const corral_request *req, int64_t ms)
{
    if (!req || ms < 0)
        return -EINVAL;
    if (req->batch_of) /* one of infer_batch's requests: cancelled with its batch */
        req = req->batch_of;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until); /* the clock pthread_cond_timedwait reads by default */
    until.tv_sec += ms / 1000;
    until.tv_nsec += (ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    corral__flight *f = req->flight;
    if (!f) { /* not in flight (cannot happen in a callback): nothing can cancel it */
        struct timespec d = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
        while (nanosleep(&d, &d) < 0 && errno == EINTR)
            ;
        return 0;
    }
    /* A CANCEL broadcasts the flight's condition (cancel_locked): the sleeper wakes with it. */
    int rc = 0;
    pthread_mutex_lock(&f->mu);
    while (!req->cancelled && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&f->cond, &f->mu, &until);
    int cancelled = req->cancelled;
    pthread_mutex_unlock(&f->mu);
    return cancelled ? -ECANCELED : 0;
}

/* Appends one piece (and a newline for an event) to the answer of a request that is not streamed. */
static int collect(corral_response *res, const void *data, size_t len, int newline)
{
    size_t need = res->body_len + len + (size_t)newline;
    if (len > PROTO_MAX_BODY || need > PROTO_MAX_BODY)
        return -EMSGSIZE;
    if (need > res->collect_cap) {
        size_t cap = res->collect_cap ? res->collect_cap : 4096;
        while (cap < need)
            cap *= 2;
        uint8_t *grown = realloc(res->body_owned, cap);
        if (!grown)
            return -ENOMEM;
        res->body_owned = grown;
        res->body = grown;
        res->collect_cap = cap;
    }
    uint8_t *end = (uint8_t *)res->body_owned + res->body_len;
    if (len)
        memcpy(end, data, len);
    if (newline)
        end[len] = '\n';
    res->body_len = need;
    return 0;
}

/* Waits until cost more bytes fit the stream's window (a chunk alone always fits); -ECANCELED when cancelled. */
static int take_window(const corral_request *req, size_t cost)
{
    corral_request *mut = (corral_request *)req;
    corral__flight *f = req->flight;
    int rc = 0;
    pthread_mutex_lock(&f->mu);
    while (mut->unacked && mut->unacked + cost > f->window && !mut->cancelled)
        pthread_cond_wait(&f->cond, &f->mu);
    if (mut->cancelled)
        rc = -ECANCELED;
    else
        mut->unacked += cost;
    pthread_mutex_unlock(&f->mu);
    return rc;
}

static int stream_send(corral_response *res, int kind, const char *content_type, const void *data, size_t len)
{
    if (!res || !res->req || res->type != PROTO_GENERATE || res->status != 0 || (len > 0 && !data))
        return -EINVAL;
    if ((res->stream_kind == CORRAL__STREAM_NONE && (res->body || res->content_type)) ||
        (res->stream_kind != CORRAL__STREAM_NONE && res->stream_kind != kind))
        return -EINVAL; /* a body was set, or the kinds mix */
    const corral_request *req = res->req;
    if (corral_request_cancelled(req))
        return -ECANCELED;

    int first = res->stream_kind == CORRAL__STREAM_NONE;
    if (first) {
        if (kind == CORRAL__STREAM_BYTES) {
            res->stream_type = strdup(content_type && *content_type ? content_type : "application/octet-stream");
            if (!res->stream_type)
                return -ENOMEM;
        }
        res->stream_kind = kind;
    }
    if (!req->stream || !req->flight)
        return collect(res, data, len, kind == CORRAL__STREAM_EVENTS);

    char *meta = NULL;
    if (first) {
        json_t *m = kind == CORRAL__STREAM_EVENTS ? json_pack("{s:b}", "events", 1)
                                                  : json_pack("{s:s}", "content_type", res->stream_type);
        meta = m ? json_dumps(m, JSON_COMPACT) : NULL;
        json_decref(m);
        if (!meta)
            return -ENOMEM;
    }
    size_t meta_len = meta ? strlen(meta) : 0;
    if (len > PROTO_MAX_BODY - 4 - meta_len) {
        free(meta);
        return -EMSGSIZE;
    }
    int rc = take_window(req, PROTO_HEADER_SIZE + 4 + meta_len + len);
    if (rc < 0) {
        free(meta);
        return rc;
    }
    uint8_t prefix[4];
    proto_put_u32(prefix, (uint32_t)meta_len);
    struct iovec iov[3] = {{.iov_base = prefix, .iov_len = 4},
                           {.iov_base = meta, .iov_len = meta_len},
                           {.iov_base = (void *)data, .iov_len = len}};
    corral__chan_send(req->flight->chan, PROTO_CHUNK, req->frame_id, iov, 3);
    res->streamed = 1;
    free(meta);
    return 0;
}

int corral_stream_write(corral_response *res, const char *content_type, const void *data, size_t len)
{
    return stream_send(res, CORRAL__STREAM_BYTES, content_type, data, len);
}

int corral_stream_event(corral_response *res, const json_t *event)
{
    if (!event)
        return -EINVAL;
    /* Compact output is one line: jansson escapes control characters inside strings. */
    char *line = json_dumps(event, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!line)
        return -ENOMEM;
    int rc = stream_send(res, CORRAL__STREAM_EVENTS, NULL, line, strlen(line));
    free(line);
    return rc;
}
