/*
 * dtype — the KServe v2 datatypes and the arithmetic of the raw tensor
 * layout (row-major, little-endian; BYTES elements as a u32 length and the
 * bytes): names, element sizes, shape products, the well-formedness check
 * of raw data, and the half-precision conversions.
 *
 * Shared by the daemon and the C SDK: linked into both, as proto.c is (the
 * SDK's corral_dtype numbers the datatypes as this enum does, checked in
 * sdk/c/corral_util.c). So it must stay pure: no jansson, no allocation,
 * no global state, nothing beyond C11 and the C library; every function is
 * safe from any thread.
 */
#ifndef CORRAL_DTYPE_H
#define CORRAL_DTYPE_H

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

#define DTYPE_COUNT (DT_BYTES + 1)

/* The most dimensions a shape may have, on both sides (the SDK's CORRAL_MAX_DIMS). */
#define DTYPE_MAX_DIMS 16

/* The datatype named by the n bytes at s ("FP32", case-sensitive), or DT_INVALID. */
dtype dtype_from_name(const char *s, size_t n);
/* "FP32"; "INVALID" for DT_INVALID or a value outside the enum. */
const char *dtype_name(dtype t);
/* Bytes per element; 0 for BYTES, whose elements carry their own length, and for invalid values. */
size_t dtype_size(dtype t);

/*
 * Element count of a shape (1 for ndim 0), or -EINVAL when ndim is outside
 * 0..DTYPE_MAX_DIMS, shape is NULL with ndim > 0, a dimension is negative or
 * the product overflows int64_t.
 */
int64_t dtype_shape_count(const int64_t *shape, int ndim);

/*
 * Checks that size bytes of raw data hold exactly nelem elements of t: for
 * fixed-size types a size of nelem elements (compared by division, so a
 * claimed count cannot wrap around), for BYTES length prefixes that each
 * stay inside the buffer and end exactly at its end. data is read only for
 * BYTES and only within size. Returns 0 or -EINVAL (also for DT_INVALID and
 * a negative nelem).
 */
int dtype_check_raw(dtype t, const uint8_t *data, size_t size, int64_t nelem);

/* IEEE binary16 <-> float; to half rounds to nearest even, overflows to infinity and keeps NaN a NaN. */
float dtype_half_to_float(uint16_t h);
uint16_t dtype_float_to_half(float f);
/* bfloat16 is the upper 16 bits of a float; to bf16 rounds to nearest even and keeps NaN a NaN. */
float dtype_bf16_to_float(uint16_t b);
uint16_t dtype_float_to_bf16(float f);

#endif
