/*
 * dispatch — the scheduler of the model registry: accepting a job into a
 * model's queue (loading the model first when unloaded), withdrawing it,
 * handing queued jobs to the ready instance with the fewest in flight (or,
 * when every one holds its concurrency, pipelining one ahead), the
 * deadline of every job (504 wherever it is), and the keep_alive timer
 * that unloads an idle model. See model.h and model_internal.h.
 */
#include "model_internal.h"

#include "batch.h"
#include "clock.h"
#include "log.h"
#include "sb.h"
#include "seq.h"
#include "sessreq.h"
#include "utf8.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

/* ---- deadlines ---- */

static void deadline_fire(uv_timer_t *t);
static const char *seq_id_text(const seq *s, char *buf, size_t len);
static void seq_settle(model *m, seq *s);

static void arm_deadline_timer(void)
{
    job *j = job_deadline_next();
    if (!j) {
        uv_timer_stop(&R.deadline_timer);
        return;
    }
    uint64_t now = now_ms();
    uv_timer_start(&R.deadline_timer, deadline_fire, j->deadline_ms > now ? j->deadline_ms - now : 0, 0);
}

/*
 * A request whose deadline passes is answered 504 at that moment, wherever
 * it is. Queued: it leaves the queue. Running: the instance cannot be
 * trusted to finish in any useful time, so it is killed and replaced (as
 * uWSGI's harakiri does) — a replacement, not a crash.
 */
/* Every member of the batch has its answer (deadlines): nobody waits for the batch any more. */
static int batch_abandoned(const job *b)
{
    for (int i = 0; i < b->nmembers; i++)
        if (b->members[i] && !b->members[i]->answered)
            return 0;
    return 1;
}

static void deadline_fire(uv_timer_t *t)
{
    (void)t;
    uint64_t now = now_ms();
    job *j;
    while ((j = job_deadline_next()) && j->deadline_ms <= now) {
        job_deadline_untrack(j);
        model *m = j->model;
        char msg[512];
        long long budget = (long long)(j->deadline_ms - j->enqueued_ms);
        if (j->batch && !j->answered) {
            /* In a batch that runs: answered now; the batch goes on for the others. */
            snprintf(msg, sizeof msg, "model '%s': deadline of %lld ms exceeded while running in a batch", m->name,
                     budget);
            j->answered = 1;
            j->on_done(j, 504, msg, 0, NULL, 0);
            job *b = j->batch;
            inst *in = b->inst;
            if (in && batch_abandoned(b) && !b->cancelled) {
                if (inst_can_cancel(in)) {
                    inst_cancel(in, b);
                } else if (inst_running(in) && !slot_of(in)->retire) {
                    slot_of(in)->replace = 1;
                    slot_of(in)->replace_cause = RESTART_DEADLINE;
                    inst_kill(in, "a batch's requests all exceeded their deadlines");
                }
            }
            continue;
        }
        if (j->seq_waiting) {
            seq *s = j->seq;
            char id[96];
            snprintf(msg, sizeof msg,
                     "model '%s': deadline of %lld ms exceeded while waiting behind earlier requests of sequence %s "
                     "(waited %lld ms)",
                     m->name, budget, seq_id_text(s, id, sizeof id), (long long)(now - j->enqueued_ms));
            seq_fifo_remove(&m->seqs, s, j);
            j->seq = NULL;
            j->on_release = NULL;
            seq_settle(m, s); /* may free s */
            answer_job(j, 504, msg);
            continue;
        }
        if (j->queued) {
            job_queue_remove(&m->queue, j);
            snprintf(msg, sizeof msg, "model '%s': deadline of %lld ms exceeded while queued (waited %lld ms)", m->name,
                     budget, (long long)(now - j->enqueued_ms));
            answer_job(j, 504, msg);
            dispatch_arm_idle_timer(m);
        } else if (j->inst && !j->cancelled) {
            inst *in = j->inst;
            int can_cancel = inst_can_cancel(in);
            if (can_cancel && inst_waiting(in, j))
                snprintf(msg, sizeof msg,
                         "model '%s': deadline of %lld ms exceeded while queued at instance %d (pid %d), behind "
                         "the requests it runs; the request is cancelled", m->name, budget, in->id, in->pid);
            else if (j->streaming)
                snprintf(msg, sizeof msg, "model '%s': stream_timeout of %lld ms exceeded on instance %d (pid %d)",
                         m->name, (long long)j->stream_timeout_ms, in->id, in->pid);
            else
                snprintf(msg, sizeof msg,
                         "model '%s': deadline of %lld ms exceeded while running on instance %d (pid %d); %s", m->name,
                         budget, in->id, in->pid,
                         can_cancel ? "the request is cancelled" : "the instance is being replaced");
            if (can_cancel) {
                /* Answered now; the job stays in flight until the worker gives it up (inst_cancel). */
                inst_cancel(in, j);
                j->answered = 1;
                j->on_done(j, 504, msg, 0, NULL, 0);
                continue;
            }
            inst_abandon(in, j);
            answer_job(j, 504, msg);
            if (inst_running(in) && !slot_of(in)->retire) {
                slot_of(in)->replace = 1;
                slot_of(in)->replace_cause = RESTART_DEADLINE;
                model_emit_instance("instance.killed", m, in,
                                    json_pack("{s:s,s:I}", "cause", "deadline", "request", (json_int_t)j->id));
                inst_kill(in, "a request exceeded its deadline");
            }
        }
    }
    arm_deadline_timer();
}

