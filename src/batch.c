/*
 * batch — the BATCH frame and the split of its answer; see batch.h.
 */
#include "batch.h"

#include "dtype.h"
#include "model.h"
#include "proto.h"
#include "sb.h"
#include "sessreq.h"
#include "xmalloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

batch_entry *batch_entry_new(uint64_t rows, int ninputs, const char *text, size_t text_len, const size_t *spec_off,
                             const size_t *dims_off, const size_t *size, size_t sig_off, size_t sig_len,
                             size_t fields_off, json_t *wanted)
{
    size_t n = (size_t)ninputs;
    size_t head = sizeof(batch_entry) + n * (2 * sizeof(char *) + sizeof(size_t));
    batch_entry *e = xmalloc(head + text_len);
    char **spec = (char **)(e + 1);
    char **dims = spec + n;
    size_t *sizes = (size_t *)(dims + n);
    char *t = (char *)e + head;
    memcpy(t, text, text_len);
    for (size_t k = 0; k < n; k++) {
        spec[k] = t + spec_off[k];
        dims[k] = t + dims_off[k];
        sizes[k] = size[k];
    }
    *e = (batch_entry){.rows = rows, .sig = t + sig_off, .sig_len = sig_len, .fields = t + fields_off, .ninputs = ninputs,
                       .spec = spec, .dims = dims, .size = sizes, .wanted = wanted ? json_incref(wanted) : NULL};
    return e;
}

void batch_entry_free(batch_entry *e)
{
    if (!e)
        return;
    json_decref(e->wanted);
    free(e);
}

int batch_compatible(const job *a, const job *b)
{
    return a->bentry && b->bentry && a->bentry->sig_len == b->bentry->sig_len &&
           memcmp(a->bentry->sig, b->bentry->sig, a->bentry->sig_len) == 0;
}

/* Where a member's data for input k is: a piece kept for shared memory, or inside its frame after the meta. */
static job_piece member_input(const job *j, int k)
{
    if (j->pieces)
        return j->pieces[k];
    const uint8_t *data = j->frame + PROTO_HEADER_SIZE + 4 + proto_get_u32(j->frame + PROTO_HEADER_SIZE);
    for (int i = 0; i < k; i++)
        data += j->bentry->size[i];
    return (job_piece){data, j->bentry->size[k]};
}

job *batch_new(struct model *m, job **members, int n, uint64_t rows)
{
    const batch_entry *first = members[0]->bentry;
    int ninputs = first->ninputs;
    job *b = job_new(m, PROTO_BATCH, members[0]->priority);
    sb meta;
    sb_init(&meta, 256 + (size_t)n * 64);
    sb_adds(&meta, "{\"batch\":[");
    for (int i = 0; i < n; i++) {
        sb_adds(&meta, i ? ",{\"id\":" : "{\"id\":");
        sb_u64(&meta, members[i]->id);
        sb_adds(&meta, ",\"rows\":");
        sb_u64(&meta, members[i]->bentry->rows);
        sb_addc(&meta, ',');
        sb_adds(&meta, members[i]->bentry->fields);
        sb_addc(&meta, '}');
    }
    sb_adds(&meta, "],\"inputs\":[");
    for (int k = 0; k < ninputs; k++) {
        size_t size = 0;
        for (int i = 0; i < n; i++)
            size += members[i]->bentry->size[k];
        sb_adds(&meta, k ? ",{" : "{");
        sb_adds(&meta, first->spec[k]);
        sb_adds(&meta, ",\"shape\":[");
        sb_u64(&meta, rows);
        sb_adds(&meta, first->dims[k]);
        sb_adds(&meta, "],\"size\":");
        sb_u64(&meta, size);
        sb_addc(&meta, '}');
    }
    sb_adds(&meta, "]}");
    /* Input by input, each member's part in batch order: gathered once, into the frame or shared memory. */
    job_piece *pieces = xmalloc((size_t)ninputs * (size_t)n * sizeof *pieces);
    for (int k = 0; k < ninputs; k++)
        for (int i = 0; i < n; i++)
            pieces[k * n + i] = member_input(members[i], k);
    int rc = job_build_frame(b, meta.p, meta.len, pieces, ninputs * n, NULL);
    free(pieces);
    sb_free(&meta);
    if (rc < 0) {
        job_free(b);
        return NULL;
    }
    b->members = xmalloc((size_t)n * sizeof *b->members);
    memcpy(b->members, members, (size_t)n * sizeof *b->members);
    b->nmembers = n;
    b->batch_rows = rows;
    for (int i = 0; i < n; i++)
        members[i]->batch = b;
    b->on_done = batch_answer;
    b->on_free = batch_release;
    return b;
}

