/*
 * grpc_infer — gRPC's inference messages <-> infer.c's; see grpc_infer.h.
 */
#include "grpc_infer.h"

#include "dtype.h"
#include "pbjson.h"
#include "sb.h"
#include "utf8.h"
#include "xmalloc.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the request ---- */

/* A varint of the protobuf wire format at *p (before end); -1 when cut short or longer than 10 bytes. */
static int wire_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    *v = 0;
    for (int shift = 0; shift < 70 && *p < end; shift += 7) {
        uint8_t b = *(*p)++;
        *v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            return 0;
    }
    return -1;
}

/* raw_input_contents' field number in ModelInferRequest (grpc_service.proto). */
#define RAW_INPUT_CONTENTS 7

Inference__ModelInferRequest *grpc_unpack_request(const uint8_t *msg, size_t len)
{
    /* One pass over the top-level fields: each raw_input_contents (length-delimited) is noted where it lies,
     * every other field copied as it is for protobuf-c, which parses and checks the rest. */
    const uint8_t *p = msg, *end = msg + len;
    size_t nraw = 0, rest_len = 0;
    while (p < end) {
        const uint8_t *start = p;
        uint64_t key, n;
        if (wire_varint(&p, end, &key) < 0)
            return NULL;
        switch (key & 7) {
        case 0:
            if (wire_varint(&p, end, &n) < 0)
                return NULL;
            break;
        case 1:
            if ((size_t)(end - p) < 8)
                return NULL;
            p += 8;
            break;
        case 5:
            if ((size_t)(end - p) < 4)
                return NULL;
            p += 4;
            break;
        case 2:
            if (wire_varint(&p, end, &n) < 0 || n > (uint64_t)(end - p))
                return NULL;
            p += n;
            break;
        default: return NULL; /* groups: not in proto3 */
        }
        if ((key >> 3) == RAW_INPUT_CONTENTS && (key & 7) == 2)
            nraw++;
        else
            rest_len += (size_t)(p - start);
    }
    if (nraw == 0) { /* nothing to take out: protobuf-c reads the message as it is */
        return (Inference__ModelInferRequest *)protobuf_c_message_unpack(&inference__model_infer_request__descriptor,
                                                                         NULL, len, msg);
    }
    uint8_t *rest = malloc(rest_len ? rest_len : 1);
    ProtobufCBinaryData *raw = malloc(nraw * sizeof *raw);
    if (!rest || !raw) {
        free(rest);
        free(raw);
        return NULL;
    }
    size_t k = 0, at = 0;
    for (p = msg; p < end;) { /* checked above: every step is within the message */
        const uint8_t *start = p;
        uint64_t key, n = 0;
        wire_varint(&p, end, &key);
        if ((key & 7) == 0)
            wire_varint(&p, end, &n);
        else if ((key & 7) == 1)
            p += 8;
        else if ((key & 7) == 5)
            p += 4;
        else {
            wire_varint(&p, end, &n);
            if ((key >> 3) == RAW_INPUT_CONTENTS) {
                raw[k].data = (uint8_t *)p;
                raw[k++].len = n;
                p += n;
                continue;
            }
            p += n;
        }
        memcpy(rest + at, start, (size_t)(p - start));
        at += (size_t)(p - start);
    }
    Inference__ModelInferRequest *m = (Inference__ModelInferRequest *)protobuf_c_message_unpack(
        &inference__model_infer_request__descriptor, NULL, rest_len, rest);
    free(rest);
    if (!m) {
        free(raw);
        return NULL;
    }
    m->raw_input_contents = raw; /* ours, not protobuf-c's: grpc_free_request takes it back first */
    m->n_raw_input_contents = nraw;
    return m;
}

void grpc_free_request(Inference__ModelInferRequest *m)
{
    if (!m)
        return;
    free(m->raw_input_contents); /* the array is ours (grpc_unpack_request); protobuf-c never saw field 7 */
    m->raw_input_contents = NULL;
    m->n_raw_input_contents = 0;
    protobuf_c_message_free_unpacked(&m->base, NULL);
}

/*
 * At most 64 bytes of a client's name, cut at a character's boundary, for
 * a message: "%.64s" could end inside a character, and then the quote
 * after it would make the whole message invalid UTF-8.
 */
static const char *shown(const char *s, char buf[65])
{
    snprintf(buf, 65, "%s", s);
    utf8_trim_partial(buf);
    return buf;
}

