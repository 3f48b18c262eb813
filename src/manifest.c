/*
 * manifest — model.yaml parsing; see manifest.h.
 *
 * The YAML document is first turned into a jansson tree (libyaml does the
 * parsing), then every key is validated from that tree. Unknown keys are
 * errors, as a misspelt key silently ignored is a misconfiguration that
 * surfaces much later.
 */
#include "manifest.h"

#include "dtype.h"
#include "utf8.h"
#include "xmalloc.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

#define MANIFEST_MAX_BYTES (1 << 20)

uint64_t manifest_digest(const void *data, size_t len)
{
    const unsigned char *p = data;
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

uint64_t manifest_keys_digest(const json_t *keys)
{
    char *text = json_dumps(keys, JSON_COMPACT | JSON_SORT_KEYS);
    uint64_t h = text ? manifest_digest(text, strlen(text)) : 0;
    free(text);
    return h;
}

int parse_duration_ms(const char *s, int64_t *ms)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno || !isfinite(v) || v < 0)
        return -EINVAL;
    double mult;
    if (*end == 0 || strcmp(end, "s") == 0)
        mult = 1000;
    else if (strcmp(end, "ms") == 0)
        mult = 1;
    else if (strcmp(end, "us") == 0 || strcmp(end, "µs") == 0)
        mult = 0.001;
    else if (strcmp(end, "m") == 0)
        mult = 60000;
    else if (strcmp(end, "h") == 0)
        mult = 3600000;
    else
        return -EINVAL;
    double r = v * mult;
    if (r > 9.0e15)
        return -EINVAL;
    *ms = (int64_t)ceil(r);
    return 0;
}

int parse_size(const char *s, int64_t *bytes)
{
    static const struct {
        const char *suffix;
        double mult;
    } units[] = {{"", 1},         {"B", 1},         {"KiB", 1024.0}, {"MiB", 1048576.0}, {"GiB", 1073741824.0},
                 {"TiB", 1099511627776.0}, {"KB", 1e3}, {"MB", 1e6},  {"GB", 1e9},        {"TB", 1e12},
                 {"K", 1024.0}, {"M", 1048576.0}, {"G", 1073741824.0}};
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno || !isfinite(v) || v < 0)
        return -EINVAL;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcmp(end, units[i].suffix) == 0) {
            double r = v * units[i].mult;
            if (r > 9.0e18)
                return -EINVAL;
            *bytes = (int64_t)r;
            return 0;
        }
    }
    return -EINVAL;
}

/* ---- YAML to JSON ---- */

static json_t *scalar_to_json(const yaml_node_t *n)
{
    const char *s = (const char *)n->data.scalar.value;
    size_t len = n->data.scalar.length;
    if (n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return json_stringn(s, len);
    if (len == 0 || strcmp(s, "~") == 0 || strcasecmp(s, "null") == 0)
        return json_null();
    if (strcasecmp(s, "true") == 0)
        return json_true();
    if (strcasecmp(s, "false") == 0)
        return json_false();
    char *end;
    errno = 0;
    long long i = strtoll(s, &end, 10);
    if (*end == 0 && !errno)
        return json_integer(i);
    double d = strtod(s, &end);
    if (*end == 0 && !errno && isfinite(d))
        return json_real(d);
    return json_stringn(s, len);
}

static json_t *node_to_json(yaml_document_t *doc, yaml_node_t *n, int depth)
{
    if (!n || depth > 64)
        return NULL;
    switch (n->type) {
    case YAML_SCALAR_NODE:
        return scalar_to_json(n);
    case YAML_SEQUENCE_NODE: {
        json_t *a = json_array();
        for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top; it++) {
            json_t *v = node_to_json(doc, yaml_document_get_node(doc, *it), depth + 1);
            if (!v) {
                json_decref(a);
                return NULL;
            }
            json_array_append_new(a, v);
        }
        return a;
    }
    case YAML_MAPPING_NODE: {
        json_t *o = json_object();
        for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
            yaml_node_t *k = yaml_document_get_node(doc, p->key);
            json_t *v = node_to_json(doc, yaml_document_get_node(doc, p->value), depth + 1);
            if (!k || k->type != YAML_SCALAR_NODE || !v) {
                json_decref(v);
                json_decref(o);
                return NULL;
            }
            json_object_set_new(o, (const char *)k->data.scalar.value, v);
        }
        return o;
    }
    default:
        return NULL;
    }
}

