/*
 * infer — v2 inference messages <-> worker frames; see infer.h.
 *
 * The request becomes one INFER frame: a 16-byte header, the u32 meta
 * length, the meta JSON (id, parameters, each input's name, datatype, shape
 * and byte size, the outputs asked for), then every tensor's raw bytes back
 * to back. JSON tensor data is converted into one buffer; binary tensor
 * data is referenced where it lies in the request body.
 */
#include "infer.h"

#include "batch.h"
#include "classify.h"
#include "clientshm.h"
#include "decl.h"

#include "clock.h"
#include "proto.h"
#include "sb.h"
#include "seq.h"
#include "sessreq.h"
#include "tensor.h"
#include "utf8.h"
#include "xmalloc.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void infer_opts_clear(infer_opts *opts)
{
    for (int i = 0; i < opts->nshm; i++) {
        clientshm_release(opts->shm[i].map);
        free(opts->shm[i].region);
        free(opts->shm[i].output);
    }
    free(opts->shm);
    free(opts->id);
    json_decref(opts->binary_outputs);
    json_decref(opts->requested);
    json_decref(opts->classify);
    classify_labels_unref(opts->labels);
    memset(opts, 0, sizeof *opts);
}

/* The message of a failed parse or build: "model 'NAME': ..." cut at a character boundary. */
static int fail(char *err, size_t errlen, int status, const char *model, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int fail(char *err, size_t errlen, int status, const char *model, const char *fmt, ...)
{
    int n = snprintf(err, errlen, "model '%s': ", model);
    if (n < 0 || (size_t)n >= errlen)
        n = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
    va_end(ap);
    utf8_trim_partial(err);
    return status;
}

/*
 * jansson holds integers as long long, so a UINT64 element above INT64_MAX
 * (or any integer beyond the 64-bit range) fails to parse. Such integer
 * tokens are quoted here, outside strings, and tensor_from_json reads a
 * quoted run of digits as an integer: exact for UINT64, out of range for
 * everything else. Returns a malloc'ed copy, or NULL when nothing changed.
 */
/*
 * ,"datatype":"T","shape":[d0,d1 (the shape left open) for dimensions
 * already checked non-negative: no printf, it is on every request's path.
 */
static void add_type_and_shape(sb *b, dtype t, const int64_t *dims, int ndim)
{
    sb_adds(b, ",\"datatype\":\"");
    sb_adds(b, dtype_name(t));
    sb_adds(b, "\",\"shape\":[");
    for (int d = 0; d < ndim; d++) {
        if (d)
            sb_addc(b, ',');
        sb_u64(b, (uint64_t)dims[d]);
    }
}

static char *quote_big_integers(const char *text, size_t len, size_t *out_len)
{
    sb out;
    sb_init(&out, len + 64);
    int in_string = 0, changed = 0;
    size_t i = 0;
    while (i < len) {
        char c = text[i];
        if (in_string) {
            sb_addc(&out, c);
            if (c == '\\' && i + 1 < len)
                sb_addc(&out, text[++i]);
            else if (c == '"')
                in_string = 0;
            i++;
            continue;
        }
        if (c == '"') {
            in_string = 1;
            sb_addc(&out, c);
            i++;
            continue;
        }
        if (c == '-' || (c >= '0' && c <= '9')) {
            size_t start = i, digits = 0, j = i + (c == '-');
            while (j < len && text[j] >= '0' && text[j] <= '9') {
                j++;
                digits++;
            }
            int integer = j >= len || (text[j] != '.' && text[j] != 'e' && text[j] != 'E');
            if (integer && digits >= 19) {
                sb_addc(&out, '"');
                sb_add(&out, text + start, j - start);
                sb_addc(&out, '"');
                changed = 1;
            } else {
                sb_add(&out, text + start, j - start);
            }
            i = j;
            continue;
        }
        sb_addc(&out, c);
        i++;
    }
    if (!changed) {
        sb_free(&out);
        return NULL;
    }
    return sb_take(&out, out_len);
}

const char *infer_unknown_key(json_t *o, const char *const *known)
{
    const char *key;
    json_t *v;
    json_object_foreach(o, key, v) {
        const char *const *k = known;
        while (*k && strcmp(*k, key) != 0)
            k++;
        if (!*k)
            return key;
    }
    return NULL;
}

/*
 * What a request may carry (docs/api.md, "What a request may carry"): every
 * key is honoured or refused, never ignored. The request's own parameters
 * are the exception: those corral does not know go to the model, as Triton
 * hands custom parameters to its backends.
 */
static const char *const request_keys[] = {"id", "parameters", "inputs", "outputs", NULL};
static const char *const input_keys[] = {"name", "datatype", "shape", "parameters", "data", NULL};
static const char *const input_params[] = {"binary_data_size", "shared_memory_region", "shared_memory_byte_size",
                                           "shared_memory_offset", NULL};
static const char *const output_keys[] = {"name", "parameters", NULL};
static const char *const output_params[] = {"binary_data", "classification", "shared_memory_region",
                                            "shared_memory_byte_size", "shared_memory_offset", NULL};

/*
 * Triton's sequence parameters (docs/sessions.md, "Sequences") into j:
 * sequence_id an unsigned integer (0: none) or a string (empty: none) of at
 * most SEQ_ID_MAX bytes, sequence_start and sequence_end booleans, which
 * need an id. A message, or NULL when they are fine.
 */
const char *infer_sequence_parameters(json_t *params, job *j, char *why, size_t len)
{
    static const char *const flags[] = {"sequence_start", "sequence_end"};
    int set[2] = {0, 0};
    for (size_t i = 0; i < 2; i++) {
        json_t *f = json_object_get(params, flags[i]);
        if (f && !json_is_boolean(f)) {
            snprintf(why, len, "parameters.%s must be true or false", flags[i]);
            return why;
        }
        set[i] = json_is_true(f);
    }
    json_t *id = json_object_get(params, "sequence_id");
    if (json_is_integer(id)) {
        if (json_integer_value(id) < 0) {
            snprintf(why, len, "parameters.sequence_id must be an unsigned integer or a string, not %lld",
                     (long long)json_integer_value(id));
            return why;
        }
        j->seq_num = (uint64_t)json_integer_value(id);
    } else if (json_is_string(id)) {
        size_t n = json_string_length(id);
        if (n > SEQ_ID_MAX) {
            snprintf(why, len, "parameters.sequence_id is a string of %zu bytes; at most %d are allowed", n,
                     SEQ_ID_MAX);
            return why;
        }
        if (n) {
            j->seq_str = xmalloc(n + 1);
            memcpy(j->seq_str, json_string_value(id), n + 1);
            j->seq_str_len = (uint32_t)n;
        }
    } else if (id) {
        snprintf(why, len, "parameters.sequence_id must be an unsigned integer or a string (0 or \"\" for none)");
        return why;
    }
    if ((set[0] || set[1]) && !job_in_sequence(j)) {
        snprintf(why, len, "parameters.%s needs a parameters.sequence_id (a non-zero integer or a non-empty string)",
                 flags[set[0] ? 0 : 1]);
        return why;
    }
    j->seq_start = (uint8_t)set[0];
    j->seq_end = (uint8_t)set[1];
    return NULL;
}

void infer_sequence_meta(sb *meta, const job *j)
{
    if (!job_in_sequence(j))
        return;
    sb_adds(meta, ",\"sequence\":{\"id\":");
    if (j->seq_str)
        sb_json_str(meta, j->seq_str, j->seq_str_len);
    else
        sb_u64(meta, j->seq_num);
    sb_adds(meta, j->seq_start ? ",\"start\":true" : ",\"start\":false");
    sb_adds(meta, j->seq_end ? ",\"end\":true}" : ",\"end\":false}");
}

/* Triton's reserved request parameters that corral does not serve: a message, or NULL when params are fine. */
static const char *refused_parameter(json_t *params, char *why, size_t len)
{
    const char *key;
    json_t *v;
    json_object_foreach(params, key, v) {
        if (strncmp(key, "triton_", 7) == 0) {
            snprintf(why, len, "parameters.%.64s: keys starting with 'triton_' are reserved for Triton", key);
            return why;
        }
    }
    return NULL;
}

/* Where one input's raw bytes are: in the request body, or at off in the converted data. */
typedef struct segment {
    const uint8_t *ptr;
    size_t off, len;
} segment;

/* Inference-Header-Content-Length: digits only, within the body. */
static int header_length(const infer_input *in, size_t *json_len)
{
    if (!in->header_length) {
        *json_len = in->len;
        return 0;
    }
    size_t v = 0;
    if (in->header_length_len == 0 || in->header_length_len > 19)
        return -1;
    for (size_t i = 0; i < in->header_length_len; i++) {
        char c = in->header_length[i];
        if (c < '0' || c > '9')
            return -1;
        v = v * 10 + (size_t)(c - '0');
    }
    if (v > in->len)
        return -1;
    *json_len = v;
    return 0;
}

/* A uint64 parameter: a JSON integer, or the quoted digits quote_big_integers made of a larger one. */
static int param_u64(json_t *v, uint64_t *out)
{
    if (json_is_integer(v)) {
        if (json_integer_value(v) < 0)
            return -1;
        *out = (uint64_t)json_integer_value(v);
        return 0;
    }
    const char *p = json_string_value(v);
    size_t n = json_string_length(v);
    if (!p || n == 0 || n > 20)
        return -1;
    uint64_t x = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9' || x > (UINT64_MAX - (uint64_t)(p[i] - '0')) / 10)
            return -1;
        x = x * 10 + (uint64_t)(p[i] - '0');
    }
    *out = x;
    return 0;
}

