/*
 * echo-c — the C SDK's reference model, and a fixture for the daemon's tests.
 *
 * infer returns every input renamed INPUTn -> OUTPUTn (other names unchanged)
 * without copying: the outputs borrow the request's memory. generate returns
 * the body with the same content type. The request parameter `delay_ms`
 * (0..60000) makes either sleep first, so tests can keep an instance busy.
 */
#define _POSIX_C_SOURCE 200809L
#include "corral_worker.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define MAX_DELAY_MS 60000
#define MAX_NAME 256

/* Sleeps for the request's delay_ms; 0, or a 400 recorded in res. */
static int apply_delay(const corral_request *req, corral_response *res)
{
    int64_t delay_ms = corral_param_int(corral_request_parameters(req), "delay_ms", 0);
    if (delay_ms < 0 || delay_ms > MAX_DELAY_MS)
        return corral_bad_request(res, "delay_ms must be between 0 and %d, not %lld", MAX_DELAY_MS,
                                  (long long)delay_ms);
    if (delay_ms == 0)
        return 0; /* even a zero-length nanosleep costs a trip through the scheduler */
    struct timespec left = {.tv_sec = delay_ms / 1000, .tv_nsec = (delay_ms % 1000) * 1000000L};
    while (nanosleep(&left, &left) < 0 && errno == EINTR)
        ;
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

static int echo_generate(void *state, const corral_request *req, corral_response *res)
{
    (void)state;
    int rc = apply_delay(req, res);
    if (rc < 0)
        return rc;
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
