/*
 * fuzz_infer_response — a hostile worker's INFER_RESULT body written as a
 * v2 response (infer.c). Input: byte 0 holds flags (bit 0: every output as
 * binary; bit 1: the client asked for output "OUT" only; bit 2: the request
 * had an id; bit 3: output "OUT" asked for as classification, K from bits
 * 4-5; bit 6: classified per row, as for a batching model; bit 7: with
 * labels of hostile bytes), the rest is the body: u32 meta length, meta,
 * data. The answer is 200 with strict JSON and binary sections inside the
 * body or the classification results, or 502/400/503 with a message the
 * error writer turns into strict JSON.
 */
#include "fuzz.h"
#include "infer.h"

#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    infer_opts opts = {0};
    opts.binary_all = data[0] & 1;
    if (data[0] & 2) {
        opts.requested = json_array();
        json_array_append_new(opts.requested, json_string("OUT"));
    }
    if (data[0] & 4) {
        opts.id = strdup("id-\xc3\xa9");
        opts.id_len = strlen(opts.id);
    }
    if (data[0] & 8) {
        opts.classify = json_pack("{s:i}", "OUT", 1 + ((data[0] >> 4) & 3) * 2);
        opts.batched = (data[0] >> 6) & 1;
        static const char hostile[] = "a\n\xff\"\\\x00\r\n\n\xe2\x82";
        if (data[0] & 128)
            opts.labels = classify_labels_parse(hostile, sizeof hostile - 1);
    }
    infer_response r;
    char err[512];
    int status = infer_build_response("fuzz", &opts, data + 1, size - 1, NULL, 0, &r, err, sizeof err);
    if (status == 200) {
        fuzz_check_json(r.json, r.json_len);
        const uint8_t *owned = (const uint8_t *)r.owned;
        for (size_t i = 0; i < r.nbinary; i++) {
            const uint8_t *p = r.binary[i].ptr, *end = p + r.binary[i].len;
            if ((p < data + 1 || end > data + size) && (!owned || p < owned || end > owned + r.owned_len))
                abort();
        }
        free(r.json);
        free(r.owned);
    } else {
        if (status != 502 && status != 400 && status != 503)
            abort();
        fuzz_check_error(err);
    }
    infer_opts_clear(&opts);
    return 0;
}
