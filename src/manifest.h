/*
 * manifest — parsing and validation of a model's model.yaml (SPEC section 2).
 *
 * manifest_load never aborts on bad input: it returns an error message that
 * names the file, the key and the reason, and the caller marks only that
 * model unavailable. The parsed manifest is immutable once returned.
 */
#ifndef CORRAL_MANIFEST_H
#define CORRAL_MANIFEST_H

#include "decl.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

enum manifest_runtime { RUNTIME_PYTHON, RUNTIME_EXEC };

/* The most preferred_batch_sizes a manifest may list. */
#define MANIFEST_MAX_PREFERRED 16

typedef struct manifest {
    char *name; /* from the manifest, or the directory name */
    enum manifest_runtime runtime;
    char *entrypoint; /* as written, relative to the model directory */
    char *python;     /* interpreter for RUNTIME_PYTHON */
    char **args;      /* NULL-terminated */
    char **env;       /* NULL-terminated "KEY=VALUE" strings */
    int instances;
    int max_instances;
    int concurrency;
    int pipeline;       /* requests written to a busy instance ahead of time (docs/worker-protocol.md); 0 with batching */
    int load_eager;
    int decoupled;      /* its answers are streams: tensor requests go to its generate (gRPC's ModelStreamInfer) */
    int64_t keep_alive_ms; /* -1: never unload */
    int64_t timeout_ms;
    int64_t stream_timeout_ms; /* a streamed response's run after its first chunk; -1: none */
    int64_t load_timeout_ms;
    int64_t max_sequence_idle_ms; /* a live sequence with nothing queued or running is released after this */
    int sequence_declared;        /* max_sequence_idle was written: Triton's config shows sequence_batching */
    int max_queue;
    int priority_levels;
    int default_priority;
    int max_batch_size; /* 0: batching off */
    int64_t max_queue_delay_ms;
    int preferred_batch_sizes[MANIFEST_MAX_PREFERRED]; /* ascending, each at most max_batch_size */
    int npreferred;
    int max_restarts;
    int64_t restart_window_ms;
    int64_t backoff_min_ms;
    int64_t backoff_max_ms;
    int64_t health_interval_ms;
    int64_t health_timeout_ms;
    int64_t memory_limit; /* bytes, 0: none */
    json_t *parameters;   /* object, never NULL */
    json_t *inputs;       /* array or NULL */
    json_t *outputs;      /* array or NULL */
    decl_list *input_decl;  /* inputs parsed for the request checks; NULL when none are declared */
    decl_list *output_decl; /* likewise outputs */
    char *source_url;     /* source.url: where `corral pull NAME` fetches the model's files; NULL: none */
    char *source_sha256;  /* source.sha256, 64 hex digits; set with source_url */
    uint64_t digest;      /* of the file's bytes, to notice changes */
} manifest;

/*
 * Parses the manifest at path for the model directory named dirname.
 * Returns 0 and *out, or a negative code with a message in err
 * ("<path>: key 'instances': must be an integer from 1 to 1024").
 */
int manifest_load(const char *path, const char *dirname, manifest **out, char *err, size_t errlen);
/* The same over the manifest's bytes in memory; path is only named in messages. */
int manifest_parse(const char *path, const unsigned char *text, size_t len, const char *dirname, manifest **out,
                   char *err, size_t errlen);
/*
 * The same with override, a JSON object of manifest keys (a load's config,
 * docs/api.md), merged over the file's keys as a JSON merge patch
 * (manifest_merge_patch) before the whole is validated as a manifest is.
 * The keys that choose the program or the name (name, runtime, entrypoint,
 * python, args, env) and load are refused. override NULL: the file alone.
 * Messages begin with label when given (it names the override), else path.
 */
int manifest_parse_override(const char *path, const unsigned char *text, size_t len, const char *dirname,
                            const json_t *override, manifest **out, char *err, size_t errlen);
