/*
 * api_grpc — KServe v2's gRPC service; see api_grpc.h.
 *
 * A call (rpc) is one gb_call of the bridge. A unary call reads its one
 * message, answers it and ends. ModelStreamInfer reads requests one after
 * another, each its own greq (a request on its way: the unpacked message,
 * which its job's tensor pieces point into, and what its answer needs),
 * answered in the order they finish; a failed one is answered with
 * error_message and the stream goes on. A stream holds at most
 * STREAM_WINDOW requests and unsent answers: past that it stops reading,
 * so a client that sends faster than the models answer, or reads slower,
 * is held back by HTTP/2 flow control instead of growing the daemon's
 * memory.
 *
 * A decoupled model (manifest `decoupled: true`: its `generate` streams)
 * is served on ModelStreamInfer through its generate: the request's
 * tensors become the JSON object Triton's generate extension maps to
 * tensors, and every chunk becomes one response carrying
 * triton_final_response false; the end is an empty response with it true
 * when the request asked (triton_enable_empty_final_response), as Triton
 * does.
 */
#include "api_grpc.h"

#include "access.h"
#include "api.h"
#include "dtype.h"
#include "grpc_bridge.h"
#include "infer.h"
#include "log.h"
#include "metrics.h"
#include "model.h"
#include "pbjson.h"
#include "proto.h"
#include "sb.h"
#include "tensor.h"
#include "utf8.h"
#include "xmalloc.h"

#include "grpc_service.pb-c.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SERVICE "/inference.GRPCInferenceService/"
/* Requests in flight plus answers not yet sent, per stream. */
#define STREAM_WINDOW 32

typedef struct rpc rpc;
typedef struct greq greq;

typedef struct method {
    const char *name;
    const ProtobufCMessageDescriptor *in;
    void (*fn)(rpc *r, ProtobufCMessage *msg); /* takes msg */
    uint8_t stream;     /* ModelStreamInfer */
    uint8_t health;     /* never needs the token */
    uint8_t management; /* needs it under --auth management too */
} method;

struct rpc {
    gb_call *c;           /* NULL once the call ended */
    const method *m;
    uint64_t deadline_ms; /* the call's (grpc-timeout), 0: none */
    int got_message;
    int half_closed;      /* the client sent its last request (streams) */
    int stopping;         /* the daemon is stopping: the stream ends once its answers are out */
    greq *reqs;           /* in flight or with answers unsent */
    int nreqs;
    lifecycle_waiter waiter;
    model *wmodel;        /* a load or unload waited on; NULL: none */
    rpc *next, *prev;
};

struct greq {
    rpc *r;               /* NULL once its call ended */
    job *job;             /* queued or running; NULL once answered */
    model *model;
    infer_opts opts;
    Inference__ModelInferRequest *msg; /* owned: the job's tensor pieces point into it */
    uint8_t *conv;        /* typed contents converted to raw bytes; owned */
    uint8_t *gen_body;    /* a decoupled request's JSON body; owned */
    int decoupled;
    int empty_final;      /* triton_enable_empty_final_response */
    int done;             /* its final answer is queued */
    int unsent;           /* messages queued for it, not yet through */
    int inst_id, inst_pid;
    greq *next, *prev;
};

static struct {
    rpc *rpcs;
    int started;
    int draining;
    void (*on_stopped)(void);
} G;

int api_grpc_code(int http_status)
{
    switch (http_status) {
    case 200: return GB_OK;
    case 400:
    case 415: return GB_INVALID_ARGUMENT;
    case 401: return GB_UNAUTHENTICATED;
    case 403: return GB_PERMISSION_DENIED;
    case 404: return GB_NOT_FOUND;
    case 409: return GB_ABORTED;
    case 413:
    case 507: return GB_RESOURCE_EXHAUSTED;
    case 500:
    case 502: return GB_INTERNAL;
    case 503: return GB_UNAVAILABLE;
    case 504: return GB_DEADLINE_EXCEEDED;
    default: return GB_UNKNOWN;
    }
}

