/*
 * job — a request on its way to a worker, and a model's queue of them:
 * priority levels, FIFO within a level (job_queue_*).
 *
 * A job is one accepted request on its way to a worker. The queue is
 * intrusive (jobs carry their links), so push, pop and remove are O(1) and
 * allocate nothing; a bitmap of non-empty levels makes pop independent of
 * the number of levels in practice. Loop thread only.
 */
#ifndef CORRAL_JOB_H
#define CORRAL_JOB_H

#include "clock.h" /* the clock of enqueued_ms and deadline_ms */
#include "proto.h"

#include <stddef.h>
#include <stdint.h>

#define JOB_MAX_LEVELS 128
/* The most requests one batch carries (each of at least one row; max_batch_size bounds the rows). */
#define JOB_BATCH_MAX 1024

struct model;
struct inst;
struct seq;
typedef struct job job;

/* A piece of a frame's tensor data: len bytes at ptr. */
typedef struct job_piece {
    const uint8_t *ptr;
    size_t len;
} job_piece;

/*
 * Completion of a job: called exactly once. status is 200 with the worker's
 * result (type INFER_RESULT or GENERATE_RESULT, body owned by the callee,
 * who frees it with free(); or END, no body, after a stream's chunks), or
 * an HTTP error status with msg (body NULL; after a stream's first chunk
 * it ends the stream with that error). Unless the job is answered early
 * (job->answered: a deadline, with the worker told to CANCEL), the job is
 * freed by the caller of on_done right after it returns.
 */
typedef void (*job_on_done_fn)(job *j, int status, const char *msg, uint8_t type, uint8_t *body, size_t len);

/*
 * One chunk of a streamed GENERATE answer (a CHUNK frame), while the job
 * runs. The first chunk of a stream says what the stream is: events (each
 * chunk one line of JSON) or bytes of content_type.
 */
typedef struct job_chunk {
    int first;
    int events;
    char content_type[200];   /* bytes streams, first chunk only */
    uint8_t *body;            /* the frame's body: the callee's, freed with free() */
    const uint8_t *data;      /* the chunk's payload, len bytes inside body */
    size_t len;
    uint32_t cost;            /* what it counts against the window: hand it back with the owner's credit call */
} job_chunk;

typedef void (*job_on_chunk_fn)(job *j, const job_chunk *c);

struct job {
    uint64_t id;          /* protocol request id, unique for the daemon's life */
    struct model *model;  /* not owned */
    struct inst *inst;    /* instance running it; NULL while queued; not owned */
    uint8_t kind;         /* PROTO_INFER or PROTO_GENERATE */
    uint8_t queued;       /* 1 while linked into a job_queue */
    uint8_t waited;       /* it was not dispatched the moment it arrived */
    uint8_t stream;       /* GENERATE only: the client takes a stream, and the worker was told so */
    uint8_t streaming;    /* its first chunk arrived */
    uint8_t cancelled;    /* the worker was sent CANCEL: what it sends is dropped until its final frame */
    uint8_t answered;     /* on_done was called early; the job stays in flight until the worker's final frame */
    uint8_t pipelined;    /* sent to a worker that held its concurrency already: frame kept, to send it
                             elsewhere if that worker dies before starting it (inst.c, "Pipelining") */
    uint32_t unacked;     /* bytes of chunks received and not yet credited back to the worker */
    uint32_t to_credit;   /* of those, bytes sent on, not yet in a CREDIT frame */
    uint64_t cancel_ms;   /* when CANCEL was sent */
    int64_t stream_timeout_ms; /* from the manifest at submission: the stream's run after its first chunk; -1 none */
    int priority;         /* 1 is served first */
    uint8_t *frame;       /* owned until sent: the whole frame, header included */
    size_t frame_len;
    /* A large INFER's tensor data is not copied into frame (which then ends
     * with the meta) until the instance is known: it goes into the instance's
     * shared memory or is appended then. The pieces point into the HTTP
     * request, which outlives the job's stay in the queue, or into data_owned. */
    job_piece *pieces;    /* owned */
    int npieces;
    size_t pieces_len;    /* their total */
    uint8_t *data_owned;  /* tensors converted from JSON; owned */
    uint64_t line_mark;   /* the instance's count of output lines when it was sent (inst.c) */
    int result_broken;    /* set by on_done: the worker's 200 answer did not parse as its type requires */
    uint64_t enqueued_ms;
    uint64_t deadline_ms; /* on now_ms()'s clock; 0: none */
    uint64_t accepted_us; /* now_us() when model_submit took it, for metrics */
    uint64_t sent_us;     /* now_us() when it went to a worker; 0 while it has not */
    uint8_t client_gone;  /* its client left: its answer counts as CANCELED */
    uint16_t failed_status; /* the daemon failed it itself with this status while it ran (e.g. a second
                               response on Triton's generate): counted so, whatever the worker sends */
    uint8_t counted;      /* its answer has been counted (the metrics see each job once) */
    job_on_done_fn answer_cb; /* the submitter's on_done; model_submit puts the counting one in front */
    size_t heap_index;    /* position in the deadline heap, SIZE_MAX when not in it */
    job *next, *prev;     /* queue level, or the instance's in-flight list */
    job_on_done_fn on_done;
    job_on_chunk_fn on_chunk; /* for streamed jobs */
    /* With on_done's 200 for a result in shared memory: its tensor data is
     * shm_len bytes at shm_data inside shm, one reference that the callee
     * takes over (set shm to NULL) to keep the bytes while it sends them. */
    struct shm_region *shm;
    const uint8_t *shm_data;
    size_t shm_len;
    /* Dynamic batching (batch.h). A request of a batching model: what it
     * brings to a batch, and the batch it travels in once sent. A batch
     * (kind PROTO_BATCH): its members, in row order, and their rows. */
    struct batch_entry *bentry; /* owned, released by on_free */
    struct sessreq *sess;       /* the session the request carries (sessreq.h); owned; NULL: none */
    void (*sess_free)(struct sessreq *r); /* frees sess (sessreq.c sets it): job.c knows nothing of sessions */
    job *batch;                 /* not owned */
    job **members;              /* owned array; the members are answered and freed by batch_answer */
    int nmembers;
    uint64_t batch_rows;
    void (*on_free)(job *j);    /* frees what another module hung on the job (batch.c); job.c knows none of it */
    /* Whether the client still waits for the answer; asked before a job that
     * waited in the queue is sent, so abandoned work never reaches a worker. */
    int (*client_alive)(job *j);
    void *ctx;            /* the caller's; not owned */
    /* Triton's sequences (seq.h): the request's sequence_id (seq_str, owned, for a string id; else seq_num,
     * 0 for none) and flags as parsed (infer.c); once admitted, the sequence it belongs to. */
    uint64_t seq_num;
    char *seq_str;
    uint32_t seq_str_len;
    uint8_t seq_start, seq_end;
    uint8_t seq_waiting;  /* 1 while linked into its sequence's FIFO (next/prev) */
    struct seq *seq;      /* not owned: the model's sequence table owns it */
    void (*on_release)(job *j); /* called by job_free before anything is freed: the scheduler lets go of it */
};

