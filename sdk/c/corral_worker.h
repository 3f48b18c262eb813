/*
 * corral_worker.h — the corral C SDK: write a model that corral runs with
 * `runtime: exec`.
 *
 * A model is four callbacks (corral_model_ops) handed to corral_run(). The
 * SDK owns everything else: the inherited protocol socket (CORRAL_FD), the
 * HELLO / LOAD / READY start-up, the frame loop, PING/PONG, ERROR replies,
 * streams and their flow control, CANCEL, SHUTDOWN and end-of-file. The protocol is documented in
 * docs/worker-protocol.md; a model author never needs to read it.
 *
 *     static int echo_infer(void *state, const corral_request *req, corral_response *res)
 *     {
 *         const corral_tensor *in = corral_request_input(req, "INPUT0");
 *         if (!in)
 *             return corral_bad_request(res, "INPUT0 is required");
 *         return corral_response_add_output(res, "OUTPUT0", in->dtype, in->shape, in->ndim,
 *                                           in->data, in->size, CORRAL_BORROW);
 *     }
 *     int main(void)
 *     {
 *         static const corral_model_ops ops = {.infer = echo_infer};
 *         return corral_run(&ops);
 *     }
 *
 * Threads. corral_run() starts a health thread that answers PING (and
 * applies CANCEL and CREDIT, so a stream blocked on flow control or a
 * request being cancelled never waits for the model's thread), a reader
 * thread that reads requests, and N worker threads that run infer/generate,
 * where N is the model's `concurrency` (from LOAD; default 1). With N == 1
 * (and a daemon that gives the health socket, as corral does) the reader runs
 * infer/generate itself and no worker thread is started: a request then costs
 * no hand-off between threads. With N > 1 the callbacks run concurrently and
 * must be thread-safe. load and unload run on the thread
 * that called corral_run(), never concurrently with infer/generate. A request
 * and its response belong to the one callback invocation they are passed to.
 *
 * Errors. Functions return 0 (or a pointer) on success and a negative errno
 * value (or NULL) on failure; only corral_log prints, and none exits. A callback
 * returns 0 for success. To reject a request it records an error with
 * corral_bad_request() / corral_response_error() (load: corral_ctx_error())
 * and returns their (negative) result; the SDK sends the ERROR frame. A
 * callback that returns non-zero without recording an error becomes a 500
 * whose message names the returned code; a recorded error is sent even if
 * the callback returns 0. The worker survives every per-request error.
 *
 * Memory. Request data (tensors, body, JSON) is owned by the SDK and valid
 * until the callback returns. Outputs and bodies are attached with a
 * corral_mem mode: CORRAL_BORROW (the caller keeps ownership; the data must
 * stay valid until the callback returns — request memory qualifies, so an
 * echo copies nothing), CORRAL_COPY (the SDK copies now) or CORRAL_TAKE (the
 * SDK takes a malloc()ed block and free()s it once sent — also when the call
 * fails, so error paths need no cleanup).
 *
 * Process exit. corral_run() returns the process exit status: 0 after a
 * graceful SHUTDOWN (unload has run), CORRAL_EXIT_FAILURE when load failed or
 * the environment is wrong. Two events end the process at once with _exit()
 * from the reader thread, because model threads cannot be interrupted:
 * end-of-file on the socket (the daemon is gone; status 0) and a protocol
 * violation by the peer (a message on stderr; status CORRAL_EXIT_PROTOCOL).
 */
#ifndef CORRAL_WORKER_H
#define CORRAL_WORKER_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define CORRAL_API __attribute__((visibility("default")))
#define CORRAL_PRINTF(fmt_index, first_arg) __attribute__((format(printf, fmt_index, first_arg)))
#else
#define CORRAL_API
#define CORRAL_PRINTF(fmt_index, first_arg)
#endif

#define CORRAL_SDK_VERSION "0.1.0"

/* Most dimensions a tensor may have; requests with more are rejected (400). */
#define CORRAL_MAX_DIMS 16

#define CORRAL_STATUS_BAD_REQUEST 400
#define CORRAL_STATUS_INTERNAL 500

#define CORRAL_EXIT_FAILURE 1  /* load failed, or not started by corral */
#define CORRAL_EXIT_PROTOCOL 2 /* the daemon broke the protocol, or the socket failed */

