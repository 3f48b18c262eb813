/* promtext — the Prometheus text format read, and histogram_quantile; see promtext.h. */
#include "promtext.h"

#include "sb.h"
#include "xmalloc.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* One line being read: its bytes, and the strings of its sample as offsets into scratch (which may move). */
typedef struct reader {
    const char *p, *end;
    sb scratch;      /* the line's name, label names and values, each NUL-terminated */
    size_t *offsets; /* per label: its name's offset, then its value's */
    size_t nlabels, cap;
    promtext_label *labels; /* cap of them, filled from offsets once the line is read */
} reader;

static int is_blank(char c)
{
    return c == ' ' || c == '\t';
}

static void skip_blanks(reader *r)
{
    while (r->p < r->end && is_blank(*r->p))
        r->p++;
}

static int is_name_char(char c, int first, int colon)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (colon && c == ':'))
        return 1;
    return !first && c >= '0' && c <= '9';
}

/* A name (a metric's with colon set, else a label's) into scratch; its offset, or -1 when there is none. */
static long read_name(reader *r, int colon)
{
    const char *start = r->p;
    while (r->p < r->end && is_name_char(*r->p, r->p == start, colon))
        r->p++;
    if (r->p == start)
        return -1;
    long off = (long)r->scratch.len;
    sb_add(&r->scratch, start, (size_t)(r->p - start));
    sb_addc(&r->scratch, '\0');
    return off;
}

/* A quoted label value, unescaped, into scratch; its offset, or -1. */
static long read_value(reader *r)
{
    if (r->p >= r->end || *r->p != '"')
        return -1;
    r->p++;
    long off = (long)r->scratch.len;
    for (;;) {
        if (r->p >= r->end)
            return -1; /* the line ended inside the quotes */
        char c = *r->p++;
        if (c == '"')
            break;
        if (c == '\\') {
            if (r->p >= r->end)
                return -1;
            c = *r->p++;
            if (c == 'n')
                c = '\n';
            else if (c != '\\' && c != '"')
                return -1;
        }
        sb_addc(&r->scratch, c);
    }
    sb_addc(&r->scratch, '\0');
    return off;
}

static int read_labels(reader *r)
{
    r->p++; /* '{' */
    for (;;) {
        skip_blanks(r);
        if (r->p < r->end && *r->p == '}') {
            r->p++;
            return 0;
        }
        long name = read_name(r, 0);
        skip_blanks(r);
        if (name < 0 || r->p >= r->end || *r->p != '=')
            return -1;
        r->p++;
        skip_blanks(r);
        long value = read_value(r);
        if (value < 0)
            return -1;
        if (r->nlabels == r->cap) {
            r->cap = r->cap ? r->cap * 2 : 8;
            r->offsets = xrealloc(r->offsets, r->cap * 2 * sizeof *r->offsets);
            r->labels = xrealloc(r->labels, r->cap * sizeof *r->labels);
        }
        r->offsets[2 * r->nlabels] = (size_t)name;
        r->offsets[2 * r->nlabels + 1] = (size_t)value;
        r->nlabels++;
        skip_blanks(r);
        if (r->p < r->end && *r->p == ',') {
            r->p++;
            continue; /* a trailing comma before '}' is allowed */
        }
        if (r->p < r->end && *r->p == '}') {
            r->p++;
            return 0;
        }
        return -1;
    }
}

/* The next blank-separated token: [*start, r->p). */
static size_t read_token(reader *r, const char **start)
{
    skip_blanks(r);
    *start = r->p;
    while (r->p < r->end && !is_blank(*r->p))
        r->p++;
    return (size_t)(r->p - *start);
}

static int parse_double(const char *p, size_t n, double *out)
{
    char buf[64];
    if (n == 0 || n >= sizeof buf)
        return -1;
    memcpy(buf, p, n);
    buf[n] = '\0';
    char *end;
    errno = 0;
    *out = strtod(buf, &end);
    return *end || (errno == ERANGE && fabs(*out) < 1) ? -1 : 0; /* an overflow is ±HUGE_VAL, as Go reads it */
}