/*
 * A running request whose HTTP/1.1 client has gone is noticed only when
 * something is written to it, which for a long request or a silent stream
 * may be never: every WATCH_MS, while requests run, each one's client is
 * asked (job->client_alive, a peek at the socket), and the worker of one
 * that left is told to CANCEL. (HTTP/2 needs none of this: a reset stream
 * disposes its request at once, and that cancels.)
 */
#define WATCH_MS 250

static void watch_clients(uv_timer_t *t)
{
    int running = 0;
    for (model *m = R.head; m; m = m->next) {
        for (int i = 0; i < m->nslots; i++) {
            inst *in = m->slots[i];
            if (!inst_can_cancel(in))
                continue;
            for (job *j = in->inflight_head; j; j = j->next) {
                if (j->cancelled || j->answered)
                    continue;
                running = 1;
                if (j->client_alive && !j->client_alive(j))
                    inst_cancel(in, j);
            }
        }
    }
    if (!running)
        uv_timer_stop(t);
}

void dispatch_stream_started(job *j)
{
    job_deadline_untrack(j);
    j->deadline_ms = j->stream_timeout_ms > 0 ? now_ms() + (uint64_t)j->stream_timeout_ms : 0;
    if (j->deadline_ms)
        job_deadline_track(j);
    arm_deadline_timer();
}

/* ---- counting: every answer passes here once (metrics.h) ---- */

static void count_answer(job *j, int status, const char *msg, uint8_t type, uint8_t *body, size_t len)
{
    j->answer_cb(j, status, msg, type, body, len);
    /* The model's session update is stored once the whole answer went to a client that waited for it
     * (sessreq.h); a failed request, or one whose client left, changes nothing. */
    if (j->sess && status == 200 && !j->result_broken && !j->failed_status && !j->client_gone && !j->counted)
        sessreq_commit(j->sess, j->model->name);
    if (j->counted) /* cannot happen: a job is answered once; kept so a slip cannot count twice */
        return;
    j->counted = 1;
    if (status == 200 && j->result_broken)
        status = 502; /* what the client got */
    if (j->failed_status) {
        status = j->failed_status;
        j->client_gone = 0;
    }
    uint64_t now = now_us();
    int64_t queue = j->sent_us ? (int64_t)(j->sent_us - j->accepted_us) : -1;
    int64_t compute = j->sent_us ? (int64_t)(now - j->sent_us) : -1;
    int fail = status == 200 && !j->client_gone ? -1 : (int)metrics_fail_reason(status, j->client_gone);
    metrics_answered(&j->model->stats, fail, j->bentry ? j->bentry->rows : 1, now - j->accepted_us, queue, compute);
    if (LOG_DEBUG <= log_threshold) { /* the access log */
        inst *in = j->inst;
        log_with(LOG_DEBUG,
                 &(log_ctx){.model = j->model->name, .instance = in ? in->id : -1, .pid = in ? in->pid : 0,
                            .request = j->id},
                 "%s %llu: %d%s in %.3f ms (queued %.3f ms, ran %.3f ms)",
                 j->kind == PROTO_INFER ? "infer" : "generate", (unsigned long long)j->id, status,
                 fail == FAIL_CANCELED ? " (client gone)" : "", (double)(now - j->accepted_us) / 1000.0,
                 queue >= 0 ? (double)queue / 1000.0 : 0.0, compute >= 0 ? (double)compute / 1000.0 : 0.0);
    }
}

