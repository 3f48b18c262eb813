/*
 * Unit tests of encoding: Content-Encoding lists, Accept-Encoding
 * negotiation (q-values, identity refused, *, the size threshold), the
 * bounded inflater (gzip, zlib and raw deflate, the limit to the byte, a
 * bomb, corrupt, truncated and trailing bytes, several gzip members) and
 * the compressor's round trip. Streams are made with zlib itself, as the
 * clients make them.
 */
#include "check.h"
#include "encoding.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

/* in compressed as window says: 31 gzip, 15 zlib, -15 raw deflate. */
static uint8_t *zlib_compress(const void *in, size_t len, int window, size_t *out_len)
{
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    deflateInit2(&zs, 6, Z_DEFLATED, window, 8, Z_DEFAULT_STRATEGY);
    size_t cap = deflateBound(&zs, len) + 32;
    uint8_t *out = malloc(cap);
    zs.next_in = (Bytef *)in;
    zs.avail_in = (uInt)len;
    zs.next_out = out;
    zs.avail_out = (uInt)cap;
    deflate(&zs, Z_FINISH);
    *out_len = zs.total_out;
    deflateEnd(&zs);
    return out;
}

static uint8_t *pattern(size_t len)
{
    uint8_t *p = malloc(len);
    for (size_t i = 0; i < len; i++)
        p[i] = (uint8_t)("corral "[i % 7] + (i / 1000) % 3);
    return p;
}

static void parses_content_encoding_lists(void)
{
    enc_coding c[ENC_MAX_CODINGS];
    int n = 0;
    const char *bad = NULL;
    size_t bad_len = 0;
    CHECK(enc_parse_content_encoding(" GZip , deflate", 15, c, &n, &bad, &bad_len) == 0);
    CHECK(n == 2 && c[0] == ENC_GZIP && c[1] == ENC_DEFLATE);
    n = 0;
    CHECK(enc_parse_content_encoding("identity", 8, c, &n, &bad, &bad_len) == 0 && n == 0);
    CHECK(enc_parse_content_encoding(", ,x-gzip,", 10, c, &n, &bad, &bad_len) == 0 && n == 1 && c[0] == ENC_GZIP);
    /* a second field adds to the first */
    CHECK(enc_parse_content_encoding("deflate", 7, c, &n, &bad, &bad_len) == 0 && n == 2 && c[1] == ENC_DEFLATE);
    n = 0;
    CHECK(enc_parse_content_encoding("gzip, zstd ,br", 14, c, &n, &bad, &bad_len) == ENC_E_UNSUPPORTED);
    CHECK(bad_len == 4 && memcmp(bad, "zstd", 4) == 0);
    n = 0;
    CHECK(enc_parse_content_encoding("gzipx", 5, c, &n, &bad, &bad_len) == ENC_E_UNSUPPORTED && bad_len == 5);
    n = 0;
    CHECK(enc_parse_content_encoding("gzip,gzip,gzip,gzip,gzip", 24, c, &n, &bad, &bad_len) == ENC_E_TOO_MANY);
    n = 0;
    CHECK(enc_parse_content_encoding("", 0, c, &n, &bad, &bad_len) == 0 && n == 0);
}

static enc_coding choose(const char *accept, size_t len)
{
    enc_accept a = ENC_ACCEPT_INIT;
    enc_accept_parse(&a, accept, strlen(accept));
    return enc_accept_choose(&a, len);
}

