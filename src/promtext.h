/*
 * promtext — reads the Prometheus text exposition format (version 0.0.4,
 * what GET /metrics writes) and computes a quantile from a histogram's
 * buckets as Prometheus' histogram_quantile does. `corral top` parses two
 * scrapes with it and takes the difference of their buckets.
 *
 * The format, line by line: blank lines and lines whose first non-blank
 * character is '#' (HELP, TYPE, comments) are skipped; every other line is
 * one sample,
 *
 *     name [{label="value",...[,]}] value [timestamp]
 *
 * a name of [a-zA-Z_:][a-zA-Z0-9_:]*, label names of [a-zA-Z_][a-zA-Z0-9_]*,
 * label values with the escapes \\ \" and \n, blanks (spaces, tabs) between
 * the parts, a value as a float (NaN, +Inf and -Inf included) and a
 * timestamp as an integer of milliseconds. A line may end in CR LF.
 *
 * Errors: promtext_parse returns 0, the first non-zero value on_sample
 * returned (it stops there), or -EBADMSG for a line that is not the format,
 * with *bad_line (when not NULL) its number, from 1. Samples before a bad
 * line have been delivered. Memory: a sample and its strings are valid only
 * during on_sample; the parser keeps nothing after it returns. Threads: any.
 */
#ifndef CORRAL_PROMTEXT_H
#define CORRAL_PROMTEXT_H

#include <stddef.h>
#include <stdint.h>

typedef struct promtext_label {
    const char *name;
    const char *value; /* unescaped */
} promtext_label;

typedef struct promtext_sample {
    const char *name;
    const promtext_label *labels; /* in the order of the line */
    size_t nlabels;
    double value;
    int has_timestamp;
    int64_t timestamp_ms;
} promtext_sample;

/* One sample. Non-zero stops promtext_parse. */
typedef int (*promtext_sample_cb)(void *data, const promtext_sample *s);

int promtext_parse(const char *text, size_t len, promtext_sample_cb on_sample, void *data, size_t *bad_line);

/* The value of label name in s, or NULL when s has none. */
const char *promtext_label_get(const promtext_sample *s, const char *name);

/*
 * The q-quantile (0 <= q <= 1) of a histogram of n buckets: upper bounds le
 * in increasing order, the last +Inf, and their cumulative counts. As
 * Prometheus computes it: linear interpolation inside the bucket the rank
 * falls in, the first bucket starting at 0 (or at its bound, when that is
 * not positive), and the highest finite bound when the rank falls in the
 * +Inf bucket. NaN without observations, with fewer than two buckets, or
 * when the last bound is not +Inf; -Inf for q < 0, +Inf for q > 1.
 */
double promtext_quantile(double q, const double *le, const double *cumulative, size_t n);

#endif