/* An InferParameter as the JSON value HTTP's request would carry; NULL with *why set when it has none. */
static json_t *infer_param(const Inference__InferParameter *p, const char **why)
{
    if (!p) {
        *why = "has no value";
        return NULL;
    }
    switch (p->parameter_choice_case) {
    case INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_BOOL_PARAM: return json_boolean(p->bool_param);
    case INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_INT64_PARAM: return json_integer(p->int64_param);
    case INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_DOUBLE_PARAM:
        if (!isfinite(p->double_param)) { /* JSON has no NaN or infinity: json_real would give NULL */
            *why = "is not a finite number";
            return NULL;
        }
        return json_real(p->double_param);
    case INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_UINT64_PARAM:
        if (p->uint64_param <= INT64_MAX)
            return json_integer((json_int_t)p->uint64_param);
        else { /* as infer.c reads a UINT64 beyond jansson's range: its digits */
            char digits[24];
            snprintf(digits, sizeof digits, "%llu", (unsigned long long)p->uint64_param);
            return json_string(digits);
        }
    case INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_STRING_PARAM: {
        json_t *s = json_stringn(p->string_param, strlen(p->string_param));
        if (!s)
            *why = "is not valid UTF-8";
        return s;
    }
    default: *why = "has no value"; return NULL;
    }
}

typedef struct Inference__ModelInferRequest__ParametersEntry param_entry;

/*
 * A parameters map as a JSON object, for what (a message's "parameters"
 * or "input 'x'"). Returns 0, or a message in err.
 */
static int params_json(param_entry **ps, size_t n, const char *what, json_t **out, char *err, size_t errlen)
{
    *out = json_object();
    for (size_t i = 0; i < n; i++) {
        const char *why = NULL;
        const char *key = ps[i]->key;
        if (!utf8_valid(key, strlen(key))) {
            snprintf(err, errlen, "%s: a parameter's name is not valid UTF-8", what);
            return -1;
        }
        json_t *v = infer_param(ps[i]->value, &why);
        if (!v) {
            char name[65];
            snprintf(err, errlen, "%s: parameter '%s' %s", what, shown(key, name), why);
            return -1;
        }
        json_object_set_new(*out, key, v);
    }
    return 0;
}

/* Typed contents: which field a datatype takes, and the field's name for messages. */
static const char *contents_field(dtype t)
{
    switch (t) {
    case DT_BOOL: return "bool_contents";
    case DT_INT8:
    case DT_INT16:
    case DT_INT32: return "int_contents";
    case DT_INT64: return "int64_contents";
    case DT_UINT8:
    case DT_UINT16:
    case DT_UINT32: return "uint_contents";
    case DT_UINT64: return "uint64_contents";
    case DT_FP32: return "fp32_contents";
    case DT_FP64: return "fp64_contents";
    case DT_BYTES: return "bytes_contents";
    default: return NULL;
    }
}

/* How many elements each typed field of c holds, and which fields are set. */
static size_t contents_count(const Inference__InferTensorContents *c, const char **set, int *nset)
{
    struct {
        size_t n;
        const char *name;
    } f[] = {{c->n_bool_contents, "bool_contents"},     {c->n_int_contents, "int_contents"},
             {c->n_int64_contents, "int64_contents"},   {c->n_uint_contents, "uint_contents"},
             {c->n_uint64_contents, "uint64_contents"}, {c->n_fp32_contents, "fp32_contents"},
             {c->n_fp64_contents, "fp64_contents"},     {c->n_bytes_contents, "bytes_contents"}};
    size_t total = 0;
    *nset = 0;
    *set = NULL;
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
        if (f[i].n) {
            total += f[i].n;
            *set = f[i].name;
            ++*nset;
        }
    return total;
}

/*
 * Converts typed contents of datatype t (count elements) to the raw
 * little-endian bytes (BYTES: each element's u32 length, then its bytes)
 * appended to b. Returns 0, or -1 with a message in err.
 */
