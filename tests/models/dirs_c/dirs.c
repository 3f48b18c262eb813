/*
 * dirs_c — test fixture for the C SDK's view of the daemon's shared
 * directories. generate answers {"samples_dir": ..., "external_models_dir":
 * ..., "variant_dir": ..., "model_dir": ..., "model": ...} (null for one
 * the daemon has none of), and, when the request's JSON
 * names a "sample" file, "sample": that file's text, read from the samples
 * directory (a name with a '/' or "..", or one too long, is refused).
 */
#define _POSIX_C_SOURCE 200809L
#include "corral_worker.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SAMPLE 4096

static json_t *dir_or_null(const char *dir)
{
    return dir ? json_string(dir) : json_null();
}

static int dirs_load(corral_ctx *ctx, void **state)
{
    *state = ctx; /* valid until unload returns */
    return 0;
}

static int dirs_generate(void *state, const corral_request *req, corral_response *res)
{
    const corral_ctx *ctx = state;
    const char *samples = corral_ctx_samples_dir(ctx);
    json_t *answer = json_pack("{s:o, s:o, s:o, s:o, s:o}", "samples_dir", dir_or_null(samples), "external_models_dir",
                               dir_or_null(corral_ctx_external_models_dir(ctx)), "variant_dir",
                               dir_or_null(corral_ctx_variant_dir(ctx)), "model_dir",
                               dir_or_null(corral_ctx_model_dir(ctx)), "model",
                               dir_or_null(corral_ctx_model_name(ctx)));
    if (!answer)
        return -ENOMEM;
    const char *sample = json_string_value(json_object_get(corral_request_json(req), "sample"));
    if (sample) {
        if (!samples || !*sample || strchr(sample, '/') || strcmp(sample, "..") == 0 || strlen(sample) > 255) {
            json_decref(answer);
            return corral_bad_request(res, "sample '%s': not a file name in the samples directory", sample);
        }
        char path[8192], text[MAX_SAMPLE];
        snprintf(path, sizeof path, "%s/%s", samples, sample);
        FILE *f = fopen(path, "r");
        if (!f) {
            json_decref(answer);
            return corral_response_error(res, 500, NULL, "cannot open %s: %s", path, strerror(errno));
        }
        size_t n = fread(text, 1, sizeof text, f);
        fclose(f);
        json_object_set_new(answer, "sample", json_stringn(text, n));
    }
    char *body = json_dumps(answer, JSON_COMPACT);
    json_decref(answer);
    if (!body)
        return -ENOMEM;
    return corral_response_set_body(res, "application/json", body, strlen(body), CORRAL_TAKE);
}

int main(void)
{
    static const corral_model_ops ops = {.load = dirs_load, .generate = dirs_generate};
    return corral_run(&ops);
}
