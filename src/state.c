/*
 * state — the state file: explicit loads, unloads, scales and pulls
 * recorded in SQLite off the loop thread, and read back at start; see
 * state.h and docs/repository.md.
 *
 * The loop thread owns the queue and the flags below; the connection
 * (S.db) belongs to whichever work is in flight, and there is at most one
 * (S.busy), so no lock is needed: uv_queue_work's hand-over orders the
 * accesses.
 */
#include "state.h"

#include "log.h"
#include "manifest.h"
#include "sb.h"
#include "session.h"
#include "xmalloc.h"

#include <assert.h>
#include <errno.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct state_db {
    sqlite3 *conn;
    char *path;
};

/* ---- pure parts ---- */

void state_snapshot_free(state_snapshot *s)
{
    for (size_t i = 0; i < s->n_models; i++) {
        free(s->models[i].name);
        json_decref(s->models[i].config);
    }
    for (size_t i = 0; i < s->n_pulls; i++) {
        free(s->pulls[i].name);
        free(s->pulls[i].url);
        free(s->pulls[i].sha256);
    }
    for (size_t i = 0; i < s->n_runtime; i++) {
        free(s->runtime[i].name);
        json_decref(s->runtime[i].spec);
    }
    free(s->models);
    free(s->pulls);
    free(s->runtime);
    *s = (state_snapshot){0};
}

int state_default_path(const char *models_dir, char *out, size_t outlen)
{
    size_t n = strlen(models_dir);
    while (n > 1 && models_dir[n - 1] == '/') /* "models/" is "models" */
        n--;
    size_t slash = n;
    while (slash > 0 && models_dir[slash - 1] != '/')
        slash--;
    int len;
    if (slash == 0) /* "models": its parent is the working directory */
        len = snprintf(out, outlen, "%s", STATE_DEFAULT_NAME);
    else if (slash == 1) /* "/models", or "/" itself */
        len = snprintf(out, outlen, "/%s", STATE_DEFAULT_NAME);
    else
        len = snprintf(out, outlen, "%.*s%s", (int)slash, models_dir, STATE_DEFAULT_NAME);
    return len < 0 || (size_t)len >= outlen ? -ENAMETOOLONG : 0;
}

char *state_encode_config(const json_t *config)
{
    return config ? json_dumps(config, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
}

int state_decode_model(const char *name, size_t name_len, int64_t instances, const char *config, size_t config_len,
                       state_model *out, char *err, size_t errlen)
{
    *out = (state_model){0};
    if (!name || !model_name_valid(name, name_len)) {
        snprintf(err, errlen, "a model record's name is not a model name");
        return -1;
    }
    if (instances < 0 || instances > MANIFEST_MAX_INSTANCES) {
        snprintf(err, errlen, "model %.*s: instances %lld is not from 0 to %d", (int)name_len, name,
                 (long long)instances, MANIFEST_MAX_INSTANCES);
        return -1;
    }
    json_t *cfg = NULL;
    if (config) {
        if (config_len > STATE_MAX_CONFIG) {
            snprintf(err, errlen, "model %.*s: its config is larger than %d bytes", (int)name_len, name,
                     STATE_MAX_CONFIG);
            return -1;
        }
        json_error_t jerr;
        cfg = json_loadb(config, config_len, JSON_REJECT_DUPLICATES, &jerr);
        if (!json_is_object(cfg)) {
            snprintf(err, errlen, "model %.*s: its config is not a JSON object%s%s", (int)name_len, name,
                     cfg ? "" : ": ", cfg ? "" : jerr.text);
            json_decref(cfg);
            return -1;
        }
    }
    out->name = xmalloc(name_len + 1);
    memcpy(out->name, name, name_len);
    out->name[name_len] = 0;
    out->instances = (int)instances;
    out->config = cfg;
    return 0;
}

int state_pull_valid(const char *name, const char *url, const char *sha256, char *err, size_t errlen)
{
    if (!name || !model_name_valid(name, strlen(name))) {
        snprintf(err, errlen, "a pull record's name is not a model name");
        return 0;
    }
    size_t n = url ? strlen(url) : 0;
    if (n == 0 || n > STATE_MAX_URL) {
        snprintf(err, errlen, "model %s: a pull's URL must be 1 to %d bytes", name, STATE_MAX_URL);
        return 0;
    }
    for (size_t i = 0; i < n; i++)
        if (url[i] <= ' ' || url[i] > '~') {
            snprintf(err, errlen, "model %s: a pull's URL must be printable ASCII without spaces", name);
            return 0;
        }
    size_t hex = 0;
    while (sha256 && ((sha256[hex] >= '0' && sha256[hex] <= '9') || (sha256[hex] >= 'a' && sha256[hex] <= 'f') ||
                      (sha256[hex] >= 'A' && sha256[hex] <= 'F')))
        hex++;
    if (!sha256 || hex != 64 || sha256[hex]) {
        snprintf(err, errlen, "model %s: a pull's sha256 must be 64 hexadecimal digits", name);
        return 0;
    }
    return 1;
}

void state_plan(state_snapshot *s, int (*noted)(const char *name, void *ctx), void *ctx)
{
    size_t kept = 0;
    for (size_t i = 0; i < s->n_models; i++) {
        if (noted(s->models[i].name, ctx)) {
            free(s->models[i].name);
            json_decref(s->models[i].config);
        } else {
            s->models[kept++] = s->models[i];
        }
    }
    s->n_models = kept;
    kept = 0;
    for (size_t i = 0; i < s->n_runtime; i++) {
        if (noted(s->runtime[i].name, ctx)) {
            free(s->runtime[i].name);
            json_decref(s->runtime[i].spec);
        } else {
            s->runtime[kept++] = s->runtime[i];
        }
    }
    s->n_runtime = kept;
}

void state_op_free(state_op *op)
{
    if (!op)
        return;
    free(op->name);
    free(op->config);
    free(op->url);
    free(op->sha256);
    free(op->error);
    free(op);
}

/* The table an op writes: 0 models, 1 pulls, 2 runtime_models. */
static int op_table(const state_op *op)
{
    return op->kind == STATE_PUT_PULL ? 1 : op->kind == STATE_PUT_RUNTIME || op->kind == STATE_DEL_RUNTIME ? 2 : 0;
}

static int same_record(const state_op *a, const state_op *b)
{
    return op_table(a) == op_table(b) && strcmp(a->name, b->name) == 0;
}

void state_queue_put(state_op **head, state_op *op)
{
    state_op **at = head;
    while (*at && !same_record(*at, op))
        at = &(*at)->next;
    if (*at) {
        op->next = (*at)->next;
        state_op_free(*at);
    } else {
        op->next = NULL;
    }
    *at = op;
}

/* ---- the file ---- */

static void report_add(sb *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void report_add(sb *r, const char *fmt, ...)
{
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (r->len)
        sb_addc(r, '\n');
    sb_adds(r, line);
}

/* Whether an SQLite result means the file is not a (sound) database. */
static int is_corrupt(int rc)
{
    return (rc & 0xff) == SQLITE_NOTADB || (rc & 0xff) == SQLITE_CORRUPT;
}

/* Runs sql (no rows wanted). Returns SQLite's result; *msg is set to its message on failure. */
static int exec_sql(sqlite3 *c, const char *sql, char *msg, size_t msglen)
{
    char *e = NULL;
    int rc = sqlite3_exec(c, sql, NULL, NULL, &e);
    if (rc != SQLITE_OK)
        snprintf(msg, msglen, "%s", e ? e : sqlite3_errstr(rc));
    sqlite3_free(e);
    return rc;
}

/* The single integer or text answer of sql into *num (or text): SQLite's result. */
static int query_one(sqlite3 *c, const char *sql, int64_t *num, char *text, size_t textlen, char *msg, size_t msglen)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(c, sql, -1, &st, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            if (num)
                *num = sqlite3_column_int64(st, 0);
            if (text) {
                const unsigned char *t = sqlite3_column_text(st, 0);
                snprintf(text, textlen, "%s", t ? (const char *)t : "");
            }
            rc = SQLITE_OK;
        } else if (rc == SQLITE_DONE) {
            rc = SQLITE_OK;
        }
    }
    if (rc != SQLITE_OK)
        snprintf(msg, msglen, "%s", sqlite3_errmsg(c));
    sqlite3_finalize(st);
    return rc;
}