static void negotiates_accept_encoding(void)
{
    CHECK(choose("gzip", 2000) == ENC_GZIP);
    CHECK(choose("deflate", 2000) == ENC_DEFLATE);
    CHECK(choose("gzip, deflate", 2000) == ENC_GZIP);
    CHECK(choose("deflate, gzip;q=0.5", 2000) == ENC_DEFLATE);
    CHECK(choose("GZIP;Q=0.8, deflate;q=0.9", 2000) == ENC_DEFLATE);
    CHECK(choose("gzip;q=0.001", 2000) == ENC_GZIP);
    CHECK(choose("gzip;q=0", 2000) == ENC_IDENTITY);
    CHECK(choose("gzip;q=0.000, deflate;q=0", 2000) == ENC_IDENTITY);
    CHECK(choose("br, zstd", 2000) == ENC_IDENTITY);
    CHECK(choose("br;q=1, gzip;q=0.1", 2000) == ENC_GZIP);
    CHECK(choose("*", 2000) == ENC_GZIP);
    CHECK(choose("*;q=0", 2000) == ENC_IDENTITY);
    CHECK(choose("*, gzip;q=0", 2000) == ENC_DEFLATE);
    CHECK(choose("identity;q=1, gzip;q=0.5", 2000) == ENC_IDENTITY);
    CHECK(choose("gzip; foo=bar ; q=0.7", 2000) == ENC_GZIP);
    /* malformed q-values: the element is ignored */
    CHECK(choose("gzip;q=1.5", 2000) == ENC_IDENTITY);
    CHECK(choose("gzip;q=0.5x", 2000) == ENC_IDENTITY);
    CHECK(choose("gzip;q=", 2000) == ENC_IDENTITY);
    CHECK(choose("", 2000) == ENC_IDENTITY);
    /* below the threshold only when identity is refused */
    CHECK(choose("gzip", ENC_MIN_COMPRESS - 1) == ENC_IDENTITY);
    CHECK(choose("gzip", ENC_MIN_COMPRESS) == ENC_GZIP);
    CHECK(choose("gzip, identity;q=0", 10) == ENC_GZIP);
    CHECK(choose("deflate, *;q=0", 10) == ENC_DEFLATE);
    CHECK(choose("identity;q=0", 10) == ENC_IDENTITY); /* nothing acceptable: sent as it is */
    /* several fields */
    enc_accept a = ENC_ACCEPT_INIT;
    enc_accept_parse(&a, "gzip;q=0", 8);
    enc_accept_parse(&a, "deflate", 7);
    CHECK(enc_accept_choose(&a, 5000) == ENC_DEFLATE);
}

static void decode_ok(int window, enc_coding c)
{
    size_t len = 300000, zlen, out_len;
    uint8_t *data = pattern(len), *z = zlib_compress(data, len, window, &zlen), *out;
    char err[256] = "";
    CHECK(enc_decode(c, z, zlen, len, &out, &out_len, err, sizeof err) == 0);
    CHECK(out_len == len && out && memcmp(out, data, len) == 0);
    free(out);
    /* one byte under the limit is too large, and nothing is handed back */
    CHECK(enc_decode(c, z, zlen, len - 1, &out, &out_len, err, sizeof err) == ENC_E_TOO_LARGE);
    CHECK(out == NULL && out_len == 0);
    CHECK_STR_CONTAINS(err, enc_name(c));
    free(z);
    free(data);
}

static void decodes_gzip_zlib_and_raw_deflate_to_the_limit(void)
{
    decode_ok(31, ENC_GZIP);
    decode_ok(15, ENC_DEFLATE);
    decode_ok(-15, ENC_DEFLATE);
}

static void refuses_a_bomb_quickly(void)
{
    size_t len = (size_t)256 << 20, zlen, out_len;
    uint8_t *zeros = calloc(len, 1), *z = zlib_compress(zeros, len, 31, &zlen), *out;
    free(zeros);
    CHECK(zlen < 512 << 10); /* 256 MiB of zeros in well under 1 MiB */
    char err[256];
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    CHECK(enc_decode(ENC_GZIP, z, zlen, 1 << 20, &out, &out_len, err, sizeof err) == ENC_E_TOO_LARGE);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    CHECK(ms < 200); /* stopped at 1 MiB, not after inflating 256 */
    CHECK(out == NULL);
    free(z);
}

