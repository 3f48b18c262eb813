/*
 * session — the context store (session.h, docs/sessions.md).
 *
 * Each session is one allocation: the entry, then its id, content type and
 * content, each NUL-terminated, and immutable once made. A write makes a new
 * entry and takes the old one out of the store, so a request (pin) or a
 * state-file batch (ref) holding the old one keeps reading what it read.
 *
 * Indexes, all over live entries only:
 * - a chained hash table by id (FNV-1a), grown to keep one entry a bucket;
 * - the LRU list, most recently used at the head, evicted from the tail;
 * - a min-heap by expiry; one uv timer armed for its top.
 *
 * Invariants:
 * - live == in the hash table == in the LRU list == in the heap
 *   (heap_index != NO_INDEX); S.count and S.bytes sum the live entries.
 * - an entry is freed once it is not live, not pinned, not in a batch being
 *   written and not waiting in the dirty list (entry_release). Until then a
 *   detached entry's cost is in S.retained, which make_room counts with
 *   S.bytes: held versions cannot take the store past --session-memory.
 * - a removed entry held by the dirty list alone is replaced by a tombstone
 *   (its id only), which is all its deletion from the state file needs.
 * - while restoring (session.h), every id put or removed is in S.touched.
 * - dirty: with a state file, the entries whose change is not yet handed to
 *   it. A live dirty entry is written; a dead one is deleted unless a live
 *   entry of its id exists then (which is dirty itself, and written).
 */
#include "session.h"

#include "access.h"
#include "log.h"
#include "manifest.h"
#include "state.h"
#include "utf8.h"
#include "xmalloc.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>

#define NO_INDEX UINT32_MAX
#define MIN_BUCKETS 64

struct session {
    /* private: the loop thread's */
    session *hash_next;
    session *lru_prev, *lru_next;
    session *dirty_prev, *dirty_next;
    uint64_t hash;
    int64_t expires_ms;
    size_t cost;
    uint32_t heap_index;
    uint32_t pins;     /* requests holding it */
    uint32_t batches;  /* state-file batches holding it */
    uint8_t live, dirty;
    uint8_t retained; /* its cost is in S.retained: taken out of the store, still held */
    /* read-only once made: a state-file batch reads them on the thread pool */
    uint16_t id_len;
    uint16_t type_len;
    size_t size;
    const char *type;
    const uint8_t *data;
    char id[]; /* id NUL, type NUL, data NUL */
};

static struct {
    uv_loop_t *loop;
    session_config cfg;
    int ready;
    int64_t (*now)(void);
    session **buckets;
    size_t n_buckets;
    session *lru_head, *lru_tail;
    session **heap;
    size_t heap_len, heap_cap;
    uv_timer_t expiry_timer;
    int64_t armed_for; /* the heap top's expiry the timer is set for; 0: none */
    uint64_t count, bytes;
    uint64_t retained; /* entries out of the store still held by a pin, a batch or the dirty list */
    uint64_t hits, misses, evictions, expirations;
    /* durability */
    int durable;
    session *dirty_head, *dirty_tail;
    size_t n_dirty;
    int batches_in_flight; /* one at a time from the timer; session_store_flush may add one */
    uv_timer_t flush_timer;
    int flush_armed;
    /* until the state file's sessions are restored: the ids written or removed meanwhile */
    int restoring;
    struct touched {
        struct touched *next;
        uint64_t hash;
        size_t len;
        char id[];
    } **touched;
    size_t n_touched;
} S;

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void session_store_set_clock(int64_t (*now_ms)(void))
{
    S.now = now_ms ? now_ms : wall_ms;
}

int64_t session_now_ms(void)
{
    return S.now ? S.now() : wall_ms();
}

size_t session_cost(size_t idlen, size_t ctlen, size_t len)
{
    /* the entry and its three NULs, a bucket's share and a heap slot */
    return sizeof(session) + idlen + ctlen + len + 3 + 2 * sizeof(session *);
}

