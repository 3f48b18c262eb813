/*
 * tensor — the v2 datatypes and the conversion between JSON tensor data and
 * the raw little-endian layout that the worker protocol and the binary
 * tensor extension both use (so binary HTTP data passes through unchanged).
 */
#ifndef CORRAL_TENSOR_H
#define CORRAL_TENSOR_H

#include "sb.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

typedef enum dtype {
    DT_INVALID = 0,
    DT_BOOL,
    DT_UINT8,
    DT_UINT16,
    DT_UINT32,
    DT_UINT64,
    DT_INT8,
    DT_INT16,
    DT_INT32,
    DT_INT64,
    DT_FP16,
    DT_FP32,
    DT_FP64,
    DT_BF16,
    DT_BYTES,
} dtype;

#define TENSOR_MAX_DIMS 16

dtype dtype_from_name(const char *s, size_t n);
const char *dtype_name(dtype t);
/* Bytes per element; 0 for BYTES, whose elements carry their own length. */
size_t dtype_size(dtype t);

/*
 * Element count of a shape, or -1 when a dimension is negative or the
 * product overflows.
 */
int64_t shape_count(const int64_t *shape, int ndim);

/*
 * Appends the raw form of JSON tensor data (a flat or nested array) to out.
 * nelem is the element count the shape promises. Returns 0, or -EINVAL with
 * a reason in err ("element 3 is not a number").
 */
int tensor_from_json(json_t *data, dtype t, int64_t nelem, sb *out, char *err, size_t errlen);

/*
 * Checks that raw data of size bytes is well formed for nelem elements of t
 * (for BYTES: every length prefix stays inside the buffer). Returns 0 or -EINVAL.
 */
int tensor_check_raw(dtype t, const uint8_t *data, size_t size, int64_t nelem);

/*
 * Appends raw data as a flat JSON array; the data must pass
 * tensor_check_raw. NaN and infinities become null, since JSON cannot
 * carry them.
 */
void tensor_to_json(sb *out, dtype t, const uint8_t *data, size_t size, int64_t nelem);

/*
 * The most bytes tensor_to_json appends for such data (which must pass
 * tensor_check_raw): with that much room reserved first it never grows the
 * buffer, so a response sized by a worker can be refused, not fatal.
 */
size_t tensor_json_bound(dtype t, size_t size, int64_t nelem);

/*
 * The printf-free fast path of tensor_to_json's numbers: writes "%.*g" of d
 * at p (32 bytes of room) and returns its length when d is a short decimal
 * (see tensor.c), else returns 0. d must be a float or narrower value.
 */
size_t tensor_fast_decimal(char *p, double d, int digits);

float half_to_float(uint16_t h);
uint16_t float_to_half(float f);
float bf16_to_float(uint16_t b); /* the upper 16 bits of a float */

#endif