/*
 * The parameters.shared_memory_* of an input or output (kind, name) when
 * it names a region: checked against the region and, with one reference
 * to its mapping, added to opts->shm. Returns 0 (*ref set, or NULL when the
 * tensor names no region), or 400 or 403 with the message in err.
 */
static int shm_tensor(const char *model, const char *kind, const char *name, json_t *params, infer_opts *opts,
                      infer_shm_ref **ref, char *err, size_t errlen)
{
    *ref = NULL;
    json_t *region = json_object_get(params, "shared_memory_region");
    if (!region)
        return 0;
    if (!clientshm_allowed())
        return fail(err, errlen, 403, model, "%s '%s': %s", kind, name, clientshm_disabled_msg);
    if (!json_is_string(region) || json_string_length(region) == 0)
        return fail(err, errlen, 400, model, "%s '%s': parameters.shared_memory_region must be a region's name",
                    kind, name);
    uint64_t offset = 0, byte_size;
    json_t *joff = json_object_get(params, "shared_memory_offset");
    if (joff && param_u64(joff, &offset) < 0)
        return fail(err, errlen, 400, model, "%s '%s': parameters.shared_memory_offset must be an integer from 0 "
                    "to 2^64-1", kind, name);
    if (param_u64(json_object_get(params, "shared_memory_byte_size"), &byte_size) < 0)
        return fail(err, errlen, 400, model, "%s '%s': parameters.shared_memory_byte_size must be an integer from "
                    "0 to 2^64-1", kind, name);
    const char *rname = json_string_value(region);
    size_t rlen = json_string_length(region);
    int shown = rlen > 64 ? 64 : (int)rlen; /* the error writer escapes what it shows */
    clientshm_map *map = clientshm_acquire(rname, rlen);
    if (!map)
        return fail(err, errlen, 400, model, "%s '%s': no shared memory region '%.*s' is registered", kind, name,
                    shown, rname);
    if (clientshm_broken(map)) {
        clientshm_release(map);
        return fail(err, errlen, 400, model, "%s '%s': the object behind shared memory region '%.*s' was truncated "
                    "while a request used it; unregister the region and register it again", kind, name, shown, rname);
    }
    int rc = clientshm_range(map->byte_size, offset, byte_size);
    if (rc < 0) {
        clientshm_release(map);
        return fail(err, errlen, 400, model,
                    "%s '%s': shared_memory_offset %llu + shared_memory_byte_size %llu %s shared memory region "
                    "'%.*s' (%llu bytes)",
                    kind, name, (unsigned long long)offset, (unsigned long long)byte_size,
                    rc == -EOVERFLOW ? "overflows: they do not fit" : "run past the end of", shown, rname,
                    (unsigned long long)map->byte_size);
    }
    opts->shm = xrealloc(opts->shm, (size_t)(opts->nshm + 1) * sizeof *opts->shm);
    infer_shm_ref *r = &opts->shm[opts->nshm++];
    r->map = map;
    r->region = xmalloc(rlen + 1);
    memcpy(r->region, rname, rlen + 1);
    r->region_len = rlen;
    r->output = NULL;
    r->offset = offset;
    r->byte_size = byte_size;
    *ref = r;
    return 0;
}

