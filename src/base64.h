/*
 * base64 — standard base64 (RFC 4648 section 4, padded), pure: how a bytes
 * session travels in a frame's JSON meta (docs/worker-protocol.md,
 * "Sessions"). Also linked into the C SDK.
 */
#ifndef CORRAL_BASE64_H
#define CORRAL_BASE64_H

#include <stddef.h>
#include <stdint.h>

/* The encoded length of n bytes. */
static inline size_t base64_encoded_len(size_t n)
{
    return (n + 2) / 3 * 4;
}

/* Writes base64_encoded_len(n) characters (no NUL) of p's n bytes at out. */
void base64_encode(char *out, const uint8_t *p, size_t n);

/*
 * Decodes n characters of padded base64 into out, which must have room for
 * n / 4 * 3 bytes; sets *outlen. Returns 0, or -1 when s is not padded
 * standard base64 (a length not a multiple of 4, a foreign character,
 * padding anywhere but at the end).
 */
int base64_decode(const char *s, size_t n, uint8_t *out, size_t *outlen);

#endif
