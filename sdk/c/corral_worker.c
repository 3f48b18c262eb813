/*
 * corral_worker.c — corral_run(): the worker's life from HELLO to exit, and
 * its threads.
 *
 *   main thread    HELLO, waits for LOAD, runs load, READY, waits for
 *                  SHUTDOWN, joins the workers, runs unload, returns.
 *   health thread  when the daemon gave a health socket (CORRAL_HEALTH_FD):
 *                  answers every PING on it, applies CANCEL and CREDIT
 *                  (corral_stream.c), and exits the process at once when it
 *                  closes (the daemon is gone).
 *   reader thread  reads every frame of the protocol socket; answers PING
 *                  and applies CANCEL and CREDIT there (daemons that give no
 *                  health socket send them there);
 *                  queues INFER, BATCH and GENERATE for the worker threads,
 *                  or, in inline mode, runs them itself. A BATCH is one
 *                  request here: one queue entry, one flight entry under the
 *                  batch's id, one reply.
 *   worker threads `concurrency` of them; each takes a request from the
 *                  queue, runs infer/generate and sends the reply.
 *
 * Inline mode: with a health socket and a concurrency of 1, the reader runs
 * each request itself and no worker thread is started. PONG cannot be late
 * (the health thread answers it) and a request costs no thread hand-off:
 * on a virtual machine each hand-off is a cross-CPU wake-up of tens of
 * microseconds. Without a health socket, model code never runs on the
 * reader, so PONG is never late because a model is busy.
 *
 * Invariants: a request is in `flight` from the moment the reader
 * queues it until just before its reply is written, so a duplicate id from
 * the daemon is caught without racing the daemon's reuse of a finished id.
 * After SHUTDOWN nothing is queued; requests already queued are still
 * answered, then the workers exit.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "corral_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct worker {
    const corral_model_ops *ops; /* owned by the caller of corral_run */
    corral__chan chan;
    corral__chan health; /* valid when has_health */
    int has_health;
    corral__region shm[2]; /* input and output regions; fd -1 when the daemon gave none */
    int inline_mode;     /* set before READY is sent; read by the reader after it */

    pthread_mutex_t mu; /* guards everything below */
    pthread_cond_t main_cond; /* LOAD arrived, or stopping */
    pthread_cond_t work_cond; /* queue grew, or stopping */
    json_t *load_msg;         /* owned until the main thread takes it */
    int load_seen;
    int stopping;
    corral_request *head, *tail; /* owned: requests not yet started */
    corral__flight flight;       /* requests queued or running; its own lock */

    corral_ctx *ctx; /* owned; set before the workers start, read-only after */
    void *state;     /* the model's; set before the workers start */
} worker;

static const char *kind_name(uint8_t type)
{
    return type == PROTO_GENERATE ? "generate" : "infer";
}

/* ---- replies ---- */

/* Encodes and sends the reply to req (which may be NULL for an error reply). */
/*
 * A large result of a request the daemon allowed to answer in shared memory
 * (PROTO_FLAG_SHM_OUT): its tensors (every piece after the meta length and
 * the meta) go into the output region and the frame carries the meta only.
 * Returns the flags to send with.
 */
static uint16_t share_result(worker *w, const corral_request *req, corral__encoded *enc)
{
    if (!req || enc->type != PROTO_INFER_RESULT || !(req->flags & PROTO_FLAG_SHM_OUT) || w->shm[1].fd < 0 ||
        enc->iovcnt < 2)
        return 0;
    size_t total = 0;
    for (int i = 2; i < enc->iovcnt; i++)
        total += enc->iov[i].iov_len;
    if (total < CORRAL__SHM_MIN)
        return 0;
    uint8_t *dst = corral__region_grow(&w->shm[1], total);
    if (!dst)
        return 0; /* the socket still works */
    for (int i = 2; i < enc->iovcnt; i++) {
        memcpy(dst, enc->iov[i].iov_base, enc->iov[i].iov_len);
        dst += enc->iov[i].iov_len;
    }
    enc->iovcnt = 2;
    return PROTO_FLAG_SHM_DATA;
}