int session_id_valid(const char *id, size_t len, char *why, size_t whylen)
{
    if (model_name_valid(id, len))
        return 1;
    char shown[204];
    utf8_shown(id, len, shown, sizeof shown);
    snprintf(why, whylen, "invalid session id '%s': ids match [A-Za-z0-9][A-Za-z0-9._-]{0,127}", shown);
    return 0;
}

int session_type_is_json(const char *type, size_t len)
{
    const char *media;
    size_t media_len;
    access_body_kind_of(type, len, &media, &media_len);
    return media_len == strlen(SESSION_JSON) && strncasecmp(media, SESSION_JSON, media_len) == 0;
}

int session_content_type_valid(const char *type, size_t len)
{
    if (len == 0 || len > 255)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (type[i] < ' ' || type[i] > '~')
            return 0;
    return 1;
}

/* ---- the hash table ---- */

static session **bucket_of(uint64_t hash)
{
    return &S.buckets[hash & (S.n_buckets - 1)];
}

static session *table_get(const char *id, size_t len, uint64_t hash)
{
    for (session *s = *bucket_of(hash); s; s = s->hash_next)
        if (s->hash == hash && s->id_len == len && memcmp(s->id, id, len) == 0)
            return s;
    return NULL;
}

static void table_grow(void)
{
    size_t n = S.n_buckets * 2;
    session **b = xcalloc(n, sizeof *b);
    for (size_t i = 0; i < S.n_buckets; i++)
        for (session *s = S.buckets[i], *next; s; s = next) {
            next = s->hash_next;
            s->hash_next = b[s->hash & (n - 1)];
            b[s->hash & (n - 1)] = s;
        }
    free(S.buckets);
    S.buckets = b;
    S.n_buckets = n;
}

static void table_remove(session *s)
{
    session **at = bucket_of(s->hash);
    while (*at != s)
        at = &(*at)->hash_next;
    *at = s->hash_next;
    s->hash_next = NULL;
}

/* ---- the LRU list ---- */

static void lru_unlink(session *s)
{
    if (s->lru_prev)
        s->lru_prev->lru_next = s->lru_next;
    else
        S.lru_head = s->lru_next;
    if (s->lru_next)
        s->lru_next->lru_prev = s->lru_prev;
    else
        S.lru_tail = s->lru_prev;
    s->lru_prev = s->lru_next = NULL;
}

static void lru_push_head(session *s)
{
    s->lru_prev = NULL;
    s->lru_next = S.lru_head;
    if (S.lru_head)
        S.lru_head->lru_prev = s;
    else
        S.lru_tail = s;
    S.lru_head = s;
}

/* ---- the expiry heap ---- */

static void heap_set(size_t i, session *s)
{
    S.heap[i] = s;
    s->heap_index = (uint32_t)i;
}

static void heap_up(size_t i)
{
    session *s = S.heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (S.heap[parent]->expires_ms <= s->expires_ms)
            break;
        heap_set(i, S.heap[parent]);
        i = parent;
    }
    heap_set(i, s);
}

static void heap_down(size_t i)
{
    session *s = S.heap[i];
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= S.heap_len)
            break;
        if (child + 1 < S.heap_len && S.heap[child + 1]->expires_ms < S.heap[child]->expires_ms)
            child++;
        if (S.heap[child]->expires_ms >= s->expires_ms)
            break;
        heap_set(i, S.heap[child]);
        i = child;
    }
    heap_set(i, s);
}

static void heap_push(session *s)
{
    if (S.heap_len == S.heap_cap) {
        S.heap_cap = S.heap_cap ? S.heap_cap * 2 : 64;
        S.heap = xrealloc(S.heap, S.heap_cap * sizeof *S.heap);
    }
    heap_set(S.heap_len++, s);
    heap_up(S.heap_len - 1);
}

