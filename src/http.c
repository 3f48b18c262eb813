/*
 * http — response helpers; see http.h.
 */
#include "http.h"

#include "intake.h"
#include "log.h"
#include "manifest.h"
#include "sb.h"
#include "utf8.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *reason_phrase(int status)
{
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 415: return "Unsupported Media Type";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Error";
    }
}

static void free_holder(void *p)
{
    free(*(void **)p);
}

void http_own(h2o_req_t *req, void *p)
{
    void **holder = h2o_mem_alloc_shared(&req->pool, sizeof *holder, free_holder);
    *holder = p;
}

const h2o_iovec_t *http_header(h2o_req_t *req, const char *name)
{
    ssize_t i = h2o_find_header_by_str(&req->headers, name, strlen(name), -1);
    return i < 0 ? NULL : &req->headers.entries[i].value;
}

void http_sendv(h2o_req_t *req, int status, const char *content_type, h2o_iovec_t *bufs, size_t n)
{
    static h2o_generator_t generator = {NULL, NULL};
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += bufs[i].len;
    req->res.status = status;
    req->res.reason = reason_phrase(status);
    req->res.content_length = total;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, content_type, strlen(content_type));
    h2o_start_response(req, &generator);
    h2o_send(req, bufs, n, H2O_SEND_STATE_FINAL);
}

void http_send(h2o_req_t *req, int status, const char *content_type, const void *body, size_t len)
{
    h2o_iovec_t buf = h2o_iovec_init(body, len);
    http_sendv(req, status, content_type, &buf, 1);
}

void http_send_owned(h2o_req_t *req, int status, const char *content_type, void *body, size_t len)
{
    http_own(req, body);
    http_send(req, status, content_type, body, len);
}

void http_send_json(h2o_req_t *req, int status, json_t *obj)
{
    /* Strings from outside reach jansson through utf8_json_string, so a
     * NULL here is a bug, not bad input: it must still not take the
     * daemon down, and the client still gets an answer. */
    char *text = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
    json_decref(obj);
    if (!text) {
        log_error("cannot serialise a %d response to %.*s (a string that is not UTF-8?)", status,
                  (int)(req->path.len > 200 ? 200 : req->path.len), req->path.base);
        http_error(req, 500, 0, "corral could not serialise its response");
        return;
    }
    http_send_owned(req, status, "application/json", text, strlen(text));
}

void http_method_not_allowed(h2o_req_t *req, const char *allowed)
{
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ALLOW, NULL, allowed, strlen(allowed));
    http_error(req, 405, 0, "method %.*s not allowed here; use %s", (int)req->method.len, req->method.base, allowed);
}

/* The longest error message; longer ones are cut at a character boundary and end in "...". */
#define ERROR_MAX 2048

char *http_error_vtext(size_t *len, const char *fmt, va_list ap)
{
    char msg[ERROR_MAX + 1];
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    size_t mlen = n < 0 ? 0 : (size_t)n;
    int cut = mlen > ERROR_MAX;
    if (cut)
        mlen = utf8_cut(msg, ERROR_MAX, ERROR_MAX - 3);
    sb b;
    sb_init(&b, mlen + 32);
    sb_adds(&b, "{\"error\":");
    if (cut)
        memcpy(msg + mlen, "...", 3);
    sb_json_str(&b, msg, mlen + (cut ? 3 : 0));
    sb_addc(&b, '}');
    return sb_take(&b, len);
}

char *http_error_text(size_t *len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *text = http_error_vtext(len, fmt, ap);
    va_end(ap);
    return text;
}

void http_error(h2o_req_t *req, int status, int retry_after, const char *fmt, ...)
{
    if (status == 503) {
        char ra[16];
        int n = snprintf(ra, sizeof ra, "%d", retry_after > 0 ? retry_after : 1);
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL,
                       h2o_strdup(&req->pool, ra, (size_t)n).base, (size_t)n);
    }
    va_list ap;
    va_start(ap, fmt);
    size_t len;
    char *text = http_error_vtext(&len, fmt, ap);
    va_end(ap);
    http_send_owned(req, status, "application/json", text, len);
}