static int contents_raw(const Inference__InferTensorContents *c, dtype t, int64_t count, const char *name, sb *b,
                        char *err, size_t errlen)
{
    const char *field = contents_field(t), *set;
    int nset;
    size_t have = contents_count(c, &set, &nset);
    if (!field) {
        snprintf(err, errlen, "input '%s': %s tensors have no typed contents; send them in raw_input_contents", name,
                 dtype_name(t));
        return -1;
    }
    if (nset > 1 || (nset == 1 && strcmp(set, field) != 0)) {
        snprintf(err, errlen, "input '%s': a %s tensor's contents go in %s (this one sets %s)", name, dtype_name(t),
                 field, set);
        return -1;
    }
    if ((int64_t)have != count) {
        snprintf(err, errlen, "input '%s': %s holds %zu elements; the shape says %lld", name, field, have,
                 (long long)count);
        return -1;
    }
    size_t es = dtype_size(t);
    if (t != DT_BYTES && sb_try_reserve(b, (size_t)count * es) < 0) {
        snprintf(err, errlen, "input '%s': no memory now for its contents", name);
        return -2;
    }
    for (size_t i = 0; i < have; i++) {
        uint8_t e[8];
        switch (t) {
        case DT_BOOL: e[0] = c->bool_contents[i] ? 1 : 0; break;
        case DT_INT8:
        case DT_INT16:
        case DT_INT32: {
            int32_t v = c->int_contents[i];
            if ((t == DT_INT8 && (v < INT8_MIN || v > INT8_MAX)) || (t == DT_INT16 && (v < INT16_MIN || v > INT16_MAX))) {
                snprintf(err, errlen, "input '%s': element %zu (%d) is out of range for %s", name, i, v, dtype_name(t));
                return -1;
            }
            memcpy(e, &v, 4); /* little-endian: the low bytes are the narrower type's */
            break;
        }
        case DT_INT64: memcpy(e, &c->int64_contents[i], 8); break;
        case DT_UINT8:
        case DT_UINT16:
        case DT_UINT32: {
            uint32_t v = c->uint_contents[i];
            if ((t == DT_UINT8 && v > UINT8_MAX) || (t == DT_UINT16 && v > UINT16_MAX)) {
                snprintf(err, errlen, "input '%s': element %zu (%u) is out of range for %s", name, i, v, dtype_name(t));
                return -1;
            }
            memcpy(e, &v, 4);
            break;
        }
        case DT_UINT64: memcpy(e, &c->uint64_contents[i], 8); break;
        case DT_FP32: memcpy(e, &c->fp32_contents[i], 4); break;
        case DT_FP64: memcpy(e, &c->fp64_contents[i], 8); break;
        case DT_BYTES: {
            const ProtobufCBinaryData *d = &c->bytes_contents[i];
            if (d->len > UINT32_MAX) {
                snprintf(err, errlen, "input '%s': element %zu is longer than 4 GiB", name, i);
                return -1;
            }
            uint32_t len = (uint32_t)d->len;
            if (sb_try_reserve(b, 4 + d->len) < 0) {
                snprintf(err, errlen, "input '%s': no memory now for its contents", name);
                return -2;
            }
            sb_add(b, (const char *)&len, 4);
            if (d->len) /* an empty element's data is NULL, which memcpy may not be given */
                sb_add(b, (const char *)d->data, d->len);
            continue;
        }
        default: break;
        }
        sb_add(b, (const char *)e, es);
    }
    return 0;
}


void grpc_request_clear(grpc_request *r)
{
    json_decref(r->doc);
    json_decref(r->params);
    free(r->pieces);
    free(r->conv);
    memset(r, 0, sizeof *r);
}