static const char schema[] = "BEGIN IMMEDIATE;"
                             "CREATE TABLE IF NOT EXISTS models ("
                             " name TEXT PRIMARY KEY NOT NULL, instances INTEGER NOT NULL, config TEXT,"
                             " updated_at INTEGER NOT NULL);"
                             "CREATE TABLE IF NOT EXISTS pulls ("
                             " name TEXT PRIMARY KEY NOT NULL, url TEXT NOT NULL, sha256 TEXT NOT NULL,"
                             " pulled_at INTEGER NOT NULL);"
                             "CREATE TABLE IF NOT EXISTS sessions ("
                             " id TEXT PRIMARY KEY NOT NULL, content_type TEXT NOT NULL, data BLOB NOT NULL,"
                             " expires_ms INTEGER NOT NULL);"
                             "CREATE TABLE IF NOT EXISTS runtime_models ("
                             " name TEXT PRIMARY KEY NOT NULL, spec TEXT NOT NULL, created_at INTEGER NOT NULL);"
                             "PRAGMA user_version = 2;"
                             "COMMIT;";

/* One model row into snap; a row that does not decode is counted in *skipped, with why. */
static void read_model_row(sqlite3_stmt *st, state_snapshot *snap, size_t *skipped, char *why, size_t whylen)
{
    const char *name = (const char *)sqlite3_column_text(st, 0);
    size_t name_len = (size_t)sqlite3_column_bytes(st, 0);
    const char *cfg = sqlite3_column_type(st, 2) == SQLITE_NULL ? NULL : (const char *)sqlite3_column_text(st, 2);
    size_t cfg_len = (size_t)sqlite3_column_bytes(st, 2);
    state_model m;
    if (sqlite3_column_type(st, 1) != SQLITE_INTEGER) {
        snprintf(why, whylen, "a model record's instances is not an integer");
        (*skipped)++;
        return;
    }
    if (state_decode_model(name, name_len, sqlite3_column_int64(st, 1), cfg, cfg_len, &m, why, whylen) < 0) {
        (*skipped)++;
        return;
    }
    if (snap->n_models % 16 == 0)
        snap->models = xrealloc(snap->models, (snap->n_models + 16) * sizeof *snap->models);
    snap->models[snap->n_models++] = m;
}

