/*
 * corral_util.c — small helpers of the C SDK: the datatype functions (over
 * src/dtype.c, shared with the daemon), BYTES tensor walking, UTF-8 checks,
 * message formatting, logging, parameter lookups and fatal exits.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "corral_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/*
 * The datatype table is src/dtype.c's, shared with the daemon; the public
 * enum must number the datatypes as it does, so that a cast converts.
 */
_Static_assert(CORRAL_INVALID == (int)DT_INVALID && CORRAL_BOOL == (int)DT_BOOL && CORRAL_UINT8 == (int)DT_UINT8 &&
                   CORRAL_UINT16 == (int)DT_UINT16 && CORRAL_UINT32 == (int)DT_UINT32 &&
                   CORRAL_UINT64 == (int)DT_UINT64 && CORRAL_INT8 == (int)DT_INT8 && CORRAL_INT16 == (int)DT_INT16 &&
                   CORRAL_INT32 == (int)DT_INT32 && CORRAL_INT64 == (int)DT_INT64 && CORRAL_FP16 == (int)DT_FP16 &&
                   CORRAL_FP32 == (int)DT_FP32 && CORRAL_FP64 == (int)DT_FP64 && CORRAL_BF16 == (int)DT_BF16 &&
                   CORRAL_BYTES == (int)DT_BYTES && CORRAL_BYTES + 1 == DTYPE_COUNT,
               "corral_dtype must number the datatypes as src/dtype.h does");
_Static_assert(CORRAL_MAX_DIMS == DTYPE_MAX_DIMS, "CORRAL_MAX_DIMS must be src/dtype.h's DTYPE_MAX_DIMS");

const char *corral_dtype_name(corral_dtype dtype)
{
    return dtype_name(corral__dtype(dtype));
}

corral_dtype corral_dtype_from_name(const char *name)
{
    return name ? (corral_dtype)dtype_from_name(name, strlen(name)) : CORRAL_INVALID;
}

size_t corral_dtype_size(corral_dtype dtype)
{
    return dtype_size(corral__dtype(dtype));
}

int64_t corral_tensor_count(const corral_tensor *t)
{
    int64_t n = t ? dtype_shape_count(t->shape, t->ndim) : 0;
    return n < 0 ? 0 : n;
}

int corral_bytes_next(const corral_tensor *t, size_t *offset, const void **elem, uint32_t *len)
{
    if (!t || t->dtype != CORRAL_BYTES || *offset >= t->size || t->size - *offset < 4)
        return 0;
    const uint8_t *p = (const uint8_t *)t->data + *offset;
    uint32_t n = proto_get_u32(p);
    if (n > t->size - *offset - 4)
        return 0;
    *elem = p + 4;
    *len = n;
    *offset += 4 + (size_t)n;
    return 1;
}

/* Length of the valid UTF-8 sequence at p (at most avail bytes), or 0 if invalid. */
static size_t utf8_seq(const unsigned char *p, size_t avail)
{
    unsigned c = p[0];
    size_t n;
    unsigned min;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        n = 2, min = 0x80;
    else if (c >= 0xe0 && c <= 0xef)
        n = 3, min = 0x800;
    else if (c >= 0xf0 && c <= 0xf4)
        n = 4, min = 0x10000;
    else
        return 0;
    if (avail < n)
        return 0;
    unsigned cp = c & (0x7f >> n);
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (p[i] & 0x3f);
    }
    /* Overlong forms, UTF-16 surrogates and code points past U+10FFFF are invalid. */
    if (cp < min || (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
        return 0;
    return n;
}

int corral_utf8_valid(const void *data, size_t len)
{
    const unsigned char *p = data;
    size_t i = 0;
    while (i < len) {
        size_t n = utf8_seq(p + i, len - i);
        if (n == 0)
            return 0;
        i += n;
    }
    return 1;
}

char *corral__vformat(const char *fmt, va_list ap)
{
    char *text = NULL;
    va_list copy;
    va_copy(copy, ap);
    int n = vsnprintf(NULL, 0, fmt, copy);
    va_end(copy);
    if (n < 0)
        n = 0;
    size_t len = (size_t)n < CORRAL__MAX_MESSAGE ? (size_t)n : CORRAL__MAX_MESSAGE;
    text = malloc((size_t)n + 1);
    if (!text)
        return NULL;
    vsnprintf(text, (size_t)n + 1, fmt, ap);
    /* Replace bytes that are not UTF-8 (a model may quote raw user input). */
    size_t i = 0;
    unsigned char *p = (unsigned char *)text;
    while (i < len) {
        size_t k = utf8_seq(p + i, len - i);
        if (k == 0) {
            p[i] = '?';
            k = 1;
        } else if (p[i] == 0) {
            break;
        }
        i += k;
    }
    text[i] = '\0';
    return text;
}

void corral__die(int status, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n > sizeof line - 2)
        n = sizeof line - 2;
    line[n++] = '\n';
    /* stdio may be locked by a model thread: write(2) directly. */
    ssize_t ignored = write(STDERR_FILENO, line, (size_t)n);
    (void)ignored;
    _exit(status);
}

