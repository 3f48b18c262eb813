/*
 * api — routing of HTTP requests to the v2 (KServe) and v1 (corral) handlers,
 * and what both share: tracking a request that waits on a job or a
 * lifecycle change while its client may go away.
 */
#ifndef CORRAL_API_H
#define CORRAL_API_H

#include "infer.h"
#include "model.h"
#include "job.h"

#include <h2o.h>

typedef struct api_pending api_pending;

/*
 * Builds the response once a job is done; req is still alive when called.
 * Returns 1 when the worker's 200 answer did not parse as its type requires
 * (the client got a 502; the instance is then replaced), else 0.
 */
typedef int (*api_respond_fn)(api_pending *p, int status, const char *msg, uint8_t *body, size_t len);

struct api_pending {
    h2o_req_t *req; /* NULL once h2o disposed the request (client gone) */
    model *model;   /* not owned */
    job *job;       /* queued or running on behalf of req; NULL when answered */
    api_respond_fn respond;
    lifecycle_waiter waiter;
    int waiting;    /* waiter is registered with model */
    int inst_id, inst_pid; /* the instance that answered, for messages about its answer */
    infer_opts opts; /* what the infer response needs */
    /* the result's tensor data when it came in shared memory: a reference
     * held until the response is sent (the pool is disposed) */
    struct shm_region *shm;
    const uint8_t *shm_data;
    size_t shm_len;
};

/* Allocated in req's pool; cleaned up when the pool is disposed. */
api_pending *api_pending_new(h2o_req_t *req, model *m);

/*
 * Submits a prepared job for p: on refusal answers the error and frees the
 * job. The job's done callback routes to p->respond.
 */
void api_submit(api_pending *p, job *j);

/* The h2o handler: every request enters here. */
int api_handle(h2o_handler_t *self, h2o_req_t *req);

/* Path segments after the version prefix; see api.c. */
typedef struct api_path {
    h2o_iovec_t seg[8];
    int n;
} api_path;

/* Whether segment i of p is the literal lit; whether req's method is lit. */
#define SEG_IS(p, i, lit) ((p)->n > (i) && h2o_memis((p)->seg[i].base, (p)->seg[i].len, H2O_STRLIT(lit)))
#define METHOD_IS(req, lit) h2o_memis((req)->method.base, (req)->method.len, H2O_STRLIT(lit))

/* Looks up a model by name, answering 400 (invalid name) or 404; NULL then. */
model *api_model_or_error(h2o_req_t *req, h2o_iovec_t name);

int api_v2(h2o_req_t *req, const api_path *p);
int api_v1(h2o_req_t *req, const api_path *p);

/* Whether the daemon is draining (set by server.c on SIGTERM). */
extern int api_draining;

#endif
