/*
 * session_c — a C model that shows what the C SDK's sessions do, for
 * tests/blackbox/test_session_models.py and the bench's sessions section.
 *
 * infer: OUTPUT0 is the first input (an echo); SESSION (BYTES, one element) is what
 * the request's session held: its compact JSON text or its bytes, or
 * "absent" / "none". parameters.mode:
 *   (none)    read only: no update
 *   "read"    the bench's: reads the session's text in place (no parse), answers OUTPUT0 alone
 *   "count"   the JSON session {"n": k, ...} becomes {"n": k + 1, "instance": I}
 *   "bytes"   the session becomes the bytes of the input as application/x-raw
 *   "delete"  deletes it
 *   "fail"    sets an update, then fails 400: nothing may be stored
 * A request that names no session gets no update (and the SDK refuses one
 * with -ENOENT, which this model checks). infer_batch does the same per request (the manifest may add batching).
 * generate: a stream of two events, the update ({"streamed": n}) set
 * between them, so it travels with the stream's end.
 */
#include "corral_worker.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct state {
    int instance;
} state;

static int load(corral_ctx *ctx, void **out)
{
    state *s = calloc(1, sizeof *s);
    if (!s)
        return corral_ctx_error(ctx, "MemoryError", "out of memory");
    s->instance = corral_ctx_instance_id(ctx);
    *out = s;
    return 0;
}

static void unload(void *st)
{
    free(st);
}

/* One BYTES element of len bytes at p, as a malloc'ed tensor. */
static int add_bytes(corral_response *res, const char *name, const void *p, size_t len)
{
    uint8_t *t = malloc(4 + len);
    if (!t)
        return corral_response_error(res, 500, "MemoryError", "out of memory");
    uint32_t n = (uint32_t)len;
    memcpy(t, &n, 4);
    if (len)
        memcpy(t + 4, p, len);
    int64_t shape[1] = {1};
    return corral_response_add_output(res, name, CORRAL_BYTES, shape, 1, t, 4 + len, CORRAL_TAKE);
}

static int one(state *st, const corral_request *req, corral_response *res)
{
    const corral_tensor *in = corral_request_ninputs(req) ? corral_request_input_at(req, 0) : NULL;
    if (!in)
        return corral_bad_request(res, "an input is required");
    int rc = corral_response_add_output(res, "OUTPUT0", in->dtype, in->shape, in->ndim, in->data, in->size,
                                        CORRAL_BORROW);
    if (rc < 0)
        return rc;
    const char *mode = corral_param_string(corral_request_parameters(req), "mode", "");
    if (strcmp(mode, "read") == 0) { /* the bench's: the session's text read where it lies, the echo answered */
        size_t n;
        const char *type;
        const char *text = corral_request_session(req, &n, &type);
        return text && (n == 0 || text[n] != 0) ? corral_bad_request(res, "the session's text is cut short") : 0;
    }
    size_t len;
    const char *type;
    const void *content = corral_request_session(req, &len, &type);
    if (content)
        rc = add_bytes(res, "SESSION", content, len);
    else
        rc = add_bytes(res, "SESSION", corral_request_session_id(req) ? "absent" : "none",
                       corral_request_session_id(req) ? 6 : 4);
    if (rc < 0)
        return rc;
    if (!corral_request_session_id(req)) /* nothing to update: the setters would say -ENOENT */
        return corral_response_set_session_json(res, json_null(), 0) == -ENOENT ? 0 : -EINVAL;
    if (strcmp(mode, "count") == 0) {
        const json_t *j = corral_request_session_json(req);
        json_int_t n = json_integer_value(json_object_get(j, "n"));
        json_t *next = json_pack("{s:I,s:i}", "n", n + 1, "instance", st->instance);
        rc = corral_response_set_session_json(res, next, 0);
        json_decref(next);
        return rc;
    }
    if (strcmp(mode, "bytes") == 0)
        return corral_response_set_session(res, "application/x-raw", in->data, in->size, 0);
    if (strcmp(mode, "delete") == 0)
        return corral_response_delete_session(res);
    if (strcmp(mode, "fail") == 0) {
        corral_response_set_session(res, NULL, "{\"failed\":true}", 15, 0);
        return corral_bad_request(res, "failing as asked");
    }
    return 0;
}

static int infer(void *st, const corral_request *req, corral_response *res)
{
    return one(st, req, res);
}

static int infer_batch(void *st, const corral_request *const *reqs, corral_response *const *res, size_t n)
{
    for (size_t i = 0; i < n; i++)
        one(st, reqs[i], res[i]);
    return 0;
}

static int generate(void *st, const corral_request *req, corral_response *res)
{
    (void)st;
    json_t *e = json_pack("{s:i}", "n", 1);
    int rc = corral_stream_event(res, e);
    json_decref(e);
    if (rc < 0)
        return rc;
    if (corral_request_session_id(req)) {
        const json_t *j = corral_request_session_json(req);
        json_t *next = json_pack("{s:I}", "streamed", json_integer_value(json_object_get(j, "streamed")) + 1);
        rc = corral_response_set_session_json(res, next, 0);
        json_decref(next);
        if (rc < 0)
            return rc;
    }
    e = json_pack("{s:i}", "n", 2);
    rc = corral_stream_event(res, e);
    json_decref(e);
    return rc;
}

int main(void)
{
    static const corral_model_ops ops = {
        .load = load, .unload = unload, .infer = infer, .infer_batch = infer_batch, .generate = generate};
    return corral_run(&ops);
}