static void heap_remove(session *s)
{
    size_t i = s->heap_index;
    assert(i < S.heap_len && S.heap[i] == s);
    s->heap_index = NO_INDEX;
    session *last = S.heap[--S.heap_len];
    if (last == s)
        return;
    heap_set(i, last);
    heap_up(i);
    heap_down(last->heap_index);
}

static void on_expiry(uv_timer_t *t);

/* Arms the timer for the heap's top, when that changed. */
static void rearm(void)
{
    if (!S.loop)
        return;
    int64_t top = S.heap_len ? S.heap[0]->expires_ms : 0;
    if (top == S.armed_for)
        return;
    S.armed_for = top;
    if (!top) {
        uv_timer_stop(&S.expiry_timer);
        return;
    }
    int64_t delay = top - S.now();
    uv_timer_start(&S.expiry_timer, on_expiry, delay > 0 ? (uint64_t)delay : 0, 0);
}

/* ---- durability ---- */

static void on_flush(uv_timer_t *t);

static void dirty_unlink(session *s)
{
    if (!s->dirty)
        return;
    if (s->dirty_prev)
        s->dirty_prev->dirty_next = s->dirty_next;
    else
        S.dirty_head = s->dirty_next;
    if (s->dirty_next)
        s->dirty_next->dirty_prev = s->dirty_prev;
    else
        S.dirty_tail = s->dirty_prev;
    s->dirty_prev = s->dirty_next = NULL;
    s->dirty = 0;
    S.n_dirty--;
}

/* Notes s's change (written when live, deleted when not) for the next batch. */
static void mark_dirty(session *s)
{
    if (!S.durable || s->dirty)
        return;
    s->dirty = 1;
    s->dirty_next = NULL;
    s->dirty_prev = S.dirty_tail;
    if (S.dirty_tail)
        S.dirty_tail->dirty_next = s;
    else
        S.dirty_head = s;
    S.dirty_tail = s;
    S.n_dirty++;
    if (S.loop && !S.flush_armed && !S.batches_in_flight) {
        S.flush_armed = 1;
        uv_timer_start(&S.flush_timer, on_flush, SESSION_FLUSH_MS, 0);
    }
}

/* ---- entries ---- */

static void entry_release(session *s)
{
    if (s->live || s->pins || s->batches || s->dirty)
        return;
    if (s->retained)
        S.retained -= s->cost;
    free(s);
}

static session *entry_new(const char *id, size_t idlen, uint64_t hash, const char *type, size_t typelen,
                          const uint8_t *data, size_t len, int64_t expires_ms);

/* Queues the deletion of id for the state file: an entry of the id alone, counted as retained until written. */
static void tombstone(const char *id, size_t idlen, uint64_t hash)
{
    session *t = entry_new(id, idlen, hash, "", 0, NULL, 0, 0);
    t->retained = 1;
    S.retained += t->cost;
    mark_dirty(t);
    entry_release(t); /* without a state file it goes at once */
}

/* ---- the ids touched while the state file's sessions are restored ---- */

#define TOUCHED_BUCKETS 4096

static int touched_has(const char *id, size_t len, uint64_t hash)
{
    for (struct touched *t = S.touched[hash & (TOUCHED_BUCKETS - 1)]; t; t = t->next)
        if (t->hash == hash && t->len == len && memcmp(t->id, id, len) == 0)
            return 1;
    return 0;
}

/* Whether id may be touched now: not restoring, already noted, or room for one more. */
static int touched_room(const char *id, size_t len, uint64_t hash)
{
    return !S.restoring || S.n_touched < SESSION_RESTORE_TOUCHED_MAX || touched_has(id, len, hash);
}

/* Notes id as changed since the start, so the file's older copy is not restored (touched_room said yes). */
static void touch(const char *id, size_t len, uint64_t hash)
{
    if (!S.restoring || touched_has(id, len, hash) || S.n_touched >= SESSION_RESTORE_TOUCHED_MAX)
        return;
    struct touched *t = xmalloc(sizeof *t + len);
    t->hash = hash;
    t->len = len;
    memcpy(t->id, id, len);
    struct touched **b = &S.touched[hash & (TOUCHED_BUCKETS - 1)];
    t->next = *b;
    *b = t;
    S.n_touched++;
}

