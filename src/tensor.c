/*
 * tensor — JSON <-> raw tensor conversion; see tensor.h.
 *
 * The raw layout is little-endian; corral only builds on little-endian hosts
 * (checked below), which lets fixed-size elements be copied with memcpy.
 */
#include "tensor.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "corral's raw tensor layout assumes a little-endian host"
#endif

typedef struct flatten {
    dtype t;
    int64_t want;
    int64_t seen;
    sb *out;
    char *err;
    size_t errlen;
} flatten;

static int put_element(flatten *fl, json_t *v)
{
    int64_t idx = fl->seen++;
    assert(idx < fl->want); /* the elements were counted first */
    uint8_t buf[8];
    dtype t = fl->t;
    if (t == DT_BYTES) {
        if (!json_is_string(v)) {
            snprintf(fl->err, fl->errlen, "element %lld is not a string", (long long)idx);
            return -EINVAL;
        }
        size_t n = json_string_length(v);
        uint32_t len32 = (uint32_t)n;
        sb_add(fl->out, &len32, 4);
        sb_add(fl->out, json_string_value(v), n);
        return 0;
    }
    if (t == DT_BOOL) {
        if (json_is_boolean(v))
            buf[0] = json_is_true(v);
        else if (json_is_integer(v) && (json_integer_value(v) == 0 || json_integer_value(v) == 1))
            buf[0] = (uint8_t)json_integer_value(v);
        else {
            snprintf(fl->err, fl->errlen, "element %lld is not a boolean", (long long)idx);
            return -EINVAL;
        }
        sb_add(fl->out, buf, 1);
        return 0;
    }
    if (t == DT_FP16 || t == DT_FP32 || t == DT_FP64 || t == DT_BF16) {
        if (!json_is_number(v)) {
            snprintf(fl->err, fl->errlen, "element %lld is not a number", (long long)idx);
            return -EINVAL;
        }
        double d = json_number_value(v);
        double limit = t == DT_FP16 ? 65504.0 : t == DT_FP64 ? INFINITY : 3.4028234663852886e38;
        if (fabs(d) > limit) {
            snprintf(fl->err, fl->errlen, "element %lld (%g) is out of range for %s", (long long)idx, d,
                     dtype_name(t));
            return -EINVAL;
        }
        if (t == DT_FP64) {
            sb_add(fl->out, &d, 8);
        } else if (t == DT_FP32) {
            float f = (float)d;
            sb_add(fl->out, &f, 4);
        } else {
            uint16_t h = t == DT_FP16 ? dtype_float_to_half((float)d) : dtype_float_to_bf16((float)d);
            sb_add(fl->out, &h, 2);
        }
        return 0;
    }
    /*
     * Integers. jansson holds them as long long; the API quotes integer
     * tokens beyond that range, so a quoted run of digits is one of those.
     */
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        size_t n = json_string_length(v);
        size_t sign = n > 0 && s[0] == '-';
        int digits = n > sign && strspn(s + sign, "0123456789") == n - sign;
        if (digits && t == DT_UINT64 && s[0] != '-') {
            char *end;
            errno = 0;
            unsigned long long u = strtoull(s, &end, 10);
            if (!errno) {
                memcpy(buf, &u, 8);
                sb_add(fl->out, buf, 8);
                return 0;
            }
        }
        if (digits) {
            snprintf(fl->err, fl->errlen, "element %lld (%.40s%s) is out of range for %s", (long long)idx, s,
                     n > 40 ? "..." : "", dtype_name(t));
            return -EINVAL;
        }
    }
    if (!json_is_integer(v)) {
        snprintf(fl->err, fl->errlen, "element %lld is not an integer", (long long)idx);
        return -EINVAL;
    }
    long long i = json_integer_value(v);
    long long lo, hi;
    switch (t) {
    case DT_UINT8: lo = 0; hi = UINT8_MAX; break;
    case DT_UINT16: lo = 0; hi = UINT16_MAX; break;
    case DT_UINT32: lo = 0; hi = UINT32_MAX; break;
    case DT_UINT64: lo = 0; hi = INT64_MAX; break;
    case DT_INT8: lo = INT8_MIN; hi = INT8_MAX; break;
    case DT_INT16: lo = INT16_MIN; hi = INT16_MAX; break;
    case DT_INT32: lo = INT32_MIN; hi = INT32_MAX; break;
    default: lo = INT64_MIN; hi = INT64_MAX; break;
    }
    if (i < lo || i > hi) {
        snprintf(fl->err, fl->errlen, "element %lld (%lld) is out of range for %s", (long long)idx, i,
                 dtype_name(t));
        return -EINVAL;
    }
    memcpy(buf, &i, 8); /* little-endian: the low bytes come first */
    sb_add(fl->out, buf, dtype_size(t));
    return 0;
}

