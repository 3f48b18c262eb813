/*
 * api_session — /v1/sessions: the context store over HTTP; see
 * api_session.h and docs/sessions.md.
 *
 * A JSON session (a body of application/json, or of no type) is parsed,
 * refused when it is not valid JSON, and stored as compact JSON text, so
 * it can be embedded verbatim in a worker frame; any other type is stored
 * as its bytes. A GET answers from the session's own memory, pinned until
 * the response is disposed: nothing is copied.
 */
#include "api_session.h"

#include "access.h"
#include "http.h"
#include "sb.h"
#include "session.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define ID_METHODS "GET, PUT, PATCH, DELETE" /* as the route table answers (api.c) */

/* ---- pure parts ---- */

json_t *session_merge_patch(json_t *target, const json_t *patch)
{
    if (!json_is_object(patch)) {
        json_decref(target);
        return json_incref((json_t *)patch);
    }
    if (!json_is_object(target)) {
        json_decref(target);
        target = json_object();
    }
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)patch, key, value) {
        if (json_is_null(value)) {
            json_object_del(target, key);
            continue;
        }
        json_t *current = json_object_get(target, key);
        json_object_set_new(target, key, session_merge_patch(json_incref(current), value));
    }
    return target;
}

void session_format_time(int64_t ms, char *out, size_t outlen)
{
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&s, &tm);
    char day[24];
    strftime(day, sizeof day, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, outlen, "%s.%03dZ", day, (int)(ms % 1000));
}

int64_t session_parse_ttl(const char *s, size_t len, int64_t max_ttl_s, char *msg, size_t msglen)
{
    int64_t v = 0;
    size_t i = 0;
    for (; i < len && s[i] >= '0' && s[i] <= '9' && v <= max_ttl_s; i++)
        v = v * 10 + (s[i] - '0');
    if (len == 0 || i < len || v < 1 || v > max_ttl_s) {
        char shown[64];
        snprintf(shown, sizeof shown, "%.*s%s", (int)(len > 40 ? 40 : len), s, len > 40 ? "..." : "");
        for (char *c = shown; *c; c++)
            if (*c < ' ' || *c > '~')
                *c = '?';
        snprintf(msg, msglen, "ttl '%s' must be a whole number of seconds from 1 to --session-max-ttl %lld", shown,
                 (long long)max_ttl_s);
        return -1;
    }
    return v;
}

/* ---- helpers ---- */

/* Seconds left before ms, rounded up: a live session never shows 0. */
static int64_t seconds_left(int64_t expires_ms)
{
    int64_t left = expires_ms - session_now_ms();
    return left <= 0 ? 0 : (left + 999) / 1000;
}

/* {"id","content_type","size","expires_at","expires_in"} of s. */
static void describe(sb *out, const session *s)
{
    char at[40];
    session_format_time(session_expires_ms(s), at, sizeof at);
    sb_adds(out, "{\"id\":");
    sb_json_str(out, session_id(s), strlen(session_id(s)));
    sb_adds(out, ",\"content_type\":");
    sb_json_str(out, session_content_type(s), strlen(session_content_type(s)));
    sb_adds(out, ",\"size\":");
    sb_u64(out, session_size(s));
    sb_adds(out, ",\"expires_at\":\"");
    sb_adds(out, at);
    sb_adds(out, "\",\"expires_in\":");
    sb_u64(out, (uint64_t)seconds_left(session_expires_ms(s)));
    sb_addc(out, '}');
}

static void send_described(h2o_req_t *req, int status, const session *s)
{
    sb out;
    sb_init(&out, 256);
    describe(&out, s);
    size_t len;
    char *text = sb_take(&out, &len);
    http_send_owned(req, status, "application/json", text, len);
}

/*
 * The request's ttl: the query's ttl=SECONDS, else the Session-TTL header,
 * else 0 (the default). Any other query parameter, or a ttl on a method
 * that writes nothing (writes is 0), is a 400. Returns -1 once answered.
 */