/* KServe v2 datatypes. */
typedef enum corral_dtype {
    CORRAL_INVALID = 0,
    CORRAL_BOOL,
    CORRAL_UINT8,
    CORRAL_UINT16,
    CORRAL_UINT32,
    CORRAL_UINT64,
    CORRAL_INT8,
    CORRAL_INT16,
    CORRAL_INT32,
    CORRAL_INT64,
    CORRAL_FP16,
    CORRAL_FP32,
    CORRAL_FP64,
    CORRAL_BF16,
    CORRAL_BYTES, /* each element: u32 little-endian length, then the bytes */
} corral_dtype;

/* Who owns memory handed to a response; see "Memory" above. */
typedef enum corral_mem {
    CORRAL_BORROW,
    CORRAL_COPY,
    CORRAL_TAKE,
} corral_mem;

typedef struct corral_ctx corral_ctx;           /* the model's load context */
typedef struct corral_request corral_request;   /* one INFER or GENERATE */
typedef struct corral_response corral_response; /* what the callback answers */

/*
 * An input tensor. data is row-major, little-endian, as the v2 binary tensor
 * extension lays it out, and aligned for its datatype: the SDK points into
 * the received frame when the layout allows and copies otherwise.
 */
typedef struct corral_tensor {
    const char *name;
    corral_dtype dtype;
    int ndim;
    int64_t shape[CORRAL_MAX_DIMS];
    const void *data;
    size_t size; /* bytes of data */
} corral_tensor;

/*
 * The model. Every member may be NULL: a model without load keeps a NULL
 * state; a request for a missing infer/generate is answered 400.
 *
 * load     once, before any request; may take minutes (PINGs are answered
 *          meanwhile). Sets *state. On failure it returns non-zero, ideally
 *          after corral_ctx_error(), and must free what it allocated: unload
 *          is not called after a failed load. ctx stays valid until unload
 *          returns, so state may keep it.
 * infer    tensors in (corral_request_input*), tensors out
 *          (corral_response_add_output and friends).
 * generate free-form body in (corral_request_body/json), body out
 *          (corral_response_set_body), or a stream of chunks
 *          (corral_stream_write / corral_stream_event).
 * unload   on SHUTDOWN, after every request in progress has been answered.
 * infer_batch
 *          optional: a batch of n requests (the manifest's `batching`) as n
 *          requests and n responses, request i answered in res[i]; see
 *          "Batches" below. Without it, infer gets a batch as one request.
 *          With it and no infer, infer_batch also gets each request that
 *          was not batched, alone (n = 1).
 */
typedef struct corral_model_ops {
    int (*load)(corral_ctx *ctx, void **state);
    int (*infer)(void *state, const corral_request *req, corral_response *res);
    int (*generate)(void *state, const corral_request *req, corral_response *res);
    void (*unload)(void *state);
    int (*infer_batch)(void *state, const corral_request *const *reqs, corral_response *const *res, size_t n);
    /*
     * Optional: the daemon released one of the model's Triton sequences
     * itself (reason "idle": no request of it for max_sequence_idle; see
     * corral_request_sequence): free what is kept for it. sequence_id is
     * the JSON integer or string the requests carried (owned by the SDK,
     * valid during the call). Called on the SDK's reader thread after the
     * sequence's last request returned, so it may run beside requests of
     * other sequences. Set, it makes the HELLO ask for these calls.
     */
    void (*end_sequence)(void *state, const json_t *sequence_id, const char *reason);
} corral_model_ops;

/*
 * Runs the worker: reads CORRAL_FD (and CORRAL_PROTOCOL) from the
 * environment, sends HELLO, loads the model on LOAD, answers READY and serves
 * requests until SHUTDOWN. Requests received before SHUTDOWN are still
 * answered; later ones get ERROR 503 "ShuttingDown"; then unload runs.
 * Returns the exit status for main() to return. Call it once per process.
 */
CORRAL_API int corral_run(const corral_model_ops *ops);

/* ---- load context ------------------------------------------------------ */

CORRAL_API const char *corral_ctx_model_name(const corral_ctx *ctx);
CORRAL_API const char *corral_ctx_model_dir(const corral_ctx *ctx); /* absolute; also the cwd */
/*
 * The daemon's samples directory (--samples; $CORRAL_SAMPLES_DIR): speaker
 * samples and other shared inputs, to read and not to write. Absolute; NULL
 * when the daemon has none. Owned by ctx.
 */
