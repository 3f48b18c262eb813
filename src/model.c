/*
 * model — one model's lifecycle and supervision: load, unload, scale and
 * failure, its slots and the spawn settings they start with, the events
 * of its instances, the restart budget, worker output, and the /v1 and v2
 * views. See model.h; the registry (registry.c) and the scheduler
 * (dispatch.c) share its structs through model_internal.h.
 */
#include "model_internal.h"
#include "pull.h"

#include "classify.h"

#include "clock.h"
#include "events.h"
#include "log.h"
#include "modelcfg.h"
#include "proto.h"
#include "sb.h"
#include "state.h"
#include "utf8.h"
#include "xmalloc.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define LOG_RING_BYTES (256 * 1024)
#define LOG_LINES_PER_S 100
#define LOG_LINES_BURST 500
#define LOG_COPY_MAX 1024

extern char **environ;

static void on_ready(inst *in);
static void on_load_failed(inst *in, const char *msg);
static void on_exited(inst *in);
static void on_job_finished(inst *in);
static void on_returned(inst *in, job *j);
static void on_log_line(inst *in, int stream, const char *line, size_t len, size_t dropped);
static void on_cancel_ignored(inst *in, job *j);
static void on_hung(inst *in);
static void on_stream_start(inst *in, job *j);
static const inst_events events = {
    .on_ready = on_ready,
    .on_load_failed = on_load_failed,
    .on_exit = on_exited,
    .on_job_finished = on_job_finished,
    .on_returned = on_returned,
    .on_log_line = on_log_line,
    .on_cancel_ignored = on_cancel_ignored,
    .on_hung = on_hung,
    .on_stream_start = on_stream_start,
};

static void check_load_done(model *m);
static int scale_to(model *m, int instances, char *msg, size_t msglen);

const char *model_name(const model *m)
{
    return m->name;
}

const struct model_stats *model_stats_get(const model *m)
{
    return &m->stats;
}

size_t model_queue_depth(const model *m)
{
    return m->queue.count + m->seqs.waiting; /* a sequence's requests wait in its FIFO, not the queue */
}

size_t model_sequences_active(const model *m)
{
    return m->seqs.live;
}

int model_instances(const model *m, inst *const **slots)
{
    *slots = m->slots;
    return m->nslots;
}

int model_changed(const model *m)
{
    return m->changed;
}

int model_is_runtime(const model *m)
{
    return m->spec != NULL;
}

model_state model_get_state(const model *m)
{
    return m->state;
}

const char *model_reason(const model *m)
{
    if (m->state == MODEL_FAILED)
        return m->reason;
    if (!m->mf && m->broken)
        return m->broken;
    return NULL;
}

const manifest *model_manifest(const model *m)
{
    return m->mf;
}

const char *model_state_name(model_state s)
{
    switch (s) {
    case MODEL_UNLOADED: return "unloaded";
    case MODEL_LOADING: return "loading";
    case MODEL_READY: return "ready";
    case MODEL_UNLOADING: return "unloading";
    case MODEL_FAILED: return "failed";
    }
    return "unknown";
}

void model_set_state(model *m, model_state s, const char *reason)
{
    if (reason && reason != m->reason)
        snprintf(m->reason, sizeof m->reason, "%s", reason);
    if (m->state == s)
        return;
    if (s == MODEL_FAILED)
        MODEL_LOG(LOG_ERROR, m, "model %s: %s -> failed: %s", m->name, model_state_name(m->state), m->reason);
    else
        MODEL_LOG(LOG_INFO, m, "model %s: %s -> %s", m->name, model_state_name(m->state), model_state_name(s));
    static const char *const kinds[] = {
        [MODEL_UNLOADED] = "model.unloaded", [MODEL_LOADING] = "model.loading", [MODEL_READY] = "model.loaded",
        [MODEL_UNLOADING] = "model.unloading", [MODEL_FAILED] = "model.failed"};
    json_t *data = json_pack("{s:s,s:s,s:s}", "model", m->name, "from", model_state_name(m->state), "state",
                             model_state_name(s));
    if (s == MODEL_FAILED)
        json_object_set_new(data, "reason", utf8_json_string(m->reason, strlen(m->reason)));
    m->state = s;
    if (s == MODEL_UNLOADED || s == MODEL_FAILED)
        model_drop_labels(m); /* the next load reads labels.txt again */
    events_emit(kinds[s], data);
}

void model_emit_instance(const char *kind, model *m, const inst *in, json_t *extra)
{
    json_t *data = json_pack("{s:s,s:i}", "model", m->name, "instance", in->id);
    if (in->pid > 0)
        json_object_set_new(data, "pid", json_integer(in->pid));
    if (extra) {
        json_object_update(data, extra);
        json_decref(extra);
    }
    events_emit(kind, data);
}

void model_emit_scaled(model *m, int from, int to, const char *why)
{
    events_emit("model.scaled", json_pack("{s:s,s:i,s:i,s:s}", "model", m->name, "from", from, "to", to, "by", why));
}

/* ---- answering ---- */

void model_fail_queue(model *m, int status, const char *msg)
{
    dispatch_drop_sequences(m, status, msg);
    job *j;
    while ((j = job_queue_pop(&m->queue)))
        answer_job(j, status, msg);
}

void model_notify(lifecycle_waiter **list, int status, const char *msg)
{
    lifecycle_waiter *w = *list;
    *list = NULL;
    while (w) {
        lifecycle_waiter *next = w->next;
        w->on_done(w->ctx, status, msg);
        w = next;
    }
}

void model_forget_waiter(model *m, lifecycle_waiter *w)
{
    lifecycle_waiter **lists[] = {&m->load_waiters, &m->unload_waiters};
    for (int i = 0; i < 2; i++)
        for (lifecycle_waiter **p = lists[i]; *p; p = &(*p)->next)
            if (*p == w) {
                *p = w->next;
                return;
            }
}

/* ---- spawning ---- */

/* Sets KEY=VALUE in an environment list, replacing an entry with the same key. */
static void env_set(char ***env, size_t *n, const char *kv)
{
    size_t klen = strcspn(kv, "=");
    for (size_t i = 0; i < *n; i++) {
        if (strncmp((*env)[i], kv, klen) == 0 && (*env)[i][klen] == '=') {
            free((*env)[i]);
            (*env)[i] = xstrdup(kv);
            return;
        }
    }
    *env = xrealloc(*env, (*n + 2) * sizeof **env);
    (*env)[(*n)++] = xstrdup(kv);
    (*env)[*n] = NULL;
}

