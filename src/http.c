/*
 * http — response helpers; see http.h.
 */
#include "http.h"

#include "encoding.h"
#include "intake.h"
#include "log.h"
#include "manifest.h"
#include "sb.h"
#include "utf8.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *reason_phrase(int status)
{
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
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
    case 507: return "Insufficient Storage";
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

/* The coding the client's Accept-Encoding fields choose for a response of len bytes; identity without any. */
static enc_coding response_coding(h2o_req_t *req, size_t len)
{
    enc_accept a = ENC_ACCEPT_INIT;
    int seen = 0;
    for (ssize_t i = -1; (i = h2o_find_header(&req->headers, H2O_TOKEN_ACCEPT_ENCODING, i)) != -1; seen = 1)
        enc_accept_parse(&a, req->headers.entries[i].value.base, req->headers.entries[i].value.len);
    return seen ? enc_accept_choose(&a, len) : ENC_IDENTITY;
}

static void start_response(h2o_req_t *req, int status, const char *content_type, h2o_iovec_t *bufs, size_t n,
                           size_t total)
{
    static h2o_generator_t generator = {NULL, NULL};
    req->res.status = status;
    req->res.reason = reason_phrase(status);
    req->res.content_length = total;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, content_type, strlen(content_type));
    h2o_start_response(req, &generator);
    h2o_send(req, bufs, n, H2O_SEND_STATE_FINAL);
}

/* Marks a body compressed as c: Content-Encoding, and a strong ETag made weak (it named the uncompressed bytes). */
static void mark_encoded(h2o_req_t *req, enc_coding c)
{
    const char *name = enc_name(c);
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_ENCODING, NULL, name, strlen(name));
    ssize_t et = h2o_find_header_by_str(&req->res.headers, H2O_STRLIT("etag"), -1); /* a token or not */
    if (et < 0)
        return;
    h2o_iovec_t *v = &req->res.headers.entries[et].value;
    if (!(v->len >= 2 && v->base[0] == 'W'))
        *v = h2o_concat(&req->pool, h2o_iovec_init(H2O_STRLIT("W/")), *v);
}

/* "model 'NAME': " when the path is /v2/models/NAME/... or /v1/models/NAME/... with a valid NAME, else "". */
static void path_model_prefix(h2o_req_t *req, char *who, size_t size)
{
    const char *p = req->path.base, *end = req->path.base + req->path.len, *name = NULL;
    size_t name_len = 0;
    if (req->path.len > 11 && (memcmp(p, "/v2/models/", 11) == 0 || memcmp(p, "/v1/models/", 11) == 0)) {
        name = p + 11;
        while (name + name_len < end && name[name_len] != '/' && name[name_len] != '?')
            name_len++;
    }
    who[0] = 0;
    if (name_len && model_name_valid(name, name_len))
        snprintf(who, size, "model '%.*s': ", (int)name_len, name);
}

/* ---- content codings: inflating and compressing on the thread pool ---- */

/*
 * zlib inflates some hundreds of MB/s and compresses tens (level 1, data
 * that compresses poorly; docs/api.md has the figures): on the loop thread
 * a 64 MiB body would hold every other request up for a second or more.
 * So a compressed request body, and a response of at least
 * CODEC_ASYNC_MIN to be compressed, are worked on libuv's thread pool,
 * over a buffer of the work's own: h2o frees a request's memory when its
 * client resets an HTTP/2 stream, which may happen while the work runs.
 * A hook in the request's pool tells the work that its request is gone;
 * the result is then dropped. Smaller responses are compressed in place
 * (64 KiB take a millisecond or two at most). Every compressed request
 * body goes to the pool, however small: 16 KiB of gzip may inflate to
 * 16 MiB, and a hop costs some tens of microseconds.
 */
#define CODEC_ASYNC_MIN ((size_t)64 << 10)

typedef struct codec_work {
    uv_work_t uv;
    h2o_req_t *req;           /* NULL once h2o disposed it */
    struct codec_work **hook; /* in req's pool, pointing here; valid while req is */
    int decode;               /* 1: a request body, 0: a response */
    enc_coding codings[ENC_MAX_CODINGS];
    int n;                    /* decode: the codings in the order applied; a response: codings[0] */
    size_t max;               /* decode: --max-body */
    uint8_t *in, *out;        /* owned: the input's copy, the result */
    size_t in_len, out_len;
    int rc, failed;           /* 0 or an ENC_E_* value, and (decode) the coding that failed */
    char err[256];
    http_decoded_fn on_decoded; /* decode */
    const char *content_type;   /* a response's, in req's pool */
    int binary;                 /* a response that is not text: enc_encode's binary */
} codec_work;

