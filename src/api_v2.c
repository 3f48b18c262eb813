/*
 * api_v2 — the Open Inference Protocol (KServe v2) as Triton serves it:
 * health, server and model metadata, inference with JSON and binary
 * tensors, the model repository extension, and the routes of the generate
 * extension (served by generate.c).
 *
 * One inference: the JSON header (and, with the binary extension, the
 * binary section after it) becomes one INFER frame — meta JSON plus raw
 * tensor bytes — built in a single buffer; the worker's INFER_RESULT comes
 * back as one buffer and is written out as JSON, or passed through as the
 * binary section without a copy.
 */
#include "api.h"
#include "clientshm.h"
#include "metrics.h"

#include "generate.h"
#include "http.h"
#include "infer.h"
#include "log.h"
#include "proto.h"
#include "sessreq.h"
#include "utf8.h"

#include "shm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- inference ---- */

/* An inference request of this API: what its response needs besides the common part. */
typedef struct infer_pending {
    api_pending base;
    infer_opts opts;
    /* the result's tensor data when it came in shared memory: a reference
     * held until the response is sent (the pool is disposed) */
    struct shm_region *shm;
} infer_pending;

static void infer_dispose(api_pending *base)
{
    infer_pending *p = (infer_pending *)base;
    infer_opts_clear(&p->opts);
    shm_unref(p->shm); /* the response has been sent from it */
    p->shm = NULL;
}

static int infer_respond(api_pending *base, job *j, int status, const char *msg, uint8_t *body, size_t len)
{
    infer_pending *p = (infer_pending *)base;
    h2o_req_t *req = base->req;
    if (status != 200) {
        http_error(req, status, status == 503 ? 1 : 0, "%s", msg);
        return 0;
    }
    http_own(req, body); /* binary outputs are sent straight from the worker's buffer */
    p->shm = j->shm;     /* taken over: the region stays mapped until the pool goes */
    j->shm = NULL;
    infer_response r;
    char err[512];
    status = infer_build_response(model_name(base->model), &p->opts, body, len, j->shm_data, j->shm_len, &r, err,
                                  sizeof err);
    if (status == 502) {
        http_error(req, 502, 0, "%s; instance %d (pid %d) is replaced", err, base->inst_id, base->inst_pid);
        return 1;
    }
    if (status != 200) {
        sessreq_drop(j->sess); /* the client gets an error: the model's update is not stored */
        http_error(req, status, status == 503 ? 1 : 0, "%s", err);
        return 0;
    }
    http_own(req, r.json);
    if (r.owned)
        http_own(req, r.owned); /* binary classification results */
    h2o_iovec_t bufs[INFER_MAX_TENSORS + 1];
    bufs[0] = h2o_iovec_init(r.json, r.json_len);
    for (size_t i = 0; i < r.nbinary; i++)
        bufs[1 + i] = h2o_iovec_init(r.binary[i].ptr, r.binary[i].len);
    if (r.nbinary == 0) {
        http_sendv(req, 200, "application/json", bufs, 1);
        return 0;
    }
    char hl[32];
    int n = snprintf(hl, sizeof hl, "%zu", r.json_len);
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("inference-header-content-length"), 0,
                          "Inference-Header-Content-Length", h2o_strdup(&req->pool, hl, (size_t)n).base, (size_t)n);
    http_sendv(req, 200, "application/octet-stream", bufs, 1 + r.nbinary);
    return 0;
}

