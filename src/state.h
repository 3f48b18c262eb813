/*
 * state — what the daemon keeps across a restart (`--state FILE`, SQLite):
 * the models an operator loaded explicitly, at the scale they set and with
 * their load's config, and the models that were pulled (docs/repository.md).
 *
 * Contract:
 * - Threads. The state_note_* calls, state_start and state_close run on the
 *   loop thread and never touch SQLite: a note is queued (coalesced per
 *   model: a pending change that a newer one replaces is never written) and
 *   the file is written on libuv's thread pool, one work at a time, so the
 *   one connection is used by one thread at a time. The state_db_* calls
 *   are that work: synchronous, touching no daemon state (the unit tests
 *   call them directly).
 * - Transactions. Every change is one transaction (rollback journal,
 *   synchronous=FULL); a crash leaves the file as it was before or after it.
 * - Failures are never fatal: a file that cannot be opened, is locked by
 *   another daemon, or was written by a newer corral is reported and the
 *   daemon runs without state; a corrupt one is moved aside
 *   (FILE.corrupt-<UTC time>) and a new one started; a change that cannot
 *   be written is reported and dropped.
 * - Sessions (session.h) come in batches, each written in one transaction
 *   after the model changes queued before it; the batch points into the
 *   sessions it writes, which session.c keeps until on_written.
 * - Memory. The queue holds at most one change per model and per pull; a
 *   state file is read up to STATE_MAX_ROWS rows per table, configs up to
 *   STATE_MAX_CONFIG bytes; what is past the limits is reported and skipped.
 */
#ifndef CORRAL_STATE_H
#define CORRAL_STATE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define STATE_DEFAULT_NAME "corral-state.db"
#define STATE_SCHEMA_VERSION 2 /* 2: the sessions table (runtime_models, created when absent, came with it) */
#define STATE_MAX_ROWS 4096
#define STATE_MAX_CONFIG (1 << 20)
#define STATE_MAX_URL 4096

/* A model recorded as loaded. */
typedef struct state_model {
    char *name;     /* owned */
    int instances;  /* 0: the manifest's count */
    json_t *config; /* the load's config (a JSON object, owned), or NULL: model.yaml as it is */
} state_model;

/* A model recorded as pulled. */
typedef struct state_pull {
    char *name, *url, *sha256; /* owned */
} state_pull;

/* A model created at run time (POST /v1/models, variant.h). */
typedef struct state_runtime {
    char *name;   /* owned */
    json_t *spec; /* its keys as created, `from` among them (a JSON object, owned) */
} state_runtime;

/* What a state file holds, as read at start. */
typedef struct state_snapshot {
    state_model *models;
    size_t n_models;
    state_pull *pulls;
    size_t n_pulls;
    state_runtime *runtime;
    size_t n_runtime;
} state_snapshot;

void state_snapshot_free(state_snapshot *s);

/* Called once, on the loop thread, with what to restore; the snapshot is freed after it returns. */
typedef void (*state_restore_cb)(const state_snapshot *s);

/*
 * Opens path (NULL: no state; every note is then ignored) on the thread
 * pool, reads it, and calls on_restore with the models to load again:
 * those recorded as loaded, less any model noted since state_start (an
 * operator's change made while the file was being read wins over it).
 * Returns at once.
 */
void state_start(uv_loop_t *loop, const char *path, state_restore_cb on_restore);

/*
 * An explicit load or scale was accepted: the model is to be loaded with
 * instances (0: the manifest's count) and config (NULL: model.yaml; not
 * stolen). Lazy loads, keep_alive unloads, autoscaling, memory-budget
 * unloads and restores are not noted (docs/repository.md).
 */
void state_note_loaded(const char *name, int instances, const json_t *config);
/* An explicit unload was accepted: the model's record goes. */
void state_note_unloaded(const char *name);
/*
 * A model was pulled from url, its archive's digest sha256 (64 hex
 * digits): recorded, replacing an earlier pull of the same name. Returns 0,
 * or -EINVAL (logged) for a name, URL or digest that is not valid.
 */
int state_note_pull(const char *name, const char *url, const char *sha256);

/*
 * A model was created at run time with spec (its keys with `from`, a JSON
 * object; not stolen): recorded, to be created again at the next start.
 * state_note_deleted removes the record.
 */
void state_note_created(const char *name, const json_t *spec);
void state_note_deleted(const char *name);
/*
 * Whether the file is still being read: a change noted now wins over the
 * file's record of the same name (state_start), even the removal of a
 * record only the file holds yet.
 */
int state_restoring(void);

/*
 * Writes what is still queued, closes the file and calls on_done (at once
 * when there is no state). Notes after this are dropped.
 */
void state_close(void (*on_done)(void));

/* ---- sessions (session.h) ---- */

/* One session's change: written (content_type set) or deleted (content_type NULL). */
typedef struct state_session_op {
    const char *id; /* not owned: valid until the batch's on_written */
    size_t id_len;
    const char *content_type;
    const uint8_t *data;
    size_t len;
    int64_t expires_ms; /* Unix milliseconds */
} state_session_op;

