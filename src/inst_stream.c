/*
 * inst_stream — streamed answers and cancellation on an instance: CHUNK
 * frames checked and handed to the job's owner, CREDIT sent back as the
 * owner passes chunks on, CANCEL and the grace a worker has to give a
 * request up (docs/worker-protocol.md, "Streams" and "Cancellation").
 * Shares inst_internal.h with inst.c.
 */
#include "inst.h"
#include "inst_internal.h"

#include "clock.h"

#include <assert.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

job *inst_find_inflight(inst *in, uint64_t id)
{
    for (job *j = in->inflight_head; j; j = j->next)
        if (j->id == id)
            return j;
    return NULL;
}

int inst_can_cancel(const inst *in)
{
    return in->cur.streams && !in->exited;
}

int inst_can_batch(const inst *in)
{
    return in->cur.batches && !in->exited;
}

void inst_sequence_end(inst *in, const uint8_t *body, size_t len)
{
    if (in->cur.sequences && !in->exited && in->state == INST_READY)
        chan_writer_send(&in->wr, PROTO_SEQUENCE_END, 0, body, len); /* behind the sequence's requests */
}

/* CANCEL and CREDIT go where PING goes: the worker reads its health socket on a thread that never runs model code. */
static chan_writer *control_writer(inst *in)
{
    return in->cur.health_chan ? &in->hwr : &in->wr;
}

/* A cancelled request whose worker has not answered within the grace: the worker is hung. */
static void cancel_check(uv_timer_t *t)
{
    inst *in = t->data;
    uint64_t now = now_ms();
    int waiting = 0;
    for (job *j = in->inflight_head; j; j = j->next) {
        if (!j->cancelled)
            continue;
        if (now - j->cancel_ms >= INST_CANCEL_GRACE_MS) {
            uv_timer_stop(t);
            in->ev->on_cancel_ignored(in, j); /* the owner decides; it kills the worker */
            return;
        }
        waiting = 1;
    }
    if (!waiting)
        uv_timer_stop(t);
}

void inst_cancel(inst *in, job *j)
{
    assert(j->inst == in);
    if (j->cancelled || !inst_can_cancel(in))
        return;
    j->cancelled = 1;
    j->cancel_ms = now_ms();
    chan_writer_send(control_writer(in), PROTO_CANCEL, j->id, NULL, 0);
    if (!uv_is_active((uv_handle_t *)&in->cancel_timer))
        uv_timer_start(&in->cancel_timer, cancel_check, INST_CANCEL_GRACE_MS / 8, INST_CANCEL_GRACE_MS / 8);
}

void inst_credit(inst *in, job *j, uint32_t bytes)
{
    assert(j->inst == in && bytes <= j->unacked - j->to_credit);
    j->to_credit += bytes;
    /* In batches, and at once when the daemon holds nothing more of the stream (the worker may be waiting). */
    if (j->to_credit < PROTO_STREAM_WINDOW / 4 && j->to_credit < j->unacked)
        return;
    uint8_t n[4];
    proto_put_u32(n, j->to_credit);
    chan_writer_send(control_writer(in), PROTO_CREDIT, j->id, n, sizeof n);
    j->unacked -= j->to_credit;
    j->to_credit = 0;
}

/*
 * The first chunk's meta says what the stream is: {"events": true} (each
 * chunk one line of JSON) or {"content_type": "audio/wav"}; later chunks
 * carry none. Returns 0, or -1 after a protocol error.
 */
static int chunk_kind(inst *in, job *j, const char *meta, size_t meta_len, job_chunk *c)
{
    if (j->streaming) {
        if (meta_len) {
            inst_protocol_error(in, "sent a CHUNK with meta after the first of request %llu", (unsigned long long)j->id);
            return -1;
        }
        return 0;
    }
    json_t *m = json_loadb(meta, meta_len, 0, NULL);
    json_t *ct = json_object_get(m, "content_type");
    c->first = 1;
    c->events = json_is_true(json_object_get(m, "events"));
    int ok = json_is_object(m) && (c->events || (json_is_string(ct) && json_string_length(ct) > 0 &&
                                                 json_string_length(ct) < sizeof c->content_type &&
                                                 !strpbrk(json_string_value(ct), "\r\n")));
    if (ok && !c->events)
        memcpy(c->content_type, json_string_value(ct), json_string_length(ct) + 1);
    json_decref(m);
    if (!ok)
        inst_protocol_error(in, "began the stream of request %llu with a CHUNK whose meta names neither events nor a "
                                "content type",
                            (unsigned long long)j->id);
    return ok ? 0 : -1;
}

/* An event is one line of JSON: SSE and NDJSON framing depend on it. */
static int event_valid(const uint8_t *data, size_t len)
{
    if (!len || memchr(data, '\n', len) || memchr(data, '\r', len))
        return 0;
    json_t *v = json_loadb((const char *)data, len, JSON_DECODE_ANY, NULL);
    json_decref(v);
    return v != NULL;
}

void inst_on_chunk(inst *in, const proto_header *h, uint8_t *body)
{
    job *j = inst_find_inflight(in, h->id);
    if (!j) {
        if (!(in->cur.abandoned && h->id <= in->cur.abandoned_max_id))
            inst_protocol_error(in, "CHUNK for unknown request id %llu", (unsigned long long)h->id);
        free(body);
        return;
    }
    if (j->kind != PROTO_GENERATE || !j->stream || !in->cur.streams) {
        inst_protocol_error(in, "sent a CHUNK for request %llu, %s", (unsigned long long)h->id,
                            in->cur.streams ? "which is not streamed"
                                            : "though its HELLO did not say \"stream\": true");
        free(body);
        return;
    }
    uint32_t cost = PROTO_HEADER_SIZE + h->length;
    if (j->unacked && j->unacked + (uint64_t)cost > PROTO_STREAM_WINDOW) {
        inst_protocol_error(in, "overran the %u-byte window of request %llu's stream", PROTO_STREAM_WINDOW,
                            (unsigned long long)h->id);
        free(body);
        return;
    }
    j->unacked += cost;
    const char *meta;
    size_t meta_len;
    job_chunk c = {.body = body, .cost = cost};
    if (proto_split_body(body, h->length, &meta, &meta_len, &c.data, &c.len) < 0) {
        inst_protocol_error(in, "sent a CHUNK whose meta length runs past its body");
        free(body);
        return;
    }
    if (chunk_kind(in, j, meta, meta_len, &c) < 0) {
        free(body);
        return;
    }
    if (c.first)
        j->streaming = 1 + (uint8_t)c.events; /* 1 bytes, 2 events */
    if (j->streaming == 2 && !event_valid(c.data, c.len)) {
        inst_protocol_error(in, "sent an event for request %llu that is not one line of JSON", (unsigned long long)h->id);
        free(body);
        return;
    }
    c.events = j->streaming == 2;
    in->last_busy_ms = now_ms();
    if (j->cancelled || j->answered) {
        free(body);
        inst_credit(in, j, cost); /* nobody reads it: the worker must not wait for the window */
        return;
    }
    if (c.first)
        in->ev->on_stream_start(in, j);
    j->on_chunk(j, &c);
}