static void handle_infer(h2o_req_t *req, model *m)
{
    infer_pending *p = (infer_pending *)api_pending_new(req, m, sizeof(infer_pending));
    p->base.respond = infer_respond;
    p->base.on_dispose = infer_dispose;
    const manifest *mf = model_manifest(m);
    if (mf && mf->decoupled) { /* as Triton refuses a decoupled model's infer */
        http_error(req, 400, 0, "model '%s' is decoupled (it streams its answers): infer takes one answer per "
                   "request; use generate_stream, or gRPC's ModelStreamInfer", model_name(m));
        return;
    }
    job *j = job_new(m, PROTO_INFER, 0);
    const h2o_iovec_t *hcl = http_header(req, "inference-header-content-length");
    infer_input in = {.model = model_name(m),
                      .priority_levels = mf ? mf->priority_levels : 1,
                      .body = (const uint8_t *)req->entity.base,
                      .len = req->entity.len,
                      .header_length = hcl ? hcl->base : NULL,
                      .header_length_len = hcl ? hcl->len : 0,
                      .max_batch_size = mf ? mf->max_batch_size : 0,
                      .inputs_decl = model_declared_inputs(m),
                      .outputs_decl = model_declared_outputs(m)};
    char err[1024];
    int status = infer_parse_request(&in, j, &p->opts, err, sizeof err);
    if (!status && p->opts.classify && model_labels(m, &p->opts.labels, err, sizeof err) < 0)
        status = 500;
    if (status) {
        job_free(j);
        http_error(req, status, 1, "%s", err);
        return;
    }
    api_submit(&p->base, j);
}

/* ---- model repository extension ---- */

static void lifecycle_done(void *ctx, int status, const char *msg)
{
    api_pending *p = ctx;
    p->waiting = 0;
    if (!p->req)
        return;
    if (status == 200)
        http_send_json(p->req, 200, json_object());
    else
        http_error(p->req, status, 1, "%s", msg);
}

static api_pending *waiter_for(h2o_req_t *req, model *m)
{
    api_pending *p = api_pending_new(req, m, sizeof *p);
    p->waiter.on_done = lifecycle_done;
    p->waiter.ctx = p;
    p->waiting = 1;
    return p;
}

/*
 * A JSON object body of a repository request, or NULL (an empty body) or an
 * answered 400 (*bad set). what gets "model 'M': VERB" (or VERB without a
 * model) for the caller's messages.
 */
static json_t *repository_body(h2o_req_t *req, const char *verb, const char *model, char *what, size_t what_len,
                               int *bad)
{
    if (model)
        snprintf(what, what_len, "model '%s': %s", model, verb);
    else
        snprintf(what, what_len, "%s", verb);
    *bad = 0;
    if (req->entity.len == 0)
        return NULL;
    json_error_t jerr;
    json_t *root = json_loadb(req->entity.base, req->entity.len, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(root)) {
        json_decref(root);
        http_error(req, 400, 0, "%s: the request body must be a JSON object", what);
        *bad = 1;
        return NULL;
    }
    return root;
}

/*
 * A load's options: corral's {"instances": N}, or Triton's {"parameters":
 * {"config": "<JSON of model.yaml keys>"}} (and corral's "instances" among
 * the parameters). Anything else is refused, Triton's "file:" overrides
 * included, so that nothing sent is silently ignored.
 */
int api_load_options(json_t *root, const char *model, int *instances, json_t **config, char *err, size_t errlen)
{
    *instances = 0;
    *config = NULL;
    if (!root)
        return 0;
    char what[200];
    snprintf(what, sizeof what, "model '%s': load", model);
    static const char *const top[] = {"instances", "parameters", NULL};
    static const char *const params_known[] = {"instances", "config", NULL};
    json_t *params = json_object_get(root, "parameters");
    const char *key = infer_unknown_key(root, top);
    err[0] = 0;
    if (key) {
        snprintf(err, errlen, "%s: unknown option '%.64s' (corral takes \"instances\" and "
                 "\"parameters\": {\"config\"})", what, key);
    } else if (params && !json_is_object(params)) {
        snprintf(err, errlen, "%s: 'parameters' must be an object", what);
    } else if (params && (key = infer_unknown_key(params, params_known))) {
        if (strncmp(key, "file:", 5) == 0)
            snprintf(err, errlen, "%s: parameter '%.128s': file overrides are not supported; corral loads a "
                     "model's files from its directory in the repository", what, key);
        else
            snprintf(err, errlen, "%s: unknown parameter '%.64s' (corral takes \"config\" and \"instances\")",
                     what, key);
    }
    json_t *n = json_object_get(root, "instances");
    if (!n)
        n = json_object_get(params, "instances");
    if (!err[0] && n) {
        if (!json_is_integer(n) || json_integer_value(n) < 1 || json_integer_value(n) > MANIFEST_MAX_INSTANCES)
            snprintf(err, errlen, "model '%s': instances must be an integer from 1 to %d", model,
                     MANIFEST_MAX_INSTANCES);
        else
            *instances = (int)json_integer_value(n);
    }
    json_t *c = json_object_get(params, "config");
    if (!err[0] && c) {
        /* Triton's client sends the config as a string of JSON; an object is taken as well. */
        json_error_t jerr;
        json_t *parsed = json_is_string(c) ? json_loadb(json_string_value(c), json_string_length(c),
                                                        JSON_REJECT_DUPLICATES, &jerr)
                                           : json_incref(c);
        if (!json_is_object(parsed)) {
            json_decref(parsed);
            snprintf(err, errlen, "model '%s': parameters.config must be a JSON object of model.yaml keys "
                     "(as a string), such as \"{\\\"instances\\\": 2}\"", model);
        } else {
            *config = parsed;
        }
    }
    if (err[0]) {
        json_decref(*config);
        *config = NULL;
        return -1;
    }
    return 0;
}

