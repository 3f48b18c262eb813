/*
 * dashboard — serving the embedded page; see dashboard.h and
 * docs/observability.md.
 *
 * Every answer is revalidated (Cache-Control: no-cache) against an ETag of
 * its content: a daemon upgraded in place serves its new page at once, and
 * a reload costs three 304s. The page's own headers shut out what it does
 * not need: scripts, styles and fetches from this origin only, no frames
 * around it (its buttons load and unload models: no clickjacking), no
 * Referer carrying the daemon's address elsewhere.
 */
#include "dashboard.h"

#include "http.h"

#include <string.h>

static const char CSP[] = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                          "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const dashboard_asset *dashboard_find(const char *name, size_t len)
{
    for (size_t i = 0; i < dashboard_n_assets; i++)
        if (h2o_memis(name, len, dashboard_assets[i].name, strlen(dashboard_assets[i].name)))
            return &dashboard_assets[i];
    return NULL;
}

int dashboard_is_route(const h2o_iovec_t *seg, int n)
{
    return n == 0 || (n == 2 && h2o_memis(seg[0].base, seg[0].len, H2O_STRLIT("dashboard")));
}

/*
 * Whether If-None-Match names etag, or is "*". Its tags are quoted and
 * cannot hold a quote, so finding the quoted tag in the list is an exact
 * match of one element; a W/ prefix matches too, as the weak comparison
 * If-None-Match uses requires.
 */
static int etag_matches(h2o_req_t *req, const char *etag)
{
    const h2o_iovec_t *v = http_header(req, "if-none-match");
    if (!v)
        return 0;
    h2o_iovec_t t = h2o_str_stripws(v->base, v->len);
    return h2o_memis(t.base, t.len, H2O_STRLIT("*")) || memmem(v->base, v->len, etag, strlen(etag)) != NULL;
}

/* name: lower case, a literal (h2o keeps the pointer). */
static void add_header(h2o_req_t *req, const char *name, const char *value)
{
    h2o_add_header_by_str(&req->pool, &req->res.headers, name, strlen(name), 0, NULL, value, strlen(value));
}

int dashboard_handle(h2o_req_t *req, const h2o_iovec_t *seg, int n)
{
    if (!dashboard_is_route(seg, n))
        return -1;
    if (!h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET")) &&
        !h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD"))) {
        http_method_not_allowed(req, "GET");
        return 0;
    }
    const dashboard_asset *a = n == 0 ? dashboard_find(H2O_STRLIT("index.html")) : dashboard_find(seg[1].base, seg[1].len);
    if (!a) {
        http_error(req, 404, 0, "the dashboard has no file '%.*s'", (int)(seg[1].len > 200 ? 200 : seg[1].len),
                   seg[1].base);
        return 0;
    }
    add_header(req, "etag", a->etag);
    add_header(req, "cache-control", "no-cache");
    add_header(req, "x-content-type-options", "nosniff");
    add_header(req, "content-security-policy", CSP);
    add_header(req, "referrer-policy", "no-referrer");
    if (etag_matches(req, a->etag)) {
        static h2o_generator_t generator = {NULL, NULL};
        req->res.status = 304;
        req->res.reason = "Not Modified";
        h2o_start_response(req, &generator);
        h2o_send(req, NULL, 0, H2O_SEND_STATE_FINAL);
        return 0;
    }
    http_send(req, 200, a->content_type, a->data, a->len);
    return 0;
}
