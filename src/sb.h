/*
 * sb — a growable byte buffer used to build JSON and protocol frames.
 *
 * Memory comes from malloc; sb_take hands the bytes to the caller, who frees
 * them with free(). Allocation failure aborts: the daemon cannot continue
 * meaningfully without memory for a response, and every caller would
 * otherwise repeat the same check.
 */
#ifndef CORRAL_SB_H
#define CORRAL_SB_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

typedef struct sb {
    char *p;
    size_t len;
    size_t cap;
} sb;

void sb_init(sb *b, size_t cap);
void sb_free(sb *b);
/* Ensures room for n more bytes; returns a pointer to the free space. */
char *sb_reserve(sb *b, size_t n);
void sb_add(sb *b, const void *data, size_t n);
void sb_adds(sb *b, const char *s);
void sb_addc(sb *b, char c);
void sb_printf(sb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends s as a quoted JSON string, escaping as RFC 8259 requires. */
void sb_json_str(sb *b, const char *s, size_t n);
/* Returns the bytes (NUL-terminated, not counted in len) and empties b. */
char *sb_take(sb *b, size_t *len);

#endif
