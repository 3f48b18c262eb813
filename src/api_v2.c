/*
 * api_v2 — the Open Inference Protocol (KServe v2) as Triton serves it:
 * health, server and model metadata, inference with JSON and binary
 * tensors, and the model repository extension.
 *
 * One inference: the JSON header (and, with the binary extension, the
 * binary section after it) becomes one INFER frame — meta JSON plus raw
 * tensor bytes — built in a single buffer; the worker's INFER_RESULT comes
 * back as one buffer and is written out as JSON, or passed through as the
 * binary section without a copy.
 */
#include "api.h"

#include "http.h"
#include "log.h"
#include "proto.h"
#include "sb.h"
#include "shm.h"
#include "tensor.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>



/* ---- inference request ---- */

/* A 400 for an inference request: every message names the model. */
static void bad_request(h2o_req_t *req, const char *model, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void bad_request(h2o_req_t *req, const char *model, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    http_error(req, 400, 0, "model '%s': %s", model, msg);
}

/*
 * jansson holds integers as long long, so a UINT64 element above INT64_MAX
 * (or any integer beyond the 64-bit range) fails to parse. Such integer
 * tokens are quoted here, outside strings, and tensor_from_json reads a
 * quoted run of digits as an integer: exact for UINT64, out of range for
 * everything else. Returns a malloc'ed copy, or NULL when nothing changed.
 */
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

typedef struct segment {
    const uint8_t *ptr; /* binary data in the request, or NULL: at off in the converted data */
    size_t off, len;
} segment;

#define MAX_INPUTS 256

/*
 * Parses a v2 inference request into an INFER frame. Returns 0 with the
 * frame, or -1 after answering 400.
 */
static int build_infer_frame(h2o_req_t *req, api_pending *p, job *j)
{
    h2o_iovec_t body = req->entity;
    size_t json_len = body.len;
    const h2o_iovec_t *hcl = http_header(req, "inference-header-content-length");
    if (hcl) {
        char tmp[32];
        size_t n = hcl->len < sizeof tmp - 1 ? hcl->len : sizeof tmp - 1;
        memcpy(tmp, hcl->base, n);
        tmp[n] = 0;
        char *end;
        unsigned long long v = strtoull(tmp, &end, 10);
        if (end == tmp || *end || tmp[0] == '-' || v > body.len) {
            bad_request(req, model_name(p->model),
                        "Inference-Header-Content-Length '%s' is not a length within the body (%zu bytes)", tmp,
                        body.len);
            return -1;
        }
        json_len = (size_t)v;
    }
    const uint8_t *bin = (const uint8_t *)body.base + json_len;
    size_t bin_len = body.len - json_len, bin_used = 0;

    const char *model = model_name(p->model);
    json_error_t jerr;
    json_t *root = json_loadb(body.base ? body.base : "", json_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root && strstr(jerr.text, "too big integer")) {
        size_t qlen;
        char *quoted = quote_big_integers(body.base, json_len, &qlen);
        if (quoted) {
            root = json_loadb(quoted, qlen, JSON_REJECT_DUPLICATES, &jerr);
            free(quoted);
        }
    }
    if (!root) {
        bad_request(req, model, "malformed JSON in inference request: %s (line %d, column %d)", jerr.text, jerr.line,
                    jerr.column);
        return -1;
    }
    sb meta, data;
    sb_init(&meta, 512);
    sb_init(&data, 256);
    segment segs[MAX_INPUTS];
    int nsegs = 0;
    char err[512];
    const manifest *mf = model_manifest(p->model);
#define BAD(...)                                                                                                      \
    do {                                                                                                              \
        bad_request(req, model, __VA_ARGS__);                                                                         \
        goto fail;                                                                                                    \
    } while (0)

    if (!json_is_object(root))
        BAD("an inference request must be a JSON object");
    json_t *id = json_object_get(root, "id");
    if (id && !json_is_string(id))
        BAD("'id' must be a string");
    json_t *params = json_object_get(root, "parameters");
    if (params && !json_is_object(params))
        BAD("'parameters' must be an object");
    int priority = 0;
    json_t *prio = json_object_get(params, "priority");
    if (prio) {
        int levels = mf ? mf->priority_levels : 1;
        if (!json_is_integer(prio) || json_integer_value(prio) < 0 || json_integer_value(prio) > levels)
            BAD("parameters.priority must be an integer from 0 (the model's default) to %d", levels);
        priority = (int)json_integer_value(prio);
    }
    json_t *timeout = json_object_get(params, "timeout");
    if (timeout && (!json_is_integer(timeout) || json_integer_value(timeout) < 0))
        BAD("parameters.timeout must be a non-negative integer (microseconds)");
    json_t *bdo = json_object_get(params, "binary_data_output");
    if (bdo && !json_is_boolean(bdo))
        BAD("parameters.binary_data_output must be a boolean");
    p->binary_all = json_is_true(bdo);

    json_t *inputs = json_object_get(root, "inputs");
    if (!json_is_array(inputs) || json_array_size(inputs) == 0)
        BAD("'inputs' must be a non-empty array of tensors");
    if (json_array_size(inputs) > MAX_INPUTS)
        BAD("at most %d inputs per request", MAX_INPUTS);

    sb_adds(&meta, "{\"id\":");
    if (id)
        sb_json_str(&meta, json_string_value(id), json_string_length(id));
    else
        sb_adds(&meta, "\"\"");
    sb_adds(&meta, ",\"parameters\":");
    if (params) {
        char *ptext = json_dumps(params, JSON_COMPACT);
        sb_adds(&meta, ptext);
        free(ptext);
    } else {
        sb_adds(&meta, "{}");
    }
    sb_adds(&meta, ",\"inputs\":[");
    size_t i;
    json_t *in;
    json_array_foreach(inputs, i, in) {
        if (!json_is_object(in))
            BAD("inputs[%zu] must be an object", i);
        json_t *name = json_object_get(in, "name");
        if (!json_is_string(name) || json_string_length(name) == 0)
            BAD("inputs[%zu].name must be a non-empty string", i);
        const char *nm = json_string_value(name);
        for (size_t k = 0; k < i; k++)
            if (strcmp(json_string_value(json_object_get(json_array_get(inputs, k), "name")), nm) == 0)
                BAD("input '%s' appears twice", nm);
        json_t *dt = json_object_get(in, "datatype");
        dtype t = json_is_string(dt) ? dtype_from_name(json_string_value(dt), json_string_length(dt)) : DT_INVALID;
        if (t == DT_INVALID)
            BAD("input '%s': datatype must be one of BOOL, UINT8, UINT16, UINT32, UINT64, INT8, INT16, INT32, "
                "INT64, FP16, FP32, FP64, BF16, BYTES",
                nm);
        json_t *shape = json_object_get(in, "shape");
        if (!json_is_array(shape) || json_array_size(shape) > TENSOR_MAX_DIMS)
            BAD("input '%s': shape must be an array of at most %d non-negative integers", nm, TENSOR_MAX_DIMS);
        int64_t dims[TENSOR_MAX_DIMS];
        int ndim = (int)json_array_size(shape);
        for (int d = 0; d < ndim; d++) {
            json_t *v = json_array_get(shape, (size_t)d);
            if (!json_is_integer(v) || json_integer_value(v) < 0)
                BAD("input '%s': shape must be an array of at most %d non-negative integers", nm, TENSOR_MAX_DIMS);
            dims[d] = json_integer_value(v);
        }
        int64_t count = shape_count(dims, ndim);
        if (count < 0 || (dtype_size(t) && (uint64_t)count > PROTO_MAX_BODY / dtype_size(t)))
            BAD("input '%s': shape is too large", nm);
        json_t *ip = json_object_get(in, "parameters");
        json_t *bsize = json_object_get(ip, "binary_data_size");
        json_t *jdata = json_object_get(in, "data");
        segment *s = &segs[nsegs++];
        if (bsize) {
            if (!json_is_integer(bsize) || json_integer_value(bsize) < 0 ||
                (uint64_t)json_integer_value(bsize) > bin_len - bin_used)
                BAD("input '%s': parameters.binary_data_size must be a length within the binary data (%zu bytes "
                    "left)",
                    nm, bin_len - bin_used);
            s->ptr = bin + bin_used;
            s->len = (size_t)json_integer_value(bsize);
            bin_used += s->len;
            if (tensor_check_raw(t, s->ptr, s->len, count) < 0)
                BAD("input '%s': %zu bytes of binary data do not hold %lld %s elements", nm, s->len,
                    (long long)count, dtype_name(t));
        } else {
            if (!jdata)
                BAD("input '%s' has neither 'data' nor parameters.binary_data_size", nm);
            s->ptr = NULL;
            s->off = data.len;
            if (tensor_from_json(jdata, t, count, &data, err, sizeof err) < 0)
                BAD("input '%s': data %s", nm, err);
            s->len = data.len - s->off;
        }
        if (i)
            sb_addc(&meta, ',');
        sb_adds(&meta, "{\"name\":");
        sb_json_str(&meta, nm, json_string_length(name));
        sb_printf(&meta, ",\"datatype\":\"%s\",\"shape\":[", dtype_name(t));
        for (int d = 0; d < ndim; d++)
            sb_printf(&meta, d ? ",%lld" : "%lld", (long long)dims[d]);
        sb_printf(&meta, "],\"size\":%zu}", s->len);
    }
    if (bin_used != bin_len)
        BAD("%zu bytes of binary data are not claimed by any input's binary_data_size", bin_len - bin_used);
    sb_addc(&meta, ']');

    json_t *outputs = json_object_get(root, "outputs");
    if (outputs) {
        if (!json_is_array(outputs))
            BAD("'outputs' must be an array");
        sb_adds(&meta, ",\"outputs\":[");
        json_t *o;
        json_array_foreach(outputs, i, o) {
            json_t *name = json_object_get(o, "name");
            if (!json_is_object(o) || !json_is_string(name))
                BAD("outputs[%zu] must be an object with a name", i);
            json_t *bd = json_object_get(json_object_get(o, "parameters"), "binary_data");
            if (bd && !json_is_boolean(bd))
                BAD("outputs[%zu].parameters.binary_data must be a boolean", i);
            if (!p->requested)
                p->requested = json_array();
            json_array_append(p->requested, name);
            if (json_is_true(bd)) {
                if (!p->binary_outputs)
                    p->binary_outputs = json_array();
                json_array_append(p->binary_outputs, name);
            }
            if (i)
                sb_addc(&meta, ',');
            sb_json_str(&meta, json_string_value(name), json_string_length(name));
        }
        sb_addc(&meta, ']');
    }
    sb_addc(&meta, '}');

    /* The frame: header, meta length, meta, then every tensor back to back.
     * Large tensors are left where they are until the instance is known
     * (inst_send): they may go into its shared memory instead. */
    size_t data_total = 0;
    for (int k = 0; k < nsegs; k++)
        data_total += segs[k].len;
    size_t total = 4 + meta.len + data_total;
    if (total > PROTO_MAX_BODY)
        BAD("the inference request is larger than the protocol's 1 GiB frame limit");
    int defer = data_total >= SHM_MIN_BYTES;
    uint8_t *frame = malloc(PROTO_HEADER_SIZE + total - (defer ? data_total : 0));
    if (!frame)
        BAD("cannot allocate %zu bytes for the request", total);
    proto_header_encode(frame, PROTO_INFER, j->id, (uint32_t)total);
    uint8_t *w = frame + PROTO_HEADER_SIZE;
    proto_put_u32(w, (uint32_t)meta.len);
    memcpy(w + 4, meta.p, meta.len);
    w += 4 + meta.len;
    if (defer) {
        j->pieces = malloc((size_t)nsegs * sizeof *j->pieces);
        if (!j->pieces) {
            free(frame);
            BAD("cannot allocate the request's %d tensors", nsegs);
        }
        j->data_owned = (uint8_t *)sb_take(&data, NULL);
        for (int k = 0; k < nsegs; k++) {
            j->pieces[k].ptr = segs[k].ptr ? segs[k].ptr : j->data_owned + segs[k].off;
            j->pieces[k].len = segs[k].len;
        }
        j->npieces = nsegs;
        j->pieces_len = data_total;
    } else {
        for (int k = 0; k < nsegs; k++) {
            memcpy(w, segs[k].ptr ? segs[k].ptr : (const uint8_t *)data.p + segs[k].off, segs[k].len);
            w += segs[k].len;
        }
    }
    j->frame = frame;
    j->frame_len = PROTO_HEADER_SIZE + total - (defer ? data_total : 0);
    j->priority = priority;
    if (timeout && json_integer_value(timeout) > 0) /* 0 or absent: the model's own timeout */
        j->deadline_ms = now_ms() + ((uint64_t)json_integer_value(timeout) + 999) / 1000;
    if (id) {
        p->id = h2o_strdup(&req->pool, json_string_value(id), json_string_length(id));
        p->has_id = 1;
    }
    sb_free(&meta);
    sb_free(&data);
    json_decref(root);
    return 0;
fail:
    sb_free(&meta);
    sb_free(&data);
    json_decref(root);
    return -1;
#undef BAD
}

/* ---- inference response ---- */

static int wants_binary(api_pending *p, const char *name)
{
    if (p->binary_all)
        return 1;
    size_t i;
    json_t *v;
    json_array_foreach(p->binary_outputs, i, v) {
        if (strcmp(json_string_value(v), name) == 0)
            return 1;
    }
    return 0;
}

static void infer_respond(api_pending *p, int status, const char *msg, uint8_t *body, size_t len)
{
    h2o_req_t *req = p->req;
    if (status != 200) {
        http_error(req, status, status == 503 ? 1 : 0, "%s", msg);
        return;
    }
    http_own(req, body); /* binary outputs are sent straight from the worker's buffer */
    const char *metap;
    size_t meta_len, data_len;
    const uint8_t *data;
    json_t *meta = NULL;
    const char *model = model_name(p->model);
    int split = proto_split_body(body, len, &metap, &meta_len, &data, &data_len);
    if (split == 0 && p->shm_data) { /* the data came in shared memory; the frame held the meta only */
        data = p->shm_data;
        data_len = p->shm_len;
    }
    if (split < 0 ||
        !(meta = json_loadb(metap, meta_len, 0, NULL)) || !json_is_array(json_object_get(meta, "outputs"))) {
        json_decref(meta);
        http_error(req, 502, 0, "model '%s' sent a malformed INFER_RESULT (bad meta)", model);
        return;
    }
    sb out;
    /* room for the JSON numbers, within reason: the buffer grows if needed */
    size_t guess = p->binary_all ? 0 : data_len * 2;
    sb_init(&out, 256 + (guess < (64u << 20) ? guess : (64u << 20)));
    h2o_iovec_t bufs[MAX_INPUTS + 1];
    size_t nbufs = 1, binary_total = 0, off = 0;
    sb_adds(&out, "{\"model_name\":");
    sb_json_str(&out, model, strlen(model));
    sb_adds(&out, ",\"model_version\":\"1\"");
    if (p->has_id) {
        sb_adds(&out, ",\"id\":");
        sb_json_str(&out, p->id.base, p->id.len);
    }
    sb_adds(&out, ",\"outputs\":[");
    size_t i;
    json_t *o;
    json_array_foreach(json_object_get(meta, "outputs"), i, o) {
        const char *name = json_string_value(json_object_get(o, "name"));
        json_t *dt = json_object_get(o, "datatype");
        dtype t = json_is_string(dt) ? dtype_from_name(json_string_value(dt), json_string_length(dt)) : DT_INVALID;
        json_t *shape = json_object_get(o, "shape");
        json_t *size = json_object_get(o, "size");
        int64_t dims[TENSOR_MAX_DIMS];
        int ndim = json_is_array(shape) ? (int)json_array_size(shape) : -1;
        int ok = name && t != DT_INVALID && ndim >= 0 && ndim <= TENSOR_MAX_DIMS && json_is_integer(size) &&
                 json_integer_value(size) >= 0 && (uint64_t)json_integer_value(size) <= data_len - off &&
                 i < MAX_INPUTS;
        for (int d = 0; ok && d < ndim; d++) {
            json_t *v = json_array_get(shape, (size_t)d);
            ok = json_is_integer(v) && json_integer_value(v) >= 0;
            if (ok)
                dims[d] = json_integer_value(v);
        }
        int64_t count = ok ? shape_count(dims, ndim) : -1;
        size_t sz = ok ? (size_t)json_integer_value(size) : 0;
        if (count < 0 || tensor_check_raw(t, data + off, sz, count) < 0) {
            sb_free(&out);
            /* name belongs to meta: answer before letting it go */
            http_error(req, 502, 0, "model '%s' sent a malformed INFER_RESULT (output %zu%s%s%s)", model, i,
                       name ? " '" : "", name ? name : "", name ? "'" : "");
            json_decref(meta);
            return;
        }
        if (i)
            sb_addc(&out, ',');
        sb_adds(&out, "{\"name\":");
        sb_json_str(&out, name, strlen(name));
        sb_printf(&out, ",\"datatype\":\"%s\",\"shape\":[", dtype_name(t));
        for (int d = 0; d < ndim; d++)
            sb_printf(&out, d ? ",%lld" : "%lld", (long long)dims[d]);
        sb_addc(&out, ']');
        if (wants_binary(p, name)) {
            sb_printf(&out, ",\"parameters\":{\"binary_data_size\":%zu}}", sz);
            bufs[nbufs++] = h2o_iovec_init(data + off, sz);
            binary_total += sz;
        } else {
            sb_adds(&out, ",\"data\":");
            tensor_to_json(&out, t, data + off, sz, count);
            sb_addc(&out, '}');
        }
        off += sz;
    }
    sb_adds(&out, "]}");
    /* Every output the client asked for must have come back, as Triton requires. */
    size_t r;
    json_t *want;
    json_array_foreach(p->requested, r, want) {
        int found = 0;
        json_array_foreach(json_object_get(meta, "outputs"), i, o) {
            const char *name = json_string_value(json_object_get(o, "name"));
            if (name && strcmp(name, json_string_value(want)) == 0)
                found = 1;
        }
        if (!found) {
            sb_free(&out);
            json_decref(meta);
            http_error(req, 400, 0, "model '%s' has no output '%s'", model, json_string_value(want));
            return;
        }
    }
    json_decref(meta);
    size_t json_len;
    char *json = sb_take(&out, &json_len);
    http_own(req, json);
    bufs[0] = h2o_iovec_init(json, json_len);
    if (nbufs == 1) {
        http_sendv(req, 200, "application/json", bufs, 1);
        return;
    }
    char hl[32];
    int n = snprintf(hl, sizeof hl, "%zu", json_len);
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("inference-header-content-length"), 0,
                          "Inference-Header-Content-Length", h2o_strdup(&req->pool, hl, (size_t)n).base, (size_t)n);
    (void)binary_total;
    http_sendv(req, 200, "application/octet-stream", bufs, nbufs);
}

