/*
 * grpc_bridge — gRPC's C core behind the loop thread; see grpc_bridge.h.
 *
 * Every operation started on gRPC carries a tag, a gb_op embedded in its
 * call (each kind of operation is outstanding at most once per call, so
 * one embedded op per kind suffices and nothing is allocated per
 * operation). The bridge thread takes completed tags from the completion
 * queue and appends them to a list under a mutex; uv_async_send wakes the
 * loop thread, which takes the whole list at once and acts on each.
 */
#include "grpc_bridge.h"

#include "clock.h"
#include "log.h"
#include "xmalloc.h"

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/time.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Calls asked for at once: each accepted call asks for the next. */
#define GB_ACCEPTS 16

enum op_kind { OP_ACCEPT, OP_RECV, OP_CLOSE, OP_SEND, OP_SHUTDOWN };

typedef struct gb_op {
    struct gb_op *next; /* in the list of completions, while there */
    gb_call *c;
    uint8_t kind;
    int success;
} gb_op;

typedef struct gb_msg {
    struct gb_msg *next;
    grpc_byte_buffer *bb;
    void *arg;
    uint32_t n;
} gb_msg;

struct gb_call {
    grpc_call *call;
    grpc_call_details details;
    grpc_metadata_array md;
    gb_op op_accept, op_recv, op_close, op_send;
    grpc_byte_buffer *recv_buf;
    int cancelled; /* recv_close_on_server's answer */
    uint8_t reading, sending, closed, md_sent, ended;
    uint8_t finishing;     /* the status is decided: it goes after the queue */
    uint8_t status_queued; /* it is in the batch in flight */
    int status;
    grpc_slice status_msg;
    gb_msg *head, *tail;   /* not yet handed to gRPC */
    size_t queued;
    gb_msg *in_flight;     /* the message of the batch in flight */
    grpc_slice *current;   /* the message on_message is handed, while it runs */
    void *data;
    gb_call *next, *prev;  /* every accepted call */
};

/*
 * Memory lent to gRPC by gb_send_parts: its slices point into it, and the
 * last one gRPC lets go of (on whichever thread) hands it back to the loop.
 */
typedef struct gb_hold {
    struct gb_hold *next; /* in the list of holds to release */
    int refs;             /* atomic: the slices still pointing into it */
    void (*release)(void *arg);
    void *arg;
} gb_hold;

static struct {
    uv_loop_t *loop;
    gb_handlers h;
    grpc_server *server;
    grpc_completion_queue *cq;
    pthread_t thread;
    uv_async_t async;
    uv_timer_t grace;
    pthread_mutex_t lock;
    gb_op *done_head, *done_tail; /* completions waiting for the loop thread */
    int async_closed;             /* under lock: async is closed, nobody may wake it */
    gb_hold *holds;               /* memory gRPC has let go of, to hand back on the loop thread */
    gb_op op_shutdown;
    gb_call *calls;               /* accepted, not ended */
    int running, draining, server_gone;
    void (*on_stopped)(void);
} B;

static void *bridge_main(void *arg)
{
    (void)arg;
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(B.cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (ev.type != GRPC_OP_COMPLETE)
            continue;
        gb_op *op = ev.tag;
        op->success = ev.success;
        op->next = NULL;
        pthread_mutex_lock(&B.lock);
        if (B.done_tail)
            B.done_tail->next = op;
        else
            B.done_head = op;
        B.done_tail = op;
        pthread_mutex_unlock(&B.lock);
        uv_async_send(&B.async); /* coalesced: one wake-up for whatever is in the list by then */
    }
    return NULL;
}

static void accept_one(void);

static void call_free(gb_call *c)
{
    for (gb_msg *m = c->head, *next; m; m = next) {
        next = m->next;
        grpc_byte_buffer_destroy(m->bb);
        free(m);
    }
    if (c->call)
        grpc_call_unref(c->call);
    grpc_call_details_destroy(&c->details);
    grpc_metadata_array_destroy(&c->md);
    grpc_slice_unref(c->status_msg);
    free(c);
}

