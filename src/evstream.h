/*
 * evstream — decodes a stream of events as its bytes arrive, in pieces of
 * any size: server-sent events (text/event-stream) or NDJSON
 * (application/x-ndjson). The client's `generate --stream`, `events` and
 * `top` feed it what curl delivers and act on each event as it completes.
 *
 * Server-sent events are parsed as the WHATWG HTML standard says: lines end
 * with CR LF, LF or CR; a leading UTF-8 BOM is dropped; a line that starts
 * with ':' is a comment (the daemon's keep-alive); a line "field: value"
 * (one space after the colon dropped) or "field" alone sets a field; each
 * `data` field's value is appended to the event's data, the values joined
 * with '\n'; a blank line ends the event, which is delivered if it has
 * data. An `event` field names the event's type (event_type during
 * on_event: "message" when the event had none) and lasts for that event
 * only; an `id` field sets the last event id (last_id: "" until one came;
 * an id holding a NUL is ignored), which lasts until the next `id`, as a
 * browser's lastEventId does; `retry` and unknown fields are ignored. A
 * comment goes to on_comment when the owner set one (the daemon says there
 * why it ended a stream). NDJSON: each line ending in LF (a CR before it
 * dropped) is one event; empty lines are skipped.
 *
 * Errors: evstream_feed returns 0, the first non-zero value on_event or
 * on_comment returned (it stops there), or -EMSGSIZE for a line or an
 * event longer than `max`, or -ENOMEM when the memory for one cannot be
 * had (the sender decides the sizes, so they are not fatal); after a
 * non-zero return the decoder is only good for evstream_close.
 * evstream_end returns -EPIPE when the stream stopped in the middle of a
 * server-sent event (data, or a part of a line, with no blank line after
 * it); a last NDJSON line without its LF is delivered.
 * Memory: the decoder owns its buffers, freed by evstream_close. An event
 * or a comment handed to a callback is NUL-terminated (not counted in len)
 * and valid only during the call; so are event_type and last_id.
 * Threads: one decoder belongs to one thread.
 */
#ifndef CORRAL_EVSTREAM_H
#define CORRAL_EVSTREAM_H

#include "sb.h"

#include <stddef.h>
#include <stdint.h>

/* The longest line or event accepted by default (evstream.max): far past what an event sensibly holds. */
#define EVSTREAM_MAX ((size_t)256 << 20)

typedef enum evstream_kind { EVSTREAM_SSE, EVSTREAM_NDJSON } evstream_kind;

/* One whole event: an SSE event's data, or one NDJSON line. Non-zero stops evstream_feed. */
typedef int (*evstream_event_cb)(void *data, const char *event, size_t len);
/* An SSE comment: the line after its ':', one leading space dropped. Non-zero stops evstream_feed. */
typedef int (*evstream_comment_cb)(void *data, const char *comment, size_t len);

typedef struct evstream {
    /* public */
    void *data;   /* the owner's, passed to on_event */
    size_t max;   /* the longest line or event; EVSTREAM_MAX after evstream_init */
    evstream_comment_cb on_comment; /* NULL (the default): comments are dropped */
    /* read-only */
    size_t events; /* delivered so far */
    const char *event_type; /* SSE, during on_event: the event's type; NULL otherwise */
    const char *last_id;    /* SSE, during on_event: the last event id; NULL otherwise */
    /* private */
    evstream_kind kind;
    evstream_event_cb on_event;
    sb line; /* the line being read, without its end */
    sb ev;   /* SSE: the event's data so far, each value followed by '\n' */
    sb type; /* SSE: the event's type so far ("" until an `event` field) */
    sb id;   /* SSE: the last event id */
    uint8_t after_cr;  /* the last byte was a CR: an LF right after it ends no second line */
    uint8_t seen_line; /* a line was read: a BOM is dropped only before the first */
} evstream;

void evstream_init(evstream *s, evstream_kind kind, evstream_event_cb on_event, void *data);
int evstream_feed(evstream *s, const char *p, size_t len);
/* The stream ended: delivers a last unterminated NDJSON line; see the errors above. */
int evstream_end(evstream *s);
void evstream_close(evstream *s);

#endif
