/*
 * corral_response.c — what a callback answers: output tensors, a generate
 * body, or an error; and their encoding into INFER_RESULT, GENERATE_RESULT or
 * ERROR frames. Encoding builds an iovec list that points at the outputs'
 * memory, so data reaches the socket without being copied.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "corral_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void corral__response_init(corral_response *res, uint8_t request_type)
{
    memset(res, 0, sizeof *res);
    res->type = request_type;
}

static void drop_results(corral_response *res)
{
    for (size_t i = 0; i < res->noutputs; i++) {
        free(res->outputs[i].name);
        free(res->outputs[i].owned);
    }
    free(res->outputs);
    res->outputs = NULL;
    res->noutputs = res->cap = 0;
    free(res->content_type);
    free(res->body_owned);
    res->content_type = NULL;
    res->body_owned = NULL;
    res->body = NULL;
    res->body_len = 0;
    res->collect_cap = 0;
}

void corral__response_close(corral_response *res)
{
    drop_results(res);
    free(res->stream_type);
    free(res->error_type);
    free(res->error_message);
    json_decref(res->session_update);
    res->session_update = NULL;
    res->stream_type = res->error_type = res->error_message = NULL;
}

static int name_ok(const char *name)
{
    return name && *name && corral_utf8_valid(name, strlen(name));
}

int corral_response_add_output(corral_response *res, const char *name, corral_dtype dtype, const int64_t *shape,
                               int ndim, const void *data, size_t size, corral_mem mem)
{
    void *owned = mem == CORRAL_TAKE ? (void *)data : NULL;
    int64_t count;
    int rc = -EINVAL;

    if (!res || !name_ok(name) || dtype <= CORRAL_INVALID || dtype > CORRAL_BYTES || (size > 0 && !data))
        goto fail;
    count = dtype_shape_count(shape, ndim);
    if (count < 0 || dtype_check_raw(corral__dtype(dtype), data, size, count) < 0)
        goto fail;
    rc = -EEXIST;
    for (size_t i = 0; i < res->noutputs; i++)
        if (strcmp(res->outputs[i].name, name) == 0)
            goto fail;

    rc = -ENOMEM;
    if (res->noutputs == res->cap) {
        size_t cap = res->cap ? res->cap * 2 : 4;
        corral__output *grown = realloc(res->outputs, cap * sizeof *grown);
        if (!grown)
            goto fail;
        res->outputs = grown;
        res->cap = cap;
    }
    char *dup = strdup(name);
    if (!dup)
        goto fail;
    if (mem == CORRAL_COPY && size > 0) {
        owned = malloc(size);
        if (!owned) {
            free(dup);
            goto fail;
        }
        memcpy(owned, data, size);
        data = owned;
    }
    corral__output *out = &res->outputs[res->noutputs];
    memset(out, 0, sizeof *out);
    out->name = dup;
    out->dtype = dtype;
    out->ndim = ndim;
    if (ndim > 0)
        memcpy(out->shape, shape, (size_t)ndim * sizeof shape[0]);
    out->data = data;
    out->size = size;
    out->owned = owned;
    res->noutputs++;
    return 0;
fail:
    if (mem == CORRAL_TAKE)
        free(owned);
    return rc;
}

void *corral_response_alloc_output(corral_response *res, const char *name, corral_dtype dtype,
                                   const int64_t *shape, int ndim)
{
    size_t elem = corral_dtype_size(dtype);
    int64_t count = dtype_shape_count(shape, ndim);
    if (elem == 0 || count < 0 || (uint64_t)count > SIZE_MAX / elem - 1)
        return NULL;
    size_t size = (size_t)count * elem;
    size_t rounded = (size + CORRAL__ALIGN) / CORRAL__ALIGN * CORRAL__ALIGN; /* never 0 */
    void *buf = aligned_alloc(CORRAL__ALIGN, rounded);
    if (!buf)
        return NULL;
    memset(buf, 0, size);
    if (corral_response_add_output(res, name, dtype, shape, ndim, buf, size, CORRAL_TAKE) < 0)
        return NULL;
    return buf;
}