CORRAL_API const char *corral_ctx_samples_dir(const corral_ctx *ctx);
/*
 * The daemon's external models directory (--external-models;
 * $CORRAL_EXTERNAL_MODELS_DIR). Absolute; NULL when the daemon has none. A
 * model that fetches its own weights writes them into a directory of its
 * own there, which the next rescan links into the repository (docs/sdk.md).
 * Owned by ctx.
 */
CORRAL_API const char *corral_ctx_external_models_dir(const corral_ctx *ctx);
/*
 * A variant's own directory ($CORRAL_VARIANT_DIR; docs/repository.md,
 * "Variants"): its model.yaml and extra files, while corral_ctx_model_dir
 * is the base's, where the code runs. Absolute; NULL when the model is not
 * a variant (or is created at run time from one that is not). Owned by ctx.
 */
CORRAL_API const char *corral_ctx_variant_dir(const corral_ctx *ctx);
CORRAL_API int corral_ctx_instance_id(const corral_ctx *ctx);
CORRAL_API const char *corral_ctx_device(const corral_ctx *ctx); /* "cpu" unless told */
CORRAL_API int corral_ctx_concurrency(const corral_ctx *ctx);

/* The manifest's `parameters` map (an object, possibly empty; owned by ctx). */
CORRAL_API const json_t *corral_ctx_parameters(const corral_ctx *ctx);
/* Shorthands for corral_param_*(corral_ctx_parameters(ctx), key, def). */
CORRAL_API const char *corral_ctx_param_string(const corral_ctx *ctx, const char *key, const char *def);
CORRAL_API int64_t corral_ctx_param_int(const corral_ctx *ctx, const char *key, int64_t def);
CORRAL_API double corral_ctx_param_double(const corral_ctx *ctx, const char *key, double def);
CORRAL_API int corral_ctx_param_bool(const corral_ctx *ctx, const char *key, int def);

/*
 * Declares an input or output for the model metadata sent with READY (used
 * when the manifest declares none). Use -1 for a variable dimension. The
 * daemon checks requests against them (docs/api.md, "Input checks"): an
 * input declared with corral_ctx_add_input is required, one declared with
 * corral_ctx_add_optional_input may be left out (Triton's `optional`).
 * Returns 0, -EINVAL or -ENOMEM.
 */
CORRAL_API int corral_ctx_add_input(corral_ctx *ctx, const char *name, corral_dtype dtype, const int64_t *shape,
                                    int ndim);
CORRAL_API int corral_ctx_add_optional_input(corral_ctx *ctx, const char *name, corral_dtype dtype,
                                             const int64_t *shape, int ndim);
CORRAL_API int corral_ctx_add_output(corral_ctx *ctx, const char *name, corral_dtype dtype, const int64_t *shape,
                                     int ndim);

/* Records why load failed (sent as ERROR id 0). Returns -EIO so load can `return corral_ctx_error(...)`. */
CORRAL_API int corral_ctx_error(corral_ctx *ctx, const char *type, const char *fmt, ...) CORRAL_PRINTF(3, 4);

/* ---- parameters (any JSON object: ctx or request parameters) ----------- */

/*
 * Look up key in obj. A missing key, or a value of the wrong kind, gives def.
 * Numbers written as strings ("175") are accepted by the numeric getters,
 * since manifests often quote them; bool accepts true/false, 0/1 and
 * "true"/"false"/"yes"/"no". The returned string is owned by obj.
 */
CORRAL_API const char *corral_param_string(const json_t *obj, const char *key, const char *def);
CORRAL_API int64_t corral_param_int(const json_t *obj, const char *key, int64_t def);
CORRAL_API double corral_param_double(const json_t *obj, const char *key, double def);
CORRAL_API int corral_param_bool(const json_t *obj, const char *key, int def);

/* ---- requests ------------------------------------------------------------ */

/* The client's request id ("" when it gave none); a batch's first request's. */
CORRAL_API const char *corral_request_id(const corral_request *req);
/* Request parameters (an object, possibly empty; owned by req); a batch's first request's. */
CORRAL_API const json_t *corral_request_parameters(const corral_request *req);