/* ---- requests ---- */

static int takes_work(inst *in)
{
    return inst_ready(in) && !slot_of(in)->retire && !slot_of(in)->replace;
}

/*
 * The ready instance with room for the next job (dispatch_pick), or with
 * by_sequences for a sequence's start: the fewest live sequences first,
 * then the fewest in flight.
 */
static inst *pick(model *m, int by_sequences)
{
    inst *best = NULL;
    int concurrency = m->mf ? m->mf->concurrency : 1;
    for (int k = 0; k < m->nslots; k++) {
        inst *in = m->slots[(m->rr + k) % m->nslots];
        if (!takes_work(in) || in->inflight >= concurrency)
            continue;
        int fewer = by_sequences ? slot_of(in)->sequences - (best ? slot_of(best)->sequences : 0) : 0;
        if (!best || fewer < 0 || (fewer == 0 && in->inflight < best->inflight))
            best = in;
        if (!by_sequences && in->inflight == 0)
            break;
    }
    return best;
}

inst *dispatch_pick(model *m)
{
    return pick(m, 0);
}

inst *dispatch_pick_start(model *m)
{
    return pick(m, 1);
}

/*
 * Every instance holds its concurrency: the one to pipeline j to (inst.h,
 * inst_pipeline_room), or NULL. A pipelined request is committed to its
 * instance: a request of higher priority arriving after it is served after
 * it, so at most `pipeline` requests per instance are ever ahead of their
 * turn.
 */
static inst *pick_pipeline(model *m, const job *j)
{
    inst *best = NULL;
    for (int k = 0; k < m->nslots; k++) {
        inst *in = m->slots[(m->rr + k) % m->nslots];
        if (takes_work(in) && inst_pipeline_room(in, j) && (!best || in->inflight < best->inflight))
            best = in;
    }
    return best;
}

/* Sends one request, in no batch, to in (which has room, or takes it pipelined). */
static void send_alone(model *m, inst *in, job *j)
{
    in->last_busy_ms = now_ms();
    j->sent_us = now_us();
    metrics_dispatched(&m->stats, j->sent_us - j->accepted_us);
    metrics_executed(&m->stats, 1);
    inst_send(in, j);
    if (inst_can_cancel(in) && !uv_is_active((uv_handle_t *)&R.watch_timer))
        uv_timer_start(&R.watch_timer, watch_clients, WATCH_MS, WATCH_MS);
}

/* ---- sequences (seq.h; docs/sessions.md, "Sequences") ---- */

/*
 * A sequence's requests go to the instance that took its start, one at a
 * time and in arrival order: while one runs (or, for a start, waits in the
 * model's queue) the others wait in the sequence's FIFO, never in the
 * model's queue, a batch or a pipeline. A start goes to the ready instance
 * with the fewest live sequences. max_sequence_idle after its last answer,
 * with nothing of it waiting, the sequence is released and its worker
 * told (SEQUENCE_END). When its instance's process ends, the sequence is
 * lost: its requests get 409 until the mark is forgotten, or a new start.
 */

/* A lost mark outlives the sequence's idle time, so a client that comes back late still learns why. */
#define SEQ_LOST_KEEP_MS 60000

static void seq_timer_fire(uv_timer_t *t);

/*
 * The id as messages and log lines show it: the integer, or at most 64
 * bytes of the string with control characters as '?' (a text log line
 * stays one line; the error writer escapes the rest). len is at least 72.
 */
static const char *seq_id_text(const seq *s, char *buf, size_t len)
{
    if (!s->str) {
        snprintf(buf, len, "%llu", (unsigned long long)s->num);
        return buf;
    }
    size_t n = s->str_len > 64 ? 64 : s->str_len;
    for (size_t i = 0; i < n; i++)
        buf[i] = (unsigned char)s->str[i] < 0x20 || s->str[i] == 0x7f ? '?' : s->str[i];
    snprintf(buf + n, len - n, "%s", s->str_len > 64 ? "..." : "");
    utf8_trim_partial(buf);
    return buf;
}