/* Removes KEY from an environment list: a worker is not told of a directory the daemon has none of. */
static void env_unset(char **env, size_t *n, const char *key)
{
    size_t klen = strlen(key);
    for (size_t i = 0; i < *n; i++) {
        if (strncmp(env[i], key, klen) == 0 && env[i][klen] == '=') {
            free(env[i]);
            memmove(&env[i], &env[i + 1], (*n - i) * sizeof *env); /* the NULL terminator moves too */
            (*n)--;
            return;
        }
    }
}

/* KEY=DIR, or no KEY when dir is NULL. */
static void env_dir(char ***env, size_t *n, const char *key, const char *dir)
{
    if (!dir) {
        env_unset(*env, n, key);
        return;
    }
    sb kv = {0};
    sb_printf(&kv, "%s=%s", key, dir);
    char *s = sb_take(&kv, NULL);
    env_set(env, n, s);
    free(s);
}

static void free_strv(char **v)
{
    if (!v)
        return;
    for (char **p = v; *p; p++)
        free(*p);
    free(v);
}

int model_start_slot(model *m, inst *in)
{
    const manifest *mf = m->mf;
    char entry[8192], kv[8192], err[512];
    snprintf(entry, sizeof entry, "%s/%s", m->dir, mf->entrypoint);

    size_t nenv = 0;
    char **env = xcalloc(1, sizeof *env);
    for (char **e = environ; *e; e++)
        env_set(&env, &nenv, *e);
    const char *old_pp = getenv("PYTHONPATH");
    snprintf(kv, sizeof kv, "PYTHONPATH=%s%s%s", R.python_sdk_dir, old_pp && *old_pp ? ":" : "",
             old_pp ? old_pp : "");
    env_set(&env, &nenv, kv);
    env_set(&env, &nenv, "PYTHONUNBUFFERED=1");
    env_set(&env, &nenv, "CORRAL_FD=3");
    env_set(&env, &nenv, "CORRAL_HEALTH_FD=4");
    env_set(&env, &nenv, "CORRAL_SHM_FDS=5,6");
    env_set(&env, &nenv, "CORRAL_PROTOCOL=1");
    snprintf(kv, sizeof kv, "CORRAL_MODEL=%s", m->name);
    env_set(&env, &nenv, kv);
    snprintf(kv, sizeof kv, "CORRAL_INSTANCE=%d", in->id);
    env_set(&env, &nenv, kv);
    snprintf(kv, sizeof kv, "CORRAL_MODEL_DIR=%s", m->dir);
    env_set(&env, &nenv, kv);
    env_dir(&env, &nenv, "CORRAL_SAMPLES_DIR", R.samples_abs);
    env_dir(&env, &nenv, "CORRAL_EXTERNAL_MODELS_DIR", R.external_abs);
    env_dir(&env, &nenv, "CORRAL_VARIANT_DIR", m->variant_dir); /* a variant's own files; unset for any other */
    for (char **e = mf->env; *e; e++)
        env_set(&env, &nenv, *e);

    size_t nargs = 0;
    while (mf->args[nargs])
        nargs++;
    char **argv = xcalloc(nargs + 3, sizeof *argv);
    const char *file;
    size_t a = 0;
    if (mf->runtime == RUNTIME_PYTHON) {
        file = mf->python;
        argv[a++] = mf->python;
    } else {
        file = entry;
    }
    argv[a++] = entry;
    for (size_t i = 0; i < nargs; i++)
        argv[a++] = mf->args[i];

    json_t *load = json_pack("{s:s, s:o, s:i, s:s, s:i, s:i, s:O}", "model", m->name, "model_dir",
                             utf8_json_string(m->dir, strlen(m->dir)),
                             "instance_id", in->id, "device", "cpu", "concurrency", mf->concurrency,
                             "stream_window", (int)PROTO_STREAM_WINDOW, "parameters", mf->parameters);
    if (m->variant_dir)
        json_object_set_new(load, "variant_dir", utf8_json_string(m->variant_dir, strlen(m->variant_dir)));
    char *load_json = json_dumps(load, JSON_COMPACT);
    json_decref(load);

    int rc;
    if (!load_json) { /* cannot happen: every string in it is valid UTF-8 (utf8.h) */
        snprintf(err, sizeof err, "cannot serialise the LOAD message");
        rc = -EINVAL;
    } else if (access(entry, mf->runtime == RUNTIME_PYTHON ? R_OK : X_OK) < 0) {
        snprintf(err, sizeof err, "entrypoint '%s' is not %s: %s", entry,
                 mf->runtime == RUNTIME_PYTHON ? "readable" : "executable", strerror(errno));
        rc = -errno;
    } else {
        inst_spawn sp = {.file = file, .argv = argv, .env = env, .cwd = m->dir, .load_json = load_json,
                         .load_timeout_ms = mf->load_timeout_ms, .health_interval_ms = mf->health_interval_ms,
                         .health_timeout_ms = mf->health_timeout_ms, .stop_grace_ms = R.stop_grace_ms,
                         .concurrency = mf->concurrency, .pipeline = mf->pipeline};
        rc = inst_start(in, &sp, err, sizeof err);
        if (rc == 0)
            model_emit_instance("instance.started", m, in, NULL);
    }
    free(load_json);
    free(argv);
    free_strv(env);
    if (rc < 0) {
        char reason[1024];
        snprintf(reason, sizeof reason, "instance %d cannot start: %s", in->id, err);
        MODEL_LOG(LOG_ERROR, m, "model %s: %s", m->name, reason);
        /* Nothing to retry: the same spawn would fail the same way. */
        model_set_state(m, MODEL_FAILED, reason);
        return rc;
    }
    return 0;
}

static int free_slot_id(model *m)
{
    for (int id = 0;; id++) {
        int used = 0;
        for (int i = 0; i < m->nslots; i++)
            if (m->slots[i]->id == id)
                used = 1;
        if (!used)
            return id;
    }
}