static void touched_free(void)
{
    if (!S.touched)
        return;
    for (size_t i = 0; i < TOUCHED_BUCKETS; i++)
        for (struct touched *t = S.touched[i], *next; t; t = next) {
            next = t->next;
            free(t);
        }
    free(S.touched);
    S.touched = NULL;
    S.n_touched = 0;
    S.restoring = 0;
}

static int touched_refuse(const char *id, size_t len, char *msg, size_t msglen)
{
    snprintf(msg, msglen,
             "session %.*s: the state file's sessions are still being read and %d other sessions have changed "
             "meanwhile; try again once they are restored",
             (int)len, id, SESSION_RESTORE_TOUCHED_MAX);
    return 503;
}

/* Takes a live entry out of the store; why names it for the debug log (NULL: replaced, not logged). */
static void entry_detach(session *s, const char *why)
{
    assert(s->live);
    table_remove(s);
    lru_unlink(s);
    heap_remove(s);
    s->live = 0;
    S.count--;
    S.bytes -= s->cost;
    s->retained = 1; /* until the last holder lets go (entry_release) */
    S.retained += s->cost;
    touch(s->id, s->id_len, s->hash);
    if (why) {
        log_debug("session %s %s (%zu bytes; the store holds %llu sessions, %llu of %llu bytes)", s->id, why, s->size,
                  (unsigned long long)S.count, (unsigned long long)S.bytes, (unsigned long long)S.cfg.memory);
        if (S.durable && !s->pins && !s->batches) {
            dirty_unlink(s);
            tombstone(s->id, s->id_len, s->hash); /* gone: deleted from the state file; the content is freed */
        } else
            mark_dirty(s); /* gone: deleted from the state file */
    } else {
        dirty_unlink(s); /* replaced: its successor is written instead */
    }
    entry_release(s);
}

static void entry_attach(session *s)
{
    if (S.count + 1 > S.n_buckets)
        table_grow();
    session **b = bucket_of(s->hash);
    s->hash_next = *b;
    *b = s;
    lru_push_head(s);
    heap_push(s);
    s->live = 1;
    S.count++;
    S.bytes += s->cost;
    mark_dirty(s);
}

static session *entry_new(const char *id, size_t idlen, uint64_t hash, const char *type, size_t typelen,
                          const uint8_t *data, size_t len, int64_t expires_ms)
{
    session *s = xmalloc(sizeof *s + idlen + typelen + len + 3);
    memset(s, 0, sizeof *s);
    s->hash = hash;
    s->expires_ms = expires_ms;
    s->cost = session_cost(idlen, typelen, len);
    s->heap_index = NO_INDEX;
    s->id_len = (uint16_t)idlen;
    s->type_len = (uint16_t)typelen;
    s->size = len;
    char *p = s->id;
    memcpy(p, id, idlen);
    p[idlen] = 0;
    p += idlen + 1;
    memcpy(p, type, typelen);
    p[typelen] = 0;
    s->type = p;
    p += typelen + 1;
    if (len)
        memcpy(p, data, len);
    p[len] = 0;
    s->data = (const uint8_t *)p;
    return s;
}

static void expire_one(session *s)
{
    S.expirations++;
    entry_detach(s, "expired");
}

/* The live entry of id, expiring it when its time has passed (the timer may not have fired yet). */
static session *lookup(const char *id, size_t len, uint64_t hash)
{
    session *s = table_get(id, len, hash);
    if (s && s->expires_ms <= S.now()) {
        expire_one(s);
        rearm();
        return NULL;
    }
    return s;
}

static uint64_t id_hash(const char *id, size_t len)
{
    return manifest_digest(id, len);
}

/* ---- the API ---- */

