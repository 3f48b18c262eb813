/*
 * Unit tests of dtype, the part shared with the C SDK: datatype names and
 * sizes, shape products, the raw-data check, half and bfloat16 conversion.
 */
#include "check.h"
#include "dtype.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

static void names(void)
{
    for (int t = DT_BOOL; t <= DT_BYTES; t++) {
        const char *n = dtype_name((dtype)t);
        CHECK(dtype_from_name(n, strlen(n)) == (dtype)t);
    }
    CHECK(dtype_from_name("FP33", 4) == DT_INVALID);
    CHECK(dtype_from_name("fp32", 4) == DT_INVALID);
    CHECK(dtype_from_name("FP3", 3) == DT_INVALID);
    CHECK(dtype_from_name("FP32", 3) == DT_INVALID); /* the length counts, not a NUL */
    CHECK(dtype_from_name("INVALID", 7) == DT_INVALID);
    CHECK(dtype_from_name(NULL, 0) == DT_INVALID);
    CHECK(strcmp(dtype_name(DT_INVALID), "INVALID") == 0);
    CHECK(strcmp(dtype_name((dtype)DTYPE_COUNT), "INVALID") == 0);
    CHECK(strcmp(dtype_name((dtype)-1), "INVALID") == 0);
}

static void sizes(void)
{
    static const size_t want[DTYPE_COUNT] = {
        [DT_BOOL] = 1, [DT_UINT8] = 1,  [DT_UINT16] = 2, [DT_UINT32] = 4, [DT_UINT64] = 8,
        [DT_INT8] = 1, [DT_INT16] = 2,  [DT_INT32] = 4,  [DT_INT64] = 8,  [DT_FP16] = 2,
        [DT_FP32] = 4, [DT_FP64] = 8,   [DT_BF16] = 2,   [DT_BYTES] = 0,
    };
    for (int t = 0; t < DTYPE_COUNT; t++)
        CHECK(dtype_size((dtype)t) == want[t]);
    CHECK(dtype_size((dtype)DTYPE_COUNT) == 0);
}

/* A claimed element count times the element size must not wrap around to the real size. */
static void raw_count_does_not_wrap(void)
{
    uint8_t byte = 0;
    CHECK(dtype_check_raw(DT_FP32, &byte, 0, 1LL << 62) == -EINVAL);
    CHECK(dtype_check_raw(DT_INT64, &byte, 0, 1LL << 61) == -EINVAL);
    CHECK(dtype_check_raw(DT_FP32, &byte, 0, 0) == 0);
    CHECK(dtype_check_raw(DT_FP32, &byte, 1, 0) == -EINVAL);
    CHECK(dtype_check_raw(DT_BYTES, &byte, 0, 1LL << 62) == -EINVAL);
}

static void half_precision(void)
{
    CHECK(dtype_half_to_float(0x3c00) == 1.0f);
    CHECK(dtype_half_to_float(0xc000) == -2.0f);
    CHECK(dtype_half_to_float(0x7bff) == 65504.0f);
    CHECK(dtype_half_to_float(0x0001) == ldexpf(1, -24)); /* smallest subnormal */
    CHECK(isinf(dtype_half_to_float(0x7c00)));
    CHECK(isnan(dtype_half_to_float(0x7e00)));
    CHECK(dtype_float_to_half(1.0f) == 0x3c00);
    CHECK(dtype_float_to_half(65504.0f) == 0x7bff);
    CHECK(dtype_float_to_half(1e6f) == 0x7c00); /* overflow to infinity */
    CHECK(dtype_float_to_half(ldexpf(1, -24)) == 0x0001);
    CHECK(dtype_float_to_half(ldexpf(1, -30)) == 0x0000);
    CHECK((dtype_float_to_half(NAN) & 0x7c00) == 0x7c00 && (dtype_float_to_half(NAN) & 0x3ff));
    for (uint32_t h = 0; h < 0x7c00; h++) /* every finite positive half survives the round trip */
        if (dtype_float_to_half(dtype_half_to_float((uint16_t)h)) != h) {
            CHECK(0);
            break;
        }
}

