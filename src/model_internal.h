/*
 * model_internal — what registry.c, model.c, dispatch.c and variant.c
 * share, and no other file sees: the model struct, the registry's state, and the
 * functions one of the three calls in another. The public contract is
 * model.h.
 *
 *   registry.c  the model list, rescans, the tick (memory samples, limits,
 *               autoscaling, heap trim), the memory budget and its LRU
 *               unloads, shutdown and drain
 *   model.c     one model's lifecycle (load, unload, scale, fail), its
 *               slots and their spawn settings, instance events, the
 *               restart budget (restart_delay), worker logs, /v1 views
 *   dispatch.c  submit and cancel, dispatch to instances, the deadline
 *               and keep_alive timers
 *   variant.c   models created at run time (variant.h): created, resolved
 *               against their base at every rescan, deleted, restored
 *
 * A shared function carries the prefix of the file that defines it.
 * Loop thread only.
 *
 * Invariants:
 * - A job is in exactly one place: a model's queue, an instance's in-flight
 *   list, or being answered. Every path that empties a queue answers each
 *   job it removes.
 * - A model in UNLOADED or FAILED has no running process (slots may still
 *   be closing their handles).
 * - slots[] holds the instances of a loaded model, each the inst of a
 *   struct slot (slot_of); a slot marked retire is removed once its
 *   process has exited.
 */
#ifndef CORRAL_MODEL_INTERNAL_H
#define CORRAL_MODEL_INTERNAL_H

#include "log.h"
#include "logring.h"
#include "metrics.h"
#include "model.h"
#include "seq.h"

#include <stddef.h>
#include <stdint.h>

#define RESTART_HISTORY 64

/*
 * One of a model's slots: the instance, and what the model keeps about it
 * for its policy (inst.c knows none of this). Allocated by model_add_slot,
 * freed once the inst and restart_timer are both closed (remove_slot).
 */
typedef struct slot {
    inst in;                  /* in.data is the model */
    uv_timer_t restart_timer; /* delays restarts; data is the slot */
    int retire;               /* stop once idle; the slot is removed after the exit */
    int replace;              /* stopped on purpose (deadline, memory): restart at once, not a crash */
    int replace_cause;        /* with replace: RESTART_DEADLINE or RESTART_MEMORY (metrics.h) */
    int restarts;             /* processes started after the first */
    int sequences;            /* live sequences pinned to it (dispatch.c): a retiring slot waits for them */
} slot;

/* The slot an instance of slots[] belongs to. */
static inline slot *slot_of(inst *in)
{
    return (slot *)((char *)in - offsetof(slot, in));
}

struct model {
    char *name;
    char *dir;
    manifest *mf;      /* what the model runs with; NULL when broken and not running */
    manifest *next_mf; /* a changed manifest found while loaded; applied at the next load */
    json_t *override;  /* the config of the last explicit load (mf is model.yaml with it), or NULL (docs/api.md) */
    /* A load with a config while loaded: the manifest (with its override) to start once the unload is done */
    manifest *reload_mf;
    json_t *reload_override;
    int reload_instances;
    char *broken;      /* manifest error from the last scan, or NULL */
    int changed;       /* the manifest on disk differs from the one running */
    int removed;       /* gone from the repository; dropped once unloaded */
    model_state state;
    char reason[1024];
    inst **slots;
    int nslots;
    int target;
    int rr;
    job_queue queue;
    seq_table seqs;         /* live sequences, their FIFOs and lost marks (dispatch.c) */
    uv_timer_t seq_timer;   /* the next idle release or lost mark to forget; 0 to dispatch ready sequences */
    lifecycle_waiter *load_waiters;
    lifecycle_waiter *unload_waiters;
    uv_timer_t idle_timer;
    uv_timer_t batch_timer; /* a batch waits for more requests until max_queue_delay (dispatch.c) */
    int timers_open;        /* of idle_timer and batch_timer, while the model is being removed */
    int pressure_ticks;     /* consecutive ticks with requests waiting */
    uint64_t rss_per_instance; /* largest resident memory an instance had, for the memory budget */
    uint64_t restarts_at[RESTART_HISTORY];
    int nrestarts;
    uint64_t last_used_ms;
    model_stats stats;      /* what /metrics and Triton's statistics report (metrics.h) */
    uint64_t load_started_us; /* when the current load began; 0 once its first instance is ready */
    logring logs;           /* the newest worker output */
    struct classify_labels *labels; /* labels.txt, read at the first classification since the last unload (model_labels) */
    char *labels_error;     /* why it could not be read, with labels_read; owned */
    int labels_read;
    double log_tokens;      /* worker lines the daemon's log may take now (on_log_line) */
    uint64_t log_refill_ms;
    uint64_t log_held_lines, log_held_bytes; /* held back from the daemon's log since it last took one */
    struct pull *pulling;   /* its source being pulled before its first instance starts (--pull-on-load); not owned */
    /* Variants (docs/repository.md, "Variants"): dir is the code's directory, the base's for a variant */
    json_t *keys;           /* the manifest's keys as last resolved (repo_entry.keys), or NULL when broken */
    char *from;             /* a variant's base, or NULL */
    char *variant_dir;      /* a variant's own directory (CORRAL_VARIANT_DIR), or NULL */
    /* Where the last scan with a valid manifest found dir and variant_dir: they become dir and
     * variant_dir when a manifest of that scan is installed (a running model keeps its own: a
     * restarted instance runs the code its manifest names) */
    char *scan_dir, *scan_variant_dir;
    json_t *spec;           /* a model created at run time: its keys as created, with from; NULL: it lives on disk */
    uint64_t created_seq;   /* with spec: creation order, bases before their variants (variant.c) */
    int deleting;           /* with spec: a DELETE is unloading it; removed once unloaded */
    int shadow_logged;      /* with spec: a directory of its name on disk was refused, and that logged */
    lifecycle_waiter delete_waiter; /* with deleting: removes the model once its unload is done */
    model *next;
};