/* Sends the encoded reply to request id (req may be NULL for an error reply), which leaves the flight table first. */
static void send_encoded(worker *w, uint64_t id, const corral_request *req, corral__encoded *enc)
{
    uint16_t flags = share_result(w, req, enc);
    corral__flight_remove(&w->flight, id);
    corral__chan_send_flags(&w->chan, enc->type, flags, id, enc->iov, enc->iovcnt);
    corral__encoded_free(enc);
}

static void send_reply(worker *w, uint64_t id, const corral_request *req, corral_response *res)
{
    corral__encoded enc;
    corral__response_encode(res, req, &enc);
    send_encoded(w, id, req, &enc);
}

static void send_error(worker *w, uint64_t id, uint8_t type, int status, const char *err_type, const char *message)
{
    corral_response res;
    corral__response_init(&res, type);
    corral__response_set_error(&res, status, err_type, message);
    send_reply(w, id, NULL, &res);
    corral__response_close(&res);
}

/* ---- worker threads ---- */

/* A callback returned rc != 0 without recording an error: a 500 that names the code. */
static void callback_failed(corral_response *res, const char *callback, int rc)
{
    corral_response_error(res, CORRAL_STATUS_INTERNAL, "ModelError", "%s returned %d%s%s%s", callback, rc,
                          rc < 0 ? " (" : "", rc < 0 ? strerror(-rc) : "", rc < 0 ? ")" : "");
}

/*
 * Runs the callback that answers req in res: generate; infer, which gets a
 * BATCH whole when there is no infer_batch; or infer_batch, alone (n = 1),
 * for an INFER when there is no infer.
 */
static void run_model(worker *w, const corral_request *req, corral_response *res)
{
    const corral_model_ops *ops = w->ops;
    const char *callback = kind_name(req->type);
    int rc;
    if (req->type == PROTO_GENERATE ? ops->generate != NULL : ops->infer != NULL) {
        rc = (req->type == PROTO_GENERATE ? ops->generate : ops->infer)(w->state, req, res);
    } else if (req->type == PROTO_INFER && ops->infer_batch) {
        callback = "infer_batch";
        rc = ops->infer_batch(w->state, &req, &res, 1);
    } else {
        corral_response_error(res, CORRAL_STATUS_BAD_REQUEST, "NotImplemented", "model '%s' does not implement %s",
                              w->ctx->model_name, callback);
        return;
    }
    if (rc != 0 && res->status == 0)
        callback_failed(res, callback, rc);
}

/*
 * A BATCH for infer_batch: one view and one response per request, then one
 * INFER_RESULT with every request's result, or one ERROR (batch_res) when
 * the batch fails as a whole.
 */
static void answer_batch(worker *w, corral_request *batch, corral_response *batch_res)
{
    size_t n = batch->nbatch;
    corral_request **views = corral__batch_views(batch);
    corral_response *res = views ? calloc(n, sizeof *res) : NULL;
    corral_response **each = res ? calloc(n, sizeof *each) : NULL;
    corral__encoded enc;

    if (!each) {
        corral_response_error(batch_res, 500, "MemoryError", "out of memory splitting a batch of %zu requests", n);
        send_reply(w, batch->frame_id, batch, batch_res);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        corral__response_init(&res[i], PROTO_INFER);
        res[i].req = views[i];
        each[i] = &res[i];
    }
    corral__flight_set_views(&w->flight, batch, views, n);
    int rc = w->ops->infer_batch(w->state, (const corral_request *const *)views, each, n);
    corral__flight_set_views(&w->flight, batch, NULL, 0); /* on_cancel runs only while the callback does */
    if (rc != 0) {
        size_t failed = 0;
        for (size_t i = 0; i < n; i++)
            failed += res[i].status != 0;
        if (failed == 0) /* nothing says which request is at fault: all are */
            callback_failed(batch_res, "infer_batch", rc);
        for (size_t i = 0; failed > 0 && i < n; i++)
            if (res[i].status == 0)
                callback_failed(&res[i], "infer_batch", rc);
    }
    corral__response_encode_batch(batch_res, each, n, &enc);
    send_encoded(w, batch->frame_id, batch, &enc);
out:
    for (size_t i = 0; each && i < n; i++)
        corral__response_close(&res[i]);
    free(each);
    free(res);
    corral__batch_views_free(views, n);
}