int corral_response_add_bytes(corral_response *res, const char *name, const int64_t *shape, int ndim,
                              const void *const *elems, const size_t *lens)
{
    int64_t count = dtype_shape_count(shape, ndim);
    size_t total = 0;
    if (count < 0 || (count > 0 && (!elems || !lens)))
        return -EINVAL;
    for (int64_t i = 0; i < count; i++) {
        if (lens[i] > UINT32_MAX || (lens[i] > 0 && !elems[i]) || total > SIZE_MAX - 4 - lens[i])
            return -EINVAL;
        total += 4 + lens[i];
    }
    uint8_t *buf = malloc(total ? total : 1);
    if (!buf)
        return -ENOMEM;
    uint8_t *p = buf;
    for (int64_t i = 0; i < count; i++) {
        proto_put_u32(p, (uint32_t)lens[i]);
        if (lens[i] > 0)
            memcpy(p + 4, elems[i], lens[i]);
        p += 4 + lens[i];
    }
    return corral_response_add_output(res, name, CORRAL_BYTES, shape, ndim, buf, total, CORRAL_TAKE);
}

int corral_response_set_body(corral_response *res, const char *content_type, const void *data, size_t len,
                             corral_mem mem)
{
    void *owned = mem == CORRAL_TAKE ? (void *)data : NULL;
    char *ct = NULL;
    if (!res || (len > 0 && !data) || (content_type && !name_ok(content_type)) ||
        res->stream_kind != CORRAL__STREAM_NONE) {
        free(owned);
        return -EINVAL;
    }
    ct = strdup(content_type ? content_type : "application/octet-stream");
    if (!ct)
        goto nomem;
    if (mem == CORRAL_COPY && len > 0) {
        owned = malloc(len);
        if (!owned)
            goto nomem;
        memcpy(owned, data, len);
        data = owned;
    }
    free(res->content_type);
    free(res->body_owned);
    res->content_type = ct;
    res->body = data;
    res->body_len = len;
    res->body_owned = owned;
    return 0;
nomem:
    free(ct);
    if (mem != CORRAL_BORROW)
        free(owned);
    return -ENOMEM;
}

/* ---- errors ---- */

void corral__response_set_error(corral_response *res, int status, const char *type, const char *message)
{
    if (status < 400 || status > 599)
        status = 500;
    if (!type || !name_ok(type))
        type = status < 500 ? "BadRequest" : "ModelError";
    drop_results(res);
    free(res->error_type);
    free(res->error_message);
    res->status = status;
    res->error_type = strdup(type);
    res->error_message = strdup(message ? message : "");
}

static int response_verror(corral_response *res, int status, const char *type, const char *fmt, va_list ap)
{
    char *message = corral__vformat(fmt, ap);
    corral__response_set_error(res, status, type, message ? message : "out of memory formatting the error");
    free(message);
    return res->status < 500 ? -EINVAL : -EIO;
}

int corral_response_error(corral_response *res, int status, const char *type, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = response_verror(res, status, type, fmt, ap);
    va_end(ap);
    return rc;
}

int corral_bad_request(corral_response *res, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = response_verror(res, CORRAL_STATUS_BAD_REQUEST, "BadRequest", fmt, ap);
    va_end(ap);
    return rc;
}

/* ---- encoding ---- */

void corral__encoded_free(corral__encoded *enc)
{
    free(enc->meta);
    if (enc->iov != enc->small)
        free(enc->iov);
    enc->meta = NULL;
    enc->iov = NULL;
    enc->iovcnt = 0;
}