/* ---- the answer ---- */

/* Hands member i its answer (or nothing, when a deadline answered it), then frees it. */
static void answer_member(job *b, int i, int status, const char *msg, uint8_t *body, size_t len)
{
    job *j = b->members[i];
    b->members[i] = NULL;
    if (!j)
        return;
    j->inst = b->inst; /* for its messages: the instance that ran it */
    if (!j->answered)
        j->on_done(j, status, msg, status == 200 ? PROTO_INFER_RESULT : 0, body, len);
    else
        free(body);
    job_free(j);
}

static void answer_all(job *b, int status, const char *msg)
{
    for (int i = 0; i < b->nmembers; i++)
        answer_member(b, i, status, msg, NULL, 0);
}

static void batch_drop_members(job *b)
{
    char msg[256];
    snprintf(msg, sizeof msg, "model '%s': its batch was dropped before it was answered", model_name(b->model));
    answer_all(b, 500, msg);
    free(b->members);
    b->members = NULL;
    b->nmembers = 0;
}

void batch_release(job *j)
{
    if (j->members)
        batch_drop_members(j);
    batch_entry_free(j->bentry);
    j->bentry = NULL;
}

/* One output of the batch's result, checked against the data it claims. */
typedef struct out_tensor {
    json_t *spec; /* borrowed from the meta */
    const char *name;
    dtype t;
    int ndim;
    int64_t dims[DTYPE_MAX_DIMS];
    const uint8_t *data;
    size_t size;
} out_tensor;

/* Parses outputs[] against data: 0, or -1 with why (the worker broke the protocol). */
static int parse_outputs(json_t *outputs, const uint8_t *data, size_t data_len, out_tensor *out, size_t *n,
                         size_t *used, char *why, size_t whylen)
{
    size_t off = 0;
    *n = json_array_size(outputs);
    if (!json_is_array(outputs) || *n > 256) {
        snprintf(why, whylen, "its outputs are not an array of at most 256 tensors");
        return -1;
    }
    for (size_t i = 0; i < *n; i++) {
        json_t *o = json_array_get(outputs, i);
        out_tensor *t = &out[i];
        t->spec = o;
        t->name = json_string_value(json_object_get(o, "name"));
        json_t *dt = json_object_get(o, "datatype");
        t->t = json_is_string(dt) ? dtype_from_name(json_string_value(dt), json_string_length(dt)) : DT_INVALID;
        json_t *shape = json_object_get(o, "shape");
        json_t *size = json_object_get(o, "size");
        t->ndim = json_is_array(shape) ? (int)json_array_size(shape) : -1;
        int ok = t->name && t->t != DT_INVALID && t->ndim >= 0 && t->ndim <= DTYPE_MAX_DIMS &&
                 json_is_integer(size) && json_integer_value(size) >= 0 &&
                 (uint64_t)json_integer_value(size) <= data_len - off;
        for (int d = 0; ok && d < t->ndim; d++) {
            json_t *v = json_array_get(shape, (size_t)d);
            ok = json_is_integer(v) && json_integer_value(v) >= 0;
            t->dims[d] = ok ? json_integer_value(v) : 0;
        }
        int64_t count = ok ? dtype_shape_count(t->dims, t->ndim) : -1;
        t->size = ok ? (size_t)json_integer_value(size) : 0;
        t->data = data + off;
        if (count < 0 || dtype_check_raw(t->t, t->data, t->size, count) < 0) {
            snprintf(why, whylen, "its output %zu is malformed", i);
            return -1;
        }
        off += t->size;
    }
    *used = off;
    return 0;
}

/* The byte offset of row `row` of t (dimension 0), for fixed-size and BYTES datatypes alike. */
static size_t row_offset(const out_tensor *t, uint64_t row)
{
    int64_t per_row = dtype_shape_count(t->dims + 1, t->ndim - 1);
    if (dtype_size(t->t))
        return (size_t)row * (size_t)per_row * dtype_size(t->t);
    size_t off = 0; /* BYTES: walk the length-prefixed elements (checked by dtype_check_raw) */
    for (uint64_t e = 0; e < row * (uint64_t)per_row; e++)
        off += 4 + proto_get_u32(t->data + off);
    return off;
}

static int wanted(const batch_entry *e, const char *name)
{
    size_t i;
    json_t *v;
    if (!e || !e->wanted)
        return 1;
    json_array_foreach(e->wanted, i, v)
        if (strcmp(json_string_value(v), name) == 0)
            return 1;
    return 0;
}

