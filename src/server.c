/*
 * server — daemon set-up and stop; see server.h.
 *
 * Stop order on SIGTERM/SIGINT: stop accepting, mark the API draining
 * (new work gets 503), let the registry stop every worker, give h2o a
 * moment to flush the last responses, then leave the loop. A second signal
 * exits at once; the workers die with us through PR_SET_PDEATHSIG.
 */
#include "server.h"

#include "access.h"
#include "events.h"
#include "api.h"
#include "api_grpc.h"
#include "openapi.h"
#include "clientshm.h"
#include "http.h"
#include "intake.h"
#include "log.h"
#include "model.h"
#include "pull.h"
#include "session.h"
#include "state.h"

#include <h2o.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

static struct {
    uv_loop_t *loop;
    h2o_globalconf_t config;
    h2o_context_t ctx;
    h2o_accept_ctx_t accept_ctx;
    uv_tcp_t listener;
    uv_signal_t sigterm, sigint;
    uv_timer_t poll_timer, flush_timer;
    int stopping;
    int exit_code;
} S;

static void on_accept(uv_stream_t *listener, int status)
{
    if (status < 0)
        return;
    uv_tcp_t *conn = intake_tcp_new(listener->loop);
    if (uv_accept(listener, (uv_stream_t *)conn) < 0) {
        intake_tcp_discard(conn);
        return;
    }
    uv_tcp_nodelay(conn, 1);
    intake_accept(&S.accept_ctx, conn); /* lingering close, the request-body budget: see intake.h */
}

static void on_flushed(uv_timer_t *t)
{
    (void)t;
    uv_stop(S.loop);
}

static void on_sessions_restored(const state_session *s, size_t n)
{
    size_t skipped = 0;
    for (size_t i = 0; i < n; i++)
        if (session_restore(s[i].id, strlen(s[i].id), s[i].content_type, s[i].data, s[i].len, s[i].expires_ms) < 0)
            skipped++;
    session_restore_done(); /* from now on the store's own changes are the newer ones */
    if (skipped)
        log_warn("state: %zu restored sessions did not fit the session store and were dropped", skipped);
}

static void on_state_closed(void)
{
    uv_timer_start(&S.flush_timer, on_flushed, 200, 0);
}

static void on_grpc_stopped(void)
{
    session_store_flush(); /* the sessions' last changes go with the rest */
    state_close(on_state_closed); /* the last changes written, the file closed */
}

static void on_pulls_ended(void)
{
    events_shutdown(); /* their streams end, so their connections can close */
    h2o_context_request_shutdown(&S.ctx);
    api_grpc_stop(on_grpc_stopped); /* open streams end once their answers are out */
}

/* A pull cancelled at the signal still removes its files and answers its client before HTTP stops. */
static void on_workers_stopped(void)
{
    log_info("every worker has exited; stopping");
    pull_shutdown(on_pulls_ended);
}

static void on_signal(uv_signal_t *h, int signum)
{
    (void)h;
    if (S.stopping) {
        log_warn("second %s: exiting now", strsignal(signum));
        exit(1);
    }
    S.stopping = 1;
    log_info("%s: stopping", strsignal(signum));
    uv_close((uv_handle_t *)&S.listener, NULL);
    api_grpc_drain(); /* no new gRPC calls; the running ones drain with the HTTP requests */
    uv_timer_stop(&S.poll_timer);
    pull_shutdown(NULL);
    registry_shutdown(on_workers_stopped);
}

static void on_poll(uv_timer_t *t)
{
    (void)t;
    registry_rescan();
}

static int listen_on(const server_config *cfg)
{
    struct sockaddr_storage addr;
    int rc = strchr(cfg->host, ':') ? uv_ip6_addr(cfg->host, cfg->port, (struct sockaddr_in6 *)&addr)
                                    : uv_ip4_addr(cfg->host, cfg->port, (struct sockaddr_in *)&addr);
    if (rc < 0) {
        log_error("invalid --host '%s': %s", cfg->host, uv_strerror(rc));
        return rc;
    }
    uv_tcp_init(S.loop, &S.listener);
    if ((rc = uv_tcp_bind(&S.listener, (struct sockaddr *)&addr, 0)) < 0 ||
        (rc = uv_listen((uv_stream_t *)&S.listener, 1024, on_accept)) < 0) {
        log_error("cannot listen on %s:%d: %s", cfg->host, cfg->port, uv_strerror(rc));
        return rc;
    }
    struct sockaddr_storage bound;
    int len = sizeof bound;
    uv_tcp_getsockname(&S.listener, (struct sockaddr *)&bound, &len);
    int port = bound.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&bound)->sin6_port)
                                           : ntohs(((struct sockaddr_in *)&bound)->sin_port);
    openapi_set_server(cfg->host, port);
    log_info("listening on http://%s%s%s:%d", strchr(cfg->host, ':') ? "[" : "", cfg->host,
             strchr(cfg->host, ':') ? "]" : "", port);
    if (!cfg->auth_token && !access_is_loopback(cfg->host))
        log_warn("%s is not a loopback address and no token is set: anyone who can reach it may load, unload and "
                 "run models; set --auth-token-file or CORRAL_TOKEN",
                 cfg->host);
    return 0;
}

