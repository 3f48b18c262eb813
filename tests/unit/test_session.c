/*
 * Unit tests of session, the context store: ids, put and replace, the
 * limits (413, 400 on ttl, 507 with and without eviction), LRU order and
 * eviction that skips pinned sessions, expiry on an injected clock (a
 * session past its expiry is never returned), delete and expiry of a
 * pinned session, list order and stats; and the store's own timer on a
 * real loop.
 */
#include "check.h"
#include "session.h"
#include "state.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int64_t fake_now = 1764600000000; /* 2025-12-01T14:40:00Z */
static int64_t fake_clock(void)
{
    return fake_now;
}

static void store(uint64_t memory, int evict)
{
    session_config cfg = {.default_ttl_s = 60, .max_ttl_s = 600, .memory = memory, .max_size = 1000, .evict = evict};
    session_store_init(NULL, &cfg);
    session_store_set_clock(fake_clock);
}

static int put(const char *id, const char *text, int64_t ttl, char *msg)
{
    int created;
    return session_put(id, strlen(id), SESSION_JSON, (const uint8_t *)text, strlen(text), ttl, &created, msg, 256);
}

static session *find(const char *id)
{
    return session_find(id, strlen(id), 0);
}

/* What a session of id and n bytes of content costs. */
static size_t cost(const char *id, size_t n)
{
    return session_cost(strlen(id), strlen(SESSION_JSON), n);
}

static void ids_are_checked_like_model_names(void)
{
    char why[256];
    CHECK(session_id_valid("chat-1.a_b", 10, why, sizeof why));
    CHECK(!session_id_valid("", 0, why, sizeof why));
    CHECK(!session_id_valid("-x", 2, why, sizeof why));
    CHECK(!session_id_valid("a/b", 3, why, sizeof why));
    CHECK_STR_CONTAINS(why, "invalid session id 'a/b'");
    char longid[130];
    memset(longid, 'a', sizeof longid);
    CHECK(session_id_valid(longid, 128, why, sizeof why));
    CHECK(!session_id_valid(longid, 129, why, sizeof why));
    CHECK(session_content_type_valid("audio/wav", 9));
    /* JSON by its media type, in any case, parameters ignored: one helper for PUT and a model's update */
    CHECK(session_type_is_json("application/json", 16));
    CHECK(session_type_is_json("APPLICATION/JSON", 16));
    CHECK(session_type_is_json(" application/json ; charset=utf-8", 34));
    CHECK(!session_type_is_json("application/jsonl", 17));
    CHECK(!session_type_is_json("application/json-seq", 20));
    CHECK(!session_type_is_json("text/json", 9));
    CHECK(!session_content_type_valid("", 0));
    CHECK(!session_content_type_valid("a\nb", 3));
}

static void put_find_replace_delete(void)
{
    store(1 << 20, 1);
    char msg[256];
    int created = -1;
    CHECK(session_put("a", 1, SESSION_JSON, (const uint8_t *)"{\"x\":1}", 7, 0, &created, msg, sizeof msg) == 0);
    CHECK(created == 1);
    session *s = find("a");
    CHECK(s && session_size(s) == 7 && memcmp(session_data(s), "{\"x\":1}", 7) == 0 && session_is_json(s));
    CHECK(s && strcmp(session_id(s), "a") == 0 && strcmp(session_content_type(s), SESSION_JSON) == 0);
    CHECK(s && session_expires_ms(s) == fake_now + 60000); /* the default ttl */
    CHECK(session_put("a", 1, "audio/wav", (const uint8_t *)"RIFF", 4, 30, &created, msg, sizeof msg) == 0);
    CHECK(created == 0);
    s = find("a");
    CHECK(s && !session_is_json(s) && strcmp(session_content_type(s), "audio/wav") == 0 && session_size(s) == 4);
    CHECK(s && session_expires_ms(s) == fake_now + 30000);
    CHECK(session_put("e", 1, "application/octet-stream", NULL, 0, 0, &created, msg, sizeof msg) == 0);
    CHECK(find("e") && session_size(find("e")) == 0);
    session_stats st;
    session_stats_get(&st);
    CHECK(st.count == 2 && st.bytes == cost("a", 4) - strlen(SESSION_JSON) + strlen("audio/wav") +
                                             session_cost(1, strlen("application/octet-stream"), 0));
    CHECK(session_delete("a", 1) == 0);
    CHECK(find("a") == NULL);
    CHECK(session_delete("a", 1) == 404);
    CHECK(session_delete("zz", 2) == 404);
    session_stats_get(&st);
    CHECK(st.count == 1);
    session_store_close();
}