/* ---- validation ---- */

typedef struct vctx {
    const char *path;
    char *err;
    size_t errlen;
    int failed;
} vctx;

static int fail(vctx *c, const char *key, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(vctx *c, const char *key, const char *fmt, ...)
{
    if (c->failed)
        return -EINVAL;
    c->failed = 1;
    int n = snprintf(c->err, c->errlen, "%s: key '%s': ", c->path, key);
    if (n > 0 && (size_t)n < c->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->err + n, c->errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return -EINVAL;
}

static int get_string(vctx *c, json_t *o, const char *key, const char *dflt, char **out)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        if (!dflt)
            return fail(c, key, "is required");
        *out = xstrdup(dflt);
        return 0;
    }
    if (!json_is_string(v) || json_string_length(v) == 0)
        return fail(c, key, "must be a non-empty string");
    if (strlen(json_string_value(v)) != json_string_length(v))
        return fail(c, key, "must not contain NUL");
    *out = xstrdup(json_string_value(v));
    return 0;
}

static int get_int(vctx *c, json_t *o, const char *key, const char *label, long long dflt, long long lo,
                   long long hi, int *out)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        *out = (int)dflt;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return fail(c, label, "must be an integer from %lld to %lld", lo, hi);
    *out = (int)json_integer_value(v);
    return 0;
}

/* A duration written as a string with a unit, or a bare number of seconds. */
static int get_duration(vctx *c, json_t *o, const char *key, const char *label, int64_t dflt, int allow_never,
                        int64_t *out)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        *out = dflt;
        return 0;
    }
    if (allow_never && ((json_is_integer(v) && json_integer_value(v) == -1) ||
                        (json_is_string(v) && strcmp(json_string_value(v), "-1") == 0))) {
        *out = -1;
        return 0;
    }
    /* a bare number of seconds, bounded as parse_duration_ms bounds one: a larger
     * one would not fit the int64 it becomes (found by fuzz_manifest) */
    if (json_is_number(v) && json_number_value(v) >= 0 && json_number_value(v) * 1000 <= 9.0e15) {
        *out = (int64_t)ceil(json_number_value(v) * 1000);
        return 0;
    }
    if (json_is_string(v) && parse_duration_ms(json_string_value(v), out) == 0)
        return 0;
    return fail(c, label, "must be a duration such as 250ms, 30s, 5m or 1h%s", allow_never ? ", or -1 for never" : "");
}

static int check_keys(vctx *c, json_t *o, const char *section, const char *const *known)
{
    const char *key;
    json_t *v;
    json_object_foreach(o, key, v) {
        int ok = 0;
        for (const char *const *k = known; *k; k++)
            if (strcmp(*k, key) == 0)
                ok = 1;
        if (!ok) {
            char label[256];
            snprintf(label, sizeof label, "%s%s%s", section ? section : "", section ? "." : "", key);
            return fail(c, label, "unknown key");
        }
    }
    return 0;
}

static json_t *get_section(vctx *c, json_t *o, const char *key, const char *const *known)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v))
        return json_object(); /* an empty section: every key takes its default */
    if (!json_is_object(v)) {
        fail(c, key, "must be a mapping");
        return NULL;
    }
    if (check_keys(c, v, key, known) < 0)
        return NULL;
    return json_incref(v);
}

static int get_tensor_meta(vctx *c, json_t *o, const char *key, json_t **out, decl_list **decl)
{
    json_t *v = json_object_get(o, key);
    *out = NULL;
    *decl = NULL;
    if (!v || json_is_null(v))
        return 0;
    if (json_is_array(v)) {
        size_t i;
        json_t *t;
        json_array_foreach(v, i, t) {
            char label[64];
            snprintf(label, sizeof label, "%s[%zu]", key, i);
            static const char *const known[] = {"name", "datatype", "shape", "optional", NULL};
            if (json_is_object(t) && check_keys(c, t, label, known) < 0)
                return -EINVAL;
        }
    }
    char why[256];
    size_t at;
    if (decl_parse(v, decl, &at, why, sizeof why) < 0) {
        char label[64];
        if (at == SIZE_MAX)
            snprintf(label, sizeof label, "%s", key);
        else
            snprintf(label, sizeof label, "%s[%zu]", key, at);
        return fail(c, label, "%s", why);
    }
    *out = json_incref(v);
    return 0;
}

