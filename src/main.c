/*
 * main — the corral binary: `corral serve` runs the daemon, the other verbs
 * are its client (cli.c), and the hidden `__shim` mode runs the worker's
 * guard (shim.c) when corral-shim, which runs it with libc alone, is not
 * beside the binary (see inst.c).
 */
#include "access.h"
#include "cli.h"
#include "intake.h"
#include "log.h"
#include "metrics.h"
#include "manifest.h"
#include "proto.h"
#include "server.h"
#include "session.h"
#include "shim.h"
#include "state.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char usage[] =
    "usage: corral serve [options]        run the daemon\n"
    "       corral COMMAND [args]         talk to a running daemon at $CORRAL_URL\n"
    "                                     (default http://127.0.0.1:8766), sending\n"
    "                                     'Authorization: Bearer $CORRAL_TOKEN' when it is set\n"
    "\n"
    "serve options:\n"
    "  --models DIR            model repository (default ./models)\n"
    "  --external-models DIR   entries linked into --models unless a model of that name exists;\n"
    "                          workers see it as $CORRAL_EXTERNAL_MODELS_DIR (absolute)\n"
    "  --samples DIR           speaker samples and other shared inputs, read-only by convention;\n"
    "                          workers see it as $CORRAL_SAMPLES_DIR (absolute). It must exist\n"
    "                          (default: 'samples' beside --models when that exists, else none)\n"
    "  --host HOST             listen address (default 127.0.0.1); one that is not loopback\n"
    "                          is logged as a warning unless a token is set\n"
    "  --port PORT             listen port (default $PORT or 8766; 0 picks a free port)\n"
    "  --grpc-port PORT|off    gRPC (KServe v2's GRPCInferenceService) on --host at PORT (default\n"
    "                          $GRPC_PORT or 8767; 0 picks a free port; off: no gRPC)\n"
    "  --poll SECONDS          rescan the repository periodically (default: only on request)\n"
    "  --state FILE|off        keep explicit loads, unloads, scales and pulls in FILE (SQLite) and\n"
    "                          load those models again at start (default $CORRAL_STATE, else\n"
    "                          corral-state.db in the parent directory of --models; off: none;\n"
    "                          docs/repository.md)\n"
    "  --max-body SIZE         largest request body, e.g. 512MiB (default 1GiB)\n"
    "  --max-inflight-body SIZE  request bodies held at once, all connections together; an upload\n"
    "                          past it gets 503 (default: a quarter of memory, at least --max-body)\n"
    "  --stop-grace DURATION   wait after SHUTDOWN before SIGTERM, and after SIGTERM\n"
    "                          before SIGKILL (default 5s)\n"
    "  --drain-timeout DURATION  on SIGTERM, how long queued and running requests may finish\n"
    "                          (default 30s); the rest get 503\n"
    "  --memory-budget SIZE    memory all loaded models may use together, e.g. 8GiB; loading past\n"
    "                          it unloads least-recently-used idle models first (default: none)\n"
    "  --python-sdk DIR        the Python SDK put on workers' PYTHONPATH\n"
    "  --log-level LEVEL       error, warn(ing), info or debug, any case (default $LOG_LEVEL, else\n"
    "                          info); debug adds an access line per request\n"
    "  --log-format FORMAT     text (default) or json: one object per line with time, level,\n"
    "                          model, instance, pid, request and message\n"
    "  --auth-token-file FILE  require 'Authorization: Bearer TOKEN', TOKEN being the file's first\n"
    "                          line (default: $CORRAL_TOKEN if set, else no token)\n"
    "  --auth all|management   what the token guards: every endpoint but /v2/health/* (all, the\n"
    "                          default), or loading, scaling, logs and /v1 but generate (management)\n"
    "  --allow-host NAME       also answer requests whose Host is NAME; repeatable; '*': any Host\n"
    "                          (default: localhost, *.localhost, loopback and listen addresses)\n"
    "  --allow-origin ORIGIN   also serve browser requests from ORIGIN, e.g. http://localhost:3000;\n"
    "                          repeatable (default: only pages of the daemon's own origin)\n"
    "  --allow-client-shm      serve Triton's system shared memory extension: clients may have the\n"
    "                          daemon map POSIX shared-memory objects they name (default: off;\n"
    "                          docs/security.md)\n"
    "  --pull-allow HOST       corral pull / POST /v1/models/pull may fetch from HOST (exact name or\n"
    "                          literal address; repeatable). A loopback, private or reserved\n"
    "                          address is connected to only when it is listed itself, e.g.\n"
    "                          --pull-allow 127.0.0.1 (default: no host; docs/repository.md)\n"
    "  --pull-on-load          a load of a model whose model.yaml declares a source, and whose files are\n"
    "                          not in --external-models yet, pulls them first (default: only corral pull)\n"
    "  --pull-file-root DIR    file:// URLs may be pulled from below DIR (default: none)\n"
    "  --pull-max-size SIZE    largest download, and largest unpacked model (default 16GiB)\n"
    "  --session-ttl SECONDS   a session's life after its last write when the write names none\n"
    "                          (default 3600; docs/sessions.md)\n"
    "  --session-max-ttl SECONDS  the longest ttl a write may name; more is a 400 (default 86400)\n"
    "  --session-memory SIZE   the whole session store's ceiling, bookkeeping included (default 256MiB)\n"
    "  --session-max-size SIZE  one session's content; larger is a 413 (default 1MiB)\n"
    "  --session-evict lru|off  a full store evicts the least recently used sessions not in use\n"
    "                          (lru, the default), or answers 507 (off)\n"
    "\n"
    "commands:\n"
    "  ls [--json]                       models and their state\n"
    "  ps [--json]                       every instance: pid, state, uptime, requests, restarts, memory\n"
    "  load NAME [--instances N] [--config JSON]\n"
    "                                    load a model and wait until it is ready; --config overrides\n"
    "                                    model.yaml keys for this load (a JSON object, docs/api.md)\n"
    "  unload NAME                       unload a model and wait until its workers exited\n"
    "  scale NAME N                      run N instances of a loaded model\n"
    "  create NAME --from BASE [--param k=v]... [--instances N] [--json]\n"
    "                                    create a variant of BASE at run time: BASE's code and keys,\n"
    "                                    these parameters merged over BASE's (v read as JSON when it is\n"
    "                                    JSON, else as text); kept across restarts with --state\n"
    "  delete NAME                       unload and remove a model created at run time\n"
    "  infer NAME JSON|@FILE|-           send a v2 inference request, print the response\n"
    "  generate NAME JSON|@FILE|- [--text TEXT] [--voice V] [--rate N] [--session ID] [--stream] [-o FILE]\n"
    "  generate NAME --text TEXT [--voice V] [--rate N] [--session ID] [--stream] [-o FILE]\n"
    "                                    free-form request; the answer goes to FILE or stdout.\n"
    "                                    --text, --voice, --rate N (a positive integer), --session ID\n"
    "                                    set the keys \"text\", \"voice\", \"rate\", \"session\" of the\n"
    "                                    JSON body (a session carries its context to the model and\n"
    "                                    takes its update, docs/sessions.md). --stream takes the\n"
    "                                    answer as it is made: events one JSON per line, bytes as\n"
    "                                    they come (not binary to a terminal); a stream that fails\n"
    "                                    or is cut off exits non-zero\n"
    "  pull URL --sha256 HEX [--name NAME] [--json]\n"
    "                                    have the daemon fetch a model (tar, tar.gz, zip or a single\n"
    "                                    model.yaml) into --external-models, verified against HEX, and\n"
    "                                    wait until it is in place; a progress bar on a terminal, plain\n"
    "                                    lines otherwise (docs/repository.md)\n"
    "  pull NAME                         fetch the files of model NAME from the source its model.yaml\n"
    "                                    declares into --external-models/NAME\n"
    "  logs NAME [-f]                    the workers' captured output\n"
    "  events [--json] [--since ID]      follow the lifecycle events (/v1/events) as a table, or with\n"
    "                                    --json one {\"id\",\"event\",\"data\"} per line; --since ID\n"
    "                                    resumes after event ID. Ends when the daemon ends the stream\n"
    "                                    (exit 0) or the connection breaks (exit 1)\n"
    "  top [--once] [--interval S]       a live table of models and instances: state, queue, req/s,\n"
    "                                    errors/s, p50/p99 latency of the interval (default 1 s),\n"
    "                                    memory; q or Ctrl-C quits. Not on a terminal, or with\n"
    "                                    --once: one plain table after one interval\n"
    "  session ls [--json]               the context store's sessions: id, type, size, time left\n"
    "  session get ID                    a session's content, as stored, to stdout\n"
    "  session put ID [FILE|-] [--ttl S] [--content-type T] [--json]\n"
    "                                    create or replace a session from FILE or stdin; without\n"
    "                                    --content-type, application/json when the bytes parse as JSON,\n"
    "                                    else application/octet-stream (docs/sessions.md)\n"
    "  session patch ID JSON|@FILE|- [--ttl S] [--json]\n"
    "                                    merge a JSON merge patch (RFC 7386) into a JSON session\n"
    "  session rm ID                     delete a session\n"
    "\n"
    "  --help, --version\n";


