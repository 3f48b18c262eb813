/*
 * api_v1 — corral's own endpoints: model status with per-instance detail,
 * free-form generate (generate.c), scaling and the workers' logs.
 */
#include "api.h"
#include "events.h"

#include "generate.h"
#include "http.h"
#include "proto.h"
#include "sb.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    if (p->n == 2 && SEG_IS(p, 1, "events")) {
        events_handle(req);
        return 0;
    }
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
        generate_handle(req, m, GENERATE_V1);
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
