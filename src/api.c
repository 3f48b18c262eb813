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

#include "access.h"
#include "dashboard.h"
#include "http.h"
#include "intake.h"
#include "log.h"
#include "metrics.h"
#include "openapi.h"
#include "sb.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

void api_release_job(api_pending *p)
{
    if (!p->job)
        return;
    if (model_cancel(p->job))
        job_free(p->job);
    else
        p->job->ctx = NULL; /* running: the worker's answer will be dropped */
    p->job = NULL;
}

static void pending_dispose(void *ptr)
{
    api_pending *p = ptr;
    p->req = NULL;
    api_release_job(p);
    if (p->waiting) {
        model_forget_waiter(p->model, &p->waiter);
        p->waiting = 0;
    }
    if (p->on_dispose)
        p->on_dispose(p);
}

api_pending *api_pending_new(h2o_req_t *req, model *m, size_t size)
{
    assert(size >= sizeof(api_pending));
    api_pending *p = h2o_mem_alloc_shared(&req->pool, size, pending_dispose);
    memset(p, 0, size);
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
    if (j->inst) {
        p->inst_id = j->inst->id;
        p->inst_pid = j->inst->pid;
    }
    j->result_broken = p->respond(p, j, status, msg, body, len);
}

/*
 * h2o does not read an HTTP/1 connection while its request is being
 * handled, so it learns that the client left only when it writes the
 * answer. A peek at the socket tells now: end of file or an error means
 * gone. HTTP/2 needs no peek: a reset stream disposes the request.
 */
static int client_alive(job *j)
{
    api_pending *p = j->ctx;
    if (!p || !p->req)
        return 0;
    h2o_req_t *req = p->req;
    if (req->version >= 0x200 || !req->conn->callbacks->get_socket)
        return 1;
    h2o_socket_t *sock = req->conn->callbacks->get_socket(req->conn);
    int fd = sock ? h2o_socket_get_fd(sock) : -1;
    if (fd < 0)
        return 1;
    char c;
    ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return n > 0 || (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR));
}

/* A chunk nobody will send on is credited back at once: the worker must not wait for its window. */
static void job_chunk_routed(job *j, const job_chunk *c)
{
    api_pending *p = j->ctx;
    if (!p || !p->on_chunk) {
        free(c->body);
        inst_credit(j->inst, j, c->cost);
        return;
    }
    p->on_chunk(p, j, c);
}

void api_submit(api_pending *p, job *j)
{
    char msg[1024];
    int retry_after = 1;
    j->on_done = job_done;
    j->on_chunk = job_chunk_routed;
    j->client_alive = client_alive;
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
        char msg[400];
        model_name_error(name.base, name.len, msg, sizeof msg);
        http_error(req, 400, 0, "%s", msg);
        return NULL;
    }
    model *m = model_find(name.base, name.len);
    if (!m)
        http_error(req, 404, 0, "unknown model '%.*s'", (int)name.len, name.base);
    return m;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/*
 * Splits the raw path ("/a/b%2Fc") into percent-decoded segments allocated
 * in pool. The raw path is used, not h2o's normalised one, so that "..",
 * "%2F" or "%00" inside a model name reach the name check (and get 400)
 * instead of being resolved into another path. Returns -1 on too many
 * segments, -2 on malformed percent-encoding.
 */
static int split_path(h2o_mem_pool_t *pool, h2o_iovec_t path, api_path *out)
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
        const char *raw = path.base + start;
        size_t len = i - start;
        if (!memchr(raw, '%', len)) {
            out->seg[out->n++] = h2o_iovec_init(raw, len);
            continue;
        }
        char *dec = h2o_mem_alloc_pool(pool, len);
        size_t n = 0;
        for (size_t k = 0; k < len; k++) {
            if (raw[k] != '%') {
                dec[n++] = raw[k];
                continue;
            }
            int hi = k + 2 < len ? hexval(raw[k + 1]) : -1, lo = k + 2 < len ? hexval(raw[k + 2]) : -1;
            if (hi < 0 || lo < 0)
                return -2;
            dec[n++] = (char)(hi << 4 | lo);
            k += 2;
        }
        out->seg[out->n++] = h2o_iovec_init(dec, n);
    }
    return 0;
}

