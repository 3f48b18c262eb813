/*
 * inst — worker processes; see inst.h and docs/worker-protocol.md.
 *
 * Every worker is started through corral-shim, beside the daemon's binary
 * (shim.c; the binary's own hidden "__shim" mode when it is missing): a
 * guard process, a child subreaper, that forks the
 * real worker into a process group of its own and, when the worker exits or
 * the daemon dies (even by SIGKILL), kills that group and every descendant
 * left, those that escaped the group or the session included. libuv's
 * UV_PROCESS_DETACHED gives the guard its own session; stop and kill signal
 * the worker's group once its HELLO names it, and before that ask the guard
 * (SIGUSR1) to sweep.
 *
 * Frames are read and written by chan.c (a reader on the protocol socket, a
 * writer on each of the two sockets); here they get their meaning. A write
 * that fails is a broken worker: it is killed.
 */
#include "inst.h"
#include "inst_internal.h"

#include "clock.h"
#include "lines.h"
#include "log.h"
#include "procfs.h"
#include "sessreq.h"
#include "shm.h"
#include "utf8.h"
#include "xmalloc.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static char self_exe[4096];

const char *inst_state_name(inst_state s)
{
    switch (s) {
    case INST_IDLE: return "stopped";
    case INST_STARTING: return "starting";
    case INST_READY: return "ready";
    case INST_STOPPING: return "stopping";
    }
    return "unknown";
}

void inst_exit_reason(const inst *in, int with_line, char *buf, size_t len)
{
    char how[128];
    inst_exit_text(in, how, sizeof how);
    with_line = with_line && in->cur.last_line[0];
    snprintf(buf, len, "%s%s%s%s%s%s", how, with_line ? ": " : "", with_line ? in->cur.last_line : "",
             in->fault[0] ? " (" : "", in->fault, in->fault[0] ? ")" : "");
    utf8_trim_partial(buf);
}

int inst_exit_signal(const inst *in)
{
    return in->cur.term_signal;
}

int inst_exit_status(const inst *in)
{
    return in->cur.exit_status;
}

void inst_exit_text(const inst *in, char *buf, size_t len)
{
    if (in->cur.term_signal)
        snprintf(buf, len, "killed by signal %d (SIG%s)", in->cur.term_signal, sigabbrev_np(in->cur.term_signal)
                 ? sigabbrev_np(in->cur.term_signal) : "?");
    else
        snprintf(buf, len, "exited with status %d", in->cur.exit_status);
}

static int on_chan_frame(chan_reader *r, const proto_header *h, uint8_t *body);
static void on_chan_error(chan_reader *r, int err, const char *what);
static void on_chan_write_error(chan_writer *w, int err);
static job *take_inflight(inst *in, uint64_t id);
static void flush_start(uv_loop_t *loop);

#ifndef NDEBUG
/* Whether inst.h's table of transitions allows from -> to; for the assert below. */
static int legal_transition(inst_state from, inst_state to)
{
    switch (to) {
    case INST_STARTING: return from == INST_IDLE;
    case INST_READY: return from == INST_STARTING;
    case INST_STOPPING: return from != INST_IDLE;
    case INST_IDLE: return from != INST_IDLE;
    }
    return 0;
}
#endif

/* The one place in->state changes. */
static void inst_set_state(inst *in, inst_state s, const char *why)
{
    assert(legal_transition(in->state, s));
    if (in->state == s)
        return;
    INST_LOG(LOG_DEBUG, in, "%s (pid %d): %s -> %s: %s", in->label, in->pid, inst_state_name(in->state), inst_state_name(s), why);
    in->state = s;
}

void inst_init(inst *in, uv_loop_t *loop, const inst_events *ev, int id, const char *label,
               const char *owner_label, const char *log_name, void *data)
{
    memset(in, 0, sizeof *in);
    in->loop = loop;
    in->data = data;
    in->ev = ev;
    in->id = id;
    in->label = xstrdup(label);
    in->owner_label = xstrdup(owner_label);
    in->log_name = xstrdup(log_name);
    uv_timer_init(loop, &in->timer);
    in->timer.data = in;
    uv_timer_init(loop, &in->health_timer);
    in->health_timer.data = in;
    uv_timer_init(loop, &in->cancel_timer);
    in->cancel_timer.data = in;
    in->cur.shm_fd[0] = in->cur.shm_fd[1] = -1;
    for (int k = 0; k < 2; k++) {
        in->output[k].in = in;
        in->output[k].fd = k + 1;
    }
    chan_reader_init(&in->rd, PROTO_MAX_BODY, on_chan_frame, on_chan_error, in);
    chan_writer_init(&in->wr, (uv_stream_t *)&in->chan, on_chan_write_error, in);
    chan_writer_init(&in->hwr, (uv_stream_t *)&in->hchan, on_chan_write_error, in);
    flush_start(loop);
}

int inst_busy(const inst *in)
{
    return in->handles_open > 0;
}

int inst_running(const inst *in)
{
    return in->state != INST_IDLE && !in->exited;
}

int inst_ready(const inst *in)
{
    return in->state == INST_READY && !in->exited;
}

/* ---- writing ---- */

static void on_chan_write_error(chan_writer *w, int err)
{
    (void)err;
    inst_kill(w->data, "the protocol socket failed on write");
}

/*
 * Requests are held by the writer (chan_writer_hold) and written together
 * once per turn of the loop: every frame sent to one worker while the loop
 * handled a round of events goes out in one system call. The check handle
 * writes them right after that round; the prepare handle, just before the
 * loop waits, catches any sent later in the turn (a timer's, a close
 * callback's). Both are unreferenced: they never keep the loop alive.
 */