/*
 * The Triton sequence the request belongs to (infer, or Triton's
 * generate): {"id": integer or string, "start": bool, "end": bool} (owned
 * by req), or NULL for a request of no sequence. Every request of one sequence comes to the same instance, one
 * at a time and in order (docs/sessions.md, "Sequences"); never in a batch.
 */
CORRAL_API const json_t *corral_request_sequence(const corral_request *req);

/* infer: inputs in the order the client sent them. */
CORRAL_API size_t corral_request_ninputs(const corral_request *req);
CORRAL_API const corral_tensor *corral_request_input_at(const corral_request *req, size_t index);
/* The input called name, or NULL. */
CORRAL_API const corral_tensor *corral_request_input(const corral_request *req, const char *name);
/*
 * Whether the client asked for output name (true when it named none); for
 * a batch, whether any of its requests did. Outputs nobody asked for are
 * dropped by the SDK anyway; this lets a model skip computing them.
 */
CORRAL_API int corral_request_output_wanted(const corral_request *req, const char *name);

/*
 * Batches. A model whose manifest sets `batching` may be sent several
 * queued requests at once, when their inputs match (the same names,
 * datatypes and shapes apart from dimension 0). It takes them in one of two
 * forms; requests that were not batched come one at a time as always.
 *
 * 1. infer, when infer_batch is NULL, gets the batch as ONE request: each
 *    input holds every request's rows of it, concatenated along dimension 0
 *    in batch order; request i has corral_request_batch_rows(req, i) of
 *    them. The model answers with outputs whose dimension 0 is the total
 *    rows, and the daemon gives each request its own rows of each (an
 *    output with any other dimension 0 fails the whole batch with a 502).
 *    corral_request_id and corral_request_parameters give the first
 *    request's; _batch_id and _batch_parameters give each one's. An error
 *    recorded fails every request of the batch. An echo needs no code for
 *    batches: its outputs are its inputs.
 * 2. infer_batch gets n requests and n responses. reqs[i] looks like an
 *    ordinary request: its inputs are its own rows of the batch (views into
 *    the batch's data, no copy, aligned as any input is), with its own id,
 *    parameters and output selection, and a batch count of 1. Each res[i] is
 *    answered as infer answers its response; an error recorded in res[i]
 *    fails request i alone. A non-zero return fails every request without
 *    an error of its own with a 500 (in one ERROR when none has one).
 *
 * Cancellation concerns the batch: once the daemon cancels it (every
 * request of it is gone), corral_request_cancelled is true for the batch
 * and for each of infer_batch's requests, and each one's on_cancel runs.
 */
/* Requests in the batch req is; 1 for an ordinary request, and for each request infer_batch gets. */
CORRAL_API size_t corral_request_batch_count(const corral_request *req);
/*
 * Rows of request i (0 <= i < batch count) of the batch: its inputs'
 * dimension 0. For an ordinary request (i = 0) the dimension 0 of its first
 * input, 0 when it has none or that one is a scalar. -1 when i is out of range.
 */
CORRAL_API int64_t corral_request_batch_rows(const corral_request *req, size_t i);
/* The client's request id of request i ("" when it gave none); NULL when i is out of range. */
CORRAL_API const char *corral_request_batch_id(const corral_request *req, size_t i);
/* Request parameters of request i (an object, possibly empty; owned by req); NULL when i is out of range. */
CORRAL_API const json_t *corral_request_batch_parameters(const corral_request *req, size_t i);

/* generate: the HTTP body exactly as received, and its content type. */
CORRAL_API const void *corral_request_body(const corral_request *req, size_t *len);
CORRAL_API const char *corral_request_content_type(const corral_request *req); /* never NULL */
/*
 * The body parsed as a JSON object or array, whatever the content type (curl
 * -d sends JSON as a form), or NULL when it is not JSON. Owned by req.
 */
CORRAL_API const json_t *corral_request_json(const corral_request *req);

/* ---- sessions ------------------------------------------------------------ */