int grpc_request_read(const Inference__ModelInferRequest *in, const char *model, grpc_request *r, char *err,
                      size_t errlen)
{
    memset(r, 0, sizeof *r);
    int status = 400;
    json_t *inputs = NULL, *outputs = NULL;
    size_t *conv_off = NULL;
    uint8_t *is_conv = NULL;
    sb conv = {0};
    char what[200];
#define BAD(...)                                                                                                      \
    do {                                                                                                              \
        snprintf(err, errlen, __VA_ARGS__);                                                                           \
        goto fail;                                                                                                    \
    } while (0)
    if (!utf8_valid(in->id, strlen(in->id)))
        BAD("model '%s': the request's id is not valid UTF-8", model);
    snprintf(what, sizeof what, "model '%s': the request", model);
    if (params_json((param_entry **)in->parameters, in->n_parameters, what, &r->params, err, errlen) < 0)
        goto fail;
    json_t *ef = json_object_get(r->params, "triton_enable_empty_final_response");
    if (ef) { /* Triton's, and ours to honour: not the model's */
        if (!json_is_boolean(ef))
            BAD("model '%s': parameter triton_enable_empty_final_response must be a boolean", model);
        r->empty_final = json_is_true(ef);
        json_object_del(r->params, "triton_enable_empty_final_response");
    }
    if (in->n_inputs > INFER_MAX_TENSORS || in->n_outputs > INFER_MAX_TENSORS)
        BAD("model '%s': at most %d inputs and %d outputs per request", model, INFER_MAX_TENSORS, INFER_MAX_TENSORS);
    size_t nraw = in->n_raw_input_contents, raw_used = 0;
    if (nraw > in->n_inputs)
        BAD("model '%s': raw_input_contents has %zu entries for %zu inputs", model, nraw, in->n_inputs);
    size_t nin = in->n_inputs ? in->n_inputs : 1;
    r->pieces = xcalloc(nin, sizeof *r->pieces);
    conv_off = xcalloc(nin, sizeof *conv_off);
    is_conv = xcalloc(nin, 1);
    inputs = json_array();
    for (size_t i = 0; i < in->n_inputs; i++) {
        const Inference__ModelInferRequest__InferInputTensor *t = in->inputs[i];
        const char *nm = t->name;
        if (!utf8_valid(nm, strlen(nm)))
            BAD("model '%s': inputs[%zu].name is not valid UTF-8", model, i);
        char name[65];
        snprintf(what, sizeof what, "model '%s': input '%s'", model, shown(nm, name));
        json_t *ip;
        if (params_json((param_entry **)t->parameters, t->n_parameters, what, &ip, err, errlen) < 0) {
            json_decref(ip);
            goto fail;
        }
        if (json_object_get(ip, "binary_data_size")) {
            json_decref(ip);
            BAD("%s: binary_data_size is HTTP's; over gRPC a tensor's bytes go in raw_input_contents or contents",
                what);
        }
        json_t *shape = json_array();
        for (size_t d = 0; d < t->n_shape; d++)
            json_array_append_new(shape, json_integer(t->shape[d]));
        json_t *jt = json_pack("{s:s%, s:s, s:o}", "name", nm, strlen(nm), "datatype", t->datatype, "shape", shape);
        if (!jt) {
            json_decref(ip);
            BAD("%s: its datatype is not valid UTF-8", what);
        }
        json_array_append_new(inputs, jt);
        if (json_object_get(ip, "shared_memory_region")) { /* the bytes are in the client's region */
            json_object_set_new(jt, "parameters", ip);
            if (t->contents)
                BAD("%s: set contents or shared_memory_region, not both", what);
            continue;
        }
        job_piece *p = &r->pieces[r->npieces];
        if (nraw) {
            json_object_set_new(jt, "parameters", ip);
            if (t->contents)
                BAD("%s: contents must not be set when the request uses raw_input_contents", what);
            if (raw_used >= nraw)
                BAD("model '%s': raw_input_contents has %zu entries, fewer than the inputs outside shared memory",
                    model, nraw);
            p->ptr = in->raw_input_contents[raw_used].data ? in->raw_input_contents[raw_used].data
                                                           : (const uint8_t *)"";
            p->len = in->raw_input_contents[raw_used].len;
            raw_used++;
        } else if (t->contents) {
            json_object_set_new(jt, "parameters", ip);
            dtype dt = dtype_from_name(t->datatype, strlen(t->datatype));
            int neg = 0;
            for (size_t d = 0; d < t->n_shape; d++)
                neg |= t->shape[d] < 0;
            int64_t count = t->n_shape <= DTYPE_MAX_DIMS && !neg ? dtype_shape_count(t->shape, (int)t->n_shape) : -1;
            p->ptr = (const uint8_t *)"";
            if (dt != DT_INVALID && count >= 0) { /* else infer.c names what is wrong */
                if (!conv.p)
                    sb_init(&conv, 256);
                conv_off[r->npieces] = conv.len;
                is_conv[r->npieces] = 1;
                char why[600];
                int rc = contents_raw(t->contents, dt, count, name, &conv, why, sizeof why);
                if (rc < 0) {
                    status = rc == -2 ? 503 : 400;
                    BAD("model '%s': %s", model, why);
                }
                p->len = conv.len - conv_off[r->npieces];
            }
        } else {
            json_decref(ip);
            BAD("%s has no data: send it in raw_input_contents or contents", what);
        }
        json_object_set_new(json_object_get(jt, "parameters"), "binary_data_size", json_integer((json_int_t)p->len));
        r->npieces++;
    }
    if (raw_used != nraw)
        BAD("model '%s': raw_input_contents has %zu entries for %zu inputs outside shared memory", model, nraw,
            raw_used);
    if (conv.p) { /* the converted contents are final: point the pieces at them */
        r->conv = (uint8_t *)sb_take(&conv, NULL);
        for (int k = 0; k < r->npieces; k++)
            if (is_conv[k])
                r->pieces[k].ptr = r->conv + conv_off[k];
    }
    outputs = json_array();
    for (size_t i = 0; i < in->n_outputs; i++) {
        const Inference__ModelInferRequest__InferRequestedOutputTensor *t = in->outputs[i];
        if (!utf8_valid(t->name, strlen(t->name)))
            BAD("model '%s': outputs[%zu].name is not valid UTF-8", model, i);
        char name[65];
        snprintf(what, sizeof what, "model '%s': output '%s'", model, shown(t->name, name));
        json_t *op;
        if (params_json((param_entry **)t->parameters, t->n_parameters, what, &op, err, errlen) < 0) {
            json_decref(op);
            goto fail;
        }
        json_t *jo = json_pack("{s:s}", "name", t->name);
        if (json_object_size(op))
            json_object_set_new(jo, "parameters", op);
        else
            json_decref(op);
        json_array_append_new(outputs, jo);
    }
    r->doc = json_pack("{s:O, s:o}", "parameters", r->params, "inputs", inputs);
    inputs = NULL;
    if (json_array_size(outputs)) /* none named: all of them, as a request without "outputs" asks */
        json_object_set(r->doc, "outputs", outputs);
    if (*in->id)
        json_object_set_new(r->doc, "id", json_string(in->id));
    json_decref(outputs);
    free(conv_off);
    free(is_conv);
    return 0;
fail:
    sb_free(&conv);
    free(conv_off);
    free(is_conv);
    json_decref(inputs);
    json_decref(outputs);
    grpc_request_clear(r);
    return status;
#undef BAD
}