static inst *flush_head;
static uv_check_t flush_check;
static uv_prepare_t flush_prepare;

static void flush_held(void)
{
    while (flush_head) {
        inst *in = flush_head;
        flush_head = in->flush_next;
        in->flush_next = NULL;
        in->flush_listed = 0;
        chan_writer_flush(&in->wr);
    }
}

static void on_flush_check(uv_check_t *h)
{
    (void)h;
    flush_held();
}

static void on_flush_prepare(uv_prepare_t *h)
{
    (void)h;
    flush_held();
}

static void flush_start(uv_loop_t *loop)
{
    if (uv_is_active((uv_handle_t *)&flush_check))
        return;
    uv_check_init(loop, &flush_check);
    uv_check_start(&flush_check, on_flush_check);
    uv_unref((uv_handle_t *)&flush_check);
    uv_prepare_init(loop, &flush_prepare);
    uv_prepare_start(&flush_prepare, on_flush_prepare);
    uv_unref((uv_handle_t *)&flush_prepare);
}

static void flush_unlist(inst *in)
{
    for (inst **p = &flush_head; *p; p = &(*p)->flush_next) {
        if (*p == in) {
            *p = in->flush_next;
            break;
        }
    }
    in->flush_next = NULL;
    in->flush_listed = 0;
}

static void hold_frame(inst *in, uint8_t *frame, size_t len)
{
    chan_writer_hold(&in->wr, frame, len);
    if (!in->flush_listed && chan_writer_holding(&in->wr)) {
        in->flush_listed = 1;
        in->flush_next = flush_head;
        flush_head = in;
    }
}

/* Neither socket takes frames once the process has exited or closed its protocol socket. */
static void stop_writing(inst *in)
{
    chan_writer_stop(&in->wr);
    chan_writer_stop(&in->hwr);
    flush_unlist(in);
}

void inst_send(inst *in, job *j)
{
    assert(!j->queued && !j->inst); /* a job leaves its queue before it runs */
    j->inst = in;
    j->next = in->inflight_head;
    j->prev = NULL;
    if (in->inflight_head)
        in->inflight_head->prev = j;
    in->inflight_head = j;
    in->inflight++;
    assert(in->inflight > 0);
    j->line_mark = in->lines;
    uint8_t *frame = j->frame;
    size_t len = j->frame_len;
    j->pipelined = in->inflight > in->cur.concurrency;
    if (j->pipelined) {
        /* Kept in the job, to go elsewhere if this worker dies before it starts it; the writer gets a copy. */
        if (!(frame = malloc(len))) {
            j->pipelined = 0;
            frame = j->frame;
            j->frame = NULL;
        } else {
            memcpy(frame, j->frame, len);
        }
    } else {
        j->frame = NULL;
    }
    if (job_is_tensor(j) && !(frame = inst_shm_place(in, j, frame, &len))) {
        /* Refused, not fatal: the instance is unharmed and takes the next request. */
        take_inflight(in, j->id);
        j->inst = NULL;
        j->pipelined = 0;
        char msg[200];
        snprintf(msg, sizeof msg, "%s: no memory now to send the request's %zu bytes of tensors", in->owner_label,
                 j->pieces_len);
        j->on_done(j, 503, msg, 0, NULL, 0);
        job_free(j);
        return;
    }
    /* The request's data was copied: nothing may point into it any more. */
    free(j->pieces);
    free(j->data_owned);
    j->pieces = NULL;
    j->data_owned = NULL;
    j->npieces = 0;
    hold_frame(in, frame, len);
}

int inst_pipeline_room(const inst *in, const job *j)
{
    if (!inst_ready(in) || !in->cur.streams || in->inflight < in->cur.concurrency ||
        in->inflight >= in->cur.concurrency + in->cur.pipeline)
        return 0;
    if (j->kind != PROTO_INFER || j->npieces || j->frame_len > INST_PIPELINE_FRAME_MAX)
        return 0;
    for (const job *r = in->inflight_head; r; r = r->next)
        if (!job_is_tensor(r))
            return 0;
    return 1;
}

int inst_waiting(const inst *in, const job *j)
{
    int older = 0;
    for (const job *o = j->next; o && older < in->cur.concurrency; o = o->next)
        older++;
    return j->pipelined && older >= in->cur.concurrency;
}

/* ---- stopping ---- */

/*
 * Signals the worker's process group. Until its HELLO names the worker,
 * only the guard is known: SIGKILL to the guard then takes the worker down
 * through its parent-death signal.
 */
static void signal_group(inst *in, int sig)
{
    if (in->pid > 0 && in->pid != in->cur.guard_pid)
        kill(-in->pid, sig);
    else if (in->cur.guard_pid > 0 && sig == SIGKILL)
        kill(in->cur.guard_pid, SIGUSR1); /* the guard sweeps everything below it, then exits */
    else if (in->cur.guard_pid > 0)
        kill(-in->cur.guard_pid, sig);
}