static int parse_int64(const char *p, size_t n, int64_t *out)
{
    char buf[32];
    if (n == 0 || n >= sizeof buf)
        return -1;
    memcpy(buf, p, n);
    buf[n] = '\0';
    char *end;
    errno = 0;
    long long v = strtoll(buf, &end, 10);
    if (*end || errno)
        return -1;
    *out = v;
    return 0;
}

/* One sample line, [r->p, r->end): 0 and the sample delivered, on_sample's non-zero value, or -EBADMSG. */
static int read_sample(reader *r, promtext_sample_cb on_sample, void *data)
{
    r->scratch.len = 0;
    r->nlabels = 0;
    long name = read_name(r, 1);
    if (name < 0)
        return -EBADMSG;
    const char *name_end = r->p;
    skip_blanks(r);
    if (r->p < r->end && *r->p == '{') {
        if (read_labels(r) < 0)
            return -EBADMSG;
        name_end = r->p;
        skip_blanks(r);
    }
    if (r->p == name_end)
        return -EBADMSG; /* the name or the labels run into the value, or the line ends there */
    promtext_sample s = {0};
    const char *tok;
    size_t n = read_token(r, &tok);
    if (parse_double(tok, n, &s.value) < 0)
        return -EBADMSG;
    n = read_token(r, &tok);
    if (n) {
        if (parse_int64(tok, n, &s.timestamp_ms) < 0)
            return -EBADMSG;
        s.has_timestamp = 1;
    }
    skip_blanks(r);
    if (r->p != r->end)
        return -EBADMSG;
    /* scratch moves no more: its offsets become pointers */
    s.name = r->scratch.p + name;
    for (size_t i = 0; i < r->nlabels; i++) {
        r->labels[i].name = r->scratch.p + r->offsets[2 * i];
        r->labels[i].value = r->scratch.p + r->offsets[2 * i + 1];
    }
    s.labels = r->labels;
    s.nlabels = r->nlabels;
    return on_sample(data, &s);
}

int promtext_parse(const char *text, size_t len, promtext_sample_cb on_sample, void *data, size_t *bad_line)
{
    reader r = {0};
    sb_init(&r.scratch, 256);
    const char *end = text + len;
    size_t line = 0;
    int rc = 0;
    for (const char *p = text; p < end && rc == 0;) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *eol = nl ? nl : end;
        line++;
        r.p = p;
        r.end = eol > p && eol[-1] == '\r' ? eol - 1 : eol;
        p = nl ? nl + 1 : end;
        skip_blanks(&r);
        if (r.p == r.end || *r.p == '#')
            continue;
        rc = read_sample(&r, on_sample, data);
    }
    if (rc == -EBADMSG && bad_line)
        *bad_line = line;
    sb_free(&r.scratch);
    free(r.offsets);
    free(r.labels);
    return rc;
}

const char *promtext_label_get(const promtext_sample *s, const char *name)
{
    for (size_t i = 0; i < s->nlabels; i++)
        if (strcmp(s->labels[i].name, name) == 0)
            return s->labels[i].value;
    return NULL;
}

double promtext_quantile(double q, const double *le, const double *cumulative, size_t n)
{
    if (q < 0)
        return -INFINITY;
    if (q > 1)
        return INFINITY;
    if (n < 2 || !(isinf(le[n - 1]) && le[n - 1] > 0))
        return NAN;
    double total = cumulative[n - 1];
    if (!(total > 0))
        return NAN;
    double rank = q * total;
    size_t b = 0;
    while (b < n - 1 && cumulative[b] < rank)
        b++;
    if (b == n - 1)
        return le[n - 2]; /* in the +Inf bucket: the highest bound known */
    if (b == 0 && le[0] <= 0)
        return le[0];
    double start = b ? le[b - 1] : 0, below = b ? cumulative[b - 1] : 0;
    double count = cumulative[b] - below;
    if (!(count > 0))
        return start; /* only for q = 0 and an empty first bucket: b is the first bucket that reaches rank */
    return start + (le[b] - start) * ((rank - below) / count);
}
