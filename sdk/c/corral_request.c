/*
 * corral_request.c — one INFER, BATCH or GENERATE as the model sees it:
 * parsing the frame's JSON meta, validating tensors, a batch's per-request
 * views for infer_batch, and the corral_request_* accessors.
 *
 * Two kinds of failure are told apart. A body that does not follow the
 * protocol (meta not JSON, fields of the wrong JSON type, tensor sizes that do
 * not add up to the data) is the daemon's fault: -EPROTO, the worker exits.
 * Tensors that are well framed but inconsistent (unknown datatype, size that
 * does not match the shape, malformed BYTES) are the client's: a 400 for that
 * request only.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "corral_internal.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

corral_request *corral__request_new(corral__frame *f)
{
    corral_request *req = calloc(1, sizeof *req);
    if (!req)
        return NULL;
    req->frame_id = f->h.id;
    req->type = f->h.type;
    req->flags = f->h.flags;
    req->alloc = f->alloc;
    req->body = f->body;
    req->body_len = f->h.length;
    f->alloc = NULL;
    f->body = NULL;
    return req;
}

void corral__request_set_region(corral_request *req, corral__region *in)
{
    req->region = in;
}

void corral__request_free(corral_request *req)
{
    if (!req)
        return;
    for (size_t i = 0; i < req->nbatch; i++) {
        json_decref(req->batch[i].parameters);
        corral__session_free(req->batch[i].session);
    }
    if (!req->session_borrowed)
        corral__session_free(req->session);
    free(req->batch);
    for (size_t i = 0; req->copies && i < req->ninputs; i++)
        free(req->copies[i]);
    free(req->copies);
    free(req->inputs);
    json_decref(req->body_json);
    json_decref(req->parameters);
    json_decref(req->meta);
    free(req->alloc);
    free(req);
}

static int proto_fail(corral_request *req, const char **what, const char *fmt, ...) CORRAL_PRINTF(3, 4);

/* Records why the body breaks the protocol; returns -EPROTO. */
static int proto_fail(corral_request *req, const char **what, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(req->what, sizeof req->what, fmt, ap);
    va_end(ap);
    *what = req->what;
    return -EPROTO;
}

/* With PROTO_FLAG_SHM_DATA: points req->data at the input region, as long as the inputs' sizes say. */
static int shared_data(corral_request *req, const char **what)
{
    if (req->data_len != 0)
        return proto_fail(req, what, "frame with its data in shared memory carries %zu bytes of data too",
                          req->data_len);
    if (!req->region || req->region->fd < 0)
        return proto_fail(req, what, "data in shared memory, but this worker has no input region");
    const json_t *inputs = json_object_get(req->meta, "inputs");
    size_t i, total = 0;
    const json_t *spec;
    json_array_foreach(inputs, i, spec) {
        json_int_t size = json_integer_value(json_object_get(spec, "size"));
        if (size > 0 && (uint64_t)size <= PROTO_MAX_BODY)
            total += (size_t)size;
    }
    if (total == 0)
        return 0;
    const uint8_t *p = corral__region_view(req->region, total);
    if (!p)
        return proto_fail(req, what, "the input region does not hold the %zu bytes of the request's tensors", total);
    req->data = p;
    req->data_len = total;
    return 0;
}

