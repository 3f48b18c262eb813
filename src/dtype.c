/*
 * dtype — v2 datatypes and raw-layout arithmetic, shared by the daemon and
 * the C SDK; see dtype.h. Plain C11 and the C library only, since the SDK
 * compiles it under its own strict flags.
 */
#include "dtype.h"

#include <errno.h>
#include <string.h>

static const struct {
    const char *name;
    size_t size;
} dtypes[DTYPE_COUNT] = {
    [DT_INVALID] = {"INVALID", 0}, [DT_BOOL] = {"BOOL", 1},     [DT_UINT8] = {"UINT8", 1},
    [DT_UINT16] = {"UINT16", 2},   [DT_UINT32] = {"UINT32", 4}, [DT_UINT64] = {"UINT64", 8},
    [DT_INT8] = {"INT8", 1},       [DT_INT16] = {"INT16", 2},   [DT_INT32] = {"INT32", 4},
    [DT_INT64] = {"INT64", 8},     [DT_FP16] = {"FP16", 2},     [DT_FP32] = {"FP32", 4},
    [DT_FP64] = {"FP64", 8},       [DT_BF16] = {"BF16", 2},     [DT_BYTES] = {"BYTES", 0},
};

dtype dtype_from_name(const char *s, size_t n)
{
    if (!s)
        return DT_INVALID;
    for (int t = DT_BOOL; t < DTYPE_COUNT; t++)
        if (strlen(dtypes[t].name) == n && memcmp(dtypes[t].name, s, n) == 0)
            return (dtype)t;
    return DT_INVALID;
}

const char *dtype_name(dtype t)
{
    return (unsigned)t < DTYPE_COUNT ? dtypes[t].name : dtypes[DT_INVALID].name;
}

size_t dtype_size(dtype t)
{
    return (unsigned)t < DTYPE_COUNT ? dtypes[t].size : 0;
}

int64_t dtype_shape_count(const int64_t *shape, int ndim)
{
    if (ndim < 0 || ndim > DTYPE_MAX_DIMS || (ndim > 0 && !shape))
        return -EINVAL;
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return -EINVAL;
        if (shape[i] != 0 && n > INT64_MAX / shape[i])
            return -EINVAL;
        n *= shape[i];
    }
    return n;
}

int dtype_check_raw(dtype t, const uint8_t *data, size_t size, int64_t nelem)
{
    if (nelem < 0 || t == DT_INVALID || (unsigned)t >= DTYPE_COUNT)
        return -EINVAL;
    if (t != DT_BYTES) /* divided, not multiplied: a claimed count must not wrap around */
        return (uint64_t)nelem == size / dtype_size(t) && size % dtype_size(t) == 0 ? 0 : -EINVAL;
    size_t off = 0;
    for (int64_t i = 0; i < nelem; i++) {
        if (size - off < 4)
            return -EINVAL;
        const uint8_t *p = data + off; /* the length is little-endian on every host */
        uint32_t n = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
        off += 4;
        if (n > size - off)
            return -EINVAL;
        off += n;
    }
    return off == size ? 0 : -EINVAL;
}

/*
 * The conversions work on the bit patterns; a float's bits are read and
 * written with memcpy, which has no endianness of its own.
 */

float dtype_half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    uint32_t bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else { /* subnormal: renormalise */
            exp = 127 - 15 + 1;
            while (!(mant & 0x400)) {
                mant <<= 1;
                exp--;
            }
            bits = sign | exp << 23 | (mant & 0x3ff) << 13;
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000 | mant << 13;
    } else {
        bits = sign | (exp + 127 - 15) << 23 | mant << 13;
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t dtype_float_to_half(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    int32_t exp = (int32_t)((x >> 23) & 0xff) - 127 + 15;
    uint32_t mant = x & 0x7fffff;
    if (((x >> 23) & 0xff) == 0xff)
        return (uint16_t)(sign | 0x7c00 | (mant ? 0x200 : 0));
    if (exp >= 31)
        return (uint16_t)(sign | 0x7c00);
    if (exp <= 0) {
        if (exp < -10)
            return sign;
        mant |= 0x800000;
        uint32_t shift = (uint32_t)(14 - exp);
        uint32_t half = mant >> shift;
        uint32_t rem = mant & ((1u << shift) - 1);
        uint32_t mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1)))
            half++;
        return (uint16_t)(sign | half);
    }
    uint32_t half = (uint32_t)exp << 10 | mant >> 13;
    uint32_t rem = mant & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (half & 1)))
        half++; /* may carry into the exponent, which is the right rounding */
    return (uint16_t)(sign | half);
}

float dtype_bf16_to_float(uint16_t b)
{
    uint32_t x = (uint32_t)b << 16;
    float f;
    memcpy(&f, &x, 4);
    return f;
}

uint16_t dtype_float_to_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffff) > 0x7f800000)
        return (uint16_t)((x >> 16) | 0x40);
    x += 0x7fff + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}
