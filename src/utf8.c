/*
 * utf8 — strict UTF-8 and safe JSON strings; see utf8.h.
 */
#include "utf8.h"

#include "xmalloc.h"

#include <stdlib.h>
#include <string.h>

size_t utf8_char_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    if (c < 0x80)
        return 1;
    size_t len;
    unsigned lo = 0x80, hi = 0xbf; /* the range allowed for the second byte */
    if (c >= 0xc2 && c <= 0xdf)
        len = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0)
            lo = 0xa0; /* no overlong forms */
        else if (c == 0xed)
            hi = 0x9f; /* no surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0)
            lo = 0x90;
        else if (c == 0xf4)
            hi = 0x8f; /* nothing above U+10FFFF */
    } else
        return 0;
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t k = 2; k < len; k++)
        if ((s[k] & 0xc0) != 0x80)
            return 0;
    return len;
}

int utf8_valid(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        if (p[i] < 0x80) {
            i++;
            continue;
        }
        size_t len = utf8_char_len(p + i, n - i);
        if (!len)
            return 0;
        i += len;
    }
    return 1;
}

size_t utf8_cut(const char *s, size_t n, size_t max)
{
    if (n <= max)
        return n;
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < max) {
        size_t len = p[i] < 0x80 ? 1 : utf8_char_len(p + i, n - i);
        if (!len)
            len = 1; /* an invalid byte stands alone */
        if (i + len > max)
            break;
        i += len;
    }
    return i;
}

size_t utf8_whole_len(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    /* A lead byte among the last three whose sequence the end cuts short. */
    for (size_t back = 1; back <= 3 && back <= n; back++) {
        unsigned char c = p[n - back];
        if ((c & 0xc0) == 0x80)
            continue; /* a continuation byte: look further back */
        size_t need = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
        if (need > back && c >= 0xc2 && c <= 0xf4 && utf8_char_len(p + n - back, back) == 0) {
            /* incomplete: cut it only if what is there could begin a valid character */
            int prefix = 1;
            for (size_t k = 1; k < back; k++)
                prefix = prefix && (p[n - back + k] & 0xc0) == 0x80;
            if (prefix)
                return n - back;
        }
        break;
    }
    return n;
}

size_t utf8_trim_partial(char *s)
{
    size_t n = utf8_whole_len(s, strlen(s));
    s[n] = 0;
    return n;
}

json_t *utf8_json_string(const char *s, size_t n)
{
    if (utf8_valid(s, n)) {
        json_t *j = json_stringn(s, n);
        if (!j)
            abort();
        return j;
    }
    /* Each invalid byte becomes the two-byte UTF-8 form of U+00XX. */
    char *out = xmalloc(n * 2 + 1);
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0, o = 0;
    while (i < n) {
        size_t len = p[i] < 0x80 ? 1 : utf8_char_len(p + i, n - i);
        if (len) {
            memcpy(out + o, p + i, len);
            o += len;
            i += len;
            continue;
        }
        out[o++] = (char)(0xc0 | p[i] >> 6);
        out[o++] = (char)(0x80 | (p[i] & 0x3f));
        i++;
    }
    json_t *j = json_stringn(out, o);
    free(out);
    if (!j)
        abort();
    return j;
}

void utf8_shown(const char *s, size_t n, char *out, size_t size)
{
    if (size < 4) {
        if (size)
            out[0] = 0;
        return;
    }
    size_t k = utf8_cut(s, n, n < size ? n : size - 4); /* room for "..." when cut */
    for (size_t i = 0; i < k; i++)
        out[i] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i];
    if (k < n)
        memcpy(out + k, "...", 3), k += 3;
    out[k] = 0;
}
