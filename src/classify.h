/*
 * classify — Triton's classification extension: an output asked for with
 * `"parameters": {"classification": K}` is answered, instead of its raw
 * tensor, with its K largest elements as a BYTES tensor of strings
 * "value:index" or "value:index:label" (docs/api.md, "Classification").
 *
 * As Triton does: the value is printed as C++'s std::to_string prints it
 * (integers in decimal, floating point as "%f": six decimals); the entries
 * are sorted by value, largest first; K larger than the element count
 * gives them all; with batching (max_batch_size > 0) each row of
 * dimension 0 is classified on its own and the shape is [rows, K], else
 * the whole tensor is one and the shape is [K]. Where Triton leaves it
 * open corral decides: equal values keep the lower index first, NaN ranks
 * below every number, and FP16 and BF16 are classified too (as the float
 * they hold). BOOL and BYTES are refused, as Triton refuses them.
 *
 * Labels come from the model directory's labels.txt: line i (0-based) is
 * the label of index i, a trailing CR is dropped, an index past the last
 * line has no label. The file is read once per load (model.c) and at most
 * CLASSIFY_LABELS_MAX bytes of it; its bytes may be anything (they are
 * escaped where they become JSON). A labels set is reference-counted, so a
 * request answered after a reload keeps the labels it started with.
 *
 * Pure apart from classify_labels_read; loop thread only.
 */
#ifndef CORRAL_CLASSIFY_H
#define CORRAL_CLASSIFY_H

#include "dtype.h"
#include "sb.h"

#include <stddef.h>
#include <stdint.h>

/* The largest labels.txt read: 16 MiB. */
#define CLASSIFY_LABELS_MAX (16u << 20)
/* The largest classification result one output may produce: 1 GiB (the worker protocol's frame limit). */
#define CLASSIFY_RESULT_MAX ((size_t)1 << 30)
/* Room for one value as classify_format_value writes it (the largest double in "%f" is 316 bytes). */
#define CLASSIFY_VALUE_MAX 352

typedef struct classify_labels classify_labels;

/* Labels from the bytes of a labels file (copied); len at most CLASSIFY_LABELS_MAX. */
classify_labels *classify_labels_parse(const char *text, size_t len);
/*
 * Reads the labels file at path. Returns 0 with *out (NULL when there is
 * no such file), or a negative errno with the reason, naming the file, in
 * err (unreadable, or larger than CLASSIFY_LABELS_MAX: -EFBIG).
 */
int classify_labels_read(const char *path, classify_labels **out, char *err, size_t errlen);
classify_labels *classify_labels_ref(classify_labels *l);
/* Drops a reference; NULL is fine. */
void classify_labels_unref(classify_labels *l);
/* How many lines the labels have. */
size_t classify_labels_count(const classify_labels *l);
/* The label of index i and its length, or NULL when l is NULL or has no line i. */
const char *classify_label(const classify_labels *l, uint64_t i, size_t *len);

/* Whether an output of datatype t can be classified: every numeric type, not BOOL or BYTES. */
int classify_supported(dtype t);

/*
 * The indices of the k largest of the count elements at data (k <= count),
 * best first, into idx (room for k): O(count log k). t must be supported.
 */
void classify_topk(dtype t, const uint8_t *data, size_t count, size_t k, size_t *idx);

/* Writes element i of data as Triton prints it at buf (CLASSIFY_VALUE_MAX bytes, NUL-terminated); returns its length. */
size_t classify_format_value(dtype t, const uint8_t *data, size_t i, char *buf);

/*
 * Classifies an output (datatype t, shape dims[0..ndim), count elements of
 * raw data) keeping the k best per row (rows along dimension 0 when
 * batched and ndim >= 1, else one row), and appends the BYTES tensor's raw
 * data (u32 length, bytes; per row, best first) to out. Sets its shape in
 * out_dims/out_ndim and element count in out_count. Returns 0, -EINVAL
 * when t cannot be classified, -EFBIG when the result would pass
 * CLASSIFY_RESULT_MAX, -ENOMEM when the memory cannot be had (out may then
 * hold part of the result).
 */
int classify_output(dtype t, const int64_t *dims, int ndim, int batched, const uint8_t *data, uint64_t k,
                    const classify_labels *labels, sb *out, int64_t *out_dims, int *out_ndim, int64_t *out_count);

#endif