static void on_stop_timer(uv_timer_t *t)
{
    inst *in = t->data;
    if (in->state == INST_STARTING) {
        char why[256];
        snprintf(why, sizeof why, "did not become ready within its load_timeout");
        inst_kill(in, why);
        return;
    }
    if (in->state != INST_STOPPING)
        return;
    if (in->cur.stop_stage == INST_STOP_SHUTDOWN) {
        INST_LOG(LOG_INFO, in, "%s (pid %d): no exit after SHUTDOWN; sending SIGTERM", in->label, in->pid);
        signal_group(in, SIGTERM);
        in->cur.stop_stage = INST_STOP_SIGTERM;
        uv_timer_start(&in->timer, on_stop_timer, (uint64_t)t->repeat ? t->repeat : 2000, 0);
    } else if (in->cur.stop_stage == INST_STOP_SIGTERM) {
        INST_LOG(LOG_WARN, in, "%s (pid %d): still running%s%s; sending SIGKILL", in->label, in->pid,
                 in->fault[0] ? " after it " : " after SIGTERM", in->fault);
        signal_group(in, SIGKILL);
        in->cur.stop_stage = INST_STOP_SIGKILL;
    }
}

void inst_stop(inst *in, int64_t grace_ms)
{
    if (in->state == INST_IDLE || in->exited || in->cur.stop_stage != INST_STOP_NONE)
        return;
    inst_set_state(in, INST_STOPPING, "stop requested: SHUTDOWN sent");
    in->cur.stop_stage = INST_STOP_SHUTDOWN;
    chan_writer_send(&in->wr, PROTO_SHUTDOWN, 0, NULL, 0);
    uint64_t g = grace_ms > 0 ? (uint64_t)grace_ms : 1;
    uv_timer_start(&in->timer, on_stop_timer, g, 0);
    in->timer.repeat = g; /* remembered for the SIGTERM stage; the timer itself does not repeat */
}

void inst_kill(inst *in, const char *why)
{
    /* Killed already: the first reason is the diagnosis, a later one (a write to the dead socket) its echo. */
    if (in->state == INST_IDLE || in->exited || in->cur.stop_stage == INST_STOP_SIGKILL)
        return;
    INST_LOG(LOG_WARN, in, "%s (pid %d): %s; killing it", in->label, in->pid, why);
    snprintf(in->fault, sizeof in->fault, "%s", why);
    utf8_trim_partial(in->fault);
    inst_set_state(in, INST_STOPPING, in->fault);
    in->cur.stop_stage = INST_STOP_SIGKILL;
    uv_timer_stop(&in->timer);
    signal_group(in, SIGKILL);
}

/* ---- health ---- */

/*
 * One timer per instance alternates between two roles: waiting out the
 * interval before the next PING, and waiting out the timeout of the PING in
 * flight. PINGs go on the health socket when the worker's HELLO names it
 * (the SDKs do), else on the protocol socket. The SDKs answer from a thread
 * the model's code cannot block, so a missing PONG means the process itself
 * is stuck (stopped, deadlocked in native code, swapping to death).
 */
static void health_fire(uv_timer_t *t)
{
    inst *in = t->data;
    if (in->state != INST_READY || in->exited)
        return;
    if (!in->cur.ping_outstanding) {
        in->cur.ping_outstanding = 1;
        in->ping_nonce++;
        chan_writer_send(in->cur.health_chan ? &in->hwr : &in->wr, PROTO_PING, in->ping_nonce, NULL, 0);
        uv_timer_start(&in->health_timer, health_fire, (uint64_t)in->cur.health_timeout_ms, 0);
        return;
    }
    snprintf(in->fault, sizeof in->fault, "hung: no answer to a ping within %lld ms",
             (long long)in->cur.health_timeout_ms);
    in->hung = 1;
    if (in->ev->on_hung)
        in->ev->on_hung(in);
    INST_LOG(LOG_WARN, in, "%s (pid %d): %s; sending SIGTERM", in->label, in->pid, in->fault);
    inst_set_state(in, INST_STOPPING, in->fault);
    in->cur.stop_stage = INST_STOP_SIGTERM;
    signal_group(in, SIGTERM);
    uv_timer_start(&in->timer, on_stop_timer, (uint64_t)(in->cur.stop_grace_ms > 0 ? in->cur.stop_grace_ms : 1), 0);
}

static void health_pong(inst *in, uint64_t nonce)
{
    if (!in->cur.ping_outstanding || nonce != in->ping_nonce)
        return; /* a late answer to a ping already given up on */
    in->cur.ping_outstanding = 0;
    if (in->state == INST_READY)
        uv_timer_start(&in->health_timer, health_fire, (uint64_t)in->cur.health_interval_ms, 0);
}

/* ---- reading ---- */

void inst_protocol_error(inst *in, const char *fmt, ...)
{
    char why[256];
    int n = snprintf(why, sizeof why, "broke the protocol: ");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why + n, sizeof why - (size_t)n, fmt, ap);
    va_end(ap);
    utf8_trim_partial(why);
    chan_reader_stop(&in->rd); /* an END read behind the violation would end a broken stream cleanly */
    inst_kill(in, why);
}

static job *take_inflight(inst *in, uint64_t id)
{
    for (job *j = in->inflight_head; j; j = j->next) {
        if (j->id != id)
            continue;
        if (j->prev)
            j->prev->next = j->next;
        else
            in->inflight_head = j->next;
        if (j->next)
            j->next->prev = j->prev;
        j->next = j->prev = NULL;
        in->inflight--;
        assert(in->inflight >= 0);
        return j;
    }
    return NULL;
}

void inst_abandon(inst *in, job *j)
{
    if (take_inflight(in, j->id)) {
        in->cur.abandoned++;
        if (j->id > in->cur.abandoned_max_id)
            in->cur.abandoned_max_id = j->id;
        j->inst = NULL;
    }
}