int infer_parse_request(const infer_input *in, job *j, infer_opts *opts, char *err, size_t errlen)
{
    const char *model = in->model;
    size_t json_len = 0;
    if (!in->doc && header_length(in, &json_len) < 0) {
        /* shown escaped by the error writer, at most 40 bytes of it */
        size_t shown = in->header_length_len > 40 ? 40 : in->header_length_len;
        return fail(err, errlen, 400, model,
                    "Inference-Header-Content-Length '%.*s%s' is not a length within the body (%zu bytes)",
                    (int)shown, in->header_length, in->header_length_len > 40 ? "..." : "", in->len);
    }
    const uint8_t *bin = in->doc ? NULL : in->body + json_len;
    size_t bin_len = in->doc ? 0 : in->len - json_len, bin_used = 0;
    int raw_used = 0;

    json_error_t jerr;
    const char *text = in->body ? (const char *)in->body : "";
    json_t *root = in->doc ? json_incref(in->doc) : json_loadb(text, json_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root && strstr(jerr.text, "too big integer")) {
        size_t qlen;
        char *quoted = quote_big_integers(text, json_len, &qlen);
        if (quoted) {
            root = json_loadb(quoted, qlen, JSON_REJECT_DUPLICATES, &jerr);
            free(quoted);
        }
    }
    if (!root)
        return fail(err, errlen, 400, model, "malformed JSON in inference request: %s (line %d, column %d)",
                    jerr.text, jerr.line, jerr.column);
    sb meta, data;
    sb_init(&meta, 512);
    sb_init(&data, 256);
    /* With batching, what this request brings to a batch (batch.h), as text at offsets; dropped if it cannot
     * batch. Built beside the meta, then allocated once. */
    int batchable = in->max_batch_size > 0; /* a sequence's request goes alone: decided below, once parsed */
    int64_t batch_rows = -1;
    sb bt = {0}; /* untouched (no allocation) unless batchable */
    if (batchable)
        sb_init(&bt, 256);
    size_t spec_off[INFER_MAX_TENSORS], dims_off[INFER_MAX_TENSORS], sizes[INFER_MAX_TENSORS];
    size_t params_at = 0, params_len = 2; /* the parameters' JSON inside meta */
    int nbatch = 0;
    segment segs[INFER_MAX_TENSORS];
    int nsegs = 0;
    char why[512];
    decl_seen seen = {{0}};
    int status = 400;
#define BAD(...)                                                                                                      \
    do {                                                                                                              \
        fail(err, errlen, 400, model, __VA_ARGS__);                                                                   \
        goto fail;                                                                                                    \
    } while (0)

    if (!json_is_object(root))
        BAD("an inference request must be a JSON object");
    const char *unknown = infer_unknown_key(root, request_keys);
    if (unknown)
        BAD("unknown key '%.64s' in the inference request (it takes id, parameters, inputs and outputs)", unknown);
    json_t *id = json_object_get(root, "id");
    if (id && !json_is_string(id))
        BAD("'id' must be a string");
    json_t *params = json_object_get(root, "parameters");
    if (params && !json_is_object(params))
        BAD("'parameters' must be an object");
    int priority = 0;
    json_t *prio = json_object_get(params, "priority");
    if (prio) {
        int levels = in->priority_levels > 0 ? in->priority_levels : 1;
        if (!json_is_integer(prio))
            BAD("parameters.priority must be an integer from 0 (the model's default) to %d", levels);
        if (json_integer_value(prio) < 0 || json_integer_value(prio) > levels)
            BAD("parameters.priority %lld is out of range: this model has priority levels 1 to %d (0 means its "
                "default)",
                (long long)json_integer_value(prio), levels);
        priority = (int)json_integer_value(prio);
    }
    json_t *timeout = json_object_get(params, "timeout");
    if (timeout && (!json_is_integer(timeout) || json_integer_value(timeout) < 0))
        BAD("parameters.timeout must be a non-negative integer (microseconds)");
    json_t *bdo = json_object_get(params, "binary_data_output");
    if (bdo && !json_is_boolean(bdo))
        BAD("parameters.binary_data_output must be a boolean");
    opts->binary_all = json_is_true(bdo);
    if (refused_parameter(params, why, sizeof why) || infer_sequence_parameters(params, j, why, sizeof why))
        BAD("%s", why);
    json_t *sess = json_object_get(params, "session");
    if (sess && !json_is_string(sess))
        BAD("parameters.session must be a string, the id of a session");
    if (sess && sessreq_attach(j, json_string_value(sess), json_string_length(sess), why, sizeof why) < 0)
        BAD("parameters.session: %s", why);

    json_t *inputs = json_object_get(root, "inputs");
    if (!json_is_array(inputs) || json_array_size(inputs) == 0)
        BAD("'inputs' must be a non-empty array of tensors");
    if (json_array_size(inputs) > INFER_MAX_TENSORS)
        BAD("at most %d inputs per request", INFER_MAX_TENSORS);

    /* The session goes first: the C SDK takes it out of the meta by hand, before jansson reads the rest
     * (sessreq.h, "The meta"). */
    sb_addc(&meta, '{');
    size_t sess_at = meta.len, sess_len = 0; /* the session's member inside meta, copied into a batch entry */
    if (j->sess) {
        sb_reserve(&meta, 1 + sessreq_meta_size(j->sess));
        sessreq_meta(&meta, j->sess);
        sess_len = meta.len - sess_at;
        sb_addc(&meta, ',');
    }
    sb_adds(&meta, "\"id\":");
    if (id)
        sb_json_str(&meta, json_string_value(id), json_string_length(id));
    else
        sb_adds(&meta, "\"\"");
    sb_adds(&meta, ",\"parameters\":");
    params_at = meta.len;
    if (params) {
        char *ptext = json_dumps(params, JSON_COMPACT);
        if (!ptext) {
            status = 503;
            BAD("no memory to forward the request's parameters");
        }
        sb_adds(&meta, ptext);
        free(ptext);
    } else {
        sb_adds(&meta, "{}");
    }
    params_len = meta.len - params_at;
    infer_sequence_meta(&meta, j);
    sb_adds(&meta, ",\"inputs\":[");
    size_t i;
    json_t *input;
    json_array_foreach(inputs, i, input) {
        if (!json_is_object(input))
            BAD("inputs[%zu] must be an object", i);
        json_t *name = json_object_get(input, "name");
        if (!json_is_string(name) || json_string_length(name) == 0)
            BAD("inputs[%zu].name must be a non-empty string", i);
        const char *nm = json_string_value(name);
        for (size_t k = 0; k < i; k++)
            if (strcmp(json_string_value(json_object_get(json_array_get(inputs, k), "name")), nm) == 0)
                BAD("input '%s' appears twice", nm);
        json_t *dt = json_object_get(input, "datatype");
        dtype t = json_is_string(dt) ? dtype_from_name(json_string_value(dt), json_string_length(dt)) : DT_INVALID;
        if (t == DT_INVALID)
            BAD("input '%s': datatype must be one of BOOL, UINT8, UINT16, UINT32, UINT64, INT8, INT16, INT32, "
                "INT64, FP16, FP32, FP64, BF16, BYTES",
                nm);
        json_t *shape = json_object_get(input, "shape");
        if (!json_is_array(shape) || json_array_size(shape) > DTYPE_MAX_DIMS)
            BAD("input '%s': shape must be an array of at most %d non-negative integers", nm, DTYPE_MAX_DIMS);
        int64_t dims[DTYPE_MAX_DIMS];
        int ndim = (int)json_array_size(shape);
        for (int d = 0; d < ndim; d++) {
            json_t *v = json_array_get(shape, (size_t)d);
            if (!json_is_integer(v) || json_integer_value(v) < 0)
                BAD("input '%s': shape must be an array of at most %d non-negative integers", nm, DTYPE_MAX_DIMS);
            dims[d] = json_integer_value(v);
        }
        if (in->inputs_decl &&
            decl_check_input(in->inputs_decl, &seen, nm, json_string_length(name), t, dims, ndim, why, sizeof why) < 0)
            BAD("%s", why);
        int64_t count = dtype_shape_count(dims, ndim);
        if (count < 0 || (dtype_size(t) && (uint64_t)count > PROTO_MAX_BODY / dtype_size(t)))
            BAD("input '%s': shape is too large", nm);
        json_t *ip = json_object_get(input, "parameters");
        if ((unknown = infer_unknown_key(input, input_keys)))
            BAD("input '%s': unknown key '%.64s'", nm, unknown);
        if (ip && !json_is_object(ip))
            BAD("input '%s': parameters must be an object", nm);
        if ((unknown = infer_unknown_key(ip, input_params)))
            BAD("input '%s': unknown parameter '%.64s'", nm, unknown);
        json_t *bsize = json_object_get(ip, "binary_data_size");
        json_t *jdata = json_object_get(input, "data");
        segment *s = &segs[nsegs++];
        infer_shm_ref *ref;
        int shm_status = shm_tensor(model, "input", nm, ip, opts, &ref, err, errlen);
        if (shm_status) {
            status = shm_status;
            goto fail;
        }
        if (ref && (bsize || jdata))
            BAD("input '%s' must set only one of 'data', parameters.binary_data_size and "
                "parameters.shared_memory_region", nm);
        if (ref) {
            /* The tensor goes to the worker from the client's mapping (the one copy is into the worker's input
             * region, or the frame). BYTES are copied first and checked on the copy: the client may change
             * its region at any time, and what was checked must be what is sent. */
            if (ref->byte_size > PROTO_MAX_BODY)
                BAD("input '%s': shared_memory_byte_size %llu is larger than the worker protocol's 1 GiB frame limit",
                    nm, (unsigned long long)ref->byte_size);
            s->len = (size_t)ref->byte_size;
            if (t == DT_BYTES) {
                s->ptr = NULL;
                s->off = data.len;
                if (sb_try_reserve(&data, s->len) < 0) {
                    status = 503;
                    BAD("input '%s': no memory now for %zu bytes", nm, s->len);
                }
                sb_add(&data, (const char *)ref->map->base + ref->offset, s->len);
            } else {
                s->ptr = ref->map->base + ref->offset;
            }
            if (dtype_check_raw(t, s->ptr ? s->ptr : (const uint8_t *)data.p + s->off, s->len, count) < 0)
                BAD("input '%s': shared_memory_byte_size %zu does not hold %lld %s elements", nm, s->len,
                    (long long)count, dtype_name(t));
        } else if (bsize && in->doc) { /* the next of the separate binary sections */
            if (raw_used >= in->nraw || !json_is_integer(bsize) ||
                (uint64_t)json_integer_value(bsize) != in->raw[raw_used].len)
                BAD("input '%s': its raw contents do not match the request (%d of %d sections used)", nm, raw_used,
                    in->nraw);
            s->ptr = in->raw[raw_used].ptr;
            s->len = in->raw[raw_used++].len;
            if (dtype_check_raw(t, s->ptr, s->len, count) < 0)
                BAD("input '%s': %zu bytes of raw contents do not hold %lld %s elements", nm, s->len,
                    (long long)count, dtype_name(t));
        } else if (bsize) {
            if (!json_is_integer(bsize) || json_integer_value(bsize) < 0 ||
                (uint64_t)json_integer_value(bsize) > bin_len - bin_used)
                BAD("input '%s': parameters.binary_data_size must be a length within the binary data (%zu bytes "
                    "left)",
                    nm, bin_len - bin_used);
            s->ptr = bin + bin_used;
            s->len = (size_t)json_integer_value(bsize);
            bin_used += s->len;
            if (dtype_check_raw(t, s->ptr, s->len, count) < 0)
                BAD("input '%s': %zu bytes of binary data do not hold %lld %s elements", nm, s->len,
                    (long long)count, dtype_name(t));
        } else {
            if (!jdata)
                BAD("input '%s' has neither 'data' nor parameters.binary_data_size", nm);
            s->ptr = NULL;
            s->off = data.len;
            int rc = tensor_from_json(jdata, t, count, &data, why, sizeof why);
            if (rc < 0) {
                status = rc == -ENOMEM ? 503 : 400;
                BAD("input '%s': data %s", nm, why);
            }
            s->len = data.len - s->off;
        }
        if (batchable && ndim >= 1 && (batch_rows < 0 || batch_rows == dims[0])) {
            batch_rows = dims[0];
            spec_off[nbatch] = bt.len;
            sb_adds(&bt, "\"name\":");
            sb_json_str(&bt, nm, json_string_length(name));
            sb_adds(&bt, ",\"datatype\":\"");
            sb_adds(&bt, dtype_name(t));
            sb_addc(&bt, '"');
            sb_addc(&bt, 0);
            dims_off[nbatch] = bt.len;
            for (int d = 1; d < ndim; d++) {
                sb_addc(&bt, ',');
                sb_u64(&bt, (uint64_t)dims[d]);
            }
            sb_addc(&bt, 0);
            sizes[nbatch++] = s->len;
        } else if (batchable) {
            batch_rows = 0; /* no common dimension 0: this request goes alone */
        }
        if (i)
            sb_addc(&meta, ',');
        sb_adds(&meta, "{\"name\":");
        sb_json_str(&meta, nm, json_string_length(name));
        add_type_and_shape(&meta, t, dims, ndim);
        sb_adds(&meta, "],\"size\":");
        sb_u64(&meta, s->len);
        sb_addc(&meta, '}');
    }
    if (in->inputs_decl && decl_check_missing(in->inputs_decl, &seen, why, sizeof why) < 0)
        BAD("%s", why);
    if (bin_used != bin_len)
        BAD("%zu bytes of binary data are not claimed by any input's binary_data_size", bin_len - bin_used);
    if (in->doc && raw_used != in->nraw)
        BAD("%d raw contents are not claimed by any input", in->nraw - raw_used);
    sb_addc(&meta, ']');

    json_t *outputs = json_object_get(root, "outputs");
    if (outputs) {
        if (!json_is_array(outputs))
            BAD("'outputs' must be an array");
        if (json_array_size(outputs) > INFER_MAX_TENSORS)
            BAD("at most %d outputs per request", INFER_MAX_TENSORS);
        sb_adds(&meta, ",\"outputs\":[");
        json_t *o;
        json_array_foreach(outputs, i, o) {
            json_t *name = json_object_get(o, "name");
            if (!json_is_object(o) || !json_is_string(name))
                BAD("outputs[%zu] must be an object with a name", i);
            const char *oname = json_string_value(name);
            if (in->outputs_decl &&
                decl_check_output(in->outputs_decl, oname, json_string_length(name), why, sizeof why) < 0)
                BAD("%s", why);
            json_t *oparams = json_object_get(o, "parameters");
            if ((unknown = infer_unknown_key(o, output_keys)))
                BAD("output '%s': unknown key '%.64s'", oname, unknown);
            if (oparams && !json_is_object(oparams))
                BAD("output '%s': parameters must be an object", oname);
            if ((unknown = infer_unknown_key(oparams, output_params)))
                BAD("output '%s': unknown parameter '%.64s'", oname, unknown);
            json_t *bd = json_object_get(oparams, "binary_data");
            if (bd && !json_is_boolean(bd))
                BAD("outputs[%zu].parameters.binary_data must be a boolean", i);
            infer_shm_ref *ref;
            int shm_status = shm_tensor(model, "output", oname, oparams, opts, &ref, err, errlen);
            if (shm_status) {
                status = shm_status;
                goto fail;
            }
            if (ref) {
                ref->output = xstrdup(oname);
                if (json_is_true(bd))
                    BAD("output '%s' can't set both 'shared_memory_region' and 'binary_data'", ref->output);
                if (json_object_get(oparams, "classification"))
                    BAD("output '%s' can't set both 'shared_memory_region' and 'classification'", ref->output);
                bd = NULL;
            }
            json_t *cls = json_object_get(oparams, "classification");
            if (cls) {
                if (!json_is_integer(cls) || json_integer_value(cls) < 1)
                    BAD("output '%s': parameters.classification must be a positive integer (how many classes to "
                        "return)",
                        oname);
                if (!opts->classify)
                    opts->classify = json_object();
                json_object_set(opts->classify, oname, cls);
            }
            if (!opts->requested)
                opts->requested = json_array();
            json_array_append(opts->requested, name);
            if (json_is_true(bd)) {
                if (!opts->binary_outputs)
                    opts->binary_outputs = json_array();
                json_array_append(opts->binary_outputs, name);
            }
            if (i)
                sb_addc(&meta, ',');
            sb_json_str(&meta, json_string_value(name), json_string_length(name));
        }
        sb_addc(&meta, ']');
    }
    sb_addc(&meta, '}');
    opts->batched = in->max_batch_size > 0;

    /* The frame (job.h): the converted data passes to the job, the raw tensors stay in the request. */
    size_t data_total = 0;
    for (int k = 0; k < nsegs; k++)
        data_total += segs[k].len;
    uint8_t *owned = data.len ? (uint8_t *)sb_take(&data, NULL) : NULL;
    job_piece pieces[INFER_MAX_TENSORS];
    for (int k = 0; k < nsegs; k++) {
        /* an input with no elements converted nothing: its piece is empty */
        pieces[k].ptr = segs[k].ptr ? segs[k].ptr : owned ? owned + segs[k].off : (const uint8_t *)"";
        pieces[k].len = segs[k].len;
    }
    int rc = job_build_frame(j, meta.p, meta.len, pieces, nsegs, owned);
    if (rc == -EFBIG) {
        status = 413;
        BAD("the inference request is larger than the worker protocol's 1 GiB frame limit");
    }
    if (rc < 0) {
        status = 503;
        BAD("cannot allocate %zu bytes for the request now", 4 + meta.len + data_total);
    }
    if (batchable && batch_rows > 0 && batch_rows <= in->max_batch_size && !job_in_sequence(j)) {
        /* The signature: every input's spec and dims as written, NULs included (equal bytes batch together). */
        size_t sig_off = spec_off[0], sig_len = bt.len - spec_off[0];
        /* Its part of the batch meta: the client's id, parameters (as already written into meta) and outputs. */
        size_t fields_off = bt.len;
        sb_adds(&bt, "\"client_id\":");
        if (id)
            sb_json_str(&bt, json_string_value(id), json_string_length(id));
        else
            sb_adds(&bt, "\"\"");
        sb_adds(&bt, ",\"parameters\":");
        sb_add(&bt, meta.p + params_at, params_len);
        if (sess_len) {
            sb_addc(&bt, ',');
            sb_add(&bt, meta.p + sess_at, sess_len);
        }
        if (opts->requested) {
            sb_adds(&bt, ",\"outputs\":[");
            size_t k;
            json_t *o;
            json_array_foreach(opts->requested, k, o) {
                if (k)
                    sb_addc(&bt, ',');
                sb_json_str(&bt, json_string_value(o), json_string_length(o));
            }
            sb_addc(&bt, ']');
        }
        sb_addc(&bt, 0);
        j->bentry = batch_entry_new((uint64_t)batch_rows, nbatch, bt.p, bt.len, spec_off, dims_off, sizes, sig_off,
                                    sig_len, fields_off, opts->requested);
        j->on_free = batch_release;
    }
    sb_free(&bt);
    j->priority = priority;
    if (timeout && json_integer_value(timeout) > 0) /* 0 or absent: the model's own timeout */
        j->deadline_ms = now_ms() + ((uint64_t)json_integer_value(timeout) + 999) / 1000;
    if (id) {
        opts->id_len = json_string_length(id);
        opts->id = xmalloc(opts->id_len + 1);
        memcpy(opts->id, json_string_value(id), opts->id_len + 1);
    }
    sb_free(&meta);
    sb_free(&data);
    json_decref(root);
    return 0;
fail:
    sb_free(&bt);
    sb_free(&meta);
    sb_free(&data);
    json_decref(root);
    return status;
#undef BAD
}