static void handle_request(worker *w, corral_request *req)
{
    corral_response res;
    const char *what;
    corral__response_init(&res, req->type);
    res.req = req;

    int rc = corral__request_parse(req, &res, &what);
    if (rc == -EPROTO)
        corral__die(CORRAL_EXIT_PROTOCOL, "corral: protocol error: %s %llu: %s", proto_type_name(req->type),
                    (unsigned long long)req->frame_id, what);
    if (rc == 0 && req->type != PROTO_BATCH && corral_request_cancelled(req)) {
        /* Cancelled while it waited here (a pipelined request's deadline, or its client left): never run.
         * (A batch is never pipelined; one cancelled early still gets its per-request answer.) */
        corral__response_set_error(&res, 503, "Cancelled", "cancelled before it started");
        send_reply(w, req->frame_id, req, &res);
    } else if (rc == 0 && req->type == PROTO_BATCH && w->ops->infer_batch) {
        answer_batch(w, req, &res);
    } else {
        if (rc == 0)
            run_model(w, req, &res);
        send_reply(w, req->frame_id, req, &res);
    }
    corral__response_close(&res);
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    for (;;) {
        pthread_mutex_lock(&w->mu);
        while (!w->head && !w->stopping)
            pthread_cond_wait(&w->work_cond, &w->mu);
        corral_request *req = w->head;
        if (!req) {
            pthread_mutex_unlock(&w->mu);
            return NULL;
        }
        w->head = req->next;
        if (!w->head)
            w->tail = NULL;
        pthread_mutex_unlock(&w->mu);
        handle_request(w, req);
        corral__request_free(req);
    }
}

/* ---- reader thread ---- */

static void on_request(worker *w, corral__frame *f)
{
    if (f->h.id == 0)
        corral__die(CORRAL_EXIT_PROTOCOL, "corral: protocol error: %s with id 0", proto_type_name(f->h.type));

    pthread_mutex_lock(&w->mu);
    if (w->stopping) {
        pthread_mutex_unlock(&w->mu);
        send_error(w, f->h.id, f->h.type, 503, "ShuttingDown", "the worker is shutting down");
        return;
    }
    corral_request *req = corral__request_new(f);
    int rc = req ? corral__flight_add(&w->flight, req) : -ENOMEM;
    if (rc == -EEXIST)
        corral__die(CORRAL_EXIT_PROTOCOL, "corral: protocol error: request id %llu is already in flight",
                    (unsigned long long)f->h.id);
    if (rc < 0) {
        pthread_mutex_unlock(&w->mu);
        if (req) { /* give the body back: the reader frees it */
            f->alloc = req->alloc;
            req->alloc = NULL;
            corral__request_free(req);
        }
        send_error(w, f->h.id, f->h.type, 500, "MemoryError", "out of memory queueing the request");
        return;
    }
    corral__request_set_region(req, &w->shm[0]);
    if (w->inline_mode) {
        pthread_mutex_unlock(&w->mu);
        handle_request(w, req);
        corral__request_free(req);
        return;
    }
    if (w->tail)
        w->tail->next = req;
    else
        w->head = req;
    w->tail = req;
    pthread_cond_signal(&w->work_cond);
    pthread_mutex_unlock(&w->mu);
}