static size_t max_body_limit; /* --max-body, from http_install_error_filter */

static void on_codec_req_disposed(void *p)
{
    codec_work **hook = p;
    if (*hook)
        (*hook)->req = NULL;
}

/* On the thread pool: nothing here touches the request or any daemon state. */
static void on_codec_work(uv_work_t *uv)
{
    codec_work *w = uv->data;
    if (!w->decode) {
        struct iovec v = {w->in, w->in_len};
        w->rc = enc_encode(w->codings[0], ENC_LEVEL, w->binary, &v, 1, &w->out, &w->out_len);
        return;
    }
    /* Codings are listed in the order they were applied: undone last first. */
    const uint8_t *body = w->in;
    size_t len = w->in_len;
    for (int k = w->n - 1; k >= 0; k--) {
        uint8_t *out;
        size_t out_len;
        w->rc = enc_decode(w->codings[k], body, len, w->max, &out, &out_len, w->err, sizeof w->err);
        free(w->out);
        w->out = NULL;
        if (w->rc < 0) {
            w->failed = k;
            return;
        }
        w->out = out;
        w->out_len = out_len;
        body = out;
        len = out_len;
    }
}

/* A work for req with a copy of len bytes at a, or NULL when memory for it cannot be had. */
static codec_work *codec_work_new(h2o_req_t *req, int decode, const h2o_iovec_t *bufs, size_t n, size_t len)
{
    codec_work *w = calloc(1, sizeof *w);
    uint8_t *copy = w ? malloc(len ? len : 1) : NULL;
    if (!copy) {
        free(w);
        return NULL;
    }
    for (size_t i = 0, off = 0; i < n; off += bufs[i].len, i++)
        memcpy(copy + off, bufs[i].base, bufs[i].len);
    w->uv.data = w;
    w->req = req;
    w->decode = decode;
    w->in = copy;
    w->in_len = len;
    return w;
}

static void codec_work_free(codec_work *w)
{
    free(w->in);
    free(w->out);
    free(w);
}

static void on_codec_done(uv_work_t *uv, int status)
{
    (void)status;
    codec_work *w = uv->data;
    h2o_req_t *req = w->req;
    if (!req) { /* the client left: its pool, and the hook with it, are gone */
        codec_work_free(w);
        return;
    }
    *w->hook = NULL;
    if (!w->decode) {
        h2o_iovec_t body;
        uint8_t **keep = w->rc == 0 ? &w->out : &w->in; /* no memory to compress it: the body goes as it is */
        if (w->rc == 0)
            mark_encoded(req, w->codings[0]);
        body = h2o_iovec_init(*keep, w->rc == 0 ? w->out_len : w->in_len);
        http_own(req, *keep);
        *keep = NULL;
        start_response(req, 200, w->content_type, &body, 1, body.len);
        codec_work_free(w);
        return;
    }
    if (w->rc < 0) {
        char who[160];
        path_model_prefix(req, who, sizeof who);
        if (w->rc == ENC_E_TOO_LARGE)
            http_error(req, 413, 0,
                       "%srequest body is larger than the daemon's limit (--max-body %zu bytes) once decoded from %s",
                       who, w->max, enc_name(w->codings[w->failed]));
        else if (w->rc == ENC_E_NOMEM)
            http_error(req, 503, 1, "%s%s", who, w->err);
        else
            http_error(req, 400, 0, "%s%s", who, w->err);
        codec_work_free(w);
        return;
    }
    size_t held, cap;
    if (intake_hold(req, w->out_len, &held, &cap) < 0) {
        char who[160];
        path_model_prefix(req, who, sizeof who);
        http_error(req, 503, 1,
                   "%sthe daemon holds %zu bytes of request bodies and this one, decoded to %zu bytes, would pass its "
                   "limit (--max-inflight-body %zu bytes); retry later",
                   who, held, w->out_len, cap);
        codec_work_free(w);
        return;
    }
    http_own(req, w->out);
    req->entity = h2o_iovec_init(w->out, w->out_len);
    w->out = NULL;
    http_decoded_fn on_decoded = w->on_decoded;
    codec_work_free(w);
    on_decoded(req);
}

/* Hands w to the thread pool; 0, or a libuv error (w is then freed). */
static int codec_queue(h2o_req_t *req, codec_work *w)
{
    w->hook = h2o_mem_alloc_shared(&req->pool, sizeof *w->hook, on_codec_req_disposed);
    *w->hook = w;
    int rc = uv_queue_work(req->conn->ctx->loop, &w->uv, on_codec_work, on_codec_done);
    if (rc < 0) {
        *w->hook = NULL;
        codec_work_free(w);
    }
    return rc;
}

