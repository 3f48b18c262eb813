/*
 * Unit tests of state: the default path, the records as stored and read
 * back (and refused when they do not decode), the queue that keeps one
 * change per record, the restore plan, and the file itself through
 * state_db_* (a new file, changes written and read back, a corrupt file
 * moved aside, a missing directory, a file held by another daemon).
 */
#include "check.h"
#include "state.h"

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char SHA[] = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

static void default_path_is_beside_the_repository(void)
{
    char p[64];
    CHECK(state_default_path("/app/models", p, sizeof p) == 0 && strcmp(p, "/app/corral-state.db") == 0);
    CHECK(state_default_path("/app/models/", p, sizeof p) == 0 && strcmp(p, "/app/corral-state.db") == 0);
    CHECK(state_default_path("models", p, sizeof p) == 0 && strcmp(p, "corral-state.db") == 0);
    CHECK(state_default_path("./models", p, sizeof p) == 0 && strcmp(p, "./corral-state.db") == 0);
    CHECK(state_default_path("/models", p, sizeof p) == 0 && strcmp(p, "/corral-state.db") == 0);
    CHECK(state_default_path("/", p, sizeof p) == 0 && strcmp(p, "/corral-state.db") == 0);
    CHECK(state_default_path("a/b/c", p, sizeof p) == 0 && strcmp(p, "a/b/corral-state.db") == 0);
    char tiny[8];
    CHECK(state_default_path("/app/models", tiny, sizeof tiny) < 0);
}

static void a_config_is_stored_compact_with_sorted_keys(void)
{
    CHECK(state_encode_config(NULL) == NULL);
    json_t *c = json_pack("{s:i,s:{s:s}}", "max_queue", 8, "env", "K", "v");
    char *e = state_encode_config(c);
    CHECK(e && strcmp(e, "{\"env\":{\"K\":\"v\"},\"max_queue\":8}") == 0);
    state_model m;
    char err[256];
    CHECK(state_decode_model("echo", 4, 3, e, strlen(e), &m, err, sizeof err) == 0);
    CHECK(strcmp(m.name, "echo") == 0 && m.instances == 3 && json_equal(m.config, c));
    free(m.name);
    json_decref(m.config);
    free(e);
    json_decref(c);
}

static void records_that_do_not_decode_are_refused(void)
{
    state_model m;
    char err[256];
    CHECK(state_decode_model("echo", 4, 0, NULL, 0, &m, err, sizeof err) == 0 && m.config == NULL && m.instances == 0);
    free(m.name);
    CHECK(state_decode_model("../etc", 6, 1, NULL, 0, &m, err, sizeof err) < 0);
    CHECK_STR_CONTAINS(err, "not a model name");
    CHECK(state_decode_model("ec\0ho", 5, 1, NULL, 0, &m, err, sizeof err) < 0); /* a NUL inside */
    CHECK(state_decode_model(NULL, 0, 1, NULL, 0, &m, err, sizeof err) < 0);
    CHECK(state_decode_model("echo", 4, -1, NULL, 0, &m, err, sizeof err) < 0);
    CHECK_STR_CONTAINS(err, "instances -1");
    CHECK(state_decode_model("echo", 4, 100000, NULL, 0, &m, err, sizeof err) < 0);
    CHECK(state_decode_model("echo", 4, 1, "[1]", 3, &m, err, sizeof err) < 0);
    CHECK_STR_CONTAINS(err, "not a JSON object");
    CHECK(state_decode_model("echo", 4, 1, "{\"a\":", 5, &m, err, sizeof err) < 0);
    CHECK(state_decode_model("echo", 4, 1, "{\"a\":1,\"a\":2}", 13, &m, err, sizeof err) < 0);
    CHECK(m.name == NULL && m.config == NULL);
}

