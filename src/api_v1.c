/*
 * api_v1 — corral's own endpoints: model status with per-instance detail,
 * free-form generate (generate.c), scaling, the workers' logs, and models
 * created and deleted at run time (variant.h).
 */
#include "api.h"
#include "api_session.h"
#include "events.h"

#include "generate.h"
#include "http.h"
#include "proto.h"
#include "pull.h"
#include "sb.h"
#include "variant.h"

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

/* POST /v1/models/pull: answered when the pull is done (docs/repository.md). */
typedef struct pull_pending {
    h2o_req_t *req; /* NULL once h2o disposed the request */
    pull *pull;     /* NULL once done; owned by pull.c */
} pull_pending;

static void pull_pending_dispose(void *ptr)
{
    pull_pending *pp = ptr;
    if (pp->pull)
        pull_detach(pp->pull); /* the client left: the pull goes on, its events tell */
}

static void on_pulled(pull *pl, int status, const char *name, const char *msg, void *data)
{
    (void)pl;
    pull_pending *pp = data;
    pp->pull = NULL;
    model *m = status ? NULL : model_find(name, strlen(name));
    if (status)
        http_error(pp->req, status, status == 503, "pull of model '%s': %s", name, msg);
    else if (!m)
        http_error(pp->req, 500, 0, "model '%s' was pulled but the rescan did not find it", name);
    else
        http_send_json(pp->req, 200, model_to_json(m));
}

static void handle_pull(h2o_req_t *req)
{
    json_error_t jerr;
    json_t *root = json_loadb(req->entity.base ? req->entity.base : "", req->entity.len, 0, &jerr);
    const char *key;
    json_t *v;
    if (!json_is_object(root)) {
        json_decref(root);
        http_error(req, 400, 0, "pull request body must be {\"url\": URL, \"sha256\": HEX, \"name\": NAME} or {\"name\": NAME}");
        return;
    }
    json_object_foreach(root, key, v) {
        if (strcmp(key, "url") != 0 && strcmp(key, "sha256") != 0 && strcmp(key, "name") != 0) {
            http_error(req, 400, 0, "pull request: unknown key '%s' (url, sha256 and name are)", key);
            json_decref(root);
            return;
        }
        if (!json_is_string(v)) {
            http_error(req, 400, 0, "pull request: '%s' must be a string", key);
            json_decref(root);
            return;
        }
    }
    const char *url = json_string_value(json_object_get(root, "url"));
    const char *sha = json_string_value(json_object_get(root, "sha256"));
    const char *name = json_string_value(json_object_get(root, "name"));
    if ((url && !sha) || (!url && (sha || !name))) {
        http_error(req, 400, 0, "pull request: %s", url ? "'sha256' is required with a url"
                                                  : sha ? "'url' is required with a sha256"
                                                        : "'url' and 'sha256', or the 'name' of a model declared with source, are required");
        json_decref(root);
        return;
    }
    char err[1024];
    pull_pending *pp = h2o_mem_alloc_shared(&req->pool, sizeof *pp, pull_pending_dispose);
    pp->req = req;
    pp->pull = NULL;
    int status = pull_start(url, sha, name, on_pulled, pp, &pp->pull, err, sizeof err);
    json_decref(root);
    if (status) {
        pp->pull = NULL;
        http_error(req, status, status == 503, "pull refused: %s", err);
    }
}

/* POST /v1/models: a variant created at run time, answered 201 with its view. */
static void handle_create(h2o_req_t *req)
{
    json_error_t jerr;
    json_t *root = json_loadb(req->entity.base ? req->entity.base : "", req->entity.len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        http_error(req, 400, 0, "create request: malformed JSON: %s", jerr.text);
        return;
    }
    model *m;
    char msg[1600];
    int status = variant_create(root, &m, msg, sizeof msg);
    json_decref(root);
    if (status)
        http_error(req, status, status == 503, "%s", msg);
    else
        http_send_json(req, 201, model_to_json(m));
}

/* DELETE /v1/models/{name}: answered once the model is unloaded and gone. */
typedef struct delete_pending {
    api_pending base;
    const char *name; /* in the request's pool: the model is freed once removed */
} delete_pending;

static void on_deleted(void *ctx, int status, const char *msg)
{
    delete_pending *p = ctx;
    p->base.waiting = 0;
    if (!p->base.req)
        return;
    if (status == 200)
        http_send_json(p->base.req, 200, json_pack("{s:s,s:b}", "name", p->name, "deleted", 1));
    else
        http_error(p->base.req, status, 1, "%s", msg);
}

static void handle_delete(h2o_req_t *req, model *m)
{
    delete_pending *p = (delete_pending *)api_pending_new(req, m, sizeof *p);
    p->base.waiter.on_done = on_deleted;
    p->base.waiter.ctx = p;
    p->base.waiting = 1;
    p->name = h2o_strdup(&req->pool, model_name(m), SIZE_MAX).base;
    char msg[1200];
    int status = variant_delete(m, &p->base.waiter, msg, sizeof msg);
    if (status) {
        p->base.waiting = 0;
        http_error(req, status, 0, "%s", msg);
    }
}

int api_v1(h2o_req_t *req, const api_path *p)
{
    int get = METHOD_IS(req, "GET") || METHOD_IS(req, "HEAD");
    int post = METHOD_IS(req, "POST");
    if (p->n == 2 && SEG_IS(p, 1, "events")) {
        events_handle(req);
        return 0;
    }
    if (SEG_IS(p, 1, "sessions"))
        return api_sessions(req, p);
    if (!SEG_IS(p, 1, "models"))
        return -1;
    if (p->n == 3 && SEG_IS(p, 2, "pull")) {
        if (!post)
            http_method_not_allowed(req, "POST");
        else
            handle_pull(req);
        return 0;
    }
    if (p->n == 2) {
        if (post) {
            handle_create(req);
            return 0;
        }
        if (!get) {
            http_method_not_allowed(req, "GET, POST");
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
    if (p->n == 3 && METHOD_IS(req, "DELETE") && model_name_valid(p->seg[2].base, p->seg[2].len) &&
        !model_find(p->seg[2].base, p->seg[2].len)) {
        char msg[600];
        int status = variant_delete_absent(p->seg[2].base, p->seg[2].len, msg, sizeof msg);
        http_error(req, status, status == 503, "%s", msg);
        return 0;
    }
    model *m = api_model_or_error(req, p->seg[2]);
    if (!m)
        return 0;
    if (p->n == 3) {
        if (METHOD_IS(req, "DELETE")) {
            handle_delete(req, m);
            return 0;
        }
        if (!get) {
            http_method_not_allowed(req, "GET, DELETE");
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