static void handle_infer(h2o_req_t *req, model *m)
{
    api_pending *p = api_pending_new(req, m);
    p->respond = infer_respond;
    job *j = job_new(m, PROTO_INFER, 0);
    if (build_infer_frame(req, p, j) < 0) {
        job_free(j);
        return;
    }
    api_submit(p, j);
}

/* ---- model repository extension ---- */

static void lifecycle_done(void *ctx, int status, const char *msg)
{
    api_pending *p = ctx;
    p->waiting = 0;
    if (!p->req)
        return;
    if (status == 200)
        http_send_json(p->req, 200, json_object());
    else
        http_error(p->req, status, 1, "%s", msg);
}

static api_pending *waiter_for(h2o_req_t *req, model *m)
{
    api_pending *p = api_pending_new(req, m);
    p->waiter.done = lifecycle_done;
    p->waiter.ctx = p;
    p->waiting = 1;
    return p;
}

/* Instances from {"instances": N} or Triton-style {"parameters": {"instances": N}}; 0 when absent. */
static int load_instances(h2o_req_t *req, const char *model, int *instances)
{
    *instances = 0;
    if (req->entity.len == 0)
        return 0;
    json_error_t jerr;
    json_t *root = json_loadb(req->entity.base, req->entity.len, 0, &jerr);
    if (!json_is_object(root)) {
        json_decref(root);
        http_error(req, 400, 0, "model '%s': a load request body must be a JSON object", model);
        return -1;
    }
    json_t *n = json_object_get(root, "instances");
    if (!n)
        n = json_object_get(json_object_get(root, "parameters"), "instances");
    int rc = 0;
    if (n) {
        if (!json_is_integer(n) || json_integer_value(n) < 1 || json_integer_value(n) > 1024) {
            http_error(req, 400, 0, "model '%s': instances must be an integer from 1 to 1024", model);
            rc = -1;
        } else {
            *instances = (int)json_integer_value(n);
        }
    }
    json_decref(root);
    return rc;
}

