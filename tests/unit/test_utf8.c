/*
 * Unit tests of utf8 and of the JSON strings built on it (sb_json_str,
 * utf8_json_string, http_error_text): strict UTF-8, cuts at character
 * boundaries, and valid JSON out of any bytes in.
 */
#include "check.h"
#include "http.h"
#include "sb.h"
#include "manifest.h"
#include "utf8.h"

#include <stdlib.h>

static void strict_utf8(void)
{
    CHECK(utf8_valid("", 0));
    CHECK(utf8_valid("plain ascii", 11));
    CHECK(utf8_valid("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 14));
    CHECK(!utf8_valid("\xff", 1));
    CHECK(!utf8_valid("\xc0\xae", 2));         /* overlong '.' */
    CHECK(!utf8_valid("\xe0\x80\xaf", 3));     /* overlong '/' */
    CHECK(!utf8_valid("\xed\xa0\x80", 3));     /* a surrogate */
    CHECK(!utf8_valid("\xf4\x90\x80\x80", 4)); /* past U+10FFFF */
    CHECK(!utf8_valid("\xc3", 1));             /* cut short */
    CHECK(!utf8_valid("\x80", 1));             /* a stray continuation */
    CHECK(utf8_valid("\xf4\x8f\xbf\xbf", 4));  /* U+10FFFF itself */
}

static void cuts_at_boundaries(void)
{
    const char *s = "ab\xc3\xa9\xc3\xa9"; /* a b é é: 6 bytes */
    CHECK(utf8_cut(s, 6, 6) == 6);
    CHECK(utf8_cut(s, 6, 5) == 4);
    CHECK(utf8_cut(s, 6, 3) == 2);
    CHECK(utf8_cut("\xff\xff\xff", 3, 2) == 2); /* invalid bytes stand alone */
    char buf[16];
    snprintf(buf, sizeof buf, "%s", "abc\xe2\x82");
    CHECK(utf8_trim_partial(buf) == 3 && strcmp(buf, "abc") == 0);
    snprintf(buf, sizeof buf, "%s", "abc\xe2\x82\xac");
    CHECK(utf8_trim_partial(buf) == 6);
    snprintf(buf, sizeof buf, "%s", "abc\xff");
    CHECK(utf8_trim_partial(buf) == 4); /* not a cut: left for the escaping */
    CHECK(utf8_whole_len("ab\xf0\x9f\x98", 5) == 2); /* a 4-byte character cut after 3 */
    CHECK(utf8_whole_len("ab\xc3\xa9", 4) == 4);      /* whole: nothing dropped */
    CHECK(utf8_whole_len("ab", 2) == 2);
}

static void json_strings_from_any_bytes(void)
{
    sb b;
    sb_init(&b, 8);
    sb_json_str(&b, "a\"\\\n\x01\xff\xc3\xa9\xed\xa0\x80", 11);
    char *s = sb_take(&b, NULL);
    CHECK(strcmp(s, "\"a\\\"\\\\\\n\\u0001\\u00ff\xc3\xa9\\u00ed\\u00a0\\u0080\"") == 0);
    json_t *j = json_loads(s, JSON_DECODE_ANY, NULL);
    CHECK(j != NULL);
    json_decref(j);
    free(s);
    json_t *js = utf8_json_string("x\xff", 2);
    CHECK(js && strcmp(json_string_value(js), "x\xc3\xbf") == 0);
    json_decref(js);
}

static void error_bodies_are_json(void)
{
    size_t len;
    char *t = http_error_text(&len, "invalid model name '%s'", "\xff\xfe");
    CHECK(strcmp(t, "{\"error\":\"invalid model name '\\u00ff\\u00fe'\"}") == 0);
    free(t);
    /* a long message is cut on a character boundary and says so */
    char big[5000];
    size_t n = 0;
    while (n + 2 < sizeof big) {
        big[n++] = '\xc3';
        big[n++] = '\xa9';
    }
    big[n] = 0;
    t = http_error_text(&len, "%s", big);
    json_t *j = json_loadb(t, len, 0, NULL);
    CHECK(j != NULL);
    const char *msg = json_string_value(json_object_get(j, "error"));
    CHECK(msg && utf8_valid(msg, strlen(msg)) && strlen(msg) <= 2048);
    CHECK(msg && strcmp(msg + strlen(msg) - 3, "...") == 0);
    CHECK(msg && strstr(msg, "\\u00") == NULL);
    json_decref(j);
    free(t);
}

/* Client text for messages: control bytes as '?', cut on a character with "..." after, always terminated. */
static void shown_text(void)
{
    char out[16];
    utf8_shown("a\0b\nc\x7f", 6, out, sizeof out);
    CHECK(strcmp(out, "a?b?c?") == 0);
    utf8_shown("0123456789abcdefXYZ", 19, out, sizeof out);
    CHECK(strcmp(out, "0123456789ab...") == 0);
    utf8_shown("0123456789a\xc3\xa9zzzz", 17, out, sizeof out); /* the cut falls inside é: before it */
    CHECK(strcmp(out, "0123456789a...") == 0 && utf8_valid(out, strlen(out)));
    utf8_shown("exactly 15 byte", 15, out, sizeof out);
    CHECK(strcmp(out, "exactly 15 byte") == 0);
    utf8_shown("", 0, out, sizeof out);
    CHECK(out[0] == 0);
    char msg[400];
    model_name_error("bad/name", 8, msg, sizeof msg);
    CHECK(strcmp(msg, "invalid model name 'bad/name': names match [A-Za-z0-9][A-Za-z0-9._-]{0,127}") == 0);
}

CHECK_MAIN(CASE(strict_utf8), CASE(cuts_at_boundaries), CASE(json_strings_from_any_bytes), CASE(error_bodies_are_json),
           CASE(shown_text))
