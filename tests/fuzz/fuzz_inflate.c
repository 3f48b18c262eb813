/*
 * fuzz_inflate — a client's compressed request body (encoding.c's
 * enc_decode) and its Content-Encoding and Accept-Encoding values.
 *
 * Input: byte 0 picks the coding (gzip or deflate) and the limit (a power
 * of two from 1 byte to 1 MiB); the rest is the body, also read as a
 * Content-Encoding and an Accept-Encoding value. A decoded body is never
 * longer than the limit and decodes the same again after enc_encode; a
 * refusal leaves nothing allocated and a message the error writer turns
 * into strict JSON; a parsed Content-Encoding lists at most
 * ENC_MAX_CODINGS codings, a refused one points inside the value.
 */
#include "encoding.h"
#include "fuzz.h"

#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    enc_coding c = data[0] & 1 ? ENC_DEFLATE : ENC_GZIP;
    size_t max = (size_t)1 << (data[0] >> 1 & 31) % 21;
    data++;
    size--;

    uint8_t *out;
    size_t out_len;
    char err[256];
    err[0] = 0;
    int rc = enc_decode(c, data, size, max, &out, &out_len, err, sizeof err);
    if (rc == 0) {
        if (out_len > max)
            abort(); /* the limit is what bounds a bomb */
        fuzz_touch(out, out_len);
        struct iovec v = {out, out_len};
        uint8_t *z, *back;
        size_t zlen, back_len;
        if (enc_encode(c, ENC_LEVEL, data[-1] >> 6 & 1, &v, 1, &z, &zlen) != 0 ||
            enc_decode(c, z, zlen, max, &back, &back_len, err, sizeof err) != 0 || back_len != out_len ||
            memcmp(back, out, out_len) != 0)
            abort();
        free(z);
        free(back);
        free(out);
    } else {
        if (out || out_len || !err[0] || (rc != ENC_E_TOO_LARGE && rc != ENC_E_CORRUPT && rc != ENC_E_NOMEM))
            abort();
        fuzz_check_error(err);
    }

    enc_coding codings[ENC_MAX_CODINGS];
    int n = 0;
    const char *bad = NULL;
    size_t bad_len = 0;
    rc = enc_parse_content_encoding((const char *)data, size, codings, &n, &bad, &bad_len);
    if (n < 0 || n > ENC_MAX_CODINGS)
        abort();
    if (rc == ENC_E_UNSUPPORTED) {
        if (!bad || bad < (const char *)data || bad + bad_len > (const char *)data + size || bad_len == 0)
            abort();
        char msg[128];
        snprintf(msg, sizeof msg, "unsupported Content-Encoding '%.*s'", (int)(bad_len > 64 ? 64 : bad_len), bad);
        fuzz_check_error(msg);
    }
    enc_accept a = ENC_ACCEPT_INIT;
    enc_accept_parse(&a, (const char *)data, size);
    if (a.gzip > 1000 || a.deflate > 1000 || a.identity > 1000 || a.star > 1000)
        abort();
    enc_coding chosen = enc_accept_choose(&a, size);
    if (chosen != ENC_IDENTITY && chosen != ENC_GZIP && chosen != ENC_DEFLATE)
        abort();
    return 0;
}
