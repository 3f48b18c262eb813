/*
 * Unit tests of manifest: every key's parsing and validation, durations,
 * sizes and model names.
 */
#include "check.h"
#include "manifest.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static char path[] = "/tmp/corral-manifest-XXXXXX";

static int load_text(const char *text, manifest **m, char *err, size_t errlen)
{
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    *m = NULL;
    return manifest_load(path, "mydir", m, err, errlen);
}

static void durations(void)
{
    int64_t ms;
    CHECK(parse_duration_ms("250ms", &ms) == 0 && ms == 250);
    CHECK(parse_duration_ms("30s", &ms) == 0 && ms == 30000);
    CHECK(parse_duration_ms("5m", &ms) == 0 && ms == 300000);
    CHECK(parse_duration_ms("1h", &ms) == 0 && ms == 3600000);
    CHECK(parse_duration_ms("2.5s", &ms) == 0 && ms == 2500);
    CHECK(parse_duration_ms("10", &ms) == 0 && ms == 10000);
    CHECK(parse_duration_ms("1500us", &ms) == 0 && ms == 2);
    CHECK(parse_duration_ms("0s", &ms) == 0 && ms == 0);
    CHECK(parse_duration_ms("", &ms) == -EINVAL);
    CHECK(parse_duration_ms("s", &ms) == -EINVAL);
    CHECK(parse_duration_ms("5 parsecs", &ms) == -EINVAL);
    CHECK(parse_duration_ms("-1s", &ms) == -EINVAL);
    CHECK(parse_duration_ms("1d", &ms) == -EINVAL);
    CHECK(parse_duration_ms("nan", &ms) == -EINVAL);
    CHECK(parse_duration_ms("1e300h", &ms) == -EINVAL);
}

static void sizes(void)
{
    int64_t b;
    CHECK(parse_size("512MiB", &b) == 0 && b == 512LL << 20);
    CHECK(parse_size("2GiB", &b) == 0 && b == 2LL << 30);
    CHECK(parse_size("1KiB", &b) == 0 && b == 1024);
    CHECK(parse_size("100MB", &b) == 0 && b == 100000000);
    CHECK(parse_size("4096", &b) == 0 && b == 4096);
    CHECK(parse_size("1.5GiB", &b) == 0 && b == 3LL << 29);
    CHECK(parse_size("12 MiB", &b) == -EINVAL);
    CHECK(parse_size("MiB", &b) == -EINVAL);
    CHECK(parse_size("-1MiB", &b) == -EINVAL);
    CHECK(parse_size("1XB", &b) == -EINVAL);
}

static void names(void)
{
    CHECK(model_name_valid("echo", 4));
    CHECK(model_name_valid("tts-espeak_v1.2", 15));
    CHECK(model_name_valid("A", 1));
    CHECK(!model_name_valid("", 0));
    CHECK(!model_name_valid("-lead", 5));
    CHECK(!model_name_valid(".hidden", 7));
    CHECK(!model_name_valid("a/b", 3));
    CHECK(!model_name_valid("..", 2));
    CHECK(!model_name_valid("a b", 3));
    CHECK(!model_name_valid("a\0b", 3));
    CHECK(!model_name_valid("caf\xc3\xa9", 5));
    char long_name[130];
    memset(long_name, 'x', sizeof long_name);
    CHECK(model_name_valid(long_name, 128));
    CHECK(!model_name_valid(long_name, 129));
}

static void minimal_defaults(void)
{
    manifest *m;
    char err[512];
    CHECK(load_text("runtime: python\nentrypoint: worker.py\n", &m, err, sizeof err) == 0);
    if (!m)
        return;
    CHECK(strcmp(m->name, "mydir") == 0);
    CHECK(m->runtime == RUNTIME_PYTHON);
    CHECK(strcmp(m->python, "python3") == 0);
    CHECK(m->instances == 1 && m->max_instances == 1 && m->concurrency == 1 && m->pipeline == 1);
    CHECK(!m->load_eager);
    CHECK(m->keep_alive_ms == 300000);
    CHECK(m->max_sequence_idle_ms == 1000 && !m->sequence_declared); /* Triton's default, 1 s */
    CHECK(m->timeout_ms == 60000);
    CHECK(m->load_timeout_ms == 600000);
    CHECK(m->max_queue == 64);
    CHECK(m->priority_levels == 3 && m->default_priority == 2);
    CHECK(m->max_batch_size == 0);
    CHECK(m->max_restarts == 5 && m->restart_window_ms == 60000);
    CHECK(m->backoff_min_ms == 100 && m->backoff_max_ms == 30000);
    CHECK(m->health_interval_ms == 10000 && m->health_timeout_ms == 5000);
    CHECK(m->memory_limit == 0);
    CHECK(json_is_object(m->parameters) && json_object_size(m->parameters) == 0);
    CHECK(m->args[0] == NULL && m->env[0] == NULL);
    manifest_free(m);
    /* A batching model pipelines nothing, whether it says pipeline: 0 or leaves the key out. */
    CHECK(load_text("runtime: python\nentrypoint: worker.py\nbatching: {max_batch_size: 4}\n", &m, err,
                    sizeof err) == 0);
    if (m)
        CHECK(m->max_batch_size == 4 && m->pipeline == 0);
    manifest_free(m);
}