/* The call is over once gRPC has closed it and holds none of its operations. */
static void maybe_end(gb_call *c)
{
    if (!c->closed || c->reading || c->sending || c->ended)
        return;
    c->ended = 1;
    /* messages never sent are answered first: each gb_send gets its on_sent */
    for (gb_msg *m = c->head, *next; m; m = next) {
        next = m->next;
        B.h.on_sent(c, m->arg, m->n, 0);
        grpc_byte_buffer_destroy(m->bb);
        free(m);
    }
    c->head = c->tail = NULL;
    c->queued = 0;
    if (c->prev)
        c->prev->next = c->next;
    else
        B.calls = c->next;
    if (c->next)
        c->next->prev = c->prev;
    B.h.on_end(c, c->cancelled);
    call_free(c);
}

/* Hands the next batch of sends to gRPC: initial metadata once, a message, the status after the last message. */
static void pump(gb_call *c)
{
    if (c->sending || c->closed || c->status_queued)
        return;
    grpc_op ops[3];
    memset(ops, 0, sizeof ops);
    size_t n = 0;
    gb_msg *m = c->head;
    int finish = c->finishing && (!m || !m->next); /* the status goes after everything queued */
    if (!m && !finish)
        return;
    if (!c->md_sent) {
        ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
        c->md_sent = 1;
    }
    if (m) {
        c->head = m->next;
        if (!c->head)
            c->tail = NULL;
        c->queued--;
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n++].data.send_message.send_message = m->bb;
        c->in_flight = m;
    }
    if (finish) {
        ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
        ops[n].data.send_status_from_server.status = (grpc_status_code)c->status;
        ops[n++].data.send_status_from_server.status_details = &c->status_msg;
        c->status_queued = 1;
    }
    c->sending = 1;
    grpc_call_error e = grpc_call_start_batch(c->call, ops, n, &c->op_send, NULL);
    if (e != GRPC_CALL_OK) {
        log_error("grpc: cannot send on a call: %s", grpc_call_error_to_string(e));
        c->sending = 0;
        grpc_call_cancel(c->call, NULL);
    }
}

static void on_recv(gb_call *c, int success)
{
    c->reading = 0;
    grpc_byte_buffer *bb = c->recv_buf;
    c->recv_buf = NULL;
    if (!c->closed) { /* a call already over gets nothing more */
        if (success && bb) {
            /* One slice uncompressed is read where it lies; anything else is joined (and inflated) into one. */
            grpc_slice_buffer *sb = &bb->data.raw.slice_buffer;
            grpc_slice one;
            int ok = 1;
            if (bb->data.raw.compression == GRPC_COMPRESS_NONE && sb->count == 1) {
                one = grpc_slice_ref(sb->slices[0]);
            } else {
                grpc_byte_buffer_reader r;
                ok = grpc_byte_buffer_reader_init(&r, bb);
                if (ok) {
                    one = grpc_byte_buffer_reader_readall(&r);
                    grpc_byte_buffer_reader_destroy(&r);
                }
            }
            if (ok) {
                c->current = &one; /* for gb_keep, during the callback */
                B.h.on_message(c, GRPC_SLICE_START_PTR(one), GRPC_SLICE_LENGTH(one));
                c->current = NULL;
                grpc_slice_unref(one);
            } else {
                gb_finish(c, GB_INTERNAL, "cannot decompress the message");
            }
        } else if (success) {
            B.h.on_message(c, NULL, 0);
        }
    }
    if (bb)
        grpc_byte_buffer_destroy(bb);
    maybe_end(c);
}

static void on_sent_batch(gb_call *c, int success)
{
    c->sending = 0;
    gb_msg *m = c->in_flight;
    c->in_flight = NULL;
    if (m) {
        B.h.on_sent(c, m->arg, m->n, success);
        grpc_byte_buffer_destroy(m->bb);
        free(m);
    }
    if (!success && !c->closed)
        grpc_call_cancel(c->call, NULL);
    pump(c);
    maybe_end(c);
}