/* Whether a content type is text (JSON, SSE, Prometheus' exposition, HTML, ...) rather than bytes (tensors, audio). */
static int is_text(const char *content_type)
{
    return strncmp(content_type, "text/", 5) == 0 || strstr(content_type, "json") || strstr(content_type, "xml") ||
           strstr(content_type, "javascript");
}

/*
 * A 200's body compressed as the client asked, in place of bufs (*one then
 * holds it, freed with the request). Returns 1 when the work went to the
 * thread pool, which sends the response. Errors are left alone: Triton's
 * client reads an error's body without decoding it.
 */
static int compress_response(h2o_req_t *req, const char *content_type, h2o_iovec_t **bufs, size_t *n, size_t *total,
                             h2o_iovec_t *one)
{
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_VARY, NULL, H2O_STRLIT("Accept-Encoding"));
    enc_coding c = *total ? response_coding(req, *total) : ENC_IDENTITY;
    if (c == ENC_IDENTITY)
        return 0;
    int binary = !is_text(content_type);
    if (*total >= CODEC_ASYNC_MIN) {
        /* the model chose the size: a copy that cannot be had means the body goes uncompressed */
        codec_work *w = codec_work_new(req, 0, *bufs, *n, *total);
        if (!w)
            return 0;
        w->codings[0] = c;
        w->n = 1;
        w->content_type = h2o_strdup(&req->pool, content_type, SIZE_MAX).base;
        w->binary = binary;
        return codec_queue(req, w) == 0;
    }
    struct iovec *in = h2o_mem_alloc_pool(&req->pool, *n * sizeof *in);
    for (size_t i = 0; i < *n; i++)
        in[i] = (struct iovec){(*bufs)[i].base, (*bufs)[i].len};
    uint8_t *out;
    size_t out_len;
    if (enc_encode(c, ENC_LEVEL, binary, in, *n, &out, &out_len) < 0)
        return 0;
    http_own(req, out);
    *one = h2o_iovec_init(out, out_len);
    *bufs = one;
    *n = 1;
    *total = out_len;
    mark_encoded(req, c);
    return 0;
}

int http_decode_body(h2o_req_t *req, http_decoded_fn on_decoded)
{
    enc_coding codings[ENC_MAX_CODINGS];
    int n = 0;
    char who[160];
    for (ssize_t i = -1; (i = h2o_find_header(&req->headers, H2O_TOKEN_CONTENT_ENCODING, i)) != -1;) {
        const char *bad = NULL;
        size_t bad_len = 0;
        int rc = enc_parse_content_encoding(req->headers.entries[i].value.base, req->headers.entries[i].value.len,
                                            codings, &n, &bad, &bad_len);
        if (rc == 0)
            continue;
        /* RFC 9110 section 15.5.16: a 415 for a coding says which would have been accepted */
        path_model_prefix(req, who, sizeof who);
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ACCEPT_ENCODING, NULL, H2O_STRLIT("gzip, deflate"));
        if (rc == ENC_E_UNSUPPORTED)
            http_error(req, 415, 0,
                       "%sunsupported Content-Encoding '%.*s%s': corral decodes gzip, deflate and identity", who,
                       (int)(bad_len > 64 ? 64 : bad_len), bad, bad_len > 64 ? "..." : "");
        else
            http_error(req, 415, 0, "%sContent-Encoding lists more than %d codings", who, ENC_MAX_CODINGS);
        return -1;
    }
    if (n == 0 || req->entity.len == 0)
        return 0;
    codec_work *w = codec_work_new(req, 1, &req->entity, 1, req->entity.len);
    if (!w) {
        path_model_prefix(req, who, sizeof who);
        http_error(req, 503, 1, "%sno memory to decode the request body (%zu bytes)", who, req->entity.len);
        return -1;
    }
    memcpy(w->codings, codings, sizeof codings);
    w->n = n;
    w->max = max_body_limit;
    w->on_decoded = on_decoded;
    int rc = codec_queue(req, w);
    if (rc < 0) {
        http_error(req, 503, 1, "cannot queue the request body's decoding: %s", uv_strerror(rc));
        return -1;
    }
    return 1;
}

void http_sendv(h2o_req_t *req, int status, const char *content_type, h2o_iovec_t *bufs, size_t n)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += bufs[i].len;
    h2o_iovec_t compressed;
    if (status == 200 && compress_response(req, content_type, &bufs, &n, &total, &compressed))
        return;
    start_response(req, status, content_type, bufs, n, total);
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
            size_t held, cap;
            char who[160];
            path_model_prefix(req, who, sizeof who);
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