static void every_key(void)
{
    manifest *m;
    char err[512];
    const char *text = "name: fancy\n"
                       "runtime: exec\n"
                       "entrypoint: bin/worker\n"
                       "args: [--threads, 4]\n"
                       "env: {OMP_NUM_THREADS: 1, MODE: fast}\n"
                       "instances: 2\n"
                       "max_instances: 5\n"
                       "concurrency: 3\n"
                       "pipeline: 0\n"
                       "load: eager\n"
                       "keep_alive: -1\n"
                       "max_sequence_idle: 30s\n"
                       "timeout: 250ms\n"
                       "load_timeout: 2m\n"
                       "max_queue: 7\n"
                       "priority_levels: 5\n"
                       "default_priority: 4\n"
                       "batching: {max_batch_size: 8, max_queue_delay: 5ms, preferred_batch_sizes: [2, 4]}\n"
                       "restart: {max_restarts: 2, window: 10s, backoff_min: 50ms, backoff_max: 1s}\n"
                       "health: {interval: 1s, timeout: 500ms}\n"
                       "limits: {memory: 512MiB}\n"
                       "parameters: {prefix: '>', scale: 1.5, nested: {a: [1, 2]}}\n"
                       "inputs:\n  - {name: INPUT0, datatype: FP32, shape: [-1, 3]}\n"
                       "outputs:\n  - {name: OUTPUT0, datatype: BYTES, shape: [1]}\n";
    CHECK(load_text(text, &m, err, sizeof err) == 0);
    if (!m) {
        fprintf(stderr, "%s\n", err);
        return;
    }
    CHECK(strcmp(m->name, "fancy") == 0);
    CHECK(m->runtime == RUNTIME_EXEC);
    CHECK(strcmp(m->entrypoint, "bin/worker") == 0);
    CHECK(strcmp(m->args[0], "--threads") == 0 && strcmp(m->args[1], "4") == 0 && !m->args[2]);
    CHECK(strcmp(m->env[0], "OMP_NUM_THREADS=1") == 0 && strcmp(m->env[1], "MODE=fast") == 0);
    CHECK(m->instances == 2 && m->max_instances == 5 && m->concurrency == 3 && m->pipeline == 0);
    CHECK(m->load_eager);
    CHECK(m->keep_alive_ms == -1);
    CHECK(m->max_sequence_idle_ms == 30000 && m->sequence_declared);
    CHECK(m->timeout_ms == 250 && m->load_timeout_ms == 120000);
    CHECK(m->max_queue == 7 && m->priority_levels == 5 && m->default_priority == 4);
    CHECK(m->max_batch_size == 8 && m->max_queue_delay_ms == 5);
    CHECK(m->npreferred == 2 && m->preferred_batch_sizes[0] == 2 && m->preferred_batch_sizes[1] == 4);
    CHECK(m->max_restarts == 2 && m->restart_window_ms == 10000 && m->backoff_min_ms == 50 &&
          m->backoff_max_ms == 1000);
    CHECK(m->health_interval_ms == 1000 && m->health_timeout_ms == 500);
    CHECK(m->memory_limit == 512LL << 20);
    CHECK(strcmp(json_string_value(json_object_get(m->parameters, "prefix")), ">") == 0);
    CHECK(json_real_value(json_object_get(m->parameters, "scale")) == 1.5);
    CHECK(json_array_size(m->inputs) == 1 && json_array_size(m->outputs) == 1);
    manifest_free(m);
}