static char **string_list(json_t *a)
{
    char **out = xcalloc(json_array_size(a) + 1, sizeof *out);
    size_t i;
    json_t *v;
    json_array_foreach(a, i, v) out[i] = xstrdup(json_string_value(v));
    return out;
}

static void free_list(char **l)
{
    if (!l)
        return;
    for (char **p = l; *p; p++)
        free(*p);
    free(l);
}

/* Scalars in args and env are written back as text: YAML reads `1` as a number. */
static int scalar_text(json_t *v, char *buf, size_t len)
{
    if (json_is_string(v))
        snprintf(buf, len, "%s", json_string_value(v));
    else if (json_is_integer(v))
        snprintf(buf, len, "%lld", (long long)json_integer_value(v));
    else if (json_is_real(v))
        snprintf(buf, len, "%.17g", json_real_value(v));
    else if (json_is_boolean(v))
        snprintf(buf, len, "%s", json_is_true(v) ? "true" : "false");
    else
        return -EINVAL;
    return 0;
}

/*
 * source: {url, sha256}, where `corral pull NAME` fetches the model's files
 * from (docs/repository.md). Only the form is checked here; whether the URL may
 * be fetched is the pull policy's, at pull time.
 */
static int get_source(vctx *c, json_t *root, manifest *m)
{
    static const char *const source_keys[] = {"url", "sha256", NULL};
    json_t *v = json_object_get(root, "source");
    if (!v || json_is_null(v))
        return 0;
    json_t *src = get_section(c, root, "source", source_keys);
    if (!src)
        return -EINVAL;
    const char *url = json_string_value(json_object_get(src, "url"));
    const char *sha = json_string_value(json_object_get(src, "sha256"));
    int rc = 0;
    if (!url || strlen(url) != json_string_length(json_object_get(src, "url")) || strlen(url) > 8192 ||
        (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0 && strncmp(url, "file:", 5) != 0))
        rc = fail(c, "source.url", "must be an http, https or file URL of at most 8192 bytes");
    for (const char *p = url; rc == 0 && *p; p++)
        if ((unsigned char)*p <= ' ' || *p == 0x7f)
            rc = fail(c, "source.url", "must not contain spaces or control characters");
    if (rc == 0 && (!sha || strlen(sha) != 64 || strspn(sha, "0123456789abcdefABCDEF") != 64))
        rc = fail(c, "source.sha256", "must be the sha256 of the download, 64 hex digits");
    if (rc == 0) {
        m->source_url = xstrdup(url);
        m->source_sha256 = xstrdup(sha);
    }
    json_decref(src);
    return rc;
}