int manifest_load_override(const char *path, const char *dirname, const json_t *override, const char *label,
                           manifest **out, char *err, size_t errlen);
void manifest_free(manifest *m);

/*
 * The steps of manifest_parse_override, for the repository scan, which
 * resolves a variant's keys against its base's before validating them:
 * manifest_parse_tree turns the YAML bytes into a new JSON tree (no key
 * checked); manifest_load_tree does the same for a file, with the digest
 * of its bytes; manifest_from_tree validates a tree (root is not changed)
 * with override merged over it, as manifest_parse_override does, and
 * gives the manifest the digest passed. Messages as manifest_load's.
 */
int manifest_parse_tree(const char *path, const unsigned char *text, size_t len, json_t **out, char *err,
                        size_t errlen);
int manifest_load_tree(const char *path, json_t **out, uint64_t *digest, char *err, size_t errlen);
int manifest_from_tree(const char *path, const json_t *root, const char *dirname, const json_t *override,
                       uint64_t digest, manifest **out, char *err, size_t errlen);

/*
 * Variants (docs/repository.md, "Variants"). A manifest with `from: NAME`
 * is a variant of the model NAME: it runs NAME's code with NAME's keys,
 * its own keys overriding.
 *
 * manifest_inherit returns the keys of a variant as a new tree: every key
 * of base (the base's keys, its own inheritance already resolved) but
 * `name` and `from`, then every key of variant but `from` replacing the
 * base's whole, except `parameters`, merged one level: the variant's
 * parameters are set over the base's, key by key. Pure.
 *
 * manifest_from_name: whether keys names a base: 0 (no `from`), 1 with
 * *from set (borrowed from keys), or -EINVAL when `from` is not a model name.
 *
 * manifest_check_runtime_keys: the keys of a variant created at run time
 * may not choose the program the daemon runs (runtime, entrypoint, python,
 * args, env) or where its files are pulled from (source), as a load's
 * config may not: 0, or -EINVAL with "<label>: key 'env': ..." in err.
 */
json_t *manifest_inherit(const json_t *base, const json_t *variant);
int manifest_from_name(const json_t *keys, const char **from);
int manifest_check_runtime_keys(const json_t *keys, const char *label, char *err, size_t errlen);

/*
 * RFC 7386's JSON merge patch of patch over target, as a new tree: an
 * object patch merges key by key (recursively), a null member removes the
 * key, anything else replaces target whole. NULL when patch nests more
 * than 64 deep. Pure; neither argument is changed.
 */
json_t *manifest_merge_patch(const json_t *target, const json_t *patch);

/* The most instances one model may run (instances, max_instances, load and scale requests). */
#define MANIFEST_MAX_INSTANCES 1024
/* The most requests one instance may handle at once. */
#define MANIFEST_MAX_CONCURRENCY 1024
#define MANIFEST_MAX_PIPELINE 8

/* "250ms", "30s", "5m", "1h", "2.5s", "100us"; a bare number is seconds. Returns 0 or -EINVAL. */
int parse_duration_ms(const char *s, int64_t *ms);
/* "512MiB", "2GiB", "100MB", "4096"; a bare number is bytes. Returns 0 or -EINVAL. */
int parse_size(const char *s, int64_t *bytes);

/* Whether s (n bytes, not NUL-terminated) is a valid model name:
 * [A-Za-z0-9][A-Za-z0-9._-]{0,127}. Checked before any filesystem access. */
int model_name_valid(const char *s, size_t n);

/*
 * The message for a name that is not valid (model_name_valid), naming it as
 * utf8_shown shows client text: "invalid model name 'x/..': names match ...".
 */
void model_name_error(const char *s, size_t n, char *msg, size_t msglen);

/* FNV-1a over a byte range; used to notice changed manifests. */
uint64_t manifest_digest(const void *data, size_t len);
/* The digest of a variant's resolved keys (their compact JSON, keys sorted): a change to its base changes it. */
uint64_t manifest_keys_digest(const json_t *keys);

#endif