static void seq_arm(model *m)
{
    uint64_t at = seq_next_deadline(&m->seqs), now = now_ms();
    if (!at)
        uv_timer_stop(&m->seq_timer);
    else
        uv_timer_start(&m->seq_timer, seq_timer_fire, at > now ? at - now : 0, 0);
}

/* Takes s off its instance; a retiring instance stops once its last sequence has gone and nothing runs. */
static void seq_unpin(model *m, seq *s)
{
    inst *in = s->inst;
    s->inst = NULL;
    if (!in)
        return;
    slot *sl = slot_of(in);
    assert(sl->sequences > 0);
    sl->sequences--;
    if (sl->retire && sl->sequences == 0 && in->inflight == 0 && in->state == INST_READY)
        inst_stop(in, R.stop_grace_ms);
    (void)m;
}

/* The daemon ends a live sequence itself (why: "idle"): its worker is told, so it can free the sequence's state. */
static void seq_release(model *m, seq *s, const char *why)
{
    char id[96];
    inst *in = s->inst;
    if (in && inst_ready(in)) {
        sb b;
        sb_init(&b, 64);
        sb_adds(&b, "{\"sequence_id\":");
        if (s->str)
            sb_json_str(&b, s->str, s->str_len);
        else
            sb_u64(&b, s->num);
        sb_adds(&b, ",\"reason\":");
        sb_json_str(&b, why, strlen(why));
        sb_addc(&b, '}');
        inst_sequence_end(in, (const uint8_t *)b.p, b.len);
        sb_free(&b);
    }
    if (LOG_DEBUG <= log_threshold)
        MODEL_LOG(LOG_DEBUG, m, "model %s: sequence %s released (%s) from instance %d", m->name,
                  seq_id_text(s, id, sizeof id), why, in ? in->id : -1);
    seq_unpin(m, s);
    seq_remove(&m->seqs, s);
}

/* Answers a job waiting in a FIFO, which was taken out of it first: it lets go of the sequence before it is freed. */
static void answer_detached(job *j, int status, const char *msg)
{
    j->seq = NULL;
    j->on_release = NULL;
    answer_job(j, status, msg);
}

/* Triton's answer to a request of a sequence it does not know, without START. */
static void seq_unknown_msg(const model *m, const job *j, char *msg, size_t len)
{
    if (j->seq_str)
        snprintf(msg, len,
                 "inference request for sequence %.64s%s to model '%s' must specify the START flag on the first "
                 "request of the sequence",
                 j->seq_str, j->seq_str_len > 64 ? "..." : "", m->name);
    else
        snprintf(msg, len,
                 "inference request for sequence %llu to model '%s' must specify the START flag on the first "
                 "request of the sequence",
                 (unsigned long long)j->seq_num, m->name);
}

/*
 * Puts a live sequence where its state says, once nothing of it runs:
 * requests waiting: ready for its instance; an END done: ended; else idle
 * until max_sequence_idle from now.
 */
static void seq_settle(model *m, seq *s)
{
    char id[96];
    if (s->state != SEQ_LIVE || s->running) {
        if (s->state == SEQ_LIVE)
            seq_set_list(&m->seqs, s, SEQ_LIST_NONE, 0);
        return;
    }
    if (s->fifo_head) {
        seq_set_list(&m->seqs, s, SEQ_LIST_READY, 0);
        return;
    }
    if (s->closing) {
        if (LOG_DEBUG <= log_threshold)
            MODEL_LOG(LOG_DEBUG, m, "model %s: sequence %s ended", m->name, seq_id_text(s, id, sizeof id));
        seq_unpin(m, s);
        seq_remove(&m->seqs, s);
        return;
    }
    seq_set_list(&m->seqs, s, SEQ_LIST_IDLE, now_ms() + (uint64_t)m->mf->max_sequence_idle_ms);
    seq_arm(m);
}

/*
 * job_free's hook for a job of a sequence: the request that ran (or
 * waited in the model's queue, a start) has gone, so the next may go.
 */