static int64_t request_ttl(h2o_req_t *req, int writes, const char *id)
{
    char msg[256];
    h2o_iovec_t ttl = {NULL, 0};
    if (req->query_at != SIZE_MAX) {
        const char *q = req->path.base + req->query_at + 1, *end = req->path.base + req->path.len;
        while (q < end) {
            const char *amp = memchr(q, '&', (size_t)(end - q));
            const char *stop = amp ? amp : end;
            if (stop > q) {
                if (stop - q >= 4 && memcmp(q, "ttl=", 4) == 0 && !ttl.base) {
                    ttl = h2o_iovec_init(q + 4, (size_t)(stop - q - 4));
                } else {
                    const char *eq = memchr(q, '=', (size_t)(stop - q));
                    size_t n = (size_t)((eq ? eq : stop) - q);
                    http_error(req, 400, 0, "session '%s': %s query parameter '%.*s'%s", id,
                               n == 3 && memcmp(q, "ttl", 3) == 0 ? "a repeated or empty" : "unknown",
                               (int)(n > 64 ? 64 : n), q, writes ? " (sessions take ttl=SECONDS)" : "");
                    return -1;
                }
            }
            q = stop + 1;
        }
    }
    const h2o_iovec_t *header = http_header(req, "session-ttl");
    if (!ttl.base && header)
        ttl = *header;
    if (!ttl.base)
        return 0;
    if (!writes) {
        http_error(req, 400, 0, "session '%s': a ttl applies to PUT and PATCH only", id);
        return -1;
    }
    int64_t v = session_parse_ttl(ttl.base, ttl.len, session_store_config()->max_ttl_s, msg, sizeof msg);
    if (v < 0) {
        http_error(req, 400, 0, "session '%s': %s", id, msg);
        return -1;
    }
    return v;
}

/* The media type of the request's Content-Type; *present 0 when it has none. */
static h2o_iovec_t media_type(h2o_req_t *req, h2o_iovec_t *whole, int *present)
{
    const h2o_iovec_t *ct = http_header(req, "content-type");
    *present = ct != NULL;
    if (!ct)
        return h2o_iovec_init(NULL, 0);
    const char *type;
    size_t type_len;
    access_body_kind_of(ct->base, ct->len, &type, &type_len);
    /* the whole value, trimmed */
    size_t start = 0, end = ct->len;
    while (start < end && (ct->base[start] == ' ' || ct->base[start] == '\t'))
        start++;
    while (end > start && (ct->base[end - 1] == ' ' || ct->base[end - 1] == '\t'))
        end--;
    *whole = h2o_iovec_init(ct->base + start, end - start);
    return h2o_iovec_init(type, type_len);
}

static int type_is(h2o_iovec_t t, const char *lit)
{
    return t.len == strlen(lit) && strncasecmp(t.base, lit, t.len) == 0;
}

/* The body as a JSON value, answering 400 (and returning NULL) when it is not one. */
static json_t *parse_json_body(h2o_req_t *req, const char *id, const char *what)
{
    json_error_t err;
    json_t *v = json_loadb(req->entity.base ? req->entity.base : "", req->entity.len,
                           JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &err);
    if (!v)
        http_error(req, 400, 0, "session '%s': %s is not valid JSON: %s (line %d, column %d)", id, what, err.text,
                   err.line, err.column);
    return v;
}

/* Stores v (stolen) as session id's compact JSON text and answers as PUT does. */
static void put_json(h2o_req_t *req, const char *id, size_t idlen, json_t *v, int64_t ttl, int patch)
{
    char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(v);
    if (!text) {
        http_error(req, 500, 0, "session '%s': corral could not serialise its JSON", id);
        return;
    }
    char msg[512];
    int created;
    int rc = session_put(id, idlen, SESSION_JSON, (const uint8_t *)text, strlen(text), ttl, &created, msg, sizeof msg);
    free(text);
    if (rc) {
        http_error(req, rc, 0, "%s%s", msg, patch && rc == 413 ? " (the result of the merge)" : "");
        return;
    }
    send_described(req, created ? 201 : 200, session_find(id, idlen, 0));
}

