/*
 * lines — splits a byte stream (a worker's stdout or stderr) into lines,
 * each kept up to a cap: the rest of a longer line, however long, is only
 * counted, so a worker that writes 100 MB without a newline costs one
 * line and LINES_MAX bytes, not 25,000 lines.
 *
 * A line reaches the callback without its newline and without a trailing
 * '\r'; one that was cut ends on its last whole UTF-8 character, and the
 * bytes dropped past it are counted in `dropped`.
 *
 * Errors: none (out of memory aborts, xmalloc.h). Memory: the splitter owns
 * one LINES_MAX buffer, taken at the first byte, freed by lines_free.
 * Threads: one splitter belongs to one thread.
 */
#ifndef CORRAL_LINES_H
#define CORRAL_LINES_H

#include <stddef.h>

/* The longest line kept. */
#define LINES_MAX 4096

typedef void (*lines_on_line)(void *arg, const char *line, size_t len, size_t dropped);

typedef struct lines {
    char *buf;   /* the partial line, LINES_MAX bytes; NULL until needed */
    size_t len;  /* bytes of it kept */
    size_t drop; /* bytes of it past LINES_MAX */
} lines;

/* Feeds n bytes; each line they end goes to on_line(arg, ...) in order. */
void lines_feed(lines *ls, const char *p, size_t n, lines_on_line on_line, void *arg);

/* Ends a partial line (the stream closed): it goes to on_line, if there is one. */
void lines_flush(lines *ls, lines_on_line on_line, void *arg);

/* Frees the buffer; the splitter may be fed again. */
void lines_free(lines *ls);

#endif
