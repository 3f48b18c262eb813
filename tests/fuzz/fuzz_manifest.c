/*
 * fuzz_manifest — model.yaml as the daemon parses it (manifest.c): any
 * bytes parse or fail with a message that the error writer turns into
 * strict JSON, and nothing leaks.
 */
#include "fuzz.h"
#include "manifest.h"

#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    manifest *m = NULL;
    char err[1024];
    err[0] = 0;
    if (manifest_parse("models/fuzz/model.yaml", data, size, "fuzz", &m, err, sizeof err) == 0) {
        if (!m || !model_name_valid(m->name, strlen(m->name)) || !m->parameters)
            abort();
        manifest_free(m);
    } else {
        fuzz_check_error(err);
    }
    return 0;
}