static void a_pull_record_is_checked(void)
{
    char err[256];
    CHECK(state_pull_valid("tts", "https://example.com/tts.tar.gz", SHA, err, sizeof err));
    CHECK(!state_pull_valid("tts/x", "https://example.com/a", SHA, err, sizeof err));
    CHECK(!state_pull_valid("tts", "", SHA, err, sizeof err));
    CHECK(!state_pull_valid("tts", "https://example.com/a b", SHA, err, sizeof err));
    CHECK(!state_pull_valid("tts", "https://example.com/\n", SHA, err, sizeof err));
    CHECK(!state_pull_valid("tts", "https://example.com/a", "abc", err, sizeof err));
    CHECK_STR_CONTAINS(err, "64 hexadecimal");
    char longer[70];
    snprintf(longer, sizeof longer, "%s0", SHA);
    CHECK(!state_pull_valid("tts", "https://example.com/a", longer, err, sizeof err));
    char g[65];
    memcpy(g, SHA, 65);
    g[10] = 'g';
    CHECK(!state_pull_valid("tts", "https://example.com/a", g, err, sizeof err));
    CHECK(!state_pull_valid("tts", "https://example.com/a", NULL, err, sizeof err));
}

static state_op *op_new(state_op_kind kind, const char *name, int instances)
{
    state_op *op = calloc(1, sizeof *op);
    op->kind = kind;
    op->name = strdup(name);
    op->instances = instances;
    if (kind == STATE_PUT_PULL) {
        op->url = strdup("https://example.com/m.tar");
        op->sha256 = strdup(SHA);
    }
    return op;
}

static size_t queue_len(const state_op *q)
{
    size_t n = 0;
    for (; q; q = q->next)
        n++;
    return n;
}

static void the_queue_keeps_one_change_per_record(void)
{
    state_op *q = NULL;
    state_queue_put(&q, op_new(STATE_PUT_MODEL, "a", 1));
    state_queue_put(&q, op_new(STATE_PUT_MODEL, "b", 1));
    for (int i = 2; i <= 100; i++) /* a storm of scales: the newest only */
        state_queue_put(&q, op_new(STATE_PUT_MODEL, "a", i));
    CHECK(queue_len(q) == 2 && strcmp(q->name, "a") == 0 && q->instances == 100);
    state_queue_put(&q, op_new(STATE_DEL_MODEL, "a", 0)); /* an unload replaces the load, in its place */
    CHECK(queue_len(q) == 2 && q->kind == STATE_DEL_MODEL && strcmp(q->next->name, "b") == 0);
    state_queue_put(&q, op_new(STATE_PUT_PULL, "a", 0)); /* another table: its own record */
    CHECK(queue_len(q) == 3 && q->next->next->kind == STATE_PUT_PULL);
    state_queue_put(&q, op_new(STATE_PUT_PULL, "a", 0));
    CHECK(queue_len(q) == 3);
    while (q) {
        state_op *n = q->next;
        state_op_free(q);
        q = n;
    }
    state_op_free(NULL);
}

static int noted_b(const char *name, void *ctx)
{
    (void)ctx;
    return strcmp(name, "b") == 0;
}

static void the_plan_leaves_out_models_changed_since_start(void)
{
    state_snapshot s = {0};
    s.models = calloc(3, sizeof *s.models);
    const char *names[] = {"a", "b", "c"};
    for (int i = 0; i < 3; i++)
        s.models[i] = (state_model){strdup(names[i]), i, i == 1 ? json_object() : NULL};
    s.n_models = 3;
    state_plan(&s, noted_b, NULL);
    CHECK(s.n_models == 2 && strcmp(s.models[0].name, "a") == 0 && strcmp(s.models[1].name, "c") == 0);
    CHECK(s.models[1].instances == 2);
    state_snapshot_free(&s);
    CHECK(s.models == NULL && s.n_models == 0);
}

static char dir[64];

static void make_dir(void)
{
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "/tmp/corral-test-state-XXXXXX");
        CHECK(mkdtemp(dir) != NULL);
    }
}

static int batch_calls;