static void bad_writes_change_nothing(void)
{
    store(1 << 20, 1);
    char msg[256];
    CHECK(put("a", "1", 0, msg) == 0);
    char big[1001];
    memset(big, 'x', sizeof big);
    int created;
    CHECK(session_put("a", 1, "text/plain", (const uint8_t *)big, 1001, 0, &created, msg, sizeof msg) == 413);
    CHECK_STR_CONTAINS(msg, "--session-max-size 1000");
    CHECK(session_put("a", 1, "text/plain", (const uint8_t *)big, 1000, 0, &created, msg, sizeof msg) == 0);
    CHECK(put("a", "2", 601, msg) == 400);
    CHECK_STR_CONTAINS(msg, "--session-max-ttl 600");
    CHECK(put("a", "2", -1, msg) == 400);
    CHECK(put("a/b", "2", 0, msg) == 400);
    CHECK(session_put("a", 1, "bad\ttype", (const uint8_t *)"x", 1, 0, &created, msg, sizeof msg) == 400);
    session *s = find("a");
    CHECK(s && session_size(s) == 1000); /* the 1000 bytes, untouched by what was refused */
    session_stats st;
    session_stats_get(&st);
    CHECK(st.count == 1);
    session_store_close();
}

static void finds_count_hits_and_misses_and_mark_recent_use(void)
{
    store(1 << 20, 1);
    char msg[256];
    CHECK(put("a", "1", 0, msg) == 0);
    CHECK(session_find("a", 1, 1) != NULL);
    CHECK(session_find("b", 1, 1) == NULL);
    CHECK(session_find("b", 1, 1) == NULL);
    CHECK(session_find("b", 1, 0) == NULL); /* a management read counts neither */
    session_stats st;
    session_stats_get(&st);
    CHECK(st.hits == 1 && st.misses == 2);
    session_store_close();
}

/* Three sessions fit; a fourth evicts the least recently used, where a find counts as use. */
static void lru_eviction_order(void)
{
    store(3 * cost("a", 10), 1);
    char msg[256];
    CHECK(put("a", "0123456789", 0, msg) == 0);
    CHECK(put("b", "0123456789", 0, msg) == 0);
    CHECK(put("c", "0123456789", 0, msg) == 0);
    CHECK(find("a")); /* a is now the most recent: b is the least */
    CHECK(put("d", "0123456789", 0, msg) == 0);
    CHECK(find("b") == NULL && find("a") && find("c") && find("d"));
    /* c is now the least recent (a, c, d were found in that order) */
    CHECK(put("e", "0123456789", 0, msg) == 0);
    CHECK(find("a") == NULL && find("c") && find("d") && find("e"));
    session_stats st;
    session_stats_get(&st);
    CHECK(st.evictions == 2 && st.count == 3 && st.bytes == 3 * cost("a", 10));
    /* replacing one in place needs no eviction even when full */
    CHECK(put("c", "9876543210", 0, msg) == 0);
    session_stats_get(&st);
    CHECK(st.evictions == 2 && st.count == 3);
    /* one that needs two slots evicts two */
    char twenty[] = "01234567890123456789";
    size_t need = cost("f", 20);
    CHECK(need <= 2 * cost("a", 10));
    CHECK(put("f", twenty, 0, msg) == 0);
    session_stats_get(&st);
    CHECK(st.evictions == 4 && st.count == 2 && find("f") && st.bytes <= 3 * cost("a", 10));
    session_store_close();
}

static void eviction_skips_pinned_and_507_without_room(void)
{
    store(2 * cost("a", 10), 1);
    char msg[256];
    CHECK(put("a", "0123456789", 0, msg) == 0);
    CHECK(put("b", "0123456789", 0, msg) == 0);
    session *a = find("b");
    a = find("a"); /* b is now the least recently used */
    session *b = find("b");
    CHECK(a && b);
    session_pin(b); /* but b is pinned: a goes */
    CHECK(put("c", "0123456789", 0, msg) == 0);
    CHECK(find("a") == NULL && find("b") == b && find("c"));
    session *c = find("c");
    session_pin(c);
    CHECK(put("d", "0123456789", 0, msg) == 507); /* both pinned: no room, nothing changed */
    CHECK_STR_CONTAINS(msg, "the session store is full");
    CHECK_STR_CONTAINS(msg, "raise --session-memory or delete sessions");
    CHECK(find("b") == b && find("c") == c && find("d") == NULL);
    session_stats st;
    session_stats_get(&st);
    CHECK(st.count == 2 && st.evictions == 1);
    session_unpin(c);
    CHECK(put("d", "0123456789", 0, msg) == 0);
    CHECK(find("c") == NULL && find("b") == b);
    session_unpin(b);
    session_store_close();
}