/* An INFER_RESULT body: meta {"outputs": [...]} (the tensors' specs, with shape and size as given) and data. */
static uint8_t *result_body(const out_tensor *t, size_t n, const batch_entry *e, uint64_t row0, uint64_t rows,
                            size_t *len)
{
    sb meta;
    sb_init(&meta, 128);
    sb_adds(&meta, "{\"outputs\":[");
    size_t data_len = 0, offs[256], sizes[256];
    int first = 1;
    for (size_t i = 0; i < n; i++) {
        sizes[i] = 0;
        if (!wanted(e, t[i].name))
            continue;
        if (rows) { /* a slice of dimension 0 */
            offs[i] = row_offset(&t[i], row0);
            sizes[i] = row_offset(&t[i], row0 + rows) - offs[i];
        } else { /* the tensor as it is */
            offs[i] = 0;
            sizes[i] = t[i].size;
        }
        sb_adds(&meta, first ? "{\"name\":" : ",{\"name\":");
        first = 0;
        sb_json_str(&meta, t[i].name, strlen(t[i].name));
        sb_adds(&meta, ",\"datatype\":\"");
        sb_adds(&meta, dtype_name(t[i].t));
        sb_adds(&meta, "\",\"shape\":[");
        for (int d = 0; d < t[i].ndim; d++) {
            if (d)
                sb_addc(&meta, ',');
            sb_u64(&meta, d == 0 && rows ? rows : (uint64_t)t[i].dims[d]);
        }
        sb_adds(&meta, "],\"size\":");
        sb_u64(&meta, sizes[i]);
        sb_addc(&meta, '}');
        data_len += sizes[i];
    }
    sb_adds(&meta, "]}");
    *len = 4 + meta.len + data_len;
    uint8_t *body = xmalloc(*len);
    proto_put_u32(body, (uint32_t)meta.len);
    memcpy(body + 4, meta.p, meta.len);
    uint8_t *w = body + 4 + meta.len;
    for (size_t i = 0; i < n; i++) {
        if (!sizes[i])
            continue;
        memcpy(w, t[i].data + offs[i], sizes[i]);
        w += sizes[i];
    }
    sb_free(&meta);
    return body;
}

static void part_error(batch_part *p, int status, const char *fmt, const char *model, const char *message)
{
    size_t n = strlen(fmt) + strlen(model) + strlen(message) + 1;
    p->msg = xmalloc(n);
    snprintf(p->msg, n, fmt, model, message);
    p->status = status;
}

/* {"results": [...]}: each member's own outputs, or its own error. Checked whole before any part is made. */
static int split_results(const char *model, const batch_entry *const *entries, int nmembers, json_t *results,
                         const uint8_t *data, size_t data_len, batch_part *parts, char *why, size_t whylen)
{
    if (json_array_size(results) != (size_t)nmembers) {
        snprintf(why, whylen, "it sent %zu results for a batch of %d requests", json_array_size(results), nmembers);
        return -1;
    }
    out_tensor *t = xcalloc(256, sizeof *t);
    for (int pass = 0; pass < 2; pass++) {
        size_t off = 0;
        for (int i = 0; i < nmembers; i++) {
            json_t *r = json_array_get(results, (size_t)i);
            json_t *err = json_object_get(r, "error");
            if (err) {
                const char *message = json_string_value(json_object_get(err, "message"));
                if (!message) {
                    snprintf(why, whylen, "its result %d has an error without a message", i);
                    free(t);
                    return -1;
                }
                if (pass == 1) {
                    int rejected = json_integer_value(json_object_get(err, "status")) == 400;
                    part_error(&parts[i], rejected ? 400 : 500,
                               rejected ? "model '%s' rejected the input: %s" : "model '%s' raised %s", model,
                               message);
                }
                continue;
            }
            size_t n, used;
            if (parse_outputs(json_object_get(r, "outputs"), data + off, data_len - off, t, &n, &used, why,
                              whylen) < 0) {
                free(t);
                return -1;
            }
            if (pass == 1) {
                parts[i].status = 200;
                parts[i].body = result_body(t, n, entries[i], 0, 0, &parts[i].len);
                parts[i].session = json_incref(json_object_get(r, "session"));
            }
            off += used;
        }
        if (off != data_len) {
            snprintf(why, whylen, "its results claim %zu of %zu bytes of data", off, data_len);
            free(t);
            return -1;
        }
    }
    free(t);
    return 0;
}

void batch_parts_free(batch_part *parts, int n)
{
    for (int i = 0; i < n; i++) {
        free(parts[i].msg);
        free(parts[i].body);
        json_decref(parts[i].session);
        parts[i] = (batch_part){0};
    }
}