static void on_load(worker *w, const corral__frame *f)
{
    json_error_t err;
    json_t *msg = json_loadb((const char *)f->body, f->h.length, 0, &err);
    if (!json_is_object(msg))
        corral__die(CORRAL_EXIT_PROTOCOL, "corral: protocol error: LOAD body is not a JSON object");
    pthread_mutex_lock(&w->mu);
    if (w->load_seen)
        corral__die(CORRAL_EXIT_PROTOCOL, "corral: protocol error: a second LOAD");
    w->load_seen = 1;
    w->load_msg = msg;
    pthread_cond_signal(&w->main_cond);
    pthread_mutex_unlock(&w->mu);
}

static void on_shutdown(worker *w)
{
    corral__chan_peer_may_close(&w->chan);
    pthread_mutex_lock(&w->mu);
    w->stopping = 1;
    pthread_cond_broadcast(&w->main_cond);
    pthread_cond_broadcast(&w->work_cond);
    pthread_mutex_unlock(&w->mu);
}

/* CANCEL or CREDIT, on either socket. */
static void control(worker *w, const corral__frame *f, const char *where)
{
    const char *what;
    if (corral__flight_control(&w->flight, f, &what) < 0)
        corral__die(CORRAL_EXIT_PROTOCOL, "corral: protocol error%s: %s (id %llu, %u-byte body)", where, what,
                    (unsigned long long)f->h.id, f->h.length);
}

/* SEQUENCE_END: id 0, {"sequence_id": integer or string, "reason": string}; sent only when the HELLO asked. */
static void on_sequence_end(worker *w, const corral__frame *f)
{
    json_error_t err;
    json_t *msg = json_loadb((const char *)f->body, f->h.length, 0, &err);
    const json_t *sid = json_object_get(msg, "sequence_id");
    const char *reason = json_string_value(json_object_get(msg, "reason"));
    if (!w->ops->end_sequence || f->h.id != 0 || !reason ||
        !(json_is_string(sid) || (json_is_integer(sid) && json_integer_value(sid) >= 0)))
        corral__die(CORRAL_EXIT_PROTOCOL, "corral: protocol error: SEQUENCE_END (id %llu, %u-byte body) %s",
                    (unsigned long long)f->h.id, f->h.length,
                    w->ops->end_sequence ? "is not {\"sequence_id\", \"reason\"} with id 0" : "was not asked for");
    w->ops->end_sequence(w->state, sid, reason);
    json_decref(msg);
}

static void dispatch(worker *w, corral__frame *f)
{
    switch (f->h.type) {
    case PROTO_PING:
    case PROTO_SHUTDOWN:
        if (f->h.length != 0)
            corral__die(CORRAL_EXIT_PROTOCOL, "corral: protocol error: %s with a %u-byte body",
                        proto_type_name(f->h.type), f->h.length);
        if (f->h.type == PROTO_PING)
            corral__chan_pong(&w->chan, f->h.id);
        else
            on_shutdown(w);
        break;
    case PROTO_LOAD:
        on_load(w, f);
        break;
    case PROTO_INFER:
    case PROTO_BATCH:
    case PROTO_GENERATE:
        on_request(w, f);
        break;
    case PROTO_CANCEL:
    case PROTO_CREDIT:
        control(w, f, "");
        break;
    case PROTO_SEQUENCE_END:
        on_sequence_end(w, f);
        break;
    default:
        corral__die(CORRAL_EXIT_PROTOCOL, "corral: protocol error: unexpected %s frame from the daemon%s",
                    proto_type_name(f->h.type),
                    proto_type_reserved(f->h.type) ? " (reserved, not part of protocol version 1)" : "");
    }
}

/*
 * End-of-file on either socket: the daemon is gone. Exit now, whatever the
 * model is doing, unless a graceful stop is already under way.
 */
static void daemon_gone(worker *w)
{
    pthread_mutex_lock(&w->mu);
    int stopping = w->stopping;
    pthread_mutex_unlock(&w->mu);
    if (!stopping)
        _exit(0);
}

