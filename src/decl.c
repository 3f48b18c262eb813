/*
 * decl — declared tensors and the request checks against them; see decl.h.
 */
#include "decl.h"

#include "utf8.h"
#include "xmalloc.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

void decl_free(decl_list *l)
{
    if (!l)
        return;
    for (int i = 0; i < l->n; i++)
        free(l->v[i].name);
    free(l->v);
    free(l);
}

static int parse_one(json_t *t, decl_tensor *d, char *err, size_t errlen)
{
    if (!json_is_object(t)) {
        snprintf(err, errlen, "must be a mapping with name, datatype and shape");
        return -EINVAL;
    }
    json_t *name = json_object_get(t, "name");
    if (!json_is_string(name) || json_string_length(name) == 0) {
        snprintf(err, errlen, "name must be a non-empty string");
        return -EINVAL;
    }
    json_t *dt = json_object_get(t, "datatype");
    d->t = json_is_string(dt) ? dtype_from_name(json_string_value(dt), json_string_length(dt)) : DT_INVALID;
    if (d->t == DT_INVALID) {
        snprintf(err, errlen,
                 "datatype must be one of BOOL, UINT8, UINT16, UINT32, UINT64, INT8, INT16, INT32, INT64, "
                 "FP16, FP32, FP64, BF16, BYTES");
        return -EINVAL;
    }
    json_t *shape = json_object_get(t, "shape");
    if (!json_is_array(shape) || json_array_size(shape) > DTYPE_MAX_DIMS) {
        snprintf(err, errlen, "shape must be a list of at most %d integers (-1 for any size)", DTYPE_MAX_DIMS);
        return -EINVAL;
    }
    size_t k;
    json_t *v;
    json_array_foreach(shape, k, v) {
        if (!json_is_integer(v) || json_integer_value(v) < -1) {
            snprintf(err, errlen, "shape must be a list of at most %d integers (-1 for any size)", DTYPE_MAX_DIMS);
            return -EINVAL;
        }
        d->dims[k] = json_integer_value(v);
    }
    d->ndim = (int)json_array_size(shape);
    json_t *opt = json_object_get(t, "optional");
    if (opt && !json_is_boolean(opt)) {
        snprintf(err, errlen, "optional must be true or false");
        return -EINVAL;
    }
    d->optional = json_is_true(opt);
    d->name_len = json_string_length(name);
    d->name = xmalloc(d->name_len + 1);
    memcpy(d->name, json_string_value(name), d->name_len + 1);
    return 0;
}

int decl_parse(json_t *list, decl_list **out, size_t *at, char *err, size_t errlen)
{
    *out = NULL;
    *at = SIZE_MAX;
    if (!list || json_is_null(list))
        return 0;
    if (!json_is_array(list)) {
        snprintf(err, errlen, "must be a list of {name, datatype, shape}");
        return -EINVAL;
    }
    size_t n = json_array_size(list);
    if (n == 0)
        return 0;
    if (n > DECL_MAX_TENSORS) {
        snprintf(err, errlen, "declares %zu tensors; at most %d", n, DECL_MAX_TENSORS);
        return -EINVAL;
    }
    decl_list *l = xcalloc(1, sizeof *l);
    l->v = xcalloc(n, sizeof *l->v);
    for (size_t i = 0; i < n; i++) {
        *at = i;
        if (parse_one(json_array_get(list, i), &l->v[i], err, errlen) < 0)
            goto fail;
        l->n++;
        int dup;
        if (decl_find(l, l->v[i].name, l->v[i].name_len, &dup) != &l->v[i]) {
            snprintf(err, errlen, "name '%s' is declared twice", l->v[i].name);
            goto fail;
        }
    }
    *at = SIZE_MAX;
    *out = l;
    return 0;
fail:
    decl_free(l);
    return -EINVAL;
}

const decl_tensor *decl_find(const decl_list *l, const char *name, size_t n, int *index)
{
    for (int i = 0; l && i < l->n; i++) {
        if (l->v[i].name_len == n && memcmp(l->v[i].name, name, n) == 0) {
            *index = i;
            return &l->v[i];
        }
    }
    return NULL;
}

int decl_shape_matches(const decl_tensor *d, const int64_t *dims, int ndim)
{
    if (ndim != d->ndim)
        return 0;
    for (int i = 0; i < ndim; i++)
        if (d->dims[i] != -1 && d->dims[i] != dims[i])
            return 0;
    return 1;
}

char *decl_format_shape(char *buf, size_t len, const int64_t *dims, int ndim)
{
    size_t at = (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < ndim && at < len; i++)
        at += (size_t)snprintf(buf + at, len - at, i ? ", %lld" : "%lld", (long long)dims[i]);
    if (at < len)
        snprintf(buf + at, len - at, "]");
    return buf;
}

/* "A, B, C" of the declared names, cut to fit at a character boundary and then ending in "...". */
static void list_names(const decl_list *l, char *buf, size_t len)
{
    size_t at = 0;
    buf[0] = 0;
    for (int i = 0; i < l->n && at < len; i++)
        at += (size_t)snprintf(buf + at, len - at, "%s%s", i ? ", " : "", l->v[i].name);
    if (at >= len && len > 4) {
        buf[len - 4] = 0;
        utf8_trim_partial(buf);
        strcat(buf, "...");
    }
}

int decl_check_input(const decl_list *l, decl_seen *seen, const char *name, size_t n, dtype t, const int64_t *dims,
                     int ndim, char *why, size_t whylen)
{
    int i;
    const decl_tensor *d = decl_find(l, name, n, &i);
    if (!d) {
        char names[256];
        list_names(l, names, sizeof names);
        snprintf(why, whylen, "input '%s' is not declared; the model's inputs are %s", name, names);
        return -EINVAL;
    }
    seen->bits[i / 64] |= (uint64_t)1 << (i % 64);
    if (d->t != t) {
        snprintf(why, whylen, "input '%s': expected datatype %s, got %s", name, dtype_name(d->t), dtype_name(t));
        return -EINVAL;
    }
    if (!decl_shape_matches(d, dims, ndim)) {
        char want[24 * DTYPE_MAX_DIMS + 8], got[24 * DTYPE_MAX_DIMS + 8];
        snprintf(why, whylen, "input '%s': expected shape %s, got %s", name,
                 decl_format_shape(want, sizeof want, d->dims, d->ndim),
                 decl_format_shape(got, sizeof got, dims, ndim));
        return -EINVAL;
    }
    return 0;
}

int decl_check_output(const decl_list *l, const char *name, size_t n, char *why, size_t whylen)
{
    int i;
    if (decl_find(l, name, n, &i))
        return 0;
    char names[256];
    list_names(l, names, sizeof names);
    snprintf(why, whylen, "output '%s' is not declared; the model's outputs are %s", name, names);
    return -EINVAL;
}

int decl_check_missing(const decl_list *l, const decl_seen *seen, char *why, size_t whylen)
{
    for (int i = 0; i < l->n; i++) {
        const decl_tensor *d = &l->v[i];
        if (d->optional || (seen->bits[i / 64] >> (i % 64)) & 1)
            continue;
        char want[24 * DTYPE_MAX_DIMS + 8];
        snprintf(why, whylen, "input '%s' is missing: the model requires it (%s %s)", d->name, dtype_name(d->t),
                 decl_format_shape(want, sizeof want, d->dims, d->ndim));
        return -EINVAL;
    }
    return 0;
}