int batch_split(const char *model, const batch_entry *const *entries, int n, uint64_t rows, const uint8_t *body,
                size_t len, const uint8_t *shm_data, size_t shm_len, batch_part *parts, char *msg, size_t msglen)
{
    const char *metap;
    size_t meta_len, data_len;
    const uint8_t *data;
    json_t *meta = NULL;
    char why[512] = "";
    int rc = 0;
    memset(parts, 0, (size_t)n * sizeof *parts);
    int split = proto_split_body(body, len, &metap, &meta_len, &data, &data_len);
    if (split == 0 && shm_data) { /* the data came in shared memory; the frame held the meta only */
        data = shm_data;
        data_len = shm_len;
    }
    if (split < 0 || !(meta = json_loadb(metap, meta_len, 0, NULL)) || !json_is_object(meta)) {
        snprintf(why, sizeof why, "its meta is not a JSON object");
        goto broken;
    }
    json_t *results = json_object_get(meta, "results");
    if (results) {
        if (split_results(model, entries, n, results, data, data_len, parts, why, sizeof why) < 0)
            goto broken;
        goto done;
    }
    out_tensor *t = xcalloc(256, sizeof *t);
    size_t nout, used = 0;
    if (parse_outputs(json_object_get(meta, "outputs"), data, data_len, t, &nout, &used, why, sizeof why) < 0 ||
        used != data_len) {
        if (!why[0])
            snprintf(why, sizeof why, "its outputs claim %zu of %zu bytes of data", used, data_len);
        free(t);
        goto broken;
    }
    /* Every output must have the batch's rows: else nobody can say whose rows are whose. */
    for (size_t i = 0; i < nout; i++) {
        if (t[i].ndim == 0 || (uint64_t)t[i].dims[0] != rows) {
            snprintf(msg, msglen,
                     "model '%s' answered a batch of %llu rows with output '%.200s' of %s%lld rows in dimension 0; "
                     "a batching model's outputs must have one row per input row",
                     model, (unsigned long long)rows, t[i].name, t[i].ndim ? "" : "no dimension, not ",
                     (long long)(t[i].ndim ? t[i].dims[0] : 0));
            free(t);
            rc = 1;
            goto done;
        }
    }
    json_t *sessions = json_object_get(meta, "sessions");
    if (sessions && (!json_is_array(sessions) || json_array_size(sessions) != (size_t)n)) {
        snprintf(why, sizeof why, "its sessions are not an array of one entry per request (%d)", n);
        free(t);
        goto broken;
    }
    uint64_t row = 0;
    for (int i = 0; i < n; i++) {
        uint64_t r = entries[i] ? entries[i]->rows : 0;
        parts[i].status = 200;
        parts[i].body = result_body(t, nout, entries[i], row, r, &parts[i].len);
        json_t *u = json_array_get(sessions, (size_t)i);
        parts[i].session = json_is_null(u) ? NULL : json_incref(u);
        row += r;
    }
    free(t);
done:
    json_decref(meta);
    return rc;
broken:
    snprintf(msg, msglen, "model '%s' sent a malformed answer to a batch: %s; it is replaced", model, why);
    json_decref(meta);
    batch_parts_free(parts, n);
    return -1;
}

void batch_answer(job *b, int status, const char *msg, uint8_t type, uint8_t *body, size_t len)
{
    (void)type;
    if (status != 200) {
        free(body);
        answer_all(b, status, msg);
        return;
    }
    const batch_entry **entries = xmalloc((size_t)b->nmembers * sizeof *entries);
    batch_part *parts = xmalloc((size_t)b->nmembers * sizeof *parts);
    for (int i = 0; i < b->nmembers; i++)
        entries[i] = b->members[i] ? b->members[i]->bentry : NULL;
    char why[900];
    int rc = batch_split(model_name(b->model), entries, b->nmembers, b->batch_rows, body, len, b->shm_data,
                         b->shm_len, parts, why, sizeof why);
    free(body);
    if (rc != 0) {
        answer_all(b, 502, why);
        b->result_broken = rc < 0; /* a protocol error: the instance replaces the worker */
    } else {
        for (int i = 0; i < b->nmembers; i++) {
            job *j = b->members[i];
            char bad[300];
            if (j && j->sess && parts[i].session && parts[i].status == 200 &&
                sessreq_stage(j->sess, parts[i].session, bad, sizeof bad) < 0) {
                snprintf(why, sizeof why, "model '%s' sent a malformed answer to a batch: %s", model_name(b->model),
                         bad);
                answer_member(b, i, 502, why, NULL, 0);
                continue; /* its body is freed with the parts */
            }
            answer_member(b, i, parts[i].status, parts[i].msg, parts[i].body, parts[i].len);
            parts[i].body = NULL; /* passed on */
        }
        batch_parts_free(parts, b->nmembers);
    }
    free(parts);
    free(entries);
}
