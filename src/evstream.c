/* evstream — incremental server-sent events and NDJSON; see evstream.h. */
#include "evstream.h"

#include <errno.h>
#include <string.h>

void evstream_init(evstream *s, evstream_kind kind, evstream_event_cb on_event, void *data)
{
    memset(s, 0, sizeof *s);
    s->kind = kind;
    s->on_event = on_event;
    s->data = data;
    s->max = EVSTREAM_MAX;
    sb_init(&s->line, 256);
    sb_init(&s->ev, 256);
    sb_init(&s->type, 32);
    sb_init(&s->id, 32);
}

void evstream_close(evstream *s)
{
    sb_free(&s->line);
    sb_free(&s->ev);
    sb_free(&s->type);
    sb_free(&s->id);
}

/* Appends n bytes to b, within s->max and the memory at hand. */
static int add_bounded(const evstream *s, sb *b, const char *p, size_t n)
{
    if (b->len > s->max || n > s->max - b->len)
        return -EMSGSIZE;
    int rc = sb_try_reserve(b, n);
    if (rc < 0)
        return rc;
    memcpy(b->p + b->len, p, n);
    b->len += n;
    return 0;
}

/* Hands an event, NUL-terminated, to on_event; p[len] lies within its buffer (sb keeps a byte past len free). */
static int deliver(evstream *s, char *p, size_t len)
{
    p[len] = '\0';
    s->events++;
    return s->on_event(s->data, p, len);
}

/*
 * A blank line: the event's data, less the '\n' after its last value, goes
 * out if there is any, with its type and the last id; the type lasts for
 * this event only, whether or not it had data.
 */
static int sse_dispatch(evstream *s)
{
    size_t type_len = s->type.len;
    s->type.len = 0;
    if (!s->ev.len)
        return 0;
    size_t len = s->ev.len - 1;
    s->ev.len = 0;
    s->type.p[type_len] = '\0'; /* within the buffer, as in deliver */
    s->id.p[s->id.len] = '\0';
    s->event_type = type_len ? s->type.p : "message";
    s->last_id = s->id.p;
    int rc = deliver(s, s->ev.p, len);
    s->event_type = s->last_id = NULL;
    return rc;
}

/* Sets a field's buffer to value. */
static int set_field(const evstream *s, sb *b, const char *value, size_t len)
{
    b->len = 0;
    return add_bounded(s, b, value, len);
}

static int sse_line(evstream *s, char *l, size_t len)
{
    if (!len)
        return sse_dispatch(s);
    const char *colon = memchr(l, ':', len);
    size_t name_len = colon ? (size_t)(colon - l) : len;
    char *value = colon ? (char *)colon + 1 : l + len;
    size_t value_len = (size_t)(l + len - value);
    if (value_len && value[0] == ' ') {
        value++;
        value_len--;
    }
    if (name_len == 0) { /* a comment: the daemon's keep-alive, or why it ends the stream */
        if (!s->on_comment)
            return 0;
        value[value_len] = '\0'; /* the line's end: within its buffer, as in deliver */
        return s->on_comment(s->data, value, value_len);
    }
    if (name_len == 5 && memcmp(l, "event", 5) == 0)
        return set_field(s, &s->type, value, value_len);
    if (name_len == 2 && memcmp(l, "id", 2) == 0)
        return memchr(value, '\0', value_len) ? 0 : set_field(s, &s->id, value, value_len);
    if (name_len != 4 || memcmp(l, "data", 4) != 0)
        return 0; /* retry and unknown fields change nothing we print */
    int rc = add_bounded(s, &s->ev, value, value_len);
    return rc < 0 ? rc : add_bounded(s, &s->ev, "\n", 1);
}

static int on_line(evstream *s)
{
    char *l = s->line.p;
    size_t len = s->line.len;
    s->line.len = 0; /* l stays valid: nothing is added to line until this returns */
    if (!s->seen_line) {
        s->seen_line = 1;
        if (len >= 3 && memcmp(l, "\xEF\xBB\xBF", 3) == 0) {
            l += 3;
            len -= 3;
        }
    }
    if (s->kind == EVSTREAM_SSE)
        return sse_line(s, l, len);
    if (len && l[len - 1] == '\r')
        len--;
    return len ? deliver(s, l, len) : 0;
}

int evstream_feed(evstream *s, const char *p, size_t len)
{
    size_t i = 0;
    while (i < len) {
        if (s->after_cr) {
            s->after_cr = 0;
            if (p[i] == '\n') { /* the LF of a CR LF */
                i++;
                continue;
            }
        }
        size_t j = i;
        if (s->kind == EVSTREAM_SSE) {
            while (j < len && p[j] != '\n' && p[j] != '\r')
                j++;
        } else {
            const char *nl = memchr(p + i, '\n', len - i);
            j = nl ? (size_t)(nl - p) : len;
        }
        int rc = add_bounded(s, &s->line, p + i, j - i);
        if (rc < 0)
            return rc;
        if (j == len)
            return 0;
        s->after_cr = p[j] == '\r';
        i = j + 1;
        if ((rc = on_line(s)) != 0)
            return rc;
    }
    return 0;
}

int evstream_end(evstream *s)
{
    if (s->kind == EVSTREAM_NDJSON)
        return s->line.len ? on_line(s) : 0;
    return s->line.len || s->ev.len ? -EPIPE : 0;
}
