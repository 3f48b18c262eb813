/*
 * classify — top-K classification of an output tensor; see classify.h.
 */
#include "classify.h"

#include "xmalloc.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

struct classify_labels {
    int refs;
    char *text;       /* the file's bytes */
    size_t n;         /* lines */
    uint32_t *starts; /* n + 1 offsets: line i is text[starts[i], starts[i + 1] - 1), its '\n' excluded */
};

classify_labels *classify_labels_parse(const char *text, size_t len)
{
    assert(len <= CLASSIFY_LABELS_MAX); /* the offsets are 32-bit */
    classify_labels *l = xcalloc(1, sizeof *l);
    l->refs = 1;
    l->text = xmalloc(len + 1);
    memcpy(l->text, text, len);
    l->text[len] = '\n'; /* a last line without its newline ends here */
    size_t lines = 0;
    for (size_t i = 0; i < len; i++)
        lines += text[i] == '\n';
    if (len && text[len - 1] != '\n')
        lines++;
    l->n = lines;
    l->starts = xmalloc((lines + 1) * sizeof *l->starts);
    size_t at = 0;
    l->starts[0] = 0;
    for (size_t i = 0; i < len && at < lines; i++)
        if (l->text[i] == '\n')
            l->starts[++at] = (uint32_t)(i + 1);
    if (at < lines)
        l->starts[++at] = (uint32_t)(len + 1);
    return l;
}

int classify_labels_read(const char *path, classify_labels **out, char *err, size_t errlen)
{
    *out = NULL;
    FILE *f = fopen(path, "rbe");
    if (!f) {
        if (errno == ENOENT)
            return 0;
        int e = errno;
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(e));
        return -e;
    }
    char *text = xmalloc(CLASSIFY_LABELS_MAX + 1);
    size_t len = fread(text, 1, CLASSIFY_LABELS_MAX + 1, f);
    int rc = 0;
    if (ferror(f)) {
        rc = errno ? -errno : -EIO;
        snprintf(err, errlen, "%s: cannot read: %s", path, strerror(-rc));
    } else if (len > CLASSIFY_LABELS_MAX) {
        rc = -EFBIG;
        snprintf(err, errlen, "%s: larger than %u bytes (16 MiB)", path, CLASSIFY_LABELS_MAX);
    } else {
        *out = classify_labels_parse(text, len);
    }
    fclose(f);
    free(text);
    return rc;
}

classify_labels *classify_labels_ref(classify_labels *l)
{
    if (l)
        l->refs++;
    return l;
}

void classify_labels_unref(classify_labels *l)
{
    if (!l || --l->refs > 0)
        return;
    free(l->starts);
    free(l->text);
    free(l);
}

size_t classify_labels_count(const classify_labels *l)
{
    return l ? l->n : 0;
}

const char *classify_label(const classify_labels *l, uint64_t i, size_t *len)
{
    if (!l || i >= l->n)
        return NULL;
    size_t start = l->starts[i], end = l->starts[i + 1] - 1;
    if (end > start && l->text[end - 1] == '\r')
        end--;
    *len = end - start;
    return l->text + start;
}

int classify_supported(dtype t)
{
    return t != DT_INVALID && t != DT_BOOL && t != DT_BYTES && dtype_size(t) > 0;
}

/* ---- top K ---- */

/* Element i as a long double: exact for every integer type (a 64-bit mantissa or more) and every float. */
static long double value_at(dtype t, const uint8_t *data, size_t i)
{
    switch (t) {
    case DT_UINT8: return data[i];
    case DT_INT8: return (int8_t)data[i];
#define AT(type)                                                                                                      \
    do {                                                                                                              \
        type v_;                                                                                                      \
        memcpy(&v_, data + i * sizeof v_, sizeof v_);                                                                 \
        return v_;                                                                                                    \
    } while (0)
    case DT_UINT16: AT(uint16_t);
    case DT_UINT32: AT(uint32_t);
    case DT_UINT64: AT(uint64_t);
    case DT_INT16: AT(int16_t);
    case DT_INT32: AT(int32_t);
    case DT_INT64: AT(int64_t);
    case DT_FP32: AT(float);
    case DT_FP64: AT(double);
#undef AT
    case DT_FP16: {
        uint16_t v;
        memcpy(&v, data + 2 * i, 2);
        return dtype_half_to_float(v);
    }
    case DT_BF16: {
        uint16_t v;
        memcpy(&v, data + 2 * i, 2);
        return dtype_bf16_to_float(v);
    }
    default: return 0; /* can't happen: classify_supported is checked first */
    }
}

typedef struct ranker {
    dtype t;
    const uint8_t *data;
} ranker;

/* Whether element a ranks before element b: a larger value, or an equal one at a lower index; NaN last. */
static int better(const ranker *r, size_t a, size_t b)
{
    long double va = value_at(r->t, r->data, a), vb = value_at(r->t, r->data, b);
    int na = isnan(va), nb = isnan(vb);
    if (na || nb)
        return na && nb ? a < b : nb;
    if (va != vb)
        return va > vb;
    return a < b;
}

