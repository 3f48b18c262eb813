/*
 * sb — growable byte buffer; see sb.h.
 */
#include "sb.h"

#include "utf8.h"
#include "xmalloc.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sb_init(sb *b, size_t cap)
{
    b->len = 0;
    b->cap = cap ? cap : 64;
    b->p = xmalloc(b->cap);
}

void sb_free(sb *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

char *sb_reserve(sb *b, size_t n)
{
    /* +1 keeps room for the terminating NUL that sb_take adds. */
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 64; /* a zeroed sb (never initialised) grows too */
        while (cap < b->len + n + 1)
            cap *= 2;
        b->p = xrealloc(b->p, cap);
        b->cap = cap;
    }
    return b->p + b->len;
}

int sb_try_reserve(sb *b, size_t n)
{
    if (b->len + n + 1 <= b->cap)
        return 0;
    if (n > SIZE_MAX / 4 - b->len)
        return -ENOMEM;
    size_t cap = b->cap ? b->cap * 2 : 64;
    while (cap < b->len + n + 1)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p)
        return -ENOMEM;
    b->p = p;
    b->cap = cap;
    return 0;
}

void sb_add(sb *b, const void *data, size_t n)
{
    memcpy(sb_reserve(b, n), data, n);
    b->len += n;
}

void sb_adds(sb *b, const char *s)
{
    sb_add(b, s, strlen(s));
}

void sb_addc(sb *b, char c)
{
    *sb_reserve(b, 1) = c;
    b->len++;
}

size_t sb_format_u64(char *p, uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        p[i] = tmp[n - 1 - i];
    return n;
}

void sb_u64(sb *b, uint64_t v)
{
    b->len += sb_format_u64(sb_reserve(b, 20), v);
}

void sb_printf(sb *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n >= b->cap - b->len) {
        sb_reserve(b, (size_t)n);
        va_start(ap, fmt);
        vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
    }
    b->len += (size_t)n;
}

void sb_json_str(sb *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *u = (const unsigned char *)s;
    char *o = sb_reserve(b, n * 6 + 2);
    *o++ = '"';
    size_t i = 0;
    while (i < n) {
        unsigned char c = u[i];
        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
            *o++ = (char)c;
            i++;
        } else if (c == '"' || c == '\\') {
            *o++ = '\\';
            *o++ = (char)c;
            i++;
        } else if (c == '\n' || c == '\r' || c == '\t') {
            *o++ = '\\';
            *o++ = c == '\n' ? 'n' : c == '\r' ? 'r' : 't';
            i++;
        } else {
            size_t len = c < 0x80 ? 0 : utf8_char_len(u + i, n - i);
            if (len) {
                memcpy(o, u + i, len);
                o += len;
                i += len;
                continue;
            }
            /* a control byte, or a byte that is not valid UTF-8: U+00XX */
            memcpy(o, "\\u00", 4);
            o[4] = hex[c >> 4];
            o[5] = hex[c & 15];
            o += 6;
            i++;
        }
    }
    *o++ = '"';
    b->len = (size_t)(o - b->p);
}

char *sb_take(sb *b, size_t *len)
{
    sb_reserve(b, 0);
    b->p[b->len] = 0;
    char *p = b->p;
    if (len)
        *len = b->len;
    b->p = NULL;
    b->len = b->cap = 0;
    return p;
}