static void finish_error(inst *in, job *j, const uint8_t *body, size_t len)
{
    json_t *e = json_loadb((const char *)body, len, 0, NULL);
    const char *message = json_string_value(json_object_get(e, "message"));
    json_int_t status = json_integer_value(json_object_get(e, "status"));
    char msg[2048];
    if (!e || !message) {
        snprintf(msg, sizeof msg, "%s instance %d (pid %d) sent a malformed ERROR", in->owner_label, in->id, in->pid);
        status = 500;
    } else if (status == 400) {
        snprintf(msg, sizeof msg, "%s rejected the input: %s", in->owner_label, message);
    } else {
        status = 500;
        snprintf(msg, sizeof msg, "%s raised %s", in->owner_label, message);
    }
    json_decref(e);
    utf8_trim_partial(msg);
    j->on_done(j, (int)status, msg, 0, NULL, 0);
}

/*
 * The READY metadata (NULL: none, or clearing it), and its inputs and
 * outputs parsed once for the request checks. A list that does not parse
 * is not checked against, with a warning: metadata is the worker's claim,
 * and a bad claim should not refuse every request.
 */
static void set_metadata(inst *in, json_t *meta)
{
    if (meta && !json_is_object(meta)) {
        json_decref(meta);
        meta = NULL;
    }
    json_decref(in->metadata);
    decl_free(in->input_decl);
    decl_free(in->output_decl);
    in->metadata = meta;
    in->input_decl = in->output_decl = NULL;
    static const char *const keys[] = {"inputs", "outputs"};
    decl_list **lists[] = {&in->input_decl, &in->output_decl};
    for (int k = 0; meta && k < 2; k++) {
        char why[256];
        size_t at;
        if (decl_parse(json_object_get(meta, keys[k]), lists[k], &at, why, sizeof why) < 0) {
            char where[32] = "";
            if (at != SIZE_MAX)
                snprintf(where, sizeof where, "[%zu]", at);
            INST_LOG(LOG_WARN, in, "%s: READY's %s%s: %s; requests are not checked against them", in->label, keys[k],
                     where, why);
        }
    }
}

static void on_frame(inst *in, const proto_header *h, uint8_t *body)
{
    switch (h->type) {
    case PROTO_HELLO: {
        if (in->cur.hello || h->id) {
            inst_protocol_error(in, "unexpected HELLO");
            break;
        }
        in->cur.hello = 1;
        json_t *hello = json_loadb((const char *)body, h->length, 0, NULL);
        if (!json_is_object(hello)) {
            json_decref(hello);
            inst_protocol_error(in, "HELLO body is not a JSON object");
            break;
        }
        json_int_t pid = json_integer_value(json_object_get(hello, "pid"));
        /* Believed only when it names a group leader in this worker's session (the guard's). */
        if (pid > 0 && pid <= INT32_MAX && getpgid((pid_t)pid) == (pid_t)pid && getsid((pid_t)pid) == in->cur.guard_pid)
            in->pid = (int)pid;
        /* The worker listens for PING on CORRAL_HEALTH_FD: its requests need no reader thread. */
        in->cur.health_chan = json_integer_value(json_object_get(hello, "health_fd")) == WORKER_HEALTH_FD;
        /* The worker maps the shared-memory regions: large tensors may go through them. */
        in->cur.shm = json_is_true(json_object_get(hello, "shm")) && in->cur.shm_fd[0] >= 0;
        /* The worker streams GENERATE answers and obeys CANCEL and CREDIT. */
        in->cur.streams = json_is_true(json_object_get(hello, "stream"));
        /* It takes BATCH (docs/worker-protocol.md, "Batches"). */
        in->cur.batches = json_is_true(json_object_get(hello, "batch"));
        /* It wants SEQUENCE_END when the daemon releases a sequence (docs/worker-protocol.md, "Sequences"). */
        in->cur.sequences = json_is_true(json_object_get(hello, "sequence"));
        json_decref(hello);
        break;
    }
    case PROTO_READY:
        if (in->state != INST_STARTING || !in->cur.hello) {
            if (in->state == INST_STARTING || in->state == INST_READY)
                inst_protocol_error(in, "READY before HELLO or twice");
            break;
        }
        set_metadata(in, h->length ? json_loadb((const char *)body, h->length, 0, NULL) : NULL);
        if (h->length && !in->metadata) {
            inst_protocol_error(in, "READY body is not a JSON object");
            break;
        }
        uv_timer_stop(&in->timer);
        inst_set_state(in, INST_READY, "READY");
        in->ready_ms = in->last_busy_ms = now_ms();
        in->cur.ping_outstanding = 0;
        uv_timer_start(&in->health_timer, health_fire, (uint64_t)in->cur.health_interval_ms, 0);
        INST_LOG(LOG_INFO, in, "%s (pid %d) ready in %llu ms", in->label, in->pid, (unsigned long long)(in->ready_ms - in->started_ms));
        in->ev->on_ready(in);
        break;
    case PROTO_ERROR:
        if (h->id == 0) {
            if (in->state != INST_STARTING) {
                inst_protocol_error(in, "ERROR with id 0 after start-up");
                break;
            }
            json_t *e = json_loadb((const char *)body, h->length, 0, NULL);
            const char *message = json_string_value(json_object_get(e, "message"));
            char msg[1024];
            snprintf(msg, sizeof msg, "%s", message ? message : "load failed (malformed ERROR)");
            utf8_trim_partial(msg);
            json_decref(e);
            in->load_error = 1;
            snprintf(in->fault, sizeof in->fault, "load raised %s", msg);
            utf8_trim_partial(in->fault);
            uv_timer_stop(&in->timer);
            in->ev->on_load_failed(in, msg);
            inst_stop(in, 2000);
            break;
        }
        /* an error answer to a request */
        __attribute__((fallthrough));
    case PROTO_INFER_RESULT:
    case PROTO_GENERATE_RESULT:
    case PROTO_END: {
        long long shm_len = inst_shm_result(in, h, body);
        if (shm_len < 0)
            break; /* a protocol error: the worker is being killed */
        const job *s = inst_find_inflight(in, h->id);
        /* Only a worker whose HELLO says it streams may end a stream, as only it may send CHUNK. */
        if (s && h->type == PROTO_END && (!s->stream || !in->cur.streams)) {
            inst_protocol_error(in, "sent END for request %llu, %s", (unsigned long long)h->id,
                                !in->cur.streams ? "though its HELLO did not say \"stream\": true"
                                                 : "which is not streamed");
            break;
        }
        /* An END's body is empty, or a meta alone (a session update, sessreq.h); another body is an error even
         * for a request that carries no session. */
        char why[256];
        if (s && h->type != PROTO_ERROR && !s->answered && (s->sess || (h->type == PROTO_END && h->length)) &&
            sessreq_stage_frame(s->sess, h->type, body, h->length, why, sizeof why) < 0) {
            inst_protocol_error(in, "sent a %s for request %llu that does not parse: %s", proto_type_name(h->type),
                                (unsigned long long)h->id, why);
            break;
        }
        if (s && h->type == PROTO_GENERATE_RESULT && s->streaming) {
            inst_protocol_error(in, "sent a GENERATE_RESULT for request %llu after its stream began",
                                (unsigned long long)h->id);
            break;
        }
        job *j = take_inflight(in, h->id);
        if (!j) {
            if (in->cur.abandoned && h->id <= in->cur.abandoned_max_id)
                break; /* the answer to a request whose deadline passed: already answered 504 */
            inst_protocol_error(in, "%s for unknown request id %llu", proto_type_name(h->type),
                                (unsigned long long)h->id);
            break;
        }
        in->last_busy_ms = now_ms();
        in->requests++;
        if (h->flags & PROTO_FLAG_SHM_DATA)
            inst_shm_attach(in, j, shm_len);
        if (j->answered) {
            job_free(j); /* answered already (a deadline): this only frees the instance */
            in->ev->on_job_finished(in);
            break;
        }
        if (h->type == PROTO_ERROR) {
            finish_error(in, j, body, h->length);
        } else if ((h->type == PROTO_INFER_RESULT) != job_is_tensor(j)) {
            char msg[256];
            snprintf(msg, sizeof msg, "%s instance %d (pid %d) answered with the wrong message type %s",
                     in->owner_label, in->id, in->pid, proto_type_name(h->type));
            j->on_done(j, 502, msg, 0, NULL, 0);
        } else {
            j->on_done(j, 200, NULL, h->type, body, h->length);
            body = NULL; /* ownership passed */
        }
        int broken = j->result_broken;
        uint64_t id = j->id;
        job_free(j);
        if (broken) /* answered 502 already; the worker is replaced, as for any protocol error */
            inst_protocol_error(in, "sent a %s for request %llu that does not parse as its type requires",
                                proto_type_name(h->type), (unsigned long long)id);
        in->ev->on_job_finished(in);
        break;
    }
    case PROTO_CHUNK:
        inst_on_chunk(in, h, body);
        return; /* the body is the chunk's owner's, or freed */
    case PROTO_PONG:
        health_pong(in, h->id);
        break;
    default:
        inst_protocol_error(in, "unexpected %s frame", proto_type_name(h->type));
        break;
    }
    free(body);
}