/* Restores the heap below node i: every parent ranks after its children (the worst kept is at the top). */
static void sift_down(const ranker *r, size_t *heap, size_t n, size_t i)
{
    for (;;) {
        size_t worst = i, left = 2 * i + 1, right = left + 1;
        if (left < n && better(r, heap[worst], heap[left]))
            worst = left;
        if (right < n && better(r, heap[worst], heap[right]))
            worst = right;
        if (worst == i)
            return;
        size_t tmp = heap[i];
        heap[i] = heap[worst];
        heap[worst] = tmp;
        i = worst;
    }
}

void classify_topk(dtype t, const uint8_t *data, size_t count, size_t k, size_t *idx)
{
    ranker r = {t, data};
    if (k == 0)
        return;
    size_t n = 0;
    for (size_t i = 0; i < count; i++) {
        if (n < k) {
            size_t at = n++;
            idx[at] = i;
            while (at > 0 && better(&r, idx[(at - 1) / 2], idx[at])) {
                size_t parent = (at - 1) / 2, tmp = idx[parent];
                idx[parent] = idx[at];
                idx[at] = tmp;
                at = parent;
            }
        } else if (better(&r, i, idx[0])) {
            /* A later element that only equals the worst kept does not replace it: ties keep the lower index. */
            idx[0] = i;
            sift_down(&r, idx, n, 0);
        }
    }
    /* Heap sort: the worst goes to the end each time, leaving the best first. */
    for (size_t end = n; end > 1; end--) {
        size_t tmp = idx[0];
        idx[0] = idx[end - 1];
        idx[end - 1] = tmp;
        sift_down(&r, idx, end - 1, 0);
    }
}

size_t classify_format_value(dtype t, const uint8_t *data, size_t i, char *buf)
{
    int n;
    switch (t) {
    case DT_UINT8:
    case DT_UINT16:
    case DT_UINT32:
    case DT_UINT64: {
        long double v = value_at(t, data, i);
        n = snprintf(buf, CLASSIFY_VALUE_MAX, "%llu", (unsigned long long)v);
        break;
    }
    case DT_INT8:
    case DT_INT16:
    case DT_INT32:
    case DT_INT64: {
        long double v = value_at(t, data, i);
        n = snprintf(buf, CLASSIFY_VALUE_MAX, "%lld", (long long)v);
        break;
    }
    default: /* floating point: std::to_string's "%f" of the value as a double */
        n = snprintf(buf, CLASSIFY_VALUE_MAX, "%f", (double)value_at(t, data, i));
        break;
    }
    return n < 0 ? 0 : (size_t)n;
}

int classify_output(dtype t, const int64_t *dims, int ndim, int batched, const uint8_t *data, uint64_t k,
                    const classify_labels *labels, sb *out, int64_t *out_dims, int *out_ndim, int64_t *out_count)
{
    if (!classify_supported(t))
        return -EINVAL;
    int64_t count = dtype_shape_count(dims, ndim);
    if (count < 0)
        return -EINVAL;
    int per_row_batch = batched && ndim >= 1;
    uint64_t rows = per_row_batch ? (uint64_t)dims[0] : 1;
    uint64_t per_row = per_row_batch ? (uint64_t)dtype_shape_count(dims + 1, ndim - 1) : (uint64_t)count;
    uint64_t kept = k < per_row ? k : per_row;
    if (per_row_batch) {
        out_dims[0] = (int64_t)rows;
        out_dims[1] = (int64_t)kept;
        *out_ndim = 2;
    } else {
        out_dims[0] = (int64_t)kept;
        *out_ndim = 1;
    }
    *out_count = (int64_t)(rows * kept);
    if (kept == 0 || rows == 0)
        return 0;
    /* Each entry takes 7 bytes at least ("0:0" and its length): more than fit the result are refused
     * before the indices are allocated, so a K of a billion costs nothing. */
    if (rows * kept > CLASSIFY_RESULT_MAX / 7)
        return -EFBIG;
    size_t *idx = malloc((size_t)kept * sizeof *idx);
    if (!idx)
        return -ENOMEM;
    size_t esize = dtype_size(t), start = out->len;
    int rc = 0;
    for (uint64_t row = 0; row < rows && rc == 0; row++) {
        const uint8_t *rd = data + row * per_row * esize;
        classify_topk(t, rd, (size_t)per_row, (size_t)kept, idx);
        for (uint64_t e = 0; e < kept; e++) {
            size_t label_len = 0;
            const char *label = classify_label(labels, idx[e], &label_len);
            size_t need = 4 + CLASSIFY_VALUE_MAX + 22 + label_len;
            if (out->len - start + need > CLASSIFY_RESULT_MAX) {
                rc = -EFBIG;
                break;
            }
            if (sb_try_reserve(out, need) < 0) {
                rc = -ENOMEM;
                break;
            }
            size_t at = out->len;
            out->len += 4; /* the length, written once known */
            char *p = out->p + out->len;
            size_t n = classify_format_value(t, rd, idx[e], p);
            p[n++] = ':';
            n += sb_format_u64(p + n, idx[e]);
            if (label) {
                p[n++] = ':';
                memcpy(p + n, label, label_len);
                n += label_len;
            }
            out->len += n;
            uint32_t len32 = (uint32_t)n;
            memcpy(out->p + at, &len32, 4);
        }
    }
    free(idx);
    return rc;
}
