/*
 * Unit tests of variants: the inheritance of keys (manifest_inherit), the
 * keys a run-time variant may not set, the repository scan's resolution of
 * chains, loops and missing bases (repo_scan on a temporary repository),
 * and run-time models in the state file.
 */
#include "check.h"
#include "manifest.h"
#include "repo.h"
#include "state.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static json_t *parse(const char *text)
{
    json_t *j = json_loads(text, 0, NULL);
    if (!j)
        abort();
    return j;
}

static int same(const json_t *a, const char *text)
{
    json_t *b = parse(text);
    int eq = json_equal((json_t *)a, b);
    json_decref(b);
    return eq;
}

static void inherit_overrides_and_merges_parameters(void)
{
    json_t *base = parse("{\"name\": \"b\", \"runtime\": \"python\", \"entrypoint\": \"w.py\", \"instances\": 2,"
                         " \"batching\": {\"max_batch_size\": 8, \"max_queue_delay\": \"2ms\"},"
                         " \"parameters\": {\"a\": 1, \"b\": 2, \"voice\": {\"x\": 1, \"y\": 2}}}");
    json_t *variant = parse("{\"from\": \"b\", \"instances\": 1, \"batching\": {\"max_batch_size\": 4},"
                            " \"parameters\": {\"b\": 3, \"c\": 4, \"voice\": {\"x\": 5}}}");
    json_t *keys = manifest_inherit(base, variant);
    /* name and from are not inherited; batching replaced whole; parameters one level deep */
    CHECK(same(keys, "{\"runtime\": \"python\", \"entrypoint\": \"w.py\", \"instances\": 1,"
                     " \"batching\": {\"max_batch_size\": 4},"
                     " \"parameters\": {\"a\": 1, \"b\": 3, \"c\": 4, \"voice\": {\"x\": 5}}}"));
    /* pure: neither argument changed */
    CHECK(json_integer_value(json_object_get(base, "instances")) == 2);
    CHECK(json_object_get(variant, "from"));
    json_decref(keys);
    /* a variant's parameters over a base without any, and a variant naming itself */
    json_t *bare = parse("{\"runtime\": \"exec\", \"entrypoint\": \"x\"}");
    json_t *v2 = parse("{\"name\": \"mine\", \"parameters\": {\"k\": true}}");
    keys = manifest_inherit(bare, v2);
    CHECK(same(keys, "{\"runtime\": \"exec\", \"entrypoint\": \"x\", \"name\": \"mine\", \"parameters\": {\"k\": true}}"));
    json_decref(keys);
    /* a variant's parameters that are not a mapping replace the base's, and validation says why */
    json_t *v3 = parse("{\"parameters\": [1]}");
    keys = manifest_inherit(base, v3);
    manifest *m = NULL;
    char err[512];
    CHECK(manifest_from_tree("v/model.yaml", keys, "v", NULL, 0, &m, err, sizeof err) < 0 && !m);
    CHECK_STR_CONTAINS(err, "v/model.yaml: key 'parameters': must be a mapping");
    json_decref(keys);
    json_decref(base);
    json_decref(variant);
    json_decref(bare);
    json_decref(v2);
    json_decref(v3);
}

static void from_names_a_model(void)
{
    const char *from;
    json_t *k = parse("{\"from\": \"tts-espeak\"}");
    CHECK(manifest_from_name(k, &from) == 1 && strcmp(from, "tts-espeak") == 0);
    json_decref(k);
    k = parse("{\"runtime\": \"python\"}");
    CHECK(manifest_from_name(k, &from) == 0 && !from);
    json_decref(k);
    const char *bad[] = {"{\"from\": \"../x\"}", "{\"from\": 3}", "{\"from\": \"\"}", "{\"from\": null}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        k = parse(bad[i]);
        CHECK(manifest_from_name(k, &from) == -EINVAL);
        json_decref(k);
    }
    /* a variant's file on its own is not a manifest: the scan resolves it */
    manifest *m = NULL;
    char err[512];
    const char *text = "from: base\nruntime: python\nentrypoint: w.py\n";
    CHECK(manifest_parse("v/model.yaml", (const unsigned char *)text, strlen(text), "v", &m, err, sizeof err) < 0);
    CHECK_STR_CONTAINS(err, "key 'from': a variant is read with its base");
}