void corral_log(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *text = corral__vformat(fmt, ap);
    va_end(ap);
    if (!text)
        return;
    size_t len = strlen(text);
    char *line = realloc(text, len + 2);
    if (!line) {
        free(text);
        return;
    }
    if (len == 0 || line[len - 1] != '\n')
        line[len++] = '\n';
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(STDERR_FILENO, line + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    free(line);
}

json_t *corral__tensor_json(const char *name, corral_dtype dtype, const int64_t *shape, int ndim, int64_t size)
{
    json_t *dims = json_array();
    json_t *obj = json_object();
    if (!dims || !obj)
        goto fail;
    for (int i = 0; i < ndim; i++)
        if (json_array_append_new(dims, json_integer(shape[i])) < 0)
            goto fail;
    if (json_object_set_new(obj, "name", json_string(name)) < 0 ||
        json_object_set_new(obj, "datatype", json_string(corral_dtype_name(dtype))) < 0 ||
        json_object_set_new(obj, "shape", dims) < 0)
        goto fail_obj;
    if (size >= 0 && json_object_set_new(obj, "size", json_integer(size)) < 0)
        goto fail_obj;
    return obj;
fail:
    json_decref(dims);
fail_obj:
    json_decref(obj);
    return NULL;
}

/* ---- parameters ---- */

const char *corral_param_string(const json_t *obj, const char *key, const char *def)
{
    const json_t *v = json_object_get(obj, key);
    return json_is_string(v) ? json_string_value(v) : def;
}

/* Parses a whole string as a number; 0 on success. */
static int parse_number(const char *s, double *out, int64_t *out_int, int *is_int)
{
    char *end;
    errno = 0;
    long long i = strtoll(s, &end, 10);
    if (*s && !*end && errno == 0) {
        *out_int = i;
        *out = (double)i;
        *is_int = 1;
        return 0;
    }
    errno = 0;
    double d = strtod(s, &end);
    if (*s && !*end && errno == 0) {
        *out = d;
        *is_int = 0;
        return 0;
    }
    return -EINVAL;
}

int64_t corral_param_int(const json_t *obj, const char *key, int64_t def)
{
    const json_t *v = json_object_get(obj, key);
    double d;
    int64_t i;
    int is_int;
    if (json_is_integer(v))
        return json_integer_value(v);
    if (json_is_real(v)) {
        double r = json_real_value(v);
        if (r > -9.2e18 && r < 9.2e18 && r == (double)(int64_t)r)
            return (int64_t)r;
        return def;
    }
    if (json_is_string(v) && parse_number(json_string_value(v), &d, &i, &is_int) == 0 && is_int)
        return i;
    return def;
}

double corral_param_double(const json_t *obj, const char *key, double def)
{
    const json_t *v = json_object_get(obj, key);
    double d;
    int64_t i;
    int is_int;
    if (json_is_number(v))
        return json_number_value(v);
    if (json_is_string(v) && parse_number(json_string_value(v), &d, &i, &is_int) == 0)
        return d;
    return def;
}

int corral_param_bool(const json_t *obj, const char *key, int def)
{
    const json_t *v = json_object_get(obj, key);
    if (json_is_boolean(v))
        return json_is_true(v);
    if (json_is_integer(v) && (json_integer_value(v) == 0 || json_integer_value(v) == 1))
        return (int)json_integer_value(v);
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        if (!strcasecmp(s, "true") || !strcasecmp(s, "yes") || !strcmp(s, "1"))
            return 1;
        if (!strcasecmp(s, "false") || !strcasecmp(s, "no") || !strcmp(s, "0"))
            return 0;
    }
    return def;
}