static int validate(vctx *c, json_t *root, const char *dirname, manifest *m)
{
    static const char *const top[] = {"name", "runtime", "entrypoint", "python", "args", "env", "instances",
                                      "max_instances", "concurrency", "pipeline", "load", "keep_alive", "timeout",
                                      "stream_timeout", "load_timeout", "max_queue", "priority_levels", "default_priority",
                                      "batching", "restart", "health", "limits", "parameters", "inputs",
                                      "outputs", "description", "version", "decoupled", "source", "from",
                                      "max_sequence_idle", NULL};
    if (check_keys(c, root, NULL, top) < 0)
        return -EINVAL;
    if (json_object_get(root, "from"))
        return fail(c, "from", "a variant is read with its base, by the repository scan (docs/repository.md, "
                               "\"Variants\"), not on its own");
    if (get_string(c, root, "name", dirname, &m->name) < 0)
        return -EINVAL;
    if (!model_name_valid(m->name, strlen(m->name)))
        return fail(c, "name", "'%s' is not a valid model name ([A-Za-z0-9][A-Za-z0-9._-]{0,127})", m->name);
    char *runtime = NULL;
    if (get_string(c, root, "runtime", NULL, &runtime) < 0)
        return -EINVAL;
    int bad_runtime = 0;
    if (strcmp(runtime, "python") == 0)
        m->runtime = RUNTIME_PYTHON;
    else if (strcmp(runtime, "exec") == 0)
        m->runtime = RUNTIME_EXEC;
    else
        bad_runtime = 1;
    free(runtime);
    if (bad_runtime)
        return fail(c, "runtime", "must be 'python' or 'exec'");
    if (get_string(c, root, "entrypoint", NULL, &m->entrypoint) < 0)
        return -EINVAL;
    if (m->entrypoint[0] == '/' || strstr(m->entrypoint, ".."))
        return fail(c, "entrypoint", "must be a path inside the model directory");
    if (get_string(c, root, "python", "python3", &m->python) < 0)
        return -EINVAL;

    char text[4096];
    json_t *args = json_object_get(root, "args");
    if (args && !json_is_null(args)) {
        if (!json_is_array(args))
            return fail(c, "args", "must be a list of strings");
        json_t *strs = json_array();
        size_t i;
        json_t *v;
        json_array_foreach(args, i, v) {
            if (scalar_text(v, text, sizeof text) < 0) {
                json_decref(strs);
                return fail(c, "args", "must be a list of strings");
            }
            json_array_append_new(strs, utf8_json_string(text, strlen(text)));
        }
        m->args = string_list(strs);
        json_decref(strs);
    } else {
        m->args = xcalloc(1, sizeof *m->args);
    }
    json_t *env = json_object_get(root, "env");
    if (env && !json_is_null(env)) {
        if (!json_is_object(env))
            return fail(c, "env", "must be a mapping of names to values");
        json_t *strs = json_array();
        const char *k;
        json_t *v;
        json_object_foreach(env, k, v) {
            char kv[4200];
            if (!*k || strchr(k, '=') || scalar_text(v, text, sizeof text) < 0) {
                json_decref(strs);
                return fail(c, "env", "entry '%s' must map a name without '=' to a scalar", k);
            }
            snprintf(kv, sizeof kv, "%s=%s", k, text);
            json_array_append_new(strs, utf8_json_string(kv, strlen(kv)));
        }
        m->env = string_list(strs);
        json_decref(strs);
    } else {
        m->env = xcalloc(1, sizeof *m->env);
    }

    if (get_int(c, root, "instances", "instances", 1, 1, MANIFEST_MAX_INSTANCES, &m->instances) < 0 ||
        get_int(c, root, "max_instances", "max_instances", m->instances, m->instances, MANIFEST_MAX_INSTANCES,
                &m->max_instances) < 0 ||
        get_int(c, root, "concurrency", "concurrency", 1, 1, MANIFEST_MAX_CONCURRENCY, &m->concurrency) < 0 ||
        get_int(c, root, "pipeline", "pipeline", 1, 0, MANIFEST_MAX_PIPELINE, &m->pipeline) < 0 ||
        get_int(c, root, "max_queue", "max_queue", 64, 0, 10000000, &m->max_queue) < 0 ||
        get_int(c, root, "priority_levels", "priority_levels", 3, 1, 100, &m->priority_levels) < 0)
        return -EINVAL;
    if (get_int(c, root, "default_priority", "default_priority", m->priority_levels < 2 ? 1 : 2, 1,
                m->priority_levels, &m->default_priority) < 0)
        return -EINVAL;

    json_t *load = json_object_get(root, "load");
    if (!load || json_is_null(load) || (json_is_string(load) && strcmp(json_string_value(load), "lazy") == 0))
        m->load_eager = 0;
    else if (json_is_string(load) && strcmp(json_string_value(load), "eager") == 0)
        m->load_eager = 1;
    else
        return fail(c, "load", "must be 'lazy' or 'eager'");
    json_t *dec = json_object_get(root, "decoupled");
    if (dec && !json_is_null(dec)) {
        if (json_is_boolean(dec))
            m->decoupled = json_is_true(dec);
        else if (json_is_string(dec) && (strcmp(json_string_value(dec), "true") == 0 ||
                                         strcmp(json_string_value(dec), "false") == 0))
            m->decoupled = strcmp(json_string_value(dec), "true") == 0;
        else
            return fail(c, "decoupled", "must be true or false");
    }

    if (get_duration(c, root, "keep_alive", "keep_alive", 5 * 60000, 1, &m->keep_alive_ms) < 0 ||
        get_duration(c, root, "timeout", "timeout", 60000, 0, &m->timeout_ms) < 0 ||
        get_duration(c, root, "stream_timeout", "stream_timeout", 3600000, 1, &m->stream_timeout_ms) < 0 ||
        get_duration(c, root, "load_timeout", "load_timeout", 10 * 60000, 0, &m->load_timeout_ms) < 0 ||
        get_duration(c, root, "max_sequence_idle", "max_sequence_idle", 1000, 0, &m->max_sequence_idle_ms) < 0)
        return -EINVAL;
    if (m->max_sequence_idle_ms == 0)
        return fail(c, "max_sequence_idle", "must be greater than zero");
    m->sequence_declared = json_object_get(root, "max_sequence_idle") != NULL;
    if (m->timeout_ms == 0)
        return fail(c, "timeout", "must be greater than zero");
    if (m->load_timeout_ms == 0)
        return fail(c, "load_timeout", "must be greater than zero");
    if (m->stream_timeout_ms == 0)
        return fail(c, "stream_timeout", "must be greater than zero, or -1 for none");

    static const char *const batching_keys[] = {"max_batch_size", "max_queue_delay", "preferred_batch_sizes", NULL};
    json_t *batching = get_section(c, root, "batching", batching_keys);
    if (!batching)
        return -EINVAL;
    int rc = get_int(c, batching, "max_batch_size", "batching.max_batch_size", 0, 0, 65536, &m->max_batch_size);
    if (rc == 0)
        rc = get_duration(c, batching, "max_queue_delay", "batching.max_queue_delay", 0, 0, &m->max_queue_delay_ms);
    json_t *pref = rc == 0 ? json_object_get(batching, "preferred_batch_sizes") : NULL;
    if (pref && !json_is_null(pref)) {
        size_t k;
        json_t *v;
        if (!json_is_array(pref) || json_array_size(pref) > MANIFEST_MAX_PREFERRED || m->max_batch_size == 0)
            rc = fail(c, "batching.preferred_batch_sizes",
                      m->max_batch_size == 0 ? "needs batching.max_batch_size"
                                             : "must be a list of at most 16 batch sizes");
        json_array_foreach(pref, k, v) {
            if (rc < 0)
                break;
            json_int_t n = json_integer_value(v);
            if (!json_is_integer(v) || n < 1 || n > m->max_batch_size ||
                (m->npreferred && n <= m->preferred_batch_sizes[m->npreferred - 1]))
                rc = fail(c, "batching.preferred_batch_sizes",
                          "must be ascending integers from 1 to max_batch_size (%d)", m->max_batch_size);
            else
                m->preferred_batch_sizes[m->npreferred++] = (int)n;
        }
    }
    json_decref(batching);
    if (rc < 0)
        return rc;
    /* A batching model's requests wait in the queue, where batches form: it pipelines none (docs/worker-protocol.md). */
    if (m->max_batch_size > 0) {
        if (json_object_get(root, "pipeline") && m->pipeline > 0)
            return fail(c, "pipeline", "must be 0 (or left out) for a model with batching: its requests wait in the "
                                       "queue, where batches form");
        m->pipeline = 0;
    }
    if (m->decoupled && m->max_batch_size > 0)
        return fail(c, "decoupled", "a decoupled model's requests go to its generate, which never batches: drop "
                                    "batching, or decoupled");

    static const char *const restart_keys[] = {"max_restarts", "window", "backoff_min", "backoff_max", NULL};
    json_t *restart = get_section(c, root, "restart", restart_keys);
    if (!restart)
        return -EINVAL;
    rc = get_int(c, restart, "max_restarts", "restart.max_restarts", 5, 0, 1000000, &m->max_restarts);
    if (rc == 0)
        rc = get_duration(c, restart, "window", "restart.window", 60000, 0, &m->restart_window_ms);
    if (rc == 0)
        rc = get_duration(c, restart, "backoff_min", "restart.backoff_min", 100, 0, &m->backoff_min_ms);
    if (rc == 0)
        rc = get_duration(c, restart, "backoff_max", "restart.backoff_max", 30000, 0, &m->backoff_max_ms);
    json_decref(restart);
    if (rc < 0)
        return rc;
    if (m->backoff_max_ms < m->backoff_min_ms)
        return fail(c, "restart.backoff_max", "must not be less than restart.backoff_min");

    static const char *const health_keys[] = {"interval", "timeout", NULL};
    json_t *health = get_section(c, root, "health", health_keys);
    if (!health)
        return -EINVAL;
    rc = get_duration(c, health, "interval", "health.interval", 10000, 0, &m->health_interval_ms);
    if (rc == 0)
        rc = get_duration(c, health, "timeout", "health.timeout", 5000, 0, &m->health_timeout_ms);
    json_decref(health);
    if (rc < 0)
        return rc;
    if (m->health_interval_ms == 0 || m->health_timeout_ms == 0)
        return fail(c, "health", "interval and timeout must be greater than zero");

    static const char *const limits_keys[] = {"memory", NULL};
    json_t *limits = get_section(c, root, "limits", limits_keys);
    if (!limits)
        return -EINVAL;
    json_t *mem = json_object_get(limits, "memory");
    rc = 0;
    if (mem && !json_is_null(mem)) {
        if (json_is_integer(mem) && json_integer_value(mem) > 0)
            m->memory_limit = json_integer_value(mem);
        else if (!json_is_string(mem) || parse_size(json_string_value(mem), &m->memory_limit) < 0 ||
                 m->memory_limit == 0)
            rc = fail(c, "limits.memory", "must be a size such as 512MiB or 2GiB");
    }
    json_decref(limits);
    if (rc < 0)
        return rc;

    if (get_source(c, root, m) < 0)
        return -EINVAL;

    json_t *params = json_object_get(root, "parameters");
    if (params && !json_is_null(params) && !json_is_object(params))
        return fail(c, "parameters", "must be a mapping");
    m->parameters = params && json_is_object(params) ? json_incref(params) : json_object();

    if (get_tensor_meta(c, root, "inputs", &m->inputs, &m->input_decl) < 0 ||
        get_tensor_meta(c, root, "outputs", &m->outputs, &m->output_decl) < 0)
        return -EINVAL;
    return 0;
}