/* Sets enc to prefix + meta (meta is consumed) + room for extra pieces; checks the 1 GiB limit. */
static int encode_meta(corral__encoded *enc, uint8_t type, json_t *meta, size_t extra, size_t data_len)
{
    enc->type = type;
    enc->meta = json_dumps(meta, JSON_COMPACT);
    json_decref(meta);
    if (!enc->meta)
        return -ENOMEM;
    size_t meta_len = strlen(enc->meta);
    if (data_len > PROTO_MAX_BODY || 4 + meta_len > PROTO_MAX_BODY - data_len)
        return -EMSGSIZE;
    enc->iov = enc->small;
    if (2 + extra > sizeof enc->small / sizeof enc->small[0]) {
        enc->iov = malloc(sizeof *enc->iov * (2 + extra));
        if (!enc->iov)
            return -ENOMEM;
    }
    proto_put_u32(enc->prefix, (uint32_t)meta_len);
    enc->iov[0] = (struct iovec){.iov_base = enc->prefix, .iov_len = 4};
    enc->iov[1] = (struct iovec){.iov_base = enc->meta, .iov_len = meta_len};
    enc->iovcnt = 2;
    return 0;
}

/*
 * Appends to list the description of each of res's outputs that req asks
 * for (all when req is NULL), and adds their sizes to *data_len (saturating)
 * and their count to *kept.
 */
static int describe_outputs(const corral_response *res, const corral_request *req, json_t *list, size_t *data_len,
                            size_t *kept)
{
    for (size_t i = 0; i < res->noutputs; i++) {
        const corral__output *o = &res->outputs[i];
        if (req && !corral_request_output_wanted(req, o->name))
            continue;
        json_t *t = corral__tensor_json(o->name, o->dtype, o->shape, o->ndim, (int64_t)o->size);
        if (!t || json_array_append_new(list, t) < 0)
            return -ENOMEM;
        *data_len = *data_len + o->size < *data_len ? SIZE_MAX : *data_len + o->size;
        (*kept)++;
    }
    return 0;
}

/* Points the next pieces of enc at the data of the outputs describe_outputs kept, in the same order. */
static void add_output_data(const corral_response *res, const corral_request *req, corral__encoded *enc)
{
    for (size_t i = 0; i < res->noutputs; i++) {
        const corral__output *o = &res->outputs[i];
        if (req && !corral_request_output_wanted(req, o->name))
            continue;
        enc->iov[enc->iovcnt++] = (struct iovec){.iov_base = (void *)o->data, .iov_len = o->size};
    }
}

static int encode_infer(corral_response *res, const corral_request *req, corral__encoded *enc)
{
    json_t *list = json_array();
    json_t *meta = json_object();
    size_t data_len = 0;
    size_t kept = 0;

    if (!list || !meta || json_object_set_new(meta, "outputs", list) < 0) {
        json_decref(list);
        json_decref(meta);
        return -ENOMEM;
    }
    if (describe_outputs(res, req, list, &data_len, &kept) < 0 || corral__session_update_into(res, meta) < 0) {
        json_decref(meta);
        return -ENOMEM;
    }
    int rc = encode_meta(enc, PROTO_INFER_RESULT, meta, kept, data_len);
    if (rc < 0)
        return rc;
    add_output_data(res, req, enc);
    return 0;
}

/* {"type", "message", "status"} of res's recorded error. New reference, or NULL. */
static json_t *error_json(const corral_response *res)
{
    return json_pack("{s:s,s:s,s:i}", "type", res->error_type ? res->error_type : "MemoryError", "message",
                     res->error_message ? res->error_message : "out of memory", "status", res->status);
}

/* {"results": [...]}: each request's outputs (its tensors' data in entry order) or its error. */
static int encode_results(corral_response *const *res, size_t n, corral__encoded *enc)
{
    json_t *list = json_array();
    json_t *meta = json_object();
    size_t data_len = 0;
    size_t kept = 0;

    if (!list || !meta || json_object_set_new(meta, "results", list) < 0) {
        json_decref(list);
        json_decref(meta);
        return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *entry = json_object();
        json_t *body = res[i]->status ? error_json(res[i]) : json_array();
        if (!entry || !body ||
            (!res[i]->status && describe_outputs(res[i], res[i]->req, body, &data_len, &kept) < 0)) {
            json_decref(entry);
            json_decref(body);
            goto nomem;
        }
        /* The _new setters take the reference even when they fail. */
        if (json_object_set_new(entry, res[i]->status ? "error" : "outputs", body) < 0 ||
            (!res[i]->status && corral__session_update_into(res[i], entry) < 0)) {
            json_decref(entry);
            goto nomem;
        }
        if (json_array_append_new(list, entry) < 0)
            goto nomem;
    }
    int rc = encode_meta(enc, PROTO_INFER_RESULT, meta, kept, data_len);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < n; i++)
        if (!res[i]->status)
            add_output_data(res[i], res[i]->req, enc);
    return 0;