int server_run(const server_config *cfg)
{
    signal(SIGPIPE, SIG_IGN);
    S.loop = uv_default_loop();

    h2o_config_init(&S.config);
    S.config.max_request_entity_size = (size_t)cfg->max_body;
    /* h2o's default of 10 s covers an HTTP/1 request's head and body
     * together, so any upload that takes longer was dropped unanswered. */
    S.config.http1.req_timeout = 60 * 1000;
    /* Large request bodies: h2o would move one past 32 MiB into a mapped
     * temporary file under /tmp (on disk here), and every buffer it grows,
     * like every frame and result buffer of ours, would be fresh memory from
     * mmap whose pages fault in one by one. Instead they come from the heap,
     * which keeps freed memory for the next large tensor. */
    h2o_socket_buffer_mmap_settings.threshold = SIZE_MAX;
    mallopt(M_MMAP_THRESHOLD, 512 << 20);
    mallopt(M_TRIM_THRESHOLD, 512 << 20);
    h2o_hostconf_t *host = h2o_config_register_host(&S.config, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *path = h2o_config_register_path(host, "/", 0);
    h2o_handler_t *handler = h2o_create_handler(path, sizeof *handler);
    handler->on_req = api_handle;
    http_install_error_filter(path, (size_t)cfg->max_body);
    http_install_error_filter(&host->fallback_path, (size_t)cfg->max_body);
    if (intake_init(S.loop, &S.config, (size_t)cfg->max_body, (size_t)cfg->max_inflight_body) < 0)
        return 1;
    h2o_context_init(&S.ctx, S.loop, &S.config);
    S.accept_ctx.ctx = &S.ctx;
    S.accept_ctx.hosts = S.config.hosts;
    access_init(&(access_config){.token = cfg->auth_token,
                                 .scope = cfg->auth_scope,
                                 .bind_host = cfg->host,
                                 .allow_hosts = cfg->allow_hosts,
                                 .n_allow_hosts = cfg->n_allow_hosts,
                                 .allow_origins = cfg->allow_origins,
                                 .n_allow_origins = cfg->n_allow_origins});

    clientshm_init(cfg->allow_client_shm);
    if (cfg->allow_client_shm)
        log_warn("--allow-client-shm: clients may have the daemon map any POSIX shared-memory object it can open "
                 "(docs/security.md)");
    registry_config rc = {.models_dir = cfg->models_dir,
                          .external_dir = cfg->external_dir,
                          .samples_dir = cfg->samples_dir,
                          .python_sdk_dir = cfg->python_sdk_dir,
                          .stop_grace_ms = cfg->stop_grace_ms,
                          .drain_timeout_ms = cfg->drain_timeout_ms,
                          .memory_budget = cfg->memory_budget,
                          .pull_on_load = cfg->pull_on_load};
    pull_init(S.loop,
              &(pull_policy){.allow = cfg->pull_allow,
                             .n_allow = cfg->n_pull_allow,
                             .file_root = cfg->pull_file_root,
                             .max_size = cfg->pull_max_size},
              cfg->models_dir, cfg->external_dir);
    if (registry_init(S.loop, &rc) < 0)
        return 1;
    if (listen_on(cfg) < 0 ||
        (cfg->grpc_port >= 0 && api_grpc_start(S.loop, cfg->host, cfg->grpc_port, (size_t)cfg->max_body,
                                               (size_t)cfg->max_inflight_body) < 0)) {
        registry_shutdown(NULL);
        return 1;
    }
    session_store_init(S.loop, &cfg->sessions);
    if (cfg->state_path) {
        session_store_durable();
        state_restore_sessions(&(state_session_limits){.memory = cfg->sessions.memory,
                                                       .max_size = cfg->sessions.max_size,
                                                       .cost = session_cost},
                               on_sessions_restored);
    }
    state_start(S.loop, cfg->state_path, registry_restore); /* read and restored in the background */
    uv_signal_init(S.loop, &S.sigterm);
    uv_signal_start(&S.sigterm, on_signal, SIGTERM);
    uv_signal_init(S.loop, &S.sigint);
    uv_signal_start(&S.sigint, on_signal, SIGINT);
    uv_timer_init(S.loop, &S.flush_timer);
    uv_timer_init(S.loop, &S.poll_timer);
    if (cfg->poll_s > 0) {
        uint64_t ms = (uint64_t)(cfg->poll_s * 1000);
        uv_timer_start(&S.poll_timer, on_poll, ms, ms);
    }
    uv_run(S.loop, UV_RUN_DEFAULT);
    clientshm_unregister(NULL, 0); /* the registry's mappings; a request still holding one keeps it */
    log_info("stopped");
    return S.exit_code;
}