static int on_chan_frame(chan_reader *r, const proto_header *h, uint8_t *body)
{
    inst *in = r->data;
    if (in->exited && in->state == INST_IDLE) { /* the slot was wound up: nothing more counts */
        free(body);
        chan_reader_stop(r);
        return 1;
    }
    on_frame(in, h, body);
    /* Killed (by this frame or earlier): what follows waits for the exit's drain. */
    return in->state == INST_STOPPING && in->cur.stop_stage == INST_STOP_SIGKILL;
}

static void on_chan_error(chan_reader *r, int err, const char *what)
{
    (void)err;
    inst_protocol_error(r->data, "%s", what);
}

/* The health socket carries only PONG: 16-byte headers with no body. */
static void health_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    inst *in = h->data;
    buf->base = (char *)in->cur.hbuf + in->cur.hlen;
    buf->len = sizeof in->cur.hbuf - in->cur.hlen;
}

static void health_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    (void)buf;
    inst *in = s->data;
    if (n < 0) {
        uv_read_stop(s); /* the exit, seen on the protocol socket, tells why */
        return;
    }
    in->cur.hlen += (size_t)n;
    if (in->cur.hlen < sizeof in->cur.hbuf)
        return;
    in->cur.hlen = 0;
    proto_header h;
    if (proto_header_decode(in->cur.hbuf, sizeof in->cur.hbuf, PROTO_MAX_BODY, &h) < 0 || h.type != PROTO_PONG ||
        h.length)
        inst_protocol_error(in, "the health socket carried something other than PONG (type %u, %u-byte body)",
                            in->cur.hbuf[5], proto_get_u32(in->cur.hbuf));
    else
        health_pong(in, h.id);
}

static void chan_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    inst *in = h->data;
    size_t len;
    chan_reader_buffer(&in->rd, &buf->base, &len);
    buf->len = len;
}

static void handle_closed(uv_handle_t *h);