/* ---- decoupled models ---- */

/* One element of a tensor as JSON. NULL: a BYTES element that is not UTF-8 text. */
static json_t *element_json(dtype t, const uint8_t *p, size_t len)
{
    switch (t) {
    case DT_BOOL: return json_boolean(p[0]);
    case DT_UINT8: return json_integer(p[0]);
    case DT_UINT16: { uint16_t v; memcpy(&v, p, 2); return json_integer(v); }
    case DT_UINT32: { uint32_t v; memcpy(&v, p, 4); return json_integer(v); }
    case DT_UINT64: { uint64_t v; memcpy(&v, p, 8); return v <= INT64_MAX ? json_integer((json_int_t)v) : json_real((double)v); }
    case DT_INT8: return json_integer((int8_t)p[0]);
    case DT_INT16: { int16_t v; memcpy(&v, p, 2); return json_integer(v); }
    case DT_INT32: { int32_t v; memcpy(&v, p, 4); return json_integer(v); }
    case DT_INT64: { int64_t v; memcpy(&v, p, 8); return json_integer(v); }
    case DT_FP16: { uint16_t v; memcpy(&v, p, 2); return json_real(dtype_half_to_float(v)); }
    case DT_BF16: { uint16_t v; memcpy(&v, p, 2); return json_real(dtype_bf16_to_float(v)); }
    case DT_FP32: { float v; memcpy(&v, p, 4); return json_real(v); }
    case DT_FP64: { double v; memcpy(&v, p, 8); return json_real(v); }
    case DT_BYTES: return json_stringn((const char *)p, len);
    default: return NULL;
    }
}

/*
 * A JSON value as one output tensor, as Triton's generate maps its answers:
 * a string BYTES [1], a boolean BOOL [1], an integer INT64 [1], a number
 * FP64 [1], an array of one of those [n]; anything else its JSON text as
 * BYTES [1]. The bytes go into b (offsets in *off, *len).
 */
static void value_tensor(json_t *v, dtype *t, int64_t *n, sb *b, size_t *off, size_t *len)
{
    *off = b->len;
    json_t *first = json_is_array(v) ? json_array_get(v, 0) : v;
    size_t count = json_is_array(v) ? json_array_size(v) : 1;
    *t = json_is_string(first) ? DT_BYTES : json_is_boolean(first) ? DT_BOOL : json_is_integer(first) ? DT_INT64
         : json_is_real(first) ? DT_FP64 : DT_INVALID;
    for (size_t i = 0; *t != DT_INVALID && json_is_array(v) && i < count; i++) {
        json_t *e = json_array_get(v, i);
        int same = (*t == DT_BYTES && json_is_string(e)) || (*t == DT_BOOL && json_is_boolean(e)) ||
                   (*t == DT_INT64 && json_is_integer(e)) || (*t == DT_FP64 && json_is_number(e));
        if (*t == DT_INT64 && json_is_real(e))
            *t = DT_FP64, same = 1; /* integers and decimals together are numbers */
        if (!same)
            *t = DT_INVALID;
    }
    if (*t == DT_INVALID || (json_is_array(v) && count == 0)) { /* its text */
        char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        uint32_t l = text ? (uint32_t)strlen(text) : 0;
        sb_add(b, (const char *)&l, 4);
        sb_add(b, text ? text : "", l);
        free(text);
        *t = DT_BYTES;
        *n = 1;
        *len = b->len - *off;
        return;
    }
    for (size_t i = 0; i < count; i++) {
        json_t *e = json_is_array(v) ? json_array_get(v, i) : v;
        if (*t == DT_BYTES) {
            uint32_t l = (uint32_t)json_string_length(e);
            sb_add(b, (const char *)&l, 4);
            sb_add(b, json_string_value(e), l);
        } else if (*t == DT_BOOL) {
            sb_addc(b, json_is_true(e) ? 1 : 0);
        } else if (*t == DT_INT64) {
            int64_t x = json_integer_value(e);
            sb_add(b, (const char *)&x, 8);
        } else {
            double x = json_number_value(e);
            sb_add(b, (const char *)&x, 8);
        }
    }
    *n = (int64_t)count;
    *len = b->len - *off;
}