/* The file's bytes (malloc'ed in *text), at most MANIFEST_MAX_BYTES. */
static int read_manifest(const char *path, unsigned char **text, size_t *len, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        int rc = -errno;
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return rc;
    }
    *text = xmalloc(MANIFEST_MAX_BYTES + 1);
    *len = fread(*text, 1, MANIFEST_MAX_BYTES + 1, f);
    fclose(f);
    if (*len > MANIFEST_MAX_BYTES) {
        snprintf(err, errlen, "%s: larger than %d bytes", path, MANIFEST_MAX_BYTES);
        free(*text);
        return -EINVAL;
    }
    return 0;
}

int manifest_load(const char *path, const char *dirname, manifest **out, char *err, size_t errlen)
{
    return manifest_load_override(path, dirname, NULL, NULL, out, err, errlen);
}

/* ---- overrides ---- */

#define MERGE_MAX_DEPTH 64

static json_t *merge_patch(json_t *target, json_t *patch, int depth)
{
    if (depth > MERGE_MAX_DEPTH)
        return NULL;
    if (!json_is_object(patch))
        return json_deep_copy(patch);
    json_t *out = json_is_object(target) ? json_deep_copy(target) : json_object();
    const char *key;
    json_t *v;
    json_object_foreach(patch, key, v) {
        if (json_is_null(v)) {
            json_object_del(out, key);
            continue;
        }
        json_t *merged = merge_patch(json_object_get(out, key), v, depth + 1);
        if (!merged) {
            json_decref(out);
            return NULL;
        }
        json_object_set_new(out, key, merged);
    }
    return out;
}

