/*
 * fuzz — what every libFuzzer target of corral shares: the check that a
 * piece of JSON the daemon produced is strict JSON in valid UTF-8 (jansson
 * parses it, and utf8_valid accepts every byte), and the check that an
 * error message becomes such JSON through the one error writer; and a
 * model's declared tensors for the targets that check requests against them.
 * A failed check aborts, which libFuzzer reports as a crash.
 */
#ifndef CORRAL_FUZZ_H
#define CORRAL_FUZZ_H

#include "decl.h"
#include "http.h"
#include "utf8.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static inline void fuzz_check_json(const char *s, size_t n)
{
    json_error_t e; /* integers past INT64_MAX (UINT64) and \u0000 are JSON too */
    if (!utf8_valid(s, n)) {
        fprintf(stderr, "fuzz: JSON that is not UTF-8: %.*s\n", (int)(n > 400 ? 400 : n), s);
        abort();
    }
    json_t *j = json_loadb(s, n, JSON_DECODE_ANY | JSON_DECODE_INT_AS_REAL | JSON_ALLOW_NUL, &e);
    if (!j) {
        fprintf(stderr, "fuzz: invalid JSON (%s): %.*s\n", e.text, (int)(n > 400 ? 400 : n), s);
        abort();
    }
    json_decref(j);
}

/* Reads every byte of a buffer, so that ASan checks all of it is there. */
static volatile unsigned char fuzz_sink;
static inline void fuzz_touch(const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        fuzz_sink += b[i];
}

/* An error message as the daemon would send it: must become strict JSON. */
static inline void fuzz_check_error(const char *msg)
{
    size_t len;
    char *text = http_error_text(&len, "%s", msg);
    fuzz_check_json(text, len);
    free(text);
}

/* Declared tensors (decl.h) from their JSON, for a target's model: kept for the whole run. */
static inline const decl_list *fuzz_decl(const char *text)
{
    json_t *j = json_loads(text, 0, NULL);
    decl_list *l = NULL;
    size_t at;
    char err[256];
    if (decl_parse(j, &l, &at, err, sizeof err) < 0 || !l)
        abort();
    json_decref(j);
    return l;
}

#endif
