/*
 * Unit tests of evstream: server-sent events and NDJSON decoded from pieces
 * of any size (every split of one stream gives the same events), comments,
 * multi-line data, CR, LF and CR LF line ends, fields that are ignored, a
 * BOM, the end of a stream in the middle of an event, a callback that
 * stops the feed, the size cap, and the event types, last ids and comments
 * handed to the owner.
 */
#include "check.h"
#include "evstream.h"

#include <errno.h>
#include <string.h>

typedef struct got {
    int n;
    char ev[8][64];
    int stop_at; /* on_event returns 7 for this event (1-based); 0: never */
} got;

static int on_event(void *data, const char *event, size_t len)
{
    got *g = data;
    if (g->n < 8 && len < 64) {
        memcpy(g->ev[g->n], event, len);
        g->ev[g->n][len] = 0;
    }
    CHECK(event[len] == '\0');
    g->n++;
    return g->n == g->stop_at ? 7 : 0;
}

/* Feeds text in pieces of `piece` bytes (0: all at once) and ends the stream; returns evstream_end's result. */
static int decode(evstream_kind kind, const char *text, size_t piece, got *g)
{
    evstream s;
    evstream_init(&s, kind, on_event, g);
    size_t len = strlen(text), step = piece ? piece : len;
    int rc = 0;
    for (size_t i = 0; i < len && !rc; i += step)
        rc = evstream_feed(&s, text + i, len - i < step ? len - i : step);
    if (!rc)
        rc = evstream_end(&s);
    CHECK(s.events == (size_t)g->n);
    evstream_close(&s);
    return rc;
}

static void sse_events_in_any_pieces(void)
{
    const char *text = "data: {\"i\":0}\n\n"
                       ": keep-alive\n\n"
                       "data: {\"i\":1}\r\n\r\n"
                       "event: x\rid: 4\rretry: 10\rdata:{\"i\":2}\r\r"
                       "data: line one\ndata\ndata:  two spaces\n\n";
    for (size_t piece = 0; piece <= 7; piece++) {
        got g = {0};
        CHECK(decode(EVSTREAM_SSE, text, piece, &g) == 0);
        CHECK(g.n == 4);
        CHECK(strcmp(g.ev[0], "{\"i\":0}") == 0);
        CHECK(strcmp(g.ev[1], "{\"i\":1}") == 0);
        CHECK(strcmp(g.ev[2], "{\"i\":2}") == 0);
        CHECK(strcmp(g.ev[3], "line one\n\n two spaces") == 0);
    }
}

static void sse_events_without_data_are_not_delivered(void)
{
    got g = {0};
    CHECK(decode(EVSTREAM_SSE, "\n\n: only a comment\n\nevent: ping\nid: 3\n\n\xEF\xBB\xBF\n", 1, &g) == 0);
    CHECK(g.n == 0);
}

static void sse_bom_is_dropped_only_at_the_start(void)
{
    got g = {0};
    CHECK(decode(EVSTREAM_SSE, "\xEF\xBB\xBF" "data: a\n\n\xEF\xBB\xBF" "data: b\n\n", 2, &g) == 0);
    CHECK(g.n == 1 && strcmp(g.ev[0], "a") == 0); /* the second line's field is "\xEF\xBB\xBF" "data" */
}

static void sse_ending_mid_event_is_an_error(void)
{
    const char *cut[] = {"data: {\"i\":0}\n\ndata: {\"i\"", "data: {\"i\":0}\n\ndata: {\"i\":1}\n",
                         "data: {\"i\":0}\n\n: keep-al"};
    for (size_t k = 0; k < sizeof cut / sizeof cut[0]; k++) {
        got g = {0};
        CHECK(decode(EVSTREAM_SSE, cut[k], 3, &g) == -EPIPE);
        CHECK(g.n == 1 && strcmp(g.ev[0], "{\"i\":0}") == 0);
    }
    got g = {0};
    CHECK(decode(EVSTREAM_SSE, "data: a\r", 0, &g) == -EPIPE); /* a CR ends the line, not the event */
}

static void ndjson_lines(void)
{
    for (size_t piece = 0; piece <= 5; piece++) {
        got g = {0};
        CHECK(decode(EVSTREAM_NDJSON, "{\"i\":0}\n\n{\"a\":\"x\\ry\"}\r\n{\"i\":2}", piece, &g) == 0);
        CHECK(g.n == 3);
        CHECK(strcmp(g.ev[0], "{\"i\":0}") == 0);
        CHECK(strcmp(g.ev[1], "{\"a\":\"x\\ry\"}") == 0);
        CHECK(strcmp(g.ev[2], "{\"i\":2}") == 0); /* the last line, without its LF */
    }
    got g = {0};
    CHECK(decode(EVSTREAM_NDJSON, "{\"i\":\r0}\n", 1, &g) == 0); /* a lone CR is JSON white space, not a line end */
    CHECK(g.n == 1 && strcmp(g.ev[0], "{\"i\":\r0}") == 0);
}

/* What the callbacks saw of types, ids and comments. */
typedef struct typed {
    const evstream *s;
    int n, comments;
    char type[4][32], id[4][32], comment[4][64];
} typed;

static int on_typed(void *data, const char *event, size_t len)
{
    typed *t = data;
    CHECK(event[len] == '\0');
    CHECK(t->s->event_type && t->s->last_id);
    if (t->n < 4 && t->s->event_type && t->s->last_id) {
        snprintf(t->type[t->n], sizeof t->type[0], "%s", t->s->event_type);
        snprintf(t->id[t->n], sizeof t->id[0], "%s", t->s->last_id);
    }
    t->n++;
    return 0;
}

