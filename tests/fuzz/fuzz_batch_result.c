/*
 * fuzz_batch_result — a hostile worker's answer to a batch (batch_split,
 * batch.c). Input: byte 0 holds the number of requests (1 + its low two
 * bits) and whether the last asked for output "OUT" only (bit 2); the next
 * four bytes each hold a request's rows (1 + the low two bits); the rest is
 * the INFER_RESULT body. Every part must be an INFER_RESULT body the v2
 * response writer accepts, or an error whose message becomes strict JSON;
 * a failed split leaves no part.
 */
#include "batch.h"
#include "fuzz.h"
#include "infer.h"

#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 5)
        return 0;
    int n = 1 + (data[0] & 3);
    batch_entry e[4] = {{0}};
    const batch_entry *entries[4];
    uint64_t rows = 0;
    for (int i = 0; i < n; i++) {
        e[i].rows = 1 + (data[1 + i] & 3);
        rows += e[i].rows;
        entries[i] = &e[i];
    }
    if (data[0] & 4)
        e[n - 1].wanted = json_pack("[s]", "OUT");
    batch_part parts[4];
    char msg[900];
    int rc = batch_split("fuzz", entries, n, rows, data + 5, size - 5, NULL, 0, parts, msg, sizeof msg);
    if (rc != 0) {
        if (rc != 1 && rc != -1)
            abort();
        fuzz_check_error(msg);
        for (int i = 0; i < n; i++)
            if (parts[i].body || parts[i].msg)
                abort();
    } else {
        for (int i = 0; i < n; i++) {
            if (parts[i].status != 200) {
                if ((parts[i].status != 400 && parts[i].status != 500) || !parts[i].msg)
                    abort();
                fuzz_check_error(parts[i].msg);
                continue;
            }
            infer_opts opts = {0};
            infer_response r;
            char err[512];
            int status = infer_build_response("fuzz", &opts, parts[i].body, parts[i].len, NULL, 0, &r, err,
                                              sizeof err);
            if (status != 200) /* a part is built from checked tensors: it must be a valid answer */
                abort();
            fuzz_check_json(r.json, r.json_len);
            free(r.json);
        }
        batch_parts_free(parts, n);
    }
    json_decref(e[n - 1].wanted);
    return 0;
}