static void raw_checks(void)
{
    uint8_t bytes[] = {2, 0, 0, 0, 'h', 'i', 0, 0, 0, 0};
    CHECK(dtype_check_raw(DT_BYTES, bytes, sizeof bytes, 2) == 0);
    CHECK(dtype_check_raw(DT_BYTES, bytes, sizeof bytes, 1) == -EINVAL);      /* trailing bytes */
    CHECK(dtype_check_raw(DT_BYTES, bytes, sizeof bytes, 3) == -EINVAL);      /* runs out */
    bytes[0] = 200;                                                            /* length past the end */
    CHECK(dtype_check_raw(DT_BYTES, bytes, sizeof bytes, 2) == -EINVAL);
    CHECK(dtype_check_raw(DT_FP32, bytes, 8, 2) == 0);
    CHECK(dtype_check_raw(DT_FP32, bytes, 7, 2) == -EINVAL);
    CHECK(dtype_check_raw(DT_BYTES, NULL, 0, 0) == 0);              /* no elements, nothing read */
    CHECK(dtype_check_raw(DT_BYTES, bytes, sizeof bytes, 0) == -EINVAL);
    uint8_t long_len[] = {0, 1, 0, 0, 'x'}; /* little-endian: 256, not 1 */
    CHECK(dtype_check_raw(DT_BYTES, long_len, sizeof long_len, 1) == -EINVAL);
    CHECK(dtype_check_raw(DT_FP32, bytes, 8, -1) == -EINVAL);
    CHECK(dtype_check_raw(DT_INVALID, bytes, 8, 8) == -EINVAL);
    CHECK(dtype_check_raw((dtype)DTYPE_COUNT, bytes, 8, 8) == -EINVAL);
}

static void shape_counts(void)
{
    int64_t shape[] = {2, 3, 4};
    CHECK(dtype_shape_count(shape, 3) == 24);
    CHECK(dtype_shape_count(shape, 0) == 1);
    CHECK(dtype_shape_count(NULL, 0) == 1); /* a scalar */
    CHECK(dtype_shape_count(NULL, 1) == -EINVAL);
    CHECK(dtype_shape_count(shape, -1) == -EINVAL);
    int64_t huge[] = {INT64_MAX, 2};
    CHECK(dtype_shape_count(huge, 2) == -EINVAL);
    CHECK(dtype_shape_count(huge, 1) == INT64_MAX);
    int64_t empty[] = {INT64_MAX, 0, INT64_MAX}; /* a zero dimension: no overflow, no elements */
    CHECK(dtype_shape_count(empty, 3) == 0);
    int64_t negative[] = {2, -1};
    CHECK(dtype_shape_count(negative, 2) == -EINVAL);
    int64_t twos[DTYPE_MAX_DIMS + 1];
    for (int i = 0; i <= DTYPE_MAX_DIMS; i++)
        twos[i] = 2;
    CHECK(dtype_shape_count(twos, DTYPE_MAX_DIMS) == 1 << DTYPE_MAX_DIMS);
    CHECK(dtype_shape_count(twos, DTYPE_MAX_DIMS + 1) == -EINVAL);
}


static void bfloat16(void)
{
    CHECK(dtype_bf16_to_float(0x3f80) == 1.0f);
    CHECK(dtype_bf16_to_float(0xc000) == -2.0f);
    CHECK(dtype_float_to_bf16(1.0f) == 0x3f80);
    CHECK(dtype_float_to_bf16(1.0f + ldexpf(1, -8)) == 0x3f80);     /* a tie goes to even */
    CHECK(dtype_float_to_bf16(1.0f + 3 * ldexpf(1, -8)) == 0x3f82); /* ... here upward */
    CHECK(dtype_float_to_bf16(1.0f + 5 * ldexpf(1, -9)) == 0x3f81); /* above the tie: up */
    CHECK(dtype_float_to_bf16(INFINITY) == 0x7f80);
    CHECK(dtype_float_to_bf16(3.4028234663852886e38f) == 0x7f80); /* FLT_MAX rounds to infinity */
    CHECK(isnan(dtype_bf16_to_float(dtype_float_to_bf16(NAN))));
    for (uint32_t b = 0; b < 0x7f80; b++) /* every finite positive bfloat16 survives the round trip */
        if (dtype_float_to_bf16(dtype_bf16_to_float((uint16_t)b)) != b) {
            CHECK(0);
            break;
        }
}

CHECK_MAIN(CASE(names), CASE(sizes), CASE(shape_counts), CASE(raw_checks), CASE(raw_count_does_not_wrap),
           CASE(half_precision), CASE(bfloat16))
