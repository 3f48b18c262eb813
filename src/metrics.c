/*
 * metrics — counting and rendering; see metrics.h.
 */
#include "metrics.h"
#include "session.h"
#include "sessreq.h"

#include "inst.h"
#include "model.h"
#include "procfs.h"

#include <dirent.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

const uint64_t metrics_time_bounds_us[METRICS_TIME_BUCKETS] = {
    100,    250,    500,     1000,    2500,    5000,     10000,    25000,    50000,    100000,
    250000, 500000, 1000000, 2500000, 5000000, 10000000, 30000000, 60000000, 300000000,
};
const uint64_t metrics_batch_bounds[METRICS_BATCH_BUCKETS] = {1, 2, 4, 8, 16, 32, 64, 128, 256};

static double start_time_s;

void metrics_start(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    start_time_s = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- counting ---- */

/* The bucket of value: the first bound >= value, or nbounds (+Inf, counted only in count). */
static int bucket_of(const uint64_t *bounds, int nbounds, uint64_t value)
{
    int lo = 0, hi = nbounds;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (bounds[mid] >= value)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

void histogram_observe(histogram *h, const uint64_t *bounds, int nbounds, uint64_t value)
{
    int b = bucket_of(bounds, nbounds, value);
    if (b < nbounds)
        h->bucket[b]++;
    h->count++;
    h->sum += value;
}

/* Takes back one observation of value (histogram_observe'd before). */
static void histogram_forget(histogram *h, const uint64_t *bounds, int nbounds, uint64_t value)
{
    int b = bucket_of(bounds, nbounds, value);
    if (b < nbounds && h->bucket[b])
        h->bucket[b]--;
    if (h->count)
        h->count--;
    h->sum = h->sum >= value ? h->sum - value : 0;
}

static void observe_time(histogram *h, uint64_t us)
{
    histogram_observe(h, metrics_time_bounds_us, METRICS_TIME_BUCKETS, us);
}

metrics_fail metrics_fail_reason(int status, int client_gone)
{
    if (client_gone)
        return FAIL_CANCELED;
    switch (status) {
    case 503:
    case 504:
        return FAIL_REJECTED;
    case 400:
    case 500:
    case 502:
        return FAIL_BACKEND;
    default:
        return FAIL_OTHER;
    }
}

void metrics_answered(model_stats *s, int fail, uint64_t rows, uint64_t total_us, int64_t queue_us, int64_t compute_us)
{
    observe_time(&s->latency, total_us);
    if (compute_us >= 0)
        observe_time(&s->compute, (uint64_t)compute_us);
    if (fail >= 0 && fail < FAIL_REASONS) {
        s->fail[fail]++;
        s->fail_us += total_us;
        return;
    }
    s->success++;
    s->success_us += total_us;
    s->inference_count += rows;
    if (queue_us >= 0) {
        s->queue_count++;
        s->queue_us += (uint64_t)queue_us;
    }
    if (compute_us >= 0) {
        s->compute_count++;
        s->compute_us += (uint64_t)compute_us;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    s->last_inference_ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void metrics_dispatched(model_stats *s, uint64_t queue_us)
{
    observe_time(&s->queue, queue_us);
}

void metrics_first_chunk(model_stats *s, uint64_t ttfc_us)
{
    observe_time(&s->ttfc, ttfc_us);
}

void metrics_executed(model_stats *s, uint64_t rows)
{
    s->execution_count++;
    histogram_observe(&s->batch, metrics_batch_bounds, METRICS_BATCH_BUCKETS, rows);
}

void metrics_returned(model_stats *s)
{
    if (s->execution_count)
        s->execution_count--;
    histogram_forget(&s->batch, metrics_batch_bounds, METRICS_BATCH_BUCKETS, 1);
    s->requeued++;
}

/* ---- the exposition ---- */

static const char *const restart_names[RESTART_CAUSES] = {"crash", "hang", "deadline", "memory"};

static void family(sb *out, const char *name, const char *type, const char *help)
{
    sb_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A label value as the exposition format escapes it (model names never need it: model_name_valid). */
static void label_value(sb *out, const char *v)
{
    if (!strpbrk(v, "\\\"\n")) {
        sb_adds(out, v);
        return;
    }
    for (; *v; v++) {
        if (*v == '\\' || *v == '"')
            sb_addc(out, '\\');
        if (*v == '\n') {
            sb_adds(out, "\\n");
            continue;
        }
        sb_addc(out, *v);
    }
}

/* name + suffix + {model="m" */
static void series(sb *out, const char *name, const char *suffix, const char *model)
{
    sb_adds(out, name);
    sb_adds(out, suffix);
    sb_adds(out, "{model=\"");
    label_value(out, model);
}

/* name{model="m",version="1"} (Triton's labels) followed by a space. */
static void triton_sample(sb *out, const char *name, const char *model, const char *extra)
{
    series(out, name, "", model);
    sb_adds(out, "\",version=\"1\"");
    if (extra)
        sb_adds(out, extra);
    sb_adds(out, "} ");
}

static void u64_line(sb *out, uint64_t v)
{
    sb_u64(out, v);
    sb_addc(out, '\n');
}

/* µs as seconds, exactly: "1.000250". */
static void seconds_of_us(sb *out, uint64_t us)
{
    sb_u64(out, us / 1000000);
    char frac[8];
    snprintf(frac, sizeof frac, ".%06u", (unsigned)(us % 1000000));
    sb_adds(out, frac);
}

/* The le="..." text of each bound, made once: formatting them is most of a scrape otherwise. */
static char time_le[METRICS_TIME_BUCKETS][24], batch_le[METRICS_BATCH_BUCKETS][24];

static void make_le_labels(void)
{
    if (time_le[0][0])
        return;
    for (int i = 0; i < METRICS_TIME_BUCKETS; i++)
        snprintf(time_le[i], sizeof time_le[i], "%g", (double)metrics_time_bounds_us[i] / 1e6);
    for (int i = 0; i < METRICS_BATCH_BUCKETS; i++)
        snprintf(batch_le[i], sizeof batch_le[i], "%llu", (unsigned long long)metrics_batch_bounds[i]);
}

/* One histogram's samples; in_us: its unit is µs, exported in seconds (else a plain count). */
static void histogram_samples(sb *out, const char *name, const char *model, const histogram *h, int nbounds,
                              int in_us)
{
    uint64_t cumulative = 0;
    for (int i = 0; i < nbounds; i++) {
        cumulative += h->bucket[i];
        series(out, name, "_bucket", model);
        sb_adds(out, "\",le=\"");
        sb_adds(out, in_us ? time_le[i] : batch_le[i]);
        sb_adds(out, "\"} ");
        u64_line(out, cumulative);
    }
    series(out, name, "_bucket", model);
    sb_adds(out, "\",le=\"+Inf\"} ");
    u64_line(out, h->count);
    series(out, name, "_sum", model);
    sb_adds(out, "\"} ");
    if (in_us)
        seconds_of_us(out, h->sum);
    else
        sb_u64(out, h->sum);
    sb_addc(out, '\n');
    series(out, name, "_count", model);
    sb_adds(out, "\"} ");
    u64_line(out, h->count);
}

typedef uint64_t (*stat_fn)(const model *m, const model_stats *s);

static uint64_t get_success(const model *m, const model_stats *s) { (void)m; return s->success; }
static uint64_t get_inference(const model *m, const model_stats *s) { (void)m; return s->inference_count; }
static uint64_t get_exec(const model *m, const model_stats *s) { (void)m; return s->execution_count; }
static uint64_t get_pending(const model *m, const model_stats *s) { (void)s; return model_queue_depth(m); }
static uint64_t get_request_us(const model *m, const model_stats *s) { (void)m; return s->success_us; }
static uint64_t get_queue_us(const model *m, const model_stats *s) { (void)m; return s->queue_us; }
static uint64_t get_compute_us(const model *m, const model_stats *s) { (void)m; return s->compute_us; }

static void triton_family(sb *out, const char *name, const char *type, const char *help, stat_fn get)
{
    family(out, name, type, help);
    for (model *m = model_next(NULL); m; m = model_next(m)) {
        triton_sample(out, name, model_name(m), NULL);
        u64_line(out, get(m, model_stats_get(m)));
    }
}

static void process_families(sb *out)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
                 (double)ru.ru_stime.tv_usec / 1e6;
    family(out, "process_cpu_seconds_total", "counter", "User and system CPU time the daemon spent, in seconds.");
    sb_printf(out, "process_cpu_seconds_total %.6f\n", cpu);
    uint64_t rss = 0;
    procfs_rss(getpid(), &rss);
    family(out, "process_resident_memory_bytes", "gauge", "The daemon's resident memory (its workers not included).");
    sb_printf(out, "process_resident_memory_bytes %llu\n", (unsigned long long)rss);
    /* Counted at most once a second: with hundreds of workers the listing costs more than the rest. */
    static long fds;
    static uint64_t fds_at_ms;
    struct timespec mono;
    clock_gettime(CLOCK_MONOTONIC, &mono);
    uint64_t now = (uint64_t)mono.tv_sec * 1000 + (uint64_t)mono.tv_nsec / 1000000;
    if (!fds_at_ms || now - fds_at_ms >= 1000) {
        long n = 0;
        DIR *d = opendir("/proc/self/fd");
        for (struct dirent *e; d && (e = readdir(d));)
            n += e->d_name[0] != '.';
        if (d) {
            closedir(d);
            n--; /* the directory's own descriptor */
        }
        fds = n;
        fds_at_ms = now;
    }
    family(out, "process_open_fds", "gauge", "Open file descriptors of the daemon.");
    sb_printf(out, "process_open_fds %ld\n", fds);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
        family(out, "process_max_fds", "gauge", "The daemon's limit on open file descriptors.");
        sb_printf(out, "process_max_fds %llu\n", (unsigned long long)rl.rlim_cur);
    }
    family(out, "process_start_time_seconds", "gauge", "When the daemon started, in seconds since the epoch.");
    sb_printf(out, "process_start_time_seconds %.3f\n", start_time_s);
}

/* The context store (session.h): one sample each, no labels. */
static void session_families(sb *out)
{
    session_stats st;
    session_stats_get(&st);
    const struct {
        const char *name, *type, *help;
        uint64_t value;
    } f[] = {
        {"corral_sessions", "gauge", "Sessions in the context store.", st.count},
        {"corral_session_bytes", "gauge", "What the sessions count against --session-memory, bookkeeping included.",
         st.bytes},
        {"corral_session_retained_bytes", "gauge",
         "Replaced or deleted sessions that requests or the state file still hold; they count against "
         "--session-memory too.",
         st.retained},
        {"corral_session_memory_limit_bytes", "gauge", "The context store's ceiling, --session-memory.",
         session_store_config()->memory},
        {"corral_session_hits_total", "counter", "Requests that named a session that was there.", st.hits},
        {"corral_session_misses_total", "counter", "Requests that named a session that was not there.", st.misses},
        {"corral_session_evictions_total", "counter",
         "Sessions evicted, least recently used first, to make room under --session-memory.", st.evictions},
        {"corral_session_expirations_total", "counter", "Sessions removed because their ttl passed.",
         st.expirations},
        {"corral_session_updates_refused_total", "counter",
         "Models' session updates the store refused (too large, no room, a ttl past the maximum); the answers stood.",
         sessreq_refused()},
    };
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        family(out, f[i].name, f[i].type, f[i].help);
        sb_adds(out, f[i].name);
        sb_addc(out, ' ');
        u64_line(out, f[i].value);
    }
}

void metrics_render(sb *out)
{
    make_le_labels();
    triton_family(out, "nv_inference_request_success", "counter",
                  "Number of successful inference requests, all batch sizes.", get_success);
    family(out, "nv_inference_request_failure", "counter",
           "Number of failed inference requests, all batch sizes, by reason.");
    for (model *m = model_next(NULL); m; m = model_next(m)) {
        const model_stats *s = model_stats_get(m);
        static const char *const reason_labels[FAIL_REASONS] = {
            ",reason=\"REJECTED\"", ",reason=\"CANCELED\"", ",reason=\"BACKEND\"", ",reason=\"OTHER\""};
        for (int r = 0; r < FAIL_REASONS; r++) {
            triton_sample(out, "nv_inference_request_failure", model_name(m), reason_labels[r]);
            u64_line(out, s->fail[r]);
        }
    }
    triton_family(out, "nv_inference_count", "counter", "Number of inferences performed (rows of every request).",
                  get_inference);
    triton_family(out, "nv_inference_exec_count", "counter", "Number of model executions performed.", get_exec);
    triton_family(out, "nv_inference_pending_request_count", "gauge",
                  "Instantaneous number of requests waiting in the model's queue.", get_pending);
    triton_family(out, "nv_inference_request_duration_us", "counter",
                  "Cumulative duration of successful requests, enqueue to answer, in microseconds.", get_request_us);
    triton_family(out, "nv_inference_queue_duration_us", "counter",
                  "Cumulative time successful requests waited in the queue, in microseconds.", get_queue_us);
    triton_family(out, "nv_inference_compute_infer_duration_us", "counter",
                  "Cumulative time successful requests spent with a worker, in microseconds.", get_compute_us);
    family(out, "nv_model_load_duration_secs", "gauge", "How long the model's last load took, in seconds.");
    for (model *m = model_next(NULL); m; m = model_next(m)) {
        triton_sample(out, "nv_model_load_duration_secs", model_name(m), NULL);
        seconds_of_us(out, (uint64_t)(model_stats_get(m)->load_seconds * 1e6 + 0.5));
        sb_addc(out, '\n');
    }

    static const struct {
        const char *name, *help;
        size_t offset;
    } hists[] = {
        {"corral_request_duration_seconds", "Time from accepting a request to answering it, every answered request.",
         offsetof(model_stats, latency)},
        {"corral_queue_duration_seconds", "Time requests waited in the queue before a worker took them.",
         offsetof(model_stats, queue)},
        {"corral_compute_duration_seconds", "Time from handing a request to a worker to its answer.",
         offsetof(model_stats, compute)},
        {"corral_time_to_first_chunk_seconds", "Time from accepting a streamed request to its first chunk.",
         offsetof(model_stats, ttfc)},
    };
    for (size_t k = 0; k < sizeof hists / sizeof hists[0]; k++) {
        family(out, hists[k].name, "histogram", hists[k].help);
        for (model *m = model_next(NULL); m; m = model_next(m)) {
            const histogram *h = (const histogram *)((const char *)model_stats_get(m) + hists[k].offset);
            histogram_samples(out, hists[k].name, model_name(m), h, METRICS_TIME_BUCKETS, 1);
        }
    }
    family(out, "corral_batch_size", "histogram", "Rows per model execution (1 for every request until batching).");
    for (model *m = model_next(NULL); m; m = model_next(m))
        histogram_samples(out, "corral_batch_size", model_name(m), &model_stats_get(m)->batch, METRICS_BATCH_BUCKETS,
                          0);

    family(out, "corral_model_state", "gauge", "1 for the state each model is in, 0 for the others.");
    for (model *m = model_next(NULL); m; m = model_next(m)) {
        for (int st = MODEL_UNLOADED; st <= MODEL_FAILED; st++) {
            series(out, "corral_model_state", "", model_name(m));
            sb_adds(out, "\",state=\"");
            sb_adds(out, model_state_name((model_state)st));
            sb_adds(out, "\"} ");
            u64_line(out, (int)model_get_state(m) == st);
        }
    }
    family(out, "corral_queue_depth", "gauge", "Requests waiting in the model's queue.");
    for (model *m = model_next(NULL); m; m = model_next(m)) {
        series(out, "corral_queue_depth", "", model_name(m));
        sb_adds(out, "\"} ");
        u64_line(out, model_queue_depth(m));
    }
    family(out, "corral_sequences_active", "gauge", "Live sequences of the model (Triton's sequence_id), each pinned to one instance.");
    for (model *m = model_next(NULL); m; m = model_next(m)) {
        series(out, "corral_sequences_active", "", model_name(m));
        sb_adds(out, "\"} ");
        u64_line(out, model_sequences_active(m));
    }
    family(out, "corral_instances", "gauge", "The model's instances by state.");
    for (model *m = model_next(NULL); m; m = model_next(m)) {
        int count[INST_STOPPING + 1] = {0};
        inst *const *slots;
        int n = model_instances(m, &slots);
        for (int i = 0; i < n; i++)
            count[slots[i]->state]++;
        for (int st = INST_IDLE; st <= INST_STOPPING; st++) {
            series(out, "corral_instances", "", model_name(m));
            sb_adds(out, "\",state=\"");
            sb_adds(out, inst_state_name((inst_state)st));
            sb_adds(out, "\"} ");
            u64_line(out, (uint64_t)count[st]);
        }
    }
    family(out, "corral_instance_restarts_total", "counter", "Worker processes restarted, by cause.");
    for (model *m = model_next(NULL); m; m = model_next(m)) {
        for (int c = 0; c < RESTART_CAUSES; c++) {
            series(out, "corral_instance_restarts_total", "", model_name(m));
            sb_adds(out, "\",cause=\"");
            sb_adds(out, restart_names[c]);
            sb_adds(out, "\"} ");
            u64_line(out, model_stats_get(m)->restarts[c]);
        }
    }
    family(out, "corral_requests_requeued_total", "counter",
           "Pipelined requests queued again because the worker they were sent to died before starting them.");
    for (model *m = model_next(NULL); m; m = model_next(m)) {
        series(out, "corral_requests_requeued_total", "", model_name(m));
        sb_adds(out, "\"} ");
        u64_line(out, model_stats_get(m)->requeued);
    }
    family(out, "corral_instance_resident_memory_bytes", "gauge",
           "Resident memory of each running instance's process group, shared memory regions left out.");
    for (model *m = model_next(NULL); m; m = model_next(m)) {
        inst *const *slots;
        int n = model_instances(m, &slots);
        for (int i = 0; i < n; i++) {
            if (slots[i]->state == INST_IDLE)
                continue;
            series(out, "corral_instance_resident_memory_bytes", "", model_name(m));
            sb_adds(out, "\",instance=\"");
            sb_u64(out, (uint64_t)slots[i]->id);
            sb_adds(out, "\"} ");
            u64_line(out, slots[i]->rss_bytes);
        }
    }
    session_families(out);
    process_families(out);
}

/* ---- Triton's statistics extension ---- */

static json_t *duration(uint64_t count, uint64_t us)
{
    return json_pack("{s:I,s:I}", "count", (json_int_t)count, "ns", (json_int_t)(us * 1000));
}

static json_t *model_stats_json(const model *m)
{
    const model_stats *s = model_stats_get(m);
    uint64_t failed = 0;
    for (int r = 0; r < FAIL_REASONS; r++)
        failed += s->fail[r];
    /* corral cannot tell a worker's input and output handling from its run: all of it is compute_infer. */
    json_t *inference = json_pack("{s:o,s:o,s:o,s:o,s:o,s:o}", "success", duration(s->success, s->success_us),
                                  "fail", duration(failed, s->fail_us), "queue", duration(s->queue_count, s->queue_us),
                                  "compute_input", duration(s->compute_count, 0), "compute_infer",
                                  duration(s->compute_count, s->compute_us), "compute_output",
                                  duration(s->compute_count, 0));
    return json_pack("{s:s,s:s,s:I,s:I,s:I,s:o,s:[]}", "name", model_name(m), "version", "1", "last_inference",
                     (json_int_t)s->last_inference_ms, "inference_count", (json_int_t)s->inference_count,
                     "execution_count", (json_int_t)s->execution_count, "inference_stats", inference, "batch_stats");
}

json_t *metrics_triton_stats(const char *name, size_t name_len)
{
    json_t *list = json_array();
    for (model *m = model_next(NULL); m; m = model_next(m)) {
        const char *n = model_name(m);
        if (name && (strlen(n) != name_len || memcmp(n, name, name_len) != 0))
            continue;
        json_array_append_new(list, model_stats_json(m));
    }
    return json_pack("{s:o}", "model_stats", list);
}