/* ---- the endpoints ---- */

static void on_response_disposed(void *p)
{
    session_unpin(*(session **)p);
}

static void handle_get(h2o_req_t *req, session *s)
{
    session **holder = h2o_mem_alloc_shared(&req->pool, sizeof *holder, on_response_disposed);
    *holder = s;
    session_pin(s); /* its bytes are the response's until h2o is done with them */
    char at[40], left[24];
    session_format_time(session_expires_ms(s), at, sizeof at);
    int n = snprintf(left, sizeof left, "%lld", (long long)seconds_left(session_expires_ms(s)));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("session-expires"), 0, "Session-Expires",
                          h2o_strdup(&req->pool, at, strlen(at)).base, strlen(at));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("session-ttl"), 0, "Session-TTL",
                          h2o_strdup(&req->pool, left, (size_t)n).base, (size_t)n);
    http_send(req, 200, session_content_type(s), session_data(s), session_size(s));
}

static void handle_put(h2o_req_t *req, const char *id, size_t idlen)
{
    int64_t ttl = request_ttl(req, 1, id);
    if (ttl < 0)
        return;
    const session_config *cfg = session_store_config();
    if (req->entity.len > cfg->max_size) {
        http_error(req, 413, 0, "session '%s': %zu bytes is larger than --session-max-size %llu bytes", id,
                   req->entity.len, (unsigned long long)cfg->max_size);
        return;
    }
    h2o_iovec_t whole = {NULL, 0};
    int has_type;
    h2o_iovec_t type = media_type(req, &whole, &has_type);
    if (!has_type || session_type_is_json(type.base, type.len)) {
        json_t *v = parse_json_body(req, id, "the body");
        if (v)
            put_json(req, id, idlen, v, ttl, 0);
        return;
    }
    if (!session_content_type_valid(whole.base, whole.len)) {
        http_error(req, 400, 0, "session '%s': its Content-Type must be 1 to 255 bytes of printable ASCII", id);
        return;
    }
    char ct[256];
    memcpy(ct, whole.base, whole.len);
    ct[whole.len] = 0;
    char msg[512];
    int created;
    int rc = session_put(id, idlen, ct, (const uint8_t *)req->entity.base, req->entity.len, ttl, &created, msg,
                         sizeof msg);
    if (rc) {
        http_error(req, rc, 0, "%s", msg);
        return;
    }
    send_described(req, created ? 201 : 200, session_find(id, idlen, 0));
}

static void handle_patch(h2o_req_t *req, const char *id, size_t idlen)
{
    int64_t ttl = request_ttl(req, 1, id);
    if (ttl < 0)
        return;
    h2o_iovec_t whole;
    int has_type;
    h2o_iovec_t type = media_type(req, &whole, &has_type);
    if (has_type && !type_is(type, "application/merge-patch+json") && !session_type_is_json(type.base, type.len)) {
        http_error(req, 415, 0,
                   "session '%s': PATCH takes a JSON merge patch (RFC 7386) as application/merge-patch+json or "
                   "application/json, not '%.*s'",
                   id, (int)(type.len > 100 ? 100 : type.len), type.base);
        return;
    }
    session *s = session_find(id, idlen, 0);
    if (!s) {
        http_error(req, 404, 0, "no session '%s'", id);
        return;
    }
    if (!session_is_json(s)) {
        http_error(req, 409, 0, "session '%s' holds %s, not JSON: only a JSON session can be patched (PUT replaces it)",
                   id, session_content_type(s));
        return;
    }
    const session_config *cfg = session_store_config();
    if (req->entity.len > cfg->max_size) {
        http_error(req, 413, 0, "session '%s': a patch of %zu bytes is larger than --session-max-size %llu bytes", id,
                   req->entity.len, (unsigned long long)cfg->max_size);
        return;
    }
    json_t *patch = parse_json_body(req, id, "the patch");
    if (!patch)
        return;
    json_t *target = json_loadb((const char *)session_data(s), session_size(s), JSON_DECODE_ANY, NULL);
    json_t *merged = session_merge_patch(target, patch);
    json_decref(patch);
    put_json(req, id, idlen, merged, ttl, 1);
}