static void on_accepted(gb_call *c, int success)
{
    if (!success) { /* the server is shutting down: the call was never made */
        call_free(c);
        return;
    }
    if (!B.draining)
        accept_one();
    c->next = B.calls;
    if (B.calls)
        B.calls->prev = c;
    B.calls = c;
    /* Close first: it completes when the call is over, answered or cancelled. */
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &c->cancelled;
    if (grpc_call_start_batch(c->call, &op, 1, &c->op_close, NULL) != GRPC_CALL_OK) {
        c->closed = 1;
        c->cancelled = 1;
        maybe_end(c);
        return;
    }
    uint64_t deadline = 0;
    gpr_timespec d = c->details.deadline;
    if (d.tv_sec != INT64_MAX) { /* gpr_inf_future: no deadline */
        gpr_timespec left = gpr_time_sub(d, gpr_now(d.clock_type));
        int64_t ms = gpr_time_to_millis(left);
        deadline = now_ms() + (uint64_t)(ms > 0 ? ms : 0);
        if (deadline == 0)
            deadline = 1;
    }
    const char *auth = NULL;
    size_t auth_len = 0;
    for (size_t i = 0; i < c->md.count; i++) {
        grpc_slice k = c->md.metadata[i].key;
        if (GRPC_SLICE_LENGTH(k) == 13 && memcmp(GRPC_SLICE_START_PTR(k), "authorization", 13) == 0) {
            auth = (const char *)GRPC_SLICE_START_PTR(c->md.metadata[i].value);
            auth_len = GRPC_SLICE_LENGTH(c->md.metadata[i].value);
            break; /* the first, as HTTP's header is taken */
        }
    }
    B.h.on_call(c, (const char *)GRPC_SLICE_START_PTR(c->details.method), GRPC_SLICE_LENGTH(c->details.method),
                deadline, auth, auth_len);
}

static void finish_stop(void)
{
    pthread_join(B.thread, NULL);
    /* what arrived after the loop last looked: a call's last operations */
    uv_async_send(&B.async);
}

static void on_closed_handle(uv_handle_t *h)
{
    (void)h;
    void (*cb)(void) = B.on_stopped;
    B.on_stopped = NULL;
    if (cb)
        cb();
}

static void on_async(uv_async_t *a)
{
    (void)a;
    pthread_mutex_lock(&B.lock);
    gb_op *op = B.done_head;
    B.done_head = B.done_tail = NULL;
    struct gb_hold *holds = B.holds;
    B.holds = NULL;
    pthread_mutex_unlock(&B.lock);
    while (holds) {
        struct gb_hold *next = holds->next;
        holds->release(holds->arg);
        free(holds);
        holds = next;
    }
    while (op) {
        gb_op *next = op->next; /* op may be freed along with its call */
        gb_call *c = op->c;
        switch (op->kind) {
        case OP_ACCEPT: on_accepted(c, op->success); break;
        case OP_RECV: on_recv(c, op->success); break;
        case OP_SEND: on_sent_batch(c, op->success); break;
        case OP_CLOSE:
            c->closed = 1;
            maybe_end(c);
            break;
        case OP_SHUTDOWN:
            /* every call has ended: the queue can go, and with it the thread */
            B.server_gone = 1;
            grpc_server_destroy(B.server);
            B.server = NULL;
            grpc_completion_queue_shutdown(B.cq);
            break;
        }
        op = next;
    }
    if (B.server_gone && B.running == 1) {
        B.running = 2; /* the thread ends once the queue has delivered its shutdown */
        finish_stop();
    } else if (B.running == 2) {
        B.running = 0;
        grpc_completion_queue_destroy(B.cq);
        B.cq = NULL;
        uv_timer_stop(&B.grace);
        uv_close((uv_handle_t *)&B.grace, NULL);
        pthread_mutex_lock(&B.lock);
        B.async_closed = 1;
        pthread_mutex_unlock(&B.lock);
        uv_close((uv_handle_t *)&B.async, on_closed_handle);
    }
}

static void accept_one(void)
{
    gb_call *c = xcalloc(1, sizeof *c);
    c->op_accept = (gb_op){.c = c, .kind = OP_ACCEPT};
    c->op_recv = (gb_op){.c = c, .kind = OP_RECV};
    c->op_close = (gb_op){.c = c, .kind = OP_CLOSE};
    c->op_send = (gb_op){.c = c, .kind = OP_SEND};
    c->status_msg = grpc_empty_slice();
    grpc_call_details_init(&c->details);
    grpc_metadata_array_init(&c->md);
    grpc_call_error e = grpc_server_request_call(B.server, &c->call, &c->details, &c->md, B.cq, B.cq, &c->op_accept);
    if (e != GRPC_CALL_OK) {
        log_error("grpc: cannot ask for calls: %s", grpc_call_error_to_string(e));
        call_free(c);
    }
}