/* A gRPC port: 0 to 65535, or "off" (-1). */
static int parse_grpc_port(const char *s, int *port)
{
    if (strcmp(s, "off") == 0) {
        *port = -1;
        return 0;
    }
    char *end;
    long p = strtol(s, &end, 10);
    if (!*s || *end || p < 0 || p > 65535)
        return -1;
    *port = (int)p;
    return 0;
}

/*
 * The default samples directory: 'samples' in the directory that holds
 * models_dir as written (not resolved: a linked models/ still has its
 * samples beside the link). 0 when it exists as a directory, -1 otherwise.
 */
static int samples_beside(const char *models_dir, char *out, size_t size)
{
    char resolved[PATH_MAX];
    for (int pass = 0; pass < 2; pass++) {
        size_t len = strlen(models_dir);
        while (len > 1 && models_dir[len - 1] == '/')
            len--;
        size_t parent = len; /* the length of "dir/" before the last component; 0 for a bare name */
        while (parent > 0 && models_dir[parent - 1] != '/')
            parent--;
        size_t last = len - parent;
        int dots = (last == 1 && models_dir[parent] == '.') ||
                   (last == 2 && models_dir[parent] == '.' && models_dir[parent + 1] == '.');
        if (dots && pass == 0) { /* "." or ".." names no parent to look in: resolve it first */
            if (!realpath(models_dir, resolved))
                return -1;
            models_dir = resolved;
            continue;
        }
        int n = snprintf(out, size, "%.*ssamples", (int)parent, models_dir);
        if (n < 0 || (size_t)n >= size)
            return -1;
        struct stat st;
        return stat(out, &st) == 0 && S_ISDIR(st.st_mode) ? 0 : -1;
    }
    return -1;
}