static void fail(rpc *r, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fail(rpc *r, int code, const char *fmt, ...)
{
    if (!r->c)
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    utf8_trim_partial(msg);
    gb_finish(r->c, code, msg);
}

/* Answers a unary call with m, and ends it. */
static void reply(rpc *r, const ProtobufCMessage *m)
{
    if (!r->c)
        return;
    size_t len;
    uint8_t *buf = pb_pack(m, &len);
    if (!buf) {
        fail(r, GB_UNAVAILABLE, "no memory now for the answer");
        return;
    }
    gb_send(r->c, buf, len, 1, NULL, 0);
}

/* A model of the request, or NULL having failed the call: 400 for a bad name, 404 unknown (or a version but 1). */
static model *find_model(rpc *r, const char *name, const char *version)
{
    size_t n = strlen(name);
    if (!model_name_valid(name, n)) {
        char shown[201];
        size_t k = n < 200 ? n : 200;
        for (size_t i = 0; i < k; i++)
            shown[i] = (unsigned char)name[i] < 0x20 || name[i] == 0x7f ? '?' : name[i];
        shown[k] = 0;
        fail(r, GB_INVALID_ARGUMENT, "invalid model name '%s%s': names match [A-Za-z0-9][A-Za-z0-9._-]{0,127}",
             shown, n > 200 ? "..." : "");
        return NULL;
    }
    model *m = model_find(name, n);
    if (!m) {
        fail(r, GB_NOT_FOUND, "unknown model '%s'", name);
        return NULL;
    }
    if (version && *version && strcmp(version, "1") != 0) {
        fail(r, GB_NOT_FOUND, "model '%s' has no version '%.64s' (corral serves version 1)", name, version);
        return NULL;
    }
    return m;
}

/* ---- health and metadata ---- */

static void rpc_server_live(rpc *r, ProtobufCMessage *msg)
{
    protobuf_c_message_free_unpacked(msg, NULL);
    Inference__ServerLiveResponse out = INFERENCE__SERVER_LIVE_RESPONSE__INIT;
    out.live = 1;
    reply(r, &out.base);
}

static void rpc_server_ready(rpc *r, ProtobufCMessage *msg)
{
    protobuf_c_message_free_unpacked(msg, NULL);
    Inference__ServerReadyResponse out = INFERENCE__SERVER_READY_RESPONSE__INIT;
    out.ready = !registry_draining();
    reply(r, &out.base);
}

static void rpc_model_ready(rpc *r, ProtobufCMessage *msg)
{
    Inference__ModelReadyRequest *in = (Inference__ModelReadyRequest *)msg;
    model *m = find_model(r, in->name, in->version);
    if (m) {
        /* ready also when it loads on demand, as over HTTP (docs/api.md) */
        Inference__ModelReadyResponse out = INFERENCE__MODEL_READY_RESPONSE__INIT;
        out.ready = model_takes_requests(m);
        reply(r, &out.base);
    }
    protobuf_c_message_free_unpacked(msg, NULL);
}

static void rpc_server_metadata(rpc *r, ProtobufCMessage *msg)
{
    protobuf_c_message_free_unpacked(msg, NULL);
    Inference__ServerMetadataResponse out = INFERENCE__SERVER_METADATA_RESPONSE__INIT;
    out.name = (char *)"corral";
    out.version = (char *)CORRAL_VERSION;
    size_t n = 0;
    while (api_v2_extensions[n])
        n++;
    out.n_extensions = n;
    out.extensions = (char **)api_v2_extensions;
    reply(r, &out.base);
}

/* Answers with the message of descriptor d built from j (taken), the JSON the HTTP endpoint sends. */
static void reply_json(rpc *r, const ProtobufCMessageDescriptor *d, json_t *j)
{
    pb_arena a = {0};
    ProtobufCMessage *out = pb_new(&a, d);
    int skipped = 0;
    pb_from_json(&a, out, j, &skipped);
    if (skipped)
        log_debug("grpc: %s: %d JSON members have no field", d->name, skipped);
    reply(r, out);
    pb_arena_free(&a);
    json_decref(j);
}

static void rpc_model_metadata(rpc *r, ProtobufCMessage *msg)
{
    Inference__ModelMetadataRequest *in = (Inference__ModelMetadataRequest *)msg;
    model *m = find_model(r, in->name, in->version);
    if (m)
        reply_json(r, &inference__model_metadata_response__descriptor, model_metadata_json(m));
    protobuf_c_message_free_unpacked(msg, NULL);
}

static void rpc_model_config(rpc *r, ProtobufCMessage *msg)
{
    Inference__ModelConfigRequest *in = (Inference__ModelConfigRequest *)msg;
    model *m = find_model(r, in->name, in->version);
    if (m) {
        json_t *cfg = model_config_json(m);
        if (cfg)
            reply_json(r, &inference__model_config_response__descriptor, json_pack("{s:o}", "config", cfg));
        else
            fail(r, GB_UNAVAILABLE, "model '%s' is unavailable: %s", model_name(m),
                 model_reason(m) ? model_reason(m) : "its manifest is broken");
    }
    protobuf_c_message_free_unpacked(msg, NULL);
}

static void rpc_model_statistics(rpc *r, ProtobufCMessage *msg)
{
    Inference__ModelStatisticsRequest *in = (Inference__ModelStatisticsRequest *)msg;
    if (!*in->name) {
        reply_json(r, &inference__model_statistics_response__descriptor, metrics_triton_stats(NULL, 0));
    } else {
        model *m = find_model(r, in->name, in->version);
        if (m)
            reply_json(r, &inference__model_statistics_response__descriptor,
                       metrics_triton_stats(model_name(m), strlen(model_name(m))));
    }
    protobuf_c_message_free_unpacked(msg, NULL);
}

/* ---- the repository ---- */

static int one_repository(rpc *r, const char *name)
{
    if (*name) {
        fail(r, GB_INVALID_ARGUMENT, "corral serves one repository: leave repository_name empty (not '%.64s')", name);
        return 0;
    }
    return 1;
}

static void rpc_repository_index(rpc *r, ProtobufCMessage *msg)
{
    Inference__RepositoryIndexRequest *in = (Inference__RepositoryIndexRequest *)msg;
    if (one_repository(r, in->repository_name)) {
        int rc = registry_rescan();
        if (rc < 0)
            fail(r, GB_INTERNAL, "cannot scan the model repository: %s", strerror(-rc));
        else
            reply_json(r, &inference__repository_index_response__descriptor,
                       json_pack("{s:o}", "models", api_repository_index(in->ready)));
    }
    protobuf_c_message_free_unpacked(msg, NULL);
}

/* A repository parameter as the JSON value HTTP's body would carry; NULL with *why set when it cannot be one. */
static json_t *repo_param(const Inference__ModelRepositoryParameter *p, const char **why)
{
    if (!p) {
        *why = "has no value";
        return NULL;
    }
    switch (p->parameter_choice_case) {
    case INFERENCE__MODEL_REPOSITORY_PARAMETER__PARAMETER_CHOICE_BOOL_PARAM: return json_boolean(p->bool_param);
    case INFERENCE__MODEL_REPOSITORY_PARAMETER__PARAMETER_CHOICE_INT64_PARAM: return json_integer(p->int64_param);
    case INFERENCE__MODEL_REPOSITORY_PARAMETER__PARAMETER_CHOICE_STRING_PARAM: {
        json_t *s = json_stringn(p->string_param, strlen(p->string_param));
        if (!s)
            *why = "is not valid UTF-8";
        return s;
    }
    case INFERENCE__MODEL_REPOSITORY_PARAMETER__PARAMETER_CHOICE_BYTES_PARAM: {
        json_t *s = json_stringn((const char *)p->bytes_param.data, p->bytes_param.len);
        if (!s)
            *why = "(bytes) is not valid UTF-8 text";
        return s;
    }
    default: *why = "has no value"; return NULL;
    }
}

/* The parameters of a load or unload as HTTP's body {"parameters": {...}}; NULL having failed the call. */
static json_t *repo_body(rpc *r, Inference__RepositoryModelLoadRequest__ParametersEntry **params, size_t n,
                         const char *verb, const char *model)
{
    json_t *p = json_object();
    for (size_t i = 0; i < n; i++) {
        const char *why = NULL;
        json_t *v = repo_param(params[i]->value, &why);
        if (!v || !utf8_valid(params[i]->key, strlen(params[i]->key))) {
            json_decref(v);
            json_decref(p);
            fail(r, GB_INVALID_ARGUMENT, "model '%s': %s: parameter '%.64s' %s", model, verb, params[i]->key,
                 why ? why : "has a name that is not valid UTF-8");
            return NULL;
        }
        json_object_set_new(p, params[i]->key, v);
    }
    return json_pack("{s:o}", "parameters", p);
}

static void lifecycle_done(void *ctx, int status, const char *msg)
{
    rpc *r = ctx;
    r->wmodel = NULL;
    if (status == 200) {
        Inference__RepositoryModelLoadResponse out = INFERENCE__REPOSITORY_MODEL_LOAD_RESPONSE__INIT;
        reply(r, &out.base); /* the unload's answer is the same empty message */
    } else {
        fail(r, api_grpc_code(status), "%s", msg);
    }
}

static void rpc_model_load(rpc *r, ProtobufCMessage *msg)
{
    Inference__RepositoryModelLoadRequest *in = (Inference__RepositoryModelLoadRequest *)msg;
    const char *name = in->model_name;
    if (!one_repository(r, in->repository_name))
        goto out;
    if (!model_name_valid(name, strlen(name))) {
        find_model(r, name, NULL); /* the same 400 */
        goto out;
    }
    json_t *body = repo_body(r, in->parameters, in->n_parameters, "load", name);
    if (!body)
        goto out;
    int instances;
    json_t *config;
    char err[1200];
    int rc = api_load_options(body, name, &instances, &config, err, sizeof err);
    json_decref(body);
    if (rc < 0) {
        fail(r, GB_INVALID_ARGUMENT, "%s", err);
        goto out;
    }
    registry_rescan(); /* as Triton does, and as HTTP's load does */
    model *m = find_model(r, name, NULL);
    if (m) {
        r->waiter.on_done = lifecycle_done;
        r->waiter.ctx = r;
        r->wmodel = m;
        int status = model_load_config(m, config, instances, &r->waiter, err, sizeof err);
        if (status) {
            r->wmodel = NULL;
            fail(r, api_grpc_code(status), "%s", err);
        }
    }
    json_decref(config);
out:
    protobuf_c_message_free_unpacked(msg, NULL);
}

static void rpc_model_unload(rpc *r, ProtobufCMessage *msg)
{
    Inference__RepositoryModelUnloadRequest *in = (Inference__RepositoryModelUnloadRequest *)msg;
    model *m = one_repository(r, in->repository_name) ? find_model(r, in->model_name, NULL) : NULL;
    json_t *body = m ? repo_body(r, (Inference__RepositoryModelLoadRequest__ParametersEntry **)in->parameters,
                                 in->n_parameters, "unload", model_name(m))
                     : NULL;
    char err[512];
    if (body && api_unload_options(body, model_name(m), err, sizeof err) < 0) {
        fail(r, GB_INVALID_ARGUMENT, "%s", err);
    } else if (body) {
        r->waiter.on_done = lifecycle_done;
        r->waiter.ctx = r;
        r->wmodel = m;
        int status = model_unload(m, &r->waiter, err, sizeof err);
        if (status) {
            r->wmodel = NULL;
            fail(r, api_grpc_code(status), "%s", err);
        }
    }
    json_decref(body);
    protobuf_c_message_free_unpacked(msg, NULL);
}

/* ---- inference: the request ---- */

/* An InferParameter as the JSON value HTTP's request would carry; NULL with *why set when it has none. */
static json_t *infer_param(const Inference__InferParameter *p, const char **why)
{
    if (!p) {
        *why = "has no value";
        return NULL;
    }
    switch (p->parameter_choice_case) {
    case INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_BOOL_PARAM: return json_boolean(p->bool_param);
    case INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_INT64_PARAM: return json_integer(p->int64_param);
    case INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_DOUBLE_PARAM: return json_real(p->double_param);
    case INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_UINT64_PARAM:
        if (p->uint64_param <= INT64_MAX)
            return json_integer((json_int_t)p->uint64_param);
        else { /* as infer.c reads a UINT64 beyond jansson's range: its digits */
            char digits[24];
            snprintf(digits, sizeof digits, "%llu", (unsigned long long)p->uint64_param);
            return json_string(digits);
        }
    case INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_STRING_PARAM: {
        json_t *s = json_stringn(p->string_param, strlen(p->string_param));
        if (!s)
            *why = "is not valid UTF-8";
        return s;
    }
    default: *why = "has no value"; return NULL;
    }
}

typedef struct Inference__ModelInferRequest__ParametersEntry param_entry;

/*
 * A parameters map as a JSON object, for what (a message's "parameters"
 * or "input 'x'"). Returns 0, or a message in err.
 */
static int params_json(param_entry **ps, size_t n, const char *what, json_t **out, char *err, size_t errlen)
{
    *out = json_object();
    for (size_t i = 0; i < n; i++) {
        const char *why = NULL;
        const char *key = ps[i]->key;
        if (!utf8_valid(key, strlen(key))) {
            snprintf(err, errlen, "%s: a parameter's name is not valid UTF-8", what);
            return -1;
        }
        json_t *v = infer_param(ps[i]->value, &why);
        if (!v) {
            snprintf(err, errlen, "%s: parameter '%.64s' %s", what, key, why);
            return -1;
        }
        json_object_set_new(*out, key, v);
    }
    return 0;
}

/* Typed contents: which field a datatype takes, and the field's name for messages. */
static const char *contents_field(dtype t)
{
    switch (t) {
    case DT_BOOL: return "bool_contents";
    case DT_INT8:
    case DT_INT16:
    case DT_INT32: return "int_contents";
    case DT_INT64: return "int64_contents";
    case DT_UINT8:
    case DT_UINT16:
    case DT_UINT32: return "uint_contents";
    case DT_UINT64: return "uint64_contents";
    case DT_FP32: return "fp32_contents";
    case DT_FP64: return "fp64_contents";
    case DT_BYTES: return "bytes_contents";
    default: return NULL;
    }
}

/* How many elements each typed field of c holds, and which fields are set. */
static size_t contents_count(const Inference__InferTensorContents *c, const char **set, int *nset)
{
    struct {
        size_t n;
        const char *name;
    } f[] = {{c->n_bool_contents, "bool_contents"},     {c->n_int_contents, "int_contents"},
             {c->n_int64_contents, "int64_contents"},   {c->n_uint_contents, "uint_contents"},
             {c->n_uint64_contents, "uint64_contents"}, {c->n_fp32_contents, "fp32_contents"},
             {c->n_fp64_contents, "fp64_contents"},     {c->n_bytes_contents, "bytes_contents"}};
    size_t total = 0;
    *nset = 0;
    *set = NULL;
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
        if (f[i].n) {
            total += f[i].n;
            *set = f[i].name;
            ++*nset;
        }
    return total;
}

/*
 * Converts typed contents of datatype t (count elements) to the raw
 * little-endian bytes (BYTES: each element's u32 length, then its bytes)
 * appended to b. Returns 0, or -1 with a message in err.
 */
static int contents_raw(const Inference__InferTensorContents *c, dtype t, int64_t count, const char *name, sb *b,
                        char *err, size_t errlen)
{
    const char *field = contents_field(t), *set;
    int nset;
    size_t have = contents_count(c, &set, &nset);
    if (!field) {
        snprintf(err, errlen, "input '%s': %s tensors have no typed contents; send them in raw_input_contents", name,
                 dtype_name(t));
        return -1;
    }
    if (nset > 1 || (nset == 1 && strcmp(set, field) != 0)) {
        snprintf(err, errlen, "input '%s': a %s tensor's contents go in %s (this one sets %s)", name, dtype_name(t),
                 field, set);
        return -1;
    }
    if ((int64_t)have != count) {
        snprintf(err, errlen, "input '%s': %s holds %zu elements; the shape says %lld", name, field, have,
                 (long long)count);
        return -1;
    }
    size_t es = dtype_size(t);
    if (t != DT_BYTES && sb_try_reserve(b, (size_t)count * es) < 0) {
        snprintf(err, errlen, "input '%s': no memory now for its contents", name);
        return -1;
    }
    for (size_t i = 0; i < have; i++) {
        uint8_t e[8];
        switch (t) {
        case DT_BOOL: e[0] = c->bool_contents[i] ? 1 : 0; break;
        case DT_INT8:
        case DT_INT16:
        case DT_INT32: {
            int32_t v = c->int_contents[i];
            if ((t == DT_INT8 && (v < INT8_MIN || v > INT8_MAX)) || (t == DT_INT16 && (v < INT16_MIN || v > INT16_MAX))) {
                snprintf(err, errlen, "input '%s': element %zu (%d) is out of range for %s", name, i, v, dtype_name(t));
                return -1;
            }
            memcpy(e, &v, 4); /* little-endian: the low bytes are the narrower type's */
            break;
        }
        case DT_INT64: memcpy(e, &c->int64_contents[i], 8); break;
        case DT_UINT8:
        case DT_UINT16:
        case DT_UINT32: {
            uint32_t v = c->uint_contents[i];
            if ((t == DT_UINT8 && v > UINT8_MAX) || (t == DT_UINT16 && v > UINT16_MAX)) {
                snprintf(err, errlen, "input '%s': element %zu (%u) is out of range for %s", name, i, v, dtype_name(t));
                return -1;
            }
            memcpy(e, &v, 4);
            break;
        }
        case DT_UINT64: memcpy(e, &c->uint64_contents[i], 8); break;
        case DT_FP32: memcpy(e, &c->fp32_contents[i], 4); break;
        case DT_FP64: memcpy(e, &c->fp64_contents[i], 8); break;
        case DT_BYTES: {
            const ProtobufCBinaryData *d = &c->bytes_contents[i];
            if (d->len > UINT32_MAX) {
                snprintf(err, errlen, "input '%s': element %zu is longer than 4 GiB", name, i);
                return -1;
            }
            uint32_t len = (uint32_t)d->len;
            if (sb_try_reserve(b, 4 + d->len) < 0) {
                snprintf(err, errlen, "input '%s': no memory now for its contents", name);
                return -1;
            }
            sb_add(b, (const char *)&len, 4);
            sb_add(b, (const char *)d->data, d->len);
            continue;
        }
        default: break;
        }
        sb_add(b, (const char *)e, es);
    }
    return 0;
}

static int greq_alive(job *j)
{
    greq *g = j->ctx;
    return g && g->r && g->r->c;
}

static void greq_free(greq *g)
{
    if (g->r) {
        if (g->prev)
            g->prev->next = g->next;
        else
            g->r->reqs = g->next;
        if (g->next)
            g->next->prev = g->prev;
        g->r->nreqs--;
    }
    infer_opts_clear(&g->opts);
    if (g->msg)
        protobuf_c_message_free_unpacked(&g->msg->base, NULL);
    free(g->conv);
    free(g->gen_body);
    free(g);
}

/* Withdraws or detaches g's job (a running one's worker is told to CANCEL), as api_release_job does for HTTP. */
static void greq_release(greq *g)
{
    if (!g->job)
        return;
    if (model_cancel(g->job))
        job_free(g->job);
    else
        g->job->ctx = NULL;
    g->job = NULL;
}

static void stream_pump(rpc *r);

/* g's final answer is queued (or can never be sent): it goes once its messages are through. */
static void greq_finished(greq *g)
{
    g->done = 1;
    rpc *r = g->r;
    if (g->unsent == 0)
        greq_free(g);
    if (r && r->m->stream)
        stream_pump(r);
}

/* The response's common part; with a stream, triton_final_response (Triton sets it on every streamed response). */
typedef struct resp_head {
    Inference__ModelInferResponse resp;
    Inference__ModelInferResponse__ParametersEntry entry, *entries[1];
    Inference__InferParameter final;
} resp_head;

static void head_init(resp_head *h, greq *g, int final)
{
    Inference__ModelInferResponse init = INFERENCE__MODEL_INFER_RESPONSE__INIT;
    h->resp = init;
    h->resp.model_name = g->model ? (char *)model_name(g->model) : g->msg->model_name;
    h->resp.model_version = (char *)"1";
    h->resp.id = g->msg->id;
    if (g->r && g->r->m->stream) {
        Inference__ModelInferResponse__ParametersEntry e = INFERENCE__MODEL_INFER_RESPONSE__PARAMETERS_ENTRY__INIT;
        Inference__InferParameter p = INFERENCE__INFER_PARAMETER__INIT;
        h->entry = e;
        h->final = p;
        h->final.parameter_choice_case = INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_BOOL_PARAM;
        h->final.bool_param = final;
        h->entry.key = (char *)"triton_final_response";
        h->entry.value = &h->final;
        h->entries[0] = &h->entry;
        h->resp.n_parameters = 1;
        h->resp.parameters = h->entries;
    }
}

/* Sends one answer for g: on a stream a ModelStreamInferResponse, on ModelInfer the call's answer. */
static void greq_send(greq *g, const ProtobufCMessage *resp, int final, uint32_t credit)
{
    rpc *r = g->r;
    if (!r || !r->c)
        return;
    uint8_t *buf;
    size_t len;
    if (r->m->stream) {
        Inference__ModelStreamInferResponse s = INFERENCE__MODEL_STREAM_INFER_RESPONSE__INIT;
        s.infer_response = (Inference__ModelInferResponse *)resp;
        buf = pb_pack(&s.base, &len);
    } else {
        buf = pb_pack(resp, &len);
    }
    if (!buf) {
        if (r->m->stream) {
            log_warn("grpc: no memory for a %s answer of model '%s'", final ? "final" : "streamed",
                     model_name(g->model));
            return;
        }
        fail(r, GB_UNAVAILABLE, "model '%s': no memory now for the answer", model_name(g->model));
        return;
    }
    g->unsent++;
    gb_send(r->c, buf, len, !r->m->stream && final, g, credit);
}

/* Answers g with an error: the call's status (ModelInfer) or an error_message (a stream goes on). */
static void greq_error(greq *g, int status, const char *msg)
{
    rpc *r = g->r;
    if (!r || !r->c)
        return;
    if (!r->m->stream) {
        fail(r, api_grpc_code(status), "%s", msg);
        return;
    }
    /* As Triton answers a failed request on a stream: the message, and the response's id to match it by. */
    Inference__ModelStreamInferResponse s = INFERENCE__MODEL_STREAM_INFER_RESPONSE__INIT;
    s.error_message = (char *)msg;
    resp_head h;
    head_init(&h, g, 1);
    s.infer_response = &h.resp;
    size_t len;
    uint8_t *buf = pb_pack(&s.base, &len);
    if (!buf)
        return;
    g->unsent++;
    gb_send(r->c, buf, len, 0, g, 0);
}

/* An INFER_RESULT as a ModelInferResponse: every output's bytes in raw_output_contents. Returns 1 for a 502. */
static int answer_infer(greq *g, job *j, uint8_t *body, size_t len)
{
    infer_result res;
    char err[600];
    int status = infer_read_result(model_name(g->model), &g->opts, body, len, j->shm_data, j->shm_len, &res, err,
                                   sizeof err);
    if (status != 200) {
        char msg[800];
        if (status == 502)
            snprintf(msg, sizeof msg, "%s; instance %d (pid %d) is replaced", err, g->inst_id, g->inst_pid);
        else
            snprintf(msg, sizeof msg, "%s", err);
        greq_error(g, status, msg);
        return status == 502;
    }
    pb_arena a = {0};
    resp_head h;
    head_init(&h, g, 1);
    h.resp.n_outputs = h.resp.n_raw_output_contents = res.n;
    h.resp.outputs = pb_alloc(&a, (res.n ? res.n : 1) * sizeof *h.resp.outputs);
    h.resp.raw_output_contents = pb_alloc(&a, (res.n ? res.n : 1) * sizeof *h.resp.raw_output_contents);
    for (size_t i = 0; i < res.n; i++) {
        infer_output *o = &res.out[i];
        Inference__ModelInferResponse__InferOutputTensor *t =
            (Inference__ModelInferResponse__InferOutputTensor *)pb_new(
                &a, &inference__model_infer_response__infer_output_tensor__descriptor);
        t->name = pb_strdup(&a, o->name, o->name_len);
        t->datatype = (char *)dtype_name(o->t);
        t->n_shape = (size_t)o->ndim;
        t->shape = pb_alloc(&a, sizeof(int64_t) * (size_t)(o->ndim ? o->ndim : 1));
        memcpy(t->shape, o->dims, sizeof(int64_t) * (size_t)o->ndim);
        if (o->shm) { /* in the client's region already; the answer says where, and carries no bytes */
            json_t *p = json_pack("{s:{s:s%,s:I,s:I}}", "parameters", "shared_memory_region", o->shm->region,
                                  o->shm->region_len, "shared_memory_byte_size", (json_int_t)o->size,
                                  "shared_memory_offset", (json_int_t)o->shm->offset);
            pb_from_json(&a, &t->base, p, NULL);
            json_decref(p);
        } else {
            h.resp.raw_output_contents[i].data = (uint8_t *)o->data;
            h.resp.raw_output_contents[i].len = o->size;
        }
        h.resp.outputs[i] = t;
    }
    greq_send(g, &h.resp.base, 1, 0);
    pb_arena_free(&a);
    infer_result_clear(&res);
    return 0;
}

/* ---- decoupled models: tensors to generate's JSON and back ---- */

/* One element of a tensor as JSON. NULL: a BYTES element that is not UTF-8 text. */
static json_t *element_json(dtype t, const uint8_t *p, size_t len)
{
    switch (t) {
    case DT_BOOL: return json_boolean(p[0]);
    case DT_UINT8: return json_integer(p[0]);
    case DT_UINT16: { uint16_t v; memcpy(&v, p, 2); return json_integer(v); }
    case DT_UINT32: { uint32_t v; memcpy(&v, p, 4); return json_integer(v); }
    case DT_UINT64: { uint64_t v; memcpy(&v, p, 8); return v <= INT64_MAX ? json_integer((json_int_t)v) : json_real((double)v); }
    case DT_INT8: return json_integer((int8_t)p[0]);
    case DT_INT16: { int16_t v; memcpy(&v, p, 2); return json_integer(v); }
    case DT_INT32: { int32_t v; memcpy(&v, p, 4); return json_integer(v); }
    case DT_INT64: { int64_t v; memcpy(&v, p, 8); return json_integer(v); }
    case DT_FP16: { uint16_t v; memcpy(&v, p, 2); return json_real(dtype_half_to_float(v)); }
    case DT_BF16: { uint16_t v; memcpy(&v, p, 2); return json_real(dtype_bf16_to_float(v)); }
    case DT_FP32: { float v; memcpy(&v, p, 4); return json_real(v); }
    case DT_FP64: { double v; memcpy(&v, p, 8); return json_real(v); }
    case DT_BYTES: return json_stringn((const char *)p, len);
    default: return NULL;
    }
}

/*
 * The JSON object of a decoupled request, as Triton's generate extension
 * maps one to tensors: each input by name, one element as a scalar, more
 * as an array (row-major, flattened); BYTES as strings; then the request's
 * parameters, as keys of their own. Returns 0, or -1 with a message.
 */
static int generate_body(greq *g, const job_piece *pieces, json_t *params, char *err, size_t errlen, char **out,
                         size_t *out_len)
{
    Inference__ModelInferRequest *in = g->msg;
    json_t *o = json_object();
    for (size_t i = 0; i < in->n_inputs; i++) {
        Inference__ModelInferRequest__InferInputTensor *t = in->inputs[i];
        dtype dt = dtype_from_name(t->datatype, strlen(t->datatype));
        int64_t count = dtype_shape_count(t->shape, (int)t->n_shape);
        const uint8_t *p = pieces[i].ptr;
        size_t left = pieces[i].len, es = dtype_size(dt);
        json_t *arr = json_array();
        for (int64_t k = 0; k < count; k++) {
            size_t len = es;
            if (dt == DT_BYTES) {
                uint32_t n;
                memcpy(&n, p, 4); /* checked by dtype_check_raw before */
                p += 4;
                left -= 4;
                len = n;
            }
            json_t *e = element_json(dt, p, len);
            if (!e) {
                snprintf(err, errlen, "input '%s': element %lld is %s; a decoupled model's requests become JSON "
                         "(its generate)", t->name, (long long)k, dt == DT_BYTES ? "not UTF-8 text" : "not a finite number");
                json_decref(arr);
                json_decref(o);
                return -1;
            }
            json_array_append_new(arr, e);
            p += len;
            left -= len;
        }
        (void)left;
        json_object_set_new(o, t->name, count == 1 && t->n_shape <= 1 ? json_incref(json_array_get(arr, 0)) : arr);
        if (count == 1 && t->n_shape <= 1)
            json_decref(arr);
    }
    const char *key;
    json_t *v;
    json_object_foreach(params, key, v) {
        if (strcmp(key, "priority") == 0 || strcmp(key, "timeout") == 0)
            continue; /* corral's own, honoured on the job */
        if (json_object_get(o, key)) {
            snprintf(err, errlen, "parameter '%.64s' has the name of an input", key);
            json_decref(o);
            return -1;
        }
        json_object_set(o, key, v);
    }
    *out = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!*out) {
        snprintf(err, errlen, "no memory now for the request");
        return -1;
    }
    *out_len = strlen(*out);
    return 0;
}

