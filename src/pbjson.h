/*
 * pbjson — protobuf-c messages built in an arena, and from JSON.
 *
 * The gRPC service answers most RPCs with what the HTTP endpoints already
 * render as JSON (model metadata and configuration, statistics, the
 * repository index): Triton's HTTP answers are the protobuf JSON mapping
 * of the same messages, under the .proto's own field names. So one
 * converter, driven by protobuf-c's descriptors, builds each message from
 * the JSON the HTTP side sends, and the two doors cannot drift apart.
 *
 * Messages built here live in a pb_arena (never protobuf-c's allocator):
 * every submessage, array and string, freed at once with pb_arena_free
 * after the message is packed. Pure apart from malloc; unit-tested
 * (tests/unit/test_pbjson.c).
 */
#ifndef CORRAL_PBJSON_H
#define CORRAL_PBJSON_H

#include <jansson.h>
#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

typedef struct pb_block pb_block;
typedef struct pb_arena {
    pb_block *head;
} pb_arena;

/* n zeroed bytes in a, aligned for any field. */
void *pb_alloc(pb_arena *a, size_t n);
/* A NUL-terminated copy of n bytes at s. */
char *pb_strdup(pb_arena *a, const char *s, size_t n);
/* A message of descriptor d, initialised (its defaults set). */
ProtobufCMessage *pb_new(pb_arena *a, const ProtobufCMessageDescriptor *d);
void pb_arena_free(pb_arena *a);

/*
 * Fills m (initialised, of its descriptor) from the JSON object j: each
 * key names a field; repeated fields take arrays, map fields objects,
 * 64-bit integers numbers or strings of digits, enums their names or
 * numbers, messages objects, oneof members set their case. Keys without a
 * field, and values of the wrong kind, are skipped and counted in
 * *skipped (may be NULL). Everything allocated comes from a.
 */
void pb_from_json(pb_arena *a, ProtobufCMessage *m, json_t *j, int *skipped);

/* Packs m into a new malloc'ed buffer, its length in *len; NULL when there is no memory for it now. */
uint8_t *pb_pack(const ProtobufCMessage *m, size_t *len);

#endif