static int flatten_value(flatten *fl, json_t *v, int depth)
{
    if (!json_is_array(v))
        return put_element(fl, v);
    if (depth > DTYPE_MAX_DIMS) {
        snprintf(fl->err, fl->errlen, "is nested more than %d deep", DTYPE_MAX_DIMS);
        return -EINVAL;
    }
    size_t i;
    json_t *e;
    json_array_foreach(v, i, e) {
        if (flatten_value(fl, e, depth + 1) < 0)
            return -EINVAL;
    }
    return 0;
}

/* The leaves of nested arrays, or -1 past DTYPE_MAX_DIMS levels; adds the bytes of string leaves to *text. */
static int64_t count_elements(json_t *v, int depth, size_t *text)
{
    if (!json_is_array(v)) {
        if (json_is_string(v))
            *text += json_string_length(v);
        return 1;
    }
    if (depth > DTYPE_MAX_DIMS)
        return -1;
    int64_t n = 0;
    size_t i;
    json_t *e;
    json_array_foreach(v, i, e) {
        int64_t k = count_elements(e, depth + 1, text);
        if (k < 0)
            return -1;
        n += k;
    }
    return n;
}

int tensor_from_json(json_t *data, dtype t, int64_t nelem, sb *out, char *err, size_t errlen)
{
    flatten fl = {.t = t, .want = nelem, .out = out, .err = err, .errlen = errlen};
    if (!json_is_array(data)) {
        snprintf(err, errlen, "data must be an array");
        return -EINVAL;
    }
    /* Count before reserving: the shape is only a claim, the array is the data. */
    size_t text = 0;
    int64_t have = count_elements(data, 0, &text);
    if (have < 0) {
        snprintf(err, errlen, "is nested more than %d deep", DTYPE_MAX_DIMS);
        return -EINVAL;
    }
    if (have != nelem) {
        snprintf(err, errlen, "has %lld elements but its shape holds %lld", (long long)have, (long long)nelem);
        return -EINVAL;
    }
    /* the raw size: fixed-size elements, or each string with its 4-byte length */
    size_t need = dtype_size(t) ? (size_t)nelem * dtype_size(t) : text + 4 * (size_t)nelem;
    if (sb_try_reserve(out, need) < 0) {
        snprintf(err, errlen, "needs %zu bytes, which cannot be allocated now", need);
        return -ENOMEM;
    }
    if (flatten_value(&fl, data, 0) < 0)
        return -EINVAL;
    assert(fl.seen == nelem);
    return 0;
}

/*
 * Number formatting without printf, which showed in the daemon's profile:
 * integers digit by digit, and short decimals (the common case of model
 * outputs such as 0.25 or 3) by a fast path whose output is the same as
 * "%.*g"'s, falling back to snprintf for everything else.
 */

static void put_uint(sb *out, uint64_t v)
{
    char *p = sb_reserve(out, 24);
    out->len += sb_format_u64(p, v);
}

static void put_int(sb *out, int64_t v)
{
    char *p = sb_reserve(out, 24);
    size_t n = 0;
    uint64_t mag = (uint64_t)v;
    if (v < 0) {
        p[n++] = '-';
        mag = 0 - mag;
    }
    out->len += n + sb_format_u64(p + n, mag);
}

/*
 * "%.*g" of d for digits <= 9 when d is m / 10^k for an integer m of at most
 * `digits` digits and k <= 6, with 1e-4 <= |d| < 10^digits (where %g uses
 * fixed notation): writes it at p (room for 32 bytes) and returns the
 * length, or returns 0 when d is not such a number. Exact for every value
 * of a float or narrower type: such a value that is not exactly m / 10^k
 * is at least 1 / (2^24 * 10^6) away from it relatively, far beyond the
 * rounding of a * 10^k in double precision.
 */