/* Parses one entry of the INFER meta's inputs list into t. */
static int parse_input(corral_request *req, corral_response *res, const json_t *spec, corral_tensor *t,
                       const uint8_t *data, size_t data_left, const char **what)
{
    const json_t *name = json_object_get(spec, "name");
    const json_t *datatype = json_object_get(spec, "datatype");
    const json_t *shape = json_object_get(spec, "shape");
    const json_t *size = json_object_get(spec, "size");

    if (!json_is_string(name) || !json_is_string(datatype) || !json_is_array(shape) || !json_is_integer(size))
        return proto_fail(req, what, "an input lacks name, datatype, shape or size");
    t->name = json_string_value(name);
    if (json_integer_value(size) < 0 || (uint64_t)json_integer_value(size) > data_left)
        return proto_fail(req, what, "input '%s' has a size beyond the frame's data", t->name);
    t->size = (size_t)json_integer_value(size);

    t->dtype = corral_dtype_from_name(json_string_value(datatype));
    if (t->dtype == CORRAL_INVALID)
        return corral_bad_request(res, "input '%s' has unknown datatype '%s'", t->name,
                                  json_string_value(datatype));
    if (json_array_size(shape) > CORRAL_MAX_DIMS)
        return corral_bad_request(res, "input '%s' has %zu dimensions; at most %d are supported", t->name,
                                  json_array_size(shape), CORRAL_MAX_DIMS);
    t->ndim = (int)json_array_size(shape);
    for (int d = 0; d < t->ndim; d++) {
        const json_t *dim = json_array_get(shape, (size_t)d);
        if (!json_is_integer(dim))
            return proto_fail(req, what, "input '%s' has a shape that is not a list of integers", t->name);
        t->shape[d] = json_integer_value(dim);
    }
    int64_t count = dtype_shape_count(t->shape, t->ndim);
    if (count < 0)
        return corral_bad_request(res, "input '%s' has an invalid shape", t->name);

    /* BYTES elements are walked by the caller, after its duplicate-name check. */
    if (t->dtype != CORRAL_BYTES && dtype_check_raw(corral__dtype(t->dtype), data, t->size, count) < 0)
        return corral_bad_request(res, "input '%s': %zu bytes do not match %lld %s elements", t->name, t->size,
                                  (long long)count, corral_dtype_name(t->dtype));
    return 0;
}

static int parse_infer(corral_request *req, corral_response *res, const char **what)
{
    const json_t *inputs = json_object_get(req->meta, "inputs");
    const json_t *wanted = json_object_get(req->meta, "outputs");

    if (wanted) {
        size_t i;
        const json_t *v;
        if (!json_is_array(wanted))
            return proto_fail(req, what, "meta 'outputs' is not a list");
        json_array_foreach(wanted, i, v) {
            if (!json_is_string(v))
                return proto_fail(req, what, "meta 'outputs' holds a non-string");
        }
        req->wanted = wanted;
    }
    if (!inputs)
        return req->data_len == 0 ? 0 : proto_fail(req, what, "tensor data without inputs");
    if (!json_is_array(inputs))
        return proto_fail(req, what, "meta 'inputs' is not a list");

    size_t n = json_array_size(inputs);
    if (n > 0) {
        req->inputs = calloc(n, sizeof *req->inputs);
        req->copies = calloc(n, sizeof *req->copies);
        if (!req->inputs || !req->copies)
            return corral_response_error(res, 500, "MemoryError", "out of memory reading %zu inputs", n);
    }
    size_t offset = 0;
    for (size_t i = 0; i < n; i++) {
        corral_tensor *t = &req->inputs[i];
        const json_t *spec = json_array_get(inputs, i);
        if (!json_is_object(spec))
            return proto_fail(req, what, "meta 'inputs' holds a non-object");
        const uint8_t *p = req->data + offset;
        int rc = parse_input(req, res, spec, t, p, req->data_len - offset, what);
        if (rc < 0)
            return rc;
        req->ninputs = i + 1;
        offset += t->size;
        for (size_t k = 0; k < i; k++)
            if (strcmp(req->inputs[k].name, t->name) == 0)
                return corral_bad_request(res, "input '%s' appears twice", t->name);
        if (t->dtype == CORRAL_BYTES && dtype_check_raw(DT_BYTES, p, t->size, corral_tensor_count(t)) < 0)
            return corral_bad_request(res, "input '%s' is not %lld well-formed BYTES elements", t->name,
                                      (long long)corral_tensor_count(t));
        /* The frame places the first tensor aligned; later ones stay aligned
         * unless an earlier size breaks it. Then copy, so that models may
         * cast data to the element type. */
        size_t elem = corral_dtype_size(t->dtype);
        if (elem > 1 && (uintptr_t)p % elem != 0) {
            size_t rounded = (t->size + CORRAL__ALIGN - 1) / CORRAL__ALIGN * CORRAL__ALIGN;
            req->copies[i] = aligned_alloc(CORRAL__ALIGN, rounded);
            if (!req->copies[i])
                return corral_response_error(res, 500, "MemoryError", "out of memory realigning input '%s'",
                                             t->name);
            memcpy(req->copies[i], p, t->size);
            p = req->copies[i];
        }
        t->data = p;
    }
    if (offset != req->data_len) {
        return proto_fail(req, what, "input sizes add up to %zu bytes but the frame carries %zu", offset,
                          req->data_len);
    }
    return 0;
}

/*
 * BATCH: reads the meta's `batch` list, one entry per request. Its shape is
 * the daemon's to get right, so every flaw is a protocol error.
 */