static int on_comment(void *data, const char *comment, size_t len)
{
    typed *t = data;
    CHECK(comment[len] == '\0' && strlen(comment) == len);
    if (t->comments < 4)
        snprintf(t->comment[t->comments], sizeof t->comment[0], "%s", comment);
    t->comments++;
    return 0;
}

/* Feeds len bytes in pieces of `piece` (0: at once), comments to on_comment, and ends the stream. */
static void decode_typed(const char *text, size_t len, size_t piece, typed *t)
{
    evstream s;
    evstream_init(&s, EVSTREAM_SSE, on_typed, t);
    s.on_comment = on_comment;
    t->s = &s;
    size_t step = piece ? piece : len;
    for (size_t i = 0; i < len; i += step)
        CHECK(evstream_feed(&s, text + i, len - i < step ? len - i : step) == 0);
    CHECK(evstream_end(&s) == 0);
    CHECK(s.event_type == NULL && s.last_id == NULL); /* only during on_event */
    evstream_close(&s);
}

static void sse_types_ids_and_comments(void)
{
    const char *text = ":first\n\n"
                       "data: a\n\n" /* no type, no id yet */
                       "id: 7\nevent: model.loaded\ndata: b\n\n"
                       "event: gone\n\n" /* a type without data goes with its event */
                       "data: c\n\n"     /* the id lasts, the type does not */
                       ": events were lost\r\n"
                       "id: 8\n\n"       /* an id alone: no event, but it is the last id... */
                       "id\nevent:x\ndata: d\r\n\r\n"; /* ...until an empty one clears it */
    for (size_t piece = 0; piece <= 5; piece++) {
        typed t = {0};
        decode_typed(text, strlen(text), piece, &t);
        CHECK(t.n == 4 && t.comments == 2);
        CHECK(strcmp(t.type[0], "message") == 0 && strcmp(t.id[0], "") == 0);
        CHECK(strcmp(t.type[1], "model.loaded") == 0 && strcmp(t.id[1], "7") == 0);
        CHECK(strcmp(t.type[2], "message") == 0 && strcmp(t.id[2], "7") == 0);
        CHECK(strcmp(t.type[3], "x") == 0 && strcmp(t.id[3], "") == 0);
        CHECK(strcmp(t.comment[0], "first") == 0);
        CHECK(strcmp(t.comment[1], "events were lost") == 0);
    }
}

static void sse_an_id_holding_a_nul_is_ignored(void)
{
    static const char text[] = "id: 3\ndata: a\n\nid: 4\0x\ndata: b\n\n";
    typed t = {0};
    decode_typed(text, sizeof text - 1, 1, &t);
    CHECK(t.n == 2 && strcmp(t.id[0], "3") == 0 && strcmp(t.id[1], "3") == 0);
}

static int stop_at_comment(void *data, const char *comment, size_t len)
{
    (void)data;
    (void)len;
    return strcmp(comment, "stop") == 0 ? 5 : 0;
}

static void a_comment_callback_stops_the_feed(void)
{
    got g = {0};
    evstream s;
    evstream_init(&s, EVSTREAM_SSE, on_event, &g);
    s.on_comment = stop_at_comment;
    CHECK(evstream_feed(&s, "data: a\n\n:go on\n:stop\ndata: b\n\n", 31) == 5);
    CHECK(g.n == 1);
    evstream_close(&s);
}

static void a_callback_stops_the_feed(void)
{
    got g = {.stop_at = 2};
    evstream s;
    evstream_init(&s, EVSTREAM_SSE, on_event, &g);
    CHECK(evstream_feed(&s, "data: a\n\ndata: b\n\ndata: c\n\n", 27) == 7);
    CHECK(g.n == 2 && strcmp(g.ev[1], "b") == 0);
    evstream_close(&s);
}

static void a_line_or_event_past_the_cap_is_refused(void)
{
    got g = {0};
    evstream s;
    evstream_init(&s, EVSTREAM_NDJSON, on_event, &g);
    CHECK(s.max == EVSTREAM_MAX);
    s.max = 10;
    CHECK(evstream_feed(&s, "0123456789\n", 11) == 0); /* exactly the cap */
    CHECK(evstream_feed(&s, "01234", 5) == 0);
    CHECK(evstream_feed(&s, "567890", 6) == -EMSGSIZE);
    CHECK(g.n == 1);
    evstream_close(&s);

    evstream_init(&s, EVSTREAM_SSE, on_event, &g);
    s.max = 10;
    CHECK(evstream_feed(&s, "data:01234\ndata:56789\n", 22) == -EMSGSIZE); /* lines fit, the event does not */
    CHECK(g.n == 1);
    evstream_close(&s);
}

CHECK_MAIN(CASE(sse_events_in_any_pieces), CASE(sse_events_without_data_are_not_delivered),
           CASE(sse_bom_is_dropped_only_at_the_start), CASE(sse_ending_mid_event_is_an_error), CASE(ndjson_lines),
           CASE(a_callback_stops_the_feed), CASE(a_line_or_event_past_the_cap_is_refused),
           CASE(sse_types_ids_and_comments), CASE(sse_an_id_holding_a_nul_is_ignored),
           CASE(a_comment_callback_stops_the_feed))