static void *reader_main(void *arg)
{
    worker *w = arg;
    for (;;) {
        corral__frame f;
        const char *what;
        int rc = corral__chan_read(&w->chan, &f, &what);
        if (rc == -ECANCELED)
            return NULL;
        if (rc == 1) {
            daemon_gone(w);
            return NULL;
        }
        if (rc == -ENOMEM && (f.h.type == PROTO_INFER || f.h.type == PROTO_BATCH || f.h.type == PROTO_GENERATE) &&
            f.h.id != 0) {
            send_error(w, f.h.id, f.h.type, 500, "MemoryError", "out of memory receiving the request");
            continue;
        }
        if (rc < 0)
            corral__die(CORRAL_EXIT_PROTOCOL, "corral: protocol error: %s", what ? what : strerror(-rc));
        dispatch(w, &f);
        free(f.alloc);
    }
}

/* ---- health thread ---- */

static void *health_main(void *arg)
{
    worker *w = arg;
    for (;;) {
        corral__frame f;
        const char *what;
        int rc = corral__chan_read(&w->health, &f, &what);
        if (rc == -ECANCELED)
            return NULL;
        if (rc == 1) {
            daemon_gone(w);
            return NULL;
        }
        if (rc < 0)
            corral__die(CORRAL_EXIT_PROTOCOL, "corral: protocol error on the health socket: %s",
                        what ? what : strerror(-rc));
        if (f.h.type == PROTO_CANCEL || f.h.type == PROTO_CREDIT)
            control(w, &f, " on the health socket");
        else if (f.h.type == PROTO_PING && f.h.length == 0)
            corral__chan_pong(&w->health, f.h.id);
        else
            corral__die(CORRAL_EXIT_PROTOCOL, "corral: protocol error: %s frame (%u-byte body) on the health socket",
                        proto_type_name(f.h.type), f.h.length);
        free(f.alloc);
    }
}

/* ---- start-up ---- */

/* The descriptor named by the environment variable var: fd, or a negative errno. */
static int env_fd(const char *var)
{
    const char *fd_text = getenv(var);
    struct stat st;
    char *end;

    if (!fd_text || !*fd_text)
        return -ENOENT;
    long fd = strtol(fd_text, &end, 10);
    if (*end || fd < 0 || fd > 65535) {
        corral_log("corral: %s=%s is not a file descriptor number", var, fd_text);
        return -EINVAL;
    }
    if (fstat((int)fd, &st) < 0 || !S_ISSOCK(st.st_mode)) {
        corral_log("corral: %s=%ld is not an open socket", var, fd);
        return -EBADF;
    }
    return (int)fd;
}

static int protocol_fd(void)
{
    const char *version = getenv("CORRAL_PROTOCOL");
    int fd = env_fd("CORRAL_FD");
    if (fd == -ENOENT)
        corral_log("corral: CORRAL_FD is not set; this program is a corral worker and is started by the daemon");
    if (fd < 0)
        return fd;
    if (version && *version && strcmp(version, "1") != 0) {
        corral_log("corral: the daemon speaks protocol %s; this SDK speaks 1", version);
        return -EPROTONOSUPPORT;
    }
    return fd;
}

