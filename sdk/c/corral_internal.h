/*
 * corral_internal.h — what the C SDK's modules share and users never see:
 * the socket channel (corral_chan.c), request parsing (corral_request.c),
 * response encoding (corral_response.c), the load context (corral_ctx.c), the
 * shared-memory regions (corral_shm.c) and small helpers (corral_util.c).
 * corral_worker.c ties them together.
 * Internal names use the `corral__` prefix.
 */
#ifndef CORRAL_INTERNAL_H
#define CORRAL_INTERNAL_H

#include "corral_worker.h"
#include "dtype.h"
#include "proto.h"

#include <pthread.h>
#include <stdarg.h>
#include <sys/uio.h>

/* Tensor data and generate bodies in received frames start on this boundary. */
#define CORRAL__ALIGN 64

/* Longest error message sent; longer ones are cut (the daemon logs them). */
#define CORRAL__MAX_MESSAGE 16384

/* ---- corral_util.c ---- */

/* printf into a new string, cut at CORRAL__MAX_MESSAGE and made valid UTF-8
 * (jansson refuses anything else). NULL only when out of memory. */
char *corral__vformat(const char *fmt, va_list ap);
/* Writes a fatal message to stderr and ends the process without unwinding. */
_Noreturn void corral__die(int status, const char *fmt, ...) CORRAL_PRINTF(2, 3);
/* The daemon's enum for a corral_dtype: the two number the datatypes alike (checked in corral_util.c). */
static inline dtype corral__dtype(corral_dtype t)
{
    return (dtype)t;
}
/* {"name", "datatype", "shape"[, "size"]} for metadata and result meta. size < 0 omits it. */
json_t *corral__tensor_json(const char *name, corral_dtype dtype, const int64_t *shape, int ndim, int64_t size);

/* ---- corral_shm.c: shared memory for large tensors ---- */

/* Tensor data at least this large goes through shared memory (the daemon's SHM_MIN_BYTES). */
#define CORRAL__SHM_MIN (1u << 20)

typedef struct corral__region {
    int fd; /* -1: none */
    uint8_t *addr; /* the current mapping, len bytes */
    size_t len;
    pthread_mutex_t mu;
} corral__region;

/* Opens the input and output regions named by CORRAL_SHM_FDS: 0, or a negative errno (then both fd are -1). */
int corral__regions_open(corral__region r[2]);
void corral__regions_close(corral__region r[2]);
/* The mapped region, at least need bytes of it; NULL when the file is shorter or cannot be mapped. */
uint8_t *corral__region_view(corral__region *r, size_t need);
/* The same, growing the file first (to a power of two) when it is shorter than need. */
uint8_t *corral__region_grow(corral__region *r, size_t need);

/* ---- corral_chan.c: the protocol socket ---- */

typedef struct corral__frame {
    proto_header h;
    void *alloc;   /* owned; free() */
    uint8_t *body; /* h.length bytes inside alloc; NULL when empty */
} corral__frame;

/*
 * Reading belongs to the reader thread alone. Writing is shared: a writer
 * claims the socket (writing = 1) for a whole frame so frames never
 * interleave. PONGs asked for while another thread writes are parked in
 * pending_pongs and sent by that writer when its frame is done, so the
 * reader thread never waits behind a large result.
 */
typedef struct corral__chan {
    int fd;
    int wake_rd, wake_wr; /* self-pipe: makes a blocked reader return -ECANCELED */

    uint8_t *rbuf;
    size_t rstart, rend;
    char what[160]; /* detail of the last bad header */

    pthread_mutex_t wmu;
    pthread_cond_t wcond;
    int writing;
    int peer_may_close; /* after SHUTDOWN: a closed peer drops frames instead of exiting */
    int peer_closed;    /* touched only by the thread holding writing */
    uint64_t pending_pongs[64];
    size_t npending;
} corral__chan;