size_t tensor_fast_decimal(char *p, double d, int digits)
{
    static const double pow10[] = {1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9};
    if (digits < 1 || digits > 9 || !isfinite(d))
        return 0;
    double a = fabs(d);
    if (a == 0) {
        if (signbit(d))
            return 0;
        p[0] = '0';
        return 1;
    }
    if (a < 1e-4 || a >= pow10[digits])
        return 0;
    for (int k = 0; k <= 6; k++) {
        double x = a * pow10[k];
        if (x >= pow10[digits])
            return 0; /* more significant digits than %g prints */
        uint64_t m = (uint64_t)x;
        if ((double)m != x)
            continue;
        char digs[20];
        size_t len = sb_format_u64(digs, m), n = 0;
        if (d < 0)
            p[n++] = '-';
        if (k == 0) {
            memcpy(p + n, digs, len);
            return n + len;
        }
        if (len > (size_t)k) {
            memcpy(p + n, digs, len - (size_t)k);
            n += len - (size_t)k;
            p[n++] = '.';
            memcpy(p + n, digs + len - (size_t)k, (size_t)k);
            return n + (size_t)k;
        }
        p[n++] = '0';
        p[n++] = '.';
        for (size_t z = len; z < (size_t)k; z++)
            p[n++] = '0';
        memcpy(p + n, digs, len);
        return n + len;
    }
    return 0;
}

static void put_double(sb *out, double d, int digits)
{
    if (!isfinite(d)) {
        sb_adds(out, "null"); /* JSON has no NaN or Infinity; binary outputs keep them exactly */
        return;
    }
    char *p = sb_reserve(out, 32);
    size_t n = tensor_fast_decimal(p, d, digits);
    if (n == 0)
        n = (size_t)snprintf(p, 32, "%.*g", digits, d);
    out->len += n;
}

size_t tensor_json_bound(dtype t, size_t size, int64_t nelem)
{
    /* per element: a comma, then at most 32 bytes (put_double's room, more
     * than any integer or "false" needs); a BYTES element at most 6 bytes per
     * byte plus its quotes; and room for the last look-ahead reservation */
    size_t n = (size_t)nelem;
    return 2 + 64 + (t == DT_BYTES ? 6 * size + 3 * n : 33 * n);
}

void tensor_to_json(sb *out, dtype t, const uint8_t *data, size_t size, int64_t nelem)
{
    (void)size;
    sb_addc(out, '[');
    size_t off = 0;
    for (int64_t i = 0; i < nelem; i++) {
        if (i)
            sb_addc(out, ',');
        switch (t) {
        case DT_BOOL: sb_adds(out, data[i] ? "true" : "false"); break;
        case DT_UINT8: put_uint(out, data[i]); break;
        case DT_INT8: put_int(out, (int8_t)data[i]); break;
        case DT_UINT16: {
            uint16_t v; memcpy(&v, data + 2 * i, 2);
            put_uint(out, v); break;
        }
        case DT_INT16: {
            int16_t v; memcpy(&v, data + 2 * i, 2);
            put_int(out, v); break;
        }
        case DT_UINT32: {
            uint32_t v; memcpy(&v, data + 4 * i, 4);
            put_uint(out, v); break;
        }
        case DT_INT32: {
            int32_t v; memcpy(&v, data + 4 * i, 4);
            put_int(out, v); break;
        }
        case DT_UINT64: {
            uint64_t v; memcpy(&v, data + 8 * i, 8);
            put_uint(out, v); break;
        }
        case DT_INT64: {
            int64_t v; memcpy(&v, data + 8 * i, 8);
            put_int(out, v); break;
        }
        case DT_FP16: {
            uint16_t v; memcpy(&v, data + 2 * i, 2);
            put_double(out, dtype_half_to_float(v), 5); break;
        }
        case DT_BF16: {
            uint16_t v; memcpy(&v, data + 2 * i, 2);
            put_double(out, dtype_bf16_to_float(v), 4); break;
        }
        case DT_FP32: {
            float v; memcpy(&v, data + 4 * i, 4);
            put_double(out, v, 9); break;
        }
        case DT_FP64: {
            double v; memcpy(&v, data + 8 * i, 8);
            put_double(out, v, 17); break;
        }
        case DT_BYTES: {
            uint32_t n; memcpy(&n, data + off, 4);
            sb_json_str(out, (const char *)data + off + 4, n);
            off += 4 + n;
            break;
        }
        default: break;
        }
    }
    sb_addc(out, ']');
}
