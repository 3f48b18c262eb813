/*
 * batch — dynamic batching's mechanics (docs/worker-protocol.md, "Batches";
 * SPEC section 2): what a request of a batching model contributes to a
 * batch (batch_entry, filled by infer.c), whether two requests may share a
 * batch, the BATCH frame of several requests with their inputs gathered
 * along dimension 0, and the answer split back into each request's rows.
 * When a batch is formed is the scheduler's decision (dispatch.c).
 *
 * A batch travels as a job of kind PROTO_BATCH with its own id that owns
 * its member jobs: the instance holds it like any job, and its answer (one
 * frame) answers every member through the member's own on_done. Loop
 * thread only.
 */
#ifndef CORRAL_BATCH_H
#define CORRAL_BATCH_H

#include "job.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* What one request of a batching model brings to a batch. */
typedef struct batch_entry {
    uint64_t rows;  /* every input's dimension 0 */
    const char *sig; /* sig_len bytes: the inputs' names, datatypes and shapes after dimension 0; equal bytes
                        batch together */
    size_t sig_len;
    const char *fields; /* "\"client_id\":\"...\",\"parameters\":{...}[,\"outputs\":[...]]": its part of the batch meta */
    int ninputs;
    char **spec;    /* per input: "\"name\":\"X\",\"datatype\":\"FP32\"" */
    char **dims;    /* per input: its dimensions after the first, each with a leading comma: ",3,4" or "" */
    size_t *size;   /* per input: bytes of its data */
    json_t *wanted; /* the output names the client asked for (an array), or NULL for all */
} batch_entry;

/*
 * What a request brings to a batch, in one allocation (no pointer in it is
 * freed alone). text holds the NUL-terminated strings at the offsets
 * given: each input's spec and dims, and the fields (batch_entry's
 * comments say what each is); the signature is the sig_len bytes at
 * sig_off (infer.c uses every spec and dims, NULs included). wanted is
 * referenced, not stolen. Pure.
 */
batch_entry *batch_entry_new(uint64_t rows, int ninputs, const char *text, size_t text_len, const size_t *spec_off,
                             const size_t *dims_off, const size_t *size, size_t sig_off, size_t sig_len,
                             size_t fields_off, json_t *wanted);
/* Frees an entry of batch_entry_new (or one calloc'ed whole, with no strings: the unit tests'). */
void batch_entry_free(batch_entry *e);

/* Whether two requests may share a batch: the same inputs apart from dimension 0. */
int batch_compatible(const job *a, const job *b);

/*
 * A batch job for members[0..n) (each with a batch_entry, n >= 2, rows in
 * total at most PROTO_MAX... checked by the caller), built for model m and
 * answered through batch_answer. The members' data is gathered, input by
 * input, into the frame (or kept as pieces for shared memory). Returns NULL
 * when there is no memory for the frame (the members are untouched).
 */
job *batch_new(struct model *m, job **members, int n, uint64_t rows);

/*
 * The batch's answer (a job_on_done_fn for the batch job): a 200
 * INFER_RESULT is split into each member's rows, or its per-request
 * results are handed out; any other status answers every member with it.
 * mname names the model in messages. Members already answered (a deadline)
 * are skipped; every member is freed.
 */
void batch_answer(job *b, int status, const char *msg, uint8_t type, uint8_t *body, size_t len);

/* One request's part of a batch's answer. */
typedef struct batch_part {
    int status;    /* 200 with body, or 400/500 with msg (its own error, from per-request results) */
    char *msg;     /* owned */
    uint8_t *body; /* owned: an INFER_RESULT body (meta length, meta, data) of its rows and outputs */
    size_t len;
    json_t *session; /* a reference: the worker's update of the request's session (sessreq.h); NULL: none */
} batch_part;

/*
 * Splits a worker's 200 INFER_RESULT answer to a batch of n requests whose
 * entries (in batch order; NULL for one that needs no part) hold rows rows
 * in all: every output into each request's rows (only the outputs it asked
 * for), or the per-request results handed out; with each part, the
 * session update the answer gave it (a result's "session", or the i-th of
 * a whole answer's "sessions", null for none). The body is the frame's
 * (meta only when its data came in shared memory: shm_data). Pure: no
 * jobs, no model (model names it in messages), so tests and the fuzzer
 * drive it with hostile answers. Returns 0 with parts filled (free them
 * with batch_parts_free); 1 when an output lacks the batch's rows (msg:
 * every request fails 502 with it; the worker is not at fault for the
 * protocol); -1 when the answer is malformed (msg; the worker broke the
 * protocol and is replaced).
 */
int batch_split(const char *model, const batch_entry *const *entries, int n, uint64_t rows, const uint8_t *body,
                size_t len, const uint8_t *shm_data, size_t shm_len, batch_part *parts, char *msg, size_t msglen);
void batch_parts_free(batch_part *parts, int n);

/*
 * The on_free of a request with a batch_entry, and of a batch: frees the
 * entry; a batch freed with members still unanswered answers them 500, so
 * none is left waiting.
 */
void batch_release(job *j);

#endif