static int parse_batch_entries(corral_request *req, corral_response *res, const char **what)
{
    const json_t *list = json_object_get(req->meta, "batch");
    if (!json_is_array(list) || json_array_size(list) == 0)
        return proto_fail(req, what, "BATCH meta 'batch' is %s", list ? "not a non-empty list" : "missing");
    size_t n = json_array_size(list);
    req->batch = calloc(n, sizeof *req->batch);
    if (!req->batch)
        return corral_response_error(res, 500, "MemoryError", "out of memory reading a batch of %zu requests", n);
    for (size_t i = 0; i < n; i++) {
        corral__batch_entry *e = &req->batch[i];
        const json_t *spec = json_array_get(list, i);
        if (!json_is_object(spec))
            return proto_fail(req, what, "BATCH entry %zu is not an object", i);
        const json_t *id = json_object_get(spec, "id");
        const json_t *client_id = json_object_get(spec, "client_id");
        const json_t *rows = json_object_get(spec, "rows");
        json_t *params = json_object_get(spec, "parameters");
        const json_t *wanted = json_object_get(spec, "outputs");
        if (!json_is_integer(id) || json_integer_value(id) <= 0)
            return proto_fail(req, what, "BATCH entry %zu: 'id' is not a positive integer", i);
        if (client_id && !json_is_string(client_id))
            return proto_fail(req, what, "BATCH entry %zu: 'client_id' is not a string", i);
        if (!json_is_integer(rows) || json_integer_value(rows) < 0)
            return proto_fail(req, what, "BATCH entry %zu: 'rows' is not a count", i);
        if (params && !json_is_object(params))
            return proto_fail(req, what, "BATCH entry %zu: 'parameters' is not an object", i);
        if (wanted) {
            size_t k;
            const json_t *v;
            if (!json_is_array(wanted))
                return proto_fail(req, what, "BATCH entry %zu: 'outputs' is not a list", i);
            json_array_foreach(wanted, k, v) {
                if (!json_is_string(v))
                    return proto_fail(req, what, "BATCH entry %zu: 'outputs' holds a non-string", i);
            }
        }
        e->id = (uint64_t)json_integer_value(id);
        e->client_id = client_id ? json_string_value(client_id) : "";
        e->rows = json_integer_value(rows);
        e->parameters = params ? json_incref(params) : json_object();
        e->wanted = wanted;
        req->nbatch = i + 1;
        if (!e->parameters)
            return corral_response_error(res, 500, "MemoryError", "out of memory");
        const char *why = NULL;
        int rc = corral__session_parse(json_object_get(spec, "session"), &e->session, &why);
        if (rc == -EPROTO)
            return proto_fail(req, what, "BATCH entry %zu: %s", i, why);
        if (rc < 0)
            return corral_response_error(res, 500, "MemoryError", "out of memory");
    }
    /* The batch answers to its first request's id and parameters (corral_worker.h). */
    json_decref(req->parameters);
    req->parameters = json_incref(req->batch[0].parameters);
    req->client_id = req->batch[0].client_id;
    return 0;
}

/* BATCH, once its inputs are parsed: the requests' rows add up to every input's dimension 0. */
static int check_batch_rows(corral_request *req, const char **what)
{
    int64_t total = 0;
    for (size_t i = 0; i < req->nbatch; i++) {
        if (req->batch[i].rows > INT64_MAX - total)
            return proto_fail(req, what, "BATCH rows add up to more than 2^63");
        total += req->batch[i].rows;
    }
    for (size_t k = 0; k < req->ninputs; k++) {
        const corral_tensor *t = &req->inputs[k];
        if (t->ndim == 0)
            return proto_fail(req, what, "BATCH input '%s' is a scalar: it has no rows", t->name);
        if (t->shape[0] != total)
            return proto_fail(req, what, "BATCH rows add up to %lld, but input '%s' has %lld", (long long)total,
                              t->name, (long long)t->shape[0]);
    }
    return 0;
}

