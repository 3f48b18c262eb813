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
#include "grpc_bridge.h"
#include "grpc_infer.h"
#include "infer.h"
#include "log.h"
#include "metrics.h"
#include "model.h"
#include "pbjson.h"
#include "proto.h"
#include "sb.h"
#include "sessreq.h"
#include "shm.h"
#include "utf8.h"
#include "xmalloc.h"

#include "grpc_service.pb-c.h"

#include <errno.h>
#include <stddef.h>
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
    gb_bytes *bytes;      /* the message being started, kept (on_message to start_infer) */
    rpc *next, *prev;
};

struct greq {
    rpc *r;               /* NULL once its call ended */
    job *job;             /* queued or running; NULL once answered */
    model *model;         /* NULL: the request named none that exists */
    Inference__ModelInferRequest *msg; /* owned: the job's tensor pieces point into it */
    gb_bytes *bytes;      /* the message as it came, which msg's raw_input_contents point into */
    grpc_request req;     /* the message read (grpc_infer.h) */
    infer_opts opts;      /* what its answer needs (infer.h) */
    uint8_t *gen_body;    /* a decoupled model's request, as its generate takes it; owned */
    char content_type[200]; /* of its stream of bytes: only the first chunk carries it */
    int done;             /* its final answer is queued */
    int unsent;           /* its messages queued, not yet through */
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
        char msg[400];
        model_name_error(name, n, msg, sizeof msg);
        fail(r, GB_INVALID_ARGUMENT, "%s", msg);
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

/* A load's and an unload's parameter entries are the same message under two names: repo_body reads both. */
_Static_assert(sizeof(Inference__RepositoryModelLoadRequest__ParametersEntry) ==
                       sizeof(Inference__RepositoryModelUnloadRequest__ParametersEntry) &&
                   offsetof(Inference__RepositoryModelLoadRequest__ParametersEntry, key) ==
                       offsetof(Inference__RepositoryModelUnloadRequest__ParametersEntry, key) &&
                   offsetof(Inference__RepositoryModelLoadRequest__ParametersEntry, value) ==
                       offsetof(Inference__RepositoryModelUnloadRequest__ParametersEntry, value),
               "the repository requests' parameter entries differ");

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

/* ---- inference ---- */

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
    grpc_request_clear(&g->req);
    grpc_free_request(g->msg);
    gb_release(g->bytes);
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

static const char *greq_model(const greq *g)
{
    return g->model ? model_name(g->model) : g->msg->model_name;
}

/* Queues a packed answer of g (buf NULL: there was no memory for it); final ends a unary call. */
static void greq_send(greq *g, uint8_t *buf, size_t len, int final, uint32_t credit)
{
    rpc *r = g->r;
    if (!r || !r->c) {
        free(buf);
        return;
    }
    if (!buf) {
        if (!r->m->stream)
            fail(r, GB_UNAVAILABLE, "model '%s': no memory now for the answer", greq_model(g));
        else
            log_warn("grpc: no memory for an answer of model '%s' on a stream", greq_model(g));
        return;
    }
    g->unsent++;
    gb_send(r->c, buf, len, !r->m->stream && final, g, credit);
}

/* Answers g with an error: the call's status (ModelInfer), or error_message on a stream, which goes on. */
static void greq_error(greq *g, int status, const char *msg)
{
    rpc *r = g->r;
    if (!r || !r->c)
        return;
    if (!r->m->stream) {
        fail(r, api_grpc_code(status), "%s", msg);
        return;
    }
    size_t len;
    uint8_t *buf = grpc_pack_stream_error(greq_model(g), g->msg->id, msg, &len);
    greq_send(g, buf, len, 0, 0);
}

/* grpc_infer.c's pieces are handed to the bridge as they are */
_Static_assert(sizeof(gb_part) == sizeof(job_piece) && offsetof(gb_part, ptr) == offsetof(job_piece, ptr) &&
                   offsetof(gb_part, len) == offsetof(job_piece, len),
               "gb_part and job_piece differ");

/* What a large answer sent in place holds until gRPC lets go of it: the worker's result, and its region. */
typedef struct lent {
    uint8_t *body;
    shm_region *shm;
} lent;

static void lent_release(void *arg)
{
    lent *l = arg;
    free(l->body);
    shm_unref(l->shm);
    free(l);
}

/*
 * An INFER_RESULT as the answer: every output's bytes in raw_output_contents,
 * sent from where they lie (the worker's frame or its output region) when
 * they are large, so the only copies are the kernel's; *body is then taken
 * (set to NULL). Returns 1 for a 502.
 */
static int answer_infer(greq *g, job *j, uint8_t **body, size_t len)
{
    infer_result res;
    char err[600];
    int status = infer_read_result(greq_model(g), &g->opts, *body, len, j->shm_data, j->shm_len, &res, err,
                                   sizeof err);
    if (status != 200) {
        char msg[800];
        if (status == 502)
            snprintf(msg, sizeof msg, "%s; instance %d (pid %d) is replaced", err, g->inst_id, g->inst_pid);
        else
            snprintf(msg, sizeof msg, "%s", err);
        sessreq_drop(j->sess); /* the client gets an error: the model's update is not stored */
        greq_error(g, status, msg);
        return status == 502;
    }
    int stream = g->r && g->r->m->stream;
    size_t total = 0;
    for (size_t i = 0; i < res.n; i++)
        total += res.out[i].shm ? 0 : res.out[i].size;
    /* classified outputs live in res itself, which goes now: those answers are small and copied */
    int in_place = total >= SHM_MIN_BYTES && !res.classified && g->r && g->r->c;
    if (in_place) {
        job_piece *parts = xmalloc(sizeof *parts * (1 + 2 * res.n));
        uint8_t *head;
        size_t head_len;
        int nparts;
        if (grpc_pack_result_parts(greq_model(g), g->msg->id, &res, stream, &head, &head_len, parts, &nparts) == 0) {
            lent *l = xmalloc(sizeof *l);
            l->body = *body;
            l->shm = j->shm; /* taken over: the region stays mapped (and is not lent again) until sent */
            j->shm = NULL;
            *body = NULL;
            g->unsent++;
            gb_send_parts(g->r->c, head, head_len, (const gb_part *)parts, nparts, lent_release, l, !stream, g, 0);
            free(parts);
            infer_result_clear(&res);
            return 0;
        }
        free(parts); /* no memory for the head: the copying path says so */
    }
    size_t n;
    uint8_t *buf = grpc_pack_result(greq_model(g), g->msg->id, &res, stream, &n);
    infer_result_clear(&res);
    greq_send(g, buf, n, 1, 0);
    return 0;
}

static void on_chunk(job *j, const job_chunk *c)
{
    greq *g = j->ctx;
    if (!g || !g->r || !g->r->c) { /* nobody sends it on: credited back at once */
        free(c->body);
        inst_credit(j->inst, j, c->cost);
        return;
    }
    if (c->first)
        snprintf(g->content_type, sizeof g->content_type, "%s", c->content_type);
    size_t n;
    uint8_t *buf = grpc_pack_generated(greq_model(g), g->msg->id, c->events, g->content_type, c->data, c->len, 0,
                                       g->opts.requested, &n);
    free(c->body);
    if (!buf) /* dropped: the worker's window comes back all the same */
        inst_credit(j->inst, j, c->cost);
    greq_send(g, buf, n, 0, c->cost); /* credited back once the client's side has taken it (on_sent) */
}

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
    size_t n = 0;
    if (status != 200) {
        greq_error(g, status, msg);
    } else if (type == PROTO_INFER_RESULT) {
        j->result_broken = answer_infer(g, j, &body, len);
    } else if (type == PROTO_GENERATE_RESULT) { /* a decoupled model's whole answer: one response, the final one */
        const char *meta, *ct = "application/octet-stream";
        size_t meta_len, data_len = 0;
        const uint8_t *data = NULL;
        json_t *m = NULL;
        if (proto_split_body(body, len, &meta, &meta_len, &data, &data_len) == 0 &&
            (m = json_loadb(meta, meta_len, 0, NULL)) && json_is_string(json_object_get(m, "content_type")))
            ct = json_string_value(json_object_get(m, "content_type"));
        int events = strncmp(ct, "application/json", 16) == 0;
        uint8_t *buf = grpc_pack_generated(greq_model(g), g->msg->id, events, ct, data ? data : (const uint8_t *)"",
                                           data_len, 1, g->opts.requested, &n);
        json_decref(m);
        greq_send(g, buf, n, 1, 0);
    } else if (g->req.empty_final) { /* END of a stream: Triton's empty final response, when asked for */
        uint8_t *buf = grpc_pack_generated(greq_model(g), g->msg->id, 0, NULL, NULL, 0, 1, g->opts.requested, &n);
        greq_send(g, buf, n, 1, 0);
    }
    free(body);
    greq_finished(g);
}