static void path_in_dir(char *out, size_t n, const char *name)
{
    make_dir();
    snprintf(out, n, "%s/%s", dir, name);
}

static void changes_are_written_and_read_back(void)
{
    char path[128];
    path_in_dir(path, sizeof path, "rw.db");
    state_db *db;
    state_snapshot snap;
    char *report;
    CHECK(state_db_open(path, 0, &db, &snap, &report) == 0 && db);
    CHECK_STR_CONTAINS(report, "did not exist");
    free(report);
    CHECK(snap.n_models == 0 && snap.n_pulls == 0);
    state_op *a = op_new(STATE_PUT_MODEL, "echo", 3);
    a->config = strdup("{\"max_queue\":4}");
    state_op *b = op_new(STATE_PUT_MODEL, "gone", 0);
    state_op *c = op_new(STATE_DEL_MODEL, "gone", 0);
    state_op *p = op_new(STATE_PUT_PULL, "tts", 0);
    CHECK(state_db_apply(db, a) == 0 && state_db_apply(db, b) == 0 && state_db_apply(db, c) == 0);
    CHECK(state_db_apply(db, p) == 0 && !a->error);
    state_db_close(db);
    CHECK(state_db_open(path, 0, &db, &snap, &report) == 0);
    CHECK(report == NULL);
    CHECK(snap.n_models == 1 && strcmp(snap.models[0].name, "echo") == 0 && snap.models[0].instances == 3);
    CHECK(json_integer_value(json_object_get(snap.models[0].config, "max_queue")) == 4);
    CHECK(snap.n_pulls == 1 && strcmp(snap.pulls[0].url, "https://example.com/m.tar") == 0);
    CHECK(strcmp(snap.pulls[0].sha256, SHA) == 0);
    state_snapshot_free(&snap);
    state_db_close(db);
    state_op_free(a);
    state_op_free(b);
    state_op_free(c);
    state_op_free(p);
    unlink(path);
}