/*
 * A JSON value as one output tensor, as Triton's generate maps its answers:
 * a string BYTES [1], a boolean BOOL [1], an integer INT64 [1], a number
 * FP64 [1], an array of one of those [n]; anything else its JSON text as
 * BYTES [1]. The bytes go into b (offsets in *off, *len).
 */
static void value_tensor(json_t *v, dtype *t, int64_t *n, sb *b, size_t *off, size_t *len)
{
    *off = b->len;
    json_t *first = json_is_array(v) ? json_array_get(v, 0) : v;
    size_t count = json_is_array(v) ? json_array_size(v) : 1;
    *t = json_is_string(first) ? DT_BYTES : json_is_boolean(first) ? DT_BOOL : json_is_integer(first) ? DT_INT64
         : json_is_real(first) ? DT_FP64 : DT_INVALID;
    for (size_t i = 0; *t != DT_INVALID && json_is_array(v) && i < count; i++) {
        json_t *e = json_array_get(v, i);
        int same = (*t == DT_BYTES && json_is_string(e)) || (*t == DT_BOOL && json_is_boolean(e)) ||
                   (*t == DT_INT64 && json_is_integer(e)) || (*t == DT_FP64 && json_is_number(e));
        if (*t == DT_INT64 && json_is_real(e))
            *t = DT_FP64, same = 1; /* integers and decimals together are numbers */
        if (!same)
            *t = DT_INVALID;
    }
    if (*t == DT_INVALID || (json_is_array(v) && count == 0)) { /* its text */
        char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        uint32_t l = text ? (uint32_t)strlen(text) : 0;
        sb_add(b, (const char *)&l, 4);
        sb_add(b, text ? text : "", l);
        free(text);
        *t = DT_BYTES;
        *n = 1;
        *len = b->len - *off;
        return;
    }
    for (size_t i = 0; i < count; i++) {
        json_t *e = json_is_array(v) ? json_array_get(v, i) : v;
        if (*t == DT_BYTES) {
            uint32_t l = (uint32_t)json_string_length(e);
            sb_add(b, (const char *)&l, 4);
            sb_add(b, json_string_value(e), l);
        } else if (*t == DT_BOOL) {
            sb_addc(b, json_is_true(e) ? 1 : 0);
        } else if (*t == DT_INT64) {
            int64_t x = json_integer_value(e);
            sb_add(b, (const char *)&x, 8);
        } else {
            double x = json_number_value(e);
            sb_add(b, (const char *)&x, 8);
        }
    }
    *n = (int64_t)count;
    *len = b->len - *off;
}