/* A log line about the model: its name is a field of the JSON format (log.h). */
#define MODEL_LOG(level, m, ...) log_with((level), &(log_ctx){.model = (m)->name, .instance = -1}, __VA_ARGS__)

/* The one registry: defined in registry.c, read and written by all three files. */
struct registry {
    uv_loop_t *loop;
    char *models_dir;
    char *external_dir;
    char *external_abs; /* external_dir made absolute, for workers (CORRAL_EXTERNAL_MODELS_DIR); NULL: none */
    char *samples_abs;  /* --samples made absolute (CORRAL_SAMPLES_DIR); NULL: none */
    char *python_sdk_dir;
    int64_t stop_grace_ms;
    model *head;
    int shutting_down;
    void (*on_shutdown_done)(void);
    int64_t drain_timeout_ms;
    uv_timer_t drain_timer;
    uv_timer_t deadline_timer; /* armed for the earliest job deadline */
    uv_timer_t watch_timer;    /* while requests run: are their clients still there? (dispatch.c) */
    uv_timer_t tick_timer;     /* once a second: memory samples, limits, autoscaling */
    int64_t memory_budget;     /* bytes; 0: none */
    int pull_on_load;          /* --pull-on-load: a load pulls a declared source whose files are absent */
    uint64_t last_submit_ms;   /* when the last request was submitted */
};
extern struct registry R;

static inline void answer_job(job *j, int status, const char *msg)
{
    j->on_done(j, status, msg, 0, NULL, 0);
    job_free(j);
}

/* ---- variant.c ---- */

/* After a rescan: every run-time model resolved again against its base, bases first. */
void variant_rescan(void);
struct state_snapshot;
/* At start, before the loads of the state file are restored: the run-time models it records are created again. */
void variant_restore(const struct state_snapshot *s);

/* ---- model.c ---- */

void model_set_state(model *m, model_state s, const char *reason);
/* Emits an instance event (events.h): {"model", "instance", "pid"} and extra's members (stolen; may be NULL). */
void model_emit_instance(const char *kind, model *m, const inst *in, json_t *extra);
/* Emits model.scaled: the instance count goes from `from` to `to`, for `why` ("request", "autoscale"). */
void model_emit_scaled(model *m, int from, int to, const char *why);
/* Lets go of the labels read for classification (model_labels); the next call reads them again. */
void model_drop_labels(model *m);
/* dir and variant_dir become the last scan's (scan_dir): a manifest of that scan is being installed. */
void model_take_scan_dirs(model *m);
/* Answers every queued job with status and msg. */
void model_fail_queue(model *m, int status, const char *msg);
/* Calls and empties a list of lifecycle waiters. */
void model_notify(lifecycle_waiter **list, int status, const char *msg);
/* Spawns a process into the slot; on failure the model is FAILED with the reason, and a negative errno returned. */
int model_start_slot(model *m, inst *in);
/* A new idle slot with the lowest free id. */
inst *model_add_slot(model *m);
/* Stops every process of the model; used by unload, failure and shutdown. */
void model_stop_all(model *m);
void model_fail(model *m, const char *reason);
void model_check_unload_done(model *m);

