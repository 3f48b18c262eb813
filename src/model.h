/*
 * model — the model registry and each model's lifecycle: lazy and explicit
 * load, unload, scaling, supervision of its instances, and dispatch of its
 * queued jobs to idle instances. Implemented by registry.c (the list,
 * rescans, the tick, the memory budget, shutdown), model.c (one model's
 * lifecycle and its instances), dispatch.c (submit, dispatch, deadlines)
 * and variant.c (models created at run time, variant.h), which share
 * model_internal.h.
 *
 * State machine (docs/supervision.md):
 *   unloaded -> loading -> ready -> unloading -> unloaded
 *   loading|ready -> failed (load raised, or restarts exhausted)
 *   failed -> loading (explicit load only)
 * One function, model_set_state, performs and logs every transition.
 * Loop thread only; everything here is owned by the registry.
 */
#ifndef CORRAL_MODEL_H
#define CORRAL_MODEL_H

#include "inst.h"
#include "manifest.h"
#include "job.h"

#include <jansson.h>
#include <stdint.h>
#include <uv.h>

typedef enum model_state {
    MODEL_UNLOADED,
    MODEL_LOADING,
    MODEL_READY,
    MODEL_UNLOADING,
    MODEL_FAILED,
} model_state;

typedef struct model model;

/* A caller waiting for a load or unload to finish: status 200, or an error with msg. */
typedef struct lifecycle_waiter {
    void (*on_done)(void *ctx, int status, const char *msg);
    void *ctx;
    struct lifecycle_waiter *next;
} lifecycle_waiter;

typedef struct registry_config {
    const char *models_dir;
    const char *external_dir; /* NULL: none */
    const char *samples_dir;  /* NULL: none */
    const char *python_sdk_dir;
    int64_t stop_grace_ms;    /* SHUTDOWN to SIGTERM, and SIGTERM to SIGKILL */
    int64_t drain_timeout_ms; /* on shutdown, how long queued and running requests may finish */
    int64_t memory_budget;    /* bytes all loaded models may use together; 0: no budget */
    int pull_on_load;         /* a load of a model whose source's files are absent pulls them first */
} registry_config;

/* Initialises the registry and scans the repository once; starts eager models. */
int registry_init(uv_loop_t *loop, const registry_config *cfg);

/*
 * Rescans the repository (links external models first): new models appear,
 * changed manifests are noted (and used from the next load), vanished
 * unloaded models disappear. Returns 0 or a negative errno.
 */
int registry_rescan(void);

/*
 * Stops every instance: queued requests get 503, requests in flight may
 * finish within the drain timeout. on_done runs once no worker process is left.
 */
void registry_shutdown(void (*on_done)(void));

/*
 * Samples the resident memory of every instance of `only`, or of every
 * model when NULL, in one pass over /proc (the tick does this each second;
 * a view that shows memory calls it first for fresh figures).
 */
void registry_sample_rss(model *only);

/* Whether registry_shutdown has begun: the daemon is draining and takes no new work. */
int registry_draining(void);

model *model_find(const char *name, size_t len);
/* Iteration in name order: pass NULL to start. */
model *model_next(model *m);

const char *model_name(const model *m);
model_state model_get_state(const model *m);
/* Whether the manifest on disk differs from the one the model runs (it applies at the next load). */
int model_changed(const model *m);
/* Whether the model was created at run time (variant.h), not found in the repository. */
int model_is_runtime(const model *m);
const char *model_state_name(model_state s);
/* Reason for failed, or NULL. */
const char *model_reason(const model *m);
/* The manifest the model runs (or would load) with; NULL when broken. */
const manifest *model_manifest(const model *m);

/*
 * Accepts a job: queues it (loading the model first when unloaded) and
 * dispatches what it can. Returns 0, or an HTTP status (404, 503) with msg
 * filled, in which case the caller still owns the job. retry_after is set
 * in seconds for 503.
 */
int model_submit(model *m, job *j, char *msg, size_t msglen, int *retry_after);

/*
 * The client of j went away. A queued job is withdrawn: returns 1 (the
 * caller frees it). A running one stays with its instance, whose worker is
 * told to CANCEL when it can be: returns 0 (its answer will be dropped).
 */