static void read_pull_row(sqlite3_stmt *st, state_snapshot *snap, size_t *skipped, char *why, size_t whylen)
{
    const char *f[3];
    for (int i = 0; i < 3; i++) {
        f[i] = (const char *)sqlite3_column_text(st, i);
        if (f[i] && strlen(f[i]) != (size_t)sqlite3_column_bytes(st, i))
            f[i] = NULL; /* a NUL inside: not a name, URL or digest */
    }
    if (!state_pull_valid(f[0], f[1], f[2], why, whylen)) {
        (*skipped)++;
        return;
    }
    if (snap->n_pulls % 16 == 0)
        snap->pulls = xrealloc(snap->pulls, (snap->n_pulls + 16) * sizeof *snap->pulls);
    snap->pulls[snap->n_pulls++] = (state_pull){xstrdup(f[0]), xstrdup(f[1]), xstrdup(f[2])};
}

/* A run-time model's row: a model name and a spec that is a JSON object naming its base. */
static void read_runtime_row(sqlite3_stmt *st, state_snapshot *snap, size_t *skipped, char *why, size_t whylen)
{
    const char *name = (const char *)sqlite3_column_text(st, 0);
    size_t name_len = (size_t)sqlite3_column_bytes(st, 0);
    const char *spec = (const char *)sqlite3_column_text(st, 1);
    size_t spec_len = (size_t)sqlite3_column_bytes(st, 1);
    state_model decoded;
    /* the same checks as a load's record: a name, a JSON object of at most STATE_MAX_CONFIG bytes */
    if (!spec || state_decode_model(name, name_len, 0, spec, spec_len, &decoded, why, whylen) < 0) {
        if (!spec)
            snprintf(why, whylen, "a run-time model's record has no spec");
        (*skipped)++;
        return;
    }
    const char *from;
    if (manifest_from_name(decoded.config, &from) != 1) {
        snprintf(why, whylen, "run-time model %s: its spec names no base ('from')", decoded.name);
        free(decoded.name);
        json_decref(decoded.config);
        (*skipped)++;
        return;
    }
    if (snap->n_runtime % 16 == 0)
        snap->runtime = xrealloc(snap->runtime, (snap->n_runtime + 16) * sizeof *snap->runtime);
    snap->runtime[snap->n_runtime++] = (state_runtime){decoded.name, decoded.config};
}

/* Reads the tables into snap, skipping (and reporting) rows that do not decode. SQLite's result. */
static int read_tables(sqlite3 *c, const char *path, state_snapshot *snap, sb *report, char *msg, size_t msglen)
{
    static const char *const select[3] = {"SELECT name, instances, config FROM models ORDER BY name",
                                          "SELECT name, url, sha256 FROM pulls ORDER BY name",
                                          "SELECT name, spec FROM runtime_models ORDER BY created_at, name"};
    size_t skipped = 0, over = 0;
    char why[512] = "";
    int rc = SQLITE_OK;
    for (int table = 0; table < 3 && rc == SQLITE_OK; table++) {
        sqlite3_stmt *st = NULL;
        rc = sqlite3_prepare_v2(c, select[table], -1, &st, NULL);
        while (rc == SQLITE_OK) {
            rc = sqlite3_step(st);
            if (rc != SQLITE_ROW)
                break;
            rc = SQLITE_OK;
            if ((table == 0 ? snap->n_models : table == 1 ? snap->n_pulls : snap->n_runtime) == STATE_MAX_ROWS)
                over++;
            else if (table == 0)
                read_model_row(st, snap, &skipped, why, sizeof why);
            else if (table == 1)
                read_pull_row(st, snap, &skipped, why, sizeof why);
            else
                read_runtime_row(st, snap, &skipped, why, sizeof why);
        }
        if (rc == SQLITE_DONE)
            rc = SQLITE_OK;
        else if (rc != SQLITE_OK)
            snprintf(msg, msglen, "%s", sqlite3_errmsg(c));
        sqlite3_finalize(st);
    }
    if (skipped)
        report_add(report, "state file %s: %zu records skipped (the last: %s)", path, skipped, why);
    if (over)
        report_add(report, "state file %s: %zu records past the first %d of a table skipped", path, over,
                   STATE_MAX_ROWS);
    return rc;
}

/* Moves path (and a journal beside it, which would otherwise be replayed into the new file) aside. */
static int move_aside(const char *path, int64_t now, char *moved, size_t movedlen)
{
    time_t t = (time_t)now;
    struct tm tm;
    gmtime_r(&t, &tm);
    char stamp[32];
    strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
    for (int i = 0; i < 100; i++) {
        int n = i ? snprintf(moved, movedlen, "%s.corrupt-%s-%d", path, stamp, i)
                  : snprintf(moved, movedlen, "%s.corrupt-%s", path, stamp);
        if (n < 0 || (size_t)n >= movedlen)
            return -ENAMETOOLONG;
        if (access(moved, F_OK) == 0)
            continue;
        if (rename(path, moved) < 0)
            return -errno;
        char from[4400], to[4500];
        int a = snprintf(from, sizeof from, "%s-journal", path), b = snprintf(to, sizeof to, "%s-journal", moved);
        if (a > 0 && (size_t)a < sizeof from && b > 0 && (size_t)b < sizeof to && access(from, F_OK) == 0)
            rename(from, to);
        return 0;
    }
    return -EEXIST;
}

