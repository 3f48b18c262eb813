/*
 * model — registry, lifecycle, supervision and dispatch; see model.h.
 *
 * Invariants:
 * - A job is in exactly one place: a model's queue, an instance's in-flight
 *   list, or being answered. Every path that empties a queue answers each
 *   job it removes.
 * - A model in UNLOADED or FAILED has no running process (slots may still
 *   be closing their handles).
 * - slots[] holds the instances of a loaded model; a slot marked retire is
 *   removed once its process has exited.
 */
#include "model.h"

#include "log.h"
#include "proto.h"
#include "repo.h"
#include "sb.h"
#include "utf8.h"
#include "xmalloc.h"

#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LOG_RING_BYTES (256 * 1024)
#define LOG_LINES_PER_S 100
#define LOG_LINES_BURST 500
#define LOG_COPY_MAX 1024
#define RESTART_HISTORY 64

extern char **environ;

struct model {
    char *name;
    char *dir;
    manifest *mf;      /* what the model runs with; NULL when broken and not running */
    manifest *next_mf; /* a changed manifest found while loaded; applied at the next load */
    char *broken;      /* manifest error from the last scan, or NULL */
    int changed;       /* the manifest on disk differs from the one running */
    int removed;       /* gone from the repository; dropped once unloaded */
    model_state state;
    char reason[1024];
    inst **slots;
    int nslots;
    int target;
    int rr;
    sched_queue queue;
    lifecycle_waiter *load_waiters;
    lifecycle_waiter *unload_waiters;
    uv_timer_t idle_timer;
    int pressure_ticks;     /* consecutive ticks with requests waiting */
    uint64_t rss_per_instance; /* largest resident memory an instance had, for the memory budget */
    uint64_t restarts_at[RESTART_HISTORY];
    int nrestarts;
    uint64_t last_used_ms;
    char *logs;
    size_t logs_len;
    size_t logs_cut;
    double log_tokens;      /* worker lines the daemon's log may take now (on_log_line) */
    uint64_t log_refill_ms;
    uint64_t log_held_lines, log_held_bytes; /* held back from the daemon's log since it last took one */
    model *next;
};

static struct {
    uv_loop_t *loop;
    char *models_dir;
    char *external_dir;
    char *python_sdk_dir;
    int64_t stop_grace_ms;
    model *head;
    int shutting_down;
    void (*shutdown_done)(void);
    int64_t drain_timeout_ms;
    uv_timer_t drain_timer;
    uv_timer_t deadline_timer; /* armed for the earliest job deadline */
    uv_timer_t tick_timer;     /* once a second: memory samples, limits, autoscaling */
    int64_t memory_budget;     /* bytes; 0: none */
    uint64_t last_submit_ms;   /* when the last request was submitted */
} R;

#define TICK_MS 1000
#define AUTOSCALE_PRESSURE_TICKS 3  /* seconds of queue pressure before adding an instance */
#define AUTOSCALE_IDLE_MS 10000     /* idle time before an extra instance is retired */
#define HEAP_KEEP_IDLE_MS 5000      /* idle time before the heap's free memory goes back to the system */
#define HEAP_KEEP_BYTES (64u << 20) /* free heap kept regardless */

static void on_ready(inst *in);
static void on_load_failed(inst *in, const char *msg);
static void on_exited(inst *in);
static void on_job_finished(inst *in);
static void on_log_line(inst *in, int stream, const char *line, size_t len, size_t dropped);
static const inst_events events = {on_ready, on_load_failed, on_exited, on_job_finished, on_log_line};

static void dispatch(model *m);
static void arm_deadline_timer(void);
static void arm_idle_timer(model *m);
static void drain_model(model *m);
static void tick(uv_timer_t *t);
static int fit_memory_budget(model *m, int instances, char *msg, size_t msglen);
static void check_load_done(model *m);
static void check_memory_limit(model *m, inst *in);
static void check_unload_done(model *m);
static void check_shutdown_done(void);