inst *model_add_slot(model *m)
{
    slot *s = xcalloc(1, sizeof *s);
    int id = free_slot_id(m);
    char label[256], owner_label[256]; /* names are at most 128 bytes (model_name_valid) */
    snprintf(label, sizeof label, "model %s instance %d", m->name, id);
    snprintf(owner_label, sizeof owner_label, "model '%s'", m->name);
    inst_init(&s->in, R.loop, &events, id, label, owner_label, m->name, m);
    uv_timer_init(R.loop, &s->restart_timer);
    s->restart_timer.data = s;
    m->slots = xrealloc(m->slots, (size_t)(m->nslots + 1) * sizeof *m->slots);
    m->slots[m->nslots++] = &s->in;
    return &s->in;
}

static void restart_timer_closed(uv_handle_t *h)
{
    free(h->data);
}

/* The inst is closed; the slot goes with its restart timer. */
static void on_inst_closed(inst *in)
{
    slot *s = slot_of(in);
    uv_close((uv_handle_t *)&s->restart_timer, restart_timer_closed);
}

static void remove_slot(model *m, inst *in)
{
    for (int i = 0; i < m->nslots; i++) {
        if (m->slots[i] == in) {
            memmove(&m->slots[i], &m->slots[i + 1], (size_t)(m->nslots - i - 1) * sizeof *m->slots);
            m->nslots--;
            break;
        }
    }
    uv_timer_stop(&slot_of(in)->restart_timer); /* a slot being removed is not restarted */
    inst_close(in, on_inst_closed);
}

static int count_slots(model *m, inst_state s)
{
    int n = 0;
    for (int i = 0; i < m->nslots; i++)
        if (m->slots[i]->state == s && !slot_of(m->slots[i])->retire)
            n++;
    return n;
}

/* Stops every process of the model; used by unload, failure and shutdown. */
void model_stop_all(model *m)
{
    for (int i = 0; i < m->nslots; i++) {
        inst *in = m->slots[i];
        uv_timer_stop(&slot_of(in)->restart_timer);
        slot_of(in)->retire = 1;
        if (in->state == INST_STARTING || (in->state == INST_READY && in->inflight == 0))
            inst_stop(in, R.stop_grace_ms);
    }
    /* Slots with no process can go now; the others go when they exit. */
    for (int i = m->nslots - 1; i >= 0; i--)
        if (m->slots[i]->state == INST_IDLE)
            remove_slot(m, m->slots[i]);
}

void model_fail(model *m, const char *reason)
{
    model_set_state(m, MODEL_FAILED, reason);
    char msg[1200];
    snprintf(msg, sizeof msg, "model '%s' failed: %s", m->name, reason);
    model_stop_all(m);
    model_fail_queue(m, 503, msg);
    model_notify(&m->load_waiters, 503, msg);
    model_check_unload_done(m);
}

/* ---- instance events ---- */

static void on_ready(inst *in)
{
    model *m = in->data;
    if (slot_of(in)->retire) {
        inst_stop(in, R.stop_grace_ms);
        return;
    }
    model_emit_instance("instance.ready", m, in,
                        json_pack("{s:I}", "load_ms", (json_int_t)(in->ready_ms - in->started_ms)));
    if (m->load_started_us) {
        m->stats.load_seconds = (double)(now_us() - m->load_started_us) / 1e6;
        m->load_started_us = 0;
    }
    if (m->state == MODEL_LOADING)
        model_set_state(m, MODEL_READY, NULL);
    dispatch_jobs(m);
    check_load_done(m);
}

static void on_load_failed(inst *in, const char *msg)
{
    model *m = in->data;
    char reason[1200];
    snprintf(reason, sizeof reason, "load failed in instance %d (pid %d): %s", in->id, in->pid, msg);
    if (m->state == MODEL_LOADING || m->state == MODEL_READY)
        model_fail(m, reason);
}

static void restart_fire(uv_timer_t *t)
{
    slot *s = t->data;
    inst *in = &s->in;
    model *m = in->data;
    if (s->retire || (m->state != MODEL_LOADING && m->state != MODEL_READY) || (R.shutting_down && !m->queue.count))
        return;
    if (inst_busy(in)) { /* handles of the old process still closing: try again shortly */
        uv_timer_start(&s->restart_timer, restart_fire, 5, 0);
        return;
    }
    s->restarts++;
    if (model_start_slot(m, in) < 0)
        model_fail(m, m->reason);
}

/* The restart budget and backoff: a pure function of its arguments (model_internal.h). */
void restart_record(uint64_t *restarts_at, int *nrestarts, uint64_t now)
{
    if (*nrestarts == RESTART_HISTORY) { /* full: the oldest goes, the newest is last */
        memmove(restarts_at, restarts_at + 1, (RESTART_HISTORY - 1) * sizeof *restarts_at);
        (*nrestarts)--;
    }
    restarts_at[(*nrestarts)++] = now;
}

int64_t restart_delay(const restart_policy *p, const uint64_t *restarts_at, int nrestarts, uint64_t now,
                      uint64_t ready_ms, int *recent)
{
    *recent = 0;
    for (int i = 0; i < nrestarts; i++)
        if (now - restarts_at[i] <= (uint64_t)p->window_ms)
            (*recent)++;
    if (*recent >= p->max_restarts)
        return RESTART_GIVE_UP;
    /* Immediate restart after a long healthy run; exponential backoff otherwise. */
    uint64_t healthy = ready_ms ? now - ready_ms : 0;
    uint64_t delay;
    if (*recent == 0 && healthy > (uint64_t)p->window_ms)
        delay = 0;
    else {
        delay = (uint64_t)p->backoff_min_ms;
        for (int i = 0; i < *recent && delay < (uint64_t)p->backoff_max_ms; i++)
            delay *= 2;
        if (delay > (uint64_t)p->backoff_max_ms)
            delay = (uint64_t)p->backoff_max_ms;
    }
    return (int64_t)delay;
}

