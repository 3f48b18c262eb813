/*
 * access — who may talk to the daemon: the bearer token, and the guards
 * against web pages (a foreign Origin, a DNS-rebound Host, the body types a
 * page may send without asking: form encodings and text/plain).
 *
 * Contract:
 * - access_init is called once, on the loop thread, before the first
 *   request; it copies cfg but not the strings it points to, which must
 *   live as long as the daemon (they are argv and main's allocations).
 * - access_check is called at the top of api_handle with the request's
 *   percent-decoded path segments. It knows nothing of models or routes
 *   beyond those segments: it calls down (h2o, http.c), never up.
 * - The token is never logged, and never part of an answer.
 * - The access_* helpers below access_check are pure (no state, no I/O
 *   except access_read_token_file) so the unit tests can call them.
 */
#ifndef CORRAL_ACCESS_H
#define CORRAL_ACCESS_H

#include <h2o.h>
#include <stddef.h>

/* What the token guards: every endpoint but /v2/health/..., or only the management ones. */
typedef enum access_scope { ACCESS_SCOPE_ALL, ACCESS_SCOPE_MANAGEMENT } access_scope;

typedef struct access_config {
    const char *token;                /* NULL: no token; not owned */
    access_scope scope;
    const char *bind_host;            /* the --host address the daemon listens on; not owned */
    const char *const *allow_hosts;   /* --allow-host names ("*": no Host check); not owned */
    size_t n_allow_hosts;
    const char *const *allow_origins; /* --allow-origin origins; not owned */
    size_t n_allow_origins;
} access_config;

void access_init(const access_config *cfg);

/*
 * Checks req against the policy: 0 when it may go on to routing, or -1
 * after answering it (403 Host or Origin, 401 token, 415 content type).
 * seg[0..n) are the path's segments ("v2", "models", NAME, "infer").
 */
int access_check(h2o_req_t *req, const h2o_iovec_t *seg, int n);

/*
 * The same policy for a gRPC call (api_grpc.c): auth is its
 * "authorization" metadata (auth_len bytes, NULL when absent); health
 * calls never need the token, management calls need it under either
 * scope, the others under --auth all. Returns NULL when the call may go
 * on, else the message of its UNAUTHENTICATED status.
 */
const char *access_rpc_denied(const char *auth, size_t auth_len, int health, int management);

/* ---- pure helpers ---- */

/*
 * Whether a equals b, in time that depends on neither's content nor on
 * where they differ, nor on b's length given a's: both are hashed (SHA-256)
 * and the digests compared with CRYPTO_memcmp.
 */
int access_token_equal(const char *a, size_t alen, const char *b, size_t blen);

/*
 * A token from text: surrounding whitespace stripped. *out is malloc'ed.
 * Returns 0, -ENODATA when nothing is left, -EINVAL when it holds a control
 * character (it could not travel in a header).
 */
int access_token_clean(const char *text, size_t len, char **out);

/*
 * The token in path's first line (see access_token_clean). Returns 0, or a
 * negative errno with a message naming the file and the reason in err.
 */
int access_read_token_file(const char *path, char **out, char *err, size_t errlen);

/*
 * Whether a Host value (port, if any, ignored) names this daemon under cfg:
 * localhost and *.localhost, 127.0.0.0/8, [::1], cfg->bind_host, any IP
 * literal when bound to a wildcard address, or an --allow-host name.
 */
int access_host_allowed(const access_config *cfg, const char *host, size_t len);

/* Whether addr (an IP literal, as --host takes it) is a loopback address. */
int access_is_loopback(const char *addr);

/* Whether the path seg[0..n) needs the token under scope (health and the dashboard's files never do). */
int access_path_needs_token(access_scope scope, const h2o_iovec_t *seg, int n);

/* The request body types a browser may send cross-site without a preflight. */
typedef enum access_body_kind {
    ACCESS_BODY_OTHER, /* none, application/json, application/octet-stream, ... */
    ACCESS_BODY_FORM,  /* application/x-www-form-urlencoded, multipart/form-data */
    ACCESS_BODY_TEXT,  /* text/plain */
} access_body_kind;

/*
 * Classifies a Content-Type value by its media type: case-insensitive,
 * parameters (";charset=...") and surrounding whitespace ignored. The
 * media type's extent in ct is stored in *type, *type_len when not NULL.
 */
access_body_kind access_body_kind_of(const char *ct, size_t len, const char **type, size_t *type_len);

#endif