static void send_hello(worker *w)
{
    /* stream: this SDK streams GENERATE answers and obeys CANCEL and CREDIT.
     * batch: it takes BATCH, whether or not the model has infer_batch (infer then gets the batch whole). */
    json_t *hello = json_pack("{s:i,s:s,s:s,s:I,s:b,s:b}", "protocol", PROTO_VERSION, "sdk", "c", "sdk_version",
                              CORRAL_SDK_VERSION, "pid", (json_int_t)getpid(), "stream", 1, "batch", 1);
    if (hello && w->shm[0].fd >= 0 && json_object_set_new(hello, "shm", json_true()) < 0) {
        json_decref(hello);
        hello = NULL;
    }
    /* sequence: the model frees per-sequence state when the daemon releases a sequence (end_sequence). */
    if (hello && w->ops->end_sequence && json_object_set_new(hello, "sequence", json_true()) < 0) {
        json_decref(hello);
        hello = NULL;
    }
    if (hello && w->has_health && json_object_set_new(hello, "health_fd", json_integer(w->health.fd)) < 0) {
        json_decref(hello);
        hello = NULL;
    }
    if (!hello)
        corral__die(CORRAL_EXIT_FAILURE, "corral: out of memory");
    corral__chan_send_json(&w->chan, PROTO_HELLO, 0, hello);
    json_decref(hello);
}

/* Tells the daemon that load failed (ERROR with id 0). */
static void send_load_error(worker *w, const char *type, const char *message)
{
    json_t *body = json_pack("{s:s,s:s,s:i}", "type", type, "message", message, "status", 500);
    if (!body)
        corral__die(CORRAL_EXIT_FAILURE, "corral: load failed (%s: %s), and out of memory reporting it", type,
                    message);
    corral__chan_send_json(&w->chan, PROTO_ERROR, 0, body);
    json_decref(body);
}

static void set_stopping(worker *w)
{
    corral__chan_peer_may_close(&w->chan);
    pthread_mutex_lock(&w->mu);
    w->stopping = 1;
    pthread_cond_broadcast(&w->work_cond);
    pthread_mutex_unlock(&w->mu);
}

/* Runs load and answers READY or ERROR; 0 when the model is ready. */
static int load_model(worker *w, json_t *load_msg)
{
    json_t *window = json_object_get(load_msg, "stream_window");
    if (json_is_integer(window) && json_integer_value(window) > 0 && json_integer_value(window) <= UINT32_MAX) {
        pthread_mutex_lock(&w->flight.mu);
        w->flight.window = (uint32_t)json_integer_value(window);
        pthread_mutex_unlock(&w->flight.mu);
    }
    w->ctx = corral__ctx_new(load_msg);
    if (!w->ctx) {
        send_load_error(w, "MemoryError", "out of memory reading LOAD");
        return -ENOMEM;
    }
    int rc = w->ops->load ? w->ops->load(w->ctx, &w->state) : 0;
    if (rc != 0) {
        char fallback[64];
        snprintf(fallback, sizeof fallback, "load returned %d", rc);
        const char *message = w->ctx->error_message ? w->ctx->error_message : fallback;
        const char *type = w->ctx->error_type ? w->ctx->error_type : "LoadError";
        corral_log("corral: model '%s' failed to load: %s: %s", w->ctx->model_name, type, message);
        set_stopping(w); /* the daemon may close the socket as soon as it reads the error */
        send_load_error(w, type, message);
        return -EIO;
    }
    return 0;
}

static void worker_free(worker *w)
{
    while (w->head) {
        corral_request *next = w->head->next;
        corral__request_free(w->head);
        w->head = next;
    }
    json_decref(w->load_msg);
    corral__flight_destroy(&w->flight);
    corral__ctx_free(w->ctx);
    corral__chan_close(&w->chan);
    if (w->has_health)
        corral__chan_close(&w->health);
    corral__regions_close(w->shm);
    pthread_cond_destroy(&w->work_cond);
    pthread_cond_destroy(&w->main_cond);
    pthread_mutex_destroy(&w->mu);
    free(w);
}

