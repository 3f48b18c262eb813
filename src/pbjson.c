/*
 * pbjson — protobuf-c messages from JSON, in an arena; see pbjson.h.
 */
#include "pbjson.h"

#include "xmalloc.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

struct pb_block {
    pb_block *next;
    size_t used, cap;
    max_align_t data[];
};

#define PB_BLOCK 4096

void *pb_alloc(pb_arena *a, size_t n)
{
    size_t need = (n + sizeof(max_align_t) - 1) / sizeof(max_align_t) * sizeof(max_align_t);
    pb_block *b = a->head;
    if (!b || b->cap - b->used < need) {
        size_t cap = need > PB_BLOCK ? need : PB_BLOCK;
        b = xmalloc(sizeof *b + cap);
        b->used = 0;
        b->cap = cap;
        b->next = a->head;
        a->head = b;
    }
    void *p = (char *)b->data + b->used;
    b->used += need;
    memset(p, 0, n);
    return p;
}

char *pb_strdup(pb_arena *a, const char *s, size_t n)
{
    char *p = pb_alloc(a, n + 1);
    if (n)
        memcpy(p, s, n);
    return p;
}

ProtobufCMessage *pb_new(pb_arena *a, const ProtobufCMessageDescriptor *d)
{
    ProtobufCMessage *m = pb_alloc(a, d->sizeof_message);
    protobuf_c_message_init(d, m);
    return m;
}

void pb_arena_free(pb_arena *a)
{
    for (pb_block *b = a->head, *next; b; b = next) {
        next = b->next;
        free(b);
    }
    a->head = NULL;
}

static size_t elem_size(ProtobufCType t)
{
    switch (t) {
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64: return 8;
    case PROTOBUF_C_TYPE_DOUBLE: return sizeof(double);
    case PROTOBUF_C_TYPE_BOOL: return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_STRING: return sizeof(char *);
    case PROTOBUF_C_TYPE_BYTES: return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_MESSAGE: return sizeof(ProtobufCMessage *);
    default: return 4; /* the 32-bit integers, float, enum */
    }
}

/* A JSON integer, or a string of digits (the JSON mapping's 64-bit form), as a signed or unsigned 64-bit value. */
static int json_int(json_t *v, int is_unsigned, int64_t *s, uint64_t *u)
{
    if (json_is_integer(v)) {
        *s = json_integer_value(v);
        *u = (uint64_t)*s;
        return is_unsigned && *s < 0 ? -1 : 0;
    }
    if (json_is_real(v)) { /* an integral double, as some writers render counts */
        double d = json_real_value(v);
        /* in int64's range before the cast (outside it the cast is undefined), and whole */
        if (!(d >= -9223372036854775808.0 && d < 9223372036854775808.0) || d != (double)(int64_t)d)
            return -1;
        *s = (int64_t)d;
        *u = (uint64_t)*s;
        return is_unsigned && *s < 0 ? -1 : 0;
    }
    const char *p = json_string_value(v);
    if (!p || !*p)
        return -1;
    char *end;
    if (is_unsigned) {
        if (*p == '-')
            return -1;
        *u = strtoull(p, &end, 10);
        *s = (int64_t)*u;
    } else {
        *s = strtoll(p, &end, 10);
        *u = (uint64_t)*s;
    }
    return *end ? -1 : 0;
}

/* One value of field f into the element at dst. Returns 0, or -1 when v is not of the field's kind. */
static int fill_value(pb_arena *a, const ProtobufCFieldDescriptor *f, void *dst, json_t *v, int *skipped)
{
    int64_t s;
    uint64_t u;
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        if (json_int(v, 0, &s, &u) < 0 || s < INT32_MIN || s > INT32_MAX)
            return -1;
        *(int32_t *)dst = (int32_t)s;
        return 0;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        if (json_int(v, 1, &s, &u) < 0 || u > UINT32_MAX)
            return -1;
        *(uint32_t *)dst = (uint32_t)u;
        return 0;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        if (json_int(v, 0, &s, &u) < 0)
            return -1;
        *(int64_t *)dst = s;
        return 0;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        if (json_int(v, 1, &s, &u) < 0)
            return -1;
        *(uint64_t *)dst = u;
        return 0;
    case PROTOBUF_C_TYPE_FLOAT:
        if (!json_is_number(v))
            return -1;
        *(float *)dst = (float)json_number_value(v);
        return 0;
    case PROTOBUF_C_TYPE_DOUBLE:
        if (!json_is_number(v))
            return -1;
        *(double *)dst = json_number_value(v);
        return 0;
    case PROTOBUF_C_TYPE_BOOL:
        if (!json_is_boolean(v))
            return -1;
        *(protobuf_c_boolean *)dst = json_is_true(v);
        return 0;
    case PROTOBUF_C_TYPE_ENUM: {
        const ProtobufCEnumDescriptor *ed = f->descriptor;
        const ProtobufCEnumValue *ev = NULL;
        if (json_is_string(v))
            ev = protobuf_c_enum_descriptor_get_value_by_name(ed, json_string_value(v));
        else if (json_is_integer(v))
            ev = protobuf_c_enum_descriptor_get_value(ed, (int)json_integer_value(v));
        if (!ev)
            return -1;
        *(int *)dst = ev->value;
        return 0;
    }
    case PROTOBUF_C_TYPE_STRING:
        if (!json_is_string(v))
            return -1;
        *(char **)dst = pb_strdup(a, json_string_value(v), json_string_length(v));
        return 0;
    case PROTOBUF_C_TYPE_BYTES: {
        if (!json_is_string(v))
            return -1;
        ProtobufCBinaryData *b = dst;
        b->len = json_string_length(v);
        b->data = (uint8_t *)pb_strdup(a, json_string_value(v), b->len);
        return 0;
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        if (!json_is_object(v))
            return -1;
        ProtobufCMessage *sub = pb_new(a, f->descriptor);
        pb_from_json(a, sub, v, skipped);
        *(ProtobufCMessage **)dst = sub;
        return 0;
    }
    }
    return -1;
}