/* ---- the response ---- */

static int wants_binary(const infer_opts *opts, const char *name)
{
    if (opts->binary_all)
        return 1;
    size_t i;
    json_t *v;
    json_array_foreach(opts->binary_outputs, i, v) {
        if (strcmp(json_string_value(v), name) == 0)
            return 1;
    }
    return 0;
}

static const infer_shm_ref *shm_output(const infer_opts *opts, const char *name)
{
    for (int i = 0; i < opts->nshm; i++)
        if (opts->shm[i].output && strcmp(opts->shm[i].output, name) == 0)
            return &opts->shm[i];
    return NULL;
}

/*
 * Replaces output r by its classification into x (classify.h). Returns 0,
 * or an HTTP status with the message in err.
 */
static int classify_result(const char *model, const infer_opts *opts, json_t *k, infer_output *r, const uint8_t *raw,
                           sb *x, char *err, size_t errlen)
{
    char name[160];
    snprintf(name, sizeof name, "%s", r->name);
    utf8_trim_partial(name);
    int64_t dims[2];
    int ndim;
    int64_t count;
    if (!x->p)
        sb_init(x, 4096);
    size_t start = x->len;
    int rc = classify_output(r->t, r->dims, r->ndim, opts->batched, raw, (uint64_t)json_integer_value(k), opts->labels,
                             x, dims, &ndim, &count);
    if (rc == -EINVAL) {
        snprintf(err, errlen, "model '%s': output '%s': classification is not available for datatype %s", model, name,
                 dtype_name(r->t));
        return 400;
    }
    if (rc == -EFBIG) {
        snprintf(err, errlen, "model '%s': output '%s': its classification would be larger than 1 GiB", model, name);
        return 400;
    }
    if (rc < 0) {
        snprintf(err, errlen, "model '%s': no memory now to classify output '%s'", model, name);
        return 503;
    }
    r->t = DT_BYTES;
    r->ndim = ndim;
    memcpy(r->dims, dims, sizeof dims);
    r->count = count;
    r->classified = 1;
    r->data = (const uint8_t *)(uintptr_t)start; /* an offset until x stops growing (infer_read_result) */
    r->size = x->len - start;
    return 0;
}

