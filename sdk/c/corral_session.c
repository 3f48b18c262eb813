/*
 * corral_session.c — the session a request carries, and the update its
 * response answers with (corral_worker.h, "Sessions";
 * docs/worker-protocol.md, "Sessions").
 *
 * The meta's "session" is checked when the request is parsed: a malformed
 * one is the daemon's fault (a protocol error). A bytes session's base64 is
 * decoded then.
 *
 * Speed. jansson reads about 60 MB/s, so parsing a 4 KiB session with the
 * rest of the meta would cost a request some 70 µs. The daemon writes the
 * session as the meta's first member, in one fixed form
 * ({"session":{"id":"...","exists":...,"content_type":"...","json":VALUE}
 * or "base64":"..."}); corral__session_cut takes that member out of the
 * meta by hand (a scan for the value's end, about 1 GB/s) before jansson
 * sees the rest, keeps a JSON session's text as it is (what
 * corral_request_session returns), and parses it only when the model asks
 * for corral_request_session_json. A meta in any other form takes the
 * general path (corral__session_parse over the parsed meta).
 */
#include "corral_internal.h"

#include "base64.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define JSON_TYPE "application/json"

void corral__session_free(corral__session *s)
{
    if (!s)
        return;
    free(s->id);
    free(s->content_type);
    free(s->bytes);
    json_decref(s->json);
    free(s);
}

static corral__session *session_new(const char *id, size_t idlen, int exists, const char *ct, size_t ctlen)
{
    corral__session *s = calloc(1, sizeof *s);
    if (!s || !(s->id = strndup(id, idlen)) || (exists && !(s->content_type = strndup(ct, ctlen)))) {
        corral__session_free(s);
        return NULL;
    }
    s->exists = exists;
    return s;
}

/* Decodes n characters of base64 at b into s's bytes: 0, -EPROTO or -ENOMEM. */
static int take_base64(corral__session *s, const char *b, size_t n)
{
    if (!(s->bytes = malloc(n / 4 * 3 + 1)))
        return -ENOMEM;
    return base64_decode(b, n, s->bytes, &s->len) < 0 ? -EPROTO : 0;
}

int corral__session_parse(const json_t *raw, corral__session **out, const char **why)
{
    *out = NULL;
    if (!raw)
        return 0;
    const json_t *id = json_object_get(raw, "id"), *exists = json_object_get(raw, "exists");
    const json_t *ct = json_object_get(raw, "content_type"), *js = json_object_get(raw, "json");
    const json_t *b = json_object_get(raw, "base64");
    if (!json_is_object(raw) || !json_is_string(id) || !json_is_boolean(exists)) {
        *why = "'session' is not an object with a string 'id' and a boolean 'exists'";
        return -EPROTO;
    }
    if (json_is_true(exists) && (!json_is_string(ct) || (!js && !json_is_string(b)))) {
        *why = "a session that exists needs a string 'content_type' and 'json' or 'base64'";
        return -EPROTO;
    }
    corral__session *s = session_new(json_string_value(id), json_string_length(id), json_is_true(exists),
                                     json_string_value(ct), json_string_length(ct));
    if (!s)
        return -ENOMEM;
    int rc = 0;
    if (s->exists && js)
        s->json = json_incref((json_t *)js);
    else if (s->exists)
        rc = take_base64(s, json_string_value(b), json_string_length(b));
    if (rc < 0) {
        corral__session_free(s);
        *why = "the session's base64 is malformed";
        return rc;
    }
    *out = s;
    return 0;
}

/* ---- the fast path ---- */

/* Matches the literal lit at *p (within end); advances past it. */
static int lit(const char **p, const char *end, const char *l)
{
    size_t n = strlen(l);
    if ((size_t)(end - *p) < n || memcmp(*p, l, n) != 0)
        return 0;
    *p += n;
    return 1;
}

/* A string without escapes at *p (after its opening quote): its length, *p past the closing quote; -1 if not. */
static long plain_string(const char **p, const char *end)
{
    const char *q = memchr(*p, '"', (size_t)(end - *p));
    if (!q || memchr(*p, '\\', (size_t)(q - *p)))
        return -1;
    long n = q - *p;
    *p = q + 1;
    return n;
}

/* The end of the JSON value at p (its last byte + 1), or NULL when it does not end before end. */
static const char *value_end(const char *p, const char *end)
{
    int depth = 0;
    for (; p < end; p++) {
        char c = *p;
        if (c == '"') {
            for (p++; p < end && *p != '"'; p++)
                if (*p == '\\')
                    p++;
            if (p >= end)
                return NULL;
            if (depth == 0)
                return p + 1;
        } else if (c == '{' || c == '[') {
            depth++;
        } else if (c == '}' || c == ']') {
            if (--depth < 0)
                return NULL;
            if (depth == 0)
                return p + 1;
        } else if (depth == 0 && (c == ',' || c == ' ')) {
            return NULL; /* a scalar ends where its text does: the caller finds the '}' */
        } else if (depth == 0) {
            const char *q = p;
            while (q < end && *q != '}' && *q != ',' && *q != ']')
                q++;
            return q < end ? q : NULL;
        }
    }
    return NULL;
}