/* Whether f is a map: a repeated message whose type is an entry of key and value. */
static int is_map(const ProtobufCFieldDescriptor *f)
{
    if (f->label != PROTOBUF_C_LABEL_REPEATED || f->type != PROTOBUF_C_TYPE_MESSAGE)
        return 0;
    const ProtobufCMessageDescriptor *d = f->descriptor;
    size_t n = strlen(d->name);
    return n > 5 && strcmp(d->name + n - 5, "Entry") == 0 && d->n_fields == 2 &&
           strcmp(d->fields[0].name, "key") == 0 && strcmp(d->fields[1].name, "value") == 0;
}

static void fill_map(pb_arena *a, const ProtobufCFieldDescriptor *f, ProtobufCMessage *m, json_t *obj, int *skipped)
{
    const ProtobufCMessageDescriptor *ed = f->descriptor;
    size_t n = json_object_size(obj), k = 0;
    ProtobufCMessage **arr = pb_alloc(a, (n ? n : 1) * sizeof *arr);
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v) {
        ProtobufCMessage *e = pb_new(a, ed);
        json_t *kv = json_string(key);
        int bad = fill_value(a, &ed->fields[0], (char *)e + ed->fields[0].offset, kv, skipped) < 0 ||
                  fill_value(a, &ed->fields[1], (char *)e + ed->fields[1].offset, v, skipped) < 0;
        json_decref(kv);
        if (bad) {
            if (skipped)
                ++*skipped;
            continue;
        }
        arr[k++] = e;
    }
    *(size_t *)((char *)m + f->quantifier_offset) = k;
    *(ProtobufCMessage ***)((char *)m + f->offset) = arr;
}

void pb_from_json(pb_arena *a, ProtobufCMessage *m, json_t *j, int *skipped)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    const char *key;
    json_t *v;
    json_object_foreach(j, key, v) {
        const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(d, key);
        if (!f) {
            if (skipped)
                ++*skipped;
            continue;
        }
        char *at = (char *)m + f->offset;
        if (is_map(f)) {
            if (json_is_object(v))
                fill_map(a, f, m, v, skipped);
            else if (skipped)
                ++*skipped;
            continue;
        }
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            if (!json_is_array(v)) {
                if (skipped)
                    ++*skipped;
                continue;
            }
            size_t n = json_array_size(v), k = 0, es = elem_size(f->type);
            char *arr = pb_alloc(a, (n ? n : 1) * es);
            for (size_t i = 0; i < n; i++) {
                if (fill_value(a, f, arr + k * es, json_array_get(v, i), skipped) == 0)
                    k++;
                else if (skipped)
                    ++*skipped;
            }
            *(size_t *)((char *)m + f->quantifier_offset) = k;
            *(void **)at = arr;
            continue;
        }
        if (fill_value(a, f, at, v, skipped) < 0) {
            if (skipped)
                ++*skipped;
            continue;
        }
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
            *(uint32_t *)((char *)m + f->quantifier_offset) = f->id;
        else if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->type != PROTOBUF_C_TYPE_MESSAGE &&
                 f->type != PROTOBUF_C_TYPE_STRING)
            *(protobuf_c_boolean *)((char *)m + f->quantifier_offset) = 1;
    }
}

uint8_t *pb_pack(const ProtobufCMessage *m, size_t *len)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(n ? n : 1); /* its size is the worker's answer's: checked, not xmalloc */
    if (!buf)
        return NULL;
    *len = protobuf_c_message_pack(m, buf);
    return buf;
}