int grpc_generate_body(const Inference__ModelInferRequest *in, const grpc_request *r, char **out, size_t *out_len,
                       char *err, size_t errlen)
{
    if (r->npieces != (int)in->n_inputs) {
        snprintf(err, errlen, "a decoupled model's inputs travel in the request, not in shared memory");
        return 400;
    }
    json_t *o = json_object();
    for (size_t i = 0; i < in->n_inputs; i++) {
        const Inference__ModelInferRequest__InferInputTensor *t = in->inputs[i];
        dtype dt = dtype_from_name(t->datatype, strlen(t->datatype));
        int64_t count = dtype_shape_count(t->shape, (int)t->n_shape);
        const uint8_t *p = r->pieces[i].ptr;
        size_t es = dtype_size(dt);
        json_t *arr = json_array();
        for (int64_t k = 0; k < count; k++) {
            size_t len = es;
            if (dt == DT_BYTES) {
                uint32_t n;
                memcpy(&n, p, 4); /* well formed: infer.c checked it (dtype_check_raw) */
                p += 4;
                len = n;
            }
            json_t *e = element_json(dt, p, len);
            if (!e) {
                char name[65];
                snprintf(err, errlen, "input '%s': element %lld is %s; a decoupled model's requests become JSON "
                         "(for its generate)", shown(t->name, name), (long long)k,
                         dt == DT_BYTES ? "not UTF-8 text" : "not a finite number");
                json_decref(arr);
                json_decref(o);
                return 400;
            }
            json_array_append_new(arr, e);
            p += len;
        }
        if (count == 1 && t->n_shape <= 1) {
            json_object_set(o, t->name, json_array_get(arr, 0));
            json_decref(arr);
        } else {
            json_object_set_new(o, t->name, arr);
        }
    }
    const char *key;
    json_t *v;
    json_object_foreach(r->params, key, v) {
        if (strcmp(key, "priority") == 0 || strcmp(key, "timeout") == 0)
            continue; /* corral's own, honoured on the job */
        if (json_object_get(o, key)) {
            char name[65];
            snprintf(err, errlen, "parameter '%s' has the name of an input", shown(key, name));
            json_decref(o);
            return 400;
        }
        json_object_set(o, key, v);
    }
    *out = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!*out) {
        snprintf(err, errlen, "no memory now for the request");
        return 503;
    }
    *out_len = strlen(*out);
    return 0;
}

/* ---- answers ---- */

/* A response's common part; on a stream, triton_final_response (Triton sets it on every streamed response). */
typedef struct resp_head {
    Inference__ModelInferResponse resp;
    Inference__ModelInferResponse__ParametersEntry entry, *entries[1];
    Inference__InferParameter final;
} resp_head;

static void head_init(resp_head *h, const char *model, const char *id, int stream, int final)
{
    Inference__ModelInferResponse init = INFERENCE__MODEL_INFER_RESPONSE__INIT;
    h->resp = init;
    h->resp.model_name = (char *)model;
    h->resp.model_version = (char *)"1";
    h->resp.id = (char *)(id ? id : "");
    if (!stream)
        return;
    Inference__ModelInferResponse__ParametersEntry e = INFERENCE__MODEL_INFER_RESPONSE__PARAMETERS_ENTRY__INIT;
    Inference__InferParameter p = INFERENCE__INFER_PARAMETER__INIT;
    h->entry = e;
    h->final = p;
    h->final.parameter_choice_case = INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_BOOL_PARAM;
    h->final.bool_param = final;
    h->entry.key = (char *)"triton_final_response";
    h->entry.value = &h->final;
    h->entries[0] = &h->entry;
    h->resp.n_parameters = 1;
    h->resp.parameters = h->entries;
}