static void chan_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    inst *in = s->data;
    if (n > 0) {
        chan_reader_consume(&in->rd, buf->base, (size_t)n);
        return;
    }
    if (n == 0)
        return;
    uv_read_stop(s);
    in->cur.chan_eof = 1;
    stop_writing(in);
    if (!in->exited && in->state != INST_STOPPING && in->state != INST_IDLE) {
        /* Usually the worker is exiting: let its exit status tell why, and
         * kill it only if it lingers without its socket. */
        snprintf(in->fault, sizeof in->fault, "closed its protocol socket");
        inst_set_state(in, INST_STOPPING, in->fault);
        in->cur.stop_stage = INST_STOP_SIGTERM;
        uv_timer_start(&in->timer, on_stop_timer, 500, 0);
    }
}

/* ---- output capture ---- */

/* One line of output; which stream it came from is in the arg (struct inst_stream). */
static void on_output_line(void *arg, const char *line, size_t len, size_t dropped)
{
    inst_stream *st = arg;
    inst *in = st->in;
    in->lines++;
    size_t keep = utf8_cut(line, len, sizeof in->cur.last_line - 1);
    if (keep) {
        memcpy(in->cur.last_line, line, keep);
        in->cur.last_line[keep] = 0;
    }
    in->ev->on_log_line(in, st->fd, line, len, dropped);
}

static void output_consume(inst *in, int stream, const char *p, size_t n)
{
    inst_stream *st = &in->output[stream - 1];
    lines_feed(&st->lines, p, n, on_output_line, st);
}

static void output_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    static char scratch[65536]; /* consumed synchronously in output_read */
    (void)suggested;
    buf->base = scratch;
    buf->len = sizeof scratch;
}

static void output_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    inst *in = s->data;
    int stream = s == (uv_stream_t *)&in->out ? 1 : 2;
    if (n > 0)
        output_consume(in, stream, buf->base, (size_t)n);
    else if (n < 0)
        uv_read_stop(s);
}

/* Reads what a dead process left in a pipe, so its last words are not lost. */
static void drain_fd(inst *in, uv_stream_t *s, int is_chan)
{
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)s, &fd) < 0)
        return;
    for (int rounds = 0; rounds < 4096; rounds++) {
        uv_buf_t b;
        if (is_chan)
            chan_alloc((uv_handle_t *)s, 0, &b);
        else
            output_alloc((uv_handle_t *)s, 0, &b);
        ssize_t n = read(fd, b.base, b.len);
        if (n <= 0)
            break;
        if (is_chan)
            chan_reader_consume(&in->rd, b.base, (size_t)n);
        else
            output_consume(in, s == (uv_stream_t *)&in->out ? 1 : 2, b.base, (size_t)n);
    }
}

/* ---- exit ---- */

static void maybe_release(inst *in);

static void handle_closed(uv_handle_t *h)
{
    inst *in = h->data;
    in->handles_open--;
    maybe_release(in);
}

/*
 * The last step of an exit: the slot becomes idle and the owner hears of
 * it only once nothing of the worker's process group still runs (the guard
 * can be reaped a moment before the worker it was killed with), so
 * "unloaded" and "restarted" always mean the old processes are gone.
 */
static void finish_exit(inst *in);

static void exit_poll(uv_timer_t *t)
{
    finish_exit(t->data);
}

static void finish_exit(inst *in)
{
    int groups[2] = {in->cur.guard_pid, in->pid};
    if (in->cur.exit_wait_ms < 2000 && procfs_group_running(groups, in->pid != in->cur.guard_pid ? 2 : 1) > 0) {
        signal_group(in, SIGKILL);
        in->cur.exit_wait_ms += 5;
        uv_timer_start(&in->timer, exit_poll, 5, 0);
        return;
    }
    inst_set_state(in, INST_IDLE, "exited, and its process group is gone");
    in->ev->on_exit(in);
}

