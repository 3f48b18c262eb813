/*
 * fuzz_tensor — tensor data between JSON and the raw layout (tensor.c, and dtype.c's raw check).
 *
 * Input: byte 0 picks the datatype, byte 1 the direction and whether the
 * claimed element count is off by one; the rest is JSON tensor data, or raw
 * bytes. Whatever converts must convert back to strict JSON within
 * tensor_json_bound; whatever fails must fail with a message the error
 * writer turns into strict JSON; nothing may allocate for a claimed count.
 */
#include "fuzz.h"
#include "sb.h"
#include "tensor.h"

#include <stdint.h>

static int64_t leaves(json_t *v)
{
    if (!json_is_array(v))
        return 1;
    int64_t n = 0;
    size_t i;
    json_t *e;
    json_array_foreach(v, i, e) n += leaves(e);
    return n;
}

static void to_json_checked(dtype t, const uint8_t *raw, size_t size, int64_t nelem)
{
    sb js;
    sb_init(&js, 16);
    size_t bound = tensor_json_bound(t, size, nelem);
    sb_reserve(&js, bound);
    size_t cap = js.cap;
    tensor_to_json(&js, t, raw, size, nelem);
    if (js.len > bound || js.cap != cap)
        abort(); /* the bound was wrong: a worker-sized response could grow without a check */
    fuzz_check_json(js.p, js.len);
    json_t *back = json_loadb(js.p, js.len, JSON_DECODE_INT_AS_REAL | JSON_ALLOW_NUL, NULL);
    if (!back || (int64_t)json_array_size(back) != nelem)
        abort();
    json_decref(back);
    sb_free(&js);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    dtype t = (dtype)(DT_BOOL + data[0] % (DT_BYTES - DT_BOOL + 1));
    int raw_first = data[1] & 1, off_by_one = data[1] >> 1 & 1;
    data += 2;
    size -= 2;
    char err[512];
    if (!raw_first) {
        json_t *j = json_loadb((const char *)data, size, JSON_DECODE_ANY, NULL);
        if (!j)
            return 0;
        int64_t nelem = leaves(j) + off_by_one;
        sb out;
        sb_init(&out, 16);
        if (tensor_from_json(j, t, nelem, &out, err, sizeof err) == 0) {
            if (dtype_check_raw(t, (const uint8_t *)out.p, out.len, nelem) != 0)
                abort();
            to_json_checked(t, (const uint8_t *)out.p, out.len, nelem);
        } else {
            /* a shape is a claim: nothing may have been reserved beyond the data (BYTES reserves its strings' size) */
            if (dtype_size(t) && out.cap > 16 && out.cap > 2 * (size_t)nelem * dtype_size(t) + 64)
                abort();
            fuzz_check_error(err);
        }
        sb_free(&out);
        json_decref(j);
        return 0;
    }
    if (size < 4)
        return 0;
    uint32_t claim;
    memcpy(&claim, data, 4);
    int64_t nelem = (int64_t)claim << (data[1] & 31); /* claims far beyond the data, too */
    if (dtype_check_raw(t, data + 4, size - 4, nelem) == 0)
        to_json_checked(t, data + 4, size - 4, nelem);
    return 0;
}