/* Takes fd over (closed by corral__chan_close) only when it returns 0. */
int corral__chan_init(corral__chan *ch, int fd);
void corral__chan_close(corral__chan *ch);
/*
 * Reads the next frame. Returns 0; 1 on end-of-file; -ECANCELED when woken by
 * corral__chan_wake; -EPROTO or -EMSGSIZE for a bad header (*what says why);
 * -ENOMEM when the body could not be allocated (it was read and dropped; the
 * header is valid); another negative errno when reading failed.
 */
int corral__chan_read(corral__chan *ch, corral__frame *f, const char **what);
/*
 * Sends one frame whose body is the concatenation of iov (at most 2^30
 * bytes; the caller checks). A peer that is gone ends the process (status 0)
 * unless corral__chan_peer_may_close was called; any other failure ends it
 * with CORRAL_EXIT_PROTOCOL.
 */
void corral__chan_send(corral__chan *ch, uint8_t type, uint64_t id, const struct iovec *iov, int iovcnt);
/* The same with header flags (PROTO_FLAG_*). */
void corral__chan_send_flags(corral__chan *ch, uint8_t type, uint16_t flags, uint64_t id, const struct iovec *iov,
                             int iovcnt);
/* Sends obj as a JSON frame body. */
void corral__chan_send_json(corral__chan *ch, uint8_t type, uint64_t id, const json_t *obj);
void corral__chan_pong(corral__chan *ch, uint64_t nonce);
void corral__chan_wake(corral__chan *ch);
void corral__chan_peer_may_close(corral__chan *ch);

/* ---- corral_stream.c: requests in flight, their CANCEL and CREDIT, streamed answers ---- */

/* CANCELs remembered for requests not read yet (the health socket may overtake the protocol socket). */
#define CORRAL__EARLY_CANCELS 64

/*
 * Every request from the moment the reader accepts it until just before its
 * final frame is written. mu guards the table and each request's control
 * fields (cancelled, on_cancel, unacked); cond wakes a stream waiting for
 * CREDIT, or cancelled while it waits.
 */
typedef struct corral__flight {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    corral__chan *chan; /* where CHUNK frames go */
    uint32_t window;    /* bytes of one stream that may be sent and not yet credited */
    corral_request **reqs;
    size_t n, cap;
    uint64_t highest; /* highest request id accepted */
    uint64_t early[CORRAL__EARLY_CANCELS];
    size_t nearly;
} corral__flight;

void corral__flight_init(corral__flight *f, corral__chan *chan);
void corral__flight_destroy(corral__flight *f);
/* Adds req (taking any CANCEL that came ahead of it): 0, -EEXIST for an id in flight, -ENOMEM. */
int corral__flight_add(corral__flight *f, corral_request *req);
/* Removes the request with this id, if present: it is answered, so no control reaches it any more. */
void corral__flight_remove(corral__flight *f, uint64_t id);
/* Applies CANCEL or CREDIT: 0, or -EPROTO when the frame is malformed (*what says why). */
int corral__flight_control(corral__flight *f, const corral__frame *fr, const char **what);

/* Attaches infer_batch's requests to their batch while it runs, so that a CANCEL reaches their
 * on_cancel too; views NULL detaches them. */
void corral__flight_set_views(corral__flight *f, corral_request *batch, corral_request **views, size_t n);

/* ---- corral_request.c ---- */

/* One request of a BATCH, from its meta's `batch` list. */
/* The session a request names (corral_session.c). Everything owned. */
typedef struct corral__session {
    char *id;
    int exists;
    char *content_type; /* NULL when it does not exist */
    json_t *json;       /* a JSON session's value once parsed (or as the general path read it); NULL for bytes */
    uint8_t *bytes;     /* a bytes session's content, or a JSON one's text (NUL-terminated) */
    size_t len;
    int text_unparsed;  /* bytes hold JSON text not parsed yet (the fast path) */
} corral__session;

/* Reads a meta's "session" (NULL: none, *out NULL). Returns 0, -EPROTO with why, or -ENOMEM. */
int corral__session_parse(const json_t *raw, corral__session **out, const char **why);
/*
 * The fast path: when meta (meta_len bytes, writable) begins with the
 * session member in the daemon's form, takes it out (*out; the meta is
 * rewritten without it and *meta_len shortened) and returns 1; 0 when it
 * does not (nothing changed); -EPROTO for bad base64, -ENOMEM.
 */
