/*
 * api_v1 — corral's own endpoints: model status with per-instance detail,
 * free-form generate, scaling and the workers' logs.
 */
#include "api.h"

#include "http.h"
#include "proto.h"
#include "sb.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>



static int generate_respond(api_pending *p, job *j, int status, const char *msg, uint8_t *body, size_t len)
{
    (void)j; /* a GENERATE_RESULT never comes in shared memory */
    h2o_req_t *req = p->req;
    if (status != 200) {
        http_error(req, status, status == 503 ? 1 : 0, "%s", msg);
        return 0;
    }
    http_own(req, body);
    const char *metap;
    size_t meta_len, data_len;
    const uint8_t *data;
    json_t *meta = NULL;
    const char *ct;
    if (proto_split_body(body, len, &metap, &meta_len, &data, &data_len) < 0 ||
        !(meta = json_loadb(metap, meta_len, 0, NULL)) ||
        !(ct = json_string_value(json_object_get(meta, "content_type"))) || !*ct || strpbrk(ct, "\r\n")) {
        json_decref(meta);
        http_error(req, 502, 0, "model '%s' instance %d (pid %d) sent a malformed GENERATE_RESULT; it is replaced",
                   model_name(p->model), p->inst_id, p->inst_pid);
        return 1;
    }
    h2o_iovec_t ctv = h2o_strdup(&req->pool, ct, strlen(ct));
    json_decref(meta);
    http_send(req, 200, ctv.base, data, data_len);
    return 0;
}

static void handle_generate(h2o_req_t *req, model *m)
{
    if (registry_draining()) {
        http_error(req, 503, 1, "model '%s': corral is shutting down", model_name(m));
        return;
    }
    const h2o_iovec_t *ctype = NULL;
    ssize_t ci = h2o_find_header(&req->headers, H2O_TOKEN_CONTENT_TYPE, -1);
    if (ci >= 0)
        ctype = &req->headers.entries[ci].value;
    const char *ct = "application/octet-stream";
    size_t ct_len = strlen(ct);
    if (ctype) {
        ct = ctype->base;
        ct_len = ctype->len;
    }
    int priority = 0;
    /* A JSON body must parse: the model should not have to report our client's syntax errors. */
    if (ct_len >= 16 && strncmp(ct, "application/json", 16) == 0) {
        json_error_t jerr;
        json_t *root = json_loadb(req->entity.base ? req->entity.base : "", req->entity.len, 0, &jerr);
        if (!root) {
            http_error(req, 400, 0, "malformed JSON body for model '%s': %s (line %d, column %d)", model_name(m),
                       jerr.text, jerr.line, jerr.column);
            return;
        }
        json_t *prio = json_object_get(json_object_get(root, "parameters"), "priority");
        const manifest *mf = model_manifest(m);
        int levels = mf ? mf->priority_levels : 1;
        if (prio && (!json_is_integer(prio) || json_integer_value(prio) < 0 || json_integer_value(prio) > levels)) {
            json_decref(root);
            http_error(req, 400, 0,
                       "model '%s': parameters.priority must be an integer from 0 (the model's default) to %d, "
                       "its lowest level",
                       model_name(m), levels);
            return;
        }
        priority = prio ? (int)json_integer_value(prio) : 0;
        json_decref(root);
    }
    sb meta;
    sb_init(&meta, 128);
    sb_adds(&meta, "{\"id\":\"\",\"content_type\":");
    sb_json_str(&meta, ct, ct_len);
    sb_addc(&meta, '}');
    job *j = job_new(m, PROTO_GENERATE, priority);
    job_piece body = {(const uint8_t *)req->entity.base, req->entity.len};
    int rc = job_build_frame(j, meta.p, meta.len, &body, 1, NULL);
    size_t total = 4 + meta.len + req->entity.len;
    sb_free(&meta);
    if (rc < 0) {
        job_free(j);
        if (rc == -EFBIG)
            http_error(req, 413, 0, "request body is larger than the protocol's 1 GiB frame limit");
        else
            http_error(req, 503, 1, "model '%s': cannot allocate %zu bytes for the request now", model_name(m), total);
        return;
    }
    api_pending *p = api_pending_new(req, m, sizeof *p);
    p->respond = generate_respond;
    api_submit(p, j);
}

static void handle_scale(h2o_req_t *req, model *m)
{
    json_t *root = json_loadb(req->entity.base ? req->entity.base : "", req->entity.len, 0, NULL);
    json_t *n = json_object_get(root, "instances");
    if (!json_is_integer(n)) {
        json_decref(root);
        http_error(req, 400, 0, "scale request body must be {\"instances\": N}");
        return;
    }
    json_int_t count = json_integer_value(n);
    json_decref(root);
    char msg[1200];
    int status = model_scale(m, count < 0 || count > MANIFEST_MAX_INSTANCES ? -1 : (int)count, msg, sizeof msg);
    if (status)
        http_error(req, status, 1, "%s", msg);
    else
        http_send_json(req, 200, model_to_json(m));
}

int api_v1(h2o_req_t *req, const api_path *p)
{
    int get = METHOD_IS(req, "GET") || METHOD_IS(req, "HEAD");
    int post = METHOD_IS(req, "POST");
    if (!SEG_IS(p, 1, "models"))
        return -1;
    if (p->n == 2) {
        if (!get) {
            http_method_not_allowed(req, "GET");
            return 0;
        }
        json_t *list = json_array();
        registry_sample_rss(NULL);
        for (model *m = model_next(NULL); m; m = model_next(m))
            json_array_append_new(list, model_to_json(m));
        http_send_json(req, 200, json_pack("{s:o}", "models", list));
        return 0;
    }
    if (p->n > 4)
        return -1;
    if (p->n == 4 && !SEG_IS(p, 3, "generate") && !SEG_IS(p, 3, "scale") && !SEG_IS(p, 3, "logs"))
        return -1;
    model *m = api_model_or_error(req, p->seg[2]);
    if (!m)
        return 0;
    if (p->n == 3) {
        if (!get) {
            http_method_not_allowed(req, "GET");
            return 0;
        }
        registry_sample_rss(m);
        http_send_json(req, 200, model_to_json(m));
    } else if (SEG_IS(p, 3, "generate")) {
        if (!post) {
            http_method_not_allowed(req, "POST");
            return 0;
        }
        handle_generate(req, m);
    } else if (SEG_IS(p, 3, "scale")) {
        if (!post) {
            http_method_not_allowed(req, "POST");
            return 0;
        }
        handle_scale(req, m);
    } else {
        if (!get) {
            http_method_not_allowed(req, "GET");
            return 0;
        }
        size_t len, cut;
        const char *logs = model_logs(m, &len, &cut);
        char start[32];
        int n = snprintf(start, sizeof start, "%zu", cut);
        h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-corral-log-start"), 0, "X-Corral-Log-Start",
                              h2o_strdup(&req->pool, start, (size_t)n).base, (size_t)n);
        char *copy = malloc(len + 1);
        if (!copy) {
            http_error(req, 503, 1, "model '%s': no memory now for its %zu bytes of logs", model_name(m), len);
            return 0;
        }
        memcpy(copy, logs, len);
        http_send_owned(req, 200, "text/plain; charset=utf-8", copy, len);
    }
    return 0;
}
