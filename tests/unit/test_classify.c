/* Unit tests for classify: labels, the top K and its order, Triton's value format, the BYTES result. */
#include "check.h"
#include "classify.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

static void test_labels(void)
{
    const char text[] = "cat\ndog\r\n\n\xff\xfe bird";
    classify_labels *l = classify_labels_parse(text, sizeof text - 1);
    CHECK(classify_labels_count(l) == 4);
    size_t n = 99;
    const char *s = classify_label(l, 0, &n);
    CHECK(s && n == 3 && memcmp(s, "cat", 3) == 0);
    s = classify_label(l, 1, &n);
    CHECK(s && n == 3 && memcmp(s, "dog", 3) == 0); /* the CR is dropped */
    s = classify_label(l, 2, &n);
    CHECK(s && n == 0);                             /* an empty line is an empty label */
    s = classify_label(l, 3, &n);
    CHECK(s && n == 7 && memcmp(s, "\xff\xfe bird", 7) == 0); /* the last line needs no newline */
    CHECK(classify_label(l, 4, &n) == NULL && classify_label(l, UINT64_MAX, &n) == NULL);
    CHECK(classify_label(NULL, 0, &n) == NULL);
    classify_labels *again = classify_labels_ref(l);
    classify_labels_unref(l);
    CHECK(classify_label(again, 0, &n) != NULL); /* still held */
    classify_labels_unref(again);
    classify_labels_unref(NULL);

    classify_labels *trailing = classify_labels_parse("a\nb\n", 4);
    CHECK(classify_labels_count(trailing) == 2);
    classify_labels_unref(trailing);
    classify_labels *empty = classify_labels_parse("", 0);
    CHECK(classify_labels_count(empty) == 0 && classify_label(empty, 0, &n) == NULL);
    classify_labels_unref(empty);
    classify_labels *blank = classify_labels_parse("\n", 1);
    CHECK(classify_labels_count(blank) == 1 && classify_label(blank, 0, &n) && n == 0);
    classify_labels_unref(blank);
}

static void test_labels_read(void)
{
    char dir[] = "/tmp/test_classify.XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[128], err[256];
    snprintf(path, sizeof path, "%s/labels.txt", dir);
    classify_labels *l = (classify_labels *)1;
    CHECK(classify_labels_read(path, &l, err, sizeof err) == 0 && l == NULL); /* none */
    FILE *f = fopen(path, "wb");
    fputs("x\ny\n", f);
    fclose(f);
    CHECK(classify_labels_read(path, &l, err, sizeof err) == 0 && classify_labels_count(l) == 2);
    classify_labels_unref(l);
    f = fopen(path, "wb");
    for (unsigned i = 0; i <= CLASSIFY_LABELS_MAX; i += 4)
        fputs("abc\n", f);
    fclose(f);
    CHECK(classify_labels_read(path, &l, err, sizeof err) == -EFBIG && l == NULL);
    CHECK_STR_CONTAINS(err, "larger than 16777216 bytes");
    unlink(path);
    CHECK(classify_labels_read(dir, &l, err, sizeof err) < 0 && l == NULL); /* a directory */
    rmdir(dir);
}

static void test_supported(void)
{
    CHECK(!classify_supported(DT_BOOL) && !classify_supported(DT_BYTES) && !classify_supported(DT_INVALID));
    for (int t = DT_UINT8; t <= DT_BF16; t++)
        CHECK(classify_supported((dtype)t));
}