int corral__request_parse(corral_request *req, corral_response *res, const char **what)
{
    const char *meta;
    size_t meta_len;
    json_error_t err;

    *what = NULL;
    if (proto_split_body(req->body, req->body_len, &meta, &meta_len, &req->data, &req->data_len) < 0)
        return proto_fail(req, what, "body is shorter than its meta length");
    /* The meta lies in alloc, which is ours to rewrite: the session member may be cut out of it first. */
    int cut = corral__session_cut((char *)meta, &meta_len, &req->session);
    if (cut == -EPROTO)
        return proto_fail(req, what, "the session's base64 is malformed");
    if (cut < 0)
        return corral_response_error(res, 500, "MemoryError", "out of memory");
    req->meta = json_loadb(meta, meta_len, 0, &err);
    if (!json_is_object(req->meta))
        return proto_fail(req, what, "meta is not a JSON object");

    const json_t *id = json_object_get(req->meta, "id");
    if (id && !json_is_string(id))
        return proto_fail(req, what, "meta 'id' is not a string");
    req->client_id = id ? json_string_value(id) : "";

    json_t *params = json_object_get(req->meta, "parameters");
    if (params && !json_is_object(params))
        return proto_fail(req, what, "meta 'parameters' is not an object");
    req->parameters = params ? json_incref(params) : json_object();
    if (!req->parameters)
        return corral_response_error(res, 500, "MemoryError", "out of memory");
    const char *why = NULL;
    int src = req->session ? 0 : corral__session_parse(json_object_get(req->meta, "session"), &req->session, &why);
    if (src == -EPROTO)
        return proto_fail(req, what, "%s", why);
    if (src < 0)
        return corral_response_error(res, 500, "MemoryError", "out of memory");

    const json_t *seq = json_object_get(req->meta, "sequence");
    if (seq) {
        const json_t *sid = json_object_get(seq, "id");
        if (!json_is_object(seq) || !(json_is_string(sid) || (json_is_integer(sid) && json_integer_value(sid) >= 0)))
            return proto_fail(req, what, "meta 'sequence' is not {\"id\": integer or string, \"start\", \"end\"}");
        req->sequence = seq;
    }
    if (req->type == PROTO_GENERATE) {
        const json_t *ct = json_object_get(req->meta, "content_type");
        if (ct && !json_is_string(ct))
            return proto_fail(req, what, "meta 'content_type' is not a string");
        req->content_type = ct && json_string_length(ct) > 0 ? json_string_value(ct) : "application/octet-stream";
        req->stream = json_is_true(json_object_get(req->meta, "stream"));
        return 0;
    }
    req->content_type = "application/octet-stream";
    int rc;
    if (req->type == PROTO_BATCH && (rc = parse_batch_entries(req, res, what)) < 0)
        return rc;
    if ((req->flags & PROTO_FLAG_SHM_DATA) && (rc = shared_data(req, what)) < 0)
        return rc;
    if ((rc = parse_infer(req, res, what)) < 0)
        return rc;
    return req->type == PROTO_BATCH ? check_batch_rows(req, what) : 0;
}

/* ---- infer_batch's views of a batch ---- */

/*
 * Points each view's copy of the batch's input k at that request's rows of
 * it. The batch's rows were checked against the input's dimension 0, and
 * BYTES were validated, so the walk cannot run past the data.
 */
static void slice_input(const corral_request *batch, size_t k, corral_request **views)
{
    const corral_tensor *t = &batch->inputs[k];
    int64_t total = t->shape[0];
    int64_t per_row = total > 0 ? corral_tensor_count(t) / total : 0; /* elements in one row */
    size_t elem = corral_dtype_size(t->dtype);
    const uint8_t *base = t->data;
    size_t offset = 0;
    for (size_t i = 0; i < batch->nbatch; i++) {
        corral_tensor *v = &views[i]->inputs[k];
        int64_t count = batch->batch[i].rows * per_row;
        size_t len = 0;
        if (t->dtype != CORRAL_BYTES) {
            len = (size_t)count * elem;
        } else {
            for (int64_t e = 0; e < count; e++)
                len += 4 + proto_get_u32(base + offset + len);
        }
        *v = *t;
        v->shape[0] = batch->batch[i].rows;
        v->data = base + offset;
        v->size = len;
        /* A whole number of rows into an aligned tensor: aligned too, so no view needs the copy
         * that parse_infer makes of a misaligned input. */
        assert(elem <= 1 || (uintptr_t)v->data % elem == 0);
        offset += len;
    }
    assert(offset == t->size);
}