/*
 * Sessions (docs/sessions.md). A request may name a session of the
 * daemon's context store (parameters.session on infer, "session" in a
 * generate body or its Session-Id header); the request carries its content
 * as the daemon had it when it accepted the request. A session that does
 * not exist is no error: it is named, and absent.
 *
 * corral_request_session_id: its id, or NULL when the request names none.
 * corral_request_session_exists: whether it existed.
 * corral_request_session: its content (len bytes, NUL-terminated for a JSON
 *   session, whose content is then its compact JSON text) and content type
 *   ("application/json" for JSON); NULL when it names none or the session
 *   does not exist. Owned by req.
 * corral_request_session_json: a JSON session's value, NULL otherwise. Owned by req.
 * For infer_batch, each request has its own; infer given a whole batch
 * sees the first request's (and cannot update the others': use infer_batch).
 *
 * The response may update it; the daemon stores the update only once the
 * request has succeeded (a recorded error, a client that left: no change).
 * The last call wins; a stream's update goes with its end, so it may be set
 * at any time before generate returns.
 * corral_response_set_session: content_type NULL or "application/json":
 *   data is JSON text (checked: -EINVAL when it does not parse); any other
 *   type (1 to 255 bytes of printable ASCII): data is stored as bytes.
 * corral_response_set_session_json: value (not stolen) as the JSON content.
 * corral_response_delete_session: deletes the session.
 * ttl_s: seconds until it expires (0: the daemon's --session-ttl). Each
 * returns 0, -ENOENT (the request names no session), -EINVAL or -ENOMEM.
 */
CORRAL_API const char *corral_request_session_id(const corral_request *req);
CORRAL_API int corral_request_session_exists(const corral_request *req);
CORRAL_API const void *corral_request_session(const corral_request *req, size_t *len, const char **content_type);
CORRAL_API const json_t *corral_request_session_json(const corral_request *req);
CORRAL_API int corral_response_set_session(corral_response *res, const char *content_type, const void *data,
                                           size_t len, int64_t ttl_s);
CORRAL_API int corral_response_set_session_json(corral_response *res, const json_t *value, int64_t ttl_s);
CORRAL_API int corral_response_delete_session(corral_response *res);

/* ---- tensors and datatypes ------------------------------------------------ */

CORRAL_API const char *corral_dtype_name(corral_dtype dtype); /* "FP32"; "INVALID" */
CORRAL_API corral_dtype corral_dtype_from_name(const char *name); /* CORRAL_INVALID if unknown */
CORRAL_API size_t corral_dtype_size(corral_dtype dtype);          /* bytes per element; 0 for BYTES */

/* Number of elements (product of the shape; 1 for a scalar). */
CORRAL_API int64_t corral_tensor_count(const corral_tensor *t);

/*
 * Iterates over the elements of a BYTES tensor. Start with *offset = 0; each
 * call sets *elem and *len to the next element and returns 1, or returns 0 at the
 * end. Input tensors are validated on receipt, so no error is possible.
 */
CORRAL_API int corral_bytes_next(const corral_tensor *t, size_t *offset, const void **elem, uint32_t *len);

/* Whether len bytes at data are valid UTF-8 (handy for BYTES text inputs). */
CORRAL_API int corral_utf8_valid(const void *data, size_t len);

/* ---- responses ------------------------------------------------------------ */

/*
 * Adds an output tensor. shape is copied. For fixed-size datatypes size must
 * equal the element count times the element size; for BYTES, data must hold
 * exactly that many length-prefixed elements. Returns 0, -EINVAL (bad name,
 * datatype, shape or size), -EEXIST (name already added) or -ENOMEM.
 */
CORRAL_API int corral_response_add_output(corral_response *res, const char *name, corral_dtype dtype,
                                          const int64_t *shape, int ndim, const void *data, size_t size,
                                          corral_mem mem);
/*
 * Adds an output of a fixed-size datatype whose data the model writes in
 * place: returns a buffer of count * element-size bytes (zeroed, aligned for
 * any datatype) owned by the response, or NULL (bad arguments, no memory).
 */
CORRAL_API void *corral_response_alloc_output(corral_response *res, const char *name, corral_dtype dtype,
                                              const int64_t *shape, int ndim);
/* Adds a BYTES output from count = product(shape) elements, copied. */
CORRAL_API int corral_response_add_bytes(corral_response *res, const char *name, const int64_t *shape, int ndim,
                                         const void *const *elems, const size_t *lens);

/* Sets the generate result: its content type (NULL: application/octet-stream) and body. */
CORRAL_API int corral_response_set_body(corral_response *res, const char *content_type, const void *data,
                                        size_t len, corral_mem mem);

