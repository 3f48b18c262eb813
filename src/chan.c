/*
 * chan — the worker-protocol frame reader and writer; see chan.h.
 *
 * Reader invariant between calls: either no frame is open (have_header == 0) and
 * the stage holds less than a header, or a frame is open, its first
 * body_got bytes are in body, and the stage is empty — unless a callback
 * paused parsing, in which case the stage may hold anything, parsed first
 * at the next consume.
 */
#include "chan.h"
#include "xmalloc.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STAGE_SIZE (64 * 1024)
/* The first allocation for a body, unless the frame is smaller; it doubles from there. */
#define BODY_MIN (64 * 1024)

void chan_reader_init(chan_reader *r, uint32_t max_body, chan_on_frame_cb on_frame, chan_on_error_cb on_error,
                      void *data)
{
    memset(r, 0, sizeof *r);
    r->max_body = max_body;
    r->on_frame = on_frame;
    r->on_error = on_error;
    r->data = data;
}

static void drop_frame(chan_reader *r)
{
    free(r->body);
    r->body = NULL;
    r->body_got = r->body_cap = 0;
    r->have_header = 0;
}

void chan_reader_reset(chan_reader *r)
{
    drop_frame(r);
    r->stage_len = 0;
    r->stopped = 0;
}

void chan_reader_close(chan_reader *r)
{
    drop_frame(r);
    free(r->stage);
    r->stage = NULL;
    r->stage_len = 0;
}

void chan_reader_stop(chan_reader *r)
{
    r->stopped = 1;
    drop_frame(r);
    r->stage_len = 0;
}

static void fail(chan_reader *r, int err, const char *what)
{
    chan_reader_stop(r);
    r->on_error(r, err, what);
}

/* Makes room for need bytes of the open frame's body (need <= its length). */
static int grow_body(chan_reader *r, size_t need)
{
    if (need <= r->body_cap)
        return 0;
    size_t cap = r->body_cap ? r->body_cap * 2 : BODY_MIN;
    if (cap < need)
        cap = need;
    if (cap > r->cur.length)
        cap = r->cur.length;
    uint8_t *p = realloc(r->body, cap);
    if (!p)
        return -ENOMEM;
    r->body = p;
    r->body_cap = cap;
    return 0;
}

static void no_memory(chan_reader *r)
{
    char what[96];
    snprintf(what, sizeof what, "no memory for the body of a %u-byte frame", r->cur.length);
    fail(r, -ENOMEM, what);
}

/* Hands the open frame, now whole, to on_frame; returns its answer. */
static int deliver(chan_reader *r)
{
    proto_header h = r->cur;
    uint8_t *body = r->body;
    r->body = NULL;
    r->body_got = r->body_cap = 0;
    r->have_header = 0;
    return r->on_frame(r, &h, body);
}

static void parse_stage(chan_reader *r)
{
    size_t off = 0;
    while (!r->stopped) {
        if (!r->have_header) {
            int rc = proto_header_decode(r->stage + off, r->stage_len - off, r->max_body, &r->cur);
            if (rc == -EAGAIN)
                break;
            if (rc < 0) {
                char what[96];
                if (rc == -EMSGSIZE)
                    snprintf(what, sizeof what, "frame of %u bytes, over the %u-byte limit",
                             proto_get_u32(r->stage + off), r->max_body);
                else
                    snprintf(what, sizeof what, "bad frame header (type %u, version %u, flags %#x)",
                             r->stage[off + 5], r->stage[off + 4],
                             (unsigned)(r->stage[off + 6] | r->stage[off + 7] << 8));
                fail(r, rc, what);
                return;
            }
            off += PROTO_HEADER_SIZE;
            r->have_header = 1;
            r->body_got = 0;
        }
        size_t want = r->cur.length - r->body_got;
        size_t avail = r->stage_len - off;
        size_t take = want < avail ? want : avail;
        if (take) {
            if (grow_body(r, r->body_got + take) < 0) {
                no_memory(r);
                return;
            }
            memcpy(r->body + r->body_got, r->stage + off, take);
            r->body_got += take;
            off += take;
        }
        if (r->body_got < r->cur.length)
            break;
        if (deliver(r))
            break;
    }
    if (r->stopped)
        return;
    if (off) {
        memmove(r->stage, r->stage + off, r->stage_len - off);
        r->stage_len -= off;
    }
}

void chan_reader_buffer(chan_reader *r, char **base, size_t *len)
{
    if (!r->stage)
        r->stage = xmalloc(STAGE_SIZE);
    if (r->stage_len == STAGE_SIZE) /* paused with a full stage: parse before reading more */
        parse_stage(r);
    if (!r->stopped && r->have_header && r->stage_len == 0 && r->body_got < r->cur.length) {
        /* Mid-body with nothing staged: read straight into the frame's buffer, grown as it fills. */
        if (r->body_got < r->body_cap || grow_body(r, r->body_got + 1) == 0) {
            *base = (char *)r->body + r->body_got;
            *len = r->body_cap - r->body_got;
            return;
        }
        no_memory(r);
    }
    if (r->stopped) { /* scratch: whatever is read now is dropped */
        *base = (char *)r->stage;
        *len = STAGE_SIZE;
        return;
    }
    *base = (char *)r->stage + r->stage_len;
    *len = STAGE_SIZE - r->stage_len;
}