/*
 * The restart budget and backoff, from a manifest's restart section
 * (docs/supervision.md).
 */
typedef struct restart_policy {
    int max_restarts;       /* restarts allowed within window_ms; the exit after them fails the model */
    int64_t window_ms;
    int64_t backoff_min_ms; /* the delay after an exit with no recent restart, doubled for each recent one */
    int64_t backoff_max_ms; /* not less than backoff_min_ms (manifest.c checks) */
} restart_policy;

#define RESTART_GIVE_UP (-1)

/*
 * What to do after an instance's unexpected exit at now: returns the delay
 * in ms before its next start (0: at once), or RESTART_GIVE_UP when the
 * budget is spent. restarts_at holds the times of the model's last
 * nrestarts restarts, in any order; ready_ms is when the process that
 * exited became ready (0: never). *recent gets how many of those restarts
 * fall within the window. Pure: no clock, no state (tests/unit/test_restart.c).
 */
int64_t restart_delay(const restart_policy *p, const uint64_t *restarts_at, int nrestarts, uint64_t now,
                      uint64_t ready_ms, int *recent);

/*
 * Records a restart at now in the history of at most RESTART_HISTORY
 * times, dropping the oldest when it is full. (It once wrote the newest
 * over slot 0 and shifted it out: past 64 restarts none was recorded, the
 * window emptied, and a crash loop never spent its budget.)
 */
void restart_record(uint64_t *restarts_at, int *nrestarts, uint64_t now);

/* ---- dispatch.c ---- */

/*
 * The instance the next job goes to: among the ready slots that are not
 * retiring or being replaced and have fewer than the manifest's
 * concurrency in flight, the one with the fewest in flight, the first such
 * from m->rr on (the caller advances rr after each send, so equally busy
 * instances take turns). NULL when none has room. Reads only; tests/unit/test_dispatch.c.
 */
inst *dispatch_pick(model *m);
/* The instance for a sequence's start: as dispatch_pick, the fewest live sequences first (slot.sequences). */
inst *dispatch_pick_start(model *m);
/* Hands queued jobs to ready instances while one has room. */
void dispatch_jobs(model *m);
/* j's first chunk arrived: from now on its deadline is its stream_timeout. */
void dispatch_stream_started(job *j);
/* Arms the keep_alive timer of a ready model with nothing queued or running. */
void dispatch_arm_idle_timer(model *m);
/*
 * The process of in is gone (its exit, before any restart): every live
 * sequence pinned to it is lost. Its waiting requests are answered 409,
 * and so is each next request of it without sequence_start, for a while.
 */
void dispatch_sequences_lost(model *m, inst *in);
/* Drops every sequence (unload, failure, drain): waiting requests get status and msg. */
void dispatch_drop_sequences(model *m, int status, const char *msg);

/* ---- registry.c ---- */

struct repo_entry;
/* A new model in the list, in name order, from a scanned (or created) entry; registry_apply_entry
 * gives it its manifest. */
model *registry_model_new(const struct repo_entry *e);
/* Takes e's manifest, keys or error: a changed manifest of a running model applies at its next load. */
void registry_apply_entry(model *m, struct repo_entry *e);
/* Out of the list, and freed once its timers are closed: only for a model with no slot. */
void registry_model_remove(model *m);

/* With --memory-budget, unloads idle models to make room for m: 0, or 503 with msg. */
int registry_fit_memory_budget(model *m, int instances, char *msg, size_t msglen);
/* Replaces an instance above limits.memory once it has no request in flight. */
void registry_check_memory_limit(model *m, inst *in);
/* Once a model has no request queued or running during shutdown, its workers go. */
void registry_drain_model(model *m);
/* Calls the shutdown's done once no worker process is left. */
void registry_check_shutdown_done(void);

#endif