static void on_process_exit(uv_process_t *p, int64_t status, int term_signal)
{
    inst *in = p->data;
    in->exited = 1;
    stop_writing(in);
    uv_timer_stop(&in->health_timer);
    uv_timer_stop(&in->cancel_timer);
    in->cur.exit_status = (int)status;
    in->cur.term_signal = term_signal;
    uv_timer_stop(&in->timer);
    /* Results written just before the exit are still in the socket. */
    if (!in->cur.chan_eof)
        drain_fd(in, (uv_stream_t *)&in->chan, 1);
    drain_fd(in, (uv_stream_t *)&in->out, 0);
    drain_fd(in, (uv_stream_t *)&in->err, 0);
    for (int k = 0; k < 2; k++)
        lines_flush(&in->output[k].lines, on_output_line, &in->output[k]);
    /* Sweep the process group: nothing the worker started may outlive it. */
    signal_group(in, SIGKILL);

    char why[600];
    inst_exit_reason(in, 1, why, sizeof why);
    if (in->cur.stop_stage == INST_STOP_SHUTDOWN && !term_signal && status == 0)
        INST_LOG(LOG_INFO, in, "%s (pid %d) %s", in->label, in->pid, why);
    else
        INST_LOG(LOG_WARN, in, "%s (pid %d) %s", in->label, in->pid, why);

    uv_close((uv_handle_t *)&in->chan, handle_closed);
    uv_close((uv_handle_t *)&in->out, handle_closed);
    uv_close((uv_handle_t *)&in->err, handle_closed);
    uv_close((uv_handle_t *)&in->hchan, handle_closed);
    uv_close((uv_handle_t *)&in->proc, handle_closed);
    chan_reader_reset(&in->rd);
    inst_shm_close(in);

    /* A request hears the worker's last line only if the worker wrote it
     * while that request was in its hands: an older line (an earlier
     * request's traceback) says nothing about this crash. */
    char reason[2][600], msg[2][900], late[2][900];
    for (int with_line = 0; with_line < 2; with_line++) {
        inst_exit_reason(in, with_line, reason[with_line], sizeof reason[0]);
        snprintf(msg[with_line], sizeof msg[0], "%s instance %d (pid %d) %s while holding the request",
                 in->owner_label, in->id, in->pid, reason[with_line]);
        snprintf(late[with_line], sizeof late[0], "%s: deadline exceeded; meanwhile instance %d (pid %d) %s",
                 in->owner_label, in->id, in->pid, reason[with_line]);
    }
    /* The worker ran its requests in the order they were sent, `concurrency`
     * at once: those it held beyond the oldest `concurrency` it never
     * started, and go back to the owner to be sent elsewhere. */
    int position = 0;
    job *oldest = in->inflight_head;
    while (oldest && oldest->next)
        oldest = oldest->next;
    for (job *j = oldest, *newer; j; j = newer, position++) {
        newer = j->prev;
        if (position < in->cur.concurrency || !j->pipelined || !j->frame || j->answered || j->cancelled)
            continue;
        take_inflight(in, j->id);
        j->inst = NULL;
        j->pipelined = 0;
        in->ev->on_returned(in, j);
    }
    uint64_t now = now_ms();
    while (in->inflight_head) {
        job *j = take_inflight(in, in->inflight_head->id);
        int fresh = in->lines > j->line_mark;
        if (j->answered)
            ; /* answered at its deadline; the worker had been told to CANCEL */
        else if (j->deadline_ms && now >= j->deadline_ms)
            j->on_done(j, 504, late[fresh], 0, NULL, 0);
        else
            j->on_done(j, 502, msg[fresh], 0, NULL, 0);
        job_free(j);
    }
    finish_exit(in);
}

/* ---- start ---- */

/*
 * What starts a worker's guard: corral-shim beside the daemon's binary (it
 * links only libc, so each guard stays small: shim.h), else the daemon's
 * own binary, which runs the same guard as `corral __shim`.
 */
static const char *exe_path(void)
{
    if (!self_exe[0]) {
        size_t len = sizeof self_exe;
        if (uv_exepath(self_exe, &len) < 0)
            snprintf(self_exe, sizeof self_exe, "/proc/self/exe");
        char shim[sizeof self_exe];
        const char *slash = strrchr(self_exe, '/');
        int n = slash ? snprintf(shim, sizeof shim, "%.*s/corral-shim", (int)(slash - self_exe), self_exe) : -1;
        if (n > 0 && (size_t)n < sizeof shim && access(shim, X_OK) == 0)
            memcpy(self_exe, shim, (size_t)n + 1);
    }
    return self_exe;
}

/*
 * The one place where what belongs to a process is cleared: the new one
 * was spawned (its guard is in->proc.pid) and its memfds are mfd. Until
 * here the slot kept the last process's exit for inst_exit_reason.
 */
static void begin_process(inst *in, const inst_spawn *sp, const int mfd[2])
{
    /* The last process's exit closed its memfds, dropped the mappings and answered every job. */
    assert(in->cur.shm_fd[0] < 0 && in->cur.shm_fd[1] < 0 && !in->cur.shm_in && !in->cur.shm_out);
    assert(in->inflight == 0 && !in->inflight_head);
    memset(&in->cur, 0, sizeof in->cur);
    in->cur.guard_pid = in->proc.pid;
    in->cur.shm_fd[0] = mfd[0];
    in->cur.shm_fd[1] = mfd[1];
    in->cur.health_interval_ms = sp->health_interval_ms > 0 ? sp->health_interval_ms : 10000;
    in->cur.health_timeout_ms = sp->health_timeout_ms > 0 ? sp->health_timeout_ms : 5000;
    in->cur.stop_grace_ms = sp->stop_grace_ms;
    in->cur.concurrency = sp->concurrency > 0 ? sp->concurrency : 1;
    in->cur.pipeline = sp->pipeline > 0 ? sp->pipeline : 0;
    in->pid = in->proc.pid;
    in->exited = 0;
    in->started_ms = now_ms();
    in->ready_ms = 0;
    in->load_error = 0;
    in->fault[0] = 0;
    in->hung = 0;
    in->rss_bytes = 0;
    set_metadata(in, NULL);
    chan_writer_reset(&in->wr);
    chan_writer_reset(&in->hwr);
    inst_set_state(in, INST_STARTING, "spawned");
}

