/*
 * encoding — HTTP content codings (RFC 9110 section 8.4) over zlib: the
 * request's Content-Encoding list, the bounded inflater that decodes a
 * request body, Accept-Encoding negotiation, and the compressor for a
 * complete response. Pure functions on buffers, no h2o: http.c is the glue
 * (http_decode_body, http_sendv), tests/unit/test_encoding.c and
 * tests/fuzz/fuzz_inflate.c drive them directly.
 *
 * Codings: gzip (x-gzip is the same, as RFC 9110 says), deflate and
 * identity. "deflate" is the zlib format (RFC 1950), as RFC 9110 defines it
 * and as Python's zlib.compress (Triton's client) writes it; a raw deflate
 * stream (RFC 1951), which some clients send under that name, is accepted
 * too: the first two bytes tell them apart (a zlib header is a multiple of
 * 31 with compression method 8; a raw stream would need a stored block with
 * a padding bit set to look like one, which no encoder writes).
 *
 * Memory: enc_decode never allocates by a size the input claims (gzip's
 * trailer states a length; it is ignored). Its output grows by doubling as
 * inflate fills it, from min(4 × input, 64 KiB) and never past max, so a
 * compression bomb costs at most max bytes of memory and the time to
 * inflate max bytes before it is refused.
 *
 * Threads: any; nothing is shared. Errors: negative ENC_E_* values with a
 * message in err that names the coding and what was wrong.
 */
#ifndef CORRAL_ENCODING_H
#define CORRAL_ENCODING_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

typedef enum enc_coding { ENC_IDENTITY = 0, ENC_GZIP, ENC_DEFLATE } enc_coding;

/* The most codings one Content-Encoding may list (identity not counted). */
#define ENC_MAX_CODINGS 4
/* Complete responses smaller than this are sent as they are (unless identity is refused). */
#define ENC_MIN_COMPRESS 1024
/* zlib's fastest level: compression runs on the loop thread (docs/api.md has the figures). */
#define ENC_LEVEL 1

enum {
    ENC_E_UNSUPPORTED = -1, /* a coding other than gzip, deflate, identity */
    ENC_E_TOO_MANY = -2,    /* more than ENC_MAX_CODINGS */
    ENC_E_TOO_LARGE = -3,   /* the decoded body would pass max */
    ENC_E_CORRUPT = -4,     /* not a valid stream of its coding, or cut short */
    ENC_E_NOMEM = -5        /* memory could not be had for the output */
};

/* "gzip", "deflate" or "identity". */
const char *enc_name(enc_coding c);

/*
 * Adds the codings of one Content-Encoding field value (a comma-separated
 * list, tokens case-insensitive, empty elements and identity skipped) to
 * codings[*n], in the order they were applied. On ENC_E_UNSUPPORTED, *bad
 * and *bad_len point at the offending token inside v.
 */
int enc_parse_content_encoding(const char *v, size_t len, enc_coding codings[ENC_MAX_CODINGS], int *n,
                               const char **bad, size_t *bad_len);

/* What Accept-Encoding field values said, q-values in thousandths; -1: not named. */
typedef struct enc_accept {
    int gzip, deflate, identity, star;
} enc_accept;

#define ENC_ACCEPT_INIT {-1, -1, -1, -1}

/* Adds one Accept-Encoding field value; a malformed element is ignored. */
void enc_accept_parse(enc_accept *a, const char *v, size_t len);

/*
 * The coding for a response of len bytes: the acceptable compressed coding
 * with the highest q (gzip on a tie), unless identity was named with a
 * higher q, or the body is below ENC_MIN_COMPRESS and identity is not
 * refused (identity;q=0, or *;q=0 without identity). When nothing is
 * acceptable the answer is identity (RFC 9110 section 12.5.3 lets a server
 * send it rather than refuse).
 */
enc_coding enc_accept_choose(const enc_accept *a, size_t len);

/*
 * Decodes in (len bytes) of coding c into a malloc'ed *out of *out_len
 * bytes (free it; NULL on error), refusing output past max bytes. gzip
 * takes several members back to back; bytes after the end of the stream
 * are an error. err gets the reason on failure.
 */
int enc_decode(enc_coding c, const uint8_t *in, size_t len, size_t max, uint8_t **out, size_t *out_len, char *err,
               size_t errlen);

/*
 * Compresses the n buffers, in order, as one gzip or zlib stream at level
 * into a malloc'ed *out (free it). Returns 0 or ENC_E_NOMEM. binary: the
 * bytes are tensors, not text: runs of one byte are the only repeats
 * searched for (zlib's Z_RLE), which on float data compresses as well as
 * the full search in a third of the time.
 */
int enc_encode(enc_coding c, int level, int binary, const struct iovec *bufs, size_t n, uint8_t **out,
               size_t *out_len);

#endif
