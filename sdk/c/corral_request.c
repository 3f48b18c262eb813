/*
 * corral_request.c — one INFER or GENERATE as the model sees it: parsing the
 * frame's JSON meta, validating tensors, and the corral_request_* accessors.
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

int corral__request_parse(corral_request *req, corral_response *res, const char **what)
{
    const char *meta;
    size_t meta_len;
    json_error_t err;

    *what = NULL;
    if (proto_split_body(req->body, req->body_len, &meta, &meta_len, &req->data, &req->data_len) < 0)
        return proto_fail(req, what, "body is shorter than its meta length");
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

    if (req->type == PROTO_GENERATE) {
        const json_t *ct = json_object_get(req->meta, "content_type");
        if (ct && !json_is_string(ct))
            return proto_fail(req, what, "meta 'content_type' is not a string");
        req->content_type = ct && json_string_length(ct) > 0 ? json_string_value(ct) : "application/octet-stream";
        req->stream = json_is_true(json_object_get(req->meta, "stream"));
        return 0;
    }
    req->content_type = "application/octet-stream";
    if (req->flags & PROTO_FLAG_SHM_DATA) {
        int rc = shared_data(req, what);
        if (rc < 0)
            return rc;
    }
    return parse_infer(req, res, what);
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

int corral_request_output_wanted(const corral_request *req, const char *name)
{
    size_t i;
    const json_t *v;
    if (!req->wanted)
        return 1;
    json_array_foreach(req->wanted, i, v) {
        if (strcmp(json_string_value(v), name) == 0)
            return 1;
    }
    return 0;
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
