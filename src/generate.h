/*
 * generate — the free-form endpoint, POST /v1/models/{name}/generate: the
 * request body goes to the model's generate as one GENERATE frame, and the
 * answer comes back whole (GENERATE_RESULT, sent with the content type the
 * model chose) or as a stream (CHUNK ... END) when the client asked for one
 * ("stream": true in a JSON body, or Accept: text/event-stream or
 * application/x-ndjson).
 *
 * A stream's chunks are sent as they come: events (each chunk one line of
 * JSON) as server-sent events ("data: <json>\n\n") or NDJSON ("<json>\n"),
 * bytes as a chunked body of the model's content type. The daemon holds at
 * most the worker protocol's window (PROTO_STREAM_WINDOW) of one stream:
 * chunks are credited back to the worker only once h2o has taken them, so
 * a slow client holds the producer back. An error after the first chunk is
 * an {"error"} event, or for bytes a truncated response (no final chunk on
 * HTTP/1.1, a reset stream on HTTP/2). A silent event stream gets an SSE
 * comment every GENERATE_HEARTBEAT_MS.
 *
 * Triton's generate extension is the same machinery in two more flavours.
 * POST /v2/models/{name}/generate answers one JSON object: the model's
 * application/json answer, or the one event it streamed; a second event is
 * a 400 (use generate_stream), and the rest of the model's work is
 * cancelled. POST /v2/models/{name}/generate_stream is always a stream of
 * server-sent events, one JSON object each; a whole JSON answer is one
 * event. Both take a JSON object as the body, ask the worker for a stream
 * whatever the body says, refuse byte answers and JSON that is not an
 * object (500, naming the model and the content type), and put Triton's
 * "model_name" and "model_version" first in each object that lacks them.
 * Loop thread only.
 */
#ifndef CORRAL_GENERATE_H
#define CORRAL_GENERATE_H

#include "model.h"

#include <h2o.h>

#define GENERATE_HEARTBEAT_MS 5000

typedef enum generate_flavour {
    GENERATE_V1,            /* POST /v1/models/{name}/generate */
    GENERATE_TRITON,        /* POST /v2/models/{name}/generate: one JSON object */
    GENERATE_TRITON_STREAM, /* POST /v2/models/{name}/generate_stream: events of JSON objects */
} generate_flavour;

/* Handles a POST to one of the generate endpoints for model m. */
void generate_handle(h2o_req_t *req, model *m, generate_flavour flavour);

#endif
