/*
 * infer — the Open Inference Protocol's inference messages translated to and
 * from the worker protocol, without HTTP: a v2 request body (JSON, or JSON
 * plus the binary tensor extension) becomes one INFER frame, and a worker's
 * INFER_RESULT becomes the v2 response (JSON, or a JSON header plus binary
 * sections that point into the result without a copy).
 *
 * Both directions treat their input as hostile: nothing is allocated for a
 * claimed shape or size before the data that backs it is in hand, every
 * string written into JSON goes through sb_json_str, and a failure is an
 * HTTP status with a message, never an abort. api_v2.c is the HTTP glue;
 * tests/fuzz/ drives these functions directly. Loop thread only.
 */
#ifndef CORRAL_INFER_H
#define CORRAL_INFER_H

#include "classify.h"
#include "decl.h"
#include "job.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* At most this many input (or output) tensors in one request. */
#define INFER_MAX_TENSORS 256

/*
 * A tensor of the request in a client's shared-memory region (clientshm.h,
 * Triton's system shared memory extension): an input read from it, or an
 * output to be written into it.
 */
typedef struct infer_shm_ref {
    struct clientshm_map *map; /* one reference, held until infer_opts_clear */
    char *region;              /* the region's name, malloc'ed */
    size_t region_len;
    char *output;              /* an output's name, malloc'ed; NULL for an input */
    uint64_t offset, byte_size;
} infer_shm_ref;

/* What answering a request needs to remember from it. */
typedef struct infer_opts {
    char *id;               /* the request's id, malloc'ed; NULL when it had none */
    size_t id_len;
    int binary_all;         /* parameters.binary_data_output */
    json_t *binary_outputs; /* names of outputs asked for as binary; owned; NULL for none */
    json_t *requested;      /* names of the outputs asked for; owned; NULL for all */
    json_t *classify;       /* output name -> K of the outputs asked for as classification; owned; NULL for none */
    int batched;            /* the model batches: classification goes per row of dimension 0 */
    classify_labels *labels; /* a reference, set by the caller when classify is set; NULL: no labels.txt */
    infer_shm_ref *shm;     /* tensors in client shared memory; owned */
    int nshm;
} infer_opts;

/* Releases what opts owns and zeroes it; safe on a zeroed struct. */
void infer_opts_clear(infer_opts *opts);

/* The request as it came: body and the Inference-Header-Content-Length header (NULL when absent). */
typedef struct infer_input {
    const char *model;          /* name, for messages */
    int priority_levels;        /* the model's; priorities 0..levels are valid */
    const uint8_t *body;
    size_t len;
    const char *header_length;  /* the header's raw value, not NUL-terminated */
    size_t header_length_len;
    int max_batch_size;         /* the model's batching; 0: off. With it, j gets its batch_entry (batch.h) */
    const decl_list *inputs_decl;  /* the model's declared inputs (decl.h), checked before anything is queued; NULL: none */
    const decl_list *outputs_decl; /* its declared outputs: an output asked for must be one; NULL: none */
    /* A request that arrives already decoded (gRPC, api_grpc.c): the v2 JSON document as a tree, body and
     * header_length unused; each input whose parameters name binary_data_size takes the next of the nraw
     * pieces (its length must be that size), and every piece must be taken. The pieces must outlive the job. */
    json_t *doc;
    const job_piece *raw;
    int nraw;
} infer_input;

/*
 * Parses a v2 inference request into j: its frame (or, for large tensors,
 * the frame's meta plus pieces pointing into body), priority and deadline;
 * and into opts what the answer needs. The pieces point into in->body,
 * which must outlive the job, or into client shared-memory regions, which
 * opts holds references to until infer_opts_clear. Inputs are checked
 * against in->inputs_decl (names, datatypes, shapes; every required one
 * present) and outputs asked for against in->outputs_decl. Returns 0, or
 * an HTTP status (400 malformed or not as declared, 403 client shared
 * memory named while it is off, 413 over the frame limit, 503 out of
 * memory) with the message, naming the model, in err. On failure j and opts may hold partial state that
 * job_free and infer_opts_clear release.
 */