json_t *manifest_merge_patch(const json_t *target, const json_t *patch)
{
    /* jansson's getters take non-const pointers; nothing here writes to either. */
    return merge_patch((json_t *)target, (json_t *)patch, 0);
}

/*
 * Keys a load's config may not set, and why: they choose the program the
 * daemon runs (so a caller allowed to load models could run any program),
 * the model's identity, or apply only at daemon start.
 */
static const struct {
    const char *key, *why;
} fixed_keys[] = {
    {"name", "the model's name is its directory's or model.yaml's"},
    {"runtime", "it chooses the program the daemon runs; edit model.yaml"},
    {"entrypoint", "it chooses the program the daemon runs; edit model.yaml"},
    {"python", "it chooses the program the daemon runs; edit model.yaml"},
    {"args", "it chooses the program the daemon runs; edit model.yaml"},
    {"env", "it chooses the program the daemon runs; edit model.yaml"},
    {"load", "it applies at daemon start only"},
    {"source", "it says where `corral pull` fetches the model from; edit model.yaml"},
    {"from", "a variant's base is chosen when it is declared or created"},
};

static int parse_tree(vctx *c, json_t *root, const json_t *override, const char *dirname, manifest *m)
{
    if (!override)
        return validate(c, root, dirname, m);
    if (!json_is_object(override)) {
        snprintf(c->err, c->errlen, "%s: must be a JSON object of model.yaml keys", c->path);
        return -EINVAL;
    }
    for (size_t i = 0; i < sizeof fixed_keys / sizeof fixed_keys[0]; i++)
        if (json_object_get(override, fixed_keys[i].key))
            return fail(c, fixed_keys[i].key, "cannot be set by a load's config: %s", fixed_keys[i].why);
    json_t *merged = manifest_merge_patch(root, override);
    if (!merged) {
        snprintf(c->err, c->errlen, "%s: nested more than %d deep", c->path, MERGE_MAX_DEPTH);
        return -EINVAL;
    }
    int rc = validate(c, merged, dirname, m);
    json_decref(merged);
    return rc;
}