/* The load options of an HTTP body. Returns 0, or -1 having answered 400. */
static int load_options(h2o_req_t *req, const char *model, int *instances, json_t **config)
{
    char what[200];
    int bad;
    json_t *root = repository_body(req, "load", model, what, sizeof what, &bad);
    if (bad)
        return -1;
    char err[1200];
    int rc = api_load_options(root, model, instances, config, err, sizeof err);
    json_decref(root);
    if (rc < 0)
        http_error(req, 400, 0, "%s", err);
    return rc;
}

static void handle_load(h2o_req_t *req, h2o_iovec_t name)
{
    if (!model_name_valid(name.base, name.len)) {
        api_model_or_error(req, name);
        return;
    }
    /* The body first: a refused one changes nothing, not even the repository's view. */
    char shown[129];
    snprintf(shown, sizeof shown, "%.*s", (int)name.len, name.base);
    int instances;
    json_t *config;
    if (load_options(req, shown, &instances, &config) < 0)
        return;
    /* As Triton does, a load reads the repository again: a model added since
     * the last scan appears, and an unloaded or failed model loads from its
     * manifest as it is on disk now. */
    registry_rescan();
    model *m = api_model_or_error(req, name);
    if (!m) {
        json_decref(config);
        return;
    }
    api_pending *p = waiter_for(req, m);
    char msg[1200];
    int status = model_load_config(m, config, instances, &p->waiter, msg, sizeof msg);
    json_decref(config);
    if (status) {
        p->waiting = 0;
        http_error(req, status, status == 503, "%s", msg);
    }
}

/*
 * An unload's options: Triton's client always sends {"parameters":
 * {"unload_dependents": false}}. No corral model depends on another (there
 * are no ensembles), so true and false unload the same: the one model.
 */
int api_unload_options(json_t *root, const char *model, char *err, size_t errlen)
{
    if (!root)
        return 0;
    char what[200];
    snprintf(what, sizeof what, "model '%s': unload", model);
    static const char *const top[] = {"parameters", NULL};
    static const char *const params_known[] = {"unload_dependents", NULL};
    json_t *params = json_object_get(root, "parameters");
    json_t *deps = json_object_get(params, "unload_dependents");
    const char *key = infer_unknown_key(root, top);
    err[0] = 0;
    if (key)
        snprintf(err, errlen, "%s: unknown option '%.64s'", what, key);
    else if (params && !json_is_object(params))
        snprintf(err, errlen, "%s: 'parameters' must be an object", what);
    else if (params && (key = infer_unknown_key(params, params_known)))
        snprintf(err, errlen, "%s: unknown parameter '%.64s' (corral takes \"unload_dependents\")", what, key);
    else if (deps && !json_is_boolean(deps))
        snprintf(err, errlen, "%s: parameters.unload_dependents must be true or false", what);
    return err[0] ? -1 : 0;
}

static int unload_options(h2o_req_t *req, const char *model)
{
    char what[200];
    int bad;
    json_t *root = repository_body(req, "unload", model, what, sizeof what, &bad);
    if (bad)
        return -1;
    char err[400];
    int rc = api_unload_options(root, model, err, sizeof err);
    json_decref(root);
    if (rc < 0)
        http_error(req, 400, 0, "%s", err);
    return rc;
}