/*
 * One answer of a decoupled model (a chunk, or a whole GENERATE_RESULT) as a
 * response: a JSON object's members as outputs, anything else as one
 * output "content" (BYTES [1]) with its content_type as a parameter.
 */
static void send_generated(greq *g, int events, const char *ctype, const uint8_t *data, size_t len, int final,
                           uint32_t credit)
{
    pb_arena a = {0};
    resp_head h;
    head_init(&h, g, final);
    sb b;
    sb_init(&b, len + 64);
    json_t *obj = events ? json_loadb((const char *)data, len, 0, NULL) : NULL;
    if (json_is_object(obj)) {
        size_t n = json_object_size(obj), i = 0;
        size_t *offs = pb_alloc(&a, sizeof(size_t) * (n ? n : 1)), *lens = pb_alloc(&a, sizeof(size_t) * (n ? n : 1));
        h.resp.outputs = pb_alloc(&a, sizeof *h.resp.outputs * (n ? n : 1));
        h.resp.raw_output_contents = pb_alloc(&a, sizeof *h.resp.raw_output_contents * (n ? n : 1));
        const char *key;
        json_t *v;
        json_object_foreach(obj, key, v) {
            Inference__ModelInferResponse__InferOutputTensor *t =
                (Inference__ModelInferResponse__InferOutputTensor *)pb_new(
                    &a, &inference__model_infer_response__infer_output_tensor__descriptor);
            dtype dt;
            int64_t count;
            value_tensor(v, &dt, &count, &b, &offs[i], &lens[i]);
            t->name = pb_strdup(&a, key, strlen(key));
            t->datatype = (char *)dtype_name(dt);
            t->n_shape = 1;
            t->shape = pb_alloc(&a, sizeof(int64_t));
            t->shape[0] = count;
            h.resp.outputs[i++] = t;
        }
        h.resp.n_outputs = h.resp.n_raw_output_contents = i;
        for (size_t k = 0; k < i; k++) { /* b has stopped growing */
            h.resp.raw_output_contents[k].data = (uint8_t *)b.p + offs[k];
            h.resp.raw_output_contents[k].len = lens[k];
        }
    } else if (data) {
        Inference__ModelInferResponse__InferOutputTensor *t =
            (Inference__ModelInferResponse__InferOutputTensor *)pb_new(
                &a, &inference__model_infer_response__infer_output_tensor__descriptor);
        uint32_t l = (uint32_t)len;
        sb_add(&b, (const char *)&l, 4);
        sb_add(&b, (const char *)data, len);
        t->name = (char *)"content";
        t->datatype = (char *)"BYTES";
        t->n_shape = 1;
        t->shape = pb_alloc(&a, sizeof(int64_t));
        t->shape[0] = 1;
        json_t *p = json_pack("{s:{s:s}}", "parameters", "content_type", ctype && *ctype ? ctype : "application/octet-stream");
        pb_from_json(&a, &t->base, p, NULL);
        json_decref(p);
        h.resp.n_outputs = h.resp.n_raw_output_contents = 1;
        h.resp.outputs = pb_alloc(&a, sizeof *h.resp.outputs);
        h.resp.outputs[0] = t;
        h.resp.raw_output_contents = pb_alloc(&a, sizeof *h.resp.raw_output_contents);
        h.resp.raw_output_contents[0].data = (uint8_t *)b.p;
        h.resp.raw_output_contents[0].len = b.len;
    }
    json_decref(obj);
    greq_send(g, &h.resp.base, final, credit);
    sb_free(&b);
    pb_arena_free(&a);
}