/*
 * Builds g's job: the request read into the v2 document (grpc_infer.c)
 * and parsed by infer.c as an HTTP request is; for a decoupled model, the
 * GENERATE its generate takes. Returns 0, or a status with the message.
 */
static int build_job(greq *g, rpc *r, model *m, job **out, char *err, size_t errlen)
{
    Inference__ModelInferRequest *in = g->msg;
    const manifest *mf = model_manifest(m);
    int decoupled = mf && mf->decoupled;
    if (decoupled && !r->m->stream) {
        snprintf(err, errlen, "model '%s' is decoupled (it streams its answers): ModelInfer takes one answer per "
                 "request; use ModelStreamInfer", model_name(m));
        return 400;
    }
    int status = grpc_request_read(in, model_name(m), &g->req, err, errlen);
    if (status)
        return status;
    job *j = job_new(m, PROTO_INFER, 0);
    infer_input ii = {.model = model_name(m),
                      .priority_levels = mf ? mf->priority_levels : 1,
                      .doc = g->req.doc,
                      .raw = g->req.pieces,
                      .nraw = g->req.npieces,
                      .max_batch_size = mf && !decoupled ? mf->max_batch_size : 0,
                      .inputs_decl = model_declared_inputs(m),
                      .outputs_decl = model_declared_outputs(m)}; /* a decoupled model's too, when declared */
    status = infer_parse_request(&ii, j, &g->opts, err, errlen);
    if (!status && g->opts.classify && model_labels(m, &g->opts.labels, err, errlen) < 0)
        status = 500;
    if (!status && decoupled) { /* checked as tensors: now the JSON object its generate takes */
        int priority = j->priority;
        uint64_t deadline = j->deadline_ms;
        sessreq *sess = j->sess; /* the session parameters.session named, pinned: the generate carries it */
        j->sess = NULL;
        job seqof = {0}; /* and its sequence, as Triton's generate takes one (docs/sessions.md) */
        job_move_sequence(&seqof, j);
        job_free(j);
        j = NULL;
        char *text, why[600];
        size_t text_len;
        status = grpc_generate_body(in, &g->req, &text, &text_len, why, sizeof why);
        if (status) {
            sessreq_free(sess);
            free(seqof.seq_str);
            snprintf(err, errlen, "model '%s': %s", model_name(m), why);
            return status;
        }
        g->gen_body = (uint8_t *)text;
        j = job_new(m, PROTO_GENERATE, priority);
        j->deadline_ms = deadline;
        j->stream = 1;
        j->sess = sess;
        j->sess_free = sessreq_free;
        job_move_sequence(j, &seqof);
        sb meta;
        sb_init(&meta, 96 + (sess ? sessreq_meta_size(sess) : 0));
        sb_addc(&meta, '{');
        if (sess) { /* first, as infer.c puts it (sessreq.h) */
            sessreq_meta(&meta, sess);
            sb_addc(&meta, ',');
        }
        sb_adds(&meta, "\"id\":\"\",\"content_type\":\"application/json\",\"stream\":true");
        infer_sequence_meta(&meta, j);
        sb_addc(&meta, '}');
        job_piece body = {g->gen_body, text_len};
        int rc = job_build_frame(j, meta.p, meta.len, &body, 1, NULL);
        sb_free(&meta);
        if (rc < 0) {
            snprintf(err, errlen, "model '%s': the request is %s", model_name(m),
                     rc == -EFBIG ? "larger than the worker protocol's 1 GiB frame limit" : "too large for memory now");
            status = rc == -EFBIG ? 413 : 503;
        }
    }
    if (status) {
        job_free(j);
        return status;
    }
    *out = j;
    return 0;
}

