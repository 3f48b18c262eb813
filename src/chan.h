/*
 * chan — the daemon's side of one worker-protocol byte stream: the frame
 * reader. Bytes go in as they are read from the socket; whole frames come
 * out through on_frame, a broken stream through on_error. No I/O and no
 * libuv here: the owner reads (into the buffer chan_reader_buffer names)
 * and reports what it read (chan_reader_consume), so the reader can be fed
 * by a fuzzer as well as by a socket. Mirrors sdk/c/corral_chan.c.
 *
 * Memory: a frame's body is allocated as its bytes arrive, never at the
 * size its header claims: a header that claims 1 GiB and sends nothing
 * costs 64 KiB. Small frames are parsed out of a 64 KiB staging buffer;
 * the body of a large one is read straight into its own buffer.
 * Loop thread only.
 */
#ifndef CORRAL_CHAN_H
#define CORRAL_CHAN_H

#include "proto.h"

#include <stddef.h>
#include <stdint.h>

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

#endif
