/*
 * http — response helpers over h2o shared by the API handlers.
 *
 * Every response here is complete (content-length set, one h2o_send with
 * H2O_SEND_STATE_FINAL). A 200 is compressed when the client's
 * Accept-Encoding asks for gzip or deflate (encoding.h: above 1 KiB) and
 * carries Vary: Accept-Encoding; streams (generate.c, events.c) are not. Buffers handed to http_send_owned are freed when
 * h2o disposes the request's pool, so a body built elsewhere (a worker's
 * result frame) is sent without copying.
 */
#ifndef CORRAL_HTTP_H
#define CORRAL_HTTP_H

#include <h2o.h>
#include <jansson.h>
#include <stdarg.h>

/* Sends body (which must stay valid until the request is disposed). */
void http_send(h2o_req_t *req, int status, const char *content_type, const void *body, size_t len);
/* Like http_send, but body is malloc'ed and freed with the request. */
void http_send_owned(h2o_req_t *req, int status, const char *content_type, void *body, size_t len);
/* Sends iovecs (their memory tied to the request's lifetime by the caller). */
void http_sendv(h2o_req_t *req, int status, const char *content_type, h2o_iovec_t *bufs, size_t n);
/* Serialises obj (reference stolen) and sends it as application/json. */
void http_send_json(h2o_req_t *req, int status, json_t *obj);
/*
 * {"error": "..."}; a 503 carries Retry-After (retry_after seconds, at least
 * 1). The message may hold any bytes (a client's path, a worker's text): it
 * is cut at a character boundary past 2 KiB and escaped by sb_json_str, so
 * the answer is valid JSON whatever it echoes.
 */
void http_error(h2o_req_t *req, int status, int retry_after, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* The body http_error sends, malloc'ed (for errors sent by other paths). */
char *http_error_text(size_t *len, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
char *http_error_vtext(size_t *len, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
/* 405 with an Allow header naming the method to use. */
void http_method_not_allowed(h2o_req_t *req, const char *allowed);
/* Frees p (malloc'ed) when the request's pool is disposed. */
void http_own(h2o_req_t *req, void *p);
/* A request header's value by lower-case name, or NULL. */
const h2o_iovec_t *http_header(h2o_req_t *req, const char *name);

/* Called once req's body is decoded (req->entity holds the decoded body). */
typedef void (*http_decoded_fn)(h2o_req_t *req);

/*
 * Decodes req's body as its Content-Encoding fields say (gzip, deflate,
 * identity; see encoding.h), bounded by --max-body after decoding, and
 * puts the decoded body in req->entity (freed with the request), so every
 * handler reads it. Returns 0 when there is nothing to decode; 1 when the
 * decoding went to the thread pool: on_decoded is called with the decoded
 * body, or the body is refused there (400 for a corrupt or truncated
 * stream, 413 when it decodes past --max-body), or nothing happens if the
 * client left first; -1 once it has answered (415 naming an unsupported
 * coding, 503 without memory for it).
 */
int http_decode_body(h2o_req_t *req, http_decoded_fn on_decoded);

/*
 * Installs the filter that rewrites h2o's own text/plain error answers (413
 * over --max-body, 400 unparsable request) as {"error": ...} JSON, and
 * keeps a HEAD answer's body off an HTTP/2 stream.
 */
void http_install_error_filter(h2o_pathconf_t *pathconf, size_t max_body);

#endif