int gb_start(uv_loop_t *loop, const char *host, int port, size_t max_message, size_t max_buffered,
             const gb_handlers *h, int *bound, char *err, size_t errlen)
{
    B.loop = loop;
    B.h = *h;
    grpc_init();
    grpc_arg args[4];
    memset(args, 0, sizeof args);
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[0].value.integer = max_message > INT_MAX ? INT_MAX : (int)max_message;
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
    args[1].value.integer = -1;
    /* gRPC sets SO_REUSEPORT by default: a second daemon on the same port would share it silently. */
    args[2].type = GRPC_ARG_INTEGER;
    args[2].key = GRPC_ARG_ALLOW_REUSEPORT;
    args[2].value.integer = 0;
    /* The memory gRPC may hold for messages on their way, all calls together (--max-inflight-body): past it,
     * it reads no more from clients until some is freed. */
    grpc_resource_quota *quota = grpc_resource_quota_create("corral");
    grpc_resource_quota_resize(quota, max_buffered);
    args[3].type = GRPC_ARG_POINTER;
    args[3].key = GRPC_ARG_RESOURCE_QUOTA;
    args[3].value.pointer.p = quota;
    args[3].value.pointer.vtable = grpc_resource_quota_arg_vtable();
    grpc_channel_args cargs = {.num_args = 4, .args = args};
    B.server = grpc_server_create(&cargs, NULL);
    grpc_resource_quota_unref(quota); /* the server holds its own reference */
    B.cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(B.server, B.cq, NULL);
    char addr[300];
    snprintf(addr, sizeof addr, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
    grpc_server_credentials *creds = grpc_insecure_server_credentials_create();
    int got = grpc_server_add_http2_port(B.server, addr, creds);
    grpc_server_credentials_release(creds);
    if (got == 0) {
        snprintf(err, errlen, "cannot listen for gRPC on %s (in use, or not an address of this machine)", addr);
        grpc_server_destroy(B.server);
        grpc_completion_queue_shutdown(B.cq);
        while (grpc_completion_queue_next(B.cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type != GRPC_QUEUE_SHUTDOWN)
            ;
        grpc_completion_queue_destroy(B.cq);
        B.server = NULL;
        B.cq = NULL;
        return -1;
    }
    *bound = got;
    grpc_server_start(B.server);
    pthread_mutex_init(&B.lock, NULL);
    uv_async_init(loop, &B.async, on_async);
    uv_timer_init(loop, &B.grace);
    B.op_shutdown = (gb_op){.kind = OP_SHUTDOWN};
    B.running = 1;
    if (pthread_create(&B.thread, NULL, bridge_main, NULL) != 0) {
        snprintf(err, errlen, "cannot start the gRPC bridge thread");
        return -1;
    }
    for (int i = 0; i < GB_ACCEPTS; i++)
        accept_one();
    return 0;
}

void gb_read(gb_call *c)
{
    if (c->reading || c->closed)
        return;
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &c->recv_buf;
    c->reading = 1;
    if (grpc_call_start_batch(c->call, &op, 1, &c->op_recv, NULL) != GRPC_CALL_OK) {
        c->reading = 0;
        grpc_call_cancel(c->call, NULL);
    }
}

/* Queues a message whose byte buffer is made. */
static void enqueue(gb_call *c, grpc_byte_buffer *bb, int last, void *arg, uint32_t n)
{
    gb_msg *m = xmalloc(sizeof *m);
    m->bb = bb;
    m->next = NULL;
    m->arg = arg;
    m->n = n;
    if (last && !c->finishing) {
        c->finishing = 1;
        c->status = GB_OK;
    }
    /* Queued after the status left (or the call closed), a message is never sent: maybe_end answers it. */
    if (c->tail)
        c->tail->next = m;
    else
        c->head = m;
    c->tail = m;
    c->queued++;
    pump(c); /* a call already closed keeps it for maybe_end, which answers the queue */
}

void gb_send(gb_call *c, uint8_t *buf, size_t len, int last, void *arg, uint32_t n)
{
    grpc_slice s = grpc_slice_new(buf, len, free);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s); /* the buffer holds its own reference */
    enqueue(c, bb, last, arg, n);
}

static void hold_unref(void *p)
{
    gb_hold *h = p;
    if (__atomic_sub_fetch(&h->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    pthread_mutex_lock(&B.lock);
    h->next = B.holds;
    B.holds = h;
    int wake = !B.async_closed; /* after gb_stop the daemon is exiting: what gRPC lets go of then stays */
    pthread_mutex_unlock(&B.lock);
    if (wake)
        uv_async_send(&B.async);
}

void gb_send_parts(gb_call *c, uint8_t *head, size_t head_len, const gb_part *parts, int nparts,
                   void (*release)(void *arg), void *release_arg, int last, void *arg, uint32_t n)
{
    grpc_slice whole = grpc_slice_new(head, head_len ? head_len : 1, free);
    grpc_slice *slices = xmalloc(sizeof *slices * (size_t)(nparts ? nparts : 1));
    gb_hold *h = xmalloc(sizeof *h);
    h->release = release;
    h->arg = release_arg;
    h->refs = 1; /* this function's own, dropped at the end */
    int k = 0;
    for (int i = 0; i < nparts; i++) {
        if (parts[i].len == 0)
            continue;
        if (parts[i].ptr >= head && parts[i].ptr + parts[i].len <= head + head_len) {
            size_t at = (size_t)(parts[i].ptr - head);
            slices[k++] = grpc_slice_sub(whole, at, at + parts[i].len);
        } else {
            __atomic_add_fetch(&h->refs, 1, __ATOMIC_ACQ_REL);
            slices[k++] = grpc_slice_new_with_user_data((void *)parts[i].ptr, parts[i].len, hold_unref, h);
        }
    }
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(slices, (size_t)k);
    for (int i = 0; i < k; i++)
        grpc_slice_unref(slices[i]); /* the buffer holds its own references */
    free(slices);
    grpc_slice_unref(whole);
    hold_unref(h);
    enqueue(c, bb, last, arg, n);
}

void gb_finish(gb_call *c, int code, const char *msg)
{
    if (c->finishing || c->closed)
        return;
    c->finishing = 1;
    c->status = code;
    grpc_slice_unref(c->status_msg);
    c->status_msg = grpc_slice_from_copied_string(msg ? msg : "");
    pump(c);
}

struct gb_bytes {
    grpc_slice s;
};

gb_bytes *gb_keep(gb_call *c)
{
    if (!c->current)
        return NULL;
    gb_bytes *b = xmalloc(sizeof *b);
    b->s = grpc_slice_ref(*c->current);
    return b;
}

void gb_release(gb_bytes *b)
{
    if (!b)
        return;
    grpc_slice_unref(b->s);
    free(b);
}

void gb_cancel(gb_call *c)
{
    if (!c->closed)
        grpc_call_cancel(c->call, NULL);
}

size_t gb_queued(const gb_call *c)
{
    return c->queued + (c->in_flight ? 1 : 0);
}

void gb_set_data(gb_call *c, void *data)
{
    c->data = data;
}

void *gb_data(const gb_call *c)
{
    return c->data;
}

int gb_running(void)
{
    return B.running != 0;
}

void gb_drain(void)
{
    if (B.running != 1 || B.draining)
        return;
    B.draining = 1;
    grpc_server_shutdown_and_notify(B.server, B.cq, &B.op_shutdown);
}

/* gRPC never said its calls were over: the daemon exits without it, rather than hang. */
static void on_give_up(uv_timer_t *t)
{
    (void)t;
    log_warn("grpc: the server did not stop 3 s after its calls were cancelled; exiting without it");
    void (*cb)(void) = B.on_stopped;
    B.on_stopped = NULL;
    if (cb)
        cb();
}

static void on_grace(uv_timer_t *t)
{
    if (B.server && !B.server_gone) {
        grpc_server_cancel_all_calls(B.server);
        uv_timer_start(t, on_give_up, 3000, 0);
    }
}

void gb_stop(uint64_t grace_ms, void (*on_stopped)(void))
{
    if (!B.running) {
        if (on_stopped)
            on_stopped();
        return;
    }
    B.on_stopped = on_stopped;
    gb_drain();
    uv_timer_start(&B.grace, on_grace, grace_ms, 0);
}