int corral__session_cut(char *meta, size_t *meta_len, corral__session **out)
{
    *out = NULL;
    const char *p = meta, *end = meta + *meta_len;
    if (!lit(&p, end, "{\"session\":{\"id\":\""))
        return 0;
    const char *id = p;
    long idlen = plain_string(&p, end);
    if (idlen < 0)
        return 0;
    int exists;
    if (lit(&p, end, ",\"exists\":false}"))
        exists = 0;
    else if (lit(&p, end, ",\"exists\":true,\"content_type\":\""))
        exists = 1;
    else
        return 0;
    const char *ct = p, *value = NULL, *value_stop = NULL;
    long ctlen = 0;
    int is_json = 0;
    if (exists) {
        if ((ctlen = plain_string(&p, end)) < 0)
            return 0;
        if (lit(&p, end, ",\"json\":")) {
            is_json = 1;
            value = p;
            if (!(value_stop = value_end(p, end)))
                return 0;
            p = value_stop;
        } else if (lit(&p, end, ",\"base64\":\"")) {
            value = p;
            long n = plain_string(&p, end);
            if (n < 0)
                return 0;
            value_stop = value + n;
        } else {
            return 0;
        }
        if (!lit(&p, end, "}"))
            return 0;
    }
    /* The member must be followed by another one or by the meta's end. */
    int more = lit(&p, end, ",");
    if (!more && !(p < end && *p == '}'))
        return 0;
    corral__session *s = session_new(id, (size_t)idlen, exists, ct, (size_t)ctlen);
    if (!s)
        return -ENOMEM;
    if (is_json) {
        size_t n = (size_t)(value_stop - value);
        if (!(s->bytes = malloc(n + 1))) {
            corral__session_free(s);
            return -ENOMEM;
        }
        memcpy(s->bytes, value, n);
        s->bytes[n] = 0;
        s->len = n;
        s->text_unparsed = 1;
    } else if (exists) {
        int rc = take_base64(s, value, (size_t)(value_stop - value));
        if (rc < 0) {
            corral__session_free(s);
            return rc == -ENOMEM ? rc : -EPROTO;
        }
    }
    /* The rest of the meta moves up behind its '{': jansson reads the small remainder. */
    size_t rest = (size_t)(end - p);
    memmove(meta + 1, p, rest);
    *meta_len = 1 + rest;
    *out = s;
    return 1;
}

/* ---- the model's view ---- */

const char *corral_request_session_id(const corral_request *req)
{
    return req->session ? req->session->id : NULL;
}

int corral_request_session_exists(const corral_request *req)
{
    return req->session && req->session->exists;
}

/*
 * A request belongs to one callback at a time (corral_worker.h), so what
 * these two fill in lazily races nothing.
 */
const json_t *corral_request_session_json(const corral_request *req)
{
    corral__session *s = req->session;
    if (!s || !s->exists)
        return NULL;
    if (s->text_unparsed) { /* the fast path's text, parsed now that the model wants it */
        s->text_unparsed = 0;
        s->json = json_loadb((const char *)s->bytes, s->len, JSON_DECODE_ANY, NULL);
    }
    return s->json;
}

const void *corral_request_session(const corral_request *req, size_t *len, const char **content_type)
{
    corral__session *s = req->session;
    if (content_type)
        *content_type = s && s->exists ? s->content_type : NULL;
    if (len)
        *len = 0;
    if (!s || !s->exists)
        return NULL;
    if (!s->bytes && s->json) { /* the general path: the text written from the value */
        char *text = json_dumps(s->json, JSON_COMPACT | JSON_ENCODE_ANY);
        if (!text)
            return NULL;
        s->bytes = (uint8_t *)text;
        s->len = strlen(text);
    }
    if (len)
        *len = s->len;
    return s->bytes;
}

/* ---- the update ---- */

/* Replaces res's update with u (consumed); -ENOENT when the request names no session. */
static int set_update(corral_response *res, json_t *u, int64_t ttl_s)
{
    if (!u)
        return -ENOMEM;
    if (!res->req || !res->req->session) {
        json_decref(u);
        return -ENOENT;
    }
    if (ttl_s < 0 || (ttl_s > 0 && json_object_set_new(u, "ttl", json_integer(ttl_s)) < 0)) {
        json_decref(u);
        return ttl_s < 0 ? -EINVAL : -ENOMEM;
    }
    json_decref(res->session_update);
    res->session_update = u;
    return 0;
}

int corral_response_set_session_json(corral_response *res, const json_t *value, int64_t ttl_s)
{
    if (!value)
        return -EINVAL;
    return set_update(res, json_pack("{s:O}", "json", (json_t *)value), ttl_s);
}

int corral_response_set_session(corral_response *res, const char *content_type, const void *data, size_t len,
                                int64_t ttl_s)
{
    if (!data && len)
        return -EINVAL;
    if (!content_type || strncmp(content_type, JSON_TYPE, strlen(JSON_TYPE)) == 0) {
        json_t *v = json_loadb(data ? data : "", len, JSON_DECODE_ANY, NULL);
        if (!v)
            return -EINVAL;
        return set_update(res, json_pack("{s:o}", "json", v), ttl_s);
    }
    size_t ctlen = strlen(content_type);
    if (ctlen == 0 || ctlen > 255)
        return -EINVAL;
    for (size_t i = 0; i < ctlen; i++)
        if (content_type[i] < ' ' || content_type[i] > '~')
            return -EINVAL;
    size_t n = base64_encoded_len(len);
    char *text = malloc(n + 1);
    if (!text)
        return -ENOMEM;
    base64_encode(text, data, len);
    text[n] = 0;
    json_t *u = json_pack("{s:s%,s:s}", "base64", text, n, "content_type", content_type);
    free(text);
    return set_update(res, u, ttl_s);
}

int corral_response_delete_session(corral_response *res)
{
    return set_update(res, json_pack("{s:b}", "delete", 1), 0);
}

int corral__session_update_into(const corral_response *res, json_t *meta)
{
    if (!res->session_update)
        return 0;
    return json_object_set(meta, "session", res->session_update) < 0 ? -ENOMEM : 0;
}