static void on_sequence_job_released(job *j)
{
    seq *s = j->seq;
    model *m = j->model;
    j->seq = NULL;
    if (j->seq_waiting)
        seq_fifo_remove(&m->seqs, s, j);
    if (s->running != j) {
        seq_settle(m, s);
        return;
    }
    s->running = NULL;
    if (s->state != SEQ_LIVE)
        return;
    if (!s->inst) {
        /* Its start never reached an instance (a deadline, a client gone): the sequence never began. */
        char msg[512];
        job *w;
        while ((w = seq_fifo_pop(&m->seqs, s))) {
            seq_unknown_msg(m, w, msg, sizeof msg);
            answer_detached(w, 400, msg);
        }
        seq_remove(&m->seqs, s);
        return;
    }
    int ready = s->fifo_head != NULL;
    seq_settle(m, s); /* may free s */
    if (ready) /* dispatched from the loop, not from inside the answer that freed j */
        uv_timer_start(&m->seq_timer, seq_timer_fire, 0, 0);
}

static void seq_timer_fire(uv_timer_t *t)
{
    model *m = t->data;
    uint64_t now = now_ms();
    seq *s;
    while ((s = seq_list_head(&m->seqs, SEQ_LIST_IDLE)) && s->until_ms <= now)
        seq_release(m, s, "idle");
    while ((s = seq_list_head(&m->seqs, SEQ_LIST_LOST)) && s->until_ms <= now)
        seq_remove(&m->seqs, s);
    seq_arm(m);
    dispatch_jobs(m);
    dispatch_arm_idle_timer(m);
}

/* Whether a queued job's client left: answered 503 (the caller took it out of where it waited). */
static int left_while_waiting(job *j)
{
    if (!j->waited || !j->client_alive || j->client_alive(j))
        return 0;
    j->client_gone = 1;
    return 1;
}

/* Sends the next request of each ready sequence whose instance has room. */
static void dispatch_sequences(model *m)
{
    int concurrency = m->mf ? m->mf->concurrency : 1;
    for (seq *s = seq_list_head(&m->seqs, SEQ_LIST_READY), *next; s; s = next) {
        next = s->lnext;
        inst *in = s->inst;
        assert(in && !s->running);
        /* A retiring instance still serves its sequences; one being replaced loses them at its exit. */
        if (!inst_ready(in) || slot_of(in)->replace || in->inflight >= concurrency)
            continue;
        job *j;
        while ((j = seq_fifo_pop(&m->seqs, s)) && left_while_waiting(j))
            answer_detached(j, 503, "the client went away while the request waited for its sequence");
        if (!j) {
            seq_settle(m, s);
            continue;
        }
        s->running = j;
        seq_set_list(&m->seqs, s, SEQ_LIST_NONE, 0);
        send_alone(m, in, j);
    }
}

void dispatch_sequences_lost(model *m, inst *in)
{
    char text[600], msg[1024], id[96];
    inst_exit_reason(in, 0, text, sizeof text);
    uint64_t until = now_ms() + (uint64_t)(m->mf && m->mf->max_sequence_idle_ms > SEQ_LOST_KEEP_MS
                                               ? m->mf->max_sequence_idle_ms
                                               : SEQ_LOST_KEEP_MS);
    for (size_t b = 0; b < m->seqs.nbuckets; b++) {
        for (seq *s = m->seqs.buckets[b], *next; s; s = next) {
            next = s->hnext;
            if (s->state != SEQ_LIVE || s->inst != in)
                continue;
            snprintf(msg, sizeof msg,
                     "model '%s': sequence %s was pinned to instance %d (pid %d), which %s; the sequence's state is "
                     "gone: start it again with sequence_start",
                     m->name, seq_id_text(s, id, sizeof id), in->id, in->pid, text);
            job *w;
            while ((w = seq_fifo_pop(&m->seqs, s)))
                answer_detached(w, 409, msg);
            if (s->running) { /* answered by the exit already; it lets go of the sequence when freed */
                s->running->seq = NULL;
                s->running->on_release = NULL;
            }
            MODEL_LOG(LOG_DEBUG, m, "model %s: sequence %s lost with instance %d (pid %d)", m->name, id, in->id,
                      in->pid);
            seq_unpin(m, s);
            seq_mark_lost(&m->seqs, s, msg, until);
        }
    }
    seq_trim_lost(&m->seqs);
    seq_arm(m);
}