static void handle_unload(h2o_req_t *req, model *m)
{
    if (unload_options(req, model_name(m)) < 0)
        return;
    api_pending *p = waiter_for(req, m);
    char msg[512];
    int status = model_unload(m, &p->waiter, msg, sizeof msg);
    if (status) {
        p->waiting = 0;
        http_error(req, status, 1, "%s", msg);
    }
}

static const char *triton_state(model *m)
{
    switch (model_get_state(m)) {
    case MODEL_READY: return "READY";
    case MODEL_LOADING: return "LOADING";
    case MODEL_UNLOADING: return "UNLOADING";
    default: return "UNAVAILABLE";
    }
}

/* Triton's logging extension, over corral's one threshold (log.h). */
static json_t *logging_json(void)
{
    return json_pack("{s:s,s:b,s:b,s:b,s:i,s:s,s:s}", "log_file", "", "log_info", log_threshold >= LOG_INFO,
                     "log_warning", log_threshold >= LOG_WARN, "log_error", log_threshold >= LOG_ERROR,
                     "log_verbose_level", log_threshold >= LOG_DEBUG ? 1 : 0, "log_format",
                     log_json ? "json" : "default", "level", log_level_name(log_threshold));
}

static void handle_logging(h2o_req_t *req, int post)
{
    if (!post || req->entity.len == 0) {
        http_send_json(req, 200, logging_json());
        return;
    }
    json_error_t jerr;
    json_t *root = json_loadb(req->entity.base, req->entity.len, 0, &jerr);
    if (!json_is_object(root)) {
        json_decref(root);
        http_error(req, 400, 0, "logging settings must be a JSON object such as {\"log_verbose_level\": 1}");
        return;
    }
    int info = log_threshold >= LOG_INFO, warning = log_threshold >= LOG_WARN, error = log_threshold >= LOG_ERROR;
    int verbose = log_threshold >= LOG_DEBUG, json = log_json, level = -2;
    const char *key;
    json_t *v;
    char bad[300] = "";
    json_object_foreach(root, key, v) {
        int *flag = strcmp(key, "log_info") == 0      ? &info
                    : strcmp(key, "log_warning") == 0 ? &warning
                    : strcmp(key, "log_error") == 0   ? &error
                                                      : NULL;
        if (flag) {
            if (!json_is_boolean(v))
                snprintf(bad, sizeof bad, "%s must be true or false", key);
            *flag = json_is_true(v);
        } else if (strcmp(key, "log_verbose_level") == 0) {
            if (!json_is_integer(v) || json_integer_value(v) < 0)
                snprintf(bad, sizeof bad, "log_verbose_level must be an integer from 0");
            verbose = json_integer_value(v) > 0;
        } else if (strcmp(key, "log_format") == 0) {
            const char *f = json_string_value(v);
            if (!f || (strcmp(f, "default") && strcmp(f, "ISO8601") && strcmp(f, "json")))
                snprintf(bad, sizeof bad, "log_format must be \"default\" (ISO 8601 times, as \"ISO8601\") or \"json\"");
            json = f && strcmp(f, "json") == 0;
        } else if (strcmp(key, "log_file") == 0) {
            if (!json_is_string(v) || json_string_length(v) > 0)
                snprintf(bad, sizeof bad, "log_file: corral logs to stderr only; it must be \"\"");
        } else if (strcmp(key, "level") == 0) {
            level = json_is_string(v) ? log_level_parse(json_string_value(v)) : -1;
            if (level < 0)
                snprintf(bad, sizeof bad, "level must be error, warning, info or debug");
        } else {
            snprintf(bad, sizeof bad, "unknown logging setting '%.64s'", key);
        }
        if (bad[0])
            break;
    }
    json_decref(root);
    /* One threshold: each level enables the ones below it, so the flags must say the same. */
    if (!bad[0] && level == -2) {
        level = verbose ? LOG_DEBUG : info ? LOG_INFO : warning ? LOG_WARN : error ? LOG_ERROR : LOG_ERROR - 1;
        if ((level >= LOG_WARN && !error) || (level >= LOG_INFO && !warning) || (level >= LOG_DEBUG && !info))
            snprintf(bad, sizeof bad, "corral logs by level: enabling a level enables the ones above it "
                                      "(log_info needs log_warning and log_error)");
    }
    if (bad[0]) {
        http_error(req, 400, 0, "%s", bad);
        return;
    }
    if (level != log_threshold || json != log_json) /* logged under the settings it replaces */
        log_info("logging: level %s, format %s (POST /v2/logging)", log_level_name(level), json ? "json" : "text");
    log_threshold = level;
    log_json = json;
    http_send_json(req, 200, logging_json());
}

