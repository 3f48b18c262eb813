/*
 * Unit tests of api_session's pure parts: RFC 7386 merge patch (the RFC's
 * own examples, appendix A), the RFC 3339 times the endpoints write, and
 * the ttl a client sends.
 */
#include "api_session.h"
#include "check.h"

#include <string.h>

/* target merged with patch, compact, equals want (all JSON text). */
static int merges(const char *target, const char *patch, const char *want)
{
    json_t *t = json_loads(target, JSON_DECODE_ANY, NULL), *p = json_loads(patch, JSON_DECODE_ANY, NULL);
    json_t *w = json_loads(want, JSON_DECODE_ANY, NULL);
    json_t *got = session_merge_patch(t, p);
    int ok = json_equal(got, w);
    if (!ok) {
        char *g = json_dumps(got, JSON_COMPACT | JSON_ENCODE_ANY);
        fprintf(stderr, "merge %s with %s gave %s, not %s\n", target, patch, g, want);
        free(g);
    }
    json_decref(got);
    json_decref(p);
    json_decref(w);
    return ok;
}

static void merge_patch_as_the_rfc_examples(void)
{
    CHECK(merges("{\"a\":\"b\"}", "{\"a\":\"c\"}", "{\"a\":\"c\"}"));
    CHECK(merges("{\"a\":\"b\"}", "{\"b\":\"c\"}", "{\"a\":\"b\",\"b\":\"c\"}"));
    CHECK(merges("{\"a\":\"b\"}", "{\"a\":null}", "{}"));
    CHECK(merges("{\"a\":\"b\",\"b\":\"c\"}", "{\"a\":null}", "{\"b\":\"c\"}"));
    CHECK(merges("{\"a\":[\"b\"]}", "{\"a\":\"c\"}", "{\"a\":\"c\"}"));
    CHECK(merges("{\"a\":\"c\"}", "{\"a\":[\"b\"]}", "{\"a\":[\"b\"]}"));
    CHECK(merges("{\"a\":{\"b\":\"c\"}}", "{\"a\":{\"b\":\"d\",\"c\":null}}", "{\"a\":{\"b\":\"d\"}}"));
    CHECK(merges("{\"a\":[{\"b\":\"c\"}]}", "{\"a\":[1]}", "{\"a\":[1]}"));
    CHECK(merges("[\"a\",\"b\"]", "[\"c\",\"d\"]", "[\"c\",\"d\"]"));
    CHECK(merges("{\"a\":\"b\"}", "[\"c\"]", "[\"c\"]"));
    CHECK(merges("{\"a\":\"foo\"}", "null", "null"));
    CHECK(merges("{\"a\":\"foo\"}", "\"bar\"", "\"bar\""));
    CHECK(merges("{\"e\":null}", "{\"a\":1}", "{\"e\":null,\"a\":1}"));
    CHECK(merges("[1,2]", "{\"a\":\"b\",\"c\":null}", "{\"a\":\"b\"}"));
    CHECK(merges("{}", "{\"a\":{\"bb\":{\"ccc\":null}}}", "{\"a\":{\"bb\":{}}}"));
    /* no target at all (NULL) */
    json_t *p = json_loads("{\"a\":1}", 0, NULL);
    json_t *got = session_merge_patch(NULL, p);
    CHECK(json_equal(got, p));
    json_decref(got);
    json_decref(p);
}

static void times_are_rfc_3339_utc(void)
{
    char out[40];
    session_format_time(1764604800123, out, sizeof out);
    CHECK(strcmp(out, "2025-12-01T16:00:00.123Z") == 0);
    session_format_time(0, out, sizeof out);
    CHECK(strcmp(out, "1970-01-01T00:00:00.000Z") == 0);
}

static void ttls_are_whole_seconds_within_the_maximum(void)
{
    char msg[256];
    CHECK(session_parse_ttl("1", 1, 100, msg, sizeof msg) == 1);
    CHECK(session_parse_ttl("100", 3, 100, msg, sizeof msg) == 100);
    CHECK(session_parse_ttl("0100", 4, 100, msg, sizeof msg) == 100);
    CHECK(session_parse_ttl("101", 3, 100, msg, sizeof msg) == -1);
    CHECK_STR_CONTAINS(msg, "ttl '101' must be a whole number of seconds from 1 to --session-max-ttl 100");
    CHECK(session_parse_ttl("0", 1, 100, msg, sizeof msg) == -1);
    CHECK(session_parse_ttl("", 0, 100, msg, sizeof msg) == -1);
    CHECK(session_parse_ttl("1.5", 3, 100, msg, sizeof msg) == -1);
    CHECK(session_parse_ttl("-1", 2, 100, msg, sizeof msg) == -1);
    CHECK(session_parse_ttl("99999999999999999999999999", 26, 100, msg, sizeof msg) == -1); /* no overflow */
    CHECK(session_parse_ttl("5\n", 2, 100, msg, sizeof msg) == -1);
    CHECK_STR_CONTAINS(msg, "ttl '5?'");
}

CHECK_MAIN(CASE(merge_patch_as_the_rfc_examples), CASE(times_are_rfc_3339_utc),
           CASE(ttls_are_whole_seconds_within_the_maximum))
