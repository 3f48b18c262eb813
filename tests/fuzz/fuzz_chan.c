/*
 * fuzz_chan — the daemon's frame reader (chan.c) fed as a socket would feed
 * it: the input's first bytes pick the sizes of successive reads, the rest
 * is the stream. Every frame delivered has exactly the body its header
 * claims (ASan checks every byte is there), memory for a body never runs
 * ahead of the bytes received by more than the first 64 KiB or twice what
 * was received, and a broken stream is reported once and resumes only
 * after a reset.
 */
#include "chan.h"
#include "fuzz.h"

#include <stdint.h>

static size_t frames, errors;

static int on_frame(chan_reader *r, const proto_header *h, uint8_t *body)
{
    (void)r;
    fuzz_touch(body, h->length);
    if ((h->length == 0) != (body == NULL))
        abort();
    free(body);
    frames++;
    return h->type == PROTO_PONG && (h->id & 1); /* sometimes pause, as a killed worker's reader does */
}

static void on_error(chan_reader *r, int err, const char *what)
{
    (void)r;
    (void)err;
    fuzz_check_error(what);
    errors++;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4)
        return 0;
    const uint8_t *sizes = data;
    data += 4;
    size -= 4;
    chan_reader r;
    chan_reader_init(&r, sizes[0] & 1 ? 4096 : PROTO_MAX_BODY, on_frame, on_error, NULL);
    size_t pos = 0, fed = 0, step = 0;
    while (pos < size) {
        char *base;
        size_t room;
        chan_reader_buffer(&r, &base, &room);
        if (room == 0)
            abort();
        size_t want = 1 + (size_t)sizes[1 + step++ % 3] * (sizes[0] >> 1 & 7 ? 1 : 997);
        size_t n = want < room ? want : room;
        if (n > size - pos)
            n = size - pos;
        memcpy(base, data + pos, n);
        pos += n;
        fed += n;
        chan_reader_consume(&r, base, n);
        if (r.body_cap > 65536 && r.body_cap > 2 * fed)
            abort(); /* allocated for a claim, not for data */
        if (r.stopped && (sizes[0] & 0x80))
            chan_reader_reset(&r);
    }
    chan_reader_close(&r);
    return 0;
}
