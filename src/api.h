/*
 * api — routing of HTTP requests to the v2 (KServe) and v1 (corral) handlers,
 * and what both share: tracking a request that waits on a job or a
 * lifecycle change while its client may go away.
 */
#ifndef CORRAL_API_H
#define CORRAL_API_H

#include "job.h"
#include "model.h"

#include <h2o.h>

typedef struct api_pending api_pending;

/*
 * Builds the response once a job is done (j, with status, msg and the
 * worker's body as job_on_done_fn gives them); req is still alive when
 * called. Returns 1 when the worker's 200 answer did not parse as its type
 * requires (the client got a 502; the instance is then replaced), else 0.
 */
typedef int (*api_respond_fn)(api_pending *p, job *j, int status, const char *msg, uint8_t *body, size_t len);

/*
 * A request that waits on a job or a lifecycle change. An API file that
 * needs more per request embeds it first in a struct of its own (api_v2's
 * infer_pending) and passes that struct's size to api_pending_new.
 */
struct api_pending {
    h2o_req_t *req; /* NULL once h2o disposed the request (client gone) */
    model *model;   /* not owned */
    job *job;       /* queued or running on behalf of req; NULL when answered */
    api_respond_fn respond;
    void (*on_dispose)(api_pending *p); /* the embedding struct's cleanup, or NULL */
    /* A chunk of j's stream (job_chunk: the body is the callee's, its cost to credit back), or NULL */
    void (*on_chunk)(api_pending *p, job *j, const job_chunk *c);
    lifecycle_waiter waiter;
    int waiting;    /* waiter is registered with model */
    int inst_id, inst_pid; /* the instance that answered, for messages about its answer */
};

/* size bytes (at least sizeof(api_pending)), zeroed, in req's pool; cleaned up when the pool is disposed. */
api_pending *api_pending_new(h2o_req_t *req, model *m, size_t size);

/*
 * Submits a prepared job for p: on refusal answers the error and frees the
 * job. The job's on_done callback routes to p->respond.
 */
void api_submit(api_pending *p, job *j);

/*
 * Lets go of p's job, if it has one: a queued job is withdrawn and freed; a
 * running one's worker is told to CANCEL (when it can be) and its answer,
 * chunks included, is dropped when it comes. For a client that left, and
 * for a handler that answers its client before the job ends (the model's
 * answer does not fit the endpoint). p->job is NULL afterwards.
 */
void api_release_job(api_pending *p);

/* The h2o handler: every request enters here. */
int api_handle(h2o_handler_t *self, h2o_req_t *req);

/* Path segments after the version prefix; see api.c. */
typedef struct api_path {
    h2o_iovec_t seg[8];
    int n;
} api_path;

/*
 * The route table: every path the daemon serves, as an OpenAPI path
 * template ("{x}" matches one segment, any other segment itself), the
 * methods it answers (GET also answers HEAD) and the module's handler.
 * api_handle dispatches only through it: a path no entry matches is a 404,
 * a method the first matching entry lacks a 405 naming its methods, both
 * before any model is looked up. The handler then does the rest (model
 * lookup, body). docs/openapi.yaml documents exactly these paths and
 * methods (tests/unit/test_openapi.c compares the two). Entries are tried
 * in order; a literal that shadows a template comes first
 * ("/v1/models/pull" before "/v1/models/{model_name}").
 */
enum { API_GET = 1, API_POST = 2, API_PUT = 4, API_PATCH = 8, API_DELETE = 16 };
#define API_METHODS 5 /* the bits above */
typedef int (*api_route_fn)(h2o_req_t *req, const api_path *p); /* -1: not served (a 404) */
typedef struct api_route {
    const char *path;     /* "/v2/models/{model_name}/infer" */
    unsigned methods;     /* API_GET | API_POST | ... */
    api_route_fn handler;
} api_route;

/* The table, *n entries; static data. */
const api_route *api_routes(size_t *n);
/* The first entry whose template matches the path seg[0..n), or NULL. Pure. */
const api_route *api_route_match(const h2o_iovec_t *seg, int n);
/* An entry's methods as an Allow header says them ("GET, POST"), in the order of the bits; static. */
const char *api_route_allow(unsigned methods);
/* The method's bit (HEAD is GET's), or 0 for a method no route takes. */
unsigned api_method_bit(const char *method, size_t len);
/* The name of one method bit, upper case ("GET"), or NULL. */
const char *api_method_name(unsigned bit);
/*
 * Whether a model may not be named name (len bytes): it is a literal
 * segment of a route at the place where another route with the same
 * segments before it takes {model_name} (/v1/models/pull, /v2/models/stats),
 * so that route would never reach the model. 1 with why naming both
 * routes, else 0 (why untouched). Pure; derived from the table.
 */
int api_model_name_reserved(const char *name, size_t len, char *why, size_t whylen);

/* Whether segment i of p is the literal lit; whether req's method is lit. */
#define SEG_IS(p, i, lit) ((p)->n > (i) && h2o_memis((p)->seg[i].base, (p)->seg[i].len, H2O_STRLIT(lit)))
#define METHOD_IS(req, lit) h2o_memis((req)->method.base, (req)->method.len, H2O_STRLIT(lit))

/* Looks up a model by name, answering 400 (invalid name) or 404; NULL then. */
model *api_model_or_error(h2o_req_t *req, h2o_iovec_t name);

int api_v2(h2o_req_t *req, const api_path *p);

/* What both doors of the v2 protocol (HTTP here, gRPC in api_grpc.c) share. */
/* The extensions GET /v2 and gRPC's ServerMetadata list, NULL-terminated. */
extern const char *const api_v2_extensions[];
/* The repository index as GET /v2/repository/index answers it (the caller rescans first). */
json_t *api_repository_index(int ready_only);
/*
 * A load's options (root: the body, NULL when empty): *instances (0:
 * absent) and *config (a new object, or NULL). Returns 0, or -1 with the
 * 400's message in err. api_unload_options likewise for an unload.
 */
int api_load_options(json_t *root, const char *model, int *instances, json_t **config, char *err, size_t errlen);
int api_unload_options(json_t *root, const char *model, char *err, size_t errlen);
int api_v1(h2o_req_t *req, const api_path *p);

#endif