void chan_reader_consume(chan_reader *r, const char *base, size_t n)
{
    if (r->stopped || n == 0)
        return;
    if (r->have_header && r->body && base == (char *)r->body + r->body_got) {
        r->body_got += n;
        if (r->body_got == r->cur.length && deliver(r) == 0 && r->stage_len)
            parse_stage(r);
        return;
    }
    r->stage_len += n;
    parse_stage(r);
}

/* ---- writer ---- */

/* The part of the frames the socket did not take at once, queued. */
typedef struct chan_wreq {
    uv_write_t req;
    chan_writer *w;
    int nframes;
    uint8_t *frames[CHAN_WRITER_HOLD]; /* owned: freed when the write completes */
} chan_wreq;

void chan_writer_init(chan_writer *w, uv_stream_t *stream, chan_on_write_error_cb on_error, void *data)
{
    memset(w, 0, sizeof *w);
    w->stream = stream;
    w->on_error = on_error;
    w->data = data;
}

void chan_writer_reset(chan_writer *w)
{
    w->stopped = 0;
}

static void drop_held(chan_writer *w)
{
    for (int i = 0; i < w->nheld; i++)
        free(w->held[i]);
    w->nheld = 0;
}

void chan_writer_stop(chan_writer *w)
{
    w->stopped = 1;
    drop_held(w);
}

static void on_write(uv_write_t *req, int status)
{
    chan_wreq *q = (chan_wreq *)req;
    chan_writer *w = q->w;
    for (int i = 0; i < q->nframes; i++)
        free(q->frames[i]);
    free(q);
    /* Cancelled: the owner closed the stream, and knows why. */
    if (status < 0 && status != UV_ECANCELED)
        w->on_error(w, status);
}

/* Writes n frames (owned, n <= CHAN_WRITER_HOLD): one uv_try_write, then one uv_write for the rest. */
static void write_frames(chan_writer *w, uint8_t **frames, const size_t *lens, int n)
{
    uv_buf_t b[CHAN_WRITER_HOLD] = {{0}};
    for (int i = 0; i < n; i++)
        b[i] = uv_buf_init((char *)frames[i], (unsigned)lens[i]);
    int rc = uv_try_write(w->stream, b, (unsigned)n);
    int first = 0;
    if (rc >= 0) {
        size_t done = (size_t)rc;
        while (first < n && done >= lens[first]) { /* written whole */
            done -= lens[first];
            free(frames[first++]);
        }
        if (first == n)
            return;
        /* Only the rest is queued, from the same buffers: no copy. */
        b[first] = uv_buf_init((char *)frames[first] + done, (unsigned)(lens[first] - done));
    } else if (rc != UV_EAGAIN) {
        for (int i = 0; i < n; i++)
            free(frames[i]);
        w->on_error(w, rc);
        return;
    }
    chan_wreq *q = xmalloc(sizeof *q);
    q->w = w;
    q->nframes = n - first;
    memcpy(q->frames, frames + first, (size_t)q->nframes * sizeof *frames);
    int err = uv_write(&q->req, w->stream, b + first, (unsigned)q->nframes, on_write);
    if (err < 0) {
        for (int i = 0; i < q->nframes; i++)
            free(q->frames[i]);
        free(q);
        w->on_error(w, err);
    }
}

void chan_writer_flush(chan_writer *w)
{
    int n = w->nheld;
    if (!n)
        return;
    w->nheld = 0;
    write_frames(w, w->held, w->held_len, n);
}

int chan_writer_holding(const chan_writer *w)
{
    return w->nheld > 0;
}

int chan_writer_hold(chan_writer *w, uint8_t *frame, size_t len)
{
    if (w->stopped) {
        free(frame);
        return 0;
    }
    if (w->nheld == CHAN_WRITER_HOLD)
        chan_writer_flush(w);
    w->held[w->nheld] = frame;
    w->held_len[w->nheld] = len;
    return w->nheld++ == 0;
}

void chan_writer_write(chan_writer *w, uint8_t *frame, size_t len)
{
    if (w->stopped) {
        free(frame);
        return;
    }
    if (w->nheld) { /* after the held ones, in the same system call */
        if (chan_writer_hold(w, frame, len))
            return; /* cannot happen: it held some */
        chan_writer_flush(w);
        return;
    }
    write_frames(w, &frame, &len, 1);
}

void chan_writer_send(chan_writer *w, uint8_t type, uint64_t id, const void *body, size_t len)
{
    uint8_t *frame = xmalloc(PROTO_HEADER_SIZE + len);
    proto_header_encode(frame, type, id, (uint32_t)len);
    if (len)
        memcpy(frame + PROTO_HEADER_SIZE, body, len);
    chan_writer_write(w, frame, PROTO_HEADER_SIZE + len);
}