int corral__session_cut(char *meta, size_t *meta_len, corral__session **out);
void corral__session_free(corral__session *s);

typedef struct corral__batch_entry {
    uint64_t id;           /* the daemon's id for the request (never the client's) */
    const char *client_id; /* owned by the batch's meta */
    int64_t rows;          /* its rows of every input */
    json_t *parameters;    /* owned reference */
    const json_t *wanted;  /* owned by the batch's meta: its output names, or NULL for all */
    corral__session *session; /* owned; NULL: it names none */
} corral__batch_entry;

struct corral_request {
    uint64_t frame_id;
    uint8_t type;     /* PROTO_INFER, PROTO_BATCH or PROTO_GENERATE */
    uint16_t flags;   /* the frame's PROTO_FLAG_* */
    corral__region *region; /* the input region, when the worker has one; not owned */
    void *alloc;      /* owned: the frame body's allocation */
    const uint8_t *body; /* the frame body, inside alloc */
    size_t body_len;
    const uint8_t *data; /* after the meta: tensor data or generate body (inside alloc) */
    size_t data_len;

    json_t *meta;           /* owned: parsed meta */
    json_t *parameters;     /* owned reference */
    const char *client_id;  /* owned by meta */
    const json_t *wanted;   /* owned by meta: requested output names, or NULL for all */
    const json_t *sequence; /* owned by meta: {"id", "start", "end"}, or NULL: no sequence */
    const char *content_type; /* owned by meta, or a literal */

    corral_tensor *inputs; /* owned */
    size_t ninputs;
    void **copies; /* owned: realigned copies of input data, NULL where data points into alloc */

    json_t *body_json; /* owned: lazily parsed generate body */
    int body_json_parsed;

    int stream; /* GENERATE meta "stream": true */

    corral__session *session; /* the session it names; NULL: none. Owned unless session_borrowed (a batch view's) */
    int session_borrowed;

    /* A BATCH: its requests in batch order (nbatch >= 1 once parsed). */
    corral__batch_entry *batch; /* owned */
    size_t nbatch;
    /* One of infer_batch's requests (a view): the batch it is part of and
     * whose cancellation is its own (not owned; outlives the view), and its rows. */
    const corral_request *batch_of;
    int64_t view_rows;
    /* The batch's views while infer_batch runs: CANCEL runs their on_cancel. Guarded by flight->mu. */
    corral_request **views; /* not owned */
    size_t nviews;

    /* Control, guarded by flight->mu (cancelled is also read without it, atomically). */
    corral__flight *flight; /* set while in flight */
    int cancelled;
    void (*on_cancel)(void *);
    void *on_cancel_arg;
    size_t unacked; /* CHUNK bytes sent and not yet credited */

    char what[256]; /* why parsing failed, for -EPROTO */
    corral_request *next; /* queue link; the queue owns queued requests */
};

/* Takes over f's allocation; the meta is not parsed yet. NULL when out of memory (f is left intact). */
corral_request *corral__request_new(corral__frame *f);
/* With PROTO_FLAG_SHM_DATA the tensors are in this region (the worker's input region). */
void corral__request_set_region(corral_request *req, corral__region *in);
void corral__request_free(corral_request *req);
/*
 * Parses the meta and, for INFER, the tensors. Returns 0; -EPROTO when the
 * body is malformed (*what says why; the daemon broke the protocol); or
 * -EINVAL after recording a 400 in res (the request's content is at fault).
 */
int corral__request_parse(corral_request *req, corral_response *res, const char **what);
/*
 * infer_batch's requests for a parsed BATCH: nbatch views whose inputs
 * point at their own rows of the batch's (no copy). They borrow the batch's
 * memory, so they go before it does. NULL when out of memory.
 */
corral_request **corral__batch_views(const corral_request *batch);
void corral__batch_views_free(corral_request **views, size_t n);