/* Like a missed PONG, but a replacement, not a crash: the request it would not give up was timed out or abandoned. */
static void on_cancel_ignored(inst *in, job *j)
{
    char why[160];
    snprintf(why, sizeof why, "ignored CANCEL of request %llu for %d ms", (unsigned long long)j->id,
             INST_CANCEL_GRACE_MS);
    if (!slot_of(in)->retire) {
        slot_of(in)->replace = 1;
        slot_of(in)->replace_cause = RESTART_HANG;
    }
    model_emit_instance("instance.killed", (model *)in->data, in, json_pack("{s:s,s:s}", "cause", "hang", "why", why));
    inst_kill(in, why);
}

static void on_hung(inst *in)
{
    model_emit_instance("instance.killed", (model *)in->data, in, json_pack("{s:s,s:s}", "cause", "hang", "why", in->fault));
}

static void on_stream_start(inst *in, job *j)
{
    model *m = in->data;
    metrics_first_chunk(&m->stats, now_us() - j->accepted_us);
    dispatch_stream_started(j);
}

/* instance.exited: how the process ended, and whether the daemon meant it to. */
static void emit_exited(model *m, inst *in, int expected)
{
    char text[96], why[600];
    inst_exit_text(in, text, sizeof text);
    inst_exit_reason(in, 1, why, sizeof why);
    json_t *extra = json_pack("{s:s,s:o,s:b}", "exit", text, "why", utf8_json_string(why, strlen(why)), "expected",
                              expected);
    if (inst_exit_signal(in))
        json_object_set_new(extra, "signal", json_integer(inst_exit_signal(in)));
    else
        json_object_set_new(extra, "status", json_integer(inst_exit_status(in)));
    model_emit_instance("instance.exited", m, in, extra);
}

static void on_exited(inst *in)
{
    model *m = in->data;
    slot *s = slot_of(in);
    dispatch_sequences_lost(m, in);
    emit_exited(m, in, s->retire || s->replace || m->state == MODEL_UNLOADING || m->state == MODEL_UNLOADED ||
                           m->state == MODEL_FAILED || R.shutting_down);
    /* During shutdown a crashed instance is still replaced while its model has queued work to drain. */
    if (s->retire || m->state == MODEL_UNLOADING || m->state == MODEL_FAILED || (R.shutting_down && !m->queue.count) ||
        m->state == MODEL_UNLOADED) {
        remove_slot(m, in);
        model_check_unload_done(m);
        registry_check_shutdown_done();
        dispatch_jobs(m);
        return;
    }
    if (in->load_error)
        return; /* on_load_failed already failed the model */
    if (s->replace) {
        /* Stopped on purpose (a deadline, the memory limit): not a crash. */
        s->replace = 0;
        m->stats.restarts[s->replace_cause]++;
        MODEL_LOG(LOG_INFO, m, "model %s instance %d: replacing it", m->name, in->id);
        model_emit_instance("instance.restarting", m, in,
                            json_pack("{s:i,s:s}", "delay_ms", 0, "cause", s->replace_cause == RESTART_MEMORY ? "memory"
                                                                         : s->replace_cause == RESTART_HANG   ? "hang"
                                                                                                              : "deadline"));
        uv_timer_start(&s->restart_timer, restart_fire, 1, 0);
        return;
    }

    /* An unexpected exit: count it against the restart budget. */
    uint64_t now = now_ms();
    const manifest *mf = m->mf;
    restart_policy policy = {mf->max_restarts, mf->restart_window_ms, mf->backoff_min_ms, mf->backoff_max_ms};
    int recent;
    int64_t delay = restart_delay(&policy, m->restarts_at, m->nrestarts, now, in->ready_ms, &recent);
    if (delay == RESTART_GIVE_UP) {
        char why[600], reason[1024];
        inst_exit_reason(in, 1, why, sizeof why);
        snprintf(reason, sizeof reason, "instance %d (pid %d) %s; %d restarts within %lld ms exhausted the budget",
                 in->id, in->pid, why, recent, (long long)mf->restart_window_ms);
        model_fail(m, reason);
        return;
    }
    restart_record(m->restarts_at, &m->nrestarts, now);
    m->stats.restarts[in->hung ? RESTART_HANG : RESTART_CRASH]++;
    model_emit_instance("instance.restarting", m, in,
                        json_pack("{s:I,s:s}", "delay_ms", (json_int_t)delay, "cause", in->hung ? "hang" : "crash"));
    MODEL_LOG(LOG_INFO, m, "model %s instance %d: restarting in %llu ms", m->name, in->id, (unsigned long long)delay);
    if (count_slots(m, INST_READY) == 0 && m->state == MODEL_READY)
        model_set_state(m, MODEL_LOADING, NULL);
    uv_timer_start(&s->restart_timer, restart_fire, delay ? (uint64_t)delay : 1, 0);
    check_load_done(m);
}

static void on_job_finished(inst *in)
{
    model *m = in->data;
    slot *s = slot_of(in);
    m->last_used_ms = now_ms();
    in->last_busy_ms = m->last_used_ms;
    /* With a memory limit, a leak is caught after the request that caused it, not up to a tick later. */
    if (m->mf && m->mf->memory_limit && in->state == INST_READY && !s->replace) {
        uint64_t rss = inst_worker_rss(in);
        if (rss > in->rss_bytes)
            in->rss_bytes = rss;
        registry_check_memory_limit(m, in);
    }
    /* A retiring instance serves its live sequences to their end (or idle release) first. */
    if ((s->retire || s->replace || m->state == MODEL_UNLOADING) && in->inflight == 0 && in->state == INST_READY &&
        (s->sequences == 0 || s->replace || m->state == MODEL_UNLOADING))
        inst_stop(in, R.stop_grace_ms);
    dispatch_jobs(m);
    if (R.shutting_down)
        registry_drain_model(m);
    dispatch_arm_idle_timer(m);
}

/*
 * A pipelined request the dead worker never started: back to the head of
 * its level (it had been there), to go to another instance now or to the
 * replacement. Its deadline still runs; its client still waits.
 */
static void on_returned(inst *in, job *j)
{
    model *m = in->data;
    j->sent_us = 0;
    metrics_returned(&m->stats);
    if (m->state == MODEL_UNLOADING || m->state == MODEL_UNLOADED) {
        /* Its queue was answered when the unload began: nothing would serve it now. */
        char msg[300];
        snprintf(msg, sizeof msg, "model '%s' is unloading; instance %d (pid %d) died before starting the request",
                 m->name, in->id, in->pid);
        answer_job(j, 503, msg);
        return;
    }
    MODEL_LOG(LOG_INFO, m, "model %s: request %llu was pipelined to instance %d (pid %d), which died before starting "
              "it; queued again", m->name, (unsigned long long)j->id, in->id, in->pid);
    job_queue_push_front(&m->queue, j);
    dispatch_jobs(m);
}