/* Moves the sequence a not yet admitted request names (its id and flags) from one job to another. */
static inline void job_move_sequence(job *to, job *from)
{
    to->seq_num = from->seq_num;
    to->seq_str = from->seq_str;
    to->seq_str_len = from->seq_str_len;
    to->seq_start = from->seq_start;
    to->seq_end = from->seq_end;
    from->seq_num = 0;
    from->seq_str = NULL;
    from->seq_str_len = 0;
}

/* Whether the request names a sequence. */
static inline int job_in_sequence(const job *j)
{
    return j->seq_num || j->seq_str;
}

typedef struct job_queue {
    job *head[JOB_MAX_LEVELS + 1]; /* index = priority level, 1..levels */
    job *tail[JOB_MAX_LEVELS + 1];
    uint64_t nonempty[2];            /* bit l set when level l has jobs */
    int levels;
    size_t count;
} job_queue;

void job_queue_init(job_queue *q, int levels);
/* Appends j at its priority (clamped to 1..levels). */
void job_queue_push(job_queue *q, job *j);
/* Puts j back at the head of its level: a job taken back from a worker that never started it. */
void job_queue_push_front(job_queue *q, job *j);
/* The job job_queue_pop would return, left in place; NULL when empty. */
job *job_queue_peek(const job_queue *q);
/* Removes and returns the oldest job of the highest non-empty level, or NULL. */
job *job_queue_pop(job_queue *q);
/* Unlinks a queued job. */
void job_queue_remove(job_queue *q, job *j);

/* A new job with a fresh id; free with job_free, which also stops tracking its deadline. */
job *job_new(struct model *m, uint8_t kind, int priority);
void job_free(job *j);
/* A job that goes to a worker as a tensor message (INFER or BATCH): shared memory may carry its data. */
static inline int job_is_tensor(const job *j)
{
    return j->kind == PROTO_INFER || j->kind == PROTO_BATCH;
}

/*
 * Builds the job's frame (docs/worker-protocol.md): the header (j->kind,
 * j->id), the meta length, meta_len bytes of meta, then the n pieces back
 * to back. The API layers parse and validate; only this function lays out
 * a request frame.
 *
 * An INFER whose pieces total SHM_MIN_BYTES or more is not copied yet: the
 * job keeps the pieces, which must stay valid while it is queued (they
 * point into the HTTP request or into owned), until inst_send knows the
 * instance and puts them in its shared memory or appends them to the
 * frame. owned (may be NULL) is a malloc'd buffer that pieces may point
 * into; the job takes it over in every case.
 *
 * Returns 0; -EFBIG when the body would pass PROTO_MAX_BODY; -ENOMEM when
 * there is no memory for the frame now (the request's size decides it, so
 * this is an answer, 503, not an abort). The job is unchanged on error
 * except that it holds owned.
 */
int job_build_frame(job *j, const char *meta, size_t meta_len, const job_piece *pieces, int n, uint8_t *owned);

/*
 * Deadlines of every live job, queued or running, in one binary min-heap:
 * O(log n) to track and untrack, O(1) to find the earliest. The owner arms
 * a single timer for job_deadline_next().
 */
void job_deadline_track(job *j);
void job_deadline_untrack(job *j);
/* The job whose deadline comes first, or NULL. */
job *job_deadline_next(void);

#endif