/*
 * Records the request's error: status (400 when the input is at fault, 500
 * otherwise; other 4xx/5xx codes pass through, anything else becomes 500),
 * type (an exception-like name, e.g. "BadRequest"; NULL picks one from the
 * status) and a printf-style message. Outputs or a body already set are
 * discarded. Returns -EINVAL for a 4xx status and -EIO otherwise, so a
 * callback can `return corral_response_error(...)`.
 */
CORRAL_API int corral_response_error(corral_response *res, int status, const char *type, const char *fmt, ...)
    CORRAL_PRINTF(4, 5);
/* corral_response_error(res, 400, "BadRequest", fmt, ...). */
CORRAL_API int corral_bad_request(corral_response *res, const char *fmt, ...) CORRAL_PRINTF(2, 3);

/* ---- streams and cancellation ---------------------------------------------- */

/*
 * Whether the client asked for a stream ("stream": true, or an Accept header
 * for events): generate may then send its answer piece by piece with
 * corral_stream_write / corral_stream_event, which the client receives as
 * they are sent. Without a stream the same calls still work: the pieces
 * are collected into one answer (events one JSON per line,
 * application/x-ndjson), so a model need not be written twice.
 */
CORRAL_API int corral_request_streamed(const corral_request *req);

/*
 * Whether the daemon has cancelled the request: the client went away, its
 * deadline passed (the client already has its 504) or the model's
 * stream_timeout passed. Nobody reads the answer any more; the model should
 * return as soon as it can (whatever it returns is dropped). Any thread may
 * call it, for infer, infer_batch and generate alike (a batch: see "Batches").
 */
CORRAL_API int corral_request_cancelled(const corral_request *req);

/*
 * Registers fn(arg) to run once when the request is cancelled (at once, on
 * this thread, when it already is), so a model blocked in its own library
 * can be told to stop, e.g. by a flag its synthesis callback checks. fn runs
 * on an SDK thread while the SDK holds a lock: it must return quickly and
 * call no corral function other than corral_request_cancelled. Replaces an
 * earlier registration; fn NULL removes it. Never called after the
 * callback that received req has returned.
 */
CORRAL_API void corral_request_on_cancel(const corral_request *req, void (*fn)(void *arg), void *arg);

/*
 * Sleeps ms milliseconds, or less: returns 0 after ms, -ECANCELED as soon as
 * the request is cancelled (at once when it already is), -EINVAL for a
 * negative ms. For a model that waits between steps of its own work.
 */
CORRAL_API int corral_request_sleep(const corral_request *req, int64_t ms);

/*
 * Sends len bytes as the next chunk of a byte stream (generate only). The
 * first call fixes the stream's content type (NULL:
 * application/octet-stream); later calls ignore content_type. When the client
 * is behind, the call blocks until the daemon has passed earlier chunks on
 * (each stream may have stream_window bytes, 1 MiB, in flight), so a slow
 * client holds back only this request. The data is sent before the call
 * returns and may be reused at once.
 *
 * The answer ends when generate returns: 0 ends the stream normally, an
 * error recorded with corral_response_error() ends it with that error (the
 * client sees a truncated stream or an error event). Returns 0; -ECANCELED
 * once the request is cancelled (return from generate); -EINVAL when the
 * call does not fit (not a generate request, an event stream, a body already
 * set with corral_response_set_body, an error already recorded);
 * -EMSGSIZE when one chunk, or the collected answer of a request that is
 * not streamed, exceeds the 1 GiB frame limit; -ENOMEM.
 */
CORRAL_API int corral_stream_write(corral_response *res, const char *content_type, const void *data, size_t len);

/*
 * Sends event (any JSON value, usually an object) as the next chunk of an
 * event stream: a server-sent event or an NDJSON line for the client. Like
 * corral_stream_write otherwise; -EINVAL also when the stream carries bytes.
 * event is not stolen.
 */
CORRAL_API int corral_stream_event(corral_response *res, const json_t *event);

/* ---- logging ----------------------------------------------------------------- */

/* Writes one line to stderr (the instance log) in a single write, so lines of concurrent threads never mix. */
CORRAL_API void corral_log(const char *fmt, ...) CORRAL_PRINTF(1, 2);

#ifdef __cplusplus
}
#endif

#endif
