/*
 * fuzz_load_config — a load's config merged over model.yaml
 * (manifest_parse_override), then the result in Triton's model-config
 * shape (modelcfg.c): the input is the YAML, a NUL byte, then the config's
 * JSON as a client sends it. Any bytes either load or fail with a message
 * that the error writer turns into strict JSON; a loaded manifest renders
 * as strict JSON; nothing leaks.
 */
#include "fuzz.h"
#include "manifest.h"
#include "modelcfg.h"

#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, 0, size);
    size_t yaml_len = nul ? (size_t)(nul - data) : size;
    const char *cfg = nul ? (const char *)nul + 1 : "{}";
    size_t cfg_len = nul ? size - yaml_len - 1 : 2;
    json_t *override = json_loadb(cfg, cfg_len, JSON_REJECT_DUPLICATES, NULL);
    if (!override)
        return 0; /* the endpoint refuses it before it reaches the manifest */
    manifest *m = NULL;
    char err[1024];
    err[0] = 0;
    if (manifest_parse_override("model 'fuzz': the load's config", data, yaml_len, "fuzz", override, &m, err,
                                sizeof err) == 0) {
        if (!m || !model_name_valid(m->name, strlen(m->name)) || !m->parameters)
            abort();
        json_t *c = modelcfg_json(m->name, m, m->inputs, m->outputs, "labels.txt");
        char *text = json_dumps(c, JSON_COMPACT);
        if (!text)
            abort();
        fuzz_check_json(text, strlen(text));
        free(text);
        json_decref(c);
        manifest_free(m);
    } else {
        fuzz_check_error(err);
    }
    json_decref(override);
    return 0;
}
