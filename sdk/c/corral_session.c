/*
 * corral_session.c — the session a request carries, and the update its
 * response answers with (corral_worker.h, "Sessions";
 * docs/worker-protocol.md, "Sessions").
 *
 * The meta's "session" is checked when the request is parsed: a malformed
 * one is the daemon's fault (a protocol error). A bytes session's base64 is
 * decoded then; a JSON one's value stays in the parsed meta, and its text
 * is written only when the model asks for it.
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
    free(s->bytes);
    free(s);
}

int corral__session_parse(const json_t *raw, corral__session **out, const char **why)
{
    *out = NULL;
    if (!raw)
        return 0;
    const json_t *id = json_object_get(raw, "id"), *exists = json_object_get(raw, "exists");
    if (!json_is_object(raw) || !json_is_string(id) || !json_is_boolean(exists)) {
        *why = "'session' is not an object with a string 'id' and a boolean 'exists'";
        return -EPROTO;
    }
    corral__session *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->id = json_string_value(id);
    s->exists = json_is_true(exists);
    if (s->exists) {
        const json_t *ct = json_object_get(raw, "content_type"), *b = json_object_get(raw, "base64");
        s->json = json_object_get(raw, "json");
        if (!json_is_string(ct) || (!s->json && !json_is_string(b))) {
            corral__session_free(s);
            *why = "a session that exists needs a string 'content_type' and 'json' or 'base64'";
            return -EPROTO;
        }
        s->content_type = json_string_value(ct);
        if (!s->json) {
            size_t n = json_string_length(b);
            if (!(s->bytes = malloc(n / 4 * 3 + 1))) {
                corral__session_free(s);
                return -ENOMEM;
            }
            if (base64_decode(json_string_value(b), n, s->bytes, &s->len) < 0) {
                corral__session_free(s);
                *why = "the session's base64 is malformed";
                return -EPROTO;
            }
        }
    }
    *out = s;
    return 0;
}

const char *corral_request_session_id(const corral_request *req)
{
    return req->session ? req->session->id : NULL;
}

int corral_request_session_exists(const corral_request *req)
{
    return req->session && req->session->exists;
}

const json_t *corral_request_session_json(const corral_request *req)
{
    return req->session ? req->session->json : NULL;
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
    if (s->json && !s->bytes) {
        /* A request belongs to one callback at a time (corral_worker.h), so writing the text now races nothing. */
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
