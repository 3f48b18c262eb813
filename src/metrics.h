/*
 * metrics — what the daemon counts about each model, and its renderings:
 * the Prometheus text exposition of GET /metrics (Triton's nv_* families
 * under Triton's names and labels, corral's own under corral_, the
 * process_* families) and Triton's statistics extension
 * (GET /v2/models[/{name}]/stats). docs/observability.md lists every
 * family.
 *
 * Each model embeds one model_stats (model.h: model_stats_get). Recording
 * is a few additions into fixed arrays: no allocation, loop thread only.
 * Rendering walks the registry through model.h's accessors.
 *
 * Counting rules (Triton's): a request counts once, when it is answered:
 * success, or a failure with its reason — REJECTED (the scheduler refused
 * it: queue full, model failed or unloading, daemon draining, or its
 * deadline passed), CANCELED (its client went away), BACKEND (the model
 * or its worker failed it: 400 or 500 from the model, 502 a worker that
 * died or broke the protocol), OTHER (anything else). inference_count
 * counts rows (1 per request until batching), execution_count the
 * executions of the model.
 */
#ifndef CORRAL_METRICS_H
#define CORRAL_METRICS_H

#include "sb.h"

#include <jansson.h>
#include <stdint.h>

/* Upper bounds of the time histograms' buckets, in microseconds (+Inf is implied). */
#define METRICS_TIME_BUCKETS 19
extern const uint64_t metrics_time_bounds_us[METRICS_TIME_BUCKETS];
/* Upper bounds of the batch-size histogram's buckets. */
#define METRICS_BATCH_BUCKETS 9
extern const uint64_t metrics_batch_bounds[METRICS_BATCH_BUCKETS];

/* A Prometheus histogram: bucket[i] counts observations above bound[i-1] and up to bound[i]. */
typedef struct histogram {
    uint64_t bucket[METRICS_TIME_BUCKETS];
    uint64_t count; /* every observation, the ones above the last bound included */
    uint64_t sum;   /* of the observations, in their unit (µs, or rows) */
} histogram;

typedef enum metrics_fail {
    FAIL_REJECTED,
    FAIL_CANCELED,
    FAIL_BACKEND,
    FAIL_OTHER,
    FAIL_REASONS,
} metrics_fail;

typedef enum metrics_restart {
    RESTART_CRASH,    /* it exited or died on its own */
    RESTART_HANG,     /* it missed its health check, or ignored CANCEL */
    RESTART_DEADLINE, /* a request ran past its deadline and the worker could not be told to stop */
    RESTART_MEMORY,   /* above limits.memory */
    RESTART_CAUSES,
} metrics_restart;

typedef struct model_stats {
    uint64_t success, fail[FAIL_REASONS];
    uint64_t success_us, fail_us;     /* request durations, enqueue to answer */
    uint64_t queue_count, queue_us;   /* of successful requests: enqueue to dispatch */
    uint64_t compute_count, compute_us; /* of successful requests: dispatch to answer */
    uint64_t inference_count, execution_count;
    uint64_t last_inference_ms;       /* wall clock (ms since the epoch) of the last success; 0: none */
    uint64_t restarts[RESTART_CAUSES];
    uint64_t requeued;                /* pipelined requests a dead worker never started, queued again */
    double load_seconds;              /* how long the last load took (the first instance ready); 0: none */
    histogram latency;  /* every answered request, µs */
    histogram queue;    /* every request that left the queue for a worker, µs */
    histogram compute;  /* every request a worker answered, µs from dispatch */
    histogram ttfc;     /* every stream's first chunk, µs from enqueue */
    histogram batch;    /* rows per execution */
} model_stats;

/*
 * A request of rows rows (its inputs' dimension 0 when it can batch, else 1)
 * was answered. fail is -1 for a success, else its metrics_fail.
 * total_us: enqueue to answer. queue_us and compute_us are -1 when the
 * request never reached a worker. Counts it in the Triton counters and
 * corral's histograms alike.
 */
void metrics_answered(model_stats *s, int fail, uint64_t rows, uint64_t total_us, int64_t queue_us, int64_t compute_us);
/* The request left the queue for a worker after waiting queue_us. */
void metrics_dispatched(model_stats *s, uint64_t queue_us);
/* A stream's first chunk arrived ttfc_us after the request was accepted. */
void metrics_first_chunk(model_stats *s, uint64_t ttfc_us);
/* One execution of rows rows (1 until batching). */
void metrics_executed(model_stats *s, uint64_t rows);
/*
 * A pipelined request went back to the queue: the worker it was sent to
 * died before starting it (inst.h, on_returned). Its execution did not
 * happen; it is counted in requeued.
 */
void metrics_returned(model_stats *s);
/* The failure reason of an answer with HTTP status status; client_gone when its client had left. */
metrics_fail metrics_fail_reason(int status, int client_gone);

void histogram_observe(histogram *h, const uint64_t *bounds, int nbounds, uint64_t value);

/* Notes the daemon's start time (process_start_time_seconds); main calls it first. */
void metrics_start(void);
/* GET /metrics: the whole exposition, appended to out. */
void metrics_render(sb *out);
/* Triton's statistics: {"model_stats": [...]} for one model (name) or every model (NULL). New reference. */
json_t *metrics_triton_stats(const char *name, size_t name_len);

#endif
