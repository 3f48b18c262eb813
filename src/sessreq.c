/*
 * sessreq — a session carried by a request; see sessreq.h.
 *
 * A JSON session's stored text is compact JSON (session.h), so it goes into
 * the request's meta verbatim: one copy, no parse, no re-encoding. A bytes
 * session travels as base64 in the meta, which every frame kind (INFER,
 * BATCH, GENERATE, with or without shared memory) can carry without a
 * change to its data layout.
 */
#include "sessreq.h"

#include "base64.h"
#include "job.h"
#include "log.h"
#include "proto.h"
#include "session.h"
#include "xmalloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { UPDATE_NONE, UPDATE_PUT, UPDATE_DELETE };

struct sessreq {
    session *s;       /* pinned; NULL when the session did not exist at acceptance */
    uint64_t request; /* the job's id, for log lines */
    int op;           /* the staged update: UPDATE_* */
    char *content_type; /* UPDATE_PUT: owned */
    uint8_t *data;      /* UPDATE_PUT: owned, len bytes (compact JSON text for SESSION_JSON) */
    size_t len;
    int64_t ttl_s;      /* 0: the store's default */
    size_t idlen;
    char id[];
};

static uint64_t refused;

int sessreq_attach(job *j, const char *id, size_t len, char *why, size_t whylen)
{
    if (!session_id_valid(id, len, why, whylen))
        return -1;
    sessreq *r = xcalloc(1, sizeof *r + len + 1);
    memcpy(r->id, id, len);
    r->idlen = len;
    r->request = j->id;
    r->s = session_find(id, len, 1);
    if (r->s)
        session_pin(r->s);
    sessreq_free(j->sess);
    j->sess = r;
    j->sess_free = sessreq_free;
    return 0;
}

const char *sessreq_id(const sessreq *r)
{
    return r->id;
}

void sessreq_meta(sb *out, const sessreq *r)
{
    sb_adds(out, "\"session\":{\"id\":");
    sb_json_str(out, r->id, r->idlen);
    if (!r->s) {
        sb_adds(out, ",\"exists\":false}");
        return;
    }
    sb_adds(out, ",\"exists\":true,\"content_type\":");
    const char *ct = session_content_type(r->s);
    sb_json_str(out, ct, strlen(ct));
    if (session_is_json(r->s)) {
        sb_adds(out, ",\"json\":");
        sb_add(out, session_data(r->s), session_size(r->s)); /* compact JSON, as the store keeps it */
    } else {
        sb_adds(out, ",\"base64\":\"");
        size_t n = base64_encoded_len(session_size(r->s));
        base64_encode(sb_reserve(out, n), session_data(r->s), session_size(r->s));
        out->len += n;
        sb_addc(out, '"');
    }
    sb_addc(out, '}');
}

size_t sessreq_meta_size(const sessreq *r)
{
    size_t n = 96 + 6 * r->idlen; /* the keys, and the id at its most escaped */
    if (r->s)
        n += 6 * strlen(session_content_type(r->s)) +
             (session_is_json(r->s) ? session_size(r->s) : base64_encoded_len(session_size(r->s)));
    return n;
}

static void clear_staged(sessreq *r)
{
    free(r->content_type);
    free(r->data);
    r->content_type = NULL;
    r->data = NULL;
    r->len = 0;
    r->ttl_s = 0;
    r->op = UPDATE_NONE;
}

