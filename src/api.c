/*
 * api — routing and the per-request bookkeeping shared by api_v2.c and
 * api_v1.c; see api.h.
 *
 * A request that waits (on a job, or on a load/unload) owns an api_pending
 * allocated in h2o's request pool with a dispose hook. When the client goes
 * away first, the hook withdraws a queued job, or detaches a running one so
 * that its late answer is dropped: h2o's request is never touched after it
 * is freed.
 */
#include "api.h"

#include "http.h"
#include "log.h"

#include <stdlib.h>
#include <string.h>

int api_draining;

static void pending_dispose(void *ptr)
{
    api_pending *p = ptr;
    p->req = NULL;
    if (p->job) {
        if (model_cancel(p->job))
            job_free(p->job);
        else
            p->job->ctx = NULL; /* running: the worker's answer will be dropped */
        p->job = NULL;
    }
    if (p->waiting) {
        model_forget_waiter(p->model, &p->waiter);
        p->waiting = 0;
    }
    json_decref(p->binary_outputs);
    p->binary_outputs = NULL;
}

api_pending *api_pending_new(h2o_req_t *req, model *m)
{
    api_pending *p = h2o_mem_alloc_shared(&req->pool, sizeof *p, pending_dispose);
    memset(p, 0, sizeof *p);
    p->req = req;
    p->model = m;
    return p;
}

static void job_done(job *j, int status, const char *msg, uint8_t type, uint8_t *body, size_t len)
{
    (void)type;
    api_pending *p = j->ctx;
    if (!p) {
        free(body);
        return;
    }
    p->job = NULL;
    p->respond(p, status, msg, body, len);
}

void api_submit(api_pending *p, job *j)
{
    char msg[1024];
    int retry_after = 1;
    j->done = job_done;
    j->ctx = p;
    p->job = j;
    int status = model_submit(p->model, j, msg, sizeof msg, &retry_after);
    if (status) {
        p->job = NULL;
        job_free(j);
        http_error(p->req, status, retry_after, "%s", msg);
    }
}

model *api_model_or_error(h2o_req_t *req, h2o_iovec_t name)
{
    if (!model_name_valid(name.base, name.len)) {
        http_error(req, 400, 0, "invalid model name '%.*s': names match [A-Za-z0-9][A-Za-z0-9._-]{0,127}",
                   (int)(name.len > 200 ? 200 : name.len), name.base);
        return NULL;
    }
    model *m = model_find(name.base, name.len);
    if (!m)
        http_error(req, 404, 0, "unknown model '%.*s'", (int)name.len, name.base);
    return m;
}

/* Splits "/a/b/c" into segments; returns -1 when there are too many. */
static int split_path(h2o_iovec_t path, api_path *out)
{
    out->n = 0;
    size_t i = 0;
    while (i < path.len) {
        while (i < path.len && path.base[i] == '/')
            i++;
        if (i >= path.len)
            break;
        size_t start = i;
        while (i < path.len && path.base[i] != '/')
            i++;
        if (out->n == (int)(sizeof out->seg / sizeof out->seg[0]))
            return -1;
        out->seg[out->n++] = h2o_iovec_init(path.base + start, i - start);
    }
    return 0;
}

int api_handle(h2o_handler_t *self, h2o_req_t *req)
{
    (void)self;
    api_path p;
    h2o_iovec_t path = req->path_normalized;
    if (split_path(path, &p) == 0 && p.n >= 1) {
        if (h2o_memis(p.seg[0].base, p.seg[0].len, H2O_STRLIT("v2")) && api_v2(req, &p) == 0)
            return 0;
        if (h2o_memis(p.seg[0].base, p.seg[0].len, H2O_STRLIT("v1")) && api_v1(req, &p) == 0)
            return 0;
    }
    http_error(req, 404, 0, "no such endpoint: %.*s %.*s", (int)req->method.len, req->method.base,
               (int)(path.len > 200 ? 200 : path.len), path.base);
    return 0;
}