static void handle_index(h2o_req_t *req)
{
    int ready_only = 0, bad;
    char what[64];
    json_t *root = repository_body(req, "repository index", NULL, what, sizeof what, &bad);
    if (bad)
        return;
    if (root) {
        static const char *const known[] = {"ready", NULL};
        const char *key = infer_unknown_key(root, known);
        json_t *ready = json_object_get(root, "ready");
        if (key || (ready && !json_is_boolean(ready))) {
            if (key)
                http_error(req, 400, 0, "repository index: unknown option '%.64s' (Triton's is \"ready\")", key);
            else
                http_error(req, 400, 0, "repository index: 'ready' must be true or false");
            json_decref(root);
            return;
        }
        ready_only = json_is_true(ready);
        json_decref(root);
    }
    int rc = registry_rescan();
    if (rc < 0) {
        http_error(req, 500, 0, "cannot scan the model repository: %s", strerror(-rc));
        return;
    }
    http_send_json(req, 200, api_repository_index(ready_only));
}

json_t *api_repository_index(int ready_only)
{
    json_t *out = json_array();
    for (model *m = model_next(NULL); m; m = model_next(m)) {
        if (ready_only && model_get_state(m) != MODEL_READY)
            continue;
        const char *reason = model_reason(m);
        if (!reason && model_get_state(m) == MODEL_UNLOADED)
            reason = "unloaded";
        json_t *e = json_pack("{s:s, s:s, s:s, s:s, s:o}", "name", model_name(m), "version", "1", "state",
                              triton_state(m), "corral_state", model_state_name(model_get_state(m)), "reason",
                              utf8_json_string(reason ? reason : "", reason ? strlen(reason) : 0));
        json_object_set_new(e, "changed", json_boolean(model_changed(m)));
        json_object_set_new(e, "origin", json_string(model_is_runtime(m) ? "runtime" : "repository"));
        json_array_append_new(out, e);
    }
    return out;
}

/* ---- system shared memory extension (clientshm.c) ---- */

