/*
 * Unit tests of tensor: JSON to raw and back for every datatype, and the
 * printf-free number formatting. The datatypes themselves are test_dtype.c's.
 */
#include "check.h"
#include "tensor.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>

static char *to_json(dtype t, const sb *raw, int64_t n)
{
    sb out;
    sb_init(&out, 64);
    tensor_to_json(&out, t, (const uint8_t *)raw->p, raw->len, n);
    return sb_take(&out, NULL);
}

/* Parses json_text as data for n elements of t and renders it back. */
static char *roundtrip(dtype t, const char *json_text, int64_t n, int *rc)
{
    json_t *data = json_loads(json_text, 0, NULL);
    sb raw;
    sb_init(&raw, 16);
    char err[256] = "";
    *rc = tensor_from_json(data, t, n, &raw, err, sizeof err);
    json_decref(data);
    char *out = *rc == 0 ? to_json(t, &raw, n) : strdup(err);
    sb_free(&raw);
    return out;
}

static void expect_roundtrip(dtype t, const char *in, int64_t n, const char *want)
{
    int rc;
    char *out = roundtrip(t, in, n, &rc);
    CHECK(rc == 0);
    if (strcmp(out, want) != 0) {
        fprintf(stderr, "  %s %s -> %s, want %s\n", dtype_name(t), in, out, want);
        CHECK(0);
    }
    free(out);
}

static void expect_error(dtype t, const char *in, int64_t n, const char *reason)
{
    int rc;
    char *out = roundtrip(t, in, n, &rc);
    CHECK(rc == -EINVAL);
    CHECK_STR_CONTAINS(out, reason);
    free(out);
}

static void every_datatype(void)
{
    expect_roundtrip(DT_BOOL, "[true, false, 1, 0]", 4, "[true,false,true,false]");
    expect_roundtrip(DT_UINT8, "[0, 255]", 2, "[0,255]");
    expect_roundtrip(DT_UINT16, "[0, 65535]", 2, "[0,65535]");
    expect_roundtrip(DT_UINT32, "[4294967295]", 1, "[4294967295]");
    expect_roundtrip(DT_UINT64, "[9223372036854775807]", 1, "[9223372036854775807]");
    expect_roundtrip(DT_INT8, "[-128, 127]", 2, "[-128,127]");
    expect_roundtrip(DT_INT16, "[-32768, 32767]", 2, "[-32768,32767]");
    expect_roundtrip(DT_INT32, "[-2147483648, 2147483647]", 2, "[-2147483648,2147483647]");
    expect_roundtrip(DT_INT64, "[-9223372036854775808, 5]", 2, "[-9223372036854775808,5]");
    expect_roundtrip(DT_FP16, "[1.5, -2, 0.0009765625, 65504]", 4, "[1.5,-2,0.00097656,65504]");
    expect_roundtrip(DT_BF16, "[1.5, -2, 256]", 3, "[1.5,-2,256]");
    expect_roundtrip(DT_FP32, "[1.5, 0.1, -3]", 3, "[1.5,0.100000001,-3]");
    expect_roundtrip(DT_FP64, "[0.1, 1e300]", 2, "[0.10000000000000001,1.0000000000000001e+300]");
    expect_roundtrip(DT_BYTES, "[\"ab\", \"\", \"h\\u00e9\\\"\"]", 3, "[\"ab\",\"\",\"h\xc3\xa9\\\"\"]");
}

static void nested_and_empty(void)
{
    expect_roundtrip(DT_INT32, "[[1, 2, 3], [4, 5, 6]]", 6, "[1,2,3,4,5,6]");
    expect_roundtrip(DT_FP32, "[]", 0, "[]");
    expect_roundtrip(DT_BYTES, "[[\"a\"], [\"b\"]]", 2, "[\"a\",\"b\"]");
}

static void bad_data(void)
{
    expect_error(DT_INT8, "[128]", 1, "out of range for INT8");
    expect_error(DT_UINT8, "[-1]", 1, "out of range");
    expect_error(DT_INT32, "[1.5]", 1, "element 0 is not an integer");
    expect_error(DT_FP32, "[\"x\"]", 1, "not a number");
    expect_error(DT_BOOL, "[2]", 1, "not a boolean");
    expect_error(DT_BYTES, "[1]", 1, "not a string");
    expect_error(DT_INT32, "[1, 2, 3]", 2, "has 3 elements but its shape holds 2");
    expect_error(DT_INT32, "[1]", 2, "has 1 elements but its shape holds 2");
    expect_error(DT_INT32, "{\"a\": 1}", 1, "data must be an array");
    expect_error(DT_FP16, "[1e6]", 1, "out of range for FP16");
    expect_error(DT_FP32, "[-1e39]", 1, "out of range for FP32");
    expect_error(DT_BF16, "[1e39]", 1, "out of range for BF16");
}