static void eviction_off_answers_507(void)
{
    store(2 * cost("a", 10), 0);
    char msg[256];
    CHECK(put("a", "0123456789", 0, msg) == 0);
    CHECK(put("b", "0123456789", 0, msg) == 0);
    CHECK(put("c", "0123456789", 0, msg) == 507);
    CHECK_STR_CONTAINS(msg, "--session-evict off");
    CHECK(find("a") && find("b") && !find("c"));
    CHECK(put("a", "9876543210", 0, msg) == 0); /* a replacement of the same size fits */
    CHECK(put("a", "98765432101", 0, msg) == 507); /* a larger one does not */
    CHECK(find("a") && memcmp(session_data(find("a")), "9876543210", 10) == 0);
    session_stats st;
    session_stats_get(&st);
    CHECK(st.evictions == 0 && st.count == 2);
    session_store_close();
}

static void expiry_on_the_clock(void)
{
    store(1 << 20, 1);
    char msg[256];
    CHECK(put("a", "1", 1, msg) == 0);
    CHECK(put("b", "1", 2, msg) == 0);
    CHECK(put("c", "1", 3, msg) == 0);
    fake_now += 999;
    session_expire();
    CHECK(find("a") && find("b") && find("c"));
    fake_now += 1; /* a's expiry: gone even before the timer runs */
    CHECK(find("a") == NULL);
    session_stats st;
    session_stats_get(&st);
    CHECK(st.expirations == 1 && st.count == 2);
    /* a read does not extend the ttl; a write does */
    CHECK(find("b"));
    CHECK(put("c", "2", 3, msg) == 0); /* c now expires 3 s from here */
    fake_now += 1000;
    session_expire();
    CHECK(find("b") == NULL && find("c"));
    fake_now += 2500;
    session_expire();
    CHECK(find("c") == NULL);
    session_stats_get(&st);
    CHECK(st.expirations == 3 && st.count == 0 && st.bytes == 0);
    /* an expired session's id makes a new one */
    int created = 0;
    CHECK(put("a", "1", 1, msg) == 0);
    fake_now += 1000;
    CHECK(session_put("a", 1, SESSION_JSON, (const uint8_t *)"2", 1, 0, &created, msg, sizeof msg) == 0 && created);
    session_store_close();
}

/* Many sessions with scattered expiries leave in expiry order (the heap). */
static void the_heap_keeps_expiry_order(void)
{
    store(64 << 20, 1);
    char msg[256], id[16];
    for (int i = 0; i < 500; i++) {
        snprintf(id, sizeof id, "s%d", i);
        CHECK(put(id, "1", 1 + (i * 37) % 100, msg) == 0);
    }
    for (int i = 0; i < 500; i += 7) { /* delete a few from the middle of the heap */
        snprintf(id, sizeof id, "s%d", i);
        CHECK(session_delete(id, strlen(id)) == 0);
    }
    int bad = 0;
    for (int t = 1; t <= 100; t++) {
        fake_now += 1000;
        session_expire();
        for (int i = 0; i < 500; i++) {
            if (i % 7 == 0)
                continue;
            snprintf(id, sizeof id, "s%d", i);
            int alive = find(id) != NULL;
            if (alive != (1 + (i * 37) % 100 > t))
                bad++;
        }
    }
    CHECK(bad == 0);
    session_stats st;
    session_stats_get(&st);
    CHECK(st.count == 0 && st.bytes == 0);
    session_store_close();
}