static void runtime_keys_refused(void)
{
    char err[512];
    const char *refused[] = {"runtime", "entrypoint", "python", "args", "env", "source"};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        json_t *k = json_pack("{s:s,s:s}", "from", "b", refused[i], "x");
        CHECK(manifest_check_runtime_keys(k, "model 'rt'", err, sizeof err) == -EINVAL);
        char want[64];
        snprintf(want, sizeof want, "model 'rt': key '%s': cannot be set at run time", refused[i]);
        CHECK_STR_CONTAINS(err, want);
        json_decref(k);
    }
    json_t *ok = parse("{\"from\": \"b\", \"name\": \"rt\", \"load\": \"eager\", \"instances\": 3,"
                       " \"parameters\": {\"env\": 1}}");
    CHECK(manifest_check_runtime_keys(ok, "model 'rt'", err, sizeof err) == 0);
    json_decref(ok);
    json_t *arr = parse("[]");
    CHECK(manifest_check_runtime_keys(arr, "model 'rt'", err, sizeof err) == -EINVAL);
    CHECK_STR_CONTAINS(err, "must be a JSON object");
    json_decref(arr);
}

static char repo[] = "/tmp/corral-variant-XXXXXX";

static void put(const char *dir, const char *yaml)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", repo, dir);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/%s/model.yaml", repo, dir);
    FILE *f = fopen(path, "w");
    fputs(yaml, f);
    fclose(f);
}

static const repo_entry *entry(const repo_entry *v, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(v[i].name, name) == 0)
            return &v[i];
    return NULL;
}

static void scan_resolves_chains(void)
{
    CHECK(mkdtemp(repo) != NULL);
    put("base", "runtime: python\nentrypoint: w.py\ninstances: 2\nparameters: {a: 1, b: 2}\n");
    put("v", "from: base\nparameters: {b: 3}\n");
    put("w", "from: v\ninstances: 4\nparameters: {c: 5}\n");
    put("named", "from: base\nname: other-name\n");
    put("x", "from: y\n");
    put("y", "from: x\n");
    put("lost", "from: nowhere\n");
    put("bad", "from: base\ninstances: zero\n");
    put("on-bad", "from: bad\n");
    repo_entry *v;
    size_t n;
    CHECK(repo_scan(repo, &v, &n) == 0);
    char base_dir[600], v_dir[600], w_dir[600];
    snprintf(base_dir, sizeof base_dir, "%s/base", repo);
    snprintf(v_dir, sizeof v_dir, "%s/v", repo);
    snprintf(w_dir, sizeof w_dir, "%s/w", repo);
    const repo_entry *b = entry(v, n, "base"), *ev = entry(v, n, "v"), *ew = entry(v, n, "w");
    CHECK(b && b->mf && !b->from && !b->variant_dir && strcmp(b->dir, base_dir) == 0);
    CHECK(ev && ev->mf && strcmp(ev->from, "base") == 0 && strcmp(ev->dir, base_dir) == 0);
    CHECK(strcmp(ev->variant_dir, v_dir) == 0 && ev->mf->instances == 2);
    CHECK(same(ev->mf->parameters, "{\"a\": 1, \"b\": 3}"));
    /* a variant of a variant: the chain's root's code, every level's keys */
    CHECK(ew && ew->mf && strcmp(ew->from, "v") == 0 && strcmp(ew->dir, base_dir) == 0);
    CHECK(strcmp(ew->variant_dir, w_dir) == 0 && ew->mf->instances == 4);
    CHECK(same(ew->mf->parameters, "{\"a\": 1, \"b\": 3, \"c\": 5}"));
    CHECK(strcmp(ew->mf->name, "w") == 0);
    const repo_entry *named = entry(v, n, "other-name");
    CHECK(named && named->mf && strcmp(named->mf->name, "other-name") == 0);
    /* the base's digest is not its variants': each notices its own change */
    CHECK(b->mf->digest != ev->mf->digest && ev->mf->digest != ew->mf->digest);
    const repo_entry *ex = entry(v, n, "x"), *ey = entry(v, n, "y"), *el = entry(v, n, "lost");
    CHECK(ex && !ex->mf && ex->error && ey && !ey->mf);
    CHECK_STR_CONTAINS(ex->error, "x/model.yaml: key 'from': a loop: x -> y -> x");
    CHECK_STR_CONTAINS(ey->error, "a loop: x -> y -> x");
    CHECK(strcmp(ex->from, "y") == 0);
    CHECK(el && !el->mf);
    CHECK_STR_CONTAINS(el->error, "lost/model.yaml: key 'from': base model 'nowhere' is not in the repository "
                                  "(lost -> nowhere)");
    const repo_entry *bad = entry(v, n, "bad"), *onbad = entry(v, n, "on-bad");
    CHECK(bad && !bad->mf);
    CHECK_STR_CONTAINS(bad->error, "bad/model.yaml: key 'instances': must be an integer");
    CHECK(onbad && !onbad->mf);
    CHECK_STR_CONTAINS(onbad->error, "key 'from': base model 'bad' is broken: ");
    uint64_t v_digest = ev->mf->digest, w_digest = ew->mf->digest, base_digest = b->mf->digest;
    repo_entries_free(v, n);

    /* The base changes: its variants' digests change with it; a comment alone changes only the base's. */
    put("base", "runtime: python\nentrypoint: w.py\ninstances: 2\nparameters: {a: 10, b: 2}\n");
    CHECK(repo_scan(repo, &v, &n) == 0);
    CHECK(entry(v, n, "v")->mf->digest != v_digest && entry(v, n, "w")->mf->digest != w_digest);
    CHECK(same(entry(v, n, "w")->mf->parameters, "{\"a\": 10, \"b\": 3, \"c\": 5}"));
    v_digest = entry(v, n, "v")->mf->digest;
    repo_entries_free(v, n);
    put("base", "# a comment\nruntime: python\nentrypoint: w.py\ninstances: 2\nparameters: {a: 10, b: 2}\n");
    CHECK(repo_scan(repo, &v, &n) == 0);
    CHECK(entry(v, n, "v")->mf->digest == v_digest && entry(v, n, "base")->mf->digest != base_digest);
    repo_entries_free(v, n);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", repo);
    CHECK(system(cmd) == 0);
}