/*
 * Worker output goes to the model's ring (logring.h, GET /v1/models/NAME/logs),
 * which keeps the newest LOG_RING_BYTES and counts what it dropped, and to the
 * daemon's own log at most LOG_LINES_PER_S lines a second per model (a
 * burst of LOG_LINES_BURST), each cut to LOG_COPY_MAX bytes: a chatty or
 * hostile worker cannot flood the operator's log. Lines held back are
 * counted and reported in one line when logging resumes.
 */
static void on_log_line(inst *in, int stream, const char *line, size_t len, size_t dropped)
{
    model *m = in->data;
    char prefix[64], suffix[64] = "";
    int plen = snprintf(prefix, sizeof prefix, "[%d %s] ", in->id, stream == 1 ? "out" : "err");
    int slen = dropped ? snprintf(suffix, sizeof suffix, " [... %zu more bytes of this line dropped]", dropped) : 0;
    if (!m->logs.cap)
        m->logs.cap = LOG_RING_BYTES;
    /* Never too long: lines are capped at INST_LINE_MAX, far below the ring. */
    logring_append(&m->logs, prefix, (size_t)plen, line, len, suffix, (size_t)slen);

    uint64_t now = now_ms();
    m->log_tokens += (double)(now - m->log_refill_ms) * LOG_LINES_PER_S / 1000.0;
    if (m->log_tokens > LOG_LINES_BURST)
        m->log_tokens = LOG_LINES_BURST;
    m->log_refill_ms = now;
    if (m->log_tokens < 1) {
        m->log_held_lines++;
        m->log_held_bytes += len + dropped;
        return;
    }
    m->log_tokens -= 1;
    if (m->log_held_lines) {
        MODEL_LOG(LOG_WARN, m, "%s: %llu lines (%llu bytes) of worker output were not copied here (over %d lines/s); "
                 "GET /v1/models/%s/logs keeps the newest",
                 m->name, (unsigned long long)m->log_held_lines, (unsigned long long)m->log_held_bytes,
                 LOG_LINES_PER_S, m->name);
        m->log_held_lines = m->log_held_bytes = 0;
    }
    size_t shown = utf8_cut(line, len, LOG_COPY_MAX);
    log_worker_line(&(log_ctx){.model = m->name, .instance = in->id, .pid = in->pid}, stream == 1 ? "stdout" : "stderr",
                    line, shown, shown < len || dropped);
}

const char *model_logs(model *m, size_t *len, size_t *start_cut)
{
    *len = m->logs.len;
    *start_cut = m->logs.cut;
    return m->logs.buf ? m->logs.buf : "";
}

/* ---- load, unload, scale ---- */

static void check_load_done(model *m)
{
    if (!m->load_waiters)
        return;
    for (int i = 0; i < m->nslots; i++) {
        inst *in = m->slots[i];
        slot *s = slot_of(in);
        if (s->retire)
            continue;
        if (in->state == INST_STARTING || (in->state == INST_IDLE && uv_is_active((uv_handle_t *)&s->restart_timer)))
            return;
    }
    if (count_slots(m, INST_READY) > 0) {
        model_notify(&m->load_waiters, 200, NULL);
    } else {
        char msg[1200];
        snprintf(msg, sizeof msg, "model '%s' has no ready instance: %s", m->name,
                 m->reason[0] ? m->reason : "every instance failed to start");
        model_notify(&m->load_waiters, 503, msg);
    }
}

void model_take_scan_dirs(model *m)
{
    if (!m->scan_dir)
        return;
    free(m->dir);
    free(m->variant_dir);
    m->dir = xstrdup(m->scan_dir);
    m->variant_dir = m->scan_variant_dir ? xstrdup(m->scan_variant_dir) : NULL;
}

/* mf (owned) with its override (owned, or NULL), of the last scan, becomes what the model loads with. */
static void install_manifest(model *m, manifest *mf, json_t *override)
{
    model_take_scan_dirs(m);
    manifest_free(m->mf);
    manifest_free(m->next_mf);
    m->next_mf = NULL;
    m->changed = 0;
    m->mf = mf;
    json_decref(m->override);
    m->override = override;
}

static void drop_reload(model *m)
{
    manifest_free(m->reload_mf);
    json_decref(m->reload_override);
    m->reload_mf = NULL;
    m->reload_override = NULL;
}

/* The unload of a reload is done: start the model with its new manifest; a refusal answers its waiters. */
static void start_reload(model *m)
{
    install_manifest(m, m->reload_mf, m->reload_override);
    m->reload_mf = NULL;
    m->reload_override = NULL;
    MODEL_LOG(LOG_INFO, m, "model %s: reloading with %s", m->name, m->override ? "the load's config" : "model.yaml");
    char msg[1200];
    int status = model_load(m, m->reload_instances, NULL, msg, sizeof msg);
    if (status) {
        snprintf(m->reason, sizeof m->reason, "%s", msg);
        model_notify(&m->load_waiters, status, msg);
    }
}

void model_check_unload_done(model *m)
{
    for (int i = 0; i < m->nslots; i++)
        if (m->slots[i]->state != INST_IDLE)
            return;
    if (m->state == MODEL_UNLOADING) {
        model_set_state(m, MODEL_UNLOADED, NULL);
        m->reason[0] = 0; /* a removed model is dropped at the next rescan */
    }
    if (m->state == MODEL_UNLOADED || m->state == MODEL_FAILED)
        model_notify(&m->unload_waiters, 200, NULL);
    if (m->state == MODEL_UNLOADED && m->reload_mf)
        start_reload(m);
}

/* Why no load may begin now: 503 (stopping) or 409 (unloading) with msg; else 0. */
static int load_refused(model *m, char *msg, size_t msglen)
{
    if (R.shutting_down) {
        snprintf(msg, msglen, "model '%s': corral is shutting down", m->name);
        return 503;
    }
    if (m->state == MODEL_UNLOADING) {
        snprintf(msg, msglen, "model '%s' is unloading; load it again once it is unloaded", m->name);
        return 409;
    }
    return 0;
}