int manifest_parse(const char *path, const unsigned char *text, size_t len, const char *dirname, manifest **out,
                   char *err, size_t errlen)
{
    return manifest_parse_override(path, text, len, dirname, NULL, out, err, errlen);
}

int manifest_load_override(const char *path, const char *dirname, const json_t *override, const char *label,
                           manifest **out, char *err, size_t errlen)
{
    unsigned char *text = NULL;
    size_t len = 0;
    int rc = read_manifest(path, &text, &len, err, errlen);
    if (rc < 0)
        return rc;
    rc = manifest_parse_override(label ? label : path, text, len, dirname, override, out, err, errlen);
    free(text);
    return rc;
}

int manifest_parse_tree(const char *path, const unsigned char *text, size_t len, json_t **out, char *err,
                        size_t errlen)
{
    yaml_parser_t parser;
    yaml_document_t doc;
    int have_doc = 0, rc = -EINVAL;
    *out = NULL;
    if (len > MANIFEST_MAX_BYTES) {
        snprintf(err, errlen, "%s: larger than %d bytes", path, MANIFEST_MAX_BYTES);
        return -EINVAL;
    }
    yaml_parser_initialize(&parser);
    yaml_parser_set_input_string(&parser, text, len);
    if (!yaml_parser_load(&parser, &doc)) {
        snprintf(err, errlen, "%s: line %zu: YAML error: %s", path, parser.problem_mark.line + 1,
                 parser.problem ? parser.problem : "unknown");
        goto fail;
    }
    have_doc = 1;
    yaml_node_t *top = yaml_document_get_root_node(&doc);
    if (!top || top->type != YAML_MAPPING_NODE) {
        snprintf(err, errlen, "%s: must be a mapping of keys to values", path);
        goto fail;
    }
    *out = node_to_json(&doc, top, 0);
    if (!*out) {
        snprintf(err, errlen, "%s: unsupported YAML (keys must be plain scalars, nesting at most 64 deep)", path);
        goto fail;
    }
    rc = 0;
fail:
    utf8_trim_partial(err);
    if (have_doc)
        yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    return rc;
}

int manifest_load_tree(const char *path, json_t **out, uint64_t *digest, char *err, size_t errlen)
{
    unsigned char *text = NULL;
    size_t len = 0;
    *out = NULL;
    int rc = read_manifest(path, &text, &len, err, errlen);
    if (rc < 0)
        return rc;
    rc = manifest_parse_tree(path, text, len, out, err, errlen);
    *digest = manifest_digest(text, len);
    free(text);
    return rc;
}