static void names_corrupt_truncated_and_trailing_streams(void)
{
    size_t len = 100000, zlen, out_len;
    uint8_t *data = pattern(len), *z = zlib_compress(data, len, 31, &zlen), *out;
    char err[256];
    /* truncated: every cut point short of the end */
    size_t cuts[] = {0, 1, 5, 10, zlen / 2, zlen - 8, zlen - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        err[0] = 0;
        CHECK(enc_decode(ENC_GZIP, z, cuts[i], len, &out, &out_len, err, sizeof err) == ENC_E_CORRUPT);
        CHECK(out == NULL);
        CHECK(strstr(err, "truncated") || strstr(err, "corrupt"));
    }
    CHECK(enc_decode(ENC_GZIP, z, zlen - 8, len, &out, &out_len, err, sizeof err) == ENC_E_CORRUPT);
    CHECK_STR_CONTAINS(err, "the gzip stream is truncated");
    /* corrupt: the header, then the CRC */
    uint8_t *bad = malloc(zlen + 16);
    memcpy(bad, z, zlen);
    bad[0] = 0x1e;
    CHECK(enc_decode(ENC_GZIP, bad, zlen, len, &out, &out_len, err, sizeof err) == ENC_E_CORRUPT);
    CHECK_STR_CONTAINS(err, "corrupt gzip stream");
    memcpy(bad, z, zlen);
    bad[zlen - 6] ^= 0xff;
    CHECK(enc_decode(ENC_GZIP, bad, zlen, len, &out, &out_len, err, sizeof err) == ENC_E_CORRUPT);
    CHECK_STR_CONTAINS(err, "incorrect data check");
    /* bytes after the end */
    memcpy(bad, z, zlen);
    memcpy(bad + zlen, "garbage", 7);
    CHECK(enc_decode(ENC_GZIP, bad, zlen + 7, len, &out, &out_len, err, sizeof err) == ENC_E_CORRUPT);
    CHECK_STR_CONTAINS(err, "7 bytes follow the end of the gzip stream");
    /* a gzip body named deflate */
    CHECK(enc_decode(ENC_DEFLATE, z, zlen, len, &out, &out_len, err, sizeof err) == ENC_E_CORRUPT);
    CHECK_STR_CONTAINS(err, "deflate");
    free(bad);
    free(z);
    free(data);
}

static void decodes_several_gzip_members(void)
{
    size_t la, lb, out_len;
    uint8_t *a = zlib_compress("hello, ", 7, 31, &la), *b = zlib_compress("world", 5, 31, &lb), *out;
    uint8_t *both = malloc(la + lb);
    memcpy(both, a, la);
    memcpy(both + la, b, lb);
    char err[256];
    CHECK(enc_decode(ENC_GZIP, both, la + lb, 100, &out, &out_len, err, sizeof err) == 0);
    CHECK(out_len == 12 && memcmp(out, "hello, world", 12) == 0);
    free(out);
    /* the limit counts both members */
    CHECK(enc_decode(ENC_GZIP, both, la + lb, 11, &out, &out_len, err, sizeof err) == ENC_E_TOO_LARGE);
    free(both);
    free(a);
    free(b);
}

static void compresses_and_decodes_back(void)
{
    size_t len = 200000, out_len, back_len;
    uint8_t *data = pattern(len), *noise = malloc(len), *out, *back;
    unsigned seed = 7;
    for (size_t i = 0; i < len; i++)
        noise[i] = (uint8_t)(rand_r(&seed) >> 7);
    struct iovec v[4] = {{data, 1000}, {NULL, 0}, {noise, len}, {data + 1000, len - 1000}};
    char err[256];
    for (int k = 0; k < 4; k++) {
        int c = k % 2 ? ENC_DEFLATE : ENC_GZIP, binary = k / 2;
        CHECK(enc_encode((enc_coding)c, ENC_LEVEL, binary, v, 4, &out, &out_len) == 0);
        CHECK(enc_decode((enc_coding)c, out, out_len, 2 * len, &back, &back_len, err, sizeof err) == 0);
        CHECK(back_len == 2 * len && memcmp(back, data, 1000) == 0 && memcmp(back + 1000, noise, len) == 0 &&
              memcmp(back + 1000 + len, data + 1000, len - 1000) == 0);
        /* what Python's zlib.decompress expects for deflate: a zlib header */
        if (c == ENC_DEFLATE)
            CHECK((out[0] & 0x0f) == 8 && ((out[0] << 8) | out[1]) % 31 == 0);
        else
            CHECK(out[0] == 0x1f && out[1] == 0x8b);
        free(out);
        free(back);
    }
    CHECK(enc_encode(ENC_GZIP, ENC_LEVEL, 0, NULL, 0, &out, &out_len) == 0);
    CHECK(enc_decode(ENC_GZIP, out, out_len, 0, &back, &back_len, err, sizeof err) == 0 && back_len == 0);
    free(out);
    free(back);
    free(noise);
    free(data);
}

CHECK_MAIN(CASE(parses_content_encoding_lists), CASE(negotiates_accept_encoding),
           CASE(decodes_gzip_zlib_and_raw_deflate_to_the_limit), CASE(refuses_a_bomb_quickly),
           CASE(names_corrupt_truncated_and_trailing_streams), CASE(decodes_several_gzip_members),
           CASE(compresses_and_decodes_back))
