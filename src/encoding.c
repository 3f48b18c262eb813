/*
 * encoding — content codings over zlib; see encoding.h.
 */
#include "encoding.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

/* zlib counts in uInt: buffers are handed to it in steps of at most this. */
#define ZSTEP ((size_t)1 << 30)

const char *enc_name(enc_coding c)
{
    return c == ENC_GZIP ? "gzip" : c == ENC_DEFLATE ? "deflate" : "identity";
}

static int is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* Trims optional whitespace from both ends of [*s, *e). */
static void trim(const char **s, const char **e)
{
    while (*s < *e && is_ows(**s))
        (*s)++;
    while (*e > *s && is_ows((*e)[-1]))
        (*e)--;
}

static int token_is(const char *s, size_t n, const char *lit)
{
    return n == strlen(lit) && strncasecmp(s, lit, n) == 0;
}

int enc_parse_content_encoding(const char *v, size_t len, enc_coding codings[ENC_MAX_CODINGS], int *n,
                               const char **bad, size_t *bad_len)
{
    const char *p = v, *end = v + len;
    while (p <= end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *s = p, *e = comma ? comma : end;
        trim(&s, &e);
        size_t tl = (size_t)(e - s);
        if (tl) {
            enc_coding c;
            if (token_is(s, tl, "gzip") || token_is(s, tl, "x-gzip"))
                c = ENC_GZIP;
            else if (token_is(s, tl, "deflate"))
                c = ENC_DEFLATE;
            else if (token_is(s, tl, "identity"))
                c = ENC_IDENTITY;
            else {
                *bad = s;
                *bad_len = tl;
                return ENC_E_UNSUPPORTED;
            }
            if (c != ENC_IDENTITY) {
                if (*n == ENC_MAX_CODINGS)
                    return ENC_E_TOO_MANY;
                codings[(*n)++] = c;
            }
        }
        if (!comma)
            break;
        p = comma + 1;
    }
    return 0;
}

/* A qvalue (RFC 9110 section 12.4.2) in thousandths, or -1 when malformed. */
static int parse_qvalue(const char *s, size_t n)
{
    if (n == 0 || (s[0] != '0' && s[0] != '1') || (n > 1 && s[1] != '.') || n > 5)
        return -1;
    int q = (s[0] - '0') * 1000, scale = 100;
    for (size_t i = 2; i < n; i++, scale /= 10) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        q += (s[i] - '0') * scale;
    }
    return q > 1000 ? -1 : q;
}

void enc_accept_parse(enc_accept *a, const char *v, size_t len)
{
    const char *p = v, *end = v + len;
    while (p <= end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *s = p, *e = comma ? comma : end;
        const char *semi = memchr(s, ';', (size_t)(e - s));
        const char *te = semi ? semi : e;
        trim(&s, &te);
        int q = 1000;
        /* Parameters: only q counts; any other is allowed and ignored. */
        for (const char *param = semi; param && q >= 0;) {
            const char *ps = param + 1, *next = memchr(ps, ';', (size_t)(e - ps));
            const char *pe = next ? next : e, *eq = memchr(ps, '=', (size_t)(pe - ps));
            if (eq) {
                const char *ns = ps, *ne = eq, *vs = eq + 1, *ve = pe;
                trim(&ns, &ne);
                trim(&vs, &ve);
                if (token_is(ns, (size_t)(ne - ns), "q"))
                    q = parse_qvalue(vs, (size_t)(ve - vs));
            }
            param = next;
        }
        size_t tl = (size_t)(te - s);
        if (q >= 0 && tl) {
            if (token_is(s, tl, "gzip") || token_is(s, tl, "x-gzip"))
                a->gzip = q;
            else if (token_is(s, tl, "deflate"))
                a->deflate = q;
            else if (token_is(s, tl, "identity"))
                a->identity = q;
            else if (token_is(s, tl, "*"))
                a->star = q;
        }
        if (!comma)
            break;
        p = comma + 1;
    }
}

enc_coding enc_accept_choose(const enc_accept *a, size_t len)
{
    int star = a->star >= 0 ? a->star : 0;
    int qg = a->gzip >= 0 ? a->gzip : star, qd = a->deflate >= 0 ? a->deflate : star;
    /* identity is acceptable unless refused, but when not named it yields to any compressed coding */
    int qi = a->identity >= 0 ? a->identity : a->star >= 0 ? a->star : 1000;
    enc_coding best = qg > 0 && qg >= qd ? ENC_GZIP : qd > 0 ? ENC_DEFLATE : ENC_IDENTITY;
    if (best == ENC_IDENTITY)
        return ENC_IDENTITY;
    if (a->identity >= 0 && a->identity > (best == ENC_GZIP ? qg : qd))
        return ENC_IDENTITY;
    if (len < ENC_MIN_COMPRESS && qi > 0)
        return ENC_IDENTITY;
    return best;
}

/* Whether in starts with a zlib header (RFC 1950 section 2.2): method 8, window at most 32 KiB, check bits. */
static int zlib_header(const uint8_t *in, size_t len)
{
    return len >= 2 && (in[0] & 0x0f) == 8 && (in[0] >> 4) <= 7 && ((unsigned)in[0] << 8 | in[1]) % 31 == 0;
}