/* Whether a load must first pull the model's source: --pull-on-load, a declared source, no files for it yet. */
static int source_absent(const model *m)
{
    if (!R.pull_on_load || !m->mf || !m->mf->source_url || !R.external_dir)
        return 0;
    char path[4200];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", R.external_dir, m->name);
    return lstat(path, &st) < 0 && errno == ENOENT;
}

/* The instances of a model whose load has begun (LOADING): all at once, so N loads of 2 s take about 2 s. */
static void start_instances(model *m)
{
    for (int i = 0; i < m->target; i++) {
        inst *in = model_add_slot(m);
        if (model_start_slot(m, in) < 0) {
            model_fail(m, m->reason);
            return;
        }
    }
}

/* The source of a loading model is in place (or could not be pulled): its instances start, or it fails. */
static void on_source_pulled(pull *p, int status, const char *name, const char *msg, void *data)
{
    (void)p;
    (void)name;
    model *m = data;
    m->pulling = NULL;
    if (m->state != MODEL_LOADING || m->nslots > 0) /* unloaded meanwhile: the files stay for its next load */
        return;
    char reason[1200];
    if (status) {
        snprintf(reason, sizeof reason, "pulling its source %s failed: %s", m->mf->source_url, msg);
        model_fail(m, reason);
        return;
    }
    if (registry_fit_memory_budget(m, m->target, reason, sizeof reason)) {
        model_fail(m, reason);
        return;
    }
    MODEL_LOG(LOG_INFO, m, "model %s: its source is in place; starting %d instance%s", m->name, m->target,
              m->target == 1 ? "" : "s");
    start_instances(m);
}

int model_load(model *m, int instances, lifecycle_waiter *w, char *msg, size_t msglen)
{
    int refused = load_refused(m, msg, msglen);
    if (refused)
        return refused;
    if (m->state == MODEL_LOADING || m->state == MODEL_READY) {
        if (instances > 0 && instances != m->target) {
            int rc = scale_to(m, instances, msg, msglen);
            if (rc)
                return rc;
        }
        if (w) {
            w->next = m->load_waiters;
            m->load_waiters = w;
            check_load_done(m);
        }
        return 0;
    }
    /* UNLOADED or FAILED: (re)start from the newest manifest, unless a
     * load's config is in effect: that stays until the next explicit load. */
    if (m->next_mf && !m->override) {
        manifest_free(m->mf);
        m->mf = m->next_mf;
        m->next_mf = NULL;
        m->changed = 0;
        model_take_scan_dirs(m);
    }
    if (!m->mf) {
        snprintf(msg, msglen, "model '%s' is unavailable: %s", m->name, m->broken ? m->broken : "no manifest");
        return 503;
    }
    /* Slots of a failed load may still be stopping: they are retired and go
     * on their own, so the new instances start alongside them. */
    int target = instances > 0 ? instances : m->mf->instances;
    int pulling = source_absent(m); /* the budget is asked once the files are there */
    int status = pulling ? 0 : registry_fit_memory_budget(m, target, msg, msglen);
    if (status)
        return status;
    m->nrestarts = 0;
    m->reason[0] = 0;
    m->pressure_ticks = 0;
    m->target = target;
    job_queue_init(&m->queue, m->mf->priority_levels);
    m->load_started_us = now_us();
    model_set_state(m, MODEL_LOADING, NULL);
    if (w) {
        w->next = m->load_waiters;
        m->load_waiters = w;
    }
    if (pulling) { /* its files first: requests wait in its queue, as for any load */
        if (!m->pulling) {
            char err[1024];
            int rc = pull_start(NULL, NULL, m->name, on_source_pulled, m, &m->pulling, err, sizeof err);
            if (rc) {
                char reason[1200];
                snprintf(reason, sizeof reason, "pulling its source failed: %s", err);
                model_fail(m, reason);
                return 0;
            }
        }
        MODEL_LOG(LOG_INFO, m, "model %s: its files are not in the external models yet: pulling them from %s first",
                  m->name, m->mf->source_url);
        return 0;
    }
    start_instances(m);
    return 0;
}

/* model_load_config without the note to the state file: also what model_restore does. */
static int load_config(model *m, const json_t *config, int instances, lifecycle_waiter *w, char *msg, size_t msglen)
{
    if (!config && !m->override)
        return model_load(m, instances, w, msg, msglen);
    int refused = load_refused(m, msg, msglen);
    if (refused)
        return refused;
    /* model.yaml as it is now, alone first: a broken file is the model's fault (503), not the config's (400).
     * A variant's keys are those its last resolution found (the explicit load rescans first). */
    char path[4200], label[300], err[1024];
    const char *own_dir = m->scan_dir ? (m->scan_variant_dir ? m->scan_variant_dir : m->scan_dir)
                                      : (m->variant_dir ? m->variant_dir : m->dir);
    snprintf(path, sizeof path, "%s/model.yaml", own_dir);
    manifest *mf = NULL;
    uint64_t digest = m->from && m->keys ? manifest_keys_digest(m->keys) : 0;
    int broken = !m->from ? manifest_load(path, m->name, &mf, err, sizeof err)
                 : m->keys ? manifest_from_tree(path, m->keys, m->name, NULL, digest, &mf, err, sizeof err)
                           : -1;
    if (m->from && !m->keys)
        snprintf(err, sizeof err, "%s", m->broken ? m->broken : "its base is unavailable");
    if (broken < 0) {
        snprintf(msg, msglen, "model '%s' is unavailable: %s", m->name, err);
        return 503;
    }
    if (config) {
        manifest_free(mf);
        mf = NULL;
        snprintf(label, sizeof label, "model '%s': the load's config", m->name);
        if ((m->from ? manifest_from_tree(label, m->keys, m->name, config, digest, &mf, msg, msglen)
                     : manifest_load_override(path, m->name, config, label, &mf, msg, msglen)) < 0)
            return 400;
    }
    json_t *override = config ? json_deep_copy(config) : NULL;
    if (m->state == MODEL_UNLOADED || m->state == MODEL_FAILED) {
        install_manifest(m, mf, override);
        return model_load(m, instances, w, msg, msglen);
    }
    /* Loaded or loading: reloaded with the new manifest, as Triton does.
     * Requests running finish; queued ones get 503, as for an unload. */
    drop_reload(m);
    m->reload_mf = mf;
    m->reload_override = override;
    m->reload_instances = instances;
    MODEL_LOG(LOG_INFO, m, "model %s: unloading to reload with %s", m->name,
              override ? "the load's config" : "model.yaml");
    model_unload(m, NULL, msg, msglen); /* may finish, and start the reload, at once */
    if (!w)
        return 0;
    if (m->state == MODEL_UNLOADING || m->state == MODEL_LOADING || m->state == MODEL_READY) {
        w->next = m->load_waiters;
        m->load_waiters = w;
        if (m->state != MODEL_UNLOADING)
            check_load_done(m);
        return 0;
    }
    snprintf(msg, msglen, "model '%s' did not reload: %s", m->name, m->reason[0] ? m->reason : "unknown");
    return 503;
}