nomem:
    json_decref(meta);
    return -ENOMEM;
}

static int encode_generate(corral_response *res, corral__encoded *enc)
{
    if (res->streamed) { /* the chunks are out: END closes the stream, with the session's update as its meta */
        if (res->session_update) {
            json_t *meta = json_object();
            if (!meta || corral__session_update_into(res, meta) < 0) {
                json_decref(meta);
                return -ENOMEM;
            }
            return encode_meta(enc, PROTO_END, meta, 0, 0);
        }
        enc->type = PROTO_END;
        enc->iov = enc->small;
        enc->iovcnt = 0;
        return 0;
    }
    /* Chunks collected for a client that wanted no stream: one answer. */
    const char *ct = res->stream_kind == CORRAL__STREAM_EVENTS  ? "application/x-ndjson"
                     : res->stream_kind == CORRAL__STREAM_BYTES ? res->stream_type
                     : res->content_type                        ? res->content_type
                                                                : "application/octet-stream";
    json_t *meta = json_pack("{s:s}", "content_type", ct);
    if (!meta || corral__session_update_into(res, meta) < 0) {
        json_decref(meta);
        return -ENOMEM;
    }
    int rc = encode_meta(enc, PROTO_GENERATE_RESULT, meta, 1, res->body_len);
    if (rc < 0)
        return rc;
    enc->iov[enc->iovcnt++] = (struct iovec){.iov_base = (void *)res->body, .iov_len = res->body_len};
    return 0;
}

static void encode_error(corral_response *res, corral__encoded *enc)
{
    /* Sent when even the error cannot be encoded: a literal needs no memory. */
    static const char fallback[] = "{\"type\":\"MemoryError\",\"message\":\"out of memory\",\"status\":500}";
    json_t *body = error_json(res);
    enc->type = PROTO_ERROR;
    enc->meta = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    enc->iov = enc->small;
    enc->iov[0] = enc->meta ? (struct iovec){.iov_base = enc->meta, .iov_len = strlen(enc->meta)}
                            : (struct iovec){.iov_base = (void *)fallback, .iov_len = sizeof fallback - 1};
    enc->iovcnt = 1;
}

/* A result that could not be encoded (rc < 0) becomes res's error. */
static void encoding_failed(corral_response *res, corral__encoded *enc, int rc)
{
    corral__encoded_free(enc);
    if (rc == -EMSGSIZE)
        corral__response_set_error(res, 500, "ResponseTooLarge",
                                   "the response exceeds the protocol's 1 GiB frame limit");
    else
        corral__response_set_error(res, 500, "MemoryError", "out of memory encoding the response");
}

void corral__response_encode(corral_response *res, const corral_request *req, corral__encoded *enc)
{
    memset(enc, 0, sizeof *enc);
    if (res->status == 0) {
        int rc = res->type == PROTO_GENERATE ? encode_generate(res, enc) : encode_infer(res, req, enc);
        if (rc == 0)
            return;
        encoding_failed(res, enc, rc);
    }
    encode_error(res, enc);
}

void corral__response_encode_batch(corral_response *batch, corral_response *const *res, size_t n,
                                   corral__encoded *enc)
{
    memset(enc, 0, sizeof *enc);
    if (batch->status == 0) {
        int rc = encode_results(res, n, enc);
        if (rc == 0)
            return;
        encoding_failed(batch, enc, rc);
    }
    encode_error(batch, enc);
}
