/*
 * fuzz_variant — a variant's keys inherited over its base's
 * (manifest_inherit), as a declared variant's are at a scan and a run-time
 * one's at its creation: the input is the base's YAML, a NUL byte, then
 * the variant's YAML (a model.yaml with from:). Both trees parse or fail
 * with a message that the error writer turns into strict JSON; the
 * inheritance never fails; the result is validated, or fails with such a
 * message; the run-time check of the variant's keys answers; nothing
 * leaks, and neither tree is changed by the inheritance.
 */
#include "fuzz.h"
#include "manifest.h"

#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, 0, size);
    size_t base_len = nul ? (size_t)(nul - data) : size;
    const uint8_t *vdata = nul ? nul + 1 : (const uint8_t *)"from: base\n";
    size_t v_len = nul ? size - base_len - 1 : 11;
    json_t *base = NULL, *variant = NULL;
    char err[1024];
    err[0] = 0;
    if (manifest_parse_tree("base/model.yaml", data, base_len, &base, err, sizeof err) < 0) {
        fuzz_check_error(err);
        return 0;
    }
    if (manifest_parse_tree("v/model.yaml", vdata, v_len, &variant, err, sizeof err) < 0) {
        fuzz_check_error(err);
        json_decref(base);
        return 0;
    }
    json_t *base_before = json_deep_copy(base), *variant_before = json_deep_copy(variant);
    const char *from;
    manifest_from_name(variant, &from);
    err[0] = 0;
    if (manifest_check_runtime_keys(variant, "model 'v'", err, sizeof err) < 0)
        fuzz_check_error(err);
    json_t *keys = manifest_inherit(base, variant);
    if (!keys || json_object_get(keys, "from") || !json_equal(base, base_before) || !json_equal(variant, variant_before))
        abort();
    manifest *m = NULL;
    err[0] = 0;
    if (manifest_from_tree("v/model.yaml", keys, "v", NULL, manifest_keys_digest(keys), &m, err, sizeof err) == 0) {
        if (!m || !model_name_valid(m->name, strlen(m->name)) || !m->parameters)
            abort();
        manifest_free(m);
    } else {
        fuzz_check_error(err);
    }
    json_decref(keys);
    json_decref(base);
    json_decref(variant);
    json_decref(base_before);
    json_decref(variant_before);
    return 0;
}