static void on_chunk(job *j, const job_chunk *c)
{
    greq *g = j->ctx;
    if (!g || !g->r || !g->r->c) { /* nobody sends it on: credited back at once */
        free(c->body);
        inst_credit(j->inst, j, c->cost);
        return;
    }
    send_generated(g, c->events, c->content_type, c->data, c->len, 0, c->cost);
    free(c->body);
}

/* ---- inference: the answer ---- */

static void on_done(job *j, int status, const char *msg, uint8_t type, uint8_t *body, size_t len)
{
    greq *g = j->ctx;
    if (!g) {
        free(body);
        return;
    }
    g->job = NULL;
    j->ctx = NULL; /* an answer given early (a deadline) hears nothing more */
    if (j->inst) {
        g->inst_id = j->inst->id;
        g->inst_pid = j->inst->pid;
    }
    if (status != 200) {
        greq_error(g, status, msg);
    } else if (type == PROTO_INFER_RESULT) {
        j->result_broken = answer_infer(g, j, body, len);
    } else if (type == PROTO_GENERATE_RESULT) { /* a decoupled model's whole answer: one response, the final one */
        const char *meta, *ct = "application/octet-stream";
        size_t meta_len, data_len;
        const uint8_t *data;
        json_t *m = NULL;
        if (proto_split_body(body, len, &meta, &meta_len, &data, &data_len) == 0 &&
            (m = json_loadb(meta, meta_len, 0, NULL)) && json_is_string(json_object_get(m, "content_type")))
            ct = json_string_value(json_object_get(m, "content_type"));
        int events = strncmp(ct, "application/json", 16) == 0;
        send_generated(g, events, ct, data_len ? data : (const uint8_t *)"", data_len, 1, 0);
        json_decref(m);
    } else if (g->empty_final) { /* END of a stream: Triton's empty final response, when asked for */
        resp_head h;
        head_init(&h, g, 1);
        greq_send(g, &h.resp.base, 1, 0);
    }
    free(body);
    greq_finished(g);
}

