/*
 * grpc_infer — KServe v2's gRPC inference messages translated to and from
 * what infer.c speaks, without calls or models: grpc_infer.c is to
 * api_grpc.c what infer.c is to api_v2.c.
 *
 * A ModelInferRequest becomes the v2 request document an HTTP client would
 * have sent (inputs with binary_data_size, outputs, parameters, id) plus
 * one tensor piece per input: raw_input_contents referenced where they lie
 * in the message, typed contents converted once into one buffer. infer.c
 * then parses and checks it exactly as it does HTTP's. Answers go the
 * other way: a checked result (infer_read_result) or a decoupled model's
 * chunk becomes a packed ModelInferResponse, or ModelStreamInferResponse.
 *
 * Everything from the client is hostile: names and strings are checked as
 * UTF-8 before they enter JSON, counts against the message before anything
 * is reserved for them, and a failure is a status and a message (400, or
 * 503 when memory is short), never an abort. Pure: unit-tested and fuzzed
 * (tests/fuzz/fuzz_grpc_request.c).
 */
#ifndef CORRAL_GRPC_INFER_H
#define CORRAL_GRPC_INFER_H

#include "infer.h"
#include "job.h"

#include "grpc_service.pb-c.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Unpacks a ModelInferRequest from len bytes at msg, its
 * raw_input_contents referenced where they lie in msg (which must outlive
 * the message) instead of copied: the rest of the message goes to
 * protobuf-c. NULL when the bytes are not a ModelInferRequest (or there is
 * no memory). Free with grpc_free_request.
 */
Inference__ModelInferRequest *grpc_unpack_request(const uint8_t *msg, size_t len);
void grpc_free_request(Inference__ModelInferRequest *m);

/* A ModelInferRequest, read. */
typedef struct grpc_request {
    json_t *doc;       /* the v2 request document, owned: for infer_input.doc */
    json_t *params;    /* the request's parameters (Triton's stream flags taken out), owned */
    job_piece *pieces; /* one per input outside client shared memory, in order: for infer_input.raw; owned */
    int npieces;
    uint8_t *conv;     /* the typed contents as raw bytes, which pieces point into; owned */
    int empty_final;   /* triton_enable_empty_final_response */
} grpc_request;

/*
 * Reads in (which must outlive r's pieces) for model (named in messages).
 * Returns 0, or 400 (503: no memory) with the message in err.
 */
int grpc_request_read(const Inference__ModelInferRequest *in, const char *model, grpc_request *r, char *err,
                      size_t errlen);
void grpc_request_clear(grpc_request *r);

/*
 * A decoupled model's request as the JSON object its generate takes, as
 * Triton's generate extension maps one to tensors: each input by name (one
 * element a scalar, more a flat array; BYTES as strings), then the
 * request's parameters as keys of their own (but priority and timeout,
 * which are corral's). r must have been read from in and checked by
 * infer_parse_request (the tensors' bytes are trusted to be well formed).
 * Returns 0 with *out malloc'ed, or 400 with the message in err.
 */
int grpc_generate_body(const Inference__ModelInferRequest *in, const grpc_request *r, char **out, size_t *len,
                       char *err, size_t errlen);

/*
 * Answers, packed (malloc'ed, *len set; NULL when there is no memory for
 * one now). On a stream every response is a ModelStreamInferResponse whose
 * infer_response carries Triton's triton_final_response.
 */
/* A result (infer_read_result): every output's bytes in raw_output_contents (none for one in a client region). */
uint8_t *grpc_pack_result(const char *model, const char *id, const infer_result *res, int stream, size_t *len);
/*
 * The same answer with the outputs' bytes left where they are: *head
 * (malloc'ed, *head_len bytes) holds the rest of the message, and parts
 * (an array of 1 + 2 * res->n, filled to *nparts) give the message in
 * order, each part inside head or an output's data, which must stay valid
 * until the message is sent. Returns 0, or -1 when there is no memory.
 */
int grpc_pack_result_parts(const char *model, const char *id, const infer_result *res, int stream, uint8_t **head,
                           size_t *head_len, job_piece *parts, int *nparts);
/*
 * A decoupled model's answer (a chunk, or a whole one when final): a JSON
 * object's members as outputs (string BYTES [1], boolean BOOL [1], integer
 * INT64 [1], number FP64 [1], an array of them [n], anything else its JSON
 * text as BYTES [1]); other bytes as one output "content", BYTES [1], with
 * parameter content_type. NULL data: no outputs (Triton's empty final).
 * requested (the names of infer_opts.requested; NULL: all) keeps only
 * the outputs the request asked for, as Triton answers.
 */
uint8_t *grpc_pack_generated(const char *model, const char *id, int events, const char *content_type,
                             const uint8_t *data, size_t data_len, int final, const json_t *requested, size_t *len);
/* A failed request on a stream: error_message, and the response's id to match it by. */
uint8_t *grpc_pack_stream_error(const char *model, const char *id, const char *msg, size_t *len);

#endif