static void state_keeps_runtime_models(void)
{
    char dir[] = "/tmp/corral-variant-state-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[600];
    snprintf(path, sizeof path, "%s/state.db", dir);
    state_db *db;
    state_snapshot snap;
    char *report;
    CHECK(state_db_open(path, 0, &db, &snap, &report) == 0 && db);
    free(report);
    state_snapshot_free(&snap);
    state_op *put_a = calloc(1, sizeof *put_a), *put_b = calloc(1, sizeof *put_b), *del_b = calloc(1, sizeof *del_b);
    put_a->kind = STATE_PUT_RUNTIME;
    put_a->name = strdup("rt");
    put_a->config = strdup("{\"from\":\"base\",\"parameters\":{\"tag\":\"x\"}}");
    put_a->at = 1;
    put_b->kind = STATE_PUT_RUNTIME;
    put_b->name = strdup("rt2");
    put_b->config = strdup("{\"from\":\"rt\"}");
    put_b->at = 2;
    del_b->kind = STATE_DEL_RUNTIME;
    del_b->name = strdup("rt2");
    CHECK(state_db_apply(db, put_a) == 0 && state_db_apply(db, put_b) == 0);
    state_db_close(db);
    CHECK(state_db_open(path, 0, &db, &snap, &report) == 0);
    free(report);
    CHECK(snap.n_runtime == 2 && snap.n_models == 0);
    CHECK(strcmp(snap.runtime[0].name, "rt") == 0 && strcmp(snap.runtime[1].name, "rt2") == 0);
    CHECK(same(snap.runtime[0].spec, "{\"from\": \"base\", \"parameters\": {\"tag\": \"x\"}}"));
    state_snapshot_free(&snap);
    CHECK(state_db_apply(db, del_b) == 0);
    state_db_close(db);
    /* A record that is not a run-time model's is skipped, and said so. */
    char sql[900];
    snprintf(sql, sizeof sql,
             "sqlite3 '%s' \"INSERT INTO runtime_models VALUES ('bad', '{\\\"parameters\\\":{}}', 3);"
             " INSERT INTO runtime_models VALUES ('../x', '{\\\"from\\\":\\\"b\\\"}', 4);"
             " INSERT INTO runtime_models VALUES ('arr', '[1]', 5)\" 2>/dev/null",
             path);
    if (system(sql) == 0) { /* the sqlite3 shell may not be installed */
        CHECK(state_db_open(path, 0, &db, &snap, &report) == 0);
        CHECK(snap.n_runtime == 1 && strcmp(snap.runtime[0].name, "rt") == 0);
        CHECK(report != NULL);
        CHECK_STR_CONTAINS(report, "3 records skipped");
        free(report);
        state_snapshot_free(&snap);
        state_db_close(db);
    }
    /* Queued changes to one run-time record coalesce; a models record of the same name is another record. */
    state_op *q = NULL, *a = calloc(1, sizeof *a), *b = calloc(1, sizeof *b), *c = calloc(1, sizeof *c);
    a->kind = STATE_PUT_RUNTIME;
    a->name = strdup("rt");
    b->kind = STATE_PUT_MODEL;
    b->name = strdup("rt");
    c->kind = STATE_DEL_RUNTIME;
    c->name = strdup("rt");
    state_queue_put(&q, a);
    state_queue_put(&q, b);
    state_queue_put(&q, c);
    CHECK(q && q->kind == STATE_DEL_RUNTIME && q->next && q->next->kind == STATE_PUT_MODEL && !q->next->next);
    while (q) {
        state_op *next = q->next;
        state_op_free(q);
        q = next;
    }
    state_op_free(put_a);
    state_op_free(put_b);
    state_op_free(del_b);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
}

CHECK_MAIN(CASE(inherit_overrides_and_merges_parameters), CASE(from_names_a_model), CASE(runtime_keys_refused),
           CASE(scan_resolves_chains), CASE(state_keeps_runtime_models))