static void handle_id(h2o_req_t *req, h2o_iovec_t seg)
{
    int get = METHOD_IS(req, "GET") || METHOD_IS(req, "HEAD"), put = METHOD_IS(req, "PUT");
    int patch = METHOD_IS(req, "PATCH"), del = METHOD_IS(req, "DELETE");
    if (!get && !put && !patch && !del) {
        http_method_not_allowed(req, ID_METHODS);
        return;
    }
    char why[256];
    if (!session_id_valid(seg.base, seg.len, why, sizeof why)) {
        http_error(req, 400, 0, "%s", why);
        return;
    }
    char id[129];
    memcpy(id, seg.base, seg.len);
    id[seg.len] = 0;
    if (put) {
        handle_put(req, id, seg.len);
        return;
    }
    if (patch) {
        handle_patch(req, id, seg.len);
        return;
    }
    if (request_ttl(req, 0, id) < 0)
        return;
    session *s = session_find(id, seg.len, 0);
    if (!s && del && session_restoring()) {
        /* the state file may hold it, not yet read: the store remembers the delete, so it is not restored */
        if (session_delete(id, seg.len) == 503)
            http_error(req, 503, 0, "session '%s': the state file's sessions are still being read and too many "
                                    "sessions have changed meanwhile; try again once they are restored", id);
        else
            http_error(req, 404, 0, "no session '%s' (the state file's sessions are still being read; "
                                    "it will not be restored)", id);
        return;
    }
    if (!s) {
        http_error(req, 404, 0, "no session '%s'", id);
        return;
    }
    if (get) {
        handle_get(req, s);
        return;
    }
    session_delete(id, seg.len);
    sb out;
    sb_init(&out, 64);
    sb_adds(&out, "{\"id\":");
    sb_json_str(&out, id, seg.len);
    sb_addc(&out, '}');
    size_t len;
    char *text = sb_take(&out, &len);
    http_send_owned(req, 200, "application/json", text, len);
}

typedef struct listing {
    sb *out;
    size_t n;
} listing;

static void on_listed(const session *s, void *ctx)
{
    listing *l = ctx;
    if (l->n++)
        sb_addc(l->out, ',');
    describe(l->out, s);
}

static void handle_list(h2o_req_t *req)
{
    if (!METHOD_IS(req, "GET") && !METHOD_IS(req, "HEAD")) {
        http_method_not_allowed(req, "GET");
        return;
    }
    if (req->query_at != SIZE_MAX && req->query_at + 1 < req->path.len) {
        http_error(req, 400, 0, "GET /v1/sessions takes no query parameters");
        return;
    }
    session_stats st;
    session_stats_get(&st);
    sb out;
    sb_init(&out, 128 + (size_t)st.count * 128);
    sb_adds(&out, "{\"sessions\":[");
    listing l = {&out, 0};
    session_list(on_listed, &l);
    session_stats_get(&st); /* the list collected the expired */
    const session_config *cfg = session_store_config();
    sb_adds(&out, "],\"count\":");
    sb_u64(&out, st.count);
    sb_adds(&out, ",\"bytes\":");
    sb_u64(&out, st.bytes);
    sb_adds(&out, ",\"retained_bytes\":");
    sb_u64(&out, st.retained);
    sb_adds(&out, ",\"memory\":");
    sb_u64(&out, cfg->memory);
    sb_adds(&out, ",\"max_size\":");
    sb_u64(&out, cfg->max_size);
    sb_addc(&out, '}');
    size_t len;
    char *text = sb_take(&out, &len);
    http_send_owned(req, 200, "application/json", text, len);
}

int api_sessions(h2o_req_t *req, const api_path *p)
{
    if (p->n == 2)
        handle_list(req);
    else if (p->n == 3)
        handle_id(req, p->seg[2]);
    else
        return -1;
    return 0;
}