void dispatch_drop_sequences(model *m, int status, const char *msg)
{
    for (size_t b = 0; b < m->seqs.nbuckets; b++) {
        for (seq *s = m->seqs.buckets[b]; s; s = s->hnext) {
            job *w;
            while ((w = seq_fifo_pop(&m->seqs, s)))
                answer_detached(w, status, msg);
            if (s->running) {
                s->running->seq = NULL;
                s->running->on_release = NULL;
            }
            if (s->inst)
                slot_of(s->inst)->sequences--;
        }
    }
    seq_table_free(&m->seqs);
    uv_timer_stop(&m->seq_timer);
}

/*
 * Admits a request of a sequence (after the model's own checks): a start
 * of an unknown or lost id begins the sequence and queues in the model; a
 * request of a live one (a start too: Triton ends the old sequence and the
 * new one follows it on the same instance) waits in its FIFO. Returns 1
 * when j was taken.
 */
static int admit_sequence(model *m, job *j, seq *s)
{
    char id[96];
    j->on_release = on_sequence_job_released;
    if (s && s->state == SEQ_LIVE) {
        if (j->seq_start && LOG_DEBUG <= log_threshold) /* debug: a client's habit must not flood the log */
            MODEL_LOG(LOG_DEBUG, m, "model %s: sequence %s started again before it ended; the previous one ends "
                      "early and the new one follows it on instance %d", m->name, seq_id_text(s, id, sizeof id),
                      s->inst ? ((inst *)s->inst)->id : -1);
        s->closing = j->seq_end;
        j->seq = s;
        seq_fifo_push(&m->seqs, s, j);
        if (!s->running)
            seq_settle(m, s);
        dispatch_jobs(m);
        return 1;
    }
    if (s)
        seq_revive(&m->seqs, s);
    else
        s = seq_add(&m->seqs, j->seq_num, j->seq_str, j->seq_str_len);
    s->closing = j->seq_end;
    s->running = j;
    j->seq = s;
    if (LOG_DEBUG <= log_threshold)
        MODEL_LOG(LOG_DEBUG, m, "model %s: sequence %s started", m->name, seq_id_text(s, id, sizeof id));
    return 0;
}

/* ---- dynamic batching (batch.h has the mechanics) ---- */

static void batch_fire(uv_timer_t *t)
{
    dispatch_jobs(t->data);
}

/* A queued job whose client left is answered now instead of joining a batch. */
static int client_gone(job *j)
{
    if (!j->waited || !j->client_alive || j->client_alive(j))
        return 0;
    j->client_gone = 1;
    job_queue_remove(&j->model->queue, j);
    answer_job(j, 503, "the client went away while the request was queued");
    return 1;
}

static int preferred(const manifest *mf, uint64_t rows)
{
    for (int i = 0; i < mf->npreferred; i++)
        if ((uint64_t)mf->preferred_batch_sizes[i] == rows)
            return 1;
    return 0;
}

/*
 * Triton's dynamic batcher, for a model with batching and an instance that
 * takes BATCH: the head of the queue (highest priority, oldest) and the
 * queued requests that can share its batch, in priority then arrival order,
 * up to max_batch_size rows, none split. The batch goes when it is full or
 * at a preferred size, or once its oldest request has waited
 * max_queue_delay; until then the batch timer waits. Returns 1 when
 * something was sent to in, 0 when the batch waits, -1 when the head
 * cannot batch (the caller sends it alone).
 */
