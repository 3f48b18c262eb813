/*
 * utf8 — strict UTF-8 checking, cutting text at character boundaries, and
 * JSON strings from bytes that may not be text.
 *
 * Every string the daemon puts into JSON that came from a client, a worker
 * or the filesystem goes through here (sb_json_str or utf8_json_string):
 * jansson refuses invalid UTF-8 by returning NULL, and a NULL that reaches
 * a response writer was once a crash. Invalid bytes are kept visible as
 * U+0080..U+00FF ("\u00ff" in JSON), never dropped and never passed raw.
 * Pure functions; no state.
 */
#ifndef CORRAL_UTF8_H
#define CORRAL_UTF8_H

#include <jansson.h>
#include <stddef.h>

/*
 * The length of the valid UTF-8 sequence starting at s[0] (1 to 4), or 0
 * when s[0] does not start one: a stray continuation byte, an overlong
 * form, a surrogate, a code point above U+10FFFF, or a sequence cut by n.
 */
size_t utf8_char_len(const unsigned char *s, size_t n);

/* Whether all n bytes are valid UTF-8 (as jansson and RFC 3629 require). */
int utf8_valid(const char *s, size_t n);

/*
 * The longest prefix of s, at most max bytes, that does not end inside a
 * valid multi-byte character: where text has to be shortened.
 */
size_t utf8_cut(const char *s, size_t n, size_t max);

/*
 * n bytes of a client's text for a message, NUL-terminated in out (size
 * bytes): control bytes (NUL included) as '?', cut at a character boundary
 * to fit, with "..." after a cut. The error writer escapes what remains.
 */
void utf8_shown(const char *s, size_t n, char *out, size_t size);

/*
 * Drops an incomplete character from the end of the NUL-terminated s, as
 * snprintf leaves one when it cuts text into a fixed buffer. Returns the
 * new length.
 */
size_t utf8_trim_partial(char *s);
/* The same for n bytes that need not be NUL-terminated: the length without an incomplete last character. */
size_t utf8_whole_len(const char *s, size_t n);

/*
 * A jansson string of the n bytes at s; invalid bytes become U+00XX. Never
 * NULL (allocation failure aborts, as sb does).
 */
json_t *utf8_json_string(const char *s, size_t n);

#endif
