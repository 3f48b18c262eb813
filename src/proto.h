/*
 * proto — framing of the corral worker protocol (docs/worker-protocol.md).
 *
 * Pure functions over byte buffers: no I/O, no allocation. Shared by the
 * daemon and the C SDK so that both sides frame messages identically.
 * Errors are negative errno-style codes.
 */
#ifndef CORRAL_PROTO_H
#define CORRAL_PROTO_H

#include <stddef.h>
#include <stdint.h>

#define PROTO_VERSION 1
#define PROTO_HEADER_SIZE 16
#define PROTO_MAX_BODY (1u << 30)

/* The descriptors a worker inherits (CORRAL_FD, CORRAL_HEALTH_FD). */
#define WORKER_PROTOCOL_FD 3
#define WORKER_HEALTH_FD 4
/* The shared-memory regions' memfds (CORRAL_SHM_FDS): input, then output. */
#define WORKER_SHM_IN_FD 5
#define WORKER_SHM_OUT_FD 6
/* The send buffer asked for on both ends of the protocol socket. */
#define PROTO_SOCKET_BUFFER (4 << 20)
/*
 * A stream's window: the most bytes of CHUNK frames (headers included) a
 * worker may have sent and not yet had credited back with CREDIT. It bounds
 * what the daemon holds for a client that reads slowly.
 */
#define PROTO_STREAM_WINDOW (1u << 20)

enum proto_type {
    PROTO_HELLO = 0x01,
    PROTO_LOAD = 0x02,
    PROTO_READY = 0x03,
    PROTO_INFER = 0x10,
    PROTO_INFER_RESULT = 0x11,
    PROTO_GENERATE = 0x12,
    PROTO_GENERATE_RESULT = 0x13,
    PROTO_CHUNK = 0x14,  /* one chunk of a streamed GENERATE answer */
    PROTO_END = 0x15,    /* the end of a stream */
    PROTO_CANCEL = 0x16, /* the daemon gave up on a request: stop it, answer once */
    PROTO_BATCH = 0x17,  /* several requests' INFERs in one tensor message */
    PROTO_CREDIT = 0x18, /* the daemon sent on this many bytes of a stream: u32 body */
    PROTO_SEQUENCE_END = 0x19, /* the daemon released a sequence (idle): JSON body; only to a worker that asked */
    PROTO_ERROR = 0x1f,
    PROTO_PING = 0x20,
    PROTO_PONG = 0x21,
    PROTO_SHUTDOWN = 0x22,
    PROTO_SHM = 0x30, /* reserved: shared-memory tensors */
};

/*
 * Header flags (all others must be 0):
 * SHM_DATA on INFER, BATCH or INFER_RESULT: the tensor data is not in the
 *   frame but at offset 0 of the sender's shared-memory region; the body is
 *   the u32 meta length and the meta only.
 * SHM_OUT on INFER or BATCH: the worker may answer this request with SHM_DATA.
 */
#define PROTO_FLAG_SHM_DATA 0x0001
#define PROTO_FLAG_SHM_OUT 0x0002

typedef struct proto_header {
    uint32_t length; /* body bytes after the header */
    uint8_t version;
    uint8_t type;
    uint16_t flags;
    uint64_t id;
} proto_header;

/* Writes the 16-byte header for a frame into out. */
void proto_header_encode(uint8_t out[PROTO_HEADER_SIZE], uint8_t type, uint64_t id, uint32_t length);
/* Sets the flags of an encoded header. */
void proto_header_set_flags(uint8_t out[PROTO_HEADER_SIZE], uint16_t flags);
/* The flags a frame of type may carry. */
uint16_t proto_flags_allowed(uint8_t type);

/*
 * Decodes a header from the first len bytes of buf.
 * Returns 0 with *h filled, -EAGAIN when fewer than 16 bytes are present,
 * -EPROTO for a wrong version, an unknown type or flags its type may not carry, and
 * -EMSGSIZE when length exceeds max_body (pass PROTO_MAX_BODY for the default).
 */
int proto_header_decode(const uint8_t *buf, size_t len, uint32_t max_body, proto_header *h);

/* Whether type is a known message of protocol version 1 (reserved ones included). */
int proto_type_known(uint8_t type);

/* Whether type is reserved: numbered in version 1, its behaviour left to a later version. */
int proto_type_reserved(uint8_t type);

/* Short upper-case name of a type, "UNKNOWN" for others. */
const char *proto_type_name(uint8_t type);

/*
 * Splits a tensor or free-form body into its JSON meta and the data after it.
 * Returns 0, or -EPROTO when the meta length runs past the body.
 */
int proto_split_body(const uint8_t *body, size_t len, const char **meta, size_t *meta_len, const uint8_t **data,
                     size_t *data_len);

static inline void proto_put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static inline uint32_t proto_get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

#endif
