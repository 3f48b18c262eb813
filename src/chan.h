/*
 * chan — the daemon's side of one worker-protocol byte stream: the frame
 * reader and the frame writer. Both report upward through callbacks
 * (on_frame, on_error) and never decide what a frame or a failure means:
 * that is the owner's (inst.c). Mirrors sdk/c/corral_chan.c.
 *
 * Reader: bytes go in as they are read from the socket; whole frames come
 * out through on_frame, a broken stream through on_error. No I/O and no
 * libuv in the reader: the owner reads (into the buffer chan_reader_buffer
 * names) and reports what it read (chan_reader_consume), so the reader can
 * be fed by a fuzzer as well as by a socket.
 *
 * Reader memory: a frame's body is allocated as its bytes arrive, never at
 * the size its header claims: a header that claims 1 GiB and sends nothing
 * costs 64 KiB. Small frames are parsed out of a 64 KiB staging buffer;
 * the body of a large one is read straight into its own buffer.
 *
 * Writer: whole frames go out over a libuv stream the owner opened (and
 * closes). Each frame is a malloc'ed buffer the writer owns from the call
 * on: uv_try_write first (no request, no copy in the common case), then one
 * queued uv_write for whatever the socket did not take, from the same
 * buffers; they are freed once written. Frames may also be held
 * (chan_writer_hold) and written together by chan_writer_flush, several
 * in one system call (writev); a frame written directly goes after the
 * held ones, so order is always kept. A failed write is reported through
 * on_error, once per failed system call.
 *
 * Loop thread only.
 */
#ifndef CORRAL_CHAN_H
#define CORRAL_CHAN_H

#include "proto.h"

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct chan_reader chan_reader;

/*
 * A whole frame: body is malloc'ed (NULL for an empty body) and now the
 * callee's. Returns 0 to go on, or 1 to stop parsing what was read so far:
 * the rest stays staged and is parsed at the next chan_reader_consume.
 */
typedef int (*chan_on_frame_cb)(chan_reader *r, const proto_header *h, uint8_t *body);
/*
 * The stream is broken: err is -EPROTO (a bad header: wrong version, unknown
 * type or flags), -EMSGSIZE (a frame over max_body) or -ENOMEM (no memory
 * for a body); what says it in words. Nothing more is parsed until
 * chan_reader_reset.
 */
typedef void (*chan_on_error_cb)(chan_reader *r, int err, const char *what);

struct chan_reader {
    /* public */
    void *data;
    /* read-only */
    uint32_t max_body;
    chan_on_frame_cb on_frame;
    chan_on_error_cb on_error;
    /* private */
    uint8_t *stage; /* staging buffer, STAGE bytes once allocated */
    size_t stage_len;
    proto_header cur; /* the frame being read, while have_header */
    int have_header;
    uint8_t *body;
    size_t body_got, body_cap;
    int stopped;
};

void chan_reader_init(chan_reader *r, uint32_t max_body, chan_on_frame_cb on_frame, chan_on_error_cb on_error,
                      void *data);
/* Forgets any partial frame (a new process starts on a clean stream); buffers are kept. */
void chan_reader_reset(chan_reader *r);
/* Frees the buffers; the reader may be initialised again. */
void chan_reader_close(chan_reader *r);
/* Stops parsing, from inside a callback too: the rest of what was read is dropped until a reset. */
void chan_reader_stop(chan_reader *r);

/*
 * Where the next read should go: *len > 0 bytes at *base. When a large
 * body cannot grow, on_error reports -ENOMEM and the buffer named is
 * scratch space whose bytes are dropped.
 */
void chan_reader_buffer(chan_reader *r, char **base, size_t *len);
/* n bytes were read into the buffer last named by chan_reader_buffer. */
void chan_reader_consume(chan_reader *r, const char *base, size_t n);

/* ---- writer ---- */

typedef struct chan_writer chan_writer;

/* The most frames chan_writer_hold keeps before it writes them itself. */
#define CHAN_WRITER_HOLD 16

/*
 * A frame could not be written: err is the negative libuv error of
 * uv_try_write or uv_write (UV_EPIPE when the peer is gone). The frame was
 * freed; later frames are still attempted.
 */
typedef void (*chan_on_write_error_cb)(chan_writer *w, int err);

struct chan_writer {
    /* public */
    void *data;
    /* read-only */
    uv_stream_t *stream; /* not owned: the owner opens and closes it */
    chan_on_write_error_cb on_error;
    /* private */
    int stopped;
    int nheld;
    uint8_t *held[CHAN_WRITER_HOLD];
    size_t held_len[CHAN_WRITER_HOLD];
};

void chan_writer_init(chan_writer *w, uv_stream_t *stream, chan_on_write_error_cb on_error, void *data);
/* Takes frames again after chan_writer_stop (a new process on the same stream). */
void chan_writer_reset(chan_writer *w);
/*
 * Drops every later frame and the held ones (freed, not written, no error):
 * the peer is gone. Writes already queued complete, or are cancelled when
 * the stream closes.
 */
void chan_writer_stop(chan_writer *w);

/* Writes a whole frame of len bytes (after any held ones): frame is malloc'ed and the writer's from now on. */
void chan_writer_write(chan_writer *w, uint8_t *frame, size_t len);
/*
 * Holds a whole frame to go out with others at the next chan_writer_flush
 * (or at once, with them, when CHAN_WRITER_HOLD are held). Returns 1 when
 * the writer held nothing before: the owner must see that it is flushed
 * before the loop next waits.
 */
int chan_writer_hold(chan_writer *w, uint8_t *frame, size_t len);
/* Writes every held frame, with one system call when the socket takes them. */
void chan_writer_flush(chan_writer *w);
/* Whether frames are held. */
int chan_writer_holding(const chan_writer *w);
/* Writes a frame with a small body (copied; NULL when len is 0). */
void chan_writer_send(chan_writer *w, uint8_t type, uint64_t id, const void *body, size_t len);

#endif
