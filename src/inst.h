/*
 * inst — one worker process of a model: spawning it behind the protocol
 * socket, talking the worker protocol, capturing its output, stopping it and
 * noticing its exit.
 *
 * An inst is a slot that outlives its processes: after an exit its owner
 * (a model, model.c) may start the same slot again, so its id and request
 * count persist, while what belongs to one process (struct inst_proc, and
 * the read-only fields marked so) is reset at each start. inst never
 * decides policy (restart, fail, unload) and knows nothing of its owner but
 * the owner's data pointer and the names it was given for messages: it
 * reports through inst_events and the owner decides. The frames themselves
 * are read and written by chan.c; inst gives them their meaning.
 * Loop thread only.
 */
#ifndef CORRAL_INST_H
#define CORRAL_INST_H

#include "chan.h"
#include "decl.h"
#include "lines.h"
#include "proto.h"
#include "job.h"

#include <jansson.h>
#include <stdint.h>
#include <uv.h>

/*
 * The slot's states. The legal transitions, each made and logged by
 * inst_set_state in inst.c (and checked there with assert):
 *
 *   IDLE     -> STARTING  inst_start spawned a process
 *   STARTING -> READY     READY after HELLO
 *   STARTING, READY -> STOPPING   inst_stop, inst_kill, a missed PONG (READY),
 *                                 the protocol socket closed
 *   STOPPING -> STOPPING  inst_kill while stopping (no new log line)
 *   STARTING, READY, STOPPING -> IDLE   the exit, once the process group is gone
 */
typedef enum inst_state {
    INST_IDLE,     /* no process: never started, exited, or waiting to restart */
    INST_STARTING, /* spawned; waiting for READY */
    INST_READY,    /* serving requests */
    INST_STOPPING, /* SHUTDOWN sent or signalled; waiting for the exit */
} inst_state;

typedef struct inst inst;

/* One output stream of the worker being split into lines (lines.h). */
typedef struct inst_stream {
    inst *in;
    int fd;      /* 1 stdout, 2 stderr */
    lines lines; /* the partial line */
} inst_stream;

/* The longest line of worker output kept; the rest of a longer line is counted, not kept. */
#define INST_LINE_MAX LINES_MAX

typedef struct inst_events {
    void (*on_ready)(inst *in);
    /* The worker answered LOAD with ERROR: the model's load raised. */
    void (*on_load_failed)(inst *in, const char *msg);
    /* The process is gone and every job it held has been answered. */
    void (*on_exit)(inst *in);
    /* A job finished (answered by the worker); the slot may take more work. */
    void (*on_job_finished)(inst *in);
    /* j was cancelled INST_CANCEL_GRACE_MS ago and the worker has not answered: it is hung. */
    void (*on_cancel_ignored)(inst *in, job *j);
    /* The worker missed its health check: it is being stopped (in->fault says why). */
    void (*on_hung)(inst *in);
    /* j was pipelined to this worker, which died without starting it: the
     * owner takes it back (j->inst is NULL again, its frame kept) to queue it
     * once more. Called from the exit, before on_exit. */
    void (*on_returned)(inst *in, job *j);
    /* The first chunk of j's stream arrived (before it goes to j->on_chunk). */
    void (*on_stream_start)(inst *in, job *j);
    /* A line (without newline) the worker wrote on stdout or stderr: its
     * first len bytes (at most INST_LINE_MAX, cut at a character boundary),
     * and how many bytes of it past those were dropped. */
    void (*on_log_line)(inst *in, int stream, const char *line, size_t len, size_t dropped);
} inst_events;

/* What to run: the owner fills this from the manifest. */
typedef struct inst_spawn {
    const char *file;  /* program to exec (PATH lookup when it has no '/') */
    char **argv;       /* NULL-terminated, argv[0] included */
    char **env;        /* NULL-terminated full environment */
    const char *cwd;
    const char *load_json; /* the LOAD body */
    int64_t load_timeout_ms;
    int64_t health_interval_ms; /* PING this often once ready */
    int64_t health_timeout_ms;  /* no PONG within this: hung */
    int64_t stop_grace_ms;      /* SIGTERM to SIGKILL for a hung worker */
    int concurrency;            /* requests the worker runs at once (its LOAD says so) */
    int pipeline;               /* requests sent beyond those (inst_pipeline_room); 0: none */
} inst_spawn;

/* How far inst_stop (or a kill) has gone with the current process. */
typedef enum inst_stop_stage {
    INST_STOP_NONE,     /* not stopping */
    INST_STOP_SHUTDOWN, /* SHUTDOWN sent; SIGTERM after the grace */
    INST_STOP_SIGTERM,  /* SIGTERM sent to the group; SIGKILL after the grace */
    INST_STOP_SIGKILL,  /* SIGKILL sent: only the exit is left */
} inst_stop_stage;

/*
 * What belongs to one process of the slot, private to inst.c: cleared in
 * one place, when inst_start spawns the next process, and kept after an
 * exit so that the exit can be explained (inst_exit_reason) until then.
 */