typedef struct state_session_batch {
    state_session_op *ops; /* owned by whoever made the batch */
    size_t n;
    char *error; /* set (malloc'd) when the write failed */
    /* Called once, on the loop thread: written, failed (error set), or dropped (no state file). */
    void (*on_written)(struct state_session_batch *b);
    void *data; /* the maker's */
    struct state_session_batch *next; /* private */
} state_session_batch;

/* Queues a batch; with no state file (or after state_close) on_written is called at once. */
void state_note_sessions(state_session_batch *b);

/* A session as read back at start. */
typedef struct state_session {
    char *id, *content_type; /* owned */
    uint8_t *data;           /* owned */
    size_t len;
    int64_t expires_ms;
} state_session;

/* What the sessions restored at start may take: the store's ceiling and one session's cap, and session_cost. */
typedef struct state_session_limits {
    uint64_t memory, max_size;
    size_t (*cost)(size_t idlen, size_t ctlen, size_t len);
} state_session_limits;

/*
 * Before state_start: have the sessions read back too, within limits, and
 * handed to on_sessions (loop thread, once, before on_restore; the array is
 * freed after it returns).
 */
void state_restore_sessions(const state_session_limits *limits,
                            void (*on_sessions)(const state_session *s, size_t n));

/* ---- pure parts (unit-tested) ---- */

/* The default state file: STATE_DEFAULT_NAME in the parent directory of models_dir. Returns 0 or -ENAMETOOLONG. */
int state_default_path(const char *models_dir, char *out, size_t outlen);

/* config as stored: compact JSON with sorted keys (malloc'd), or NULL for NULL. */
char *state_encode_config(const json_t *config);

/*
 * A row of the models table as read (name of name_len bytes, instances,
 * config text or NULL) checked and decoded into out. Returns 0, or -1 with
 * why in err: a name that is not a model name, instances out of 0..
 * MANIFEST_MAX_INSTANCES, a config that is not a JSON object or too large.
 */
int state_decode_model(const char *name, size_t name_len, int64_t instances, const char *config, size_t config_len,
                       state_model *out, char *err, size_t errlen);

/* Whether a pull record is valid: a model name, a URL of printable ASCII, a SHA-256 of 64 hex digits. */
int state_pull_valid(const char *name, const char *url, const char *sha256, char *err, size_t errlen);

/*
 * The restore plan: removes from s->models and s->runtime every model for
 * which noted(name, ctx) is true (changed since start), keeping the order.
 */
void state_plan(state_snapshot *s, int (*noted)(const char *name, void *ctx), void *ctx);

/* One change to write. */
typedef enum state_op_kind {
    STATE_PUT_MODEL, /* name loaded, with instances and config */
    STATE_DEL_MODEL, /* name's record removed */
    STATE_PUT_PULL,  /* name pulled from url with sha256 */
    STATE_PUT_RUNTIME, /* name created at run time, its spec in config */
    STATE_DEL_RUNTIME, /* name's run-time record removed */
} state_op_kind;

typedef struct state_op {
    state_op_kind kind;
    char *name;       /* owned */
    int instances;    /* STATE_PUT_MODEL */
    char *config;     /* STATE_PUT_MODEL: encoded (state_encode_config), or NULL; STATE_PUT_RUNTIME: the spec; owned */
    char *url;        /* STATE_PUT_PULL; owned */
    char *sha256;     /* STATE_PUT_PULL; owned */
    int64_t at;       /* when, in Unix seconds */
    char *error;      /* set by state_db_apply when it failed; owned */
    struct state_op *next;
} state_op;

void state_op_free(state_op *op);

/*
 * Appends op to the queue at *head, or replaces the queued change to the
 * same record (the models table for STATE_PUT_MODEL and STATE_DEL_MODEL,
 * the pulls table for STATE_PUT_PULL, the runtime_models table for
 * STATE_PUT_RUNTIME and STATE_DEL_RUNTIME) in its place, freeing that one.
 */
void state_queue_put(state_op **head, state_op *op);

/* ---- the file (thread pool; tests call these directly) ---- */

typedef struct state_db state_db;

/*
 * Opens or creates path and reads it into snap. Returns 0 with *db set,
 * or -1 with *db NULL (run without state). Either way *report may be set
 * (malloc'd): warnings for the log, one a line, naming the file and
 * SQLite's error (a new file, a corrupt one moved aside, rows skipped).
 * now names a moved-aside file.
 */
int state_db_open(const char *path, int64_t now, state_db **db, state_snapshot *snap, char **report);
/* Writes one change in one transaction. Returns 0, or -1 with op->error set. */
int state_db_apply(state_db *db, state_op *op);
void state_db_close(state_db *db);
/* Writes a batch of session changes in one transaction. Returns 0, or -1 with b->error set. */
int state_db_apply_sessions(state_db *db, state_session_batch *b);
/*
 * Reads the sessions that have not expired at now_ms, those with the most
 * time left first, while they fit limits; the rest (expired, past the
 * ceiling, or not valid) are deleted from the file, and *report says how
 * many (malloc'd, or NULL). Returns 0 with *out (n of them), or -1.
 */
int state_db_read_sessions(state_db *db, int64_t now_ms, const state_session_limits *limits, state_session **out,
                           size_t *n, char **report);
void state_sessions_free(state_session *s, size_t n);

#endif