static void bad_rows_are_skipped_and_reported(void)
{
    char path[128];
    path_in_dir(path, sizeof path, "rows.db");
    state_db *db;
    state_snapshot snap;
    char *report;
    CHECK(state_db_open(path, 0, &db, &snap, &report) == 0);
    free(report);
    state_db_close(db);
    sqlite3 *c;
    CHECK(sqlite3_open(path, &c) == SQLITE_OK);
    CHECK(sqlite3_exec(c,
                       "INSERT INTO models VALUES ('ok', 2, NULL, 0);"
                       "INSERT INTO models VALUES ('../x', 2, NULL, 0);"
                       "INSERT INTO models VALUES ('neg', -4, NULL, 0);"
                       "INSERT INTO models VALUES ('txt', 'two', NULL, 0);"
                       "INSERT INTO models VALUES ('cfg', 1, 'not json', 0);"
                       "INSERT INTO pulls VALUES ('p', 'http://h/x', 'nothex', 0);",
                       NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(c);
    CHECK(state_db_open(path, 0, &db, &snap, &report) == 0);
    CHECK(snap.n_models == 1 && strcmp(snap.models[0].name, "ok") == 0 && snap.n_pulls == 0);
    CHECK_STR_CONTAINS(report, "5 records skipped");
    free(report);
    state_snapshot_free(&snap);
    state_db_close(db);
    unlink(path);
}

static void a_corrupt_file_is_moved_aside(void)
{
    char path[128], aside[192];
    path_in_dir(path, sizeof path, "bad.db");
    FILE *f = fopen(path, "w");
    for (int i = 0; i < 200; i++)
        fputs("this is not an SQLite database, just garbage\n", f);
    fclose(f);
    state_db *db;
    state_snapshot snap;
    char *report;
    CHECK(state_db_open(path, 1764604800, &db, &snap, &report) == 0 && db); /* 2025-12-01T16:00:00Z */
    CHECK_STR_CONTAINS(report, "is corrupt (");
    CHECK_STR_CONTAINS(report, "moved aside to ");
    CHECK_STR_CONTAINS(report, "bad.db.corrupt-20251201T160000Z");
    free(report);
    snprintf(aside, sizeof aside, "%s.corrupt-20251201T160000Z", path);
    CHECK(access(aside, F_OK) == 0);
    state_op *a = op_new(STATE_PUT_MODEL, "echo", 1);
    CHECK(state_db_apply(db, a) == 0); /* a new file, working */
    state_op_free(a);
    state_db_close(db);
    unlink(path);
    unlink(aside);
}

static void a_missing_directory_means_no_state(void)
{
    char path[128];
    path_in_dir(path, sizeof path, "no/such/dir/state.db");
    state_db *db;
    state_snapshot snap;
    char *report;
    CHECK(state_db_open(path, 0, &db, &snap, &report) < 0 && db == NULL);
    CHECK_STR_CONTAINS(report, "cannot open state file ");
    CHECK_STR_CONTAINS(report, "no/such/dir/state.db");
    CHECK_STR_CONTAINS(report, "running without state");
    free(report);
    CHECK(state_db_open(dir, 0, &db, &snap, &report) < 0); /* a directory */
    CHECK_STR_CONTAINS(report, "not a regular file");
    free(report);
}

static void a_file_held_by_another_daemon_is_not_shared(void)
{
    char path[128];
    path_in_dir(path, sizeof path, "held.db");
    state_db *first, *second;
    state_snapshot snap;
    char *report;
    CHECK(state_db_open(path, 0, &first, &snap, &report) == 0);
    free(report);
    CHECK(state_db_open(path, 0, &second, &snap, &report) < 0 && second == NULL); /* waits 2 s, then gives up */
    CHECK_STR_CONTAINS(report, "in use by another process");
    free(report);
    state_db_close(first);
    CHECK(state_db_open(path, 0, &second, &snap, &report) == 0);
    free(report);
    state_db_close(second);
    unlink(path);
}

static void a_newer_schema_is_left_alone(void)
{
    char path[128];
    path_in_dir(path, sizeof path, "newer.db");
    sqlite3 *c;
    CHECK(sqlite3_open(path, &c) == SQLITE_OK);
    CHECK(sqlite3_exec(c, "PRAGMA user_version = 7; CREATE TABLE t (x);", NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(c);
    state_db *db;
    state_snapshot snap;
    char *report;
    CHECK(state_db_open(path, 0, &db, &snap, &report) < 0);
    CHECK_STR_CONTAINS(report, "schema version 7");
    free(report);
    unlink(path);
    rmdir(dir);
}

static int restored_calls;
static size_t restored_models;
static char restored_first[64];
static int closed_calls;

static void on_restore(const state_snapshot *s)
{
    restored_calls++;
    restored_models = s->n_models;
    snprintf(restored_first, sizeof restored_first, "%s", s->n_models ? s->models[0].name : "");
}

static void on_closed(void)
{
    closed_calls++;
}

static void on_restore_then_close(const state_snapshot *s)
{
    on_restore(s);
    state_close(on_closed);
}

/* The loop's side: notes queued while the file opens, written on the pool, flushed by state_close; a
 * model noted while the file was being read is left out of the restore. */
static void notes_are_written_through_the_loop_and_flushed_on_close(void)
{
    char path[128];
    path_in_dir(path, sizeof path, "loop.db");
    state_db *db;
    state_snapshot snap;
    char *report;
    CHECK(state_db_open(path, 0, &db, &snap, &report) == 0);
    free(report);
    state_op *a = op_new(STATE_PUT_MODEL, "a", 2), *b = op_new(STATE_PUT_MODEL, "b", 1);
    CHECK(state_db_apply(db, a) == 0 && state_db_apply(db, b) == 0);
    state_op_free(a);
    state_op_free(b);
    state_db_close(db);

    uv_loop_t loop;
    uv_loop_init(&loop);
    state_start(&loop, path, on_restore);
    state_note_loaded("a", 5, NULL); /* while the file is read: a is the operator's now, not the file's */
    state_note_unloaded("b");
    state_note_loaded("c", 0, NULL);
    state_note_loaded("c", 3, NULL);
    CHECK(state_note_pull("p", "https://example.com/p.tar", SHA) == 0);
    CHECK(state_note_pull("p", "not a url", SHA) == -EINVAL);
    state_close(on_closed);
    state_note_loaded("late", 1, NULL); /* after close: dropped */
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(closed_calls == 1);
    CHECK(restored_calls == 0); /* closing before the read was done: nothing restored */
    uv_loop_close(&loop);

    CHECK(state_db_open(path, 0, &db, &snap, &report) == 0);
    free(report);
    CHECK(snap.n_models == 2);
    CHECK(snap.n_models == 2 && strcmp(snap.models[0].name, "a") == 0 && snap.models[0].instances == 5);
    CHECK(snap.n_models == 2 && strcmp(snap.models[1].name, "c") == 0 && snap.models[1].instances == 3);
    CHECK(snap.n_pulls == 1 && strcmp(snap.pulls[0].name, "p") == 0);
    state_snapshot_free(&snap);
    state_db_close(db);

    /* Again, now letting the read finish: the file has a (5) and c (3); a noted meanwhile is left out. */
    uv_loop_init(&loop);
    state_start(&loop, path, on_restore_then_close);
    state_note_loaded("a", 1, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(restored_calls == 1 && restored_models == 1 && strcmp(restored_first, "c") == 0);
    CHECK(closed_calls == 2);
    uv_loop_close(&loop);
    CHECK(state_db_open(path, 0, &db, &snap, &report) == 0);
    free(report);
    CHECK(snap.n_models == 2 && snap.models[0].instances == 1);
    state_snapshot_free(&snap);
    state_db_close(db);
    unlink(path);
}

static size_t test_cost(size_t idlen, size_t ctlen, size_t len)
{
    return 100 + idlen + ctlen + len;
}

static void on_batch(state_session_batch *b)
{
    (void)b;
    batch_calls++;
}

/* Sessions: a batch written in one transaction (puts and deletes), read back by time left within the
 * ceiling; what is expired, past the ceiling or not valid leaves the file. */
static void sessions_are_written_in_batches_and_read_back_within_limits(void)
{
    char path[128];
    path_in_dir(path, sizeof path, "sessions.db");
    mkdir(dir, 0700); /* the test before removed it */
    state_db *db;
    state_snapshot snap;
    char *report;
    CHECK(state_db_open(path, 0, &db, &snap, &report) == 0);
    free(report);
    state_session_op ops[] = {
        {.id = "a", .id_len = 1, .content_type = "application/json", .data = (const uint8_t *)"{}", .len = 2,
         .expires_ms = 5000},
        {.id = "b", .id_len = 1, .content_type = "audio/wav", .data = (const uint8_t *)"RI\0F", .len = 4,
         .expires_ms = 9000},
        {.id = "c", .id_len = 1, .content_type = "text/plain", .data = (const uint8_t *)"x", .len = 1,
         .expires_ms = 1000},
        {.id = "d", .id_len = 1, .content_type = "text/plain", .data = NULL, .len = 0, .expires_ms = 7000},
        {.id = "e", .id_len = 1, .content_type = "text/plain", .data = (const uint8_t *)"e", .len = 1,
         .expires_ms = 8000},
    };
    state_session_batch b = {.ops = ops, .n = 5};
    CHECK(state_db_apply_sessions(db, &b) == 0 && b.error == NULL);
    state_session_op del = {.id = "e", .id_len = 1};
    state_session_batch b2 = {.ops = &del, .n = 1};
    CHECK(state_db_apply_sessions(db, &b2) == 0);
    sqlite3 *c = NULL; /* a row no corral wrote: an id that is not one */
    state_db_close(db);
    CHECK(sqlite3_open(path, &c) == SQLITE_OK);
    CHECK(sqlite3_exec(c, "INSERT INTO sessions VALUES ('../x', 'text/plain', x'00', 9999)", NULL, NULL, NULL) ==
          SQLITE_OK);
    sqlite3_close(c);
    CHECK(state_db_open(path, 0, &db, &snap, &report) == 0);
    free(report);

    /* at 2000: c expired; a, b, d live; room for b and d only (by time left: b 9000, d 7000, a 5000) */
    state_session_limits lim = {.memory = 2 * 100 + 2 + 9 + 4 + 10 + 1, .max_size = 100, .cost = test_cost};
    state_session *got;
    size_t n;
    CHECK(state_db_read_sessions(db, 2000, &lim, &got, &n, &report) == 0);
    CHECK(n == 2);
    CHECK(n == 2 && strcmp(got[0].id, "b") == 0 && got[0].len == 4 && memcmp(got[0].data, "RI\0F", 4) == 0 &&
          strcmp(got[0].content_type, "audio/wav") == 0 && got[0].expires_ms == 9000);
    CHECK(n == 2 && strcmp(got[1].id, "d") == 0 && got[1].len == 0);
    CHECK_STR_CONTAINS(report, "1 expired sessions dropped");
    CHECK_STR_CONTAINS(report, "1 sessions did not fit");
    CHECK_STR_CONTAINS(report, "1 session records that are not valid");
    free(report);
    state_sessions_free(got, n);
    /* what was dropped is gone from the file */
    lim.memory = 1 << 20;
    CHECK(state_db_read_sessions(db, 2000, &lim, &got, &n, &report) == 0);
    CHECK(n == 2 && report == NULL);
    free(report);
    state_sessions_free(got, n);
    state_db_close(db);

    /* Through the loop: a batch queued while the file opens is written, and reported back once. */
    uv_loop_t loop;
    uv_loop_init(&loop);
    state_restore_sessions(&lim, NULL);
    state_start(&loop, path, NULL);
    state_session_op put = {.id = "f", .id_len = 1, .content_type = "text/plain", .data = (const uint8_t *)"f",
                            .len = 1, .expires_ms = 9000};
    state_session_batch b3 = {.ops = &put, .n = 1, .on_written = on_batch};
    state_note_sessions(&b3);
    state_close(on_closed);
    state_session_batch b4 = {.ops = &put, .n = 1, .on_written = on_batch};
    state_note_sessions(&b4); /* after close: dropped, but still reported back */
    CHECK(batch_calls == 1);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(batch_calls == 2 && b3.error == NULL);
    uv_loop_close(&loop);
    CHECK(state_db_open(path, 0, &db, &snap, &report) == 0);
    free(report);
    CHECK(state_db_read_sessions(db, 2000, &lim, &got, &n, &report) == 0);
    CHECK(n == 3 && strcmp(got[1].id, "f") == 0);
    free(report);
    state_sessions_free(got, n);
    state_db_close(db);
    unlink(path);
    rmdir(dir);
}

CHECK_MAIN(CASE(default_path_is_beside_the_repository), CASE(a_config_is_stored_compact_with_sorted_keys),
           CASE(records_that_do_not_decode_are_refused), CASE(a_pull_record_is_checked),
           CASE(the_queue_keeps_one_change_per_record), CASE(the_plan_leaves_out_models_changed_since_start),
           CASE(changes_are_written_and_read_back), CASE(bad_rows_are_skipped_and_reported),
           CASE(a_corrupt_file_is_moved_aside), CASE(a_missing_directory_means_no_state),
           CASE(a_file_held_by_another_daemon_is_not_shared),
           CASE(notes_are_written_through_the_loop_and_flushed_on_close), CASE(a_newer_schema_is_left_alone),
           CASE(sessions_are_written_in_batches_and_read_back_within_limits))
