/*
 * sb — a growable byte buffer used to build JSON and protocol frames.
 *
 * Memory comes from malloc; sb_take hands the bytes to the caller, who frees
 * them with free(). Allocation failure aborts (the project's one
 * out-of-memory policy), except in sb_try_reserve: a buffer whose size a
 * client or a worker decides is reserved with it first, so that a request
 * too large for the memory at hand is refused rather than fatal.
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
/*
 * Like sb_reserve, but for room sized by a request: returns -ENOMEM instead
 * of aborting when the memory cannot be had (b is unchanged then), so the
 * request can be answered 503.
 */
int sb_try_reserve(sb *b, size_t n);
void sb_add(sb *b, const void *data, size_t n);
void sb_adds(sb *b, const char *s);
void sb_addc(sb *b, char c);
/* Writes v in decimal at p (room for 20 bytes, no NUL); returns the length. No printf: it is hot. */
size_t sb_format_u64(char *p, uint64_t v);
/* Appends v in decimal (the metrics write thousands of these per scrape). */
void sb_u64(sb *b, uint64_t v);
void sb_printf(sb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/*
 * Appends s as a quoted JSON string, escaping as RFC 8259 requires. Bytes
 * that are not valid UTF-8 are written as \u00XX (see utf8.h), so the
 * result is always valid JSON whatever s holds.
 */
void sb_json_str(sb *b, const char *s, size_t n);
/* Returns the bytes (NUL-terminated, not counted in len) and empties b. */
char *sb_take(sb *b, size_t *len);

#endif