/* GET /metrics: Prometheus' text exposition format, version 0.0.4. */
static int serve_metrics(h2o_req_t *req, const api_path *p)
{
    (void)p;
    /* Memory figures are the tick's, at most a second old: a pass over /proc
     * per scrape would cost more than the whole rendering. */
    sb out;
    sb_init(&out, 16384);
    metrics_render(&out);
    size_t len;
    char *text = sb_take(&out, &len);
    http_send_owned(req, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
    return 0;
}

static int serve_dashboard(h2o_req_t *req, const api_path *p)
{
    return dashboard_handle(req, p->seg, p->n);
}

/*
 * To add an endpoint: one line here (its path as docs/openapi.yaml writes
 * it, its methods, the module's handler, which routes on within its
 * module as before), and its operation in docs/openapi.yaml; the unit test
 * test_openapi and tests/openapi fail until both agree.
 */
static const api_route routes[] = {
    /* the hot path first: each entry tried costs a segment compare */
    {"/v2/models/{model_name}/infer", API_POST, api_v2},
    {"/v2/models/{model_name}/versions/{model_version}/infer", API_POST, api_v2},
    {"/", API_GET, serve_dashboard},
    {"/dashboard/{file}", API_GET, serve_dashboard},
    {"/metrics", API_GET, serve_metrics},
    {"/openapi.json", API_GET, openapi_serve},
    {"/openapi.yaml", API_GET, openapi_serve},
    {"/v2", API_GET, api_v2},
    {"/v2/health/live", API_GET, api_v2},
    {"/v2/health/ready", API_GET, api_v2},
    {"/v2/logging", API_GET | API_POST, api_v2},
    {"/v2/repository/index", API_POST, api_v2},
    {"/v2/repository/models/{model_name}/load", API_POST, api_v2},
    {"/v2/repository/models/{model_name}/unload", API_POST, api_v2},
    {"/v2/systemsharedmemory/status", API_GET, api_v2},
    {"/v2/systemsharedmemory/register", API_POST, api_v2},
    {"/v2/systemsharedmemory/unregister", API_POST, api_v2},
    {"/v2/systemsharedmemory/region/{region_name}/status", API_GET, api_v2},
    {"/v2/systemsharedmemory/region/{region_name}/register", API_POST, api_v2},
    {"/v2/systemsharedmemory/region/{region_name}/unregister", API_POST, api_v2},
    {"/v2/models/stats", API_GET, api_v2}, /* before /v2/models/{model_name} */
    {"/v2/models/{model_name}", API_GET, api_v2},
    {"/v2/models/{model_name}/versions/{model_version}", API_GET, api_v2},
    {"/v2/models/{model_name}/ready", API_GET, api_v2},
    {"/v2/models/{model_name}/versions/{model_version}/ready", API_GET, api_v2},
    {"/v2/models/{model_name}/config", API_GET, api_v2},
    {"/v2/models/{model_name}/versions/{model_version}/config", API_GET, api_v2},
    {"/v2/models/{model_name}/stats", API_GET, api_v2},
    {"/v2/models/{model_name}/versions/{model_version}/stats", API_GET, api_v2},
    {"/v2/models/{model_name}/generate", API_POST, api_v2},
    {"/v2/models/{model_name}/versions/{model_version}/generate", API_POST, api_v2},
    {"/v2/models/{model_name}/generate_stream", API_POST, api_v2},
    {"/v2/models/{model_name}/versions/{model_version}/generate_stream", API_POST, api_v2},
    {"/v1/events", API_GET, api_v1},
    {"/v1/models", API_GET | API_POST, api_v1},
    {"/v1/models/pull", API_POST, api_v1}, /* before /v1/models/{model_name} */
    {"/v1/models/{model_name}", API_GET | API_DELETE, api_v1},
    {"/v1/models/{model_name}/generate", API_POST, api_v1},
    {"/v1/models/{model_name}/scale", API_POST, api_v1},
    {"/v1/models/{model_name}/logs", API_GET, api_v1},
    {"/v1/sessions", API_GET, api_v1},
    {"/v1/sessions/{session_id}", API_GET | API_PUT | API_PATCH | API_DELETE, api_v1},
};

const api_route *api_routes(size_t *n)
{
    *n = sizeof routes / sizeof routes[0];
    return routes;
}

/* Segment i of template t ("/a/{x}/b": 0 is "a"), *len long; NULL past its end. */
static const char *template_segment(const char *t, int i, size_t *len)
{
    for (;;) {
        if (*t != '/' || !t[1])
            return NULL;
        t++;
        const char *end = strchr(t, '/');
        *len = end ? (size_t)(end - t) : strlen(t);
        if (i-- == 0)
            return t;
        t += *len;
    }
}

/* Whether templates a and b have the same first n segments, as written. */
static int same_prefix(const char *a, const char *b, int n)
{
    for (int i = 0; i < n; i++) {
        size_t la, lb;
        const char *sa = template_segment(a, i, &la), *sb = template_segment(b, i, &lb);
        if (!sa || !sb || la != lb || memcmp(sa, sb, la) != 0)
            return 0;
    }
    return 1;
}

int api_model_name_reserved(const char *name, size_t len, char *why, size_t whylen)
{
    static const char param[] = "{model_name}";
    const size_t n = sizeof routes / sizeof routes[0];
    for (size_t i = 0; i < n; i++) {
        size_t sl;
        const char *s;
        for (int k = 0; (s = template_segment(routes[i].path, k, &sl)); k++) {
            if (*s == '{' || sl != len || memcmp(s, name, len) != 0) /* a literal segment only */
                continue;
            for (size_t j = 0; j < n; j++) {
                size_t pl;
                const char *p = template_segment(routes[j].path, k, &pl);
                if (p && pl == sizeof param - 1 && memcmp(p, param, pl) == 0 &&
                    same_prefix(routes[i].path, routes[j].path, k)) {
                    snprintf(why, whylen, "the name '%.*s' is reserved: %s is an endpoint of its own, so the "
                             "model's %s would never be reached", (int)len, name, routes[i].path, routes[j].path);
                    return 1;
                }
            }
        }
    }
    return 0;
}

/* Whether template t ("/a/{x}/b", "/" for none) matches seg[0..n). */
static int template_matches(const char *t, const h2o_iovec_t *seg, int n)
{
    int i = 0;
    while (*t == '/' && t[1]) {
        t++;
        const char *end = strchr(t, '/');
        size_t len = end ? (size_t)(end - t) : strlen(t);
        if (i == n || (*t != '{' && !h2o_memis(seg[i].base, seg[i].len, t, len)))
            return 0;
        i++;
        t += len;
    }
    return i == n;
}

const api_route *api_route_match(const h2o_iovec_t *seg, int n)
{
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
        if (template_matches(routes[i].path, seg, n))
            return &routes[i];
    return NULL;
}

static const char *const method_names[API_METHODS] = {"GET", "POST", "PUT", "PATCH", "DELETE"};

const char *api_method_name(unsigned bit)
{
    for (int i = 0; i < API_METHODS; i++)
        if (bit == 1u << i)
            return method_names[i];
    return NULL;
}

unsigned api_method_bit(const char *method, size_t len)
{
    if (h2o_memis(method, len, H2O_STRLIT("HEAD")))
        return API_GET;
    for (int i = 0; i < API_METHODS; i++)
        if (h2o_memis(method, len, method_names[i], strlen(method_names[i])))
            return 1u << i;
    return 0;
}

const char *api_route_allow(unsigned methods)
{
    /* Each combination written once, on first use: the table holds a handful. */
    static char allow[1 << API_METHODS][sizeof "GET, POST, PUT, PATCH, DELETE"];
    methods &= (1u << API_METHODS) - 1;
    char *out = allow[methods];
    if (!out[0]) {
        size_t n = 0;
        for (int i = 0; i < API_METHODS; i++)
            if (methods & 1u << i)
                n += (size_t)snprintf(out + n, sizeof allow[0] - n, "%s%s", n ? ", " : "", method_names[i]);
    }
    return out;
}

/* The request's path without its query. */
static h2o_iovec_t request_path(h2o_req_t *req)
{
    h2o_iovec_t path = req->path;
    if (req->query_at != SIZE_MAX)
        path.len = req->query_at;
    return path;
}

/* Routes a request that passed access_check, its body decoded; rc is split_path's for p. */
static void route(h2o_req_t *req, const api_path *p, int rc)
{
    const api_route *r = rc == 0 ? api_route_match(p->seg, p->n) : NULL;
    if (r) {
        if (!(r->methods & api_method_bit(req->method.base, req->method.len))) {
            http_method_not_allowed(req, api_route_allow(r->methods));
            return;
        }
        if (r->handler(req, p) == 0)
            return;
    }
    h2o_iovec_t path = request_path(req);
    http_error(req, 404, 0, "no such endpoint: %.*s %.*s", (int)req->method.len, req->method.base,
               (int)(path.len > 200 ? 200 : path.len), path.base);
}

/* A compressed body is decoded (http_decode_body): the path is split again, as api_handle split it. */
static void on_body_decoded(h2o_req_t *req)
{
    api_path p;
    int rc = split_path(&req->pool, request_path(req), &p);
    route(req, &p, rc);
}

int api_handle(h2o_handler_t *self, h2o_req_t *req)
{
    (void)self;
    intake_request_started(req); /* an HTTP/2 body's charge ends with the request */
    api_path p;
    int rc = split_path(&req->pool, request_path(req), &p);
    if (access_check(req, p.seg, p.n) < 0) /* before anything else answers */
        return 0;
    if (rc == -2) {
        http_error(req, 400, 0, "malformed percent-encoding in the request path");
        return 0;
    }
    /* A gzip or deflate body is decoded on the thread pool first: every handler reads the decoded one. */
    if (http_decode_body(req, on_body_decoded) == 0)
        route(req, &p, rc);
    return 0;
}