const char *model_name(const model *m)
{
    return m->name;
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

static void model_set_state(model *m, model_state s, const char *reason)
{
    if (reason && reason != m->reason)
        snprintf(m->reason, sizeof m->reason, "%s", reason);
    if (m->state == s)
        return;
    if (s == MODEL_FAILED)
        log_error("model %s: %s -> failed: %s", m->name, model_state_name(m->state), m->reason);
    else
        log_info("model %s: %s -> %s", m->name, model_state_name(m->state), model_state_name(s));
    m->state = s;
}

/* ---- registry ---- */

model *model_find(const char *name, size_t len)
{
    for (model *m = R.head; m; m = m->next)
        if (strlen(m->name) == len && memcmp(m->name, name, len) == 0)
            return m;
    return NULL;
}

model *model_next(model *m)
{
    return m ? m->next : R.head;
}

static model *model_new(const repo_entry *e)
{
    model *m = xcalloc(1, sizeof *m);
    m->name = xstrdup(e->name);
    m->dir = xstrdup(e->dir);
    m->state = MODEL_UNLOADED;
    uv_timer_init(R.loop, &m->idle_timer);
    m->idle_timer.data = m;
    sched_init(&m->queue, 1);
    /* Insert in name order so listings are stable. */
    model **p = &R.head;
    while (*p && strcmp((*p)->name, m->name) < 0)
        p = &(*p)->next;
    m->next = *p;
    *p = m;
    return m;
}

static void idle_timer_closed(uv_handle_t *h)
{
    model *m = h->data;
    manifest_free(m->mf);
    manifest_free(m->next_mf);
    free(m->broken);
    free(m->name);
    free(m->dir);
    free(m->slots);
    free(m->logs);
    free(m);
}

static void model_remove(model *m)
{
    for (model **p = &R.head; *p; p = &(*p)->next) {
        if (*p == m) {
            *p = m->next;
            break;
        }
    }
    log_info("model %s: removed from the repository", m->name);
    uv_close((uv_handle_t *)&m->idle_timer, idle_timer_closed);
}

/* Takes ownership of e's manifest or error. */
static void model_apply_entry(model *m, repo_entry *e)
{
    int running = m->state != MODEL_UNLOADED && m->state != MODEL_FAILED;
    free(m->broken);
    m->broken = e->error;
    e->error = NULL;
    m->removed = 0;
    if (!e->mf) {
        if (running) {
            m->changed = 1;
        } else {
            manifest_free(m->mf);
            m->mf = NULL;
        }
        return;
    }
    if (m->mf && m->mf->digest == e->mf->digest) {
        manifest_free(m->next_mf);
        m->next_mf = NULL;
        m->changed = 0;
        manifest_free(e->mf);
        e->mf = NULL;
        return;
    }
    if (running) {
        if (!m->next_mf || m->next_mf->digest != e->mf->digest)
            log_info("model %s: manifest changed; it applies at the next load", m->name);
        manifest_free(m->next_mf);
        m->next_mf = e->mf;
        m->changed = 1;
    } else {
        manifest_free(m->mf);
        m->mf = e->mf;
        m->changed = 0;
        free(m->dir);
        m->dir = xstrdup(e->dir);
    }
    e->mf = NULL;
}

int registry_rescan(void)
{
    if (R.external_dir)
        repo_link_external(R.models_dir, R.external_dir);
    repo_entry *v;
    size_t n;
    int rc = repo_scan(R.models_dir, &v, &n);
    if (rc < 0) {
        log_error("cannot scan models directory '%s': %s", R.models_dir, strerror(-rc));
        return rc;
    }
    for (model *m = R.head; m; m = m->next)
        m->removed = 1;
    for (size_t i = 0; i < n; i++) {
        model *m = model_find(v[i].name, strlen(v[i].name));
        if (!m) {
            m = model_new(&v[i]);
            if (v[i].error)
                log_error("model %s: unavailable: %s", v[i].name, v[i].error);
            else
                log_info("model %s: discovered in %s", v[i].name, v[i].dir);
        } else if (v[i].error && (!m->broken || strcmp(m->broken, v[i].error) != 0)) {
            log_error("model %s: unavailable: %s", v[i].name, v[i].error);
        }
        model_apply_entry(m, &v[i]);
    }
    repo_entries_free(v, n);
    for (model *m = R.head, *next; m; m = next) {
        next = m->next;
        if (m->removed && (m->state == MODEL_UNLOADED || m->state == MODEL_FAILED) && m->nslots == 0)
            model_remove(m);
    }
    return 0;
}

int registry_init(uv_loop_t *loop, const registry_config *cfg)
{
    R.loop = loop;
    R.models_dir = xstrdup(cfg->models_dir);
    R.external_dir = cfg->external_dir ? xstrdup(cfg->external_dir) : NULL;
    R.python_sdk_dir = xstrdup(cfg->python_sdk_dir);
    R.stop_grace_ms = cfg->stop_grace_ms > 0 ? cfg->stop_grace_ms : 5000;
    R.drain_timeout_ms = cfg->drain_timeout_ms > 0 ? cfg->drain_timeout_ms : 30000;
    uv_timer_init(loop, &R.drain_timer);
    uv_timer_init(loop, &R.deadline_timer);
    uv_timer_init(loop, &R.tick_timer);
    R.memory_budget = cfg->memory_budget;
    int rc = registry_rescan();
    if (rc < 0)
        return rc;
    uv_timer_start(&R.tick_timer, tick, TICK_MS, TICK_MS);
    for (model *m = R.head; m; m = m->next) {
        char msg[256];
        if (m->mf && m->mf->load_eager)
            model_load(m, 0, NULL, msg, sizeof msg);
    }
    return 0;
}

/* ---- answering ---- */

static void answer_job(job *j, int status, const char *msg)
{
    j->done(j, status, msg, 0, NULL, 0);
    job_free(j);
}

static void fail_queue(model *m, int status, const char *msg)
{
    job *j;
    while ((j = sched_pop(&m->queue)))
        answer_job(j, status, msg);
}

static void notify(lifecycle_waiter **list, int status, const char *msg)
{
    lifecycle_waiter *w = *list;
    *list = NULL;
    while (w) {
        lifecycle_waiter *next = w->next;
        w->done(w->ctx, status, msg);
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

static void free_strv(char **v)
{
    if (!v)
        return;
    for (char **p = v; *p; p++)
        free(*p);
    free(v);
}

static int start_slot(model *m, inst *in)
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

    json_t *load = json_pack("{s:s, s:o, s:i, s:s, s:i, s:O}", "model", m->name, "model_dir",
                             utf8_json_string(m->dir, strlen(m->dir)),
                             "instance_id", in->id, "device", "cpu", "concurrency", mf->concurrency,
                             "parameters", mf->parameters);
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
                         .health_timeout_ms = mf->health_timeout_ms, .stop_grace_ms = R.stop_grace_ms};
        rc = inst_start(in, &sp, err, sizeof err);
    }
    free(load_json);
    free(argv);
    free_strv(env);
    if (rc < 0) {
        char reason[1024];
        snprintf(reason, sizeof reason, "instance %d cannot start: %s", in->id, err);
        log_error("model %s: %s", m->name, reason);
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

static inst *add_slot(model *m)
{
    inst *in = xmalloc(sizeof *in);
    inst_init(in, R.loop, m, &events, free_slot_id(m));
    m->slots = xrealloc(m->slots, (size_t)(m->nslots + 1) * sizeof *m->slots);
    m->slots[m->nslots++] = in;
    return in;
}

static void slot_freed(inst *in)
{
    free(in);
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
    inst_close(in, slot_freed);
}

static int count_slots(model *m, inst_state s)
{
    int n = 0;
    for (int i = 0; i < m->nslots; i++)
        if (m->slots[i]->state == s && !m->slots[i]->retire)
            n++;
    return n;
}

/* Stops every process of the model; used by unload, failure and shutdown. */
static void stop_all(model *m)
{
    for (int i = 0; i < m->nslots; i++) {
        inst *in = m->slots[i];
        uv_timer_stop(&in->restart_timer);
        in->retire = 1;
        if (in->state == INST_STARTING || (in->state == INST_READY && in->inflight == 0))
            inst_stop(in, R.stop_grace_ms);
    }
    /* Slots with no process can go now; the others go when they exit. */
    for (int i = m->nslots - 1; i >= 0; i--)
        if (m->slots[i]->state == INST_IDLE)
            remove_slot(m, m->slots[i]);
}

static void model_fail(model *m, const char *reason)
{
    model_set_state(m, MODEL_FAILED, reason);
    char msg[1200];
    snprintf(msg, sizeof msg, "model '%s' failed: %s", m->name, reason);
    stop_all(m);
    fail_queue(m, 503, msg);
    notify(&m->load_waiters, 503, msg);
    check_unload_done(m);
}

/* ---- instance events ---- */

static void on_ready(inst *in)
{
    model *m = in->model;
    if (in->retire) {
        inst_stop(in, R.stop_grace_ms);
        return;
    }
    if (m->state == MODEL_LOADING)
        model_set_state(m, MODEL_READY, NULL);
    dispatch(m);
    check_load_done(m);
}

static void on_load_failed(inst *in, const char *msg)
{
    model *m = in->model;
    char reason[1200];
    snprintf(reason, sizeof reason, "load failed in instance %d (pid %d): %s", in->id, in->pid, msg);
    if (m->state == MODEL_LOADING || m->state == MODEL_READY)
        model_fail(m, reason);
}

static void restart_fire(uv_timer_t *t)
{
    inst *in = t->data;
    model *m = in->model;
    if (in->retire || (m->state != MODEL_LOADING && m->state != MODEL_READY) || (R.shutting_down && !m->queue.count))
        return;
    if (inst_busy(in)) { /* handles of the old process still closing: try again shortly */
        uv_timer_start(&in->restart_timer, restart_fire, 5, 0);
        return;
    }
    in->restarts++;
    if (start_slot(m, in) < 0)
        model_fail(m, m->reason);
}

static void on_exited(inst *in)
{
    model *m = in->model;
    /* During shutdown a crashed instance is still replaced while its model has queued work to drain. */
    if (in->retire || m->state == MODEL_UNLOADING || m->state == MODEL_FAILED || (R.shutting_down && !m->queue.count) ||
        m->state == MODEL_UNLOADED) {
        remove_slot(m, in);
        check_unload_done(m);
        check_shutdown_done();
        dispatch(m);
        return;
    }
    if (in->load_error)
        return; /* on_load_failed already failed the model */
    if (in->replace) {
        /* Stopped on purpose (a deadline, the memory limit): not a crash. */
        in->replace = 0;
        log_info("model %s instance %d: replacing it", m->name, in->id);
        uv_timer_start(&in->restart_timer, restart_fire, 1, 0);
        return;
    }

    /* An unexpected exit: count it against the restart budget. */
    uint64_t now = now_ms();
    const manifest *mf = m->mf;
    int recent = 0;
    for (int i = 0; i < m->nrestarts; i++)
        if (now - m->restarts_at[i] <= (uint64_t)mf->restart_window_ms)
            recent++;
    if (recent >= mf->max_restarts) {
        char why[600], reason[1024];
        inst_exit_reason(in, 1, why, sizeof why);
        snprintf(reason, sizeof reason, "instance %d (pid %d) %s; %d restarts within %lld ms exhausted the budget",
                 in->id, in->pid, why, recent, (long long)mf->restart_window_ms);
        model_fail(m, reason);
        return;
    }
    m->restarts_at[m->nrestarts % RESTART_HISTORY] = now;
    if (m->nrestarts < RESTART_HISTORY)
        m->nrestarts++;
    else
        memmove(m->restarts_at, m->restarts_at + 1, sizeof m->restarts_at - sizeof m->restarts_at[0]);
    /* Immediate restart after a long healthy run; exponential backoff otherwise. */
    uint64_t healthy = in->ready_ms ? now - in->ready_ms : 0;
    uint64_t delay;
    if (recent == 0 && healthy > (uint64_t)mf->restart_window_ms)
        delay = 0;
    else {
        delay = (uint64_t)mf->backoff_min_ms;
        for (int i = 0; i < recent && delay < (uint64_t)mf->backoff_max_ms; i++)
            delay *= 2;
        if (delay > (uint64_t)mf->backoff_max_ms)
            delay = (uint64_t)mf->backoff_max_ms;
    }
    log_info("model %s instance %d: restarting in %llu ms", m->name, in->id, (unsigned long long)delay);
    if (count_slots(m, INST_READY) == 0 && m->state == MODEL_READY)
        model_set_state(m, MODEL_LOADING, NULL);
    uv_timer_start(&in->restart_timer, restart_fire, delay ? delay : 1, 0);
    check_load_done(m);
}

static void on_job_finished(inst *in)
{
    model *m = in->model;
    m->last_used_ms = now_ms();
    in->last_busy_ms = m->last_used_ms;
    /* With a memory limit, a leak is caught after the request that caused it, not up to a tick later. */
    if (m->mf && m->mf->memory_limit && in->state == INST_READY && !in->replace) {
        uint64_t rss = inst_worker_rss(in);
        if (rss > in->rss_bytes)
            in->rss_bytes = rss;
        check_memory_limit(m, in);
    }
    if ((in->retire || in->replace || m->state == MODEL_UNLOADING) && in->inflight == 0 && in->state == INST_READY)
        inst_stop(in, R.stop_grace_ms);
    dispatch(m);
    if (R.shutting_down)
        drain_model(m);
    arm_idle_timer(m);
}

/*
 * Worker output goes to the model's ring (GET /v1/models/NAME/logs), which
 * keeps the newest LOG_RING_BYTES and counts what it dropped, and to the
 * daemon's own log at most LOG_LINES_PER_S lines a second per model (a
 * burst of LOG_LINES_BURST), each cut to LOG_COPY_MAX bytes: a chatty or
 * hostile worker cannot flood the operator's log. Lines held back are
 * counted and reported in one line when logging resumes.
 */
static void ring_append(model *m, const char *prefix, size_t plen, const char *line, size_t len, const char *suffix,
                        size_t slen)
{
    size_t need = plen + len + slen + 1;
    if (!m->logs)
        m->logs = xmalloc(LOG_RING_BYTES);
    if (need > LOG_RING_BYTES)
        return; /* cannot happen: lines are capped at INST_LINE_MAX */
    if (m->logs_len + need > LOG_RING_BYTES) {
        /* Drop the oldest half; a log that is read rarely need not be a true ring. */
        size_t drop = m->logs_len / 2 > need ? m->logs_len / 2 : m->logs_len;
        char *nl = memchr(m->logs + drop, '\n', m->logs_len - drop);
        drop = nl ? (size_t)(nl - m->logs) + 1 : m->logs_len;
        memmove(m->logs, m->logs + drop, m->logs_len - drop);
        m->logs_len -= drop;
        m->logs_cut += drop;
    }
    char *w = m->logs + m->logs_len;
    memcpy(w, prefix, plen);
    memcpy(w + plen, line, len);
    memcpy(w + plen + len, suffix, slen);
    w[plen + len + slen] = '\n';
    m->logs_len += need;
}

static void on_log_line(inst *in, int stream, const char *line, size_t len, size_t dropped)
{
    model *m = in->model;
    char prefix[64], suffix[64] = "";
    int plen = snprintf(prefix, sizeof prefix, "[%d %s] ", in->id, stream == 1 ? "out" : "err");
    int slen = dropped ? snprintf(suffix, sizeof suffix, " [... %zu more bytes of this line dropped]", dropped) : 0;
    ring_append(m, prefix, (size_t)plen, line, len, suffix, (size_t)slen);

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
        log_warn("%s: %llu lines (%llu bytes) of worker output were not copied here (over %d lines/s); "
                 "GET /v1/models/%s/logs keeps the newest",
                 m->name, (unsigned long long)m->log_held_lines, (unsigned long long)m->log_held_bytes,
                 LOG_LINES_PER_S, m->name);
        m->log_held_lines = m->log_held_bytes = 0;
    }
    size_t shown = utf8_cut(line, len, LOG_COPY_MAX);
    log_info("%s/%d: %.*s%s", m->name, in->id, (int)shown, line, shown < len || dropped ? " [...]" : "");
}

const char *model_logs(model *m, size_t *len, size_t *start_cut)
{
    *len = m->logs_len;
    *start_cut = m->logs_cut;
    return m->logs ? m->logs : "";
}

/* ---- load, unload, scale ---- */

static void check_load_done(model *m)
{
    if (!m->load_waiters)
        return;
    for (int i = 0; i < m->nslots; i++) {
        inst *in = m->slots[i];
        if (in->retire)
            continue;
        if (in->state == INST_STARTING || (in->state == INST_IDLE && uv_is_active((uv_handle_t *)&in->restart_timer)))
            return;
    }
    if (count_slots(m, INST_READY) > 0) {
        notify(&m->load_waiters, 200, NULL);
    } else {
        char msg[1200];
        snprintf(msg, sizeof msg, "model '%s' has no ready instance: %s", m->name,
                 m->reason[0] ? m->reason : "every instance failed to start");
        notify(&m->load_waiters, 503, msg);
    }
}

static void check_unload_done(model *m)
{
    for (int i = 0; i < m->nslots; i++)
        if (m->slots[i]->state != INST_IDLE)
            return;
    if (m->state == MODEL_UNLOADING) {
        model_set_state(m, MODEL_UNLOADED, NULL);
        m->reason[0] = 0; /* a removed model is dropped at the next rescan */
    }
    if (m->state == MODEL_UNLOADED || m->state == MODEL_FAILED)
        notify(&m->unload_waiters, 200, NULL);
}

int model_load(model *m, int instances, lifecycle_waiter *w, char *msg, size_t msglen)
{
    if (R.shutting_down) {
        snprintf(msg, msglen, "model '%s': corral is shutting down", m->name);
        return 503;
    }
    if (m->state == MODEL_UNLOADING) {
        snprintf(msg, msglen, "model '%s' is unloading; load it again once it is unloaded", m->name);
        return 409;
    }
    if (m->state == MODEL_LOADING || m->state == MODEL_READY) {
        if (instances > 0 && instances != m->target) {
            int rc = model_scale(m, instances, msg, msglen);
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
    /* UNLOADED or FAILED: (re)start from the newest manifest. */
    if (m->next_mf) {
        manifest_free(m->mf);
        m->mf = m->next_mf;
        m->next_mf = NULL;
        m->changed = 0;
    }
    if (!m->mf) {
        snprintf(msg, msglen, "model '%s' is unavailable: %s", m->name, m->broken ? m->broken : "no manifest");
        return 503;
    }
    /* Slots of a failed load may still be stopping: they are retired and go
     * on their own, so the new instances start alongside them. */
    int target = instances > 0 ? instances : m->mf->instances;
    int status = fit_memory_budget(m, target, msg, msglen);
    if (status)
        return status;
    m->nrestarts = 0;
    m->reason[0] = 0;
    m->pressure_ticks = 0;
    m->target = target;
    sched_init(&m->queue, m->mf->priority_levels);
    model_set_state(m, MODEL_LOADING, NULL);
    if (w) {
        w->next = m->load_waiters;
        m->load_waiters = w;
    }
    /* All instances start at once: N loads of 2 s take about 2 s, not 2N. */
    for (int i = 0; i < m->target; i++) {
        inst *in = add_slot(m);
        if (start_slot(m, in) < 0) {
            model_fail(m, m->reason);
            return 0;
        }
    }
    return 0;
}

int model_unload(model *m, lifecycle_waiter *w, char *msg, size_t msglen)
{
    (void)msg;
    (void)msglen;
    uv_timer_stop(&m->idle_timer);
    if (m->state == MODEL_UNLOADED || (m->state == MODEL_FAILED && m->nslots == 0)) {
        if (m->state == MODEL_FAILED) {
            model_set_state(m, MODEL_UNLOADED, NULL);
            m->reason[0] = 0;
        }
        if (w)
            w->done(w->ctx, 200, NULL);
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
    fail_queue(m, 503, why);
    notify(&m->load_waiters, 503, why);
    stop_all(m);
    check_unload_done(m);
    return 0;
}

int model_scale(model *m, int instances, char *msg, size_t msglen)
{
    if (instances < 1 || instances > 1024) {
        snprintf(msg, msglen, "instances must be an integer from 1 to 1024");
        return 400;
    }
    if (m->state != MODEL_READY && m->state != MODEL_LOADING) {
        snprintf(msg, msglen, "model '%s' is %s; load it to scale it", m->name, model_state_name(m->state));
        return 409;
    }
    int active = 0;
    for (int i = 0; i < m->nslots; i++)
        if (!m->slots[i]->retire)
            active++;
    log_info("model %s: scaling from %d to %d instances", m->name, active, instances);
    m->target = instances;
    while (active < instances) {
        inst *in = add_slot(m);
        if (start_slot(m, in) < 0) {
            model_fail(m, m->reason);
            snprintf(msg, msglen, "model '%s' failed: %s", m->name, m->reason);
            return 503;
        }
        active++;
    }
    /* Retire the highest ids first, idle ones before busy ones. */
    for (int pass = 0; pass < 2 && active > instances; pass++) {
        for (int i = m->nslots - 1; i >= 0 && active > instances; i--) {
            inst *in = m->slots[i];
            if (in->retire || (pass == 0 && in->inflight > 0))
                continue;
            in->retire = 1;
            active--;
            uv_timer_stop(&in->restart_timer);
            if (in->state == INST_IDLE)
                remove_slot(m, in);
            else if (in->inflight == 0)
                inst_stop(in, R.stop_grace_ms);
        }
    }
    return 0;
}

/* ---- deadlines ---- */

static void deadline_fire(uv_timer_t *t);

static void arm_deadline_timer(void)
{
    job *j = sched_deadline_next();
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
static void deadline_fire(uv_timer_t *t)
{
    (void)t;
    uint64_t now = now_ms();
    job *j;
    while ((j = sched_deadline_next()) && j->deadline_ms <= now) {
        sched_deadline_untrack(j);
        model *m = j->model;
        char msg[512];
        long long budget = (long long)(j->deadline_ms - j->enqueued_ms);
        if (j->queued) {
            sched_remove(&m->queue, j);
            snprintf(msg, sizeof msg, "model '%s': deadline of %lld ms exceeded while queued (waited %lld ms)", m->name,
                     budget, (long long)(now - j->enqueued_ms));
            answer_job(j, 504, msg);
            arm_idle_timer(m);
        } else if (j->inst) {
            inst *in = j->inst;
            snprintf(msg, sizeof msg,
                     "model '%s': deadline of %lld ms exceeded while running on instance %d (pid %d); the instance "
                     "is being replaced",
                     m->name, budget, in->id, in->pid);
            inst_abandon(in, j);
            answer_job(j, 504, msg);
            if (!in->exited && in->state != INST_IDLE && !in->retire) {
                in->replace = 1;
                inst_kill(in, "a request exceeded its deadline");
            }
        }
    }
    arm_deadline_timer();
}

/* ---- memory and autoscaling ---- */

static int active_slots(model *m)
{
    int n = 0;
    for (int i = 0; i < m->nslots; i++)
        if (!m->slots[i]->retire)
            n++;
    return n;
}

static uint64_t model_rss(model *m)
{
    uint64_t total = 0;
    for (int i = 0; i < m->nslots; i++)
        total += m->slots[i]->rss_bytes;
    return total;
}

/*
 * What a loaded model counts for against the memory budget: what it uses
 * now, or what its instances have used at their largest if that is more
 * (an instance still loading has not reached its size yet).
 */
static uint64_t model_footprint(model *m)
{
    uint64_t now = model_rss(m), peak = m->rss_per_instance * (uint64_t)active_slots(m);
    return now > peak ? now : peak;
}

/* Replaces an instance above limits.memory once it has no request in flight. */
static void check_memory_limit(model *m, inst *in)
{
    if (!m->mf || !m->mf->memory_limit || in->state != INST_READY || in->replace || in->retire ||
        in->rss_bytes <= (uint64_t)m->mf->memory_limit)
        return;
    log_warn("model %s instance %d (pid %d): resident memory %llu MiB is above limits.memory %lld MiB; replacing it "
             "between requests",
             m->name, in->id, in->pid, (unsigned long long)(in->rss_bytes >> 20), (long long)(m->mf->memory_limit >> 20));
    snprintf(in->fault, sizeof in->fault, "replaced: resident memory above limits.memory");
    in->replace = 1;
    if (in->inflight == 0)
        inst_stop(in, R.stop_grace_ms);
}

/* Adds an instance under sustained queue pressure; retires extra ones that idle. */
static void autoscale(model *m, uint64_t now)
{
    if (m->state != MODEL_READY || !m->mf)
        return;
    int active = active_slots(m);
    int ceiling = m->mf->max_instances > m->target ? m->mf->max_instances : m->target;
    m->pressure_ticks = m->queue.count ? m->pressure_ticks + 1 : 0;
    if (m->pressure_ticks >= AUTOSCALE_PRESSURE_TICKS && active < ceiling) {
        m->pressure_ticks = 0;
        log_info("model %s: %zu requests waiting for %d s; adding an instance (%d of at most %d)", m->name,
                 m->queue.count, AUTOSCALE_PRESSURE_TICKS * TICK_MS / 1000, active + 1, ceiling);
        inst *in = add_slot(m);
        if (start_slot(m, in) < 0)
            model_fail(m, m->reason);
        return;
    }
    if (active <= m->target || m->queue.count)
        return;
    for (int i = m->nslots - 1; i >= 0; i--) {
        inst *in = m->slots[i];
        if (in->retire || in->state != INST_READY || in->inflight || now - in->last_busy_ms < AUTOSCALE_IDLE_MS)
            continue;
        log_info("model %s: instance %d idle for %d s; scaling back to %d", m->name, in->id,
                 AUTOSCALE_IDLE_MS / 1000, active - 1);
        in->retire = 1;
        inst_stop(in, R.stop_grace_ms);
        return; /* one a tick */
    }
}

/*
 * The heap keeps the memory of freed large buffers (server.c) so the next
 * large tensor finds its pages already there; once no request has come for
 * a while, what is free goes back to the system.
 */
static void release_idle_heap(uint64_t now)
{
    if (now - R.last_submit_ms < HEAP_KEEP_IDLE_MS)
        return;
    struct mallinfo2 mi = mallinfo2();
    if (mi.fordblks > HEAP_KEEP_BYTES)
        malloc_trim(0);
}

static void tick(uv_timer_t *t)
{
    (void)t;
    release_idle_heap(now_ms());
    /* Every instance of every model, for one pass over /proc; kept between ticks, it only grows. */
    static inst **all;
    static size_t cap;
    size_t n = 0;
    for (model *m = R.head; m; m = m->next) {
        if (n + (size_t)m->nslots > cap) {
            cap = 2 * (n + (size_t)m->nslots);
            all = xrealloc(all, cap * sizeof *all);
        }
        for (int i = 0; i < m->nslots; i++)
            all[n++] = m->slots[i];
    }
    if (!n)
        return;
    inst_sample_rss(all, n);
    uint64_t now = now_ms();
    for (model *m = R.head; m; m = m->next) {
        for (int i = 0; i < m->nslots; i++) {
            inst *in = m->slots[i];
            if (in->rss_bytes > m->rss_per_instance)
                m->rss_per_instance = in->rss_bytes;
            check_memory_limit(m, in);
            if (now - in->last_busy_ms >= HEAP_KEEP_IDLE_MS)
                inst_release_shm(in); /* like the heap: large-tensor memory goes back when idle */
        }
        if (!R.shutting_down)
            autoscale(m, now);
    }
}

/*
 * With --memory-budget: makes room for m by unloading least-recently-used
 * idle models. Returns 0, or 503 with a message naming what is loaded.
 */
static int fit_memory_budget(model *m, int instances, char *msg, size_t msglen)
{
    if (!R.memory_budget)
        return 0;
    uint64_t per = m->rss_per_instance;
    if (m->mf->memory_limit && (uint64_t)m->mf->memory_limit > per)
        per = (uint64_t)m->mf->memory_limit;
    uint64_t need = per * (uint64_t)instances;
    uint64_t used = 0;
    for (model *o = R.head; o; o = o->next)
        if (o != m && o->nslots)
            used += model_footprint(o);
    while (used + need > (uint64_t)R.memory_budget) {
        model *lru = NULL;
        for (model *o = R.head; o; o = o->next) {
            if (o == m || o->state != MODEL_READY || o->queue.count)
                continue;
            int busy = 0;
            for (int i = 0; i < o->nslots; i++)
                busy |= o->slots[i]->inflight > 0;
            if (!busy && (!lru || o->last_used_ms < lru->last_used_ms))
                lru = o;
        }
        if (!lru)
            break;
        uint64_t freed = model_footprint(lru);
        log_info("model %s: unloading it to make room for %s (memory budget %lld MiB)", lru->name, m->name,
                 (long long)(R.memory_budget >> 20));
        char ignored[64];
        model_unload(lru, NULL, ignored, sizeof ignored);
        used = used > freed ? used - freed : 0;
    }
    if (used + need <= (uint64_t)R.memory_budget)
        return 0;
    sb b;
    sb_init(&b, 256);
    sb_printf(&b, "not enough memory to load model '%s' (needs about %llu MiB; memory budget %lld MiB, %llu MiB in use:",
              m->name, (unsigned long long)(need >> 20), (long long)(R.memory_budget >> 20),
              (unsigned long long)(used >> 20));
    int first = 1;
    for (model *o = R.head; o; o = o->next) {
        if (o == m || !o->nslots)
            continue;
        sb_printf(&b, "%s %s %llu MiB (%s)", first ? "" : ",", o->name, (unsigned long long)(model_rss(o) >> 20),
                  model_state_name(o->state));
        first = 0;
    }
    sb_addc(&b, ')');
    snprintf(msg, msglen, "%.*s", (int)b.len, b.p);
    sb_free(&b);
    return 503;
}

/* ---- requests ---- */

static void dispatch(model *m)
{
    while (m->queue.count) {
        inst *best = NULL;
        int concurrency = m->mf ? m->mf->concurrency : 1;
        for (int k = 0; k < m->nslots; k++) {
            inst *in = m->slots[(m->rr + k) % m->nslots];
            if (in->state != INST_READY || in->exited || in->retire || in->replace || in->inflight >= concurrency)
                continue;
            if (!best || in->inflight < best->inflight)
                best = in;
            if (in->inflight == 0)
                break;
        }
        if (!best)
            return;
        job *j = sched_pop(&m->queue);
        if (j->waited && j->client_alive && !j->client_alive(j)) {
            answer_job(j, 503, "the client went away while the request was queued");
            continue;
        }
        m->rr = (m->rr + 1) % m->nslots;
        best->last_busy_ms = now_ms();
        inst_send(best, j);
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
    log_info("model %s: idle for its keep_alive; unloading", m->name);
    char msg[64];
    model_unload(m, NULL, msg, sizeof msg);
}

static void arm_idle_timer(model *m)
{
    if (!m->mf || m->mf->keep_alive_ms < 0 || m->state != MODEL_READY || m->queue.count)
        return;
    for (int i = 0; i < m->nslots; i++)
        if (m->slots[i]->inflight)
            return;
    uv_timer_start(&m->idle_timer, idle_fire, (uint64_t)m->mf->keep_alive_ms + 1, 0);
}

int model_submit(model *m, job *j, char *msg, size_t msglen, int *retry_after)
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
    j->enqueued_ms = now_ms();
    if (!j->deadline_ms)
        j->deadline_ms = j->enqueued_ms + (uint64_t)m->mf->timeout_ms;
    sched_deadline_track(j);
    arm_deadline_timer();
    uv_timer_stop(&m->idle_timer);
    sched_push(&m->queue, j);
    dispatch(m);
    j->waited = 1; /* harmless when already sent: only queued jobs are checked */
    return 0;
}

int model_cancel(job *j)
{
    if (!j->queued)
        return 0;
    model *m = j->model;
    sched_remove(&m->queue, j);
    arm_idle_timer(m);
    return 1;
}

/* ---- views ---- */

json_t *model_to_json(model *m)
{
    json_t *insts = json_array();
    uint64_t now = now_ms();
    inst_sample_rss(m->slots, (size_t)m->nslots);
    for (int i = 0; i < m->nslots; i++) {
        inst *in = m->slots[i];
        /* null, not 0, without a process: `kill 0` would signal the caller's own group */
        json_t *o = json_pack("{s:i, s:s, s:o, s:I, s:I, s:i, s:i, s:I, s:b}", "id", in->id, "state",
                              inst_state_name(in->state), "pid",
                              in->state == INST_IDLE ? json_null() : json_integer(in->pid),
                              "uptime_ms", (json_int_t)(in->state == INST_IDLE ? 0 : now - in->started_ms),
                              "requests", (json_int_t)in->requests, "restarts", in->restarts, "inflight",
                              in->inflight, "rss_bytes", (json_int_t)in->rss_bytes, "retiring", in->retire);
        if (in->replace)
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
                          "queue", (json_int_t)m->queue.count, "target_instances", m->target, "instances", insts);
    json_object_set_new(o, "dir", utf8_json_string(m->dir, strlen(m->dir)));
    if (m->broken)
        json_object_set_new(o, "manifest_error", utf8_json_string(m->broken, strlen(m->broken)));
    if (mf) {
        json_object_set_new(o, "runtime", json_string(mf->runtime == RUNTIME_PYTHON ? "python" : "exec"));
        json_object_set_new(o, "load", json_string(mf->load_eager ? "eager" : "lazy"));
        json_object_set_new(o, "max_queue", json_integer(mf->max_queue));
        json_object_set_new(o, "concurrency", json_integer(mf->concurrency));
    }
    return o;
}

json_t *model_metadata_json(model *m)
{
    const manifest *mf = m->mf;
    json_t *inputs = mf && mf->inputs ? json_incref(mf->inputs) : NULL;
    json_t *outputs = mf && mf->outputs ? json_incref(mf->outputs) : NULL;
    for (int i = 0; i < m->nslots && (!inputs || !outputs); i++) {
        json_t *meta = m->slots[i]->metadata;
        if (!meta)
            continue;
        if (!inputs && json_is_array(json_object_get(meta, "inputs")))
            inputs = json_incref(json_object_get(meta, "inputs"));
        if (!outputs && json_is_array(json_object_get(meta, "outputs")))
            outputs = json_incref(json_object_get(meta, "outputs"));
    }
    return json_pack("{s:s, s:[s], s:s, s:o, s:o}", "name", m->name, "versions", "1", "platform",
                     mf && mf->runtime == RUNTIME_EXEC ? "corral_exec" : "corral_python", "inputs",
                     inputs ? inputs : json_array(), "outputs", outputs ? outputs : json_array());
}

/* ---- shutdown ---- */

static void check_shutdown_done(void)
{
    if (!R.shutting_down || !R.shutdown_done)
        return;
    for (model *m = R.head; m; m = m->next)
        for (int i = 0; i < m->nslots; i++)
            if (m->slots[i]->state != INST_IDLE)
                return;
    void (*done)(void) = R.shutdown_done;
    R.shutdown_done = NULL;
    uv_timer_stop(&R.drain_timer);
    done();
}

/* Once a model has no request queued or running during shutdown, its workers go. */
static void drain_model(model *m)
{
    if (m->queue.count)
        return;
    for (int i = 0; i < m->nslots; i++)
        if (m->slots[i]->inflight)
            return;
    stop_all(m);
    if (m->state != MODEL_FAILED && m->state != MODEL_UNLOADED)
        model_set_state(m, m->nslots ? MODEL_UNLOADING : MODEL_UNLOADED, NULL);
    check_unload_done(m);
    check_shutdown_done();
}

/* At the drain timeout what is still queued gets 503 and every worker is stopped. */
static void drain_expired(uv_timer_t *t)
{
    (void)t;
    log_warn("drain timeout: answering queued requests 503 and stopping every worker");
    for (model *m = R.head; m; m = m->next) {
        char why[300];
        snprintf(why, sizeof why, "model '%s': corral is shutting down: the drain timeout passed before the request ran",
                 m->name);
        fail_queue(m, 503, why);
        snprintf(why, sizeof why, "model '%s': corral is shutting down", m->name);
        notify(&m->load_waiters, 503, why);
        for (int i = 0; i < m->nslots; i++) {
            inst *in = m->slots[i];
            /* Answered here, so the worker's stop finds nothing left to answer 502. */
            while (in->inflight_head) {
                job *j = in->inflight_head;
                char msg[256];
                snprintf(msg, sizeof msg,
                         "model '%s': corral is shutting down: the drain timeout passed while the request ran on "
                         "instance %d (pid %d)",
                         m->name, in->id, in->pid);
                inst_abandon(in, j);
                answer_job(j, 503, msg);
            }
            inst_stop(in, R.stop_grace_ms);
        }
        drain_model(m);
    }
}

void registry_shutdown(void (*done)(void))
{
    R.shutting_down = 1;
    uv_timer_start(&R.drain_timer, drain_expired, (uint64_t)R.drain_timeout_ms, 0);
    R.shutdown_done = done;
    uv_timer_stop(&R.tick_timer);
    /* Queued and running requests go on until the drain timeout; a model
     * still loading for a waiting request finishes its load and serves it. */
    for (model *m = R.head; m; m = m->next) {
        uv_timer_stop(&m->idle_timer);
        char why[200];
        snprintf(why, sizeof why, "model '%s': corral is shutting down", m->name);
        notify(&m->load_waiters, 503, why);
        drain_model(m);
    }
    check_shutdown_done();
}
