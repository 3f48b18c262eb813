/*
 * Unit tests of proto: header encoding and decoding, truncated and
 * oversized frames, unknown types and versions, body splitting.
 */
#include "check.h"
#include "proto.h"

#include <errno.h>

static void roundtrip(void)
{
    uint8_t buf[PROTO_HEADER_SIZE];
    proto_header_encode(buf, PROTO_INFER, 0x0102030405060708ULL, 4242);
    proto_header h;
    CHECK(proto_header_decode(buf, sizeof buf, PROTO_MAX_BODY, &h) == 0);
    CHECK(h.length == 4242);
    CHECK(h.version == PROTO_VERSION);
    CHECK(h.type == PROTO_INFER);
    CHECK(h.flags == 0);
    CHECK(h.id == 0x0102030405060708ULL);
    /* little-endian on the wire, whatever the host */
    CHECK(buf[0] == (4242 & 0xff) && buf[1] == (4242 >> 8));
    CHECK(buf[8] == 0x08 && buf[15] == 0x01);
}

static void truncated(void)
{
    uint8_t buf[PROTO_HEADER_SIZE];
    proto_header_encode(buf, PROTO_PING, 1, 0);
    proto_header h;
    for (size_t n = 0; n < PROTO_HEADER_SIZE; n++)
        CHECK(proto_header_decode(buf, n, PROTO_MAX_BODY, &h) == -EAGAIN);
    CHECK(proto_header_decode(buf, PROTO_HEADER_SIZE, PROTO_MAX_BODY, &h) == 0);
}

static void oversized(void)
{
    uint8_t buf[PROTO_HEADER_SIZE];
    proto_header h;
    proto_header_encode(buf, PROTO_INFER_RESULT, 1, PROTO_MAX_BODY);
    CHECK(proto_header_decode(buf, sizeof buf, PROTO_MAX_BODY, &h) == 0);
    proto_header_encode(buf, PROTO_INFER_RESULT, 1, PROTO_MAX_BODY + 1);
    CHECK(proto_header_decode(buf, sizeof buf, PROTO_MAX_BODY, &h) == -EMSGSIZE);
    proto_header_encode(buf, PROTO_INFER_RESULT, 1, 0xffffffffu);
    CHECK(proto_header_decode(buf, sizeof buf, PROTO_MAX_BODY, &h) == -EMSGSIZE);
    /* a smaller limit applies too */
    proto_header_encode(buf, PROTO_INFER_RESULT, 1, 1025);
    CHECK(proto_header_decode(buf, sizeof buf, 1024, &h) == -EMSGSIZE);
}

static void bad_headers(void)
{
    uint8_t buf[PROTO_HEADER_SIZE];
    proto_header h;
    proto_header_encode(buf, PROTO_INFER, 1, 0);
    buf[4] = 2; /* version */
    CHECK(proto_header_decode(buf, sizeof buf, PROTO_MAX_BODY, &h) == -EPROTO);
    proto_header_encode(buf, 0x7f, 1, 0); /* unknown type */
    CHECK(proto_header_decode(buf, sizeof buf, PROTO_MAX_BODY, &h) == -EPROTO);
    proto_header_encode(buf, PROTO_INFER, 1, 0);
    buf[6] = 4; /* an undefined flag */
    CHECK(proto_header_decode(buf, sizeof buf, PROTO_MAX_BODY, &h) == -EPROTO);
    proto_header_encode(buf, PROTO_PING, 1, 0);
    proto_header_set_flags(buf, PROTO_FLAG_SHM_DATA); /* a defined flag on a type that may not carry it */
    CHECK(proto_header_decode(buf, sizeof buf, PROTO_MAX_BODY, &h) == -EPROTO);
    proto_header_encode(buf, PROTO_INFER_RESULT, 1, 0);
    proto_header_set_flags(buf, PROTO_FLAG_SHM_OUT); /* only the daemon grants the output region */
    CHECK(proto_header_decode(buf, sizeof buf, PROTO_MAX_BODY, &h) == -EPROTO);
}

static void shm_flags(void)
{
    uint8_t buf[PROTO_HEADER_SIZE];
    proto_header h;
    proto_header_encode(buf, PROTO_INFER, 9, 12);
    proto_header_set_flags(buf, PROTO_FLAG_SHM_DATA | PROTO_FLAG_SHM_OUT);
    CHECK(proto_header_decode(buf, sizeof buf, PROTO_MAX_BODY, &h) == 0);
    CHECK(h.flags == (PROTO_FLAG_SHM_DATA | PROTO_FLAG_SHM_OUT) && h.id == 9 && h.length == 12);
    proto_header_encode(buf, PROTO_INFER_RESULT, 9, 0);
    proto_header_set_flags(buf, PROTO_FLAG_SHM_DATA);
    CHECK(proto_header_decode(buf, sizeof buf, PROTO_MAX_BODY, &h) == 0 && h.flags == PROTO_FLAG_SHM_DATA);
    proto_header_encode(buf, PROTO_BATCH, 10, 12); /* a batch is an INFER of several requests */
    proto_header_set_flags(buf, PROTO_FLAG_SHM_DATA | PROTO_FLAG_SHM_OUT);
    CHECK(proto_header_decode(buf, sizeof buf, PROTO_MAX_BODY, &h) == 0 && h.flags == 3 && h.type == PROTO_BATCH);
}

static void types(void)
{
    int known = 0;
    for (int t = 0; t < 256; t++)
        known += proto_type_known((uint8_t)t);
    CHECK(known == 18);
    CHECK(!proto_type_reserved(PROTO_BATCH) && proto_type_reserved(PROTO_SHM));
    CHECK(!proto_type_reserved(PROTO_CHUNK) && !proto_type_reserved(PROTO_CANCEL) && proto_type_known(PROTO_CREDIT));
    CHECK(proto_type_known(PROTO_SEQUENCE_END) && strcmp(proto_type_name(PROTO_SEQUENCE_END), "SEQUENCE_END") == 0);
    CHECK(!proto_type_reserved(PROTO_INFER));
    CHECK(strcmp(proto_type_name(PROTO_GENERATE_RESULT), "GENERATE_RESULT") == 0);
    CHECK(strcmp(proto_type_name(0x7f), "UNKNOWN") == 0);
}

static void split_body(void)
{
    uint8_t body[32];
    proto_put_u32(body, 5);
    memcpy(body + 4, "{\"a\":1}", 5);
    memcpy(body + 9, "xyz", 3);
    const char *meta;
    const uint8_t *data;
    size_t mlen, dlen;
    CHECK(proto_split_body(body, 12, &meta, &mlen, &data, &dlen) == 0);
    CHECK(mlen == 5 && dlen == 3 && memcmp(data, "xyz", 3) == 0);
    CHECK(proto_split_body(body, 3, &meta, &mlen, &data, &dlen) == -EPROTO);
    proto_put_u32(body, 100); /* meta runs past the body */
    CHECK(proto_split_body(body, 12, &meta, &mlen, &data, &dlen) == -EPROTO);
    proto_put_u32(body, 8); /* meta exactly fills it */
    CHECK(proto_split_body(body, 12, &meta, &mlen, &data, &dlen) == 0 && dlen == 0);
}

CHECK_MAIN(CASE(roundtrip), CASE(truncated), CASE(oversized), CASE(bad_headers), CASE(shm_flags), CASE(types), CASE(split_body))
