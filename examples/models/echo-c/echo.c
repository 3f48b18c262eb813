/*
 * echo-c — the C SDK's reference model, and a fixture for the daemon's tests.
 *
 * infer returns every input renamed INPUTn -> OUTPUTn (other names unchanged)
 * without copying: the outputs borrow the request's memory. generate returns
 * the body with the same content type, except a JSON object with a "chunks"
 * array: its elements come back one chunk each (a string as text bytes,
 * anything else as an event), streamed when the client asked for a stream
 * and collected into one answer otherwise. The request parameter `delay_ms`
 * (0..60000) makes either sleep first, so tests can keep an instance busy;
 * a cancelled request stops sleeping at once (corral_request_sleep).
 *
 * Batches (examples/models/echo-c-batch runs this binary with `batching`)
 * need no code: infer gets the batch whole, every request's rows of each
 * input back to back, and echoing them gives outputs of the batch's total
 * rows, which the daemon splits. delay_ms is then the first request's.
 */
#define _POSIX_C_SOURCE 200809L
#include "corral_worker.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define MAX_DELAY_MS 60000
#define MAX_NAME 256

/* Sleeps for the request's delay_ms; 0, a 400 recorded in res, or an error once cancelled. */
static int apply_delay(const corral_request *req, corral_response *res)
{
    int64_t delay_ms = corral_param_int(corral_request_parameters(req), "delay_ms", 0);
    if (delay_ms < 0 || delay_ms > MAX_DELAY_MS)
        return corral_bad_request(res, "delay_ms must be between 0 and %d, not %lld", MAX_DELAY_MS,
                                  (long long)delay_ms);
    if (delay_ms == 0)
        return 0; /* even a zero-length wait costs a trip through the scheduler */
    if (corral_request_sleep(req, delay_ms) == -ECANCELED)
        return corral_response_error(res, 500, "Cancelled", "cancelled during a %lld ms sleep", (long long)delay_ms);
    return 0;
}

static int echo_infer(void *state, const corral_request *req, corral_response *res)
{
    (void)state;
    size_t n = corral_request_ninputs(req);
    if (n == 0)
        return corral_bad_request(res, "nothing to echo: the request has no inputs");
    int rc = apply_delay(req, res);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < n; i++) {
        const corral_tensor *in = corral_request_input_at(req, i);
        char name[MAX_NAME];
        if (strncmp(in->name, "INPUT", 5) == 0)
            snprintf(name, sizeof name, "OUTPUT%s", in->name + 5);
        else
            snprintf(name, sizeof name, "%s", in->name);
        rc = corral_response_add_output(res, name, in->dtype, in->shape, in->ndim, in->data, in->size,
                                        CORRAL_BORROW);
        if (rc == -EEXIST)
            return corral_bad_request(res, "inputs '%s' and another both echo as '%s'", in->name, name);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* Sends each element of chunks as one chunk; stops early, successfully, once the request is cancelled. */
static int echo_chunks(const json_t *chunks, corral_response *res)
{
    size_t i;
    const json_t *elem;
    json_array_foreach(chunks, i, elem) {
        int rc = json_is_string(elem) ? corral_stream_write(res, "text/plain; charset=utf-8", json_string_value(elem),
                                                            json_string_length(elem))
                                      : corral_stream_event(res, elem);
        if (rc == -ECANCELED)
            return 0; /* nobody reads the rest; returning frees the instance */
        if (rc == -EINVAL)
            return corral_bad_request(res, "chunk %zu: strings (bytes) and other values (events) cannot mix", i);
        if (rc < 0)
            return corral_response_error(res, 500, NULL, "chunk %zu: %s", i, strerror(-rc));
    }
    return 0;
}

static int echo_generate(void *state, const corral_request *req, corral_response *res)
{
    (void)state;
    int rc = apply_delay(req, res);
    if (rc < 0)
        return rc;
    const json_t *chunks = json_object_get(corral_request_json(req), "chunks");
    if (json_is_array(chunks))
        return echo_chunks(chunks, res);
    size_t len;
    const void *body = corral_request_body(req, &len);
    return corral_response_set_body(res, corral_request_content_type(req), body, len, CORRAL_BORROW);
}

static int echo_load(corral_ctx *ctx, void **state)
{
    *state = NULL;
    corral_log("echo-c: model '%s' instance %d loaded from %s (concurrency %d)", corral_ctx_model_name(ctx),
               corral_ctx_instance_id(ctx), corral_ctx_model_dir(ctx), corral_ctx_concurrency(ctx));
    return 0;
}

static void echo_unload(void *state)
{
    (void)state;
    corral_log("echo-c: unloaded");
}

int main(void)
{
    static const corral_model_ops ops = {
        .load = echo_load,
        .infer = echo_infer,
        .generate = echo_generate,
        .unload = echo_unload,
    };
    return corral_run(&ops);
}