/* A pinned session deleted, replaced or expired leaves the store at once; its bytes stay readable. */
static void pinned_sessions_outlive_their_removal(void)
{
    store(1 << 20, 1);
    char msg[256];
    CHECK(put("a", "\"old\"", 1, msg) == 0);
    session *a = find("a");
    session_pin(a);
    CHECK(put("a", "\"new\"", 0, msg) == 0);
    session *a2 = find("a");
    CHECK(a2 && a2 != a && memcmp(session_data(a2), "\"new\"", 5) == 0);
    CHECK(memcmp(session_data(a), "\"old\"", 5) == 0); /* the pinned one, still valid */
    session_unpin(a);                                  /* freed now (ASan would tell otherwise) */
    session_pin(a2);
    CHECK(session_delete("a", 1) == 0);
    CHECK(find("a") == NULL);
    CHECK(memcmp(session_data(a2), "\"new\"", 5) == 0);
    session_unpin(a2);
    CHECK(put("b", "1", 1, msg) == 0);
    session *b = find("b");
    session_pin(b);
    fake_now += 1000;
    session_expire();
    CHECK(find("b") == NULL);
    CHECK(memcmp(session_data(b), "1", 1) == 0);
    session_unpin(b);
    session_stats st;
    session_stats_get(&st);
    CHECK(st.count == 0 && st.bytes == 0);
    session_store_close();
}

static void on_listed(const session *s, void *ctx)
{
    char *out = ctx;
    strcat(out, session_id(s));
    strcat(out, ",");
}

static void list_is_in_id_order_without_the_expired(void)
{
    store(1 << 20, 1);
    char msg[256];
    const char *ids[] = {"m", "b", "a", "z", "ab", "B", "a0"};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++)
        CHECK(put(ids[i], "1", ids[i][0] == 'z' ? 1 : 10, msg) == 0);
    char out[128] = "";
    session_list(on_listed, out);
    CHECK(strcmp(out, "B,a,a0,ab,b,m,z,") == 0);
    fake_now += 1000;
    out[0] = 0;
    session_list(on_listed, out);
    CHECK(strcmp(out, "B,a,a0,ab,b,m,") == 0);
    session_store_close();
    store(1 << 20, 1);
    out[0] = 0;
    session_list(on_listed, out);
    CHECK(out[0] == 0);
    session_store_close();
}

static void restore_fits_and_yields_to_newer(void)
{
    store(2 * cost("a", 10), 1);
    char msg[256];
    CHECK(put("a", "\"written\"", 0, msg) == 0);
    CHECK(session_restore("a", 1, SESSION_JSON, (const uint8_t *)"\"file\"", 6, fake_now + 5000) == 0);
    CHECK(memcmp(session_data(find("a")), "\"written\"", 9) == 0); /* the newer write wins */
    CHECK(session_restore("b", 1, SESSION_JSON, (const uint8_t *)"1", 1, fake_now + 5000) == 0);
    CHECK(find("b") && session_expires_ms(find("b")) == fake_now + 5000);
    CHECK(session_restore("c", 1, SESSION_JSON, (const uint8_t *)"1", 1, fake_now + 5000) == -1); /* full */
    CHECK(session_restore("d", 1, SESSION_JSON, (const uint8_t *)"1", 1, fake_now) == -1);        /* expired */
    CHECK(session_restore("../x", 4, SESSION_JSON, (const uint8_t *)"1", 1, fake_now + 5000) == -1);
    session_stats st;
    session_stats_get(&st);
    CHECK(st.count == 2 && st.evictions == 0);
    session_store_close();
}

static void on_stop(uv_timer_t *t)
{
    uv_stop(t->loop);
}

