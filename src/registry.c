/*
 * registry — the model list and what spans every model: rescans of the
 * repository, the once-a-second tick (memory samples, limits.memory,
 * autoscaling, giving idle heap back), the memory budget and its LRU
 * unloads, and shutdown with its drain. See model.h, and model_internal.h
 * for how this file shares the work with model.c and dispatch.c.
 */
#include "model_internal.h"
#include "pull.h"

#include "clock.h"
#include "log.h"
#include "repo.h"
#include "sb.h"
#include "state.h"
#include "xmalloc.h"

#include <limits.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct registry R;

#define TICK_MS 1000
#define AUTOSCALE_PRESSURE_TICKS 3  /* seconds of queue pressure before adding an instance */
#define AUTOSCALE_IDLE_MS 10000     /* idle time before an extra instance is retired */
#define HEAP_KEEP_IDLE_MS 5000      /* idle time before the heap's free memory goes back to the system */
#define HEAP_KEEP_BYTES (64u << 20) /* free heap kept regardless */

static void tick(uv_timer_t *t);

/* ---- the model list ---- */

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

model *registry_model_new(const repo_entry *e)
{
    model *m = xcalloc(1, sizeof *m);
    m->name = xstrdup(e->name);
    m->dir = xstrdup(e->dir);
    m->variant_dir = e->variant_dir ? xstrdup(e->variant_dir) : NULL;
    m->state = MODEL_UNLOADED;
    uv_timer_init(R.loop, &m->idle_timer);
    m->idle_timer.data = m;
    uv_timer_init(R.loop, &m->batch_timer);
    m->batch_timer.data = m;
    uv_timer_init(R.loop, &m->seq_timer);
    m->seq_timer.data = m;
    seq_table_init(&m->seqs);
    job_queue_init(&m->queue, 1);
    /* Insert in name order so listings are stable. */
    model **p = &R.head;
    while (*p && strcmp((*p)->name, m->name) < 0)
        p = &(*p)->next;
    m->next = *p;
    *p = m;
    return m;
}

static void timers_closed(uv_handle_t *h)
{
    model *m = h->data;
    if (--m->timers_open > 0)
        return;
    seq_table_free(&m->seqs); /* emptied by the unload before a model is removed */
    manifest_free(m->mf);
    manifest_free(m->next_mf);
    model_drop_labels(m);
    manifest_free(m->reload_mf);
    json_decref(m->override);
    json_decref(m->reload_override);
    free(m->broken);
    free(m->name);
    free(m->dir);
    json_decref(m->keys);
    free(m->from);
    free(m->variant_dir);
    json_decref(m->spec);
    free(m->scan_dir);
    free(m->scan_variant_dir);
    free(m->slots);
    logring_free(&m->logs);
    free(m);
}

void registry_model_remove(model *m)
{
    for (model **p = &R.head; *p; p = &(*p)->next) {
        if (*p == m) {
            *p = m->next;
            break;
        }
    }
    MODEL_LOG(LOG_INFO, m, "model %s: removed from the %s", m->name,
              m->spec ? "models created at run time" : "repository");
    if (m->pulling) { /* its source's pull goes on, and nobody waits for it */
        pull_detach(m->pulling);
        m->pulling = NULL;
    }
    m->timers_open = 3;
    uv_close((uv_handle_t *)&m->idle_timer, timers_closed);
    uv_close((uv_handle_t *)&m->batch_timer, timers_closed);
    uv_close((uv_handle_t *)&m->seq_timer, timers_closed);
}

