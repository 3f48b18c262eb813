/*
 * session — the daemon's context store (docs/sessions.md): named pieces of
 * application state (a JSON document, or bytes of a content type) that
 * clients write with /v1/sessions and that requests naming a session carry
 * to their model, which may answer with an update.
 *
 * Contract:
 * - Loop thread only. Every call is O(1) or O(log n) in the number of
 *   sessions, except session_list; nothing scans the store per request.
 * - Ids are validated like model names (session_id_valid).
 * - Memory. The store counts each session's id, content and bookkeeping
 *   against --session-memory. A write that would pass it evicts the least
 *   recently used sessions that are not pinned; when that is not enough (or
 *   eviction is off) the write fails with 507 and a message saying so,
 *   and nothing changes. A replaced or removed session still held (a pin,
 *   a state-file batch) counts until let go (session_stats.retained). A write larger than --session-max-size fails with 413.
 * - Expiry. Each session expires ttl seconds after its last write (reads do
 *   not extend it); one timer, armed for the earliest expiry (a min-heap),
 *   removes expired sessions; a session past its expiry is never returned,
 *   even before the timer has fired.
 * - Pinning. A request that carries a session pins it from the moment it is
 *   accepted until it is answered, so the session its update will replace
 *   is not evicted under it (it can still expire).
 * - Durability. With a state file (state.h) every change is queued for it
 *   and written off the loop thread in batches; at start the stored
 *   sessions that have not expired are restored. Without one the store is
 *   memory only.
 */
#ifndef CORRAL_SESSION_H
#define CORRAL_SESSION_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define SESSION_DEFAULT_TTL_S 3600
#define SESSION_DEFAULT_MAX_TTL_S 86400
#define SESSION_DEFAULT_MEMORY (256ull << 20)
#define SESSION_DEFAULT_MAX_SIZE (1ull << 20)
/* The content type of a JSON session. */
#define SESSION_JSON "application/json"

typedef struct session_config {
    int64_t default_ttl_s; /* a write that names no ttl */
    int64_t max_ttl_s;     /* a larger ttl is refused with 400 */
    uint64_t memory;       /* --session-memory: the whole store's ceiling, in bytes */
    uint64_t max_size;     /* --session-max-size: one session's content, in bytes */
    int evict;             /* 1: a full store evicts least recently used; 0: it answers 507 */
} session_config;

typedef struct session session;

/* Sets the store up; call once, before any other call. */
void session_store_init(uv_loop_t *loop, const session_config *cfg);
const session_config *session_store_config(void);

/* Whether id (len bytes) is a valid session id; fills why (for a 400) when not. */
int session_id_valid(const char *id, size_t len, char *why, size_t whylen);

/*
 * Whether a content type (len bytes, parameters allowed) names JSON: its
 * media type is application/json, in any case. A PUT of such a body and a
 * model's update of such a type are both JSON sessions (stored as
 * SESSION_JSON), never bytes.
 */
int session_type_is_json(const char *type, size_t len);

/* Whether a content type (len bytes) may be stored: 1 to 255 bytes of printable ASCII. */
int session_content_type_valid(const char *type, size_t len);

/*
 * The live session named id, or NULL (absent or expired). Marks it most
 * recently used. count: 1 for a request carrying the session (a hit or a
 * miss in the metrics), 0 for the management endpoints.
 */
session *session_find(const char *id, size_t len, int count);

const char *session_id(const session *s);
/* The content: its bytes, its length, its type (SESSION_JSON for JSON). */
const uint8_t *session_data(const session *s);
size_t session_size(const session *s);
const char *session_content_type(const session *s);
int session_is_json(const session *s);
/* When it expires, in milliseconds since the Unix epoch. */
int64_t session_expires_ms(const session *s);

/*
 * Creates or replaces the session id with len bytes of data of
 * content_type (SESSION_JSON: data is one JSON value, already validated
 * by the caller), to expire ttl_s seconds from now (0: the default).
 * Returns 0; or 400 (bad id or ttl), 413 (too large) or 507 (no room) with
 * msg filled, and the store unchanged. *created is set to whether it is new.
 */
int session_put(const char *id, size_t idlen, const char *content_type, const uint8_t *data, size_t len,
                int64_t ttl_s, int *created, char *msg, size_t msglen);

/*
 * Removes the session; returns 0, or 404 when there is none, or 503 while
 * restoring (see session_restore) when too many ids changed meanwhile.
 */
int session_delete(const char *id, size_t len);

/*
 * A request carrying the session holds it from acceptance to answer (see
 * Pinning). A pinned session that expires or is deleted leaves the store at
 * once (session_find no longer returns it), but its memory stays valid
 * until the last unpin.
 */
void session_pin(session *s);
void session_unpin(session *s);

/* Calls fn for every live session, in id order. */
void session_list(void (*fn)(const session *s, void *ctx), void *ctx);

typedef struct session_stats {
    uint64_t count, bytes;      /* live sessions, and what they count against the ceiling */
    uint64_t retained;          /* replaced or removed sessions still held (a request, a state-file batch);
                                   they count against the ceiling too, but are not evictable */
    uint64_t hits, misses;      /* requests that named a session, by whether it was there */
    uint64_t evictions, expirations;
} session_stats;

void session_stats_get(session_stats *out);

/* Frees every session (at exit, after the last request). */
void session_store_close(void);

/*
 * What one session counts against --session-memory: its content, its id,
 * its content type and the store's bookkeeping for it (the entry, its
 * hash-table and heap slots).
 */
size_t session_cost(size_t idlen, size_t ctlen, size_t len);

/* Removes every session whose expiry has passed: what the timer does (tests call it with their own clock). */
void session_expire(void);

/* The store's clock, milliseconds since the Unix epoch; tests replace it (NULL: the wall clock again). */
void session_store_set_clock(int64_t (*now_ms)(void));
int64_t session_now_ms(void);

/*
 * Durability (state.h). session_store_durable: from now on every change is
 * queued for the state file, written in batches (at most every
 * SESSION_FLUSH_MS, one transaction each). session_store_flush: hands what
 * is queued to the state file now (before state_close, at exit).
 * session_restore: a session read back at start; one already in the store,
 * or changed since the start, is newer and wins. Returns 0, or -1 when it does
 * not fit, has expired or is not valid (one that does not fit or has
 * expired is then deleted from the state file).
 */
#define SESSION_FLUSH_MS 100
/*
 * From session_store_durable until session_restore_done the store is
 * restoring: it notes every id put, deleted (found or not), evicted or
 * expired, and session_restore neither restores those ids nor keeps their
 * rows (the change since the start wins, a delete included). At most
 * SESSION_RESTORE_TOUCHED_MAX ids are noted; a put or delete of another id
 * is then refused with 503 until the restore is done.
 */
#define SESSION_RESTORE_TOUCHED_MAX 65536
void session_store_durable(void);
void session_restore_done(void);
int session_restoring(void);
void session_store_flush(void);
int session_restore(const char *id, size_t idlen, const char *content_type, const uint8_t *data, size_t len,
                    int64_t expires_ms);

#endif
