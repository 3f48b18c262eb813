/*
 * fuzz_frame — worker-protocol frame headers and bodies (proto.c): a
 * header decodes only within the limits it promises, and a body splits
 * into meta and data only within its own length.
 */
#include "fuzz.h"
#include "proto.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    proto_header h;
    uint32_t max = size >= 1 && (data[0] & 1) ? 1u << 20 : PROTO_MAX_BODY;
    int rc = proto_header_decode(data, size, max, &h);
    if (rc == 0) {
        if (size < PROTO_HEADER_SIZE || h.length > max || h.version != PROTO_VERSION || !proto_type_known(h.type) ||
            (h.flags & ~proto_flags_allowed(h.type)))
            abort();
    } else if (rc != -EAGAIN && rc != -EPROTO && rc != -EMSGSIZE) {
        abort();
    } else if (rc == -EAGAIN && size >= PROTO_HEADER_SIZE) {
        abort();
    }
    if (size < PROTO_HEADER_SIZE)
        return 0;
    const uint8_t *body = data + PROTO_HEADER_SIZE;
    size_t len = size - PROTO_HEADER_SIZE;
    const char *meta;
    size_t meta_len, data_len;
    const uint8_t *rest;
    if (proto_split_body(body, len, &meta, &meta_len, &rest, &data_len) == 0) {
        if ((const uint8_t *)meta < body || (const uint8_t *)meta + meta_len > body + len || rest + data_len != body + len)
            abort();
        fuzz_touch(meta, meta_len);
        fuzz_touch(rest, data_len);
    }
    return 0;
}