/* ---- corral_response.c ---- */

typedef struct corral__output {
    char *name; /* owned */
    corral_dtype dtype;
    int ndim;
    int64_t shape[CORRAL_MAX_DIMS];
    const void *data; /* borrowed, or owned via owned */
    size_t size;
    void *owned; /* freed with the response */
} corral__output;

struct corral_response {
    uint8_t type; /* PROTO_INFER, PROTO_BATCH or PROTO_GENERATE: what it answers */
    corral__output *outputs;
    size_t noutputs, cap;

    char *content_type; /* owned */
    const void *body;
    size_t body_len;
    void *body_owned;

    const corral_request *req; /* what it answers; NULL for an error the SDK makes up */
    int stream_kind;           /* CORRAL__STREAM_*: what corral_stream_* sent so far */
    int streamed;              /* chunks went out as CHUNK frames (else they are collected in body) */
    size_t collect_cap;        /* bytes allocated at body_owned while chunks are collected */
    char *stream_type;         /* owned: a byte stream's content type */

    json_t *session_update; /* owned: the update of the request's session, in its wire form; NULL: none */

    int status; /* 0 until an error is recorded */
    char *error_type;    /* owned */
    char *error_message; /* owned */
};

enum { CORRAL__STREAM_NONE, CORRAL__STREAM_BYTES, CORRAL__STREAM_EVENTS };

/* A frame ready to send: iov[0] is prefix (the meta length), iov[1] the meta. */
typedef struct corral__encoded {
    uint8_t type;
    uint8_t prefix[4];
    char *meta;        /* owned */
    struct iovec *iov; /* small, or owned when more pieces are needed */
    int iovcnt;
    struct iovec small[3];
} corral__encoded;

/* Adds res's session update to meta (as "session"); 0 or -ENOMEM. */
int corral__session_update_into(const corral_response *res, json_t *meta);

void corral__response_init(corral_response *res, uint8_t request_type);
void corral__response_close(corral_response *res);
/* Records an error without formatting (message copied). */
void corral__response_set_error(corral_response *res, int status, const char *type, const char *message);
/*
 * Encodes the reply to req: INFER_RESULT, GENERATE_RESULT, END (a stream that
 * went out as CHUNKs and ended well) or ERROR. A result
 * that cannot be encoded (too large, out of memory) becomes an ERROR 500.
 * res must stay alive until the frame is sent (iov borrows its data).
 */
void corral__response_encode(corral_response *res, const corral_request *req, corral__encoded *enc);
/*
 * Encodes the reply to a BATCH answered by infer_batch: an INFER_RESULT
 * with one entry per request ({"results": [...]}: its outputs, or its
 * error), or ERROR when batch holds an error (or the results cannot be
 * encoded: the error is then recorded in batch). Each res[i]->req is
 * request i's view; every res[i] must stay alive until the frame is sent.
 */
void corral__response_encode_batch(corral_response *batch, corral_response *const *res, size_t n,
                                   corral__encoded *enc);
void corral__encoded_free(corral__encoded *enc);

/* ---- corral_ctx.c ---- */

struct corral_ctx {
    char *model_name; /* owned */
    char *model_dir;  /* owned */
    char *device;     /* owned */
    char *samples_dir;         /* owned; NULL: the daemon has none */
    char *external_models_dir; /* owned; NULL: none */
    char *variant_dir;         /* owned; NULL: the model is not a variant */
    int instance_id;
    int concurrency;
    json_t *parameters; /* owned */
    json_t *inputs;     /* owned: metadata arrays */
    json_t *outputs;
    char *error_type;    /* owned; set by corral_ctx_error */
    char *error_message; /* owned */
};

/* Builds the context from the LOAD message, falling back to the CORRAL_* environment. */
corral_ctx *corral__ctx_new(const json_t *load);
void corral__ctx_free(corral_ctx *ctx);
/* READY body: {"inputs": [...], "outputs": [...]} as declared, or {}. New reference. */
json_t *corral__ctx_ready_body(const corral_ctx *ctx);

#endif