static void handle_load(h2o_req_t *req, h2o_iovec_t name)
{
    if (!model_name_valid(name.base, name.len)) {
        api_model_or_error(req, name);
        return;
    }
    /* As Triton does, a load reads the repository again: a model added since
     * the last scan appears, and an unloaded or failed model loads from its
     * manifest as it is on disk now. */
    registry_rescan();
    model *m = api_model_or_error(req, name);
    if (!m)
        return;
    int instances;
    if (load_instances(req, model_name(m), &instances) < 0)
        return;
    api_pending *p = waiter_for(req, m);
    char msg[1200];
    int status = model_load(m, instances, &p->waiter, msg, sizeof msg);
    if (status) {
        p->waiting = 0;
        http_error(req, status, 1, "%s", msg);
    }
}

static void handle_unload(h2o_req_t *req, model *m)
{
    api_pending *p = waiter_for(req, m);
    char msg[512];
    int status = model_unload(m, &p->waiter, msg, sizeof msg);
    if (status) {
        p->waiting = 0;
        http_error(req, status, 1, "%s", msg);
    }
}

static const char *triton_state(model *m)
{
    switch (model_get_state(m)) {
    case MODEL_READY: return "READY";
    case MODEL_LOADING: return "LOADING";
    case MODEL_UNLOADING: return "UNLOADING";
    default: return "UNAVAILABLE";
    }
}