/*
 * Starts one ModelInferRequest (taken): the v2 request document from the
 * message, parsed by infer.c as an HTTP request's is, then submitted.
 * Every failure is answered (the call's status, or error_message on a
 * stream).
 */
static void start_infer(rpc *r, Inference__ModelInferRequest *in)
{
    greq *g = xcalloc(1, sizeof *g);
    g->msg = in;
    g->r = r;
    g->next = r->reqs;
    if (r->reqs)
        r->reqs->prev = g;
    r->reqs = g;
    r->nreqs++;
    char err[1024];
    int status = 400;
    json_t *doc = NULL, *params = NULL, *inputs = NULL, *outputs = NULL;
    job *j = NULL;
    job_piece *pieces = NULL;
    sb conv = {0};
#define BAD(st, ...)                                                                                                  \
    do {                                                                                                              \
        status = (st);                                                                                                \
        snprintf(err, sizeof err, __VA_ARGS__);                                                                       \
        goto fail;                                                                                                    \
    } while (0)

    size_t nlen = strlen(in->model_name);
    if (!model_name_valid(in->model_name, nlen))
        BAD(400, "invalid model name '%.200s': names match [A-Za-z0-9][A-Za-z0-9._-]{0,127}", in->model_name);
    model *m = model_find(in->model_name, nlen);
    if (!m)
        BAD(404, "unknown model '%s'", in->model_name);
    g->model = m;
    if (*in->model_version && strcmp(in->model_version, "1") != 0)
        BAD(404, "model '%s' has no version '%.64s' (corral serves version 1)", model_name(m), in->model_version);
    if (registry_draining())
        BAD(503, "model '%s': corral is shutting down", model_name(m));
    if (!utf8_valid(in->id, strlen(in->id)))
        BAD(400, "model '%s': the request's id is not valid UTF-8", model_name(m));
    if (params_json((param_entry **)in->parameters, in->n_parameters, "the request", &params, err, sizeof err) < 0)
        goto fail;
    json_t *ef = json_object_get(params, "triton_enable_empty_final_response");
    if (ef) { /* Triton's, and ours to honour: not the model's */
        if (!json_is_boolean(ef))
            BAD(400, "model '%s': parameter triton_enable_empty_final_response must be a boolean", model_name(m));
        g->empty_final = json_is_true(ef);
        json_object_del(params, "triton_enable_empty_final_response");
    }
    const manifest *mf = model_manifest(m);
    g->decoupled = mf && mf->decoupled;
    if (g->decoupled && !r->m->stream)
        BAD(400, "model '%s' is decoupled (it streams its answers): ModelInfer takes one answer per request; use "
            "ModelStreamInfer", model_name(m));
    if (in->n_inputs > INFER_MAX_TENSORS || in->n_outputs > INFER_MAX_TENSORS)
        BAD(400, "model '%s': at most %d inputs and %d outputs per request", model_name(m), INFER_MAX_TENSORS,
            INFER_MAX_TENSORS);
    size_t nraw = in->n_raw_input_contents, raw_used = 0;
    pieces = xcalloc(in->n_inputs ? in->n_inputs : 1, sizeof *pieces);
    size_t *conv_off = xcalloc(in->n_inputs ? in->n_inputs : 1, sizeof *conv_off);
    uint8_t *is_conv = xcalloc(in->n_inputs ? in->n_inputs : 1, 1);
    inputs = json_array();
    int npieces = 0;
    for (size_t i = 0; i < in->n_inputs; i++) {
        Inference__ModelInferRequest__InferInputTensor *t = in->inputs[i];
        const char *nm = t->name;
        if (!utf8_valid(nm, strlen(nm))) {
            snprintf(err, sizeof err, "model '%s': inputs[%zu].name is not valid UTF-8", model_name(m), i);
            goto fail_conv;
        }
        char what[200];
        snprintf(what, sizeof what, "model '%s': input '%.64s'", model_name(m), nm);
        json_t *ip;
        if (params_json((param_entry **)t->parameters, t->n_parameters, what, &ip, err, sizeof err) < 0) {
            json_decref(ip);
            goto fail_conv;
        }
        if (json_object_get(ip, "binary_data_size")) {
            json_decref(ip);
            snprintf(err, sizeof err, "%s: binary_data_size is HTTP's; over gRPC a tensor's bytes go in "
                     "raw_input_contents or contents", what);
            goto fail_conv;
        }
        json_t *shape = json_array();
        for (size_t d = 0; d < t->n_shape; d++)
            json_array_append_new(shape, json_integer(t->shape[d]));
        json_t *jt = json_pack("{s:s%, s:s, s:o}", "name", nm, strlen(nm), "datatype", t->datatype, "shape", shape);
        if (!jt) {
            json_decref(ip);
            snprintf(err, sizeof err, "%s: its datatype is not valid UTF-8", what);
            goto fail_conv;
        }
        json_array_append_new(inputs, jt);
        if (json_object_get(ip, "shared_memory_region")) { /* the bytes are in the client's region */
            if (t->contents) {
                json_decref(ip);
                snprintf(err, sizeof err, "%s: set contents or shared_memory_region, not both", what);
                goto fail_conv;
            }
            json_object_set_new(jt, "parameters", ip);
            continue;
        }
        if (nraw) {
            if (t->contents) {
                json_decref(ip);
                snprintf(err, sizeof err, "%s: contents must not be set when the request uses raw_input_contents",
                         what);
                goto fail_conv;
            }
            if (raw_used >= nraw) {
                json_decref(ip);
                snprintf(err, sizeof err, "model '%s': raw_input_contents has %zu entries; the request has more "
                         "inputs than that outside shared memory", model_name(m), nraw);
                goto fail_conv;
            }
            pieces[npieces].ptr = in->raw_input_contents[raw_used].data ? in->raw_input_contents[raw_used].data
                                                                        : (const uint8_t *)"";
            pieces[npieces].len = in->raw_input_contents[raw_used].len;
            raw_used++;
        } else if (t->contents) {
            dtype dt = dtype_from_name(t->datatype, strlen(t->datatype));
            int64_t count = dtype_shape_count(t->shape, (int)t->n_shape);
            int neg = 0;
            for (size_t d = 0; d < t->n_shape; d++)
                neg |= t->shape[d] < 0;
            if (dt != DT_INVALID && count >= 0 && !neg) { /* else infer.c names what is wrong */
                if (!conv.p)
                    sb_init(&conv, 256);
                conv_off[npieces] = conv.len;
                is_conv[npieces] = 1;
                if (contents_raw(t->contents, dt, count, nm, &conv, err, sizeof err) < 0) {
                    json_decref(ip);
                    char e2[1024];
                    snprintf(e2, sizeof e2, "model '%s': %s", model_name(m), err);
                    memcpy(err, e2, sizeof err);
                    goto fail_conv;
                }
                pieces[npieces].len = conv.len - conv_off[npieces];
            }
        } else {
            json_decref(ip);
            snprintf(err, sizeof err, "%s has no data: send it in raw_input_contents or contents", what);
            goto fail_conv;
        }
        json_object_set_new(ip, "binary_data_size", json_integer((json_int_t)pieces[npieces].len));
        json_object_set_new(jt, "parameters", ip);
        npieces++;
    }
    if (raw_used != nraw) {
        snprintf(err, sizeof err, "model '%s': raw_input_contents has %zu entries for %zu inputs outside shared memory",
                 model_name(m), nraw, raw_used);
        goto fail_conv;
    }
    if (conv.p) { /* the converted contents are final: point the pieces at them */
        g->conv = (uint8_t *)sb_take(&conv, NULL);
        for (int k = 0; k < npieces; k++)
            if (is_conv[k])
                pieces[k].ptr = g->conv + conv_off[k];
    }
    free(conv_off);
    free(is_conv);
    conv_off = NULL;
    is_conv = NULL;
    outputs = json_array();
    for (size_t i = 0; i < in->n_outputs; i++) {
        Inference__ModelInferRequest__InferRequestedOutputTensor *t = in->outputs[i];
        if (!utf8_valid(t->name, strlen(t->name)))
            BAD(400, "model '%s': outputs[%zu].name is not valid UTF-8", model_name(m), i);
        char what[200];
        snprintf(what, sizeof what, "model '%s': output '%.64s'", model_name(m), t->name);
        json_t *op;
        if (params_json((param_entry **)t->parameters, t->n_parameters, what, &op, err, sizeof err) < 0) {
            json_decref(op);
            goto fail;
        }
        json_t *jo = json_pack("{s:s}", "name", t->name);
        if (json_object_size(op))
            json_object_set_new(jo, "parameters", op);
        else
            json_decref(op);
        json_array_append_new(outputs, jo);
    }
    if (g->decoupled) {
        /* Its generate takes the request as one JSON object. The tensors are checked as for infer first. */
        if (npieces != (int)in->n_inputs)
            BAD(400, "model '%s': a decoupled model's inputs travel in the request, not in shared memory",
                model_name(m));
        j = job_new(m, PROTO_INFER, 0);
        doc = json_pack("{s:O, s:O}", "parameters", params, "inputs", inputs);
        infer_input ii = {.model = model_name(m), .priority_levels = mf->priority_levels, .doc = doc,
                          .raw = pieces, .nraw = npieces, .inputs_decl = model_declared_inputs(m)};
        status = infer_parse_request(&ii, j, &g->opts, err, sizeof err);
        if (status)
            goto fail;
        int priority = j->priority;
        uint64_t deadline = j->deadline_ms;
        job_free(j);
        j = NULL;
        char *text;
        size_t text_len;
        if (generate_body(g, pieces, params, err, sizeof err, &text, &text_len) < 0) {
            char e2[1024];
            snprintf(e2, sizeof e2, "model '%s': %s", model_name(m), err);
            memcpy(err, e2, sizeof err);
            status = 400;
            goto fail;
        }
        g->gen_body = (uint8_t *)text;
        j = job_new(m, PROTO_GENERATE, priority);
        j->deadline_ms = deadline;
        j->stream = 1;
        static const char meta[] = "{\"id\":\"\",\"content_type\":\"application/json\",\"stream\":true}";
        job_piece body = {g->gen_body, text_len};
        int rc = job_build_frame(j, meta, sizeof meta - 1, &body, 1, NULL);
        if (rc < 0)
            BAD(rc == -EFBIG ? 413 : 503, "model '%s': the request is too large for a frame", model_name(m));
    } else {
        j = job_new(m, PROTO_INFER, 0);
        doc = json_pack("{s:O, s:O}", "parameters", params, "inputs", inputs);
        if (json_array_size(outputs)) /* none named: all of them, as a request without "outputs" asks */
            json_object_set(doc, "outputs", outputs);
        if (*in->id)
            json_object_set_new(doc, "id", json_string(in->id));
        infer_input ii = {.model = model_name(m),
                          .priority_levels = mf ? mf->priority_levels : 1,
                          .doc = doc,
                          .raw = pieces,
                          .nraw = npieces,
                          .max_batch_size = mf ? mf->max_batch_size : 0,
                          .inputs_decl = model_declared_inputs(m),
                          .outputs_decl = model_declared_outputs(m)};
        status = infer_parse_request(&ii, j, &g->opts, err, sizeof err);
        if (!status && g->opts.classify && model_labels(m, &g->opts.labels, err, sizeof err) < 0)
            status = 500;
        if (status)
            goto fail;
    }
    /* The call's deadline is the request's, unless parameters.timeout comes first. */
    if (r->deadline_ms && (!j->deadline_ms || r->deadline_ms < j->deadline_ms))
        j->deadline_ms = r->deadline_ms;
    json_decref(doc);
    json_decref(params);
    json_decref(inputs);
    json_decref(outputs);
    free(pieces);
    j->on_done = on_done;
    j->on_chunk = on_chunk;
    j->client_alive = greq_alive;
    j->ctx = g;
    g->job = j;
    char msg[1024];
    int retry_after;
    status = model_submit(m, j, msg, sizeof msg, &retry_after);
    if (status) {
        g->job = NULL;
        job_free(j);
        greq_error(g, status, msg);
        greq_finished(g);
    }
    return;
fail_conv:
    free(conv_off);
    free(is_conv);
    status = 400;
fail:
    sb_free(&conv);
    if (j)
        job_free(j);
    json_decref(doc);
    json_decref(params);
    json_decref(inputs);
    json_decref(outputs);
    free(pieces);
    greq_error(g, status, err);
    greq_finished(g);
#undef BAD
}