static uint8_t *pack_head(resp_head *h, int stream, const char *error, size_t *len)
{
    if (!stream)
        return pb_pack(&h->resp.base, len);
    Inference__ModelStreamInferResponse s = INFERENCE__MODEL_STREAM_INFER_RESPONSE__INIT;
    s.infer_response = &h->resp;
    if (error)
        s.error_message = (char *)error;
    return pb_pack(&s.base, len);
}

static Inference__ModelInferResponse__InferOutputTensor *new_output(pb_arena *a, const char *name, size_t name_len,
                                                                    dtype t, const int64_t *dims, int ndim)
{
    Inference__ModelInferResponse__InferOutputTensor *o =
        (Inference__ModelInferResponse__InferOutputTensor *)pb_new(
            a, &inference__model_infer_response__infer_output_tensor__descriptor);
    o->name = pb_strdup(a, name, name_len);
    o->datatype = (char *)dtype_name(t);
    o->n_shape = (size_t)ndim;
    o->shape = pb_alloc(a, sizeof(int64_t) * (size_t)(ndim ? ndim : 1));
    memcpy(o->shape, dims, sizeof(int64_t) * (size_t)ndim);
    return o;
}

/* An output's description (name, datatype, shape; the region of one placed in client shared memory). */
static Inference__ModelInferResponse__InferOutputTensor *output_message(pb_arena *a, const infer_output *o)
{
    Inference__ModelInferResponse__InferOutputTensor *t = new_output(a, o->name, o->name_len, o->t, o->dims, o->ndim);
    if (o->shm) { /* in the client's region already: the answer says where */
        /* a map of InferParameter: each value the message's JSON, its oneof member by name */
        json_t *p = json_pack("{s:{s:{s:s%},s:{s:I},s:{s:I}}}", "parameters", "shared_memory_region", "string_param",
                              o->shm->region, o->shm->region_len, "shared_memory_byte_size", "int64_param",
                              (json_int_t)o->size, "shared_memory_offset", "int64_param", (json_int_t)o->shm->offset);
        pb_from_json(a, &t->base, p, NULL);
        json_decref(p);
    }
    return t;
}