static void handle_index(h2o_req_t *req)
{
    int ready_only = 0;
    if (req->entity.len) {
        json_t *root = json_loadb(req->entity.base, req->entity.len, 0, NULL);
        if (!json_is_object(root)) {
            json_decref(root);
            http_error(req, 400, 0, "repository index request body must be a JSON object");
            return;
        }
        ready_only = json_is_true(json_object_get(root, "ready"));
        json_decref(root);
    }
    int rc = registry_rescan();
    if (rc < 0) {
        http_error(req, 500, 0, "cannot scan the model repository: %s", strerror(-rc));
        return;
    }
    json_t *out = json_array();
    for (model *m = model_next(NULL); m; m = model_next(m)) {
        if (ready_only && model_get_state(m) != MODEL_READY)
            continue;
        const char *reason = model_reason(m);
        if (!reason && model_get_state(m) == MODEL_UNLOADED)
            reason = "unloaded";
        json_t *e = json_pack("{s:s, s:s, s:s, s:s, s:s}", "name", model_name(m), "version", "1", "state",
                              triton_state(m), "corral_state", model_state_name(model_get_state(m)), "reason",
                              reason ? reason : "");
        json_t *mj = model_to_json(m);
        json_object_set(e, "changed", json_object_get(mj, "changed"));
        json_decref(mj);
        json_array_append_new(out, e);
    }
    http_send_json(req, 200, out);
}