static void rpc_model_infer(rpc *r, ProtobufCMessage *msg)
{
    start_infer(r, (Inference__ModelInferRequest *)msg);
}

/* ---- streams ---- */

/* Reads on while the window has room; ends the stream once the client is done (or the daemon stops) and all is answered. */
static void stream_pump(rpc *r)
{
    if (!r->c)
        return;
    if ((r->half_closed || r->stopping) && r->nreqs == 0) {
        if (r->stopping && !r->half_closed)
            gb_finish(r->c, GB_UNAVAILABLE, "corral is shutting down");
        else
            gb_finish(r->c, GB_OK, NULL);
        return;
    }
    if (!r->half_closed && !r->stopping && (size_t)r->nreqs + gb_queued(r->c) < STREAM_WINDOW)
        gb_read(r->c);
}

/* ---- calls ---- */

static const method methods[] = {
    {"ServerLive", &inference__server_live_request__descriptor, rpc_server_live, 0, 1, 0},
    {"ServerReady", &inference__server_ready_request__descriptor, rpc_server_ready, 0, 1, 0},
    {"ModelReady", &inference__model_ready_request__descriptor, rpc_model_ready, 0, 0, 0},
    {"ServerMetadata", &inference__server_metadata_request__descriptor, rpc_server_metadata, 0, 0, 0},
    {"ModelMetadata", &inference__model_metadata_request__descriptor, rpc_model_metadata, 0, 0, 0},
    {"ModelInfer", &inference__model_infer_request__descriptor, rpc_model_infer, 0, 0, 0},
    {"ModelStreamInfer", &inference__model_infer_request__descriptor, rpc_model_infer, 1, 0, 0},
    {"ModelConfig", &inference__model_config_request__descriptor, rpc_model_config, 0, 0, 1},
    {"ModelStatistics", &inference__model_statistics_request__descriptor, rpc_model_statistics, 0, 0, 0},
    {"RepositoryIndex", &inference__repository_index_request__descriptor, rpc_repository_index, 0, 0, 1},
    {"RepositoryModelLoad", &inference__repository_model_load_request__descriptor, rpc_model_load, 0, 0, 1},
    {"RepositoryModelUnload", &inference__repository_model_unload_request__descriptor, rpc_model_unload, 0, 0, 1},
};

