/*
 * logring — the newest worker output of a model, for GET
 * /v1/models/NAME/logs: whole lines in one buffer of a fixed capacity.
 * When a line does not fit, the oldest half (at least as much as the line
 * needs, cut at a line boundary) is dropped and counted; a log that is read
 * rarely need not be a true ring, and the buffer always reads as one piece.
 *
 * Errors: a line longer than the capacity is not kept (the caller caps its
 * lines below it). Memory: the buffer is taken at the first line and freed
 * by logring_free; out of memory aborts (xmalloc.h).
 * Threads: one ring belongs to one thread.
 */
#ifndef CORRAL_LOGRING_H
#define CORRAL_LOGRING_H

#include <stddef.h>

typedef struct logring {
    char *buf;
    size_t cap;  /* set before the first append */
    size_t len;  /* bytes held: whole lines, each ending in '\n' */
    size_t cut;  /* bytes dropped from the front over the ring's life */
} logring;

/*
 * Appends one line made of three parts (a prefix, the text, a suffix) and a
 * newline. Returns 0, or -1 when the line is longer than the capacity.
 */
int logring_append(logring *r, const char *prefix, size_t plen, const char *line, size_t len, const char *suffix,
                   size_t slen);

void logring_free(logring *r);

#endif