/* Starts one ModelInferRequest (taken). Every failure is answered: the call's status, or error_message on a stream. */
static void start_infer(rpc *r, Inference__ModelInferRequest *in)
{
    greq *g = xcalloc(1, sizeof *g);
    g->msg = in;
    g->bytes = r->bytes; /* what its raw contents point into */
    r->bytes = NULL;
    g->r = r;
    g->next = r->reqs;
    if (r->reqs)
        r->reqs->prev = g;
    r->reqs = g;
    r->nreqs++;
    char err[1024];
    int status;
    job *j = NULL;
    size_t nlen = strlen(in->model_name);
    model *m = model_name_valid(in->model_name, nlen) ? model_find(in->model_name, nlen) : NULL;
    g->model = m;
    if (!model_name_valid(in->model_name, nlen)) {
        status = 400;
        model_name_error(in->model_name, nlen, err, sizeof err);
    } else if (!m) {
        status = 404;
        snprintf(err, sizeof err, "unknown model '%s'", in->model_name);
    } else if (*in->model_version && strcmp(in->model_version, "1") != 0) {
        status = 404;
        snprintf(err, sizeof err, "model '%s' has no version '%.64s' (corral serves version 1)", model_name(m),
                 in->model_version);
    } else if (registry_draining()) {
        status = 503;
        snprintf(err, sizeof err, "model '%s': corral is shutting down", model_name(m));
    } else {
        status = build_job(g, r, m, &j, err, sizeof err);
    }
    if (status) {
        utf8_trim_partial(err);
        greq_error(g, status, err);
        greq_finished(g);
        return;
    }
    /* The call's deadline is the request's, unless parameters.timeout comes first. */
    if (r->deadline_ms && (!j->deadline_ms || r->deadline_ms < j->deadline_ms))
        j->deadline_ms = r->deadline_ms;
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
        char m[204];
        utf8_shown(name, len, m, sizeof m);
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
    /* An inference's raw tensors are used where they lie in the message (grpc_unpack_request, gb_keep): the
     * one copy is into the worker's shared memory. */
    int inference = r->m->fn == rpc_model_infer;
    ProtobufCMessage *in = inference ? (ProtobufCMessage *)grpc_unpack_request(msg, len)
                                     : protobuf_c_message_unpack(r->m->in, NULL, len, msg);
    if (in && inference && ((Inference__ModelInferRequest *)in)->n_raw_input_contents)
        r->bytes = gb_keep(c);
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

int api_grpc_start(uv_loop_t *loop, const char *host, int port, size_t max_body, size_t max_inflight)
{
    gb_handlers h = {.on_call = on_call, .on_message = on_message, .on_sent = on_sent, .on_end = on_end};
    int bound;
    char err[400];
    if (gb_start(loop, host, port, max_body, max_inflight, &h, &bound, err, sizeof err) < 0) {
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