void session_store_init(uv_loop_t *loop, const session_config *cfg)
{
    assert(!S.ready);
    memset(&S, 0, sizeof S);
    S.loop = loop;
    S.cfg = *cfg;
    S.now = wall_ms;
    S.n_buckets = MIN_BUCKETS;
    S.buckets = xcalloc(S.n_buckets, sizeof *S.buckets);
    if (loop) {
        uv_timer_init(loop, &S.expiry_timer);
        uv_timer_init(loop, &S.flush_timer);
        uv_unref((uv_handle_t *)&S.expiry_timer); /* neither keeps the loop alive at exit */
        uv_unref((uv_handle_t *)&S.flush_timer);
    }
    S.ready = 1;
}

const session_config *session_store_config(void)
{
    return &S.cfg;
}

session *session_find(const char *id, size_t len, int count)
{
    session *s = len <= UINT16_MAX ? lookup(id, len, id_hash(id, len)) : NULL;
    if (count) {
        if (s)
            S.hits++;
        else
            S.misses++;
    }
    if (s && S.lru_head != s) {
        lru_unlink(s);
        lru_push_head(s);
    }
    return s;
}

const char *session_id(const session *s)
{
    return s->id;
}

const uint8_t *session_data(const session *s)
{
    return s->data;
}

size_t session_size(const session *s)
{
    return s->size;
}

const char *session_content_type(const session *s)
{
    return s->type;
}

int session_is_json(const session *s)
{
    return strcmp(s->type, SESSION_JSON) == 0;
}

int64_t session_expires_ms(const session *s)
{
    return s->expires_ms;
}

/* What evicting s frees now: its cost, less the tombstone that deletes it from the state file. */
static uint64_t evict_frees(const session *s)
{
    return s->cost - (S.durable ? session_cost(s->id_len, 0, 0) : 0);
}

/*
 * Makes room for need more bytes, old (the entry being replaced, or NULL)
 * leaving: evicts least recently used entries that free their memory when
 * evicted (not pinned, not being written to the state file), or returns 507
 * having changed nothing. What the store holds is the live entries and the
 * retained ones (replaced or removed, still held): both count.
 */
static int make_room(uint64_t need, const session *old, char *msg, size_t msglen)
{
    uint64_t old_frees = old && !old->pins && !old->batches ? old->cost : 0;
    uint64_t used = S.bytes + S.retained - old_frees;
    if (used + need <= S.cfg.memory)
        return 0;
    uint64_t freeable = 0;
    if (S.cfg.evict)
        for (session *s = S.lru_tail; s && used - freeable + need > S.cfg.memory; s = s->lru_prev)
            if (!s->pins && !s->batches && s != old)
                freeable += evict_frees(s);
    if (used - freeable + need > S.cfg.memory) {
        snprintf(msg, msglen,
                 "the session store is full: %llu of --session-memory %llu bytes are used (%llu of them by replaced "
                 "or deleted sessions that requests still hold) and %llu more are needed%s; "
                 "raise --session-memory or delete sessions",
                 (unsigned long long)(S.bytes + S.retained), (unsigned long long)S.cfg.memory,
                 (unsigned long long)S.retained, (unsigned long long)need,
                 S.cfg.evict ? " (sessions in use by requests cannot be evicted)" : " (--session-evict off)");
        return 507;
    }
    for (session *s = S.lru_tail, *prev; s && S.bytes + S.retained - old_frees + need > S.cfg.memory; s = prev) {
        prev = s->lru_prev;
        if (s->pins || s->batches || s == old)
            continue;
        S.evictions++;
        entry_detach(s, "evicted (least recently used)");
    }
    return 0;
}