/* /v2/systemsharedmemory[/region/{name}]/{status|register|unregister}: n is the path's segment count. */
static int handle_shm(h2o_req_t *req, const api_path *p, int get, int post)
{
    int regional = p->n == 5 && SEG_IS(p, 2, "region");
    if (p->n != 3 && !regional)
        return -1;
    h2o_iovec_t action = p->seg[p->n - 1], name = regional ? p->seg[3] : h2o_iovec_init(NULL, 0);
    int status = h2o_memis(action.base, action.len, H2O_STRLIT("status"));
    if (!status && !h2o_memis(action.base, action.len, H2O_STRLIT("register")) &&
        !h2o_memis(action.base, action.len, H2O_STRLIT("unregister")))
        return -1;
    if (status ? !get : !post) {
        http_method_not_allowed(req, status ? "GET" : "POST");
        return 0;
    }
    if (!clientshm_allowed()) {
        http_error(req, 403, 0, "%s", clientshm_disabled_msg);
        return 0;
    }
    if (status) {
        int code;
        json_t *out = clientshm_status(regional ? name.base : NULL, name.len, &code);
        if (out)
            http_send_json(req, 200, out);
        else
            http_error(req, code, 0, "unable to find system shared memory region '%.*s'",
                       (int)(name.len > 64 ? 64 : name.len), name.base);
        return 0;
    }
    if (action.len == strlen("unregister")) {
        clientshm_unregister(regional ? name.base : NULL, name.len);
        http_send_json(req, 200, json_object());
        return 0;
    }
    if (!regional) {
        http_error(req, 400, 0, "a region name is needed to register system shared memory: "
                                "POST /v2/systemsharedmemory/region/{name}/register");
        return 0;
    }
    json_error_t jerr;
    json_t *root = json_loadb(req->entity.base, req->entity.len, JSON_REJECT_DUPLICATES, &jerr);
    json_t *key = json_object_get(root, "key"), *offset = json_object_get(root, "offset"),
           *size = json_object_get(root, "byte_size");
    char err[600];
    int code = 400;
    if (!root && strstr(jerr.text, "too big integer"))
        snprintf(err, sizeof err, "'offset' and 'byte_size' must be below 2^63: no shared-memory object is larger");
    else if (!json_is_object(root))
        snprintf(err, sizeof err, "a register request must be a JSON object {\"key\", \"offset\", \"byte_size\"}");
    else if (!json_is_string(key))
        snprintf(err, sizeof err, "the register request has no 'key' string");
    else if (offset && (!json_is_integer(offset) || json_integer_value(offset) < 0))
        snprintf(err, sizeof err, "'offset' must be a non-negative integer");
    else if (!json_is_integer(size) || json_integer_value(size) < 0)
        snprintf(err, sizeof err, "the register request needs 'byte_size', a non-negative integer");
    else
        code = clientshm_register(name.base, name.len, json_string_value(key), json_string_length(key),
                                  offset ? (uint64_t)json_integer_value(offset) : 0,
                                  (uint64_t)json_integer_value(size), err, sizeof err);
    json_decref(root);
    if (code == 200)
        http_send_json(req, 200, json_object());
    else
        http_error(req, code, code == 503, "%s", err);
    return 0;
}

/* ---- routing ---- */

const char *const api_v2_extensions[] = {"binary_tensor_data", "model_repository", "generate", "statistics",
                                         "logging", "model_configuration", "classification",
                                         "system_shared_memory", "schedule_policy", "sequence",
                                         "sequence(string_id)", NULL};