typedef struct inst_proc {
    int guard_pid;       /* the process corral spawned: the worker's parent and process-group leader */
    int exit_status, term_signal;
    char last_line[256]; /* the worker's last line of output, for exit messages */
    int hello;           /* HELLO seen */
    int chan_eof;        /* the protocol socket reached its end */
    inst_stop_stage stop_stage;
    int health_chan;     /* the worker listens for PING on hchan rather than chan */
    uint8_t hbuf[PROTO_HEADER_SIZE]; /* a PONG header being read from hchan */
    size_t hlen;
    int ping_outstanding;
    int64_t health_interval_ms, health_timeout_ms, stop_grace_ms;
    int abandoned;             /* jobs taken back from this process (deadline) */
    uint64_t abandoned_max_id; /* their highest id: answers up to it are ignored */
    int shm_fd[2];       /* memfds of the input and output regions (shm.h); -1 when none (closed at the exit) */
    struct shm_region *shm_in, *shm_out; /* the daemon's mappings of them; dropped at the exit */
    int shm;             /* the worker's HELLO says it maps them */
    int streams;         /* the worker's HELLO says it streams and obeys CANCEL and CREDIT */
    int batches;         /* the worker's HELLO says it takes BATCH */
    int sequences;       /* the worker's HELLO says it takes SEQUENCE_END */
    uint64_t shm_in_job; /* the request whose data is in the input region; 0 when free */
    uint64_t shm_out_job; /* the request allowed to answer in the output region; 0 when free */
    size_t shm_used[2];  /* the most bytes each region carried since its pages were last released */
    int exit_wait_ms;    /* how long the exit has waited for the process group to be gone */
    int concurrency, pipeline; /* from inst_spawn */
} inst_proc;

struct inst {
    /* public */
    void *data;          /* the owner's; inst never reads it */
    const inst_events *ev;
    int id;
    char fault[160];     /* the daemon's diagnosis (protocol error, timeout), or empty; the owner may set one */
    int hung;            /* the current or last process missed its health check (reset at each start) */
    uint64_t rss_bytes;  /* resident memory of the worker's process group, last sample; the owner may raise it */
    uint64_t last_busy_ms; /* when it last finished or started a request */

    /* read-only: the slot, all processes together */
    char *label;         /* names the slot in the daemon's log: "model echo instance 0"; owned */
    char *owner_label;   /* names the owner in messages to clients: "model 'echo'"; owned */
    char *log_name;      /* the owner's name as a field of JSON log lines (log.h); owned */
    inst_state state;    /* changed only through inst_set_state (inst.c) */
    uint64_t requests;   /* answered by this slot */
    uint64_t lines;      /* lines of output written */
    int inflight;        /* jobs on inflight_head; never negative */
    job *inflight_head;  /* jobs sent to the worker, the newest first (inst_send pushes, answers unlink) */

    /* read-only: the current or last process, reset when inst_start spawns the next (with cur) */
    int pid;             /* the worker itself, as its HELLO says; its guard's until then */
    uint64_t started_ms; /* when it was spawned */
    uint64_t ready_ms;   /* when it became ready; 0 before */
    int load_error;      /* its load raised */
    json_t *metadata;    /* READY body; owned */
    decl_list *input_decl, *output_decl; /* its inputs and outputs parsed for the request checks; owned; NULL: none */

    /* private */
    inst_proc cur;       /* the current or last process */
    int exited;          /* exit seen for the current process (inst_running, inst_ready) */
    uv_loop_t *loop;
    uv_process_t proc;   /* the handles of the current process: initialised by inst_start, closed by its exit */
    uv_pipe_t chan, out, err;
    uv_pipe_t hchan;     /* the health socket: PING and PONG only, when the worker's HELLO names it */
    chan_reader rd;      /* frames from chan */
    chan_writer wr, hwr; /* frames to chan, and to hchan */
    uv_timer_t timer;    /* load timeout, then stop grace */
    uv_timer_t health_timer; /* next PING, or the deadline of the PING in flight */
    uv_timer_t cancel_timer; /* while a cancelled request awaits its final frame: the grace */
    uint64_t ping_nonce; /* the id of the last PING: unique over the slot's life */
    int handles_open;    /* libuv handles not yet closed for the current process */
    inst_stream output[2]; /* stdout and stderr */
    int freeing;         /* timers still closing in inst_close */
    inst *flush_next;    /* on the list of instances whose writer holds frames (inst.c, "Writing") */
    int flush_listed;
    void (*on_closed)(inst *in);
};

/*
 * Initialises a slot; nothing is started. The names are set here, once, and
 * copied: label opens the slot's log lines ("model echo instance 0"),
 * owner_label its messages to clients ("model 'echo'"). data is the
 * owner's, for its callbacks.
 */
void inst_init(inst *in, uv_loop_t *loop, const inst_events *ev, int id, const char *label,
               const char *owner_label, const char *log_name, void *data);

/*
 * Spawns a process into an idle slot. Returns 0, or a negative errno with
 * the reason in err (the slot stays idle; nothing was started).
 */
int inst_start(inst *in, const inst_spawn *sp, char *err, size_t errlen);