int corral_run(const corral_model_ops *ops)
{
    static const corral_model_ops no_ops;
    pthread_t reader, health, *threads = NULL;
    int nthreads = 0, status = CORRAL_EXIT_FAILURE;

    int fd = protocol_fd();
    if (fd < 0)
        return CORRAL_EXIT_FAILURE;
    worker *w = calloc(1, sizeof *w);
    if (!w)
        return CORRAL_EXIT_FAILURE;
    w->ops = ops ? ops : &no_ops;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->main_cond, NULL);
    pthread_cond_init(&w->work_cond, NULL);
    corral__flight_init(&w->flight, &w->chan);
    int rc = corral__chan_init(&w->chan, fd);
    if (rc < 0) {
        corral_log("corral: cannot use CORRAL_FD=%d: %s", fd, strerror(-rc));
        corral__flight_destroy(&w->flight);
        pthread_cond_destroy(&w->work_cond);
        pthread_cond_destroy(&w->main_cond);
        pthread_mutex_destroy(&w->mu);
        free(w);
        return CORRAL_EXIT_FAILURE;
    }

    /* Both optional: without the regions tensors cross the socket, and
     * without the health socket PING comes on the protocol socket. */
    corral__regions_open(w->shm);
    int hfd = env_fd("CORRAL_HEALTH_FD");
    if (hfd >= 0 && hfd != fd && corral__chan_init(&w->health, hfd) == 0)
        w->has_health = 1;

    send_hello(w);
    if (w->has_health && (rc = pthread_create(&health, NULL, health_main, w)) != 0) {
        corral_log("corral: cannot start the health thread: %s", strerror(rc));
        worker_free(w);
        return CORRAL_EXIT_FAILURE;
    }
    rc = pthread_create(&reader, NULL, reader_main, w);
    if (rc != 0) {
        corral_log("corral: cannot start the reader thread: %s", strerror(rc));
        _exit(CORRAL_EXIT_FAILURE); /* the health thread is running: nothing may be freed under it */
    }

    pthread_mutex_lock(&w->mu);
    while (!w->load_msg && !w->stopping)
        pthread_cond_wait(&w->main_cond, &w->mu);
    json_t *load_msg = w->load_msg;
    w->load_msg = NULL;
    pthread_mutex_unlock(&w->mu);
    if (!load_msg) { /* SHUTDOWN before LOAD */
        status = 0;
        goto stop;
    }
    rc = load_model(w, load_msg);
    json_decref(load_msg);
    if (rc < 0)
        goto stop;

    pthread_mutex_lock(&w->mu);
    int stopping = w->stopping;
    w->inline_mode = w->has_health && w->ctx->concurrency == 1;
    pthread_mutex_unlock(&w->mu);
    if (!stopping) {
        json_t *ready = corral__ctx_ready_body(w->ctx);
        if (!ready)
            corral__die(CORRAL_EXIT_FAILURE, "corral: out of memory");
        corral__chan_send_json(&w->chan, PROTO_READY, 0, ready);
        json_decref(ready);
    }

    threads = calloc((size_t)w->ctx->concurrency, sizeof *threads);
    for (int i = 0; threads && !w->inline_mode && i < w->ctx->concurrency; i++, nthreads++) {
        rc = pthread_create(&threads[i], NULL, worker_main, w);
        if (rc != 0) {
            corral_log("corral: started %d of %d worker threads: %s", i, w->ctx->concurrency, strerror(rc));
            break;
        }
    }
    if (nthreads == 0 && !w->inline_mode)
        corral__die(CORRAL_EXIT_FAILURE, "corral: cannot start any worker thread");

    pthread_mutex_lock(&w->mu);
    while (!w->stopping)
        pthread_cond_wait(&w->main_cond, &w->mu);
    pthread_mutex_unlock(&w->mu);
    for (int i = 0; i < nthreads; i++)
        pthread_join(threads[i], NULL);
    free(threads);
    if (w->ops->unload)
        w->ops->unload(w->state);
    status = 0;

stop:
    /* From here an end-of-file from the daemon is expected, not a reason to _exit. */
    set_stopping(w);
    corral__chan_wake(&w->chan);
    pthread_join(reader, NULL);
    if (w->has_health) {
        corral__chan_wake(&w->health);
        pthread_join(health, NULL);
    }
    worker_free(w);
    return status;
}