int manifest_from_tree(const char *path, const json_t *root, const char *dirname, const json_t *override,
                       uint64_t digest, manifest **out, char *err, size_t errlen)
{
    vctx c = {.path = path, .err = err, .errlen = errlen};
    manifest *m = xcalloc(1, sizeof *m);
    m->digest = digest;
    /* jansson's getters take non-const pointers; validation only reads the tree. */
    if (parse_tree(&c, (json_t *)root, override, dirname, m) < 0) {
        utf8_trim_partial(err);
        manifest_free(m);
        return -EINVAL;
    }
    *out = m;
    return 0;
}

int manifest_parse_override(const char *path, const unsigned char *text, size_t len, const char *dirname,
                            const json_t *override, manifest **out, char *err, size_t errlen)
{
    json_t *root = NULL;
    int rc = manifest_parse_tree(path, text, len, &root, err, errlen);
    if (rc == 0)
        rc = manifest_from_tree(path, root, dirname, override, manifest_digest(text, len), out, err, errlen);
    json_decref(root);
    return rc;
}

/* ---- variants ---- */

json_t *manifest_inherit(const json_t *base, const json_t *variant)
{
    json_t *out = json_deep_copy(base);
    if (!json_is_object(out)) {
        json_decref(out);
        out = json_object();
    }
    json_object_del(out, "name"); /* a variant has a name of its own: its directory's, or its own name key */
    json_object_del(out, "from");
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)variant, key, v) {
        if (strcmp(key, "from") == 0)
            continue;
        json_t *mine = json_object_get(out, key);
        if (strcmp(key, "parameters") == 0 && json_is_object(v) && json_is_object(mine)) {
            /* one level: the variant's value of a parameter replaces the base's whole */
            json_t *merged = json_copy(mine);
            json_object_update(merged, v);
            json_object_set_new(out, key, merged);
        } else {
            json_object_set_new(out, key, json_deep_copy(v));
        }
    }
    return out;
}

int manifest_from_name(const json_t *keys, const char **from)
{
    json_t *v = json_object_get(keys, "from");
    *from = NULL;
    if (!v)
        return 0;
    if (!json_is_string(v) || !model_name_valid(json_string_value(v), json_string_length(v)))
        return -EINVAL;
    *from = json_string_value(v);
    return 1;
}

int manifest_check_runtime_keys(const json_t *keys, const char *label, char *err, size_t errlen)
{
    if (!json_is_object(keys)) {
        snprintf(err, errlen, "%s: must be a JSON object of model.yaml keys", label);
        return -EINVAL;
    }
    for (size_t i = 0; i < sizeof fixed_keys / sizeof fixed_keys[0]; i++) {
        const char *k = fixed_keys[i].key;
        /* a variant's own name and base are the create's; eager or lazy is its own choice */
        if (strcmp(k, "name") == 0 || strcmp(k, "from") == 0 || strcmp(k, "load") == 0)
            continue;
        if (json_object_get((json_t *)keys, k)) {
            snprintf(err, errlen, "%s: key '%s': cannot be set at run time: %s", label, k, fixed_keys[i].why);
            return -EINVAL;
        }
    }
    return 0;
}

void manifest_free(manifest *m)
{
    if (!m)
        return;
    free(m->name);
    free(m->entrypoint);
    free(m->python);
    free(m->source_url);
    free(m->source_sha256);
    free_list(m->args);
    free_list(m->env);
    json_decref(m->parameters);
    json_decref(m->inputs);
    json_decref(m->outputs);
    decl_free(m->input_decl);
    decl_free(m->output_decl);
    free(m);
}

void model_name_error(const char *s, size_t n, char *msg, size_t msglen)
{
    char shown[204];
    utf8_shown(s, n, shown, sizeof shown);
    snprintf(msg, msglen, "invalid model name '%s': names match [A-Za-z0-9][A-Za-z0-9._-]{0,127}", shown);
}

int model_name_valid(const char *s, size_t n)
{
    if (n == 0 || n > 128)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        int alnum = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9');
        if (!alnum && (i == 0 || (ch != '.' && ch != '_' && ch != '-')))
            return 0;
    }
    return 1;
}