int model_load_config(model *m, const json_t *config, int instances, lifecycle_waiter *w, char *msg, size_t msglen)
{
    int was_running = m->state == MODEL_LOADING || m->state == MODEL_READY;
    int status = load_config(m, config, instances, w, msg, msglen);
    if (status)
        return status;
    /* What the operator asked for: their count; else the manifest's (0), but
     * a running model that loads again without a count or a new config
     * keeps the scale it has. A reload's config is in reload_override until
     * its unload is done. */
    int kept = was_running && !m->reload_mf;
    state_note_loaded(m->name, instances > 0 ? instances : kept ? m->target : 0,
                      m->reload_mf ? m->reload_override : m->override);
    return 0;
}

int model_restore(model *m, const json_t *config, int instances, char *msg, size_t msglen)
{
    return load_config(m, config, instances, NULL, msg, msglen);
}

int model_unload(model *m, lifecycle_waiter *w, char *msg, size_t msglen)
{
    (void)msg;
    (void)msglen;
    if (w) /* a client's unload: the internal ones (keep_alive, memory budget, reload) pass no waiter */
        state_note_unloaded(m->name);
    uv_timer_stop(&m->idle_timer);
    if (w && m->reload_mf) { /* an explicit unload wins over a reload still waiting for its own */
        drop_reload(m);
        char why[256];
        snprintf(why, sizeof why, "model '%s' was unloaded before its reload started", m->name);
        model_notify(&m->load_waiters, 503, why);
    }
    if (m->state == MODEL_UNLOADED || (m->state == MODEL_FAILED && m->nslots == 0)) {
        if (m->state == MODEL_FAILED) {
            model_set_state(m, MODEL_UNLOADED, NULL);
            m->reason[0] = 0;
        }
        if (w)
            w->on_done(w->ctx, 200, NULL);
        return 0;
    }
    if (w) {
        w->next = m->unload_waiters;
        m->unload_waiters = w;
    }
    if (m->state == MODEL_UNLOADING)
        return 0;
    model_set_state(m, MODEL_UNLOADING, NULL);
    char why[256];
    snprintf(why, sizeof why, "model '%s' is being unloaded", m->name);
    model_fail_queue(m, 503, why);
    model_notify(&m->load_waiters, 503, why);
    model_stop_all(m);
    model_check_unload_done(m);
    return 0;
}

int model_scale(model *m, int instances, char *msg, size_t msglen)
{
    int status = scale_to(m, instances, msg, msglen);
    if (status == 0) /* a scale is the operator's: the model is to be loaded at that count */
        state_note_loaded(m->name, instances, m->override);
    return status;
}

/* model_scale without the note: also a load's own count (model_load). */
static int scale_to(model *m, int instances, char *msg, size_t msglen)
{
    if (instances < 1 || instances > MANIFEST_MAX_INSTANCES) {
        snprintf(msg, msglen, "instances must be an integer from 1 to %d", MANIFEST_MAX_INSTANCES);
        return 400;
    }
    if (m->state != MODEL_READY && m->state != MODEL_LOADING) {
        snprintf(msg, msglen, "model '%s' is %s; load it to scale it", m->name, model_state_name(m->state));
        return 409;
    }
    int active = 0;
    for (int i = 0; i < m->nslots; i++)
        if (!slot_of(m->slots[i])->retire)
            active++;
    MODEL_LOG(LOG_INFO, m, "model %s: scaling from %d to %d instances", m->name, active, instances);
    model_emit_scaled(m, active, instances, "request");
    m->target = instances;
    while (active < instances) {
        inst *in = model_add_slot(m);
        if (model_start_slot(m, in) < 0) {
            model_fail(m, m->reason);
            snprintf(msg, msglen, "model '%s' failed: %s", m->name, m->reason);
            return 503;
        }
        active++;
    }
    /* Retire the highest ids first: idle ones, then busy ones without live sequences, then the rest. */
    for (int pass = 0; pass < 3 && active > instances; pass++) {
        for (int i = m->nslots - 1; i >= 0 && active > instances; i--) {
            inst *in = m->slots[i];
            slot *s = slot_of(in);
            if (s->retire || (pass == 0 && (in->inflight > 0 || s->sequences > 0)) || (pass == 1 && s->sequences > 0))
                continue;
            s->retire = 1;
            active--;
            uv_timer_stop(&s->restart_timer);
            if (in->state == INST_IDLE)
                remove_slot(m, in);
            else if (in->inflight == 0 && s->sequences == 0) /* else once they end (dispatch.c) */
                inst_stop(in, R.stop_grace_ms);
        }
    }
    return 0;
}

/* ---- views ---- */