static void test_topk_order(void)
{
    float v[] = {0.5f, 2.0f, NAN, 2.0f, -INFINITY, 7.0f, 0.5f};
    size_t idx[7];
    classify_topk(DT_FP32, (const uint8_t *)v, 7, 7, idx);
    size_t want[] = {5, 1, 3, 0, 6, 4, 2}; /* ties by index, NaN last */
    for (int i = 0; i < 7; i++)
        CHECK(idx[i] == want[i]);
    classify_topk(DT_FP32, (const uint8_t *)v, 7, 3, idx);
    CHECK(idx[0] == 5 && idx[1] == 1 && idx[2] == 3);
    classify_topk(DT_FP32, (const uint8_t *)v, 7, 1, idx);
    CHECK(idx[0] == 5);

    /* all equal: the first k indices, in order */
    int32_t same[50];
    for (int i = 0; i < 50; i++)
        same[i] = 4;
    size_t first[10];
    classify_topk(DT_INT32, (const uint8_t *)same, 50, 10, first);
    for (size_t i = 0; i < 10; i++)
        CHECK(first[i] == i);

    /* UINT64 beyond 2^53 and INT64 extremes compare exactly */
    uint64_t u[] = {UINT64_MAX - 1, UINT64_MAX, (1ull << 53) + 1, 1ull << 53};
    size_t ui[4];
    classify_topk(DT_UINT64, (const uint8_t *)u, 4, 4, ui);
    CHECK(ui[0] == 1 && ui[1] == 0 && ui[2] == 2 && ui[3] == 3);
    int64_t s[] = {INT64_MIN, INT64_MAX, INT64_MAX - 1, -1};
    classify_topk(DT_INT64, (const uint8_t *)s, 4, 2, ui);
    CHECK(ui[0] == 1 && ui[1] == 2);
}

/* A larger random input against a plain selection: the heap must keep exactly the k best. */
static void test_topk_random(void)
{
    enum { N = 2000, K = 37 };
    int16_t v[N];
    srand(7);
    for (int i = 0; i < N; i++)
        v[i] = (int16_t)(rand() % 200 - 100);
    size_t idx[K];
    classify_topk(DT_INT16, (const uint8_t *)v, N, K, idx);
    char taken[N] = {0};
    for (int e = 0; e < K; e++) {
        /* the best element not yet taken, the lowest index among equals */
        int best = -1;
        for (int i = 0; i < N; i++)
            if (!taken[i] && (best < 0 || v[i] > v[best]))
                best = i;
        taken[best] = 1;
        CHECK(idx[e] == (size_t)best);
    }
}

static void test_format(void)
{
    char buf[CLASSIFY_VALUE_MAX];
    int8_t i8[] = {-128};
    CHECK(classify_format_value(DT_INT8, (const uint8_t *)i8, 0, buf) == 4 && strcmp(buf, "-128") == 0);
    uint64_t u64[] = {UINT64_MAX};
    classify_format_value(DT_UINT64, (const uint8_t *)u64, 0, buf);
    CHECK(strcmp(buf, "18446744073709551615") == 0);
    int64_t i64[] = {INT64_MIN};
    classify_format_value(DT_INT64, (const uint8_t *)i64, 0, buf);
    CHECK(strcmp(buf, "-9223372036854775808") == 0);
    float f[] = {0.7f, 1e-7f, -0.0f, INFINITY};
    classify_format_value(DT_FP32, (const uint8_t *)f, 0, buf);
    CHECK(strcmp(buf, "0.700000") == 0);
    classify_format_value(DT_FP32, (const uint8_t *)f, 1, buf);
    CHECK(strcmp(buf, "0.000000") == 0);
    classify_format_value(DT_FP32, (const uint8_t *)f, 2, buf);
    CHECK(strcmp(buf, "-0.000000") == 0);
    classify_format_value(DT_FP32, (const uint8_t *)f, 3, buf);
    CHECK(strcmp(buf, "inf") == 0);
    double big[] = {-1.7976931348623157e308};
    size_t n = classify_format_value(DT_FP64, (const uint8_t *)big, 0, buf);
    CHECK(n == 317 && n < CLASSIFY_VALUE_MAX && strncmp(buf, "-17976931348623157", 18) == 0);
    uint16_t h[] = {dtype_float_to_half(1.5f)}, b[] = {dtype_float_to_bf16(-2.5f)};
    classify_format_value(DT_FP16, (const uint8_t *)h, 0, buf);
    CHECK(strcmp(buf, "1.500000") == 0);
    classify_format_value(DT_BF16, (const uint8_t *)b, 0, buf);
    CHECK(strcmp(buf, "-2.500000") == 0);
}