int enc_decode(enc_coding c, const uint8_t *in, size_t len, size_t max, uint8_t **out, size_t *out_len, char *err,
               size_t errlen)
{
    *out = NULL;
    *out_len = 0;
    const char *name = enc_name(c);
    int window = c == ENC_GZIP ? 15 + 16 : zlib_header(in, len) ? 15 : -15;
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    if (inflateInit2(&zs, window) != Z_OK) {
        snprintf(err, errlen, "cannot start the %s decoder", name);
        return ENC_E_NOMEM;
    }
    size_t cap = len < (16 << 10) ? (64 << 10) : len > SIZE_MAX / 4 ? SIZE_MAX : len * 4;
    if (cap > max)
        cap = max;
    uint8_t *buf = malloc(cap ? cap : 1);
    uint8_t probe; /* where the byte that proves the body too large goes */
    size_t used = 0, in_left = len;
    int probing = 0, rc = ENC_E_CORRUPT;
    if (!buf) {
        snprintf(err, errlen, "no memory for the decoded %s body", name);
        rc = ENC_E_NOMEM;
        goto fail;
    }
    zs.next_in = (Bytef *)in;
    for (;;) {
        if (zs.avail_in == 0 && in_left) {
            zs.avail_in = (uInt)(in_left < ZSTEP ? in_left : ZSTEP);
            in_left -= zs.avail_in;
        }
        if (!probing && zs.avail_out == 0) {
            if (used == cap && cap == max) {
                /* Full at the limit: one more byte of output would pass it. */
                probing = 1;
                zs.next_out = &probe;
                zs.avail_out = 1;
            } else {
                if (used == cap) {
                    size_t grown = cap > max / 2 ? max : cap * 2;
                    uint8_t *nb = realloc(buf, grown);
                    if (!nb) {
                        snprintf(err, errlen, "no memory for the decoded %s body (%zu bytes so far)", name, used);
                        rc = ENC_E_NOMEM;
                        goto fail;
                    }
                    buf = nb;
                    cap = grown;
                }
                zs.next_out = buf + used;
                zs.avail_out = (uInt)(cap - used < ZSTEP ? cap - used : ZSTEP);
            }
        }
        int zrc = inflate(&zs, Z_NO_FLUSH);
        if (probing && zs.avail_out == 0) {
            snprintf(err, errlen, "the %s body decodes to more than %zu bytes", name, max);
            rc = ENC_E_TOO_LARGE;
            goto fail;
        }
        if (!probing)
            used = (size_t)(zs.next_out - buf);
        if (zrc == Z_STREAM_END) {
            size_t rest = zs.avail_in + in_left;
            if (rest == 0)
                break;
            const uint8_t *next = zs.next_in;
            if (c == ENC_GZIP && (rest < 2 || (next[0] == 0x1f && next[1] == 0x8b))) {
                inflateReset(&zs); /* another gzip member follows */
                continue;
            }
            snprintf(err, errlen, "%zu bytes follow the end of the %s stream", rest, name);
            goto fail;
        }
        if (zrc == Z_OK)
            continue;
        if (zrc == Z_BUF_ERROR && zs.avail_in == 0 && in_left == 0) {
            snprintf(err, errlen, "the %s stream is truncated (%zu bytes decoded before its end)", name, used);
            goto fail;
        }
        if (zrc == Z_NEED_DICT)
            snprintf(err, errlen, "the %s stream needs a preset dictionary", name);
        else if (zrc == Z_MEM_ERROR) {
            snprintf(err, errlen, "no memory for the %s decoder", name);
            rc = ENC_E_NOMEM;
        } else
            snprintf(err, errlen, "corrupt %s stream: %s", name, zs.msg ? zs.msg : "invalid data");
        goto fail;
    }
    inflateEnd(&zs);
    *out = buf;
    *out_len = used;
    return 0;
fail:
    inflateEnd(&zs);
    free(buf);
    return rc;
}

int enc_encode(enc_coding c, int level, int binary, const struct iovec *bufs, size_t n, uint8_t **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    int window = c == ENC_GZIP ? 15 + 16 : 15, strategy = binary ? Z_RLE : Z_DEFAULT_STRATEGY;
    if (deflateInit2(&zs, level, Z_DEFLATED, window, 8, strategy) != Z_OK)
        return ENC_E_NOMEM;
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += bufs[i].iov_len;
    /* Room for data that does not compress (stored blocks cost 5 bytes per 16 KiB) and the wrapper; grown if short. */
    size_t cap = total + (total >> 12) + (total >> 14) + (total >> 25) + 64;
    uint8_t *buf = malloc(cap);
    if (!buf) {
        deflateEnd(&zs);
        return ENC_E_NOMEM;
    }
    size_t used = 0;
    for (size_t i = 0; i <= n; i++) {
        const uint8_t *p = i < n ? bufs[i].iov_base : NULL;
        size_t left = i < n ? bufs[i].iov_len : 0;
        do {
            size_t step = left < ZSTEP ? left : ZSTEP;
            int flush = i == n ? Z_FINISH : Z_NO_FLUSH;
            zs.next_in = (Bytef *)p;
            zs.avail_in = (uInt)step;
            if (step) /* p is NULL for the final flush, and for an empty buffer it may be */
                p += step;
            left -= step;
            int zrc;
            do {
                if (used == cap) {
                    uint8_t *nb = realloc(buf, cap * 2);
                    if (!nb) {
                        deflateEnd(&zs);
                        free(buf);
                        return ENC_E_NOMEM;
                    }
                    buf = nb;
                    cap *= 2;
                }
                zs.next_out = buf + used;
                zs.avail_out = (uInt)(cap - used < ZSTEP ? cap - used : ZSTEP);
                zrc = deflate(&zs, flush);
                used = (size_t)(zs.next_out - buf);
            } while (zs.avail_out == 0 || (flush == Z_FINISH && zrc != Z_STREAM_END));
        } while (left);
    }
    deflateEnd(&zs);
    *out = buf;
    *out_len = used;
    return 0;
}