/* Each broken manifest names the file, the key and the reason. */
static void errors(void)
{
    static const struct {
        const char *text;
        const char *expect;
    } cases[] = {
        {"entrypoint: w.py\n", "key 'runtime': is required"},
        {"runtime: python\n", "key 'entrypoint': is required"},
        {"runtime: java\nentrypoint: w\n", "key 'runtime': must be 'python' or 'exec'"},
        {"runtime: python\nentrypoint: w.py\ninstances: zero\n", "key 'instances': must be an integer"},
        {"runtime: python\nentrypoint: w.py\ninstances: 0\n", "key 'instances'"},
        {"runtime: python\nentrypoint: w.py\npipeline: 9\n", "key 'pipeline': must be an integer from 0 to 8"},
        {"runtime: python\nentrypoint: w.py\npipeline: -1\n", "key 'pipeline'"},
        {"runtime: python\nentrypoint: w.py\npipeline: 2\nbatching: {max_batch_size: 4}\n",
         "key 'pipeline': must be 0 (or left out) for a model with batching"},
        {"runtime: python\nentrypoint: w.py\ninstances: 3\nmax_instances: 2\n", "key 'max_instances'"},
        {"runtime: python\nentrypoint: w.py\ntimeout: 5 parsecs\n", "key 'timeout': must be a duration"},
        /* seconds past the int64 of milliseconds they become (found by fuzz_manifest) */
        {"runtime: exec\nentrypoint: run\ntimeout: 00215323334426900701\n", "key 'timeout': must be a duration"},
        {"runtime: exec\nentrypoint: run\nkeep_alive: 1e300\n", "key 'keep_alive'"},
        {"runtime: python\nentrypoint: w.py\nkeep_alive: forever\n", "key 'keep_alive'"},
        {"runtime: python\nentrypoint: w.py\nmax_sequence_idle: 0\n", "key 'max_sequence_idle': must be greater"},
        {"runtime: python\nentrypoint: w.py\nmax_sequence_idle: -1\n", "key 'max_sequence_idle': must be a duration"},
        {"runtime: python\nentrypoint: w.py\nload: sometimes\n", "key 'load': must be 'lazy' or 'eager'"},
        {"runtime: python\nentrypoint: w.py\ninstnaces: 2\n", "key 'instnaces': unknown key"},
        {"runtime: python\nentrypoint: w.py\nrestart: {max_restart: 1}\n", "key 'restart.max_restart': unknown key"},
        {"runtime: python\nentrypoint: w.py\nrestart: {backoff_min: 2s, backoff_max: 1s}\n", "restart.backoff_max"},
        {"runtime: python\nentrypoint: w.py\nhealth: 5\n", "key 'health': must be a mapping"},
        {"runtime: python\nentrypoint: w.py\nlimits: {memory: lots}\n", "key 'limits.memory': must be a size"},
        {"runtime: python\nentrypoint: w.py\npriority_levels: 2\ndefault_priority: 3\n", "key 'default_priority'"},
        {"runtime: python\nentrypoint: w.py\nname: bad/name\n", "key 'name'"},
        {"runtime: python\nentrypoint: ../escape.py\n", "key 'entrypoint': must be a path inside"},
        {"runtime: python\nentrypoint: w.py\nparameters: [1, 2]\n", "key 'parameters': must be a mapping"},
        {"runtime: python\nentrypoint: w.py\ninputs: [{name: X, datatype: FP33, shape: [1]}]\n",
         "key 'inputs[0]': datatype must be one of"},
        {"runtime: python\nentrypoint: w.py\noutputs: [{name: X, datatype: FP32}]\n", "key 'outputs[0]': shape"},
        {"runtime: python\nentrypoint: w.py\nargs: {a: 1}\n", "key 'args'"},
        {"runtime: python\nentrypoint: w.py\nenv: [A]\n", "key 'env'"},
        {"runtime: python\nentrypoint: w.py\nbatching: {max_batch_size: 8, preferred_batch_sizes: [4, 2]}\n",
         "key 'batching.preferred_batch_sizes': must be ascending"},
        {"runtime: python\nentrypoint: w.py\nbatching: {max_batch_size: 8, preferred_batch_sizes: [16]}\n",
         "key 'batching.preferred_batch_sizes': must be ascending integers from 1 to max_batch_size (8)"},
        {"runtime: python\nentrypoint: w.py\nbatching: {preferred_batch_sizes: [2]}\n",
         "key 'batching.preferred_batch_sizes': needs batching.max_batch_size"},
        {"runtime: python\nentrypoint: w.py\nsource: http://x/y.tar\n", "key 'source': must be a mapping"},
        {"runtime: python\nentrypoint: w.py\nsource: {url: 'http://x/y', sha256: 'ab', md5: 'x'}\n",
         "key 'source.md5': unknown key"},
        {"runtime: python\nentrypoint: w.py\nsource: {url: 'ftp://x/y', sha256: 'ab'}\n",
         "key 'source.url': must be an http, https or file URL"},
        {"runtime: python\nentrypoint: w.py\nsource: {url: 'http://x/a b', sha256: 'ab'}\n",
         "key 'source.url': must not contain spaces"},
        {"runtime: python\nentrypoint: w.py\nsource: {url: 'http://x/y', sha256: 'abc'}\n",
         "key 'source.sha256': must be the sha256 of the download, 64 hex digits"},
        {"runtime: python\nentrypoint: w.py\nsource: {sha256: 'abc'}\n", "key 'source.url'"},
        {"runtime: [python\n", "YAML error"},
        {"- just\n- a list\n", "must be a mapping"},
        {"", "must be a mapping"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        manifest *m;
        char err[512] = "";
        int rc = load_text(cases[i].text, &m, err, sizeof err);
        CHECK(rc < 0 && m == NULL);
        CHECK_STR_CONTAINS(err, cases[i].expect);
        CHECK_STR_CONTAINS(err, path);
        manifest_free(m);
    }
}

static void source(void)
{
    manifest *m;
    char err[512] = "";
    const char *hex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    char text[512];
    snprintf(text, sizeof text, "runtime: python\nentrypoint: w.py\nsource:\n  url: https://h/m.tar.gz\n  sha256: '%s'\n", hex);
    CHECK(load_text(text, &m, err, sizeof err) == 0);
    CHECK(m && m->source_url && strcmp(m->source_url, "https://h/m.tar.gz") == 0);
    CHECK(m && m->source_sha256 && strcmp(m->source_sha256, hex) == 0);
    manifest_free(m);
    CHECK(load_text("runtime: python\nentrypoint: w.py\n", &m, err, sizeof err) == 0);
    CHECK(m && !m->source_url && !m->source_sha256);
    manifest_free(m);
}

static void digest_changes(void)
{
    manifest *a, *b, *c;
    char err[512];
    CHECK(load_text("runtime: python\nentrypoint: w.py\n", &a, err, sizeof err) == 0);
    CHECK(load_text("runtime: python\nentrypoint: w.py\n", &b, err, sizeof err) == 0);
    CHECK(load_text("runtime: python\nentrypoint: w.py\ninstances: 2\n", &c, err, sizeof err) == 0);
    if (a && b && c) {
        CHECK(a->digest == b->digest);
        CHECK(a->digest != c->digest);
    }
    manifest_free(a);
    manifest_free(b);
    manifest_free(c);
}

static void missing_file(void)
{
    manifest *m = NULL;
    char err[512];
    CHECK(manifest_load("/nonexistent/model.yaml", "x", &m, err, sizeof err) < 0);
    CHECK_STR_CONTAINS(err, "/nonexistent/model.yaml: cannot open");
}

static json_t *j(const char *text)
{
    return json_loads(text, 0, NULL);
}

static int json_same(json_t *a, const char *text)
{
    json_t *b = j(text);
    int same = json_equal(a, b);
    json_decref(b);
    return same;
}

static void merge_patch(void)
{
    json_t *target = j("{\"a\":1,\"batching\":{\"max_batch_size\":8,\"max_queue_delay\":\"2ms\"},"
                       "\"parameters\":{\"x\":1,\"y\":2},\"args\":[1,2]}");
    json_t *patch = j("{\"batching\":{\"max_queue_delay\":\"5ms\"},\"parameters\":{\"y\":null,\"z\":3},"
                      "\"args\":[3],\"a\":null,\"b\":{\"c\":null,\"d\":4}}");
    json_t *out = manifest_merge_patch(target, patch);
    /* objects merge key by key, null removes, arrays and scalars replace (RFC 7386) */
    CHECK(json_same(out, "{\"batching\":{\"max_batch_size\":8,\"max_queue_delay\":\"5ms\"},"
                         "\"parameters\":{\"x\":1,\"z\":3},\"args\":[3],\"b\":{\"d\":4}}"));
    /* neither argument changed */
    CHECK(json_same(target, "{\"a\":1,\"batching\":{\"max_batch_size\":8,\"max_queue_delay\":\"2ms\"},"
                            "\"parameters\":{\"x\":1,\"y\":2},\"args\":[1,2]}"));
    CHECK(json_object_size(patch) == 5);
    json_decref(out);
    /* a non-object patch replaces the whole */
    json_t *five = json_integer(5);
    out = manifest_merge_patch(target, five);
    CHECK(json_integer_value(out) == 5);
    json_decref(out);
    json_decref(five);
    /* too deep: refused, not a stack overflow */
    json_t *deep = json_object(), *cur = deep;
    for (int i = 0; i < 100; i++) {
        json_t *next = json_object();
        json_object_set_new(cur, "k", next);
        cur = next;
    }
    CHECK(manifest_merge_patch(target, deep) == NULL);
    json_decref(deep);
    json_decref(target);
    json_decref(patch);
}

static int override_text(const char *yaml, const char *config, manifest **m, char *err, size_t errlen)
{
    json_t *o = j(config);
    *m = NULL;
    int rc = manifest_parse_override("the config", (const unsigned char *)yaml, strlen(yaml), "mydir", o, m, err,
                                     errlen);
    json_decref(o);
    return rc;
}

static void overrides(void)
{
    const char *yaml = "runtime: python\nentrypoint: w.py\ninstances: 2\nparameters: {a: 1, b: x}\n"
                       "batching: {max_batch_size: 8, max_queue_delay: 2ms}\n";
    manifest *m;
    char err[512] = "";
    CHECK(override_text(yaml, "{\"instances\":3,\"concurrency\":2,\"parameters\":{\"b\":\"y\"},"
                              "\"batching\":{\"max_queue_delay\":\"5ms\"},\"timeout\":\"2s\"}",
                        &m, err, sizeof err) == 0);
    if (m) {
        CHECK(m->instances == 3 && m->concurrency == 2 && m->timeout_ms == 2000);
        CHECK(m->max_batch_size == 8 && m->max_queue_delay_ms == 5);
        CHECK(json_integer_value(json_object_get(m->parameters, "a")) == 1);
        CHECK(strcmp(json_string_value(json_object_get(m->parameters, "b")), "y") == 0);
        CHECK(strcmp(m->entrypoint, "w.py") == 0);
    }
    manifest_free(m);
    /* null: back to the default */
    CHECK(override_text(yaml, "{\"instances\":null,\"batching\":null}", &m, err, sizeof err) == 0);
    if (m)
        CHECK(m->instances == 1 && m->max_batch_size == 0);
    manifest_free(m);
    /* validated as the manifest is; the message names the override and the key */
    CHECK(override_text(yaml, "{\"instances\":0}", &m, err, sizeof err) < 0 && !m);
    CHECK_STR_CONTAINS(err, "the config: key 'instances': must be an integer from 1 to 1024");
    CHECK(override_text(yaml, "{\"instance_group\":[{\"count\":2}]}", &m, err, sizeof err) < 0);
    CHECK_STR_CONTAINS(err, "key 'instance_group': unknown key");
    CHECK(override_text(yaml, "{\"batching\":{\"max_batch\":2}}", &m, err, sizeof err) < 0);
    CHECK_STR_CONTAINS(err, "key 'batching.max_batch': unknown key");
    CHECK(override_text(yaml, "{\"keep_alive\":\"soon\"}", &m, err, sizeof err) < 0);
    CHECK_STR_CONTAINS(err, "key 'keep_alive': must be a duration");
    /* the program and the name are not a load's to choose */
    static const char *const fixed[] = {"name", "runtime", "entrypoint", "python", "args", "env", "load", "source"};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
        char cfg[64], want[64];
        snprintf(cfg, sizeof cfg, "{\"%s\":\"x\"}", fixed[i]);
        snprintf(want, sizeof want, "key '%s': cannot be set by a load's config", fixed[i]);
        CHECK(override_text(yaml, cfg, &m, err, sizeof err) < 0 && !m);
        CHECK_STR_CONTAINS(err, want);
    }
    CHECK(override_text(yaml, "[1]", &m, err, sizeof err) < 0);
    CHECK_STR_CONTAINS(err, "must be a JSON object");
    /* the file's own errors still count */
    CHECK(override_text("runtime: python\n", "{}", &m, err, sizeof err) < 0);
    CHECK_STR_CONTAINS(err, "key 'entrypoint': is required");
}

int main(void)
{
    int fd = mkstemp(path);
    if (fd < 0)
        return 2;
    close(fd);
    static const check_case cases[] = {CASE(durations), CASE(sizes), CASE(names), CASE(minimal_defaults),
                                       CASE(every_key), CASE(errors), CASE(digest_changes), CASE(missing_file),
                                       CASE(merge_patch), CASE(overrides), CASE(source)};
    int rc = check_run(cases, sizeof cases / sizeof cases[0]);
    unlink(path);
    return rc;
}