int session_put(const char *id, size_t idlen, const char *content_type, const uint8_t *data, size_t len,
                int64_t ttl_s, int *created, char *msg, size_t msglen)
{
    *created = 0;
    if (!session_id_valid(id, idlen, msg, msglen))
        return 400;
    size_t typelen = strlen(content_type);
    if (!session_content_type_valid(content_type, typelen)) {
        snprintf(msg, msglen, "session %.*s: a content type must be 1 to 255 bytes of printable ASCII", (int)idlen,
                 id);
        return 400;
    }
    if (ttl_s < 0 || ttl_s > S.cfg.max_ttl_s) {
        snprintf(msg, msglen, "session %.*s: ttl %lld is not from 1 to --session-max-ttl %lld seconds", (int)idlen, id,
                 (long long)ttl_s, (long long)S.cfg.max_ttl_s);
        return 400;
    }
    if (len > S.cfg.max_size) {
        snprintf(msg, msglen, "session %.*s: %zu bytes is larger than --session-max-size %llu bytes", (int)idlen, id,
                 len, (unsigned long long)S.cfg.max_size);
        return 413;
    }
    uint64_t hash = id_hash(id, idlen);
    if (!touched_room(id, idlen, hash))
        return touched_refuse(id, idlen, msg, msglen);
    session *old = lookup(id, idlen, hash);
    size_t cost = session_cost(idlen, typelen, len);
    int rc = make_room(cost, old, msg, msglen);
    if (rc)
        return rc;
    int64_t now = S.now();
    session *s = entry_new(id, idlen, hash, content_type, typelen, data, len,
                           now + (ttl_s ? ttl_s : S.cfg.default_ttl_s) * 1000);
    if (old)
        entry_detach(old, NULL);
    else
        log_debug("session %s created (%zu bytes, %s)", s->id, len, s->type);
    *created = !old;
    touch(id, idlen, hash);
    entry_attach(s);
    rearm();
    return 0;
}

int session_restore(const char *id, size_t idlen, const char *content_type, const uint8_t *data, size_t len,
                    int64_t expires_ms)
{
    char why[256];
    size_t typelen = strlen(content_type);
    if (!session_id_valid(id, idlen, why, sizeof why) || !session_content_type_valid(content_type, typelen) ||
        len > S.cfg.max_size)
        return -1;
    uint64_t hash = id_hash(id, idlen);
    if (table_get(id, idlen, hash))
        return 0; /* written since the start: newer */
    if (S.restoring && touched_has(id, idlen, hash)) {
        tombstone(id, idlen, hash); /* written and removed, or deleted, since the start: gone from the file too */
        return 0;
    }
    if (expires_ms <= S.now() || S.bytes + S.retained + session_cost(idlen, typelen, len) > S.cfg.memory) {
        tombstone(id, idlen, hash); /* not live: deleted from the file too, which keeps matching the store */
        return -1;
    }
    session *s = entry_new(id, idlen, hash, content_type, typelen, data, len, expires_ms);
    int durable = S.durable;
    S.durable = 0; /* it is in the file already */
    entry_attach(s);
    S.durable = durable;
    rearm();
    return 0;
}

void session_restore_done(void)
{
    touched_free();
}

int session_restoring(void)
{
    return S.restoring;
}

int session_delete(const char *id, size_t len)
{
    if (len > UINT16_MAX)
        return 404;
    uint64_t hash = id_hash(id, len);
    if (!touched_room(id, len, hash))
        return 503;
    session *s = lookup(id, len, hash);
    if (!s) {
        touch(id, len, hash); /* the state file may hold it, not yet read: it is not restored */
        return 404;
    }
    entry_detach(s, "deleted");
    rearm();
    return 0;
}

void session_pin(session *s)
{
    s->pins++;
}

void session_unpin(session *s)
{
    assert(s->pins > 0);
    s->pins--;
    entry_release(s);
}

void session_expire(void)
{
    int64_t now = S.now();
    while (S.heap_len && S.heap[0]->expires_ms <= now)
        expire_one(S.heap[0]);
    rearm();
}

static void on_expiry(uv_timer_t *t)
{
    (void)t;
    S.armed_for = 0;
    session_expire();
}

