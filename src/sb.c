/*
 * sb — growable byte buffer; see sb.h.
 */
#include "sb.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sb_init(sb *b, size_t cap)
{
    b->len = 0;
    b->cap = cap ? cap : 64;
    b->p = malloc(b->cap);
    if (!b->p)
        abort();
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
        size_t cap = b->cap * 2;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p)
            abort();
        b->p = p;
        b->cap = cap;
    }
    return b->p + b->len;
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
    char *o = sb_reserve(b, n * 6 + 2);
    *o++ = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            *o++ = '\\';
            *o++ = (char)c;
        } else if (c < 0x20) {
            *o++ = '\\';
            switch (c) {
            case '\n': *o++ = 'n'; break;
            case '\r': *o++ = 'r'; break;
            case '\t': *o++ = 't'; break;
            default:
                *o++ = 'u';
                *o++ = '0';
                *o++ = '0';
                *o++ = hex[c >> 4];
                *o++ = hex[c & 15];
            }
        } else {
            *o++ = (char)c;
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