int inst_start(inst *in, const inst_spawn *sp, char *err, size_t errlen)
{
    if (in->state != INST_IDLE || in->handles_open) {
        snprintf(err, errlen, "instance %d is still running", in->id);
        return -EBUSY;
    }
    int sv[2], hv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        snprintf(err, errlen, "socketpair: %s", strerror(errno));
        return -errno;
    }
    /* Large tensors cross the protocol socket in fewer, larger steps (each
     * step is a wake-up of the reader): as large a send buffer as the
     * system allows (net.core.wmem_max), on both ends, best effort. */
    for (int k = 0; k < 2; k++) {
        int want = PROTO_SOCKET_BUFFER;
        setsockopt(sv[k], SOL_SOCKET, SO_SNDBUF, &want, sizeof want);
    }
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, hv) < 0) {
        int e = errno;
        snprintf(err, errlen, "socketpair: %s", strerror(e));
        close(sv[0]);
        close(sv[1]);
        return -e;
    }
    int mfd[2] = {shm_create("corral-input"), shm_create("corral-output")};
    if (mfd[0] < 0 || mfd[1] < 0) {
        int e = mfd[0] < 0 ? mfd[0] : mfd[1];
        snprintf(err, errlen, "memfd_create: %s", strerror(-e));
        for (int k = 0; k < 2; k++) {
            if (mfd[k] >= 0)
                close(mfd[k]);
            close(sv[k]);
            close(hv[k]);
        }
        return e;
    }
    size_t argc = 0;
    while (sp->argv[argc])
        argc++;
    char ppid[32];
    snprintf(ppid, sizeof ppid, "%d", (int)getpid());
    char **args = xcalloc(argc + 5, sizeof *args);
    args[0] = (char *)exe_path();
    args[1] = "__shim";
    args[2] = ppid;
    args[3] = (char *)sp->file;
    for (size_t i = 0; i < argc; i++)
        args[4 + i] = sp->argv[i];

    uv_pipe_init(in->loop, &in->chan, 0);
    uv_pipe_init(in->loop, &in->out, 0);
    uv_pipe_init(in->loop, &in->err, 0);
    uv_pipe_init(in->loop, &in->hchan, 0);
    in->chan.data = in->out.data = in->err.data = in->hchan.data = in->proc.data = in;
    in->handles_open = 4;

    uv_stdio_container_t stdio[WORKER_SHM_OUT_FD + 1];
    stdio[0].flags = UV_IGNORE;
    stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[1].data.stream = (uv_stream_t *)&in->out;
    stdio[2].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[2].data.stream = (uv_stream_t *)&in->err;
    stdio[WORKER_PROTOCOL_FD].flags = UV_INHERIT_FD;
    stdio[WORKER_PROTOCOL_FD].data.fd = sv[1];
    stdio[WORKER_HEALTH_FD].flags = UV_INHERIT_FD;
    stdio[WORKER_HEALTH_FD].data.fd = hv[1];
    stdio[WORKER_SHM_IN_FD].flags = UV_INHERIT_FD;
    stdio[WORKER_SHM_IN_FD].data.fd = mfd[0];
    stdio[WORKER_SHM_OUT_FD].flags = UV_INHERIT_FD;
    stdio[WORKER_SHM_OUT_FD].data.fd = mfd[1];

    uv_process_options_t opt;
    memset(&opt, 0, sizeof opt);
    opt.file = args[0];
    opt.args = args;
    opt.env = sp->env;
    opt.cwd = sp->cwd;
    opt.exit_cb = on_process_exit;
    opt.flags = UV_PROCESS_DETACHED;
    opt.stdio = stdio;
    opt.stdio_count = WORKER_SHM_OUT_FD + 1;

    int rc = uv_spawn(in->loop, &in->proc, &opt);
    free(args);
    close(sv[1]);
    close(hv[1]);
    if (rc < 0) {
        snprintf(err, errlen, "cannot spawn %s: %s", sp->file, uv_strerror(rc));
        close(sv[0]);
        close(hv[0]);
        close(mfd[0]);
        close(mfd[1]);
        uv_close((uv_handle_t *)&in->chan, handle_closed);
        uv_close((uv_handle_t *)&in->out, handle_closed);
        uv_close((uv_handle_t *)&in->err, handle_closed);
        uv_close((uv_handle_t *)&in->hchan, handle_closed);
        /* libuv initialised proc as a handle even though the spawn failed */
        in->handles_open++;
        uv_close((uv_handle_t *)&in->proc, handle_closed);
        return rc;
    }
    in->handles_open++;
    uv_pipe_open(&in->chan, sv[0]);
    uv_pipe_open(&in->hchan, hv[0]);
    begin_process(in, sp, mfd);
    uv_read_start((uv_stream_t *)&in->chan, chan_alloc, chan_read);
    uv_read_start((uv_stream_t *)&in->hchan, health_alloc, health_read);
    uv_read_start((uv_stream_t *)&in->out, output_alloc, output_read);
    uv_read_start((uv_stream_t *)&in->err, output_alloc, output_read);
    chan_writer_send(&in->wr, PROTO_LOAD, 0, sp->load_json, strlen(sp->load_json));
    uv_timer_start(&in->timer, on_stop_timer, (uint64_t)sp->load_timeout_ms, 0);
    INST_LOG(LOG_INFO, in, "%s started (guard pid %d)", in->label, in->cur.guard_pid);
    return 0;
}

/* ---- release ---- */

/* The slot's memory may go only when its timers and its process's handles are all closed. */
static void maybe_release(inst *in)
{
    if (!in->on_closed || in->freeing > 0 || in->handles_open > 0)
        return;
    chan_reader_close(&in->rd);
    lines_free(&in->output[0].lines);
    lines_free(&in->output[1].lines);
    set_metadata(in, NULL);
    inst_shm_unmap(in); /* normally gone with the exit already */
    free(in->label);
    free(in->owner_label);
    free(in->log_name);
    in->label = in->owner_label = NULL;
    void (*cb)(inst *) = in->on_closed;
    in->on_closed = NULL;
    cb(in);
}

static void timer_closed(uv_handle_t *h)
{
    inst *in = h->data;
    in->freeing--;
    maybe_release(in);
}

void inst_close(inst *in, void (*on_closed)(inst *in))
{
    in->on_closed = on_closed;
    flush_unlist(in);
    in->freeing = 3;
    uv_close((uv_handle_t *)&in->health_timer, timer_closed);
    uv_close((uv_handle_t *)&in->cancel_timer, timer_closed);
    uv_close((uv_handle_t *)&in->timer, timer_closed);
}