/* Takes ownership of e's manifest, keys or error. */
void registry_apply_entry(model *m, repo_entry *e)
{
    int running = m->state != MODEL_UNLOADED && m->state != MODEL_FAILED;
    json_decref(m->keys);
    m->keys = e->keys;
    e->keys = NULL;
    free(m->from);
    m->from = e->from ? xstrdup(e->from) : NULL;
    free(m->broken);
    m->broken = e->error;
    e->error = NULL;
    m->removed = 0;
    if (e->mf) {
        free(m->scan_dir);
        free(m->scan_variant_dir);
        m->scan_dir = xstrdup(e->dir);
        m->scan_variant_dir = e->variant_dir ? xstrdup(e->variant_dir) : NULL;
    }
    if (!e->mf) {
        if (running || m->override) { /* a load's config keeps its manifest until the next explicit load */
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
    if (running || m->override) {
        if (!m->next_mf || m->next_mf->digest != e->mf->digest)
            MODEL_LOG(LOG_INFO, m, "model %s: manifest changed; it applies at the next load", m->name);
        manifest_free(m->next_mf);
        m->next_mf = e->mf;
        m->changed = 1;
    } else {
        manifest_free(m->mf);
        m->mf = e->mf;
        m->changed = 0;
        model_take_scan_dirs(m);
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
        m->removed = !m->spec; /* a model created at run time is not on disk */
    for (size_t i = 0; i < n; i++) {
        model *m = model_find(v[i].name, strlen(v[i].name));
        if (m && m->spec) { /* the name was taken at run time first: the directory waits until it is deleted */
            if (!m->shadow_logged)
                log_error("model repository: %s is refused: a model named '%s' was created at run time; delete it "
                          "(corral delete %s) and the directory is served from the next scan",
                          v[i].variant_dir ? v[i].variant_dir : v[i].dir, v[i].name, v[i].name);
            m->shadow_logged = 1;
            continue;
        }
        if (!m) {
            m = registry_model_new(&v[i]);
            if (v[i].error)
                log_error("model %s: unavailable: %s", v[i].name, v[i].error);
            else if (v[i].from)
                log_info("model %s: discovered in %s, a variant of %s", v[i].name, v[i].variant_dir, v[i].from);
            else
                log_info("model %s: discovered in %s", v[i].name, v[i].dir);
        } else if (v[i].error && (!m->broken || strcmp(m->broken, v[i].error) != 0)) {
            log_error("model %s: unavailable: %s", v[i].name, v[i].error);
        }
        registry_apply_entry(m, &v[i]);
    }
    repo_entries_free(v, n);
    for (model *m = R.head, *next; m; m = next) {
        next = m->next;
        if (m->removed && (m->state == MODEL_UNLOADED || m->state == MODEL_FAILED) && m->nslots == 0)
            registry_model_remove(m);
    }
    variant_rescan(); /* after the disk's models: their keys are what run-time models derive from */
    return 0;
}

/*
 * A directory for workers, whose working directory is their model's: the
 * path resolved (realpath), or, for one that does not exist yet (an
 * external-models volume a model will create), joined to the daemon's
 * working directory. NULL for NULL.
 */
static char *absolute_dir(const char *path)
{
    if (!path)
        return NULL;
    char buf[PATH_MAX];
    if (realpath(path, buf))
        return xstrdup(buf);
    if (path[0] == '/' || !getcwd(buf, sizeof buf))
        return xstrdup(path);
    sb joined = {0};
    sb_printf(&joined, "%s/%s", buf, path);
    return sb_take(&joined, NULL);
}

int registry_init(uv_loop_t *loop, const registry_config *cfg)
{
    R.loop = loop;
    R.models_dir = xstrdup(cfg->models_dir);
    R.external_dir = cfg->external_dir ? xstrdup(cfg->external_dir) : NULL;
    R.external_abs = absolute_dir(cfg->external_dir);
    R.samples_abs = absolute_dir(cfg->samples_dir);
    if (R.samples_abs)
        log_info("samples directory %s, handed to workers as CORRAL_SAMPLES_DIR", R.samples_abs);
    R.python_sdk_dir = xstrdup(cfg->python_sdk_dir);
    R.pull_on_load = cfg->pull_on_load;
    R.stop_grace_ms = cfg->stop_grace_ms > 0 ? cfg->stop_grace_ms : 5000;
    R.drain_timeout_ms = cfg->drain_timeout_ms > 0 ? cfg->drain_timeout_ms : 30000;
    uv_timer_init(loop, &R.drain_timer);
    uv_timer_init(loop, &R.deadline_timer);
    uv_timer_init(loop, &R.watch_timer);
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

static int by_name(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

void registry_restore(const state_snapshot *s)
{
    if (R.shutting_down)
        return;
    variant_restore(s); /* first: a run-time model recorded as loaded loads again below */
    /* The names recorded as created at run time, sorted: a load record of one is that model's, never a disk one's. */
    const char **runtime = xmalloc((s->n_runtime ? s->n_runtime : 1) * sizeof *runtime);
    for (size_t i = 0; i < s->n_runtime; i++)
        runtime[i] = s->runtime[i].name;
    qsort(runtime, s->n_runtime, sizeof *runtime, by_name);
    for (size_t i = 0; i < s->n_models; i++) {
        const state_model *r = &s->models[i];
        model *m = model_find(r->name, strlen(r->name));
        if (!m) {
            log_warn("state: model %s was loaded before the restart but is not in the repository now; not loaded "
                     "(its record is kept, for a repository that comes back)",
                     r->name);
            continue;
        }
        if (!m->spec && bsearch(&r->name, runtime, s->n_runtime, sizeof *runtime, by_name)) {
            /* variant_restore left the run-time model out (a directory has its name now): its load, config and
             * count are not the directory's to take. */
            MODEL_LOG(LOG_WARN, m, "state: model %s in the repository is not loaded: its load record is the run-time "
                      "model's of that name, which was not created again (both records are kept)", r->name);
            continue;
        }
        char msg[1200];
        int status = model_restore(m, r->config, r->instances, msg, sizeof msg);
        if (status)
            MODEL_LOG(LOG_WARN, m, "state: model %s was loaded before the restart but cannot be loaded again: %s",
                      r->name, msg);
        else if (r->instances)
            MODEL_LOG(LOG_INFO, m, "state: loading model %s again, with %d instance%s%s", r->name, r->instances,
                      r->instances == 1 ? "" : "s", r->config ? " and its load's config" : "");
        else
            MODEL_LOG(LOG_INFO, m, "state: loading model %s again%s", r->name,
                      r->config ? ", with its load's config" : "");
    }
    for (size_t i = 0; i < s->n_pulls; i++) {
        const state_pull *p = &s->pulls[i];
        if (!model_find(p->name, strlen(p->name)))
            log_warn("state: model %s was pulled from %s but is not in the repository now; `corral pull %s --sha256 "
                     "%s --name %s` fetches it again",
                     p->name, p->url, p->url, p->sha256, p->name);
    }
    free(runtime);
}

/* ---- memory and autoscaling ---- */

static int active_slots(model *m)
{
    int n = 0;
    for (int i = 0; i < m->nslots; i++)
        if (!slot_of(m->slots[i])->retire)
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
void registry_check_memory_limit(model *m, inst *in)
{
    slot *s = slot_of(in);
    if (!m->mf || !m->mf->memory_limit || in->state != INST_READY || s->replace || s->retire ||
        in->rss_bytes <= (uint64_t)m->mf->memory_limit)
        return;
    MODEL_LOG(LOG_WARN, m, "model %s instance %d (pid %d): resident memory %llu MiB is above limits.memory %lld MiB; replacing it "
             "between requests",
             m->name, in->id, in->pid, (unsigned long long)(in->rss_bytes >> 20), (long long)(m->mf->memory_limit >> 20));
    snprintf(in->fault, sizeof in->fault, "replaced: resident memory above limits.memory");
    s->replace = 1;
    s->replace_cause = RESTART_MEMORY;
    model_emit_instance("instance.killed", m, in,
                        json_pack("{s:s,s:I,s:I}", "cause", "memory", "rss_bytes", (json_int_t)in->rss_bytes,
                                  "limit_bytes", (json_int_t)m->mf->memory_limit));
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
        MODEL_LOG(LOG_INFO, m, "model %s: %zu requests waiting for %d s; adding an instance (%d of at most %d)", m->name,
                 m->queue.count, AUTOSCALE_PRESSURE_TICKS * TICK_MS / 1000, active + 1, ceiling);
        model_emit_scaled(m, active, active + 1, "autoscale");
        inst *in = model_add_slot(m);
        if (model_start_slot(m, in) < 0)
            model_fail(m, m->reason);
        return;
    }
    if (active <= m->target || m->queue.count)
        return;
    for (int i = m->nslots - 1; i >= 0; i--) {
        inst *in = m->slots[i];
        if (slot_of(in)->retire || in->state != INST_READY || in->inflight || slot_of(in)->sequences ||
            now - in->last_busy_ms < AUTOSCALE_IDLE_MS)
            continue;
        MODEL_LOG(LOG_INFO, m, "model %s: instance %d idle for %d s; scaling back to %d", m->name, in->id,
                 AUTOSCALE_IDLE_MS / 1000, active - 1);
        slot_of(in)->retire = 1;
        model_emit_scaled(m, active, active - 1, "autoscale");
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

void registry_sample_rss(model *only)
{
    if (only) {
        inst_sample_rss(only->slots, (size_t)only->nslots);
        return;
    }
    /* Every instance of every model, for one pass over /proc; kept between calls, it only grows. */
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
    inst_sample_rss(all, n);
}

static void tick(uv_timer_t *t)
{
    (void)t;
    release_idle_heap(now_ms());
    registry_sample_rss(NULL);
    uint64_t now = now_ms();
    for (model *m = R.head; m; m = m->next) {
        for (int i = 0; i < m->nslots; i++) {
            inst *in = m->slots[i];
            if (in->rss_bytes > m->rss_per_instance)
                m->rss_per_instance = in->rss_bytes;
            registry_check_memory_limit(m, in);
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
int registry_fit_memory_budget(model *m, int instances, char *msg, size_t msglen)
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

/* ---- shutdown ---- */

void registry_check_shutdown_done(void)
{
    if (!R.shutting_down || !R.on_shutdown_done)
        return;
    for (model *m = R.head; m; m = m->next)
        for (int i = 0; i < m->nslots; i++)
            if (m->slots[i]->state != INST_IDLE)
                return;
    void (*on_done)(void) = R.on_shutdown_done;
    R.on_shutdown_done = NULL;
    uv_timer_stop(&R.drain_timer);
    on_done();
}

/* Once a model has no request queued or running during shutdown, its workers go. */
void registry_drain_model(model *m)
{
    if (m->queue.count || m->seqs.waiting)
        return;
    for (int i = 0; i < m->nslots; i++)
        if (m->slots[i]->inflight)
            return;
    model_stop_all(m);
    if (m->state != MODEL_FAILED && m->state != MODEL_UNLOADED)
        model_set_state(m, m->nslots ? MODEL_UNLOADING : MODEL_UNLOADED, NULL);
    model_check_unload_done(m);
    registry_check_shutdown_done();
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
        model_fail_queue(m, 503, why);
        snprintf(why, sizeof why, "model '%s': corral is shutting down", m->name);
        model_notify(&m->load_waiters, 503, why);
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
        registry_drain_model(m);
    }
}

int registry_draining(void)
{
    return R.shutting_down;
}

void registry_shutdown(void (*on_done)(void))
{
    R.shutting_down = 1;
    uv_timer_start(&R.drain_timer, drain_expired, (uint64_t)R.drain_timeout_ms, 0);
    R.on_shutdown_done = on_done;
    uv_timer_stop(&R.tick_timer);
    /* Queued and running requests go on until the drain timeout; a model
     * still loading for a waiting request finishes its load and serves it. */
    for (model *m = R.head; m; m = m->next) {
        uv_timer_stop(&m->idle_timer);
        char why[200];
        snprintf(why, sizeof why, "model '%s': corral is shutting down", m->name);
        model_notify(&m->load_waiters, 503, why);
        registry_drain_model(m);
    }
    registry_check_shutdown_done();
}