int api_v2(h2o_req_t *req, const api_path *p)
{
    int get = METHOD_IS(req, "GET") || METHOD_IS(req, "HEAD");
    int post = METHOD_IS(req, "POST");
    /* No v2 endpoint reads a query: one sent is refused, not ignored (docs/api.md). */
    if (req->query_at != SIZE_MAX && req->query_at + 1 < req->path.len) {
        size_t qlen = req->path.len - req->query_at - 1;
        http_error(req, 400, 0, "corral's v2 endpoints take no query parameters ('?%.*s%s')", (int)(qlen > 64 ? 64 : qlen),
                   req->path.base + req->query_at + 1, qlen > 64 ? "..." : "");
        return 0;
    }
    if (p->n == 1) {
        if (!get) {
            http_method_not_allowed(req, "GET");
            return 0;
        }
        json_t *ext = json_array();
        for (const char *const *e = api_v2_extensions; *e; e++)
            json_array_append_new(ext, json_string(*e));
        http_send_json(req, 200, json_pack("{s:s, s:s, s:o}", "name", "corral", "version", CORRAL_VERSION,
                                           "extensions", ext));
        return 0;
    }
    if (SEG_IS(p, 1, "health") && p->n == 3) {
        int live = SEG_IS(p, 2, "live");
        if (!live && !SEG_IS(p, 2, "ready"))
            return -1;
        if (!get) {
            http_method_not_allowed(req, "GET");
            return 0;
        }
        if (!live && registry_draining())
            http_error(req, 503, 1, "corral is shutting down");
        else
            http_send_json(req, 200, json_pack("{s:b}", live ? "live" : "ready", 1));
        return 0;
    }
    if (SEG_IS(p, 1, "systemsharedmemory"))
        return handle_shm(req, p, get, post);
    if (SEG_IS(p, 1, "logging") && p->n == 2) {
        if (!get && !post) {
            http_method_not_allowed(req, "GET, POST");
            return 0;
        }
        handle_logging(req, post);
        return 0;
    }
    if (SEG_IS(p, 1, "repository")) {
        if (p->n == 3 && SEG_IS(p, 2, "index")) {
            if (!post) {
                http_method_not_allowed(req, "POST");
                return 0;
            }
            handle_index(req);
            return 0;
        }
        if (p->n == 5 && SEG_IS(p, 2, "models") && (SEG_IS(p, 4, "load") || SEG_IS(p, 4, "unload"))) {
            if (!post) {
                http_method_not_allowed(req, "POST");
                return 0;
            }
            if (SEG_IS(p, 4, "load")) {
                handle_load(req, p->seg[3]);
            } else {
                model *m = api_model_or_error(req, p->seg[3]);
                if (m)
                    handle_unload(req, m);
            }
            return 0;
        }
        return -1;
    }
    if (!SEG_IS(p, 1, "models") || p->n < 3)
        return -1;
    if (p->n == 3 && SEG_IS(p, 2, "stats")) { /* Triton's statistics of every model */
        if (!get) {
            http_method_not_allowed(req, "GET");
            return 0;
        }
        http_send_json(req, 200, metrics_triton_stats(NULL, 0));
        return 0;
    }
    /* /v2/models/{name}[/versions/{v}][/ready|/config|/infer|/stats|/generate|/generate_stream] */
    int rest = 3;
    int versioned = SEG_IS(p, 3, "versions") && p->n >= 5;
    if (versioned)
        rest = 5;
    if (p->n > rest + 1)
        return -1;
    static const char *const actions[] = {"ready", "config", "infer", "stats", "generate", "generate_stream"};
    const char *action = p->n == rest + 1 ? NULL : "metadata";
    for (size_t i = 0; !action && i < sizeof actions / sizeof actions[0]; i++)
        if (h2o_memis(p->seg[rest].base, p->seg[rest].len, actions[i], strlen(actions[i])))
            action = actions[i];
    if (!action)
        return -1;
    model *m = api_model_or_error(req, p->seg[2]);
    if (!m)
        return 0;
    if (versioned && !h2o_memis(p->seg[4].base, p->seg[4].len, H2O_STRLIT("1"))) {
        http_error(req, 404, 0, "model '%s' has no version '%.*s' (corral serves version 1)", model_name(m),
                   (int)(p->seg[4].len > 64 ? 64 : p->seg[4].len), p->seg[4].base);
        return 0;
    }
    if (strcmp(action, "infer") == 0) {
        if (!post) {
            http_method_not_allowed(req, "POST");
            return 0;
        }
        if (registry_draining()) {
            http_error(req, 503, 1, "model '%s': corral is shutting down", model_name(m));
            return 0;
        }
        handle_infer(req, m);
        return 0;
    }
    if (strncmp(action, "generate", 8) == 0) {
        if (!post) {
            http_method_not_allowed(req, "POST");
            return 0;
        }
        generate_handle(req, m, action[8] ? GENERATE_TRITON_STREAM : GENERATE_TRITON);
        return 0;
    }
    if (!get) {
        http_method_not_allowed(req, "GET");
        return 0;
    }
    if (strcmp(action, "stats") == 0) {
        const char *name = model_name(m);
        http_send_json(req, 200, metrics_triton_stats(name, strlen(name)));
        return 0;
    }
    if (strcmp(action, "ready") == 0) {
        /* Ready also when it loads on demand: else a readiness probe on a lazy model never passes (docs/api.md). */
        if (model_takes_requests(m)) {
            http_send_json(req, 200, json_pack("{s:s, s:b}", "name", model_name(m), "ready", 1));
        } else {
            const char *reason = model_reason(m);
            http_error(req, 400, 0, "model '%s' is not ready (%s%s%s)", model_name(m),
                       registry_draining() ? "corral is shutting down" : model_state_name(model_get_state(m)),
                       reason ? ": " : "", reason ? reason : "");
        }
        return 0;
    }
    if (strcmp(action, "config") == 0) {
        json_t *cfg = model_config_json(m);
        if (cfg)
            http_send_json(req, 200, cfg);
        else
            http_error(req, 503, 1, "model '%s' is unavailable: %s", model_name(m),
                       model_reason(m) ? model_reason(m) : "its manifest is broken");
        return 0;
    }
    http_send_json(req, 200, model_metadata_json(m));
    return 0;
}
