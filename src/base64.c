/*
 * base64 — standard padded base64; see base64.h.
 */
#include "base64.h"

static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

void base64_encode(char *w, const uint8_t *p, size_t n)
{
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        *w++ = alphabet[v >> 18];
        *w++ = alphabet[(v >> 12) & 63];
        *w++ = alphabet[(v >> 6) & 63];
        *w++ = alphabet[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0);
        *w++ = alphabet[v >> 18];
        *w++ = alphabet[(v >> 12) & 63];
        *w++ = i + 1 < n ? alphabet[(v >> 6) & 63] : '=';
        *w++ = '=';
    }
}

static int value_of(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    return c == '+' ? 62 : c == '/' ? 63 : -1;
}

int base64_decode(const char *s, size_t n, uint8_t *out, size_t *outlen)
{
    if (n % 4)
        return -1;
    size_t w = 0;
    for (size_t i = 0; i < n; i += 4) {
        int pad = i + 4 == n ? (s[n - 1] == '=') + (s[n - 2] == '=' && s[n - 1] == '=') : 0;
        uint32_t x = 0;
        for (int k = 0; k < 4; k++) {
            int v = k >= 4 - pad ? 0 : value_of((unsigned char)s[i + (size_t)k]);
            if (v < 0)
                return -1;
            x = x << 6 | (uint32_t)v;
        }
        out[w++] = (uint8_t)(x >> 16);
        if (pad < 2)
            out[w++] = (uint8_t)(x >> 8);
        if (pad < 1)
            out[w++] = (uint8_t)x;
    }
    *outlen = w;
    return 0;
}
