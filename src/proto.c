/*
 * proto — framing of the corral worker protocol; see proto.h and
 * docs/worker-protocol.md. Kept free of I/O so it can be unit-tested and
 * linked into the C SDK unchanged.
 */
#include "proto.h"

#include <errno.h>

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

void proto_header_encode(uint8_t out[PROTO_HEADER_SIZE], uint8_t type, uint64_t id, uint32_t length)
{
    proto_put_u32(out, length);
    out[4] = PROTO_VERSION;
    out[5] = type;
    out[6] = 0;
    out[7] = 0;
    put_u64(out + 8, id);
}

void proto_header_set_flags(uint8_t out[PROTO_HEADER_SIZE], uint16_t flags)
{
    out[6] = (uint8_t)flags;
    out[7] = (uint8_t)(flags >> 8);
}

uint16_t proto_flags_allowed(uint8_t type)
{
    if (type == PROTO_INFER || type == PROTO_BATCH)
        return PROTO_FLAG_SHM_DATA | PROTO_FLAG_SHM_OUT;
    if (type == PROTO_INFER_RESULT)
        return PROTO_FLAG_SHM_DATA;
    return 0;
}

int proto_type_known(uint8_t type)
{
    switch (type) {
    case PROTO_HELLO: case PROTO_LOAD: case PROTO_READY:
    case PROTO_INFER: case PROTO_INFER_RESULT: case PROTO_GENERATE: case PROTO_GENERATE_RESULT:
    case PROTO_CHUNK: case PROTO_END: case PROTO_CANCEL: case PROTO_BATCH: case PROTO_CREDIT: case PROTO_SEQUENCE_END:
    case PROTO_ERROR: case PROTO_PING: case PROTO_PONG: case PROTO_SHUTDOWN: case PROTO_SHM:
        return 1;
    default:
        return 0;
    }
}

int proto_type_reserved(uint8_t type)
{
    return type == PROTO_SHM;
}

const char *proto_type_name(uint8_t type)
{
    switch (type) {
    case PROTO_HELLO: return "HELLO";
    case PROTO_LOAD: return "LOAD";
    case PROTO_READY: return "READY";
    case PROTO_INFER: return "INFER";
    case PROTO_INFER_RESULT: return "INFER_RESULT";
    case PROTO_GENERATE: return "GENERATE";
    case PROTO_GENERATE_RESULT: return "GENERATE_RESULT";
    case PROTO_CHUNK: return "CHUNK";
    case PROTO_END: return "END";
    case PROTO_CANCEL: return "CANCEL";
    case PROTO_BATCH: return "BATCH";
    case PROTO_CREDIT: return "CREDIT";
    case PROTO_SEQUENCE_END: return "SEQUENCE_END";
    case PROTO_ERROR: return "ERROR";
    case PROTO_PING: return "PING";
    case PROTO_PONG: return "PONG";
    case PROTO_SHUTDOWN: return "SHUTDOWN";
    case PROTO_SHM: return "SHM";
    default: return "UNKNOWN";
    }
}

int proto_header_decode(const uint8_t *buf, size_t len, uint32_t max_body, proto_header *h)
{
    if (len < PROTO_HEADER_SIZE)
        return -EAGAIN;
    h->length = proto_get_u32(buf);
    h->version = buf[4];
    h->type = buf[5];
    h->flags = (uint16_t)(buf[6] | buf[7] << 8);
    h->id = get_u64(buf + 8);
    if (h->version != PROTO_VERSION || !proto_type_known(h->type) || (h->flags & ~proto_flags_allowed(h->type)))
        return -EPROTO;
    if (h->length > max_body)
        return -EMSGSIZE;
    return 0;
}

int proto_split_body(const uint8_t *body, size_t len, const char **meta, size_t *meta_len, const uint8_t **data,
                     size_t *data_len)
{
    if (len < 4)
        return -EPROTO;
    uint32_t mlen = proto_get_u32(body);
    if (mlen > len - 4)
        return -EPROTO;
    *meta = (const char *)body + 4;
    *meta_len = mlen;
    *data = body + 4 + mlen;
    *data_len = len - 4 - mlen;
    return 0;
}