void infer_result_clear(infer_result *res)
{
    free(res->out);
    json_decref(res->meta);
    free(res->classified);
    memset(res, 0, sizeof *res);
}

int infer_read_result(const char *model, const infer_opts *opts, const uint8_t *body, size_t len,
                      const uint8_t *shm_data, size_t shm_len, infer_result *res, char *err, size_t errlen)
{
    memset(res, 0, sizeof *res);
    const char *metap;
    size_t meta_len, data_len;
    const uint8_t *data;
    json_t *meta = NULL;
    int split = proto_split_body(body, len, &metap, &meta_len, &data, &data_len);
    if (split == 0 && shm_data) { /* the data came in shared memory; the frame held the meta only */
        data = shm_data;
        data_len = shm_len;
    }
    json_t *outputs = NULL;
    if (split < 0 || !(meta = json_loadb(metap, meta_len, 0, NULL)) ||
        !json_is_array(outputs = json_object_get(meta, "outputs"))) {
        json_decref(meta);
        snprintf(err, errlen, "model '%s' sent a malformed INFER_RESULT (bad meta)", model);
        return 502;
    }
    size_t nout = json_array_size(outputs);
    if (nout > INFER_MAX_TENSORS) {
        json_decref(meta);
        snprintf(err, errlen, "model '%s' sent a malformed INFER_RESULT (%zu outputs, at most %d)", model, nout,
                 INFER_MAX_TENSORS);
        return 502;
    }
    infer_output *ro = xcalloc(nout ? nout : 1, sizeof *ro);
    sb x = {0}; /* the classification results; allocated only for a classification */
    size_t off = 0;
    int status = 200;
    for (size_t i = 0; i < nout; i++) {
        json_t *o = json_array_get(outputs, i);
        infer_output *r = &ro[i];
        json_t *jname = json_object_get(o, "name");
        r->name = json_string_value(jname);
        r->name_len = json_string_length(jname);
        json_t *dt = json_object_get(o, "datatype");
        r->t = json_is_string(dt) ? dtype_from_name(json_string_value(dt), json_string_length(dt)) : DT_INVALID;
        json_t *shape = json_object_get(o, "shape");
        json_t *size = json_object_get(o, "size");
        r->ndim = json_is_array(shape) ? (int)json_array_size(shape) : -1;
        int ok = r->name && r->t != DT_INVALID && r->ndim >= 0 && r->ndim <= DTYPE_MAX_DIMS &&
                 json_is_integer(size) && json_integer_value(size) >= 0 &&
                 (uint64_t)json_integer_value(size) <= data_len - off;
        for (int d = 0; ok && d < r->ndim; d++) {
            json_t *v = json_array_get(shape, (size_t)d);
            ok = json_is_integer(v) && json_integer_value(v) >= 0;
            if (ok)
                r->dims[d] = json_integer_value(v);
        }
        r->count = ok ? dtype_shape_count(r->dims, r->ndim) : -1;
        r->size = ok ? (size_t)json_integer_value(size) : 0;
        r->data = data + off;
        if (r->count < 0 || dtype_check_raw(r->t, r->data, r->size, r->count) < 0) {
            char shown[160] = "";
            if (r->name)
                snprintf(shown, sizeof shown, " '%s'", r->name);
            utf8_trim_partial(shown);
            snprintf(err, errlen, "model '%s' sent a malformed INFER_RESULT (output %zu%s)", model, i, shown);
            status = 502;
            goto done;
        }
        r->shm = shm_output(opts, r->name);
        if (r->shm && r->size > r->shm->byte_size) { /* Triton's words */
            char shown[160];
            snprintf(shown, sizeof shown, "%s", r->name);
            utf8_trim_partial(shown);
            snprintf(err, errlen,
                     "model '%s': shared memory size specified with the request for output '%s' (%llu bytes) "
                     "should be at least %zu bytes to hold the results",
                     model, shown, (unsigned long long)r->shm->byte_size, r->size);
            status = 400;
            goto done;
        }
        off += r->size;
        json_t *k = opts->classify ? json_object_get(opts->classify, r->name) : NULL;
        int crc = k ? classify_result(model, opts, k, r, r->data, &x, err, errlen) : 0;
        if (crc) {
            status = crc;
            goto done;
        }
    }
    /* Every output the client asked for must have come back, as Triton requires. */
    size_t w;
    json_t *want;
    json_array_foreach(opts->requested, w, want) {
        int found = 0;
        for (size_t i = 0; i < nout && !found; i++)
            found = strcmp(ro[i].name, json_string_value(want)) == 0;
        if (!found) {
            char name[160];
            snprintf(name, sizeof name, "%s", json_string_value(want));
            utf8_trim_partial(name);
            snprintf(err, errlen, "model '%s' has no output '%s'", model, name);
            status = 400;
            goto done;
        }
    }
    /* The data of the outputs in client regions goes there; the answer says where. */
    for (size_t i = 0; i < nout; i++)
        if (ro[i].shm && ro[i].size)
            memcpy(ro[i].shm->map->base + ro[i].shm->offset, ro[i].data, ro[i].size);
    /* A region shrunk under a copy (clientshm.h) held zeros: the answer is not to be trusted. */
    for (int i = 0; i < opts->nshm; i++) {
        if (!clientshm_broken(opts->shm[i].map))
            continue;
        snprintf(err, errlen,
                 "model '%s': the object behind shared memory region '%.64s' was truncated while the request used "
                 "it",
                 model, opts->shm[i].region);
        utf8_trim_partial(err);
        status = 400;
        goto done;
    }
    if (x.p) { /* the classified outputs' offsets become pointers now that x is final */
        res->classified = sb_take(&x, &res->classified_len);
        for (size_t i = 0; i < nout; i++)
            if (ro[i].classified)
                ro[i].data = (const uint8_t *)res->classified + (uintptr_t)ro[i].data;
    }
    res->out = ro;
    res->n = nout;
    res->meta = meta;
    return 200;
done:
    sb_free(&x);
    free(ro);
    json_decref(meta);
    return status;
}