static int dispatch_batch(model *m, inst *in)
{
    const manifest *mf = m->mf;
    job *members[JOB_BATCH_MAX];
    int n = 0;
    uint64_t rows = 0;
    for (int l = 1; l <= m->queue.levels && rows < (uint64_t)mf->max_batch_size; l++) {
        for (job *j = m->queue.head[l], *next; j && rows < (uint64_t)mf->max_batch_size && n < JOB_BATCH_MAX;
             j = next) {
            next = j->next;
            if (n == 0 && !j->bentry)
                return -1; /* the head goes alone */
            if (n > 0 && (!batch_compatible(members[0], j) || rows + j->bentry->rows > (uint64_t)mf->max_batch_size))
                continue;
            members[n++] = j;
            rows += j->bentry->rows;
        }
    }
    if (n == 0)
        return m->queue.count ? -1 : 0;
    uint64_t now = now_ms();
    uint64_t oldest = members[0]->enqueued_ms;
    for (int i = 1; i < n; i++)
        if (members[i]->enqueued_ms < oldest)
            oldest = members[i]->enqueued_ms;
    if (rows < (uint64_t)mf->max_batch_size && !preferred(mf, rows) && now - oldest < (uint64_t)mf->max_queue_delay_ms) {
        uv_timer_start(&m->batch_timer, batch_fire, oldest + (uint64_t)mf->max_queue_delay_ms - now, 0);
        return 0;
    }
    uv_timer_stop(&m->batch_timer);
    /* Only now are the clients asked (a peek at each socket): not on every pass while the batch fills. */
    int kept = 0;
    for (int i = 0; i < n; i++) {
        uint64_t r = members[i]->bentry->rows; /* read first: client_gone answers the job, which frees it */
        if (client_gone(members[i]))
            rows -= r;
        else
            members[kept++] = members[i];
    }
    n = kept;
    if (n == 0)
        return 1; /* all answered (their clients left): the caller looks at the queue again */
    job *send = members[0];
    if (n > 1 && !(send = batch_new(m, members, n, rows)))
        send = members[0], n = 1; /* no memory for the batch's frame now: the head goes alone */
    uint64_t us = now_us();
    for (int i = 0; i < n; i++) {
        job_queue_remove(&m->queue, members[i]);
        members[i]->sent_us = us;
        metrics_dispatched(&m->stats, us - members[i]->accepted_us);
    }
    metrics_executed(&m->stats, n > 1 ? rows : members[0]->bentry->rows);
    m->rr = (m->rr + 1) % m->nslots;
    in->last_busy_ms = now;
    inst_send(in, send);
    return 1;
}

void dispatch_jobs(model *m)
{
    if (m->seqs.lists[SEQ_LIST_READY].count)
        dispatch_sequences(m);
    while (m->queue.count) {
        job *head = job_queue_peek(&m->queue);
        inst *best;
        if (head->seq) { /* a sequence's start: never batched or pipelined */
            if (!(best = dispatch_pick_start(m)))
                return;
        } else {
            best = dispatch_pick(m);
            if (!best && !(best = pick_pipeline(m, head)))
                return;
            if (m->mf && m->mf->max_batch_size > 0 && inst_can_batch(best)) {
                int sent = dispatch_batch(m, best);
                if (sent == 0)
                    return; /* the batch waits for more, or for its delay */
                if (sent == 1) {
                    if (inst_can_cancel(best) && !uv_is_active((uv_handle_t *)&R.watch_timer))
                        uv_timer_start(&R.watch_timer, watch_clients, WATCH_MS, WATCH_MS);
                    continue;
                }
            }
        }
        job *j = job_queue_pop(&m->queue);
        if (j->waited && j->client_alive && !j->client_alive(j)) {
            j->client_gone = 1;
            answer_job(j, 503, "the client went away while the request was queued");
            continue;
        }
        if (j->seq) {
            seq *s = j->seq;
            s->inst = best;
            slot_of(best)->sequences++;
            if (LOG_DEBUG <= log_threshold) {
                char id[96];
                MODEL_LOG(LOG_DEBUG, m, "model %s: sequence %s pinned to instance %d (pid %d)", m->name,
                          seq_id_text(s, id, sizeof id), best->id, best->pid);
            }
        }
        m->rr = (m->rr + 1) % m->nslots;
        send_alone(m, best, j);
    }
}

static void idle_fire(uv_timer_t *t)
{
    model *m = t->data;
    if (m->state != MODEL_READY || m->queue.count || m->seqs.waiting)
        return;
    for (int i = 0; i < m->nslots; i++)
        if (m->slots[i]->inflight)
            return;
    MODEL_LOG(LOG_INFO, m, "model %s: idle for its keep_alive; unloading", m->name);
    char msg[64];
    model_unload(m, NULL, msg, sizeof msg);
}

void dispatch_arm_idle_timer(model *m)
{
    if (!m->mf || m->mf->keep_alive_ms < 0 || m->state != MODEL_READY || m->queue.count || m->seqs.waiting)
        return;
    for (int i = 0; i < m->nslots; i++)
        if (m->slots[i]->inflight)
            return;
    uv_timer_start(&m->idle_timer, idle_fire, (uint64_t)m->mf->keep_alive_ms + 1, 0);
}