/* The store's own timer, on a real loop and the wall clock, removes a session within its tick. */
static void the_timer_expires_on_a_loop(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    session_config cfg = {.default_ttl_s = 1, .max_ttl_s = 10, .memory = 1 << 20, .max_size = 100, .evict = 1};
    session_store_init(&loop, &cfg);
    char msg[256];
    CHECK(put("a", "1", 1, msg) == 0);
    uv_timer_t stop;
    uv_timer_init(&loop, &stop);
    uv_timer_start(&stop, on_stop, 1300, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    session_stats st;
    session_stats_get(&st);
    CHECK(st.expirations == 1 && st.count == 0);
    uv_close((uv_handle_t *)&stop, NULL);
    session_store_close();
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(uv_loop_close(&loop) == 0);
}

static int state_closed;
static void on_state_closed(void)
{
    state_closed = 1;
}

/* Ends a durable store on loop as the daemon does at exit: what is left flushed, the state file closed. */
static void close_durable(uv_loop_t *loop, uv_timer_t *stop)
{
    session_store_flush();
    state_closed = 0;
    state_close(on_state_closed);
    uv_close((uv_handle_t *)stop, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    CHECK(state_closed);
    session_store_close();
    uv_run(loop, UV_RUN_DEFAULT);
    CHECK(uv_loop_close(loop) == 0);
}

/* Durable: changes reach the state file in batches, coalesced per id (a deleted session is deleted, one
 * deleted and written again is written), the last ones on the flush before the file closes. */
static void a_durable_store_writes_its_changes_in_batches(void)
{
    char dir[] = "/tmp/corral-test-session-XXXXXX", path[128];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/state.db", dir);
    uv_loop_t loop;
    uv_loop_init(&loop);
    session_config cfg = {.default_ttl_s = 60, .max_ttl_s = 600, .memory = 1 << 20, .max_size = 1000, .evict = 1};
    session_store_init(&loop, &cfg);
    session_store_durable();
    state_start(&loop, path, NULL);
    char msg[256];
    CHECK(put("a", "1", 0, msg) == 0);
    CHECK(put("b", "2", 0, msg) == 0);
    CHECK(put("c", "3", 0, msg) == 0);
    CHECK(session_delete("b", 1) == 0);
    CHECK(put("c", "33", 0, msg) == 0);
    CHECK(put("d", "4", 0, msg) == 0);
    CHECK(session_delete("d", 1) == 0);
    CHECK(put("d", "44", 0, msg) == 0);
    uv_timer_t stop;
    uv_timer_init(&loop, &stop);
    uv_timer_start(&stop, on_stop, 400, 0); /* a few flush intervals */
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(put("e", "5", 0, msg) == 0);
    CHECK(session_delete("a", 1) == 0);
    close_durable(&loop, &stop);

    state_db *db;
    state_snapshot snap;
    char *report;
    CHECK(state_db_open(path, 0, &db, &snap, &report) == 0);
    free(report);
    state_session_limits lim = {.memory = 1 << 20, .max_size = 1000, .cost = session_cost};
    state_session *got;
    size_t n;
    CHECK(state_db_read_sessions(db, 0, &lim, &got, &n, &report) == 0);
    free(report);
    char ids[64] = "", *p = ids;
    for (size_t i = 0; i < n; i++)
        p += snprintf(p, sizeof ids - (size_t)(p - ids), "%s=%.*s,", got[i].id, (int)got[i].len, got[i].data);
    /* read back by expiry, latest first: e, d, c (written after a and b's put... a is deleted) */
    CHECK(n == 3);
    CHECK_STR_CONTAINS(ids, "c=33,");
    CHECK_STR_CONTAINS(ids, "d=44,");
    CHECK_STR_CONTAINS(ids, "e=5,");
    state_sessions_free(got, n);
    state_db_close(db);
    unlink(path);
    rmdir(dir);
}

/* A replaced or deleted session that a request still holds counts against --session-memory until let go:
 * a client that pins each version (a slow GET, a queued request) cannot grow memory past the ceiling. */
static void held_versions_count_against_the_ceiling(void)
{
    char big[501], msg[256];
    memset(big, '1', 500);
    big[500] = 0;
    size_t c = cost("big", 500);
    store(2 * c + c / 2, 1);
    CHECK(put("big", big, 0, msg) == 0);
    session *v1 = find("big");
    session_pin(v1);
    CHECK(put("big", big, 0, msg) == 0); /* v1 held: c retained, c live */
    session_stats st;
    session_stats_get(&st);
    CHECK(st.bytes == c && st.retained == c);
    session *v2 = find("big");
    session_pin(v2);
    CHECK(put("big", big, 0, msg) == 507); /* v1 and v2 held, no room for v3 */
    CHECK_STR_CONTAINS(msg, "replaced or deleted sessions that requests still hold");
    CHECK(find("big") == v2);
    CHECK(session_delete("big", 3) == 0); /* deleted, still held: still counted */
    session_stats_get(&st);
    CHECK(st.count == 0 && st.bytes == 0 && st.retained == 2 * c);
    CHECK(put("x", big, 0, msg) == 507);
    session_unpin(v1);
    session_unpin(v2);
    session_stats_get(&st);
    CHECK(st.retained == 0);
    CHECK(put("x", big, 0, msg) == 0);
    session_store_close();
}

static void on_restored(const state_session *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        session_restore(s[i].id, strlen(s[i].id), s[i].content_type, s[i].data, s[i].len, s[i].expires_ms);
    session_restore_done();
}

/* The state file at path (made when absent), open, with n session rows written into it. */
static state_db *db_with_rows(const char *path, state_session_op *ops, size_t n)
{
    state_db *db;
    state_snapshot snap;
    char *report;
    CHECK(state_db_open(path, 0, &db, &snap, &report) == 0);
    free(report);
    state_snapshot_free(&snap);
    state_session_batch b = {.ops = ops, .n = n};
    if (n)
        CHECK(state_db_apply_sessions(db, &b) == 0);
    free(b.error);
    return db;
}

/* The ids and contents of the file's sessions, "id=content," each. */
static void file_sessions(const char *path, char *ids, size_t cap)
{
    state_db *db = db_with_rows(path, NULL, 0);
    char *report;
    state_session_limits lim = {.memory = 1 << 20, .max_size = 1000, .cost = session_cost};
    state_session *got;
    size_t n;
    CHECK(state_db_read_sessions(db, 0, &lim, &got, &n, &report) == 0);
    free(report);
    char *p = ids;
    *p = 0;
    for (size_t i = 0; i < n; i++)
        p += snprintf(p, cap - (size_t)(p - ids), "%s=%.*s,", got[i].id, (int)got[i].len, got[i].data);
    state_sessions_free(got, n);
    state_db_close(db);
}

/* The daemon listens before the state file is read: a session put and deleted, or deleted while only the file
 * holds it, in that window stays deleted (in the store and in the file); one written then keeps its write. */
static void changes_while_the_file_is_read_win(void)
{
    char dir[] = "/tmp/corral-test-session-XXXXXX", path[128];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/state.db", dir);
    int64_t later = (int64_t)time(NULL) * 1000 + 600000; /* the wall clock: the state file reads by it */
    state_session_op ops[] = {
        {.id = "victim", .id_len = 6, .content_type = SESSION_JSON, .data = (const uint8_t *)"\"old\"", .len = 5,
         .expires_ms = later},
        {.id = "gone", .id_len = 4, .content_type = SESSION_JSON, .data = (const uint8_t *)"\"old\"", .len = 5,
         .expires_ms = later},
        {.id = "kept", .id_len = 4, .content_type = SESSION_JSON, .data = (const uint8_t *)"\"old\"", .len = 5,
         .expires_ms = later},
        {.id = "other", .id_len = 5, .content_type = SESSION_JSON, .data = (const uint8_t *)"\"old\"", .len = 5,
         .expires_ms = later},
    };
    state_db_close(db_with_rows(path, ops, 4));

    uv_loop_t loop;
    uv_loop_init(&loop);
    session_config cfg = {.default_ttl_s = 60, .max_ttl_s = 600, .memory = 1 << 20, .max_size = 1000, .evict = 1};
    session_store_init(&loop, &cfg);
    session_store_durable();
    state_restore_sessions(&(state_session_limits){.memory = 1 << 20, .max_size = 1000, .cost = session_cost},
                           on_restored);
    state_start(&loop, path, NULL);
    /* the window: the file is read on the thread pool, its callback runs in uv_run */
    char msg[256];
    CHECK(session_restoring());
    CHECK(put("victim", "\"new\"", 0, msg) == 0);
    CHECK(session_delete("victim", 6) == 0);
    CHECK(session_delete("gone", 4) == 404);
    CHECK(put("kept", "\"new\"", 0, msg) == 0);
    uv_timer_t stop;
    uv_timer_init(&loop, &stop);
    uv_timer_start(&stop, on_stop, 400, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(!session_restoring());
    CHECK(find("victim") == NULL);
    CHECK(find("gone") == NULL);
    CHECK(find("kept") && memcmp(session_data(find("kept")), "\"new\"", 5) == 0);
    CHECK(find("other") && memcmp(session_data(find("other")), "\"old\"", 5) == 0);
    close_durable(&loop, &stop);
    char ids[128];
    file_sessions(path, ids, sizeof ids);
    CHECK(strstr(ids, "victim=") == NULL);
    CHECK(strstr(ids, "gone=") == NULL);
    CHECK_STR_CONTAINS(ids, "kept=\"new\",");
    CHECK_STR_CONTAINS(ids, "other=\"old\",");
    unlink(path);
    rmdir(dir);
}

/* A JSON row that is not one JSON value (a damaged file) is not restored, so it cannot inject keys into the
 * worker frames that carry the session as it is; a valid one comes back compact. */
static void damaged_json_rows_are_dropped(void)
{
    char dir[] = "/tmp/corral-test-session-XXXXXX", path[128];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/state.db", dir);
    int64_t later = (int64_t)time(NULL) * 1000 + 600000;
    const char *bad[] = {"{},\"id\":\"x\"", "{\"a\":1,\"a\":2}", "", "[1"};
    state_session_op ops[6];
    char ids[4][8];
    for (int i = 0; i < 4; i++) {
        snprintf(ids[i], sizeof ids[i], "bad%d", i);
        ops[i] = (state_session_op){.id = ids[i], .id_len = 4, .content_type = SESSION_JSON,
                                    .data = (const uint8_t *)bad[i], .len = strlen(bad[i]), .expires_ms = later};
    }
    ops[4] = (state_session_op){.id = "spaced", .id_len = 6, .content_type = SESSION_JSON,
                                .data = (const uint8_t *)"{ \"a\" :\n [1, 2] }", .len = 17, .expires_ms = later};
    ops[5] = (state_session_op){.id = "bytes", .id_len = 5, .content_type = "text/plain",
                                .data = (const uint8_t *)"{},", .len = 3, .expires_ms = later};
    state_db *db = db_with_rows(path, ops, 6);
    char *report;
    state_session_limits lim = {.memory = 1 << 20, .max_size = 1000, .cost = session_cost};
    state_session *got;
    size_t n;
    CHECK(state_db_read_sessions(db, 0, &lim, &got, &n, &report) == 0);
    CHECK(report != NULL);
    if (report)
        CHECK_STR_CONTAINS(report, "4 session records that are not valid skipped and removed");
    free(report);
    CHECK(n == 2);
    for (size_t i = 0; i < n; i++)
        if (strcmp(got[i].id, "spaced") == 0)
            CHECK(got[i].len == 11 && memcmp(got[i].data, "{\"a\":[1,2]}", 11) == 0 && got[i].data[got[i].len] == 0);
        else
            CHECK(strcmp(got[i].id, "bytes") == 0 && got[i].len == 3);
    state_sessions_free(got, n);
    state_db_close(db);
    char left[256];
    file_sessions(path, left, sizeof left);
    CHECK(strstr(left, "bad") == NULL); /* removed from the file too */
    unlink(path);
    rmdir(dir);
}

/* The ids noted while restoring are bounded: past SESSION_RESTORE_TOUCHED_MAX another id's write or delete is a
 * 503 (never a change the restore would undo); a noted id may still change; after the restore all may. */
static void the_restore_window_notes_a_bounded_set(void)
{
    store(1 << 20, 1);
    session_store_durable(); /* no state file started: batches are dropped at once */
    char id[16], msg[256];
    int all_404 = 1;
    for (int i = 0; i < SESSION_RESTORE_TOUCHED_MAX; i++) {
        snprintf(id, sizeof id, "d%d", i);
        all_404 &= session_delete(id, strlen(id)) == 404;
    }
    CHECK(all_404);
    CHECK(put("another", "1", 0, msg) == 503);
    CHECK_STR_CONTAINS(msg, "still being read");
    CHECK(session_delete("another", 7) == 503);
    CHECK(put("d7", "1", 0, msg) == 0); /* noted already */
    session_restore_done();
    CHECK(!session_restoring());
    CHECK(put("another", "1", 0, msg) == 0);
    session_store_close();
}

CHECK_MAIN(CASE(ids_are_checked_like_model_names), CASE(put_find_replace_delete), CASE(bad_writes_change_nothing),
           CASE(finds_count_hits_and_misses_and_mark_recent_use), CASE(lru_eviction_order),
           CASE(eviction_skips_pinned_and_507_without_room), CASE(eviction_off_answers_507),
           CASE(expiry_on_the_clock), CASE(the_heap_keeps_expiry_order), CASE(pinned_sessions_outlive_their_removal),
           CASE(list_is_in_id_order_without_the_expired), CASE(restore_fits_and_yields_to_newer),
           CASE(the_timer_expires_on_a_loop), CASE(a_durable_store_writes_its_changes_in_batches),
           CASE(held_versions_count_against_the_ceiling), CASE(changes_while_the_file_is_read_win),
           CASE(damaged_json_rows_are_dropped),
           CASE(the_restore_window_notes_a_bounded_set))