/* A shape is a claim: nothing is reserved for it before the elements are counted. */
static void claimed_shape_allocates_nothing(void)
{
    json_t *data = json_loads("[1]", 0, NULL);
    sb out;
    sb_init(&out, 16);
    char err[256];
    CHECK(tensor_from_json(data, DT_INT8, 1LL << 30, &out, err, sizeof err) == -EINVAL);
    CHECK(strstr(err, "has 1 elements but its shape holds 1073741824") != NULL);
    CHECK(out.cap == 16);
    CHECK(tensor_from_json(data, DT_FP64, 1LL << 40, &out, err, sizeof err) == -EINVAL);
    CHECK(out.cap == 16);
    sb_free(&out);
    json_decref(data);
}

static void uint64_out_of_range_says_so(void)
{
    expect_error(DT_UINT64, "[\"18446744073709551616\"]", 1, "out of range for UINT64");
    expect_error(DT_UINT64, "[\"123456789012345678901234567890\"]", 1, "out of range for UINT64");
    expect_error(DT_INT64, "[\"9223372036854775808\"]", 1, "out of range for INT64");
}

static void invalid_utf8_bytes(void)
{
    uint8_t raw[] = {3, 0, 0, 0, 0xff, 'a', 0xc3};
    sb out;
    sb_init(&out, 16);
    tensor_to_json(&out, DT_BYTES, raw, sizeof raw, 1);
    char *s = sb_take(&out, NULL);
    CHECK(strcmp(s, "[\"\\u00ffa\\u00c3\"]") == 0);
    json_t *parsed = json_loads(s, 0, NULL); /* still valid JSON */
    CHECK(parsed != NULL);
    json_decref(parsed);
    free(s);
}

static void non_finite_is_null(void)
{
    float v[3] = {NAN, INFINITY, 1.0f};
    sb raw = {(char *)v, sizeof v, sizeof v};
    char *s = to_json(DT_FP32, &raw, 3);
    CHECK(strcmp(s, "[null,null,1]") == 0);
    free(s);
}

/* The fast decimal path prints exactly what "%.*g" prints, or declines. */
static void expect_fast_like_printf(double d, int digits, int *taken)
{
    char fast[32], slow[32];
    size_t n = tensor_fast_decimal(fast, d, digits);
    if (n == 0)
        return;
    fast[n] = 0;
    (*taken)++;
    snprintf(slow, sizeof slow, "%.*g", digits, d);
    if (strcmp(fast, slow) != 0) {
        fprintf(stderr, "  %.17g at %d digits: fast %s, printf %s\n", d, digits, fast, slow);
        CHECK(0);
    }
}

static void fast_decimal(void)
{
    int taken = 0;
    /* Short decimals of every scale, both signs, as float. */
    for (int m = 0; m < 200000; m += 7)
        for (int k = 0; k <= 8; k++) {
            float v = (float)(m / pow(10, k));
            expect_fast_like_printf(v, 9, &taken);
            expect_fast_like_printf(-v, 9, &taken);
        }
    /* Random float bit patterns, and the same values at half and bfloat16 precision. */
    uint32_t x = 12345;
    for (int i = 0; i < 2000000; i++) {
        x = x * 1664525u + 1013904223u;
        float v;
        memcpy(&v, &x, 4);
        expect_fast_like_printf(v, 9, &taken);
        uint16_t h = dtype_float_to_half(v);
        expect_fast_like_printf(dtype_half_to_float(h), 5, &taken);
    }
    for (int i = 0; i < 65536; i++) {
        expect_fast_like_printf(dtype_half_to_float((uint16_t)i), 5, &taken);
        expect_fast_like_printf(dtype_bf16_to_float((uint16_t)i), 4, &taken);
    }
    CHECK(taken > 100000); /* the fast path was exercised, not only declined */
    char buf[32];
    CHECK(tensor_fast_decimal(buf, -0.0, 9) == 0);  /* "-0": left to printf */
    CHECK(tensor_fast_decimal(buf, 1e-5, 9) == 0);  /* exponent notation */
    CHECK(tensor_fast_decimal(buf, 1e9, 9) == 0);
    CHECK(tensor_fast_decimal(buf, 0.1f, 9) == 0);  /* not a short decimal in binary */
    CHECK(tensor_fast_decimal(buf, 1.5, 17) == 0);  /* double precision: printf */
}

CHECK_MAIN(CASE(fast_decimal), CASE(non_finite_is_null), CASE(every_datatype), CASE(nested_and_empty), CASE(bad_data),
           CASE(invalid_utf8_bytes), CASE(claimed_shape_allocates_nothing), CASE(uint64_out_of_range_says_so))
