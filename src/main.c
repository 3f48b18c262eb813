/*
 * main — the corral binary: `corral serve` runs the daemon, the other verbs
 * are its client (cli.c), and the hidden `__shim` mode is the first step of
 * every worker process (see inst.c).
 */
#include "cli.h"
#include "log.h"
#include "manifest.h"
#include "server.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

static const char usage[] =
    "usage: corral serve [options]        run the daemon\n"
    "       corral COMMAND [args]         talk to a running daemon at $CORRAL_URL\n"
    "                                     (default http://127.0.0.1:8766)\n"
    "\n"
    "serve options:\n"
    "  --models DIR            model repository (default ./models)\n"
    "  --external-models DIR   entries linked into --models unless a model of that name exists\n"
    "  --host HOST             listen address (default 127.0.0.1)\n"
    "  --port PORT             listen port (default $PORT or 8766; 0 picks a free port)\n"
    "  --poll SECONDS          rescan the repository periodically (default: only on request)\n"
    "  --max-body SIZE         largest request body, e.g. 512MiB (default 1GiB)\n"
    "  --stop-grace DURATION   wait after SHUTDOWN before SIGTERM, and after SIGTERM\n"
    "                          before SIGKILL (default 5s)\n"
    "  --drain-timeout DURATION  on SIGTERM, how long requests in flight may finish (default 30s)\n"
    "  --python-sdk DIR        the Python SDK put on workers' PYTHONPATH\n"
    "  --log-level LEVEL       error, warn, info or debug (default info)\n"
    "\n"
    "commands:\n"
    "  ls [--json]                       models and their state\n"
    "  ps [--json]                       every instance: pid, state, uptime, requests, restarts, memory\n"
    "  load NAME [--instances N]         load a model and wait until it is ready\n"
    "  unload NAME                       unload a model and wait until its workers exited\n"
    "  scale NAME N                      run N instances of a loaded model\n"
    "  infer NAME JSON|@FILE|-           send a v2 inference request, print the response\n"
    "  generate NAME JSON|@FILE|- [-o FILE]\n"
    "  generate NAME --text TEXT [-o FILE]\n"
    "                                    free-form request; the body goes to FILE or stdout\n"
    "  logs NAME [-f]                    the workers' captured output\n"
    "\n"
    "  --help, --version\n";

/* `corral __shim PPID FILE ARGV0 [ARGS...]`: die with the daemon, then become the worker. */
static int shim(int argc, char **argv)
{
    if (argc < 5)
        return 127;
    pid_t daemon_pid = (pid_t)atoi(argv[2]);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != daemon_pid) /* the daemon died before the prctl took effect */
        _exit(1);
    execvp(argv[3], argv + 4);
    fprintf(stderr, "corral: cannot execute %s: %s\n", argv[3], strerror(errno));
    _exit(127);
}

static int serve(int argc, char **argv)
{
    const char *env_port = getenv("PORT");
    server_config cfg = {.host = "127.0.0.1",
                         .port = env_port && *env_port ? atoi(env_port) : 8766,
                         .models_dir = "models",
                         .python_sdk_dir = getenv("CORRAL_PYTHON_SDK") ? getenv("CORRAL_PYTHON_SDK")
                                                                        : CORRAL_SDK_PYTHON_DIR,
                         .max_body = 1LL << 30,
                         .stop_grace_ms = 5000,
                         .drain_timeout_ms = 30000};
    for (int i = 2; i < argc; i++) {
        const char *opt = argv[i];
        if (strcmp(opt, "--help") == 0 || strcmp(opt, "-h") == 0) {
            fputs(usage, stdout);
            return 0;
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
        else if (strcmp(opt, "--host") == 0)
            cfg.host = val;
        else if (strcmp(opt, "--port") == 0) {
            long p = strtol(val, &end, 10);
            if (*end || p < 0 || p > 65535) {
                fprintf(stderr, "corral: --port must be from 0 to 65535\n");
                return 2;
            }
            cfg.port = (int)p;
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
        } else if (strcmp(opt, "--stop-grace") == 0) {
            if (parse_duration_ms(val, &cfg.stop_grace_ms) < 0) {
                fprintf(stderr, "corral: --stop-grace must be a duration such as 5s\n");
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
            static const char *levels[] = {"error", "warn", "info", "debug"};
            int found = -1;
            for (int l = 0; l < 4; l++)
                if (strcmp(val, levels[l]) == 0)
                    found = l;
            if (found < 0) {
                fprintf(stderr, "corral: --log-level must be error, warn, info or debug\n");
                return 2;
            }
            log_threshold = found;
        } else {
            fprintf(stderr, "corral: unknown option %s (see corral --help)\n", opt);
            return 2;
        }
    }
    if (access(cfg.models_dir, R_OK | X_OK) < 0) {
        fprintf(stderr, "corral: cannot read models directory '%s': %s\n", cfg.models_dir, strerror(errno));
        return 1;
    }
    return server_run(&cfg);
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "__shim") == 0)
        return shim(argc, argv);
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        fputs(usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("corral %s\n", CORRAL_VERSION);
        return 0;
    }
    if (strcmp(argv[1], "serve") == 0)
        return serve(argc, argv);
    return cli_main(argc - 1, argv + 1);
}