int infer_parse_request(const infer_input *in, job *j, infer_opts *opts, char *err, size_t errlen);

/*
 * Triton's sequence parameters of a request (params: its "parameters"
 * object, or NULL) into j: sequence_id (an unsigned integer, 0 for none,
 * or a string of at most SEQ_ID_MAX bytes, "" for none), sequence_start
 * and sequence_end (booleans, which need an id). Returns NULL, or why
 * they are wrong, written into why (docs/sessions.md, "Sequences").
 */
const char *infer_sequence_parameters(json_t *params, job *j, char *why, size_t len);
/* Appends ,"sequence":{"id","start","end"} to a request's meta when j names a sequence (docs/worker-protocol.md). */
struct sb;
void infer_sequence_meta(struct sb *meta, const job *j);

/* The first key of object o (NULL: none) not listed in known (NULL-terminated), or NULL. */
const char *infer_unknown_key(json_t *o, const char *const *known);

/* One output of a result, checked against the data it claims (infer_read_result). */
typedef struct infer_output {
    const char *name;         /* in the result's meta */
    size_t name_len;
    dtype t;
    int ndim;
    int64_t dims[DTYPE_MAX_DIMS];
    int64_t count;
    const uint8_t *data;      /* size bytes: in the result, or its classification in the result's own buffer */
    size_t size;
    int classified;           /* replaced by its top K (BYTES) */
    const infer_shm_ref *shm; /* copied into this client region already; the answer only says where */
} infer_output;

/* A worker's INFER_RESULT, read and checked. */
typedef struct infer_result {
    infer_output *out;        /* owned */
    size_t n;
    json_t *meta;             /* owned: the names point into it */
    char *classified;         /* owned: the classification results the outputs point into; NULL: none */
    size_t classified_len;
} infer_result;

/*
 * Reads the worker's INFER_RESULT body (meta and data; or, when the data
 * came in shared memory, the meta with the data at shm_data) for a
 * request parsed into opts: every output checked against the bytes it
 * claims, those asked for with classification replaced by their top K
 * (classify.h), those the request placed in client regions copied there,
 * and every output the request asked for present. Returns 200 with *res
 * filled (release with infer_result_clear, before the result's body), or
 * 502 (the worker's result is malformed), 400 (an output asked for is
 * missing, cannot be classified, or does not fit its region; a region was
 * truncated under the copy) or 503 (no memory) with the message in err.
 * The protocol front ends (the JSON one below, gRPC's) only render it.
 */
int infer_read_result(const char *model, const infer_opts *opts, const uint8_t *body, size_t len,
                      const uint8_t *shm_data, size_t shm_len, infer_result *res, char *err, size_t errlen);
void infer_result_clear(infer_result *res);

/* A section of the response's binary part: bytes inside the result. */
typedef struct infer_slice {
    const uint8_t *ptr;
    size_t len;
} infer_slice;

/* The v2 response built from an INFER_RESULT. */
typedef struct infer_response {
    char *json;    /* malloc'ed: the JSON document, or the JSON header with binary sections */
    size_t json_len;
    infer_slice binary[INFER_MAX_TENSORS]; /* binary sections in order, pointing into the result or owned */
    size_t nbinary;
    char *owned;   /* malloc'ed, for the caller to free with json: binary classification results; NULL: none */
    size_t owned_len;
} infer_response;

/*
 * Builds the response to a request from the worker's INFER_RESULT body
 * (meta and data; or, when the data came in shared memory, the meta with
 * the data at shm_data). Outputs asked for with classification are
 * replaced by their top K (classify.h); outputs the request placed in
 * client regions are copied there (a 400 when one does not fit, or a
 * region it used was truncated under it). Returns 200 with *out filled
 * (the caller frees out->json and out->owned), or 502 (the worker's result
 * is malformed), 400 (an output asked for is missing, cannot be
 * classified, or does not fit its region) or 503 (no memory for the
 * answer) with the message in err.
 */
int infer_build_response(const char *model, const infer_opts *opts, const uint8_t *body, size_t len,
                         const uint8_t *shm_data, size_t shm_len, infer_response *out, char *err, size_t errlen);

#endif