int infer_build_response(const char *model, const infer_opts *opts, const uint8_t *body, size_t len,
                         const uint8_t *shm_data, size_t shm_len, infer_response *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    infer_result res;
    int status = infer_read_result(model, opts, body, len, shm_data, shm_len, &res, err, errlen);
    if (status != 200)
        return status;
    /* Bound the answer's size before building it. */
    int binary_classified = 0;
    uint8_t binary_of[INFER_MAX_TENSORS]; /* decided once: the bound and the rendering must agree */
    size_t bound = 256 + strlen(model) * 6 + (opts->id ? opts->id_len * 6 : 0);
    for (size_t i = 0; i < res.n; i++) {
        infer_output *r = &res.out[i];
        int binary = binary_of[i] = !r->shm && wants_binary(opts, r->name);
        binary_classified |= r->classified && binary;
        bound += 64 + r->name_len * 6 + (size_t)r->ndim * 21 +
                 (r->shm ? 160 + r->shm->region_len * 6 : binary ? 0 : tensor_json_bound(r->t, r->size, r->count));
    }
    sb o;
    sb_init(&o, 256);
    if (sb_try_reserve(&o, bound) < 0) {
        sb_free(&o);
        infer_result_clear(&res);
        snprintf(err, errlen, "model '%s': no memory now for a %zu-byte response", model, bound);
        return 503;
    }
    sb_adds(&o, "{\"model_name\":");
    sb_json_str(&o, model, strlen(model));
    sb_adds(&o, ",\"model_version\":\"1\"");
    if (opts->id) {
        sb_adds(&o, ",\"id\":");
        sb_json_str(&o, opts->id, opts->id_len);
    }
    sb_adds(&o, ",\"outputs\":[");
    for (size_t i = 0; i < res.n; i++) {
        infer_output *r = &res.out[i];
        if (i)
            sb_addc(&o, ',');
        sb_adds(&o, "{\"name\":");
        sb_json_str(&o, r->name, r->name_len);
        add_type_and_shape(&o, r->t, r->dims, r->ndim);
        sb_addc(&o, ']');
        if (r->shm) { /* the data went into the client's region; the response says where */
            sb_adds(&o, ",\"parameters\":{\"shared_memory_region\":");
            sb_json_str(&o, r->shm->region, r->shm->region_len);
            sb_adds(&o, ",\"shared_memory_byte_size\":");
            sb_u64(&o, r->size);
            sb_adds(&o, ",\"shared_memory_offset\":");
            sb_u64(&o, r->shm->offset);
            sb_adds(&o, "}}");
        } else if (binary_of[i]) {
            sb_adds(&o, ",\"parameters\":{\"binary_data_size\":");
            sb_u64(&o, r->size);
            sb_adds(&o, "}}");
            out->binary[out->nbinary++] = (infer_slice){r->data, r->size};
        } else {
            sb_adds(&o, ",\"data\":");
            tensor_to_json(&o, r->t, r->data, r->size, r->count);
            sb_addc(&o, '}');
        }
    }
    sb_adds(&o, "]}");
    out->json = sb_take(&o, &out->json_len);
    if (binary_classified) { /* the binary sections point into it */
        out->owned = res.classified;
        out->owned_len = res.classified_len;
        res.classified = NULL;
    }
    infer_result_clear(&res);
    return 200;
}