int model_cancel(job *j);

/*
 * Loads the model with instances (0: the manifest's count) and calls w->on_done
 * when every instance has started or given up. Returns 0, or 409 when the
 * model is unloading, with msg.
 */
int model_load(model *m, int instances, lifecycle_waiter *w, char *msg, size_t msglen);

/*
 * An explicit load (POST /v2/repository/models/{name}/load): with config
 * (a JSON object of manifest keys) the model loads with model.yaml as it is
 * now, config merged over it (manifest_parse_override), and keeps that
 * config through unloads and lazy loads until the next explicit load;
 * without one, a model running a config goes back to model.yaml, and any
 * other loads as model_load does. A model loaded or loading is reloaded:
 * unloaded (running requests finish, queued ones get 503), then loaded.
 * Returns 0 (w->on_done follows), 400 (a bad config: nothing changed),
 * 409 (unloading) or 503, with msg.
 */
int model_load_config(model *m, const json_t *config, int instances, lifecycle_waiter *w, char *msg, size_t msglen);
/* (An accepted load is noted in the state file, state.h, with its count and config.) */

/*
 * The load of a restart's restore (registry_restore): model_load_config
 * with no waiter and no note in the state file (it is what the file says).
 */
int model_restore(model *m, const json_t *config, int instances, char *msg, size_t msglen);

/*
 * Unloads; w->on_done runs once every worker has exited. Returns 0 or 409.
 * A waiter means a client's unload, which the state file notes; the
 * daemon's own unloads (keep_alive, the memory budget, a reload) pass NULL.
 */
int model_unload(model *m, lifecycle_waiter *w, char *msg, size_t msglen);

/* Sets the instance count of a loaded model, noted in the state file. Returns 0, 400 or 409 with msg. */
int model_scale(model *m, int instances, char *msg, size_t msglen);

struct state_snapshot;
/*
 * At start, once the state file is read (state.h): loads every model it
 * records as loaded, at its count and with its config; a model no longer
 * in the repository, or one that cannot load, is logged as a warning (its
 * record is kept), as is a pulled model that is gone.
 */
void registry_restore(const struct state_snapshot *s);

/* Removes a waiter whose client went away. */
void model_forget_waiter(model *m, lifecycle_waiter *w);

struct model_stats;
/* What the metrics count about the model (metrics.h). */
const struct model_stats *model_stats_get(const model *m);
/* Requests waiting: in the model's queue and in its sequences' FIFOs. */
size_t model_queue_depth(const model *m);
/* Live sequences of the model (docs/sessions.md, "Sequences"). */
size_t model_sequences_active(const model *m);
/* The model's instances (slots), in id order of creation: sets *slots and returns how many. */
int model_instances(const model *m, inst *const **slots);

/* /v1 view of a model (state, queue, instances), with the memory figures of the last sample (registry_sample_rss). */
json_t *model_to_json(model *m);
/*
 * Whether a request sent now would be served (GET /v2/models/{name}/ready):
 * the model is ready or loading, or unloaded with a valid manifest (it
 * loads on demand). Not when failed, unloading, broken, or the daemon stops.
 */
int model_takes_requests(const model *m);
/* Triton's model configuration of the model (modelcfg.h); NULL when its manifest is broken. */
json_t *model_config_json(model *m);
/* v2 metadata: inputs and outputs from the manifest, else from the worker. */
json_t *model_metadata_json(model *m);
/*
 * The declared inputs (outputs) that requests are checked against, from
 * the same source as the metadata: the manifest's, else the first
 * instance's READY; NULL when none are declared. Valid until the model's
 * manifest or instances change: use at once.
 */
const decl_list *model_declared_inputs(const model *m);
const decl_list *model_declared_outputs(const model *m);
struct classify_labels;
/*
 * The model's labels.txt for classification, as a new reference (NULL:
 * the model has none), read once per load: at the first call since the
 * model was last unloaded or failed. Returns 0, or -1 with the reason
 * (the file is unreadable or too large) in err.
 */
int model_labels(model *m, struct classify_labels **out, char *err, size_t errlen);
/* The captured worker output (the newest part that fits the log buffer). */
const char *model_logs(model *m, size_t *len, size_t *start_cut);

#endif
