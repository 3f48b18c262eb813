/*
 * main — the corral binary: `corral serve` runs the daemon, the other verbs
 * are its client (cli.c), and the hidden `__shim` mode is the first step of
 * every worker process (see inst.c).
 */
#include "cli.h"
#include "log.h"
#include "manifest.h"
#include "proto.h"
#include "server.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
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
    "  --drain-timeout DURATION  on SIGTERM, how long queued and running requests may finish\n"
    "                          (default 30s); the rest get 503\n"
    "  --memory-budget SIZE    memory all loaded models may use together, e.g. 8GiB; loading past\n"
    "                          it unloads least-recently-used idle models first (default: none)\n"
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

/*
 * `corral __shim PPID FILE ARGV0 [ARGS...]`: the first process of every
 * worker (see inst.c). It stays as a small guard: the parent of the real
 * worker, which leads a process group of its own. Whenever the worker
 * exits the guard kills that group, so nothing the model started outlives
 * it; and when the daemon dies, even by SIGKILL, the guard kills the group
 * at once. Sweeping after every exit matters: a dying daemon's socket
 * closes before its children get the parent-death signal, and a worker
 * that exits on that end-of-file could otherwise beat the signal to it.
 * The guard then mirrors the worker's exit status or signal as its own.
 */
static pid_t guarded_worker;

static void on_daemon_death(int sig)
{
    (void)sig;
    if (guarded_worker > 0)
        kill(-guarded_worker, SIGKILL);
    _exit(1);
}

static int shim(int argc, char **argv)
{
    if (argc < 5)
        return 127;
    pid_t daemon_pid = (pid_t)atoi(argv[2]);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_daemon_death;
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGUSR1);
    sigprocmask(SIG_BLOCK, &block, &old); /* until guarded_worker is set */
    sigaction(SIGUSR1, &sa, NULL);
    prctl(PR_SET_PDEATHSIG, SIGUSR1);
    if (getppid() != daemon_pid) /* the daemon died before the prctl took effect */
        _exit(1);
    static const int stop_signals[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT};
    for (size_t i = 0; i < sizeof stop_signals / sizeof stop_signals[0]; i++)
        signal(stop_signals[i], SIG_IGN);
    pid_t guard = getpid();
    pid_t worker = fork();
    if (worker < 0) {
        fprintf(stderr, "corral: cannot fork the worker: %s\n", strerror(errno));
        _exit(127);
    }
    if (worker == 0) {
        setpgid(0, 0);
        for (size_t i = 0; i < sizeof stop_signals / sizeof stop_signals[0]; i++)
            signal(stop_signals[i], SIG_DFL);
        signal(SIGUSR1, SIG_DFL);
        sigprocmask(SIG_SETMASK, &old, NULL);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != guard)
            _exit(1);
        execvp(argv[3], argv + 4);
        fprintf(stderr, "corral: cannot execute %s: %s\n", argv[3], strerror(errno));
        _exit(127);
    }
    setpgid(worker, worker); /* also here: whichever of the two runs first, the group exists before we rely on it */
    guarded_worker = worker;
    sigprocmask(SIG_SETMASK, &old, NULL);
    /* The protocol and health sockets and the shared-memory regions are the
     * worker's: EOF on a socket must mean the worker is gone. */
    for (int fd = WORKER_PROTOCOL_FD; fd <= WORKER_SHM_OUT_FD; fd++)
        close(fd);
    int status;
    while (waitpid(worker, &status, 0) < 0)
        if (errno != EINTR)
            _exit(127);
    kill(-worker, SIGKILL); /* whatever the worker started goes with it */
    if (WIFEXITED(status))
        _exit(WEXITSTATUS(status));
    int sig = WTERMSIG(status);
    signal(sig, SIG_DFL);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, sig);
    sigprocmask(SIG_UNBLOCK, &set, NULL);
    kill(guard, sig);
    _exit(128 + sig);
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