int sessreq_stage(sessreq *r, json_t *u, char *why, size_t whylen)
{
    static const char *const keys[] = {"json", "base64", "content_type", "delete", "ttl", NULL};
    if (!json_is_object(u)) {
        snprintf(why, whylen, "its session update is not a JSON object");
        return -1;
    }
    const char *key;
    json_t *v;
    json_object_foreach(u, key, v) {
        int known = 0;
        for (int k = 0; keys[k]; k++)
            known |= strcmp(key, keys[k]) == 0;
        if (!known) {
            snprintf(why, whylen, "its session update has an unknown key (it takes json, base64 with "
                                  "content_type, delete, ttl)");
            return -1;
        }
    }
    json_t *js = json_object_get(u, "json"), *b = json_object_get(u, "base64"), *ct = json_object_get(u, "content_type");
    json_t *del = json_object_get(u, "delete"), *ttl = json_object_get(u, "ttl");
    int forms = (js != NULL) + (b != NULL) + json_is_true(del);
    if (forms != 1 || (del && !json_is_boolean(del)) || (js && ct)) {
        snprintf(why, whylen, "its session update must hold exactly one of json, base64 (with content_type) and "
                              "\"delete\": true");
        return -1;
    }
    if (ttl && (!json_is_integer(ttl) || json_integer_value(ttl) <= 0)) {
        snprintf(why, whylen, "its session update's ttl is not a positive integer (seconds)");
        return -1;
    }
    uint8_t *data = NULL;
    size_t len = 0;
    char *type = NULL;
    if (js) {
        data = (uint8_t *)json_dumps(js, JSON_COMPACT | JSON_ENCODE_ANY);
        if (!data) {
            snprintf(why, whylen, "its session update's json cannot be written as JSON");
            return -1;
        }
        len = strlen((char *)data);
    } else if (b) {
        if (!json_is_string(b) || !json_is_string(ct) ||
            !session_content_type_valid(json_string_value(ct), json_string_length(ct)) ||
            session_type_is_json(json_string_value(ct), json_string_length(ct))) {
            snprintf(why, whylen, "its session update's base64 needs a string content_type of 1 to 255 bytes of "
                                  "printable ASCII, not application/json (send json for that)");
            return -1;
        }
        size_t n = json_string_length(b);
        data = xmalloc(n / 4 * 3 + 1);
        if (base64_decode(json_string_value(b), n, data, &len) < 0) {
            free(data);
            snprintf(why, whylen, "its session update's base64 is not padded standard base64");
            return -1;
        }
        type = xstrdup(json_string_value(ct));
    }
    clear_staged(r);
    r->op = json_is_true(del) ? UPDATE_DELETE : UPDATE_PUT;
    r->data = data;
    r->len = len;
    r->content_type = type;
    r->ttl_s = ttl ? json_integer_value(ttl) : 0;
    return 0;
}

int sessreq_stage_frame(sessreq *r, uint8_t type, const uint8_t *body, size_t len, char *why, size_t whylen)
{
    const char *meta;
    size_t meta_len, data_len;
    const uint8_t *data;
    if (type == PROTO_END && len == 0)
        return 0;
    if (proto_split_body(body, len, &meta, &meta_len, &data, &data_len) < 0 ||
        (type == PROTO_END && data_len)) {
        snprintf(why, whylen, "its %s body is not a meta%s", proto_type_name(type),
                 type == PROTO_END ? " alone" : " and data");
        return -1;
    }
    /* Most answers carry no update: a look for the key spares their meta a second parse. An update for a
     * request that named no session is ignored. */
    if (!r || !memmem(meta, meta_len, "\"session\"", 9))
        return 0;
    json_t *m = json_loadb(meta, meta_len, JSON_REJECT_DUPLICATES, NULL);
    json_t *u = json_object_get(m, "session");
    int rc = 0;
    if (!json_is_object(m)) {
        snprintf(why, whylen, "its %s meta is not a JSON object", proto_type_name(type));
        rc = -1;
    } else if (u) {
        rc = sessreq_stage(r, u, why, whylen);
    }
    json_decref(m);
    return rc;
}

int sessreq_commit(sessreq *r, const char *model)
{
    if (!r || r->op == UPDATE_NONE)
        return 0;
    int status = 0;
    char msg[512] = "";
    if (r->op == UPDATE_DELETE) {
        if (session_delete(r->id, r->idlen) == 503) { /* already gone (404) is as good */
            status = 503;
            snprintf(msg, sizeof msg, "the state file's sessions are still being read and too many sessions have "
                                      "changed meanwhile");
        }
    } else {
        int created;
        status = session_put(r->id, r->idlen, r->content_type ? r->content_type : SESSION_JSON, r->data, r->len,
                             r->ttl_s, &created, msg, sizeof msg);
    }
    clear_staged(r);
    if (status) {
        refused++;
        log_with(LOG_WARN, &(log_ctx){.model = model, .instance = -1, .request = r->request},
                 "model '%s' answered request %llu with an update of session '%s' that was not stored (%d): %s",
                 model, (unsigned long long)r->request, r->id, status, msg);
    }
    return status;
}

void sessreq_drop(sessreq *r)
{
    if (r)
        clear_staged(r);
}

uint64_t sessreq_refused(void)
{
    return refused;
}

void sessreq_free(sessreq *r)
{
    if (!r)
        return;
    clear_staged(r);
    if (r->s)
        session_unpin(r->s);
    free(r);
}