/*
 * Sends a job to a ready instance. The job's frame passes to the write path
 * (freed once written); the job is answered through job->on_done. A job
 * sent while the worker holds its concurrency is pipelined: its frame is
 * copied to the write path and kept (j->pipelined), for on_returned.
 */
void inst_send(inst *in, job *j);

/*
 * Pipelining (docs/worker-protocol.md, "Pipelining"): whether j may be sent
 * now to a worker that already holds `concurrency` requests, so that the
 * worker finds it in its socket the moment it finishes one, instead of
 * sleeping until the daemon hears of the finish and writes the next. Only
 * to a worker that obeys CANCEL (a pipelined request's deadline or client
 * can still stop it), within the spawn's `pipeline` depth, for an INFER
 * frame of at most INST_PIPELINE_FRAME_MAX bytes, and never behind a
 * GENERATE, whose end nobody can foresee. When the worker dies, requests it
 * held beyond the oldest `concurrency` were never started: they go back to
 * the owner (on_returned), not answered 502.
 */
#define INST_PIPELINE_FRAME_MAX (64u * 1024)
int inst_pipeline_room(const inst *in, const job *j);
/* Whether in-flight j waits at the worker behind `concurrency` older requests (pipelined, not yet started). */
int inst_waiting(const inst *in, const job *j);

/*
 * Stops the process: SHUTDOWN, then SIGTERM to its process group after
 * grace_ms, then SIGKILL after another grace_ms. No-op when idle.
 */
void inst_stop(inst *in, int64_t grace_ms);

/* SIGKILL to the process group now (hung, broken or over budget). No-op once killed: the first why stays in fault. */
void inst_kill(inst *in, const char *why);

/* Whether the slot has libuv handles still closing (it may not start yet). */
int inst_busy(const inst *in);

/* Whether the slot has a process whose exit has not been seen (it may still be stopping). */
int inst_running(const inst *in);

/* Whether the slot may take a job: READY, and its process's exit not seen. */
int inst_ready(const inst *in);

/* Releases the slot's resources once idle; on_closed runs when it may be freed. */
void inst_close(inst *in, void (*on_closed)(inst *in));

const char *inst_state_name(inst_state s);

/* The last process's exit: its signal (0 when it exited), and its status (when it exited). */
int inst_exit_signal(const inst *in);
int inst_exit_status(const inst *in);
/* "exited with status 3" / "killed by signal 9 (SIGKILL)" for the last process. */
void inst_exit_text(const inst *in, char *buf, size_t len);

/*
 * Why the last process ended, for messages: its exit text, then the
 * worker's last line of output (when with_line), then the daemon's
 * diagnosis when it had one: "exited with status 1: SyntaxError: invalid
 * syntax".
 */
void inst_exit_reason(const inst *in, int with_line, char *buf, size_t len);

/*
 * Samples the resident memory of each instance's process group (the worker
 * and whatever it started; not the guard) into rss_bytes, with one pass
 * over /proc for all of them. Here and in inst_worker_rss the pages of the
 * instance's shared-memory regions are left out (they are the daemon's).
 */
void inst_sample_rss(inst **v, size_t n);

/* Resident memory of the worker process alone: one small read, for a check after each request. */
uint64_t inst_worker_rss(const inst *in);

/*
 * Takes a job back from the instance (its deadline passed): the worker's
 * late answer will be ignored. The caller answers the job. For a worker
 * that cannot be told to cancel (inst_can_cancel).
 */
void inst_abandon(inst *in, job *j);

/* How long a worker has, after CANCEL, to send its final frame for that request: then it is killed as hung. */
#define INST_CANCEL_GRACE_MS 5000

/* Whether the worker streams and obeys CANCEL (its HELLO said "stream": true) and still runs. */
int inst_can_cancel(const inst *in);
/* Whether the worker takes BATCH (its HELLO said "batch": true). */
int inst_can_batch(const inst *in);

/*
 * Tells the worker that the daemon released one of its sequences
 * (SEQUENCE_END, id 0, body the JSON {"sequence_id", "reason"}), after
 * every frame already sent on the request socket. No-op unless its HELLO
 * said "sequence": true and it still runs.
 */
void inst_sequence_end(inst *in, const uint8_t *body, size_t len);

/*
 * Tells the worker to give up j (CANCEL). The job stays in flight until the
 * worker's final frame for it, which frees the instance; chunks before that
 * are dropped. Without one within INST_CANCEL_GRACE_MS, on_cancel_ignored.
 * No-op when already cancelled or !inst_can_cancel.
 */
void inst_cancel(inst *in, job *j);

/*
 * The owner sent on bytes of j's stream (the cost of chunks, job_chunk):
 * they are credited back to the worker (CREDIT) in batches, so a producer
 * never has more than PROTO_STREAM_WINDOW bytes unsent to the client.
 */
void inst_credit(inst *in, job *j, uint32_t bytes);

/*
 * Gives the memory of an idle instance's shared-memory regions back (their
 * pages are punched out; the files keep their size and mappings stay valid).
 * No-op unless the instance is ready with nothing in flight and no response
 * still sending from a region.
 */
void inst_release_shm(inst *in);

#endif