static int by_id(const void *a, const void *b)
{
    const session *x = *(session *const *)a, *y = *(session *const *)b;
    size_t n = x->id_len < y->id_len ? x->id_len : y->id_len;
    int c = memcmp(x->id, y->id, n);
    return c ? c : (x->id_len > y->id_len) - (x->id_len < y->id_len);
}

void session_list(void (*fn)(const session *s, void *ctx), void *ctx)
{
    session_expire(); /* the expired, not yet collected, are not listed */
    if (!S.count)
        return;
    session **all = xmalloc(S.count * sizeof *all);
    size_t n = 0;
    for (session *s = S.lru_head; s; s = s->lru_next)
        all[n++] = s;
    assert(n == S.count);
    qsort(all, n, sizeof *all, by_id);
    for (size_t i = 0; i < n; i++)
        fn(all[i], ctx);
    free(all);
}

void session_stats_get(session_stats *out)
{
    *out = (session_stats){.count = S.count,
                           .bytes = S.bytes,
                           .retained = S.retained,
                           .hits = S.hits,
                           .misses = S.misses,
                           .evictions = S.evictions,
                           .expirations = S.expirations};
}

/* ---- batches for the state file ---- */

static void on_batch_written(state_session_batch *b)
{
    session **held = b->data;
    if (b->error)
        log_warn("session changes (%zu) were not recorded in the state file: %s", b->n, b->error);
    for (size_t i = 0; i < b->n; i++) {
        held[i]->batches--;
        entry_release(held[i]);
    }
    free(held);
    free(b->ops);
    free(b->error);
    free(b);
    S.batches_in_flight--;
    if (S.n_dirty && S.loop && !S.flush_armed && !S.batches_in_flight) {
        S.flush_armed = 1;
        uv_timer_start(&S.flush_timer, on_flush, SESSION_FLUSH_MS, 0);
    }
}

/* Hands the marked sessions to the state file as one batch. */
static void flush_batch(void)
{
    if (!S.durable || !S.n_dirty)
        return;
    state_session_batch *b = xcalloc(1, sizeof *b);
    b->ops = xmalloc(S.n_dirty * sizeof *b->ops);
    session **held = xmalloc(S.n_dirty * sizeof *held);
    size_t n = 0;
    while (S.dirty_head) {
        session *s = S.dirty_head;
        dirty_unlink(s);
        if (!s->live && table_get(s->id, s->id_len, s->hash)) {
            entry_release(s); /* deleted, then written again: the live one is written */
            continue;
        }
        s->batches++;
        held[n] = s;
        b->ops[n++] = (state_session_op){.id = s->id,
                                         .id_len = s->id_len,
                                         .content_type = s->live ? s->type : NULL,
                                         .data = s->data,
                                         .len = s->size,
                                         .expires_ms = s->expires_ms};
    }
    b->n = n;
    b->data = held;
    b->on_written = on_batch_written;
    S.batches_in_flight++;
    state_note_sessions(b);
}

void session_store_flush(void)
{
    flush_batch(); /* even while one is being written: state.c writes them in order */
}

static void on_flush(uv_timer_t *t)
{
    (void)t;
    S.flush_armed = 0;
    if (!S.batches_in_flight) /* else on_batch_written arms the timer again */
        flush_batch();
}

void session_store_durable(void)
{
    S.durable = 1;
    S.restoring = 1;
    S.touched = xcalloc(TOUCHED_BUCKETS, sizeof *S.touched);
}

void session_store_close(void)
{
    if (!S.ready)
        return;
    while (S.lru_head)
        entry_detach(S.lru_head, NULL);
    while (S.dirty_head) {
        session *s = S.dirty_head;
        dirty_unlink(s);
        entry_release(s);
    }
    touched_free();
    free(S.buckets);
    free(S.heap);
    if (S.loop) {
        uv_close((uv_handle_t *)&S.expiry_timer, NULL);
        uv_close((uv_handle_t *)&S.flush_timer, NULL);
    }
    S.buckets = NULL;
    S.heap = NULL;
    S.ready = 0;
}
