/*
 * http — response helpers; see http.h.
 */
#include "http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *reason_phrase(int status)
{
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
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
    char *text = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    size_t len = strlen(text);
    http_send_owned(req, status, "application/json", text, len);
}

void http_error(h2o_req_t *req, int status, int retry_after, const char *fmt, ...)
{
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (status == 503) {
        char ra[16];
        int n = snprintf(ra, sizeof ra, "%d", retry_after > 0 ? retry_after : 1);
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL,
                       h2o_strdup(&req->pool, ra, (size_t)n).base, (size_t)n);
    }
    http_send_json(req, status, json_pack("{s:s}", "error", msg));
}