/* ---- routing ---- */

int api_v2(h2o_req_t *req, const api_path *p)
{
    int get = METHOD_IS(req, "GET") || METHOD_IS(req, "HEAD");
    int post = METHOD_IS(req, "POST");
    if (p->n == 1) {
        if (!get) {
            http_method_not_allowed(req, "GET");
            return 0;
        }
        http_send_json(req, 200, json_pack("{s:s, s:s, s:[s,s]}", "name", "corral", "version", CORRAL_VERSION,
                                           "extensions", "binary_tensor_data", "model_repository"));
        return 0;
    }
    if (SEG_IS(p, 1, "health") && p->n == 3) {
        int live = SEG_IS(p, 2, "live");
        if (!live && !SEG_IS(p, 2, "ready"))
            return -1;
        if (!get) {
            http_method_not_allowed(req, "GET");
            return 0;
        }
        if (!live && api_draining)
            http_error(req, 503, 1, "corral is shutting down");
        else
            http_send_json(req, 200, json_pack("{s:b}", live ? "live" : "ready", 1));
        return 0;
    }
    if (SEG_IS(p, 1, "repository")) {
        if (p->n == 3 && SEG_IS(p, 2, "index")) {
            if (!post) {
                http_method_not_allowed(req, "POST");
                return 0;
            }
            handle_index(req);
            return 0;
        }
        if (p->n == 5 && SEG_IS(p, 2, "models") && (SEG_IS(p, 4, "load") || SEG_IS(p, 4, "unload"))) {
            if (!post) {
                http_method_not_allowed(req, "POST");
                return 0;
            }
            if (SEG_IS(p, 4, "load")) {
                handle_load(req, p->seg[3]);
            } else {
                model *m = api_model_or_error(req, p->seg[3]);
                if (m)
                    handle_unload(req, m);
            }
            return 0;
        }
        return -1;
    }
    if (!SEG_IS(p, 1, "models") || p->n < 3)
        return -1;
    /* /v2/models/{name}[/versions/{v}][/ready|/infer] */
    int rest = 3;
    int versioned = SEG_IS(p, 3, "versions") && p->n >= 5;
    if (versioned)
        rest = 5;
    if (p->n > rest + 1)
        return -1;
    const char *action = p->n == rest + 1 ? (SEG_IS(p, rest, "ready") ? "ready" : SEG_IS(p, rest, "infer") ? "infer" : NULL)
                                           : "metadata";
    if (!action)
        return -1;
    model *m = api_model_or_error(req, p->seg[2]);
    if (!m)
        return 0;
    if (versioned && !h2o_memis(p->seg[4].base, p->seg[4].len, H2O_STRLIT("1"))) {
        http_error(req, 404, 0, "model '%s' has no version '%.*s' (corral serves version 1)", model_name(m),
                   (int)(p->seg[4].len > 64 ? 64 : p->seg[4].len), p->seg[4].base);
        return 0;
    }
    if (strcmp(action, "infer") == 0) {
        if (!post) {
            http_method_not_allowed(req, "POST");
            return 0;
        }
        if (api_draining) {
            http_error(req, 503, 1, "model '%s': corral is shutting down", model_name(m));
            return 0;
        }
        handle_infer(req, m);
        return 0;
    }
    if (!get) {
        http_method_not_allowed(req, "GET");
        return 0;
    }
    if (strcmp(action, "ready") == 0) {
        if (model_get_state(m) == MODEL_READY)
            http_send_json(req, 200, json_pack("{s:s, s:b}", "name", model_name(m), "ready", 1));
        else
            http_error(req, 400, 0, "model '%s' is not ready (%s)", model_name(m),
                       model_state_name(model_get_state(m)));
        return 0;
    }
    http_send_json(req, 200, model_metadata_json(m));
    return 0;
}