/* A varint of the wire format at p: its length. */
static size_t put_varint(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    do {
        p[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
    return n;
}

/* raw_output_contents (ModelInferResponse field 6) and infer_response (ModelStreamInferResponse field 2), length-delimited. */
#define RAW_OUTPUT_TAG ((6 << 3) | 2)
#define STREAM_RESPONSE_TAG ((2 << 3) | 2)

int grpc_pack_result_parts(const char *model, const char *id, const infer_result *res, int stream, uint8_t **head,
                           size_t *head_len, job_piece *parts, int *nparts)
{
    /* The message but its raw outputs, packed by protobuf-c; then each raw output's field, its tag and length
     * here and its bytes where they lie. Fields may come in any order: this is the message protobuf-c would
     * have packed. */
    pb_arena a = {0};
    resp_head h;
    head_init(&h, model, id, stream, 1);
    size_t n = res->n ? res->n : 1;
    h.resp.n_outputs = res->n;
    h.resp.outputs = pb_alloc(&a, n * sizeof *h.resp.outputs);
    for (size_t i = 0; i < res->n; i++)
        h.resp.outputs[i] = output_message(&a, &res->out[i]);
    size_t main_len = protobuf_c_message_get_packed_size(&h.resp.base);
    size_t inner_len = main_len;
    for (size_t i = 0; i < res->n; i++) {
        uint8_t tmp[10];
        size_t len = res->out[i].shm ? 0 : res->out[i].size;
        inner_len += 1 + put_varint(tmp, len) + len;
    }
    size_t cap = 1 + 10 + main_len + res->n * 11;
    uint8_t *b = malloc(cap);
    if (!b) {
        pb_arena_free(&a);
        return -1;
    }
    size_t at = 0;
    if (stream) { /* ModelStreamInferResponse { infer_response = 2 }: its one field, this message */
        b[at++] = STREAM_RESPONSE_TAG;
        at += put_varint(b + at, inner_len);
    }
    at += protobuf_c_message_pack(&h.resp.base, b + at);
    pb_arena_free(&a);
    int k = 0;
    parts[k++] = (job_piece){b, at};
    for (size_t i = 0; i < res->n; i++) {
        const infer_output *o = &res->out[i];
        size_t len = o->shm ? 0 : o->size, start = at;
        b[at++] = RAW_OUTPUT_TAG;
        at += put_varint(b + at, len);
        parts[k++] = (job_piece){b + start, at - start};
        if (len)
            parts[k++] = (job_piece){o->data, len};
    }
    *head = b;
    *head_len = at;
    *nparts = k;
    return 0;
}

uint8_t *grpc_pack_result(const char *model, const char *id, const infer_result *res, int stream, size_t *len)
{
    pb_arena a = {0};
    resp_head h;
    head_init(&h, model, id, stream, 1);
    size_t n = res->n ? res->n : 1;
    h.resp.n_outputs = h.resp.n_raw_output_contents = res->n;
    h.resp.outputs = pb_alloc(&a, n * sizeof *h.resp.outputs);
    h.resp.raw_output_contents = pb_alloc(&a, n * sizeof *h.resp.raw_output_contents);
    for (size_t i = 0; i < res->n; i++) {
        h.resp.outputs[i] = output_message(&a, &res->out[i]);
        if (!res->out[i].shm) { /* one in a client region has no bytes here */
            h.resp.raw_output_contents[i].data = (uint8_t *)res->out[i].data;
            h.resp.raw_output_contents[i].len = res->out[i].size;
        }
    }
    uint8_t *buf = pack_head(&h, stream, NULL, len);
    pb_arena_free(&a);
    return buf;
}

/* Whether name is among the requested names (NULL: every output is). */
static int wanted(const json_t *requested, const char *name)
{
    if (!requested)
        return 1;
    size_t i;
    json_t *v;
    json_array_foreach(requested, i, v) {
        if (strcmp(json_string_value(v), name) == 0)
            return 1;
    }
    return 0;
}

uint8_t *grpc_pack_generated(const char *model, const char *id, int events, const char *content_type,
                             const uint8_t *data, size_t data_len, int final, const json_t *requested, size_t *len)
{
    pb_arena a = {0};
    resp_head h;
    head_init(&h, model, id, 1, final);
    sb b;
    sb_init(&b, data_len + 64);
    /* a string may hold NULs: BYTES elements carry them, as the request's body (grpc_generate_body) does */
    json_t *obj = events && data ? json_loadb((const char *)data, data_len, JSON_ALLOW_NUL, NULL) : NULL;
    if (json_is_object(obj)) {
        size_t n = json_object_size(obj), i = 0;
        size_t *offs = pb_alloc(&a, sizeof(size_t) * (n ? n : 1)), *lens = pb_alloc(&a, sizeof(size_t) * (n ? n : 1));
        h.resp.outputs = pb_alloc(&a, sizeof *h.resp.outputs * (n ? n : 1));
        h.resp.raw_output_contents = pb_alloc(&a, sizeof *h.resp.raw_output_contents * (n ? n : 1));
        const char *key;
        json_t *v;
        json_object_foreach(obj, key, v) {
            if (!wanted(requested, key))
                continue;
            dtype dt;
            int64_t count;
            value_tensor(v, &dt, &count, &b, &offs[i], &lens[i]);
            h.resp.outputs[i++] = new_output(&a, key, strlen(key), dt, &count, 1);
        }
        h.resp.n_outputs = h.resp.n_raw_output_contents = i;
        for (size_t k = 0; k < i; k++) { /* b has stopped growing */
            h.resp.raw_output_contents[k].data = (uint8_t *)b.p + offs[k];
            h.resp.raw_output_contents[k].len = lens[k];
        }
    } else if (data && wanted(requested, "content")) {
        int64_t one = 1;
        Inference__ModelInferResponse__InferOutputTensor *t = new_output(&a, "content", 7, DT_BYTES, &one, 1);
        uint32_t l = (uint32_t)data_len;
        sb_add(&b, (const char *)&l, 4);
        sb_add(&b, (const char *)data, data_len);
        json_t *p = json_pack("{s:{s:{s:s}}}", "parameters", "content_type", "string_param",
                              content_type && *content_type ? content_type : "application/octet-stream");
        pb_from_json(&a, &t->base, p, NULL);
        json_decref(p);
        h.resp.n_outputs = h.resp.n_raw_output_contents = 1;
        h.resp.outputs = pb_alloc(&a, sizeof *h.resp.outputs);
        h.resp.outputs[0] = t;
        h.resp.raw_output_contents = pb_alloc(&a, sizeof *h.resp.raw_output_contents);
        h.resp.raw_output_contents[0].data = (uint8_t *)b.p;
        h.resp.raw_output_contents[0].len = b.len;
    }
    json_decref(obj);
    uint8_t *buf = pack_head(&h, 1, NULL, len);
    sb_free(&b);
    pb_arena_free(&a);
    return buf;
}

uint8_t *grpc_pack_stream_error(const char *model, const char *id, const char *msg, size_t *len)
{
    resp_head h;
    head_init(&h, model, id, 1, 1);
    return pack_head(&h, 1, msg, len);
}
