/*
 * corral_ctx.c — the load context: what LOAD told the worker (model, dir,
 * instance, device, concurrency, manifest parameters) and the daemon's
 * samples and external-models directories (environment), the metadata a model
 * declares for READY, and the reason a load failed.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "corral_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* Most requests one instance runs at once; more threads than this only waste memory. */
#define MAX_CONCURRENCY 1024

static char *dup_field(const json_t *load, const char *key, const char *env, const char *def)
{
    const char *v = json_string_value(json_object_get(load, key));
    if (!v || !*v)
        v = getenv(env);
    if (!v || !*v)
        v = def;
    return strdup(v);
}

/* A directory the daemon names only in the environment; NULL (no error) when it names none. */
static int env_dir(const char *env, char **out)
{
    const char *v = getenv(env);
    *out = NULL;
    if (!v || !*v)
        return 0;
    *out = strdup(v);
    return *out ? 0 : -ENOMEM;
}

static int int_field(const json_t *load, const char *key, const char *env, int def)
{
    const json_t *v = json_object_get(load, key);
    if (json_is_integer(v) && json_integer_value(v) >= 0 && json_integer_value(v) <= INT32_MAX)
        return (int)json_integer_value(v);
    const char *s = getenv(env);
    if (s && *s) {
        char *end;
        long n = strtol(s, &end, 10);
        if (!*end && n >= 0 && n <= INT32_MAX)
            return (int)n;
    }
    return def;
}

corral_ctx *corral__ctx_new(const json_t *load)
{
    corral_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx)
        return NULL;
    ctx->model_name = dup_field(load, "model", "CORRAL_MODEL", "");
    ctx->model_dir = dup_field(load, "model_dir", "CORRAL_MODEL_DIR", ".");
    ctx->device = dup_field(load, "device", "CORRAL_DEVICE", "cpu");
    ctx->instance_id = int_field(load, "instance_id", "CORRAL_INSTANCE", 0);
    ctx->concurrency = int_field(load, "concurrency", "CORRAL_CONCURRENCY", 1);
    if (ctx->concurrency < 1)
        ctx->concurrency = 1;
    if (ctx->concurrency > MAX_CONCURRENCY)
        ctx->concurrency = MAX_CONCURRENCY;
    json_t *params = json_object_get(load, "parameters");
    ctx->parameters = json_is_object(params) ? json_incref(params) : json_object();
    int dirs = env_dir("CORRAL_SAMPLES_DIR", &ctx->samples_dir);
    if (dirs == 0)
        dirs = env_dir("CORRAL_EXTERNAL_MODELS_DIR", &ctx->external_models_dir);
    if (dirs == 0)
        dirs = env_dir("CORRAL_VARIANT_DIR", &ctx->variant_dir);
    if (!ctx->model_name || !ctx->model_dir || !ctx->device || !ctx->parameters || dirs < 0) {
        corral__ctx_free(ctx);
        return NULL;
    }
    return ctx;
}

void corral__ctx_free(corral_ctx *ctx)
{
    if (!ctx)
        return;
    free(ctx->model_name);
    free(ctx->model_dir);
    free(ctx->device);
    free(ctx->samples_dir);
    free(ctx->external_models_dir);
    free(ctx->variant_dir);
    json_decref(ctx->parameters);
    json_decref(ctx->inputs);
    json_decref(ctx->outputs);
    free(ctx->error_type);
    free(ctx->error_message);
    free(ctx);
}

json_t *corral__ctx_ready_body(const corral_ctx *ctx)
{
    json_t *body = json_object();
    if (!body)
        return NULL;
    if (ctx->inputs && json_object_set(body, "inputs", ctx->inputs) < 0)
        goto fail;
    if (ctx->outputs && json_object_set(body, "outputs", ctx->outputs) < 0)
        goto fail;
    return body;
fail:
    json_decref(body);
    return NULL;
}

const char *corral_ctx_model_name(const corral_ctx *ctx)
{
    return ctx->model_name;
}

const char *corral_ctx_model_dir(const corral_ctx *ctx)
{
    return ctx->model_dir;
}

const char *corral_ctx_samples_dir(const corral_ctx *ctx)
{
    return ctx->samples_dir;
}

const char *corral_ctx_external_models_dir(const corral_ctx *ctx)
{
    return ctx->external_models_dir;
}

const char *corral_ctx_variant_dir(const corral_ctx *ctx)
{
    return ctx->variant_dir;
}

int corral_ctx_instance_id(const corral_ctx *ctx)
{
    return ctx->instance_id;
}

const char *corral_ctx_device(const corral_ctx *ctx)
{
    return ctx->device;
}

int corral_ctx_concurrency(const corral_ctx *ctx)
{
    return ctx->concurrency;
}

const json_t *corral_ctx_parameters(const corral_ctx *ctx)
{
    return ctx->parameters;
}

const char *corral_ctx_param_string(const corral_ctx *ctx, const char *key, const char *def)
{
    return corral_param_string(ctx->parameters, key, def);
}

int64_t corral_ctx_param_int(const corral_ctx *ctx, const char *key, int64_t def)
{
    return corral_param_int(ctx->parameters, key, def);
}

double corral_ctx_param_double(const corral_ctx *ctx, const char *key, double def)
{
    return corral_param_double(ctx->parameters, key, def);
}

int corral_ctx_param_bool(const corral_ctx *ctx, const char *key, int def)
{
    return corral_param_bool(ctx->parameters, key, def);
}

static int add_tensor(json_t **list, const char *name, corral_dtype dtype, const int64_t *shape, int ndim,
                      int optional)
{
    if (!name || !*name || !corral_utf8_valid(name, strlen(name)) || (int)dtype <= CORRAL_INVALID ||
        (int)dtype > CORRAL_BYTES || ndim < 0 || ndim > CORRAL_MAX_DIMS || (ndim > 0 && !shape))
        return -EINVAL;
    for (int i = 0; i < ndim; i++)
        if (shape[i] < -1)
            return -EINVAL;
    if (!*list && !(*list = json_array()))
        return -ENOMEM;
    json_t *t = corral__tensor_json(name, dtype, shape, ndim, -1);
    if (t && optional && json_object_set_new(t, "optional", json_true()) < 0) {
        json_decref(t);
        t = NULL;
    }
    if (!t || json_array_append_new(*list, t) < 0)
        return -ENOMEM;
    return 0;
}

int corral_ctx_add_input(corral_ctx *ctx, const char *name, corral_dtype dtype, const int64_t *shape, int ndim)
{
    return add_tensor(&ctx->inputs, name, dtype, shape, ndim, 0);
}

int corral_ctx_add_optional_input(corral_ctx *ctx, const char *name, corral_dtype dtype, const int64_t *shape,
                                  int ndim)
{
    return add_tensor(&ctx->inputs, name, dtype, shape, ndim, 1);
}

int corral_ctx_add_output(corral_ctx *ctx, const char *name, corral_dtype dtype, const int64_t *shape, int ndim)
{
    return add_tensor(&ctx->outputs, name, dtype, shape, ndim, 0);
}

int corral_ctx_error(corral_ctx *ctx, const char *type, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *message = corral__vformat(fmt, ap);
    va_end(ap);
    free(ctx->error_type);
    free(ctx->error_message);
    ctx->error_type = strdup(type && *type && corral_utf8_valid(type, strlen(type)) ? type : "LoadError");
    ctx->error_message = message;
    return -EIO;
}
