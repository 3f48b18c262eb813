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
#include "sessreq.h"

#include <stdio.h>

/* ---- deadlines ---- */

static void deadline_fire(uv_timer_t *t);

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

inst *dispatch_pick(model *m)
{
    inst *best = NULL;
    int concurrency = m->mf ? m->mf->concurrency : 1;
    for (int k = 0; k < m->nslots; k++) {
        inst *in = m->slots[(m->rr + k) % m->nslots];
        if (!takes_work(in) || in->inflight >= concurrency)
            continue;
        if (!best || in->inflight < best->inflight)
            best = in;
        if (in->inflight == 0)
            break;
    }
    return best;
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
    while (m->queue.count) {
        inst *best = dispatch_pick(m);
        if (!best && !(best = pick_pipeline(m, job_queue_peek(&m->queue))))
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
        job *j = job_queue_pop(&m->queue);
        if (j->waited && j->client_alive && !j->client_alive(j)) {
            j->client_gone = 1;
            answer_job(j, 503, "the client went away while the request was queued");
            continue;
        }
        m->rr = (m->rr + 1) % m->nslots;
        best->last_busy_ms = now_ms();
        j->sent_us = now_us();
        metrics_dispatched(&m->stats, j->sent_us - j->accepted_us);
        metrics_executed(&m->stats, 1);
        inst_send(best, j);
        if (inst_can_cancel(best) && !uv_is_active((uv_handle_t *)&R.watch_timer))
            uv_timer_start(&R.watch_timer, watch_clients, WATCH_MS, WATCH_MS);
    }
}

static void idle_fire(uv_timer_t *t)
{
    model *m = t->data;
    if (m->state != MODEL_READY || m->queue.count)
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
    if (!m->mf || m->mf->keep_alive_ms < 0 || m->state != MODEL_READY || m->queue.count)
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
    if (m->state == MODEL_UNLOADED) {
        int rc = model_load(m, 0, NULL, msg, msglen);
        if (rc)
            return rc;
        if (m->state == MODEL_FAILED) {
            snprintf(msg, msglen, "model '%s' failed: %s", m->name, m->reason);
            return 503;
        }
    }
    if (m->queue.count >= (size_t)m->mf->max_queue) {
        snprintf(msg, msglen, "model '%s' has %zu requests waiting (max_queue %d)", m->name, m->queue.count,
                 m->mf->max_queue);
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