/* The BYTES result as a list of strings joined by '|'. */
static void strings_of(const sb *out, char *joined, size_t len)
{
    size_t at = 0, w = 0;
    joined[0] = 0;
    while (at + 4 <= out->len) {
        uint32_t n;
        memcpy(&n, out->p + at, 4);
        w += (size_t)snprintf(joined + w, len - w, "%s%.*s", at ? "|" : "", (int)n, out->p + at + 4);
        at += 4 + n;
    }
}

static void test_output(void)
{
    int32_t v[] = {1, 9, 2, 8, 3, 7};
    classify_labels *l = classify_labels_parse("a\nb\n", 4);
    int64_t dims[2], count;
    int ndim;
    char joined[256];
    sb out;

    /* not batched: the whole tensor */
    sb_init(&out, 16);
    CHECK(classify_output(DT_INT32, (int64_t[]){2, 3}, 2, 0, (const uint8_t *)v, 2, l, &out, dims, &ndim, &count) == 0);
    CHECK(ndim == 1 && dims[0] == 2 && count == 2);
    CHECK(dtype_check_raw(DT_BYTES, (const uint8_t *)out.p, out.len, count) == 0);
    strings_of(&out, joined, sizeof joined);
    CHECK(strcmp(joined, "9:1:b|8:3") == 0);
    sb_free(&out);

    /* batched: each row, K past the row's size keeps all of it */
    sb_init(&out, 16);
    CHECK(classify_output(DT_INT32, (int64_t[]){2, 3}, 2, 1, (const uint8_t *)v, 5, l, &out, dims, &ndim, &count) == 0);
    CHECK(ndim == 2 && dims[0] == 2 && dims[1] == 3 && count == 6);
    strings_of(&out, joined, sizeof joined);
    CHECK(strcmp(joined, "9:1:b|2:2|1:0:a|8:0:a|7:2|3:1:b") == 0);
    sb_free(&out);

    /* batched but a scalar: one row */
    sb_init(&out, 16);
    CHECK(classify_output(DT_INT32, NULL, 0, 1, (const uint8_t *)v, 3, NULL, &out, dims, &ndim, &count) == 0);
    CHECK(ndim == 1 && dims[0] == 1 && count == 1);
    strings_of(&out, joined, sizeof joined);
    CHECK(strcmp(joined, "1:0") == 0);
    sb_free(&out);

    /* no rows, or rows of nothing */
    sb_init(&out, 16);
    CHECK(classify_output(DT_INT32, (int64_t[]){0, 3}, 2, 1, (const uint8_t *)v, 2, l, &out, dims, &ndim, &count) == 0);
    CHECK(ndim == 2 && dims[0] == 0 && dims[1] == 2 && count == 0 && out.len == 0);
    CHECK(classify_output(DT_INT32, (int64_t[]){0}, 1, 0, (const uint8_t *)v, 2, l, &out, dims, &ndim, &count) == 0);
    CHECK(ndim == 1 && dims[0] == 0 && count == 0 && out.len == 0);

    /* more entries than the result may hold: refused before anything is allocated for them */
    CHECK(classify_output(DT_INT32, (int64_t[]){1u << 28}, 1, 0, (const uint8_t *)v, UINT64_MAX, l, &out, dims, &ndim,
                          &count) == -EFBIG);
    CHECK(out.len == 0);
    CHECK(classify_output(DT_BOOL, (int64_t[]){2}, 1, 0, (const uint8_t *)v, 1, l, &out, dims, &ndim, &count) ==
          -EINVAL);
    CHECK(classify_output(DT_BYTES, (int64_t[]){2}, 1, 0, (const uint8_t *)v, 1, l, &out, dims, &ndim, &count) ==
          -EINVAL);
    sb_free(&out);
    classify_labels_unref(l);
}

CHECK_MAIN(CASE(test_labels), CASE(test_labels_read), CASE(test_supported), CASE(test_topk_order),
           CASE(test_topk_random), CASE(test_format), CASE(test_output))