/* One attempt to open: 0, -1 (give up), or 1 (corrupt: msg says why). */
static int open_once(const char *path, state_db **out, state_snapshot *snap, sb *report, char *msg, size_t msglen)
{
    sqlite3 *c = NULL;
    int rc = sqlite3_open_v2(path, &c, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        int sys = c ? sqlite3_system_errno(c) : 0;
        report_add(report, "cannot open state file %s: %s%s%s%s; running without state", path,
                   c ? sqlite3_errmsg(c) : sqlite3_errstr(rc), sys ? " (" : "", sys ? strerror(sys) : "",
                   sys ? ")" : "");
        sqlite3_close(c);
        return -1;
    }
    sqlite3_extended_result_codes(c, 1);
    sqlite3_busy_timeout(c, 2000); /* a daemon that is stopping may still hold the file */
    int64_t version = 0;
    char check[256] = "";
    /* Exclusive locking: the lock taken by the first write is kept until the
     * file is closed, so a second daemon on the same file is told so, and
     * runs without state, instead of the two overwriting each other. */
    if ((rc = exec_sql(c, "PRAGMA locking_mode = EXCLUSIVE; PRAGMA journal_mode = DELETE; PRAGMA synchronous = FULL;",
                       msg, msglen)) != SQLITE_OK ||
        (rc = query_one(c, "PRAGMA quick_check", NULL, check, sizeof check, msg, msglen)) != SQLITE_OK ||
        (rc = query_one(c, "PRAGMA user_version", &version, NULL, 0, msg, msglen)) != SQLITE_OK)
        goto fail;
    if (strcmp(check, "ok") != 0) {
        snprintf(msg, msglen, "integrity check: %s", check);
        rc = SQLITE_CORRUPT;
        goto fail;
    }
    if (version > STATE_SCHEMA_VERSION) {
        report_add(report, "state file %s has schema version %lld, newer than this corral's %d; running without state "
                   "(the file is left as it is)", path, (long long)version, STATE_SCHEMA_VERSION);
        sqlite3_close(c);
        return -1;
    }
    if ((rc = exec_sql(c, schema, msg, msglen)) != SQLITE_OK)
        goto fail;
    if ((rc = read_tables(c, path, snap, report, msg, msglen)) != SQLITE_OK)
        goto fail;
    state_db *db = xcalloc(1, sizeof *db);
    db->conn = c;
    db->path = xstrdup(path);
    *out = db;
    return 0;
fail:
    sqlite3_exec(c, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close(c);
    state_snapshot_free(snap);
    if (is_corrupt(rc))
        return 1;
    if ((rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED)
        report_add(report, "state file %s is in use by another process (%s); running without state", path, msg);
    else
        report_add(report, "cannot use state file %s: %s; running without state", path, msg);
    return -1;
}

int state_db_open(const char *path, int64_t now, state_db **db, state_snapshot *snap, char **report)
{
    *db = NULL;
    *snap = (state_snapshot){0};
    *report = NULL;
    sb r;
    sb_init(&r, 256);
    struct stat stt;
    int rc, fresh = 0;
    char msg[1024] = "";
    if (stat(path, &stt) < 0) {
        fresh = errno == ENOENT;
    } else if (!S_ISREG(stt.st_mode)) {
        report_add(&r, "state file %s is not a regular file; running without state", path);
        rc = -1;
        goto done;
    }
    rc = open_once(path, db, snap, &r, msg, sizeof msg);
    if (rc == 0 && fresh)
        report_add(&r, "state file %s did not exist: starting with empty state, in a new file", path);
    if (rc == 1) {
        char moved[4400];
        int mv = move_aside(path, now, moved, sizeof moved);
        if (mv < 0) {
            report_add(&r, "state file %s is corrupt (%s) and cannot be moved aside (%s); running without state", path,
                       msg, strerror(-mv));
            rc = -1;
            goto done;
        }
        report_add(&r, "state file %s is corrupt (%s): moved aside to %s; starting with empty state, in a new file",
                   path, msg, moved);
        rc = open_once(path, db, snap, &r, msg, sizeof msg);
        if (rc == 1) {
            report_add(&r, "state file %s: the new file is corrupt too (%s); running without state", path, msg);
            rc = -1;
        }
    }
done:
    if (r.len)
        *report = sb_take(&r, NULL);
    sb_free(&r);
    return rc == 0 ? 0 : -1;
}

/*
 * Ends a write's transaction: COMMIT when its statements succeeded (rc),
 * else ROLLBACK. msg holds the statements' error, taken before they were
 * finalized. Returns 0, or -1 with *error set (malloc'd).
 */
static int end_write(sqlite3 *c, int rc, char *msg, size_t msglen, char **error)
{
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(c, "COMMIT", NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        return 0;
    if (msg[0] == 0 || strcmp(msg, "not an error") == 0)
        snprintf(msg, msglen, "%s", sqlite3_errmsg(c));
    sqlite3_exec(c, "ROLLBACK", NULL, NULL, NULL);
    free(*error);
    *error = xstrdup(msg);
    return -1;
}

int state_db_apply(state_db *db, state_op *op)
{
    static const char *const sql[] = {
        [STATE_PUT_MODEL] =
            "INSERT OR REPLACE INTO models (name, instances, config, updated_at) VALUES (?1, ?2, ?3, ?4)",
        [STATE_DEL_MODEL] = "DELETE FROM models WHERE name = ?1",
        [STATE_PUT_PULL] = "INSERT OR REPLACE INTO pulls (name, url, sha256, pulled_at) VALUES (?1, ?2, ?3, ?4)",
        [STATE_PUT_RUNTIME] = "INSERT OR REPLACE INTO runtime_models (name, spec, created_at) VALUES (?1, ?2, ?3)",
        [STATE_DEL_RUNTIME] = "DELETE FROM runtime_models WHERE name = ?1",
    };
    sqlite3 *c = db->conn;
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_exec(c, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(c, sql[op->kind], -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, op->name, -1, SQLITE_STATIC);
        if (op->kind == STATE_PUT_MODEL) {
            sqlite3_bind_int(st, 2, op->instances);
            sqlite3_bind_text(st, 3, op->config, -1, SQLITE_STATIC); /* NULL binds NULL */
            sqlite3_bind_int64(st, 4, op->at);
        } else if (op->kind == STATE_PUT_PULL) {
            sqlite3_bind_text(st, 2, op->url, -1, SQLITE_STATIC);
            sqlite3_bind_text(st, 3, op->sha256, -1, SQLITE_STATIC);
            sqlite3_bind_int64(st, 4, op->at);
        } else if (op->kind == STATE_PUT_RUNTIME) {
            sqlite3_bind_text(st, 2, op->config, -1, SQLITE_STATIC);
            sqlite3_bind_int64(st, 3, op->at);
        }
        rc = sqlite3_step(st);
        if (rc == SQLITE_DONE)
            rc = SQLITE_OK;
    }
    char msg[512];
    snprintf(msg, sizeof msg, "%s", sqlite3_errmsg(c));
    sqlite3_finalize(st);
    return end_write(c, rc, msg, sizeof msg, &op->error);
}

void state_db_close(state_db *db)
{
    if (!db)
        return;
    sqlite3_close(db->conn);
    free(db->path);
    free(db);
}

int state_db_apply_sessions(state_db *db, state_session_batch *b)
{
    sqlite3 *c = db->conn;
    sqlite3_stmt *put = NULL, *del = NULL;
    int rc = sqlite3_exec(c, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(c,
                                "INSERT OR REPLACE INTO sessions (id, content_type, data, expires_ms) "
                                "VALUES (?1, ?2, ?3, ?4)",
                                -1, &put, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(c, "DELETE FROM sessions WHERE id = ?1", -1, &del, NULL);
    for (size_t i = 0; i < b->n && rc == SQLITE_OK; i++) {
        const state_session_op *op = &b->ops[i];
        sqlite3_stmt *st = op->content_type ? put : del;
        sqlite3_reset(st);
        sqlite3_bind_text(st, 1, op->id, (int)op->id_len, SQLITE_STATIC);
        if (op->content_type) {
            sqlite3_bind_text(st, 2, op->content_type, -1, SQLITE_STATIC);
            sqlite3_bind_blob64(st, 3, op->len ? op->data : (const void *)"", op->len, SQLITE_STATIC);
            sqlite3_bind_int64(st, 4, op->expires_ms);
        }
        rc = sqlite3_step(st);
        if (rc == SQLITE_DONE)
            rc = SQLITE_OK;
    }
    char msg[512];
    snprintf(msg, sizeof msg, "%s", sqlite3_errmsg(c));
    sqlite3_finalize(put);
    sqlite3_finalize(del);
    return end_write(c, rc, msg, sizeof msg, &b->error);
}

void state_sessions_free(state_session *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(s[i].id);
        free(s[i].content_type);
        free(s[i].data);
    }
    free(s);
}

/* Whether column i of st is text of printable ASCII, 1 to max bytes. */
static int column_printable(sqlite3_stmt *st, int i, size_t max)
{
    if (sqlite3_column_type(st, i) != SQLITE_TEXT)
        return 0;
    const unsigned char *t = sqlite3_column_text(st, i);
    size_t n = (size_t)sqlite3_column_bytes(st, i);
    if (!t || n == 0 || n > max)
        return 0;
    for (size_t k = 0; k < n; k++)
        if (t[k] < ' ' || t[k] > '~')
            return 0;
    return 1;
}

/*
 * A JSON session's stored text made what the store keeps: one JSON value
 * (no duplicate keys), as compact text. Returns -1 when it is not one.
 */
static int json_row_compact(state_session *s)
{
    json_t *v = json_loadb((const char *)s->data, s->len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, NULL);
    char *compact = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    json_decref(v);
    if (!compact)
        return -1;
    size_t len = strlen(compact);
    if (len != s->len || memcmp(compact, s->data, len) != 0) {
        free(s->data);
        s->data = (uint8_t *)compact;
        s->len = len;
    } else {
        free(compact);
    }
    return 0;
}

int state_db_read_sessions(state_db *db, int64_t now_ms, const state_session_limits *limits, state_session **out,
                           size_t *n, char **report)
{
    *out = NULL;
    *n = 0;
    *report = NULL;
    sqlite3 *c = db->conn;
    sqlite3_stmt *st = NULL;
    int64_t *gone = NULL; /* rowids to delete: not valid, or past the ceiling */
    size_t n_gone = 0, n_invalid = 0, n_over = 0, cap = 0, out_cap = 0;
    uint64_t used = 0;
    int64_t expired = 0;
    int rc = sqlite3_prepare_v2(c,
                                "SELECT rowid, id, content_type, data, expires_ms FROM sessions WHERE expires_ms > ?1 "
                                "ORDER BY expires_ms DESC",
                                -1, &st, NULL);
    if (rc == SQLITE_OK)
        sqlite3_bind_int64(st, 1, now_ms);
    while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        rc = SQLITE_OK;
        size_t idlen = (size_t)sqlite3_column_bytes(st, 1), ctlen = (size_t)sqlite3_column_bytes(st, 2);
        size_t len = (size_t)sqlite3_column_bytes(st, 3);
        const char *id = (const char *)sqlite3_column_text(st, 1);
        int valid = id && model_name_valid(id, idlen) && column_printable(st, 2, 255) &&
                    sqlite3_column_type(st, 4) == SQLITE_INTEGER && len <= limits->max_size;
        size_t cost = valid ? limits->cost(idlen, ctlen, len) : 0;
        if (!valid || used + cost > limits->memory) {
            if (valid)
                n_over++;
            else
                n_invalid++;
            if (n_gone == cap) {
                cap = cap ? cap * 2 : 64;
                gone = xrealloc(gone, cap * sizeof *gone);
            }
            gone[n_gone++] = sqlite3_column_int64(st, 0);
            continue;
        }
        used += cost;
        if (*n == out_cap) {
            out_cap = out_cap ? out_cap * 2 : 64;
            *out = xrealloc(*out, out_cap * sizeof **out);
        }
        state_session *s = &(*out)[(*n)++];
        s->id = xstrdup(id);
        s->content_type = xstrdup((const char *)sqlite3_column_text(st, 2));
        s->len = len;
        s->data = xmalloc(len + 1);
        if (len)
            memcpy(s->data, sqlite3_column_blob(st, 3), len);
        s->data[len] = 0;
        s->expires_ms = sqlite3_column_int64(st, 4);
        if (strcmp(s->content_type, SESSION_JSON) == 0 && json_row_compact(s) < 0) {
            /* a JSON session goes into worker frames as it is: a damaged row must not */
            free(s->id);
            free(s->content_type);
            free(s->data);
            (*n)--;
            used -= cost;
            n_invalid++;
            if (n_gone == cap) {
                cap = cap ? cap * 2 : 64;
                gone = xrealloc(gone, cap * sizeof *gone);
            }
            gone[n_gone++] = sqlite3_column_int64(st, 0);
        }
    }
    if (rc == SQLITE_DONE)
        rc = SQLITE_OK;
    char msg[512] = "";
    if (rc != SQLITE_OK)
        snprintf(msg, sizeof msg, "%s", sqlite3_errmsg(c));
    sqlite3_finalize(st);
    st = NULL;
    /* What the store will not hold leaves the file too, so the file keeps matching the store. */
    if (rc == SQLITE_OK && (rc = sqlite3_exec(c, "BEGIN IMMEDIATE", NULL, NULL, NULL)) == SQLITE_OK) {
        rc = sqlite3_prepare_v2(c, "DELETE FROM sessions WHERE expires_ms <= ?1", -1, &st, NULL);
        if (rc == SQLITE_OK) {
            sqlite3_bind_int64(st, 1, now_ms);
            rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
            expired = sqlite3_changes(c);
        }
        sqlite3_finalize(st);
        st = NULL;
        if (rc == SQLITE_OK)
            rc = sqlite3_prepare_v2(c, "DELETE FROM sessions WHERE rowid = ?1", -1, &st, NULL);
        for (size_t i = 0; i < n_gone && rc == SQLITE_OK; i++) {
            sqlite3_reset(st);
            sqlite3_bind_int64(st, 1, gone[i]);
            rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
        }
        sqlite3_finalize(st);
        if (rc != SQLITE_OK)
            snprintf(msg, sizeof msg, "%s", sqlite3_errmsg(c));
        rc = sqlite3_exec(c, rc == SQLITE_OK ? "COMMIT" : "ROLLBACK", NULL, NULL, NULL) == SQLITE_OK && !msg[0]
                 ? SQLITE_OK
                 : SQLITE_ERROR;
    }
    free(gone);
    sb r;
    sb_init(&r, 128);
    if (expired)
        report_add(&r, "state file %s: %lld expired sessions dropped", db->path, (long long)expired);
    if (n_invalid)
        report_add(&r, "state file %s: %zu session records that are not valid skipped and removed", db->path,
                   n_invalid);
    if (n_over)
        report_add(&r, "state file %s: %zu sessions did not fit --session-memory %llu bytes and were dropped "
                   "(those with the least time left)", db->path, n_over, (unsigned long long)limits->memory);
    if (rc != SQLITE_OK)
        report_add(&r, "state file %s: reading sessions: %s", db->path, msg[0] ? msg : sqlite3_errmsg(c));
    if (r.len)
        *report = sb_take(&r, NULL);
    sb_free(&r);
    if (rc != SQLITE_OK) {
        state_sessions_free(*out, *n);
        *out = NULL;
        *n = 0;
        return -1;
    }
    return 0;
}

/* ---- the loop thread's side ---- */

enum { STATE_OFF, STATE_OPENING, STATE_OPEN, STATE_CLOSED };

static struct {
    uv_loop_t *loop;
    int phase;
    char *path;
    state_db *db;             /* the work in flight's while busy */
    state_restore_cb on_restore;
    void (*on_closed)(void);  /* set by state_close */
    int closing;
    int busy;                 /* a work is in flight: at most one */
    uv_work_t work;
    state_op *pending;        /* queued, coalesced per record */
    state_op *writing;        /* taken by the work in flight */
    state_session_batch *batches, *batches_tail; /* session changes queued, in order */
    state_session_batch *batches_writing;        /* taken by the work in flight */
    state_session *restored;  /* the open's sessions, for its after-work */
    size_t n_restored;
    char *sessions_report;
    char **noted;             /* models noted while opening: not restored */
    size_t n_noted;
    /* the open's results, for its after-work */
    state_snapshot snap;
    char *report;
    int open_rc;
} S;

static void pump(void);

/* Set before state_start (which clears S): whether and how sessions are read back. */
static struct {
    state_session_limits limits;
    void (*on_sessions)(const state_session *s, size_t n);
} SR;

void state_restore_sessions(const state_session_limits *limits, void (*on_sessions)(const state_session *s, size_t n))
{
    SR.limits = *limits;
    SR.on_sessions = on_sessions;
}

/* Calls every batch of the list's on_written (each may free itself). */
static void batches_done(state_session_batch *b)
{
    while (b) {
        state_session_batch *next = b->next;
        b->on_written(b);
        b = next;
    }
}

static void log_report(const char *report)
{
    if (!report)
        return;
    for (const char *p = report; *p;) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        log_warn("%.*s", (int)n, p);
        p += n + (nl ? 1 : 0);
    }
}

static int was_noted(const char *name, void *ctx)
{
    (void)ctx;
    for (size_t i = 0; i < S.n_noted; i++)
        if (strcmp(S.noted[i], name) == 0)
            return 1;
    return 0;
}

static void free_noted(void)
{
    for (size_t i = 0; i < S.n_noted; i++)
        free(S.noted[i]);
    free(S.noted);
    S.noted = NULL;
    S.n_noted = 0;
}

static void work_open(uv_work_t *w)
{
    (void)w;
    S.open_rc = state_db_open(S.path, (int64_t)time(NULL), &S.db, &S.snap, &S.report);
    if (S.open_rc == 0 && SR.on_sessions) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        state_db_read_sessions(S.db, (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000, &SR.limits, &S.restored,
                               &S.n_restored, &S.sessions_report);
    }
}

static void on_opened(uv_work_t *w, int status)
{
    (void)w;
    (void)status;
    S.busy = 0;
    log_report(S.report);
    free(S.report);
    S.report = NULL;
    log_report(S.sessions_report);
    free(S.sessions_report);
    S.sessions_report = NULL;
    if (S.open_rc < 0) {
        S.phase = STATE_OFF;
        while (S.pending) {
            state_op *next = S.pending->next;
            state_op_free(S.pending);
            S.pending = next;
        }
        state_session_batch *b = S.batches;
        S.batches = S.batches_tail = NULL;
        batches_done(b);
        if (SR.on_sessions && !S.closing)
            SR.on_sessions(NULL, 0); /* none to restore: the store stops waiting for them */
    } else {
        S.phase = STATE_OPEN;
        if (SR.on_sessions) {
            log_info("state file %s: %zu session%s restored", S.path, S.n_restored, S.n_restored == 1 ? "" : "s");
            if (!S.closing)
                SR.on_sessions(S.restored, S.n_restored);
        }
        log_info("state file %s: %zu model%s to load again, %zu pulled model%s and %zu created at run time recorded",
                 S.path, S.snap.n_models, S.snap.n_models == 1 ? "" : "s", S.snap.n_pulls,
                 S.snap.n_pulls == 1 ? "" : "s", S.snap.n_runtime);
        state_plan(&S.snap, was_noted, NULL);
        if (!S.closing && S.on_restore)
            S.on_restore(&S.snap);
    }
    state_snapshot_free(&S.snap);
    state_sessions_free(S.restored, S.n_restored);
    S.restored = NULL;
    S.n_restored = 0;
    free_noted();
    pump();
}

static void work_write(uv_work_t *w)
{
    (void)w;
    for (state_op *op = S.writing; op; op = op->next)
        state_db_apply(S.db, op);
    for (state_session_batch *b = S.batches_writing; b; b = b->next)
        state_db_apply_sessions(S.db, b);
}

static void on_written(uv_work_t *w, int status)
{
    (void)w;
    (void)status;
    S.busy = 0;
    while (S.writing) {
        state_op *op = S.writing;
        S.writing = op->next;
        if (op->error)
            log_warn("state file %s: model %s: the change was not recorded: %s", S.path, op->name, op->error);
        state_op_free(op);
    }
    state_session_batch *b = S.batches_writing;
    S.batches_writing = NULL;
    batches_done(b);
    pump();
}

static void work_close(uv_work_t *w)
{
    (void)w;
    state_db_close(S.db);
    S.db = NULL;
}

static void on_db_closed(uv_work_t *w, int status)
{
    (void)w;
    (void)status;
    S.busy = 0;
    S.phase = STATE_CLOSED;
    pump();
}

/* Starts the next work, if any: the pending changes, or the close once they are written. */
static void pump(void)
{
    if (S.busy)
        return;
    if (S.phase == STATE_OPEN && (S.pending || S.batches)) {
        S.writing = S.pending;
        S.pending = NULL;
        S.batches_writing = S.batches;
        S.batches = S.batches_tail = NULL;
        S.busy = 1;
        uv_queue_work(S.loop, &S.work, work_write, on_written);
        return;
    }
    if (!S.closing)
        return;
    if (S.phase == STATE_OPEN) {
        S.busy = 1;
        uv_queue_work(S.loop, &S.work, work_close, on_db_closed);
        return;
    }
    if (S.on_closed) { /* OFF or CLOSED: nothing left to do */
        void (*done)(void) = S.on_closed;
        S.on_closed = NULL;
        free(S.path);
        S.path = NULL;
        done();
    }
}

void state_start(uv_loop_t *loop, const char *path, state_restore_cb on_restore)
{
    assert(!S.busy && !S.pending && !S.path); /* once, or again only after state_close is done */
    memset(&S, 0, sizeof S);
    S.loop = loop;
    S.on_restore = on_restore;
    if (!path) {
        S.phase = STATE_OFF;
        log_info("state: off: loads, unloads and scales are not kept across a restart");
        return;
    }
    S.path = xstrdup(path);
    S.phase = STATE_OPENING;
    S.busy = 1;
    uv_queue_work(loop, &S.work, work_open, on_opened);
}

static int accepting(void)
{
    return !S.closing && (S.phase == STATE_OPENING || S.phase == STATE_OPEN);
}

static void queue_op(state_op *op)
{
    op->at = (int64_t)time(NULL);
    if (S.phase == STATE_OPENING && op->kind != STATE_PUT_PULL && !was_noted(op->name, NULL)) {
        S.noted = xrealloc(S.noted, (S.n_noted + 1) * sizeof *S.noted);
        S.noted[S.n_noted++] = xstrdup(op->name);
    }
    state_queue_put(&S.pending, op);
    pump();
}

void state_note_loaded(const char *name, int instances, const json_t *config)
{
    assert(model_name_valid(name, strlen(name)));
    assert(instances >= 0 && instances <= MANIFEST_MAX_INSTANCES);
    if (!accepting())
        return;
    char *encoded = state_encode_config(config);
    if (encoded && strlen(encoded) > STATE_MAX_CONFIG) {
        log_warn("state file %s: model %s: its load's config is larger than %d bytes and is not recorded", S.path,
                 name, STATE_MAX_CONFIG);
        free(encoded);
        encoded = NULL;
    }
    state_op *op = xcalloc(1, sizeof *op);
    op->kind = STATE_PUT_MODEL;
    op->name = xstrdup(name);
    op->instances = instances;
    op->config = encoded;
    queue_op(op);
}

/* A change that is only a name: a record removed. */
static void queue_removal(state_op_kind kind, const char *name)
{
    assert(model_name_valid(name, strlen(name)));
    if (!accepting())
        return;
    state_op *op = xcalloc(1, sizeof *op);
    op->kind = kind;
    op->name = xstrdup(name);
    queue_op(op);
}

void state_note_unloaded(const char *name)
{
    queue_removal(STATE_DEL_MODEL, name);
}

int state_note_pull(const char *name, const char *url, const char *sha256)
{
    char err[256];
    if (!state_pull_valid(name, url, sha256, err, sizeof err)) {
        log_warn("state: pull not recorded: %s", err);
        return -EINVAL;
    }
    if (!accepting())
        return 0;
    state_op *op = xcalloc(1, sizeof *op);
    op->kind = STATE_PUT_PULL;
    op->name = xstrdup(name);
    op->url = xstrdup(url);
    op->sha256 = xstrdup(sha256);
    for (char *p = op->sha256; *p; p++) /* one spelling of a digest */
        if (*p >= 'A' && *p <= 'F')
            *p = (char)(*p - 'A' + 'a');
    queue_op(op);
    return 0;
}

void state_note_sessions(state_session_batch *b)
{
    b->next = NULL;
    if (!accepting()) {
        b->on_written(b);
        return;
    }
    if (S.batches_tail)
        S.batches_tail->next = b;
    else
        S.batches = b;
    S.batches_tail = b;
    pump();
}

void state_note_created(const char *name, const json_t *spec)
{
    assert(model_name_valid(name, strlen(name)));
    if (!accepting())
        return;
    char *encoded = state_encode_config(spec);
    if (!encoded || strlen(encoded) > STATE_MAX_CONFIG) {
        log_warn("state file %s: model %s: its keys are larger than %d bytes: not recorded, it will not be created "
                 "again after a restart", S.path, name, STATE_MAX_CONFIG);
        free(encoded);
        return;
    }
    state_op *op = xcalloc(1, sizeof *op);
    op->kind = STATE_PUT_RUNTIME;
    op->name = xstrdup(name);
    op->config = encoded;
    queue_op(op);
}

void state_note_deleted(const char *name)
{
    queue_removal(STATE_DEL_RUNTIME, name);
}

int state_restoring(void)
{
    return S.phase == STATE_OPENING && !S.closing;
}

void state_close(void (*on_done)(void))
{
    S.closing = 1;
    S.on_closed = on_done;
    pump();
}