static int serve(int argc, char **argv)
{
    const char *env_port = getenv("PORT"), *env_grpc = getenv("GRPC_PORT"), *state = getenv("CORRAL_STATE");
    server_config cfg = {.host = "127.0.0.1",
                         .port = 8766,
                         .grpc_port = 8767,
                         .models_dir = "models",
                         .python_sdk_dir = getenv("CORRAL_PYTHON_SDK") ? getenv("CORRAL_PYTHON_SDK")
                                                                        : CORRAL_SDK_PYTHON_DIR,
                         .max_body = 1LL << 30,
                         .stop_grace_ms = 5000,
                         .drain_timeout_ms = 30000,
                         .sessions = {.default_ttl_s = SESSION_DEFAULT_TTL_S,
                                      .max_ttl_s = SESSION_DEFAULT_MAX_TTL_S,
                                      .memory = SESSION_DEFAULT_MEMORY,
                                      .max_size = SESSION_DEFAULT_MAX_SIZE,
                                      .evict = 1}};
    const char *token_file = NULL;
    const char *allow_hosts[argc], *allow_origins[argc], *pull_allow[argc]; /* at most one per argument */
    size_t n_hosts = 0, n_origins = 0, n_pull_allow = 0;
    const char *env_level = getenv("LOG_LEVEL"); /* the model-management standard's name; --log-level wins */
    if (env_level && *env_level) {
        int level = log_level_parse(env_level);
        if (level < 0) {
            fprintf(stderr, "corral: LOG_LEVEL=%s: must be DEBUG, INFO, WARNING or ERROR (any case)\n", env_level);
            return 2;
        }
        log_threshold = level;
    }
    for (int i = 2; i < argc; i++) {
        const char *opt = argv[i];
        if (strcmp(opt, "--help") == 0 || strcmp(opt, "-h") == 0) {
            fputs(usage, stdout);
            return 0;
        }
        if (strcmp(opt, "--allow-client-shm") == 0) { /* the options without a value */
            cfg.allow_client_shm = 1;
            continue;
        }
        if (strcmp(opt, "--pull-on-load") == 0) {
            cfg.pull_on_load = 1;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "corral: option %s needs a value (see corral --help)\n", opt);
            return 2;
        }
        const char *val = argv[++i];
        char *end;
        if (strcmp(opt, "--models") == 0)
            cfg.models_dir = val;
        else if (strcmp(opt, "--external-models") == 0)
            cfg.external_dir = val;
        else if (strcmp(opt, "--samples") == 0)
            cfg.samples_dir = val;
        else if (strcmp(opt, "--host") == 0)
            cfg.host = val;
        else if (strcmp(opt, "--port") == 0) {
            env_port = NULL; /* the flag wins, even over a PORT that is not a port */
            long p = strtol(val, &end, 10);
            if (*end || p < 0 || p > 65535) {
                fprintf(stderr, "corral: --port must be from 0 to 65535\n");
                return 2;
            }
            cfg.port = (int)p;
        } else if (strcmp(opt, "--grpc-port") == 0) {
            env_grpc = NULL; /* the flag wins, even over a GRPC_PORT that is not a port */
            if (parse_grpc_port(val, &cfg.grpc_port) < 0) {
                fprintf(stderr, "corral: --grpc-port must be a port from 0 to 65535, or off\n");
                return 2;
            }
        } else if (strcmp(opt, "--state") == 0) {
            if (!*val) {
                fprintf(stderr, "corral: --state needs a file, or off\n");
                return 2;
            }
            state = val; /* the flag wins over CORRAL_STATE */
        } else if (strcmp(opt, "--poll") == 0) {
            cfg.poll_s = strtod(val, &end);
            if (*end || cfg.poll_s < 0) {
                fprintf(stderr, "corral: --poll must be a number of seconds\n");
                return 2;
            }
        } else if (strcmp(opt, "--max-body") == 0) {
            if (parse_size(val, &cfg.max_body) < 0 || cfg.max_body <= 0) {
                fprintf(stderr, "corral: --max-body must be a size such as 512MiB\n");
                return 2;
            }
        } else if (strcmp(opt, "--max-inflight-body") == 0) {
            if (parse_size(val, &cfg.max_inflight_body) < 0 || cfg.max_inflight_body <= 0) {
                fprintf(stderr, "corral: --max-inflight-body must be a size such as 4GiB\n");
                return 2;
            }
        } else if (strcmp(opt, "--stop-grace") == 0) {
            if (parse_duration_ms(val, &cfg.stop_grace_ms) < 0) {
                fprintf(stderr, "corral: --stop-grace must be a duration such as 5s\n");
                return 2;
            }
        } else if (strcmp(opt, "--memory-budget") == 0) {
            if (parse_size(val, &cfg.memory_budget) < 0 || cfg.memory_budget <= 0) {
                fprintf(stderr, "corral: --memory-budget must be a size such as 8GiB\n");
                return 2;
            }
        } else if (strcmp(opt, "--drain-timeout") == 0) {
            if (parse_duration_ms(val, &cfg.drain_timeout_ms) < 0) {
                fprintf(stderr, "corral: --drain-timeout must be a duration such as 30s\n");
                return 2;
            }
        } else if (strcmp(opt, "--python-sdk") == 0)
            cfg.python_sdk_dir = val;
        else if (strcmp(opt, "--log-level") == 0) {
            int found = log_level_parse(val);
            if (found < 0) {
                fprintf(stderr, "corral: --log-level must be error, warn(ing), info or debug\n");
                return 2;
            }
            log_threshold = found;
        } else if (strcmp(opt, "--log-format") == 0) {
            if (strcmp(val, "json") != 0 && strcmp(val, "text") != 0) {
                fprintf(stderr, "corral: --log-format must be text or json\n");
                return 2;
            }
            log_json = strcmp(val, "json") == 0;
        } else if (strcmp(opt, "--auth-token-file") == 0) {
            token_file = val;
        } else if (strcmp(opt, "--auth") == 0) {
            if (strcmp(val, "all") == 0)
                cfg.auth_scope = ACCESS_SCOPE_ALL;
            else if (strcmp(val, "management") == 0)
                cfg.auth_scope = ACCESS_SCOPE_MANAGEMENT;
            else {
                fprintf(stderr, "corral: --auth must be all or management\n");
                return 2;
            }
        } else if (strcmp(opt, "--allow-host") == 0) {
            if (!*val) {
                fprintf(stderr, "corral: --allow-host needs a host name, or '*' for any\n");
                return 2;
            }
            allow_hosts[n_hosts++] = val;
        } else if (strcmp(opt, "--allow-origin") == 0) {
            if (!strstr(val, "://")) {
                fprintf(stderr, "corral: --allow-origin must be an origin such as http://localhost:3000\n");
                return 2;
            }
            allow_origins[n_origins++] = val;
        } else if (strcmp(opt, "--pull-allow") == 0) {
            if (!*val || strchr(val, '/') || strchr(val, '*')) {
                fprintf(stderr, "corral: --pull-allow needs a host name or a literal address, with no scheme, "
                                "path or wildcard\n");
                return 2;
            }
            pull_allow[n_pull_allow++] = val;
        } else if (strcmp(opt, "--pull-file-root") == 0) {
            cfg.pull_file_root = val;
        } else if (strcmp(opt, "--pull-max-size") == 0) {
            if (parse_size(val, &cfg.pull_max_size) < 0 || cfg.pull_max_size <= 0) {
                fprintf(stderr, "corral: --pull-max-size must be a size such as 16GiB\n");
                return 2;
            }
        } else if (strcmp(opt, "--session-ttl") == 0 || strcmp(opt, "--session-max-ttl") == 0) {
            int64_t ms;
            if (parse_duration_ms(val, &ms) < 0 || ms < 1000 || ms % 1000) {
                fprintf(stderr, "corral: %s must be a whole number of seconds, at least 1\n", opt);
                return 2;
            }
            *(strcmp(opt, "--session-ttl") == 0 ? &cfg.sessions.default_ttl_s : &cfg.sessions.max_ttl_s) = ms / 1000;
        } else if (strcmp(opt, "--session-memory") == 0 || strcmp(opt, "--session-max-size") == 0) {
            int64_t bytes;
            if (parse_size(val, &bytes) < 0 || bytes <= 0) {
                fprintf(stderr, "corral: %s must be a size such as 256MiB\n", opt);
                return 2;
            }
            *(strcmp(opt, "--session-memory") == 0 ? &cfg.sessions.memory : &cfg.sessions.max_size) = (uint64_t)bytes;
        } else if (strcmp(opt, "--session-evict") == 0) {
            if (strcmp(val, "lru") != 0 && strcmp(val, "off") != 0) {
                fprintf(stderr, "corral: --session-evict must be lru or off\n");
                return 2;
            }
            cfg.sessions.evict = strcmp(val, "lru") == 0;
        } else {
            fprintf(stderr, "corral: unknown option %s (see corral --help)\n", opt);
            return 2;
        }
    }
    if (env_port && *env_port) {
        /* Strict, as --port: PORT=http or PORT=80x must not quietly become a free port (atoi's 0). */
        char *end;
        long p = strtol(env_port, &end, 10);
        if (*end || p < 0 || p > 65535) {
            fprintf(stderr, "corral: PORT=%s: must be a port from 0 to 65535\n", env_port);
            return 2;
        }
        cfg.port = (int)p;
    }
    if (env_grpc && *env_grpc && parse_grpc_port(env_grpc, &cfg.grpc_port) < 0) {
        fprintf(stderr, "corral: GRPC_PORT=%s: must be a port from 0 to 65535, or off\n", env_grpc);
        return 2;
    }
    if (!cfg.max_inflight_body)
        cfg.max_inflight_body = intake_default_max_inflight(cfg.max_body);
    else if (cfg.max_inflight_body < cfg.max_body) {
        fprintf(stderr, "corral: --max-inflight-body (%lld bytes) is below --max-body (%lld bytes): a body of "
                        "--max-body could never be taken\n",
                (long long)cfg.max_inflight_body, (long long)cfg.max_body);
        return 2;
    }
    if (cfg.sessions.default_ttl_s > cfg.sessions.max_ttl_s) {
        fprintf(stderr, "corral: --session-ttl (%lld s) is above --session-max-ttl (%lld s)\n",
                (long long)cfg.sessions.default_ttl_s, (long long)cfg.sessions.max_ttl_s);
        return 2;
    }
    if (cfg.sessions.max_size > cfg.sessions.memory) {
        fprintf(stderr, "corral: --session-max-size (%llu bytes) is above --session-memory (%llu bytes)\n",
                (unsigned long long)cfg.sessions.max_size, (unsigned long long)cfg.sessions.memory);
        return 2;
    }
    if (access(cfg.models_dir, R_OK | X_OK) < 0) {
        fprintf(stderr, "corral: cannot read models directory '%s': %s\n", cfg.models_dir, strerror(errno));
        return 1;
    }
    char default_samples[PATH_MAX];
    if (cfg.samples_dir) {
        /* Named, it must be there: a typo would otherwise surface only as a model that cannot find its
         * voices, at its first load, far from the cause. */
        struct stat st;
        int found = stat(cfg.samples_dir, &st);
        if (found < 0 || !S_ISDIR(st.st_mode)) {
            fprintf(stderr, "corral: --samples '%s': %s\n", cfg.samples_dir,
                    found < 0 ? strerror(errno) : "not a directory");
            return 1;
        }
    } else if (samples_beside(cfg.models_dir, default_samples, sizeof default_samples) == 0)
        cfg.samples_dir = default_samples;
    char state_default[4200];
    if (!state || !*state) {
        if (state_default_path(cfg.models_dir, state_default, sizeof state_default) < 0) {
            fprintf(stderr, "corral: --models '%s': the default state file's name is too long; set --state\n",
                    cfg.models_dir);
            return 2;
        }
        state = state_default;
    }
    cfg.state_path = strcmp(state, "off") == 0 ? NULL : state;
    /* The flag wins over the environment; an empty CORRAL_TOKEN counts as unset. */
    char *token = NULL;
    const char *env_token = getenv("CORRAL_TOKEN");
    if (token_file) {
        char err[1200];
        if (access_read_token_file(token_file, &token, err, sizeof err) < 0) {
            fprintf(stderr, "corral: --auth-token-file: %s\n", err);
            return 1;
        }
    } else if (env_token) {
        int rc = access_token_clean(env_token, strlen(env_token), &token);
        if (rc == -EINVAL || rc == -E2BIG) {
            fprintf(stderr, "corral: CORRAL_TOKEN %s\n",
                    rc == -EINVAL ? "holds a control character: a token must be printable" : "is too long");
            return 1;
        }
    }
    if (cfg.auth_scope == ACCESS_SCOPE_MANAGEMENT && !token) {
        fprintf(stderr, "corral: --auth management needs a token (--auth-token-file or CORRAL_TOKEN)\n");
        return 2;
    }
    cfg.auth_token = token;
    cfg.allow_hosts = allow_hosts;
    cfg.n_allow_hosts = n_hosts;
    cfg.allow_origins = allow_origins;
    cfg.n_allow_origins = n_origins;
    cfg.pull_allow = pull_allow;
    cfg.n_pull_allow = n_pull_allow;
    int status = server_run(&cfg);
    free(token);
    return status;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "__shim") == 0) /* as corral-shim does, for a corral without it beside */
        return shim_main(argc, argv);
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        fputs(usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("corral %s\n", CORRAL_VERSION);
        return 0;
    }
    if (strcmp(argv[1], "serve") == 0) {
        metrics_start();
        return serve(argc, argv);
    }
    return cli_main(argc - 1, argv + 1);
}