corral_request **corral__batch_views(const corral_request *batch)
{
    size_t n = batch->nbatch;
    corral_request **views = calloc(n, sizeof *views);
    if (!views)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        const corral__batch_entry *e = &batch->batch[i];
        corral_request *v = calloc(1, sizeof *v);
        if (!v)
            goto fail;
        views[i] = v;
        v->frame_id = e->id;
        v->type = PROTO_INFER;
        v->client_id = e->client_id;
        v->parameters = json_incref(e->parameters);
        v->wanted = e->wanted;
        v->session = e->session;
        v->session_borrowed = 1;
        v->content_type = "application/octet-stream";
        v->batch_of = batch;
        v->view_rows = e->rows;
        if (batch->ninputs > 0 && !(v->inputs = calloc(batch->ninputs, sizeof *v->inputs)))
            goto fail;
        v->ninputs = batch->ninputs;
    }
    for (size_t k = 0; k < batch->ninputs; k++)
        slice_input(batch, k, views);
    return views;
fail:
    corral__batch_views_free(views, n);
    return NULL;
}

void corral__batch_views_free(corral_request **views, size_t n)
{
    for (size_t i = 0; views && i < n; i++)
        corral__request_free(views[i]);
    free(views);
}

/* ---- accessors ---- */

const char *corral_request_id(const corral_request *req)
{
    return req->client_id ? req->client_id : "";
}

const json_t *corral_request_parameters(const corral_request *req)
{
    return req->parameters;
}

const json_t *corral_request_sequence(const corral_request *req)
{
    return req->sequence;
}

size_t corral_request_ninputs(const corral_request *req)
{
    return req->ninputs;
}

const corral_tensor *corral_request_input_at(const corral_request *req, size_t index)
{
    return index < req->ninputs ? &req->inputs[index] : NULL;
}

const corral_tensor *corral_request_input(const corral_request *req, const char *name)
{
    for (size_t i = 0; name && i < req->ninputs; i++)
        if (strcmp(req->inputs[i].name, name) == 0)
            return &req->inputs[i];
    return NULL;
}

/* Whether the output list wanted (NULL: all) names name. */
static int list_wants(const json_t *wanted, const char *name)
{
    size_t i;
    const json_t *v;
    if (!wanted)
        return 1;
    json_array_foreach(wanted, i, v) {
        if (strcmp(json_string_value(v), name) == 0)
            return 1;
    }
    return 0;
}

int corral_request_output_wanted(const corral_request *req, const char *name)
{
    if (!name)
        return 0;
    if (req->nbatch == 0)
        return list_wants(req->wanted, name);
    for (size_t i = 0; i < req->nbatch; i++)
        if (list_wants(req->batch[i].wanted, name))
            return 1;
    return 0;
}

size_t corral_request_batch_count(const corral_request *req)
{
    return req->nbatch > 0 ? req->nbatch : 1;
}

int64_t corral_request_batch_rows(const corral_request *req, size_t i)
{
    if (i >= corral_request_batch_count(req))
        return -1;
    if (req->nbatch > 0)
        return req->batch[i].rows;
    if (req->batch_of)
        return req->view_rows;
    return req->ninputs > 0 && req->inputs[0].ndim > 0 ? req->inputs[0].shape[0] : 0;
}

const char *corral_request_batch_id(const corral_request *req, size_t i)
{
    if (i >= corral_request_batch_count(req))
        return NULL;
    return req->nbatch > 0 ? req->batch[i].client_id : corral_request_id(req);
}

const json_t *corral_request_batch_parameters(const corral_request *req, size_t i)
{
    if (i >= corral_request_batch_count(req))
        return NULL;
    return req->nbatch > 0 ? req->batch[i].parameters : req->parameters;
}

const void *corral_request_body(const corral_request *req, size_t *len)
{
    if (req->type != PROTO_GENERATE) {
        if (len)
            *len = 0;
        return NULL;
    }
    if (len)
        *len = req->data_len;
    return req->data;
}

const char *corral_request_content_type(const corral_request *req)
{
    return req->content_type ? req->content_type : "application/octet-stream";
}

const json_t *corral_request_json(const corral_request *req)
{
    /* A request is used by one thread only, so caching behind const is safe. */
    corral_request *mut = (corral_request *)req;
    if (req->type != PROTO_GENERATE)
        return NULL;
    if (!mut->body_json_parsed) {
        json_error_t err;
        mut->body_json_parsed = 1;
        mut->body_json = json_loadb((const char *)req->data, req->data_len, 0, &err);
    }
    return mut->body_json;
}