/* Triton's methods corral does not serve over gRPC, and what to use instead. */
static const char *const unserved[][2] = {
    {"SystemSharedMemoryStatus", "use HTTP's /v2/systemsharedmemory (with --allow-client-shm)"},
    {"SystemSharedMemoryRegister", "use HTTP's /v2/systemsharedmemory (with --allow-client-shm)"},
    {"SystemSharedMemoryUnregister", "use HTTP's /v2/systemsharedmemory (with --allow-client-shm)"},
    {"CudaSharedMemoryStatus", "corral has no CUDA shared memory"},
    {"CudaSharedMemoryRegister", "corral has no CUDA shared memory"},
    {"CudaSharedMemoryUnregister", "corral has no CUDA shared memory"},
    {"TraceSetting", "corral has no tracing; its lifecycle events are at GET /v1/events"},
    {"LogSettings", "use HTTP's GET|POST /v2/logging"},
};

static void on_call(gb_call *c, const char *name, size_t len, uint64_t deadline_ms, const char *auth, size_t auth_len)
{
    rpc *r = xcalloc(1, sizeof *r);
    r->c = c;
    r->deadline_ms = deadline_ms;
    r->next = G.rpcs;
    if (G.rpcs)
        G.rpcs->prev = r;
    G.rpcs = r;
    gb_set_data(c, r);
    size_t plen = strlen(SERVICE);
    const char *short_name = len > plen && memcmp(name, SERVICE, plen) == 0 ? name + plen : NULL;
    size_t slen = short_name ? len - plen : 0;
    for (size_t i = 0; short_name && i < sizeof methods / sizeof methods[0]; i++)
        if (strlen(methods[i].name) == slen && memcmp(methods[i].name, short_name, slen) == 0)
            r->m = &methods[i];
    if (!r->m) {
        for (size_t i = 0; short_name && i < sizeof unserved / sizeof unserved[0]; i++)
            if (strlen(unserved[i][0]) == slen && memcmp(unserved[i][0], short_name, slen) == 0) {
                fail(r, GB_UNIMPLEMENTED, "corral does not serve %s over gRPC: %s", unserved[i][0], unserved[i][1]);
                return;
            }
        size_t shown = len > 200 ? 200 : len;
        char m[201];
        for (size_t i = 0; i < shown; i++)
            m[i] = (unsigned char)name[i] < 0x20 || name[i] == 0x7f ? '?' : name[i];
        m[shown] = 0;
        fail(r, GB_UNIMPLEMENTED, "unknown method '%s': corral serves inference.GRPCInferenceService", m);
        return;
    }
    const char *denied = access_rpc_denied(auth, auth_len, r->m->health, r->m->management);
    if (denied) {
        fail(r, GB_UNAUTHENTICATED, "%s", denied);
        return;
    }
    gb_read(c);
}

static void on_message(gb_call *c, const uint8_t *msg, size_t len)
{
    rpc *r = gb_data(c);
    if (!msg) { /* the client has sent its last */
        r->half_closed = 1;
        if (r->m->stream)
            stream_pump(r);
        else if (!r->got_message)
            fail(r, GB_INVALID_ARGUMENT, "%s: the call carried no request message", r->m->name);
        return;
    }
    if (!r->m->stream && r->got_message)
        return;
    r->got_message = 1;
    ProtobufCMessage *in = protobuf_c_message_unpack(r->m->in, NULL, len, msg);
    if (!in) {
        if (!r->m->stream) {
            fail(r, GB_INVALID_ARGUMENT, "%s: the request is not a valid %s message (%zu bytes)", r->m->name,
                 r->m->in->name, len);
            return;
        }
        /* A stream answers it and goes on, as it does a request that fails. */
        Inference__ModelStreamInferResponse s = INFERENCE__MODEL_STREAM_INFER_RESPONSE__INIT;
        char m[200];
        snprintf(m, sizeof m, "the request is not a valid %s message (%zu bytes)", r->m->in->name, len);
        s.error_message = m;
        size_t n;
        uint8_t *buf = pb_pack(&s.base, &n);
        if (buf)
            gb_send(c, buf, n, 0, NULL, 0);
        stream_pump(r);
        return;
    }
    r->m->fn(r, in);
    if (r->m->stream)
        stream_pump(r);
}

static void on_sent(gb_call *c, void *arg, uint32_t n, int ok)
{
    (void)ok;
    rpc *r = gb_data(c);
    greq *g = arg;
    if (g) {
        if (n && g->job)
            inst_credit(g->job->inst, g->job, n); /* a chunk is credited back once the client's side took it */
        g->unsent--;
        if (g->done && g->unsent == 0)
            greq_free(g);
    }
    if (r && r->c && r->m && r->m->stream)
        stream_pump(r);
}

static void on_end(gb_call *c, int cancelled)
{
    (void)cancelled;
    rpc *r = gb_data(c);
    r->c = NULL;
    /* requests still running: their workers are told to CANCEL, their answers dropped */
    for (greq *g = r->reqs, *next; g; g = next) {
        next = g->next;
        greq_release(g);
        g->r = NULL;
        greq_free(g);
    }
    r->reqs = NULL;
    if (r->wmodel)
        model_forget_waiter(r->wmodel, &r->waiter);
    if (r->prev)
        r->prev->next = r->next;
    else
        G.rpcs = r->next;
    if (r->next)
        r->next->prev = r->prev;
    free(r);
}

int api_grpc_start(uv_loop_t *loop, const char *host, int port, size_t max_body)
{
    gb_handlers h = {.on_call = on_call, .on_message = on_message, .on_sent = on_sent, .on_end = on_end};
    int bound;
    char err[400];
    if (gb_start(loop, host, port, max_body, &h, &bound, err, sizeof err) < 0) {
        log_error("%s", err);
        return -1;
    }
    G.started = 1;
    log_info("listening on grpc://%s%s%s:%d", strchr(host, ':') ? "[" : "", host, strchr(host, ':') ? "]" : "",
             bound);
    return 0;
}

void api_grpc_drain(void)
{
    if (!G.started)
        return;
    G.draining = 1;
    gb_drain();
}

static void on_bridge_stopped(void)
{
    G.started = 0;
    void (*cb)(void) = G.on_stopped;
    G.on_stopped = NULL;
    if (cb)
        cb();
}

void api_grpc_stop(void (*on_stopped)(void))
{
    if (!G.started) {
        on_stopped();
        return;
    }
    /* Every request has its answer by now; streams end once theirs are out. */
    for (rpc *r = G.rpcs, *next; r; r = next) {
        next = r->next;
        if (r->m && r->m->stream && r->c) {
            r->stopping = 1;
            stream_pump(r);
        }
    }
    G.on_stopped = on_stopped;
    gb_stop(2000, on_bridge_stopped);
}