static int admit(model *m, job *j, char *msg, size_t msglen, int *retry_after)
{
    *retry_after = 1;
    R.last_submit_ms = now_ms();
    if (R.shutting_down) {
        snprintf(msg, msglen, "model '%s': corral is shutting down", m->name);
        return 503;
    }
    if (m->state == MODEL_FAILED) {
        snprintf(msg, msglen, "model '%s' failed: %s", m->name, m->reason);
        *retry_after = 5;
        return 503;
    }
    if (m->state == MODEL_UNLOADING) {
        snprintf(msg, msglen, "model '%s' is unloading", m->name);
        return 503;
    }
    seq *s = NULL;
    if (job_in_sequence(j)) {
        s = seq_find(&m->seqs, j->seq_num, j->seq_str, j->seq_str_len);
        if (!j->seq_start && s && s->state == SEQ_LOST) {
            snprintf(msg, msglen, "%s", s->lost_msg);
            return 409;
        }
        if (!j->seq_start && (!s || s->closing)) {
            seq_unknown_msg(m, j, msg, msglen);
            return 400;
        }
    }
    if (m->state == MODEL_UNLOADED) {
        int rc = model_load(m, 0, NULL, msg, msglen);
        if (rc)
            return rc;
        if (m->state == MODEL_FAILED) {
            snprintf(msg, msglen, "model '%s' failed: %s", m->name, m->reason);
            return 503;
        }
    }
    if (j->seq_start && (!s || s->state == SEQ_LOST) && m->seqs.live >= SEQ_LIVE_MAX) {
        snprintf(msg, msglen, "model '%s' has %zu live sequences, the most it keeps; end some (sequence_end) or "
                 "let them idle out (max_sequence_idle)", m->name, m->seqs.live);
        return 503;
    }
    if (m->queue.count + m->seqs.waiting >= (size_t)m->mf->max_queue) {
        snprintf(msg, msglen, "model '%s' has %zu requests waiting (max_queue %d)", m->name,
                 m->queue.count + m->seqs.waiting, m->mf->max_queue);
        return 503;
    }
    if (j->priority == 0)
        j->priority = m->mf->default_priority;
    j->answer_cb = j->on_done;
    j->on_done = count_answer;
    j->enqueued_ms = now_ms();
    if (!j->deadline_ms)
        j->deadline_ms = j->enqueued_ms + (uint64_t)m->mf->timeout_ms;
    j->stream_timeout_ms = m->mf->stream_timeout_ms;
    job_deadline_track(j);
    arm_deadline_timer();
    uv_timer_stop(&m->idle_timer);
    if (job_in_sequence(j) && admit_sequence(m, j, s)) {
        j->waited = 1;
        return 0;
    }
    job_queue_push(&m->queue, j);
    dispatch_jobs(m);
    j->waited = 1; /* harmless when already sent: only queued jobs are checked */
    return 0;
}

int model_submit(model *m, job *j, char *msg, size_t msglen, int *retry_after)
{
    j->accepted_us = now_us();
    int status = admit(m, j, msg, msglen, retry_after);
    if (status) /* refused before it was queued: the caller answers it */
        metrics_answered(&m->stats, (int)metrics_fail_reason(status, 0), 1, 0, -1, -1);
    return status;
}

int model_cancel(job *j)
{
    j->client_gone = 1;
    if (j->seq_waiting) {
        model *m = j->model;
        seq *s = j->seq;
        seq_fifo_remove(&m->seqs, s, j);
        j->seq = NULL;
        j->on_release = NULL;
        seq_settle(m, s);
        metrics_answered(&m->stats, FAIL_CANCELED, 1, now_us() - j->accepted_us, -1, -1);
        j->counted = 1;
        return 1;
    }
    if (!j->queued) {
        if (j->inst)
            inst_cancel(j->inst, j); /* the worker stops, when it can be told: the instance is free sooner */
        return 0;
    }
    model *m = j->model;
    job_queue_remove(&m->queue, j);
    metrics_answered(&m->stats, FAIL_CANCELED, 1, now_us() - j->accepted_us, -1, -1);
    j->counted = 1;
    dispatch_arm_idle_timer(m);
    return 1;
}
