/*
 * server — the daemon: the libuv loop, h2o's HTTP/1.1 and HTTP/2 on a TCP
 * listener, signals, periodic rescans, and an orderly stop.
 */
#ifndef CORRAL_SERVER_H
#define CORRAL_SERVER_H

#include "access.h"
#include "session.h"

#include <stddef.h>
#include <stdint.h>

typedef struct server_config {
    const char *host;
    int port;                 /* 0: an ephemeral port, logged once bound */
    int grpc_port;            /* gRPC's (api_grpc.h): 0 an ephemeral port, -1 off */
    const char *models_dir;
    const char *external_dir; /* NULL: none */
    const char *samples_dir;  /* NULL: none; handed to workers, never written by the daemon */
    const char *python_sdk_dir;
    double poll_s;            /* 0: rescan only on request */
    int64_t max_body;         /* bytes */
    int64_t max_inflight_body; /* bytes: request bodies held at once, all connections together */
    int64_t stop_grace_ms;
    int64_t drain_timeout_ms;
    int64_t memory_budget; /* bytes; 0: none */
    int pull_on_load;      /* --pull-on-load (model.h's registry_config) */
    int allow_client_shm;  /* --allow-client-shm: Triton's system shared memory extension (clientshm.h) */
    const char *state_path; /* --state: the state file (state.h); NULL: off */
    /* access (see access.h); the strings are not owned */
    const char *auth_token;           /* NULL: none; never logged */
    access_scope auth_scope;
    const char *const *allow_hosts;   /* --allow-host */
    size_t n_allow_hosts;
    const char *const *allow_origins; /* --allow-origin */
    size_t n_allow_origins;
    /* pulling models (pull.h): --pull-allow, --pull-file-root, --pull-max-size; not owned */
    const char *const *pull_allow;
    size_t n_pull_allow;
    const char *pull_file_root; /* NULL: no file URLs */
    int64_t pull_max_size;      /* bytes; 0: PULL_DEFAULT_MAX_SIZE */
    session_config sessions;    /* the context store (session.h): --session-* */
} server_config;

/* Runs until SIGTERM or SIGINT; returns the process exit status. */
int server_run(const server_config *cfg);

#endif
