/*
 * api_grpc — KServe v2's gRPC service (inference.GRPCInferenceService, as
 * Triton defines it in proto/grpc_service.proto) on its own port, beside
 * HTTP: the same registry, queues, deadlines, batching, priorities and
 * metrics. A request is a request whichever door it came through: a
 * ModelInfer becomes the v2 request document infer.c parses for HTTP (its
 * tensors referenced where they lie in the message), and its answer is
 * the same checked result (infer_read_result), rendered as protobuf.
 *
 * gRPC itself is grpc_bridge.c's; this module sees calls, messages and
 * statuses, on the loop thread only (docs/api.md, "gRPC").
 */
#ifndef CORRAL_API_GRPC_H
#define CORRAL_API_GRPC_H

#include <stddef.h>
#include <uv.h>

/*
 * Listens on host:port (0: a free port, logged), messages up to max_body
 * bytes, at most max_inflight bytes of them held by gRPC at once
 * (--max-inflight-body). Returns 0 or -1 (logged).
 */
int api_grpc_start(uv_loop_t *loop, const char *host, int port, size_t max_body, size_t max_inflight);

/* SIGTERM: no new calls; the running ones go on (their requests drain as HTTP's do). */
void api_grpc_drain(void);

/*
 * Every worker has stopped: open streams end (UNAVAILABLE) once their
 * answers are sent, then the server stops; on_stopped runs after. Runs
 * on_stopped at once when gRPC is off.
 */
void api_grpc_stop(void (*on_stopped)(void));

/* HTTP status -> gRPC status code, as Triton maps its errors (docs/api.md). */
int api_grpc_code(int http_status);

#endif