/* ---- JSON bodies for the errors h2o answers itself ---- */

/*
 * h2o answers some errors before any handler runs (413 for a body over the
 * limit, 400 for a request it cannot parse) with a text/plain body. This
 * filter turns them into the {"error": ...} form every corral error has. A
 * 413 that intake caused (the request-body budget is spent; intake.h)
 * becomes 503 with Retry-After; when h2o closes the connection after its
 * answer, intake lingers so that a client still sending reads it.
 */
typedef struct error_ostream {
    h2o_ostream_t super;
    h2o_iovec_t json;
    int sent;
} error_ostream;

static size_t max_body_limit;

static void error_do_send(h2o_ostream_t *self, h2o_req_t *req, h2o_iovec_t *bufs, size_t bufcnt,
                          h2o_send_state_t state)
{
    error_ostream *o = (error_ostream *)self;
    (void)bufs;
    if (o->sent || bufcnt == 0) {
        h2o_ostream_send_next(self, req, NULL, 0, state);
        return;
    }
    o->sent = 1;
    h2o_ostream_send_next(self, req, &o->json, 1, state);
}

static void error_setup_ostream(h2o_filter_t *self, h2o_req_t *req, h2o_ostream_t **slot)
{
    (void)self;
    ssize_t ct = h2o_find_header(&req->res.headers, H2O_TOKEN_CONTENT_TYPE, -1);
    if (req->res.status >= 400 && ct >= 0 &&
        h2o_memis(req->res.headers.entries[ct].value.base, req->res.headers.entries[ct].value.len,
                  H2O_STRLIT("text/plain; charset=utf-8"))) {
        char msg[512];
        if (req->res.status == 413) {
            /* Name the model when the path has one: /v2/models/NAME/... or /v1/models/NAME/... */
            const char *p = req->path.base, *end = req->path.base + req->path.len, *name = NULL;
            size_t name_len = 0, held, cap;
            if (req->path.len > 11 && (memcmp(p, "/v2/models/", 11) == 0 || memcmp(p, "/v1/models/", 11) == 0)) {
                name = p + 11;
                while (name + name_len < end && name[name_len] != '/' && name[name_len] != '?')
                    name_len++;
            }
            char who[160] = "";
            if (name_len && model_name_valid(name, name_len))
                snprintf(who, sizeof who, "model '%.*s': ", (int)name_len, name);
            if (intake_refused(req, &held, &cap)) {
                /* h2o's 413 came from the budget, not from this body's size (see intake.h) */
                req->res.status = 503;
                req->res.reason = "Service Unavailable";
                h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL, H2O_STRLIT("1"));
                snprintf(msg, sizeof msg,
                         "%sthe daemon holds %zu bytes of request bodies and this one would pass its limit "
                         "(--max-inflight-body %zu bytes); retry later",
                         who, held, cap);
            } else
                snprintf(msg, sizeof msg, "%srequest body is larger than the daemon's limit (--max-body %zu bytes)", who,
                         max_body_limit);
        }
        else
            snprintf(msg, sizeof msg, "%s", req->res.reason ? req->res.reason : "error");
        size_t len;
        char *text = http_error_text(&len, "%s", msg);
        error_ostream *o = (error_ostream *)h2o_add_ostream(req, sizeof *o, slot);
        o->json = h2o_strdup(&req->pool, text, len);
        o->sent = 0;
        free(text);
        o->super.do_send = error_do_send;
        req->res.content_length = o->json.len;
        req->res.headers.entries[ct].value = h2o_iovec_init(H2O_STRLIT("application/json"));
        slot = &o->super.next;
        intake_linger(req); /* a client still sending its body reads this answer before the close */
    }
    h2o_setup_next_ostream(req, slot);
}

void http_install_error_filter(h2o_pathconf_t *pathconf, size_t max_body)
{
    max_body_limit = max_body;
    h2o_filter_t *f = h2o_create_filter(pathconf, sizeof *f);
    f->on_setup_ostream = error_setup_ostream;
}