json_t *model_to_json(model *m)
{
    json_t *insts = json_array();
    uint64_t now = now_ms();
    for (int i = 0; i < m->nslots; i++) {
        inst *in = m->slots[i];
        slot *s = slot_of(in);
        /* null, not 0, without a process: `kill 0` would signal the caller's own group */
        json_t *o = json_pack("{s:i, s:s, s:o, s:I, s:I, s:i, s:i, s:I, s:b}", "id", in->id, "state",
                              inst_state_name(in->state), "pid",
                              in->state == INST_IDLE ? json_null() : json_integer(in->pid),
                              "uptime_ms", (json_int_t)(in->state == INST_IDLE ? 0 : now - in->started_ms),
                              "requests", (json_int_t)in->requests, "restarts", s->restarts, "inflight",
                              in->inflight, "rss_bytes", (json_int_t)in->rss_bytes, "retiring", s->retire);
        if (s->replace)
            json_object_set_new(o, "replacing", json_true());
        json_object_set_new(o, "uptime_s", json_real(in->state == INST_IDLE ? 0 : (double)(now - in->started_ms) / 1000.0));
        json_array_append_new(insts, o);
    }
    const manifest *mf = m->mf;
    /* reason and manifest_error quote workers and files: any bytes (utf8.h) */
    const char *reason = model_reason(m);
    json_t *o = json_pack("{s:s, s:s, s:o, s:b, s:I, s:i, s:o}", "name", m->name, "state",
                          model_state_name(m->state), "reason",
                          reason ? utf8_json_string(reason, strlen(reason)) : json_null(), "changed", m->changed,
                          "queue", (json_int_t)model_queue_depth(m), "target_instances", m->target, "instances", insts);
    json_object_set_new(o, "dir", utf8_json_string(m->dir, strlen(m->dir)));
    json_object_set_new(o, "origin", json_string(m->spec ? "runtime" : "repository"));
    if (m->from)
        json_object_set_new(o, "from", json_string(m->from)); /* a model name (manifest_from_name): ASCII */
    if (m->variant_dir)
        json_object_set_new(o, "variant_dir", utf8_json_string(m->variant_dir, strlen(m->variant_dir)));
    if (m->broken)
        json_object_set_new(o, "manifest_error", utf8_json_string(m->broken, strlen(m->broken)));
    if (mf) {
        json_object_set_new(o, "runtime", json_string(mf->runtime == RUNTIME_PYTHON ? "python" : "exec"));
        json_object_set_new(o, "load", json_string(mf->load_eager ? "eager" : "lazy"));
        json_object_set_new(o, "max_queue", json_integer(mf->max_queue));
        json_object_set_new(o, "concurrency", json_integer(mf->concurrency));
        json_object_set_new(o, "pipeline", json_integer(mf->pipeline));
    }
    if (m->override)
        json_object_set_new(o, "config_override", json_deep_copy(m->override));
    return o;
}

/* The tensors the model declares: the manifest's, else its workers' READY metadata; new references or NULL. */
static void declared_tensors(model *m, json_t **inputs, json_t **outputs)
{
    const manifest *mf = m->mf;
    *inputs = mf && mf->inputs ? json_incref(mf->inputs) : NULL;
    *outputs = mf && mf->outputs ? json_incref(mf->outputs) : NULL;
    for (int i = 0; i < m->nslots && (!*inputs || !*outputs); i++) {
        json_t *meta = m->slots[i]->metadata;
        if (!meta)
            continue;
        if (!*inputs && json_is_array(json_object_get(meta, "inputs")))
            *inputs = json_incref(json_object_get(meta, "inputs"));
        if (!*outputs && json_is_array(json_object_get(meta, "outputs")))
            *outputs = json_incref(json_object_get(meta, "outputs"));
    }
}

json_t *model_config_json(model *m)
{
    if (!m->mf)
        return NULL;
    json_t *inputs, *outputs;
    declared_tensors(m, &inputs, &outputs);
    char labels[4200];
    snprintf(labels, sizeof labels, "%s/labels.txt", m->dir);
    json_t *o = modelcfg_json(m->name, m->mf, inputs, outputs, access(labels, R_OK) == 0 ? "labels.txt" : NULL);
    json_decref(inputs);
    json_decref(outputs);
    return o;
}

int model_takes_requests(const model *m)
{
    if (R.shutting_down)
        return 0;
    switch (m->state) {
    case MODEL_READY:
    case MODEL_LOADING: /* a request now waits in the queue for the first instance */
        return 1;
    case MODEL_UNLOADED: /* a request now loads it; a broken model.yaml (without a load's config) would not */
        return m->mf && (!m->broken || m->override);
    case MODEL_UNLOADING: /* a request now gets 503 */
    case MODEL_FAILED:
        return 0;
    }
    return 0;
}

json_t *model_metadata_json(model *m)
{
    json_t *inputs, *outputs;
    declared_tensors(m, &inputs, &outputs);
    const manifest *mf = m->mf;
    return json_pack("{s:s, s:[s], s:s, s:o, s:o}", "name", m->name, "versions", "1", "platform",
                     mf && mf->runtime == RUNTIME_EXEC ? "corral_exec" : "corral_python", "inputs",
                     inputs ? inputs : json_array(), "outputs", outputs ? outputs : json_array());
}

/* The first declaration list of the instances' READY metadata: inputs (which 0) or outputs (1). */
static const decl_list *ready_decl(const model *m, int which)
{
    for (int i = 0; i < m->nslots; i++) {
        const decl_list *l = which ? m->slots[i]->output_decl : m->slots[i]->input_decl;
        if (l)
            return l;
    }
    return NULL;
}

const decl_list *model_declared_inputs(const model *m)
{
    if (m->mf && m->mf->inputs)
        return m->mf->input_decl;
    return ready_decl(m, 0);
}

const decl_list *model_declared_outputs(const model *m)
{
    if (m->mf && m->mf->outputs)
        return m->mf->output_decl;
    return ready_decl(m, 1);
}

void model_drop_labels(model *m)
{
    classify_labels_unref(m->labels);
    free(m->labels_error);
    m->labels = NULL;
    m->labels_error = NULL;
    m->labels_read = 0;
}

int model_labels(model *m, classify_labels **out, char *err, size_t errlen)
{
    if (!m->labels_read) {
        char path[4200], why[4400];
        snprintf(path, sizeof path, "%s/labels.txt", m->dir);
        if (classify_labels_read(path, &m->labels, why, sizeof why) < 0)
            m->labels_error = xstrdup(why);
        m->labels_read = 1;
    }
    *out = NULL;
    if (m->labels_error) {
        snprintf(err, errlen, "model '%s': cannot classify: %s", m->name, m->labels_error);
        utf8_trim_partial(err);
        return -1;
    }
    *out = classify_labels_ref(m->labels);
    return 0;
}
