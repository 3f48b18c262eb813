/*
 * access — the bearer token and the guards against web pages; see access.h
 * and docs/security.md.
 *
 * Every request but /v2/health/... passes four checks, in this order, and
 * the first that fails answers it:
 *   1. Host (403): it must name this daemon, or a page on a DNS-rebound
 *      name would be same-origin with us as far as its browser knows.
 *   2. Origin (403): a browser names the page that sent the request; only
 *      our own origin and --allow-origin ones are served. Browsers send it
 *      on every cross-origin POST, so it stops cross-site form posts and
 *      fetches whatever their body.
 *   3. Token (401): Authorization: Bearer, where the policy asks for it.
 *   4. Content-Type (415): JSON endpoints refuse the three types a page may
 *      send without a CORS preflight, should a browser omit the Origin.
 * Health stays open to all four: probes and load balancers call it with
 * hosts and no headers of their choosing, and it tells nothing. The
 * dashboard's files (GET / and /dashboard/...) pass checks 1 and 2 but
 * need no token: they are the same static files for every daemon of a
 * version, and the page asks for the token before it shows anything.
 */
#include "access.h"

#include "dashboard.h"
#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* The longest token accepted: far less than h2o's limit on a request's headers. */
#define TOKEN_MAX 4096

static access_config policy;

void access_init(const access_config *cfg)
{
    policy = *cfg;
}

/* ---- pure helpers ---- */

static int seg_is(const h2o_iovec_t *seg, int n, int i, const char *lit)
{
    return n > i && h2o_memis(seg[i].base, seg[i].len, lit, strlen(lit));
}

static int is_health(const h2o_iovec_t *seg, int n)
{
    return seg_is(seg, n, 0, "v2") && seg_is(seg, n, 1, "health");
}

/* /v1/models/{name}/generate: the body is the model's, in any type it takes. */
static int is_generate(const h2o_iovec_t *seg, int n)
{
    return n == 4 && seg_is(seg, n, 0, "v1") && seg_is(seg, n, 1, "models") && seg_is(seg, n, 3, "generate");
}

/* /v1/sessions[/{id}]: application data, any content type. */
static int is_sessions(const h2o_iovec_t *seg, int n)
{
    return n >= 2 && n <= 3 && seg_is(seg, n, 0, "v1") && seg_is(seg, n, 1, "sessions");
}

int access_path_needs_token(access_scope scope, const h2o_iovec_t *seg, int n)
{
    if (is_health(seg, n))
        return 0;
    /* The dashboard's files hold no data (every figure on the page comes
     * from the API, with the token), and the page must load to ask for it. */
    if (dashboard_is_route(seg, n))
        return 0;
    if (scope == ACCESS_SCOPE_ALL)
        return 1;
    /* Management: the repository verbs, and all of /v1 but generate (its
     * model views carry pids and absolute paths; endpoints added to /v1
     * later are guarded unless opened here). */
    if (seg_is(seg, n, 0, "v2")) /* the repository verbs, the log level (Triton's logging), client shared memory,
                                  * and a model's config: it shows the manifest's parameters, which may hold
                                  * credentials */
        return seg_is(seg, n, 1, "repository") || seg_is(seg, n, 1, "logging") ||
               seg_is(seg, n, 1, "systemsharedmemory") ||
               (seg_is(seg, n, 1, "models") && n >= 4 && seg_is(seg, n, n - 1, "config"));
    if (seg_is(seg, n, 0, "v1")) /* the context store is data, as inference is */
        return !is_generate(seg, n) && !is_sessions(seg, n);
    return 0;
}

int access_token_equal(const char *a, size_t alen, const char *b, size_t blen)
{
    unsigned char da[SHA256_DIGEST_LENGTH], db[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)(a ? a : ""), alen, da);
    SHA256((const unsigned char *)(b ? b : ""), blen, db);
    return CRYPTO_memcmp(da, db, sizeof da) == 0;
}

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

int access_token_clean(const char *text, size_t len, char **out)
{
    *out = NULL;
    while (len && is_space(*text)) {
        text++;
        len--;
    }
    while (len && is_space(text[len - 1]))
        len--;
    if (!len)
        return -ENODATA;
    if (len > TOKEN_MAX)
        return -E2BIG;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)text[i] < 0x20 || text[i] == 0x7f)
            return -EINVAL;
    *out = h2o_strdup(NULL, text, len).base;
    return 0;
}

int access_read_token_file(const char *path, char **out, char *err, size_t errlen)
{
    *out = NULL;
    FILE *f = fopen(path, "r");
    if (!f) {
        int e = errno;
        snprintf(err, errlen, "cannot open '%s': %s", path, strerror(e));
        return -e;
    }
    char *line = NULL;
    size_t cap = 0;
    errno = 0;
    ssize_t n = getline(&line, &cap, f);
    int e = n < 0 && ferror(f) ? (errno ? errno : EIO) : 0;
    fclose(f);
    int rc;
    if (e) {
        snprintf(err, errlen, "cannot read '%s': %s", path, strerror(e));
        rc = -e;
    } else if ((rc = access_token_clean(line ? line : "", n > 0 ? (size_t)n : 0, out)) == -ENODATA) {
        snprintf(err, errlen, "'%s' is empty: its first line must hold the token", path);
    } else if (rc == -E2BIG) {
        snprintf(err, errlen, "the token in '%s' is longer than %d bytes", path, TOKEN_MAX);
    } else if (rc == -EINVAL) {
        snprintf(err, errlen, "the first line of '%s' holds a control character: a token must be printable", path);
    }
    free(line);
    return rc;
}

/*
 * The host part of a Host value: an IPv6 literal's brackets removed
 * (*bracketed set), a port (":digits") and a name's one trailing dot cut.
 * Returns -1 when the value is malformed or the host empty.
 */
static int host_part(const char *s, size_t len, const char **host, size_t *host_len, int *bracketed)
{
    const char *end = s + len, *rest;
    *bracketed = 0;
    if (len && s[0] == '[') {
        const char *close = memchr(s, ']', len);
        if (!close)
            return -1;
        *host = s + 1;
        *host_len = (size_t)(close - s - 1);
        rest = close + 1;
        *bracketed = 1;
    } else {
        const char *colon = memchr(s, ':', len);
        *host = s;
        *host_len = colon ? (size_t)(colon - s) : len;
        rest = colon ? colon : end;
    }
    if (rest < end) {
        if (*rest != ':')
            return -1;
        for (const char *p = rest + 1; p < end; p++)
            if (*p < '0' || *p > '9')
                return -1;
    }
    if (!*bracketed && *host_len && (*host)[*host_len - 1] == '.')
        (*host_len)--;
    return *host_len ? 0 : -1;
}

typedef struct ip_addr {
    int family; /* AF_INET or AF_INET6 */
    unsigned char bytes[16];
} ip_addr;

/* Parses an IP literal of the given family (no brackets); -1 if it is not one. */
static int parse_ip(const char *s, size_t len, int family, ip_addr *out)
{
    char buf[INET6_ADDRSTRLEN + 1];
    if (len >= sizeof buf)
        return -1;
    memcpy(buf, s, len);
    buf[len] = 0;
    memset(out, 0, sizeof *out);
    out->family = family;
    return inet_pton(family, buf, out->bytes) == 1 ? 0 : -1;
}

/* --host's form: an IPv6 literal has a colon and no brackets. */
static int parse_bind(const char *addr, ip_addr *out)
{
    return parse_ip(addr, strlen(addr), strchr(addr, ':') ? AF_INET6 : AF_INET, out);
}

static int ip_is_loopback(const ip_addr *a)
{
    static const unsigned char v6_loopback[16] = {[15] = 1};
    static const unsigned char v4_mapped[12] = {[10] = 0xff, [11] = 0xff};
    if (a->family == AF_INET)
        return a->bytes[0] == 127;
    return memcmp(a->bytes, v6_loopback, 16) == 0 || (memcmp(a->bytes, v4_mapped, 12) == 0 && a->bytes[12] == 127);
}

static int ip_is_wildcard(const ip_addr *a)
{
    static const unsigned char zero[16];
    return memcmp(a->bytes, zero, a->family == AF_INET ? 4 : 16) == 0;
}

int access_is_loopback(const char *addr)
{
    ip_addr a;
    return parse_bind(addr, &a) == 0 && ip_is_loopback(&a);
}

static int name_is(const char *s, size_t len, const char *lit)
{
    size_t n = strlen(lit);
    return len == n && strncasecmp(s, lit, n) == 0;
}

int access_host_allowed(const access_config *cfg, const char *value, size_t len)
{
    for (size_t i = 0; i < cfg->n_allow_hosts; i++)
        if (strcmp(cfg->allow_hosts[i], "*") == 0)
            return 1;
    const char *host;
    size_t host_len;
    int bracketed;
    if (host_part(value, len, &host, &host_len, &bracketed) < 0)
        return 0;
    ip_addr addr;
    if (parse_ip(host, host_len, bracketed ? AF_INET6 : AF_INET, &addr) == 0) {
        ip_addr bound;
        if (ip_is_loopback(&addr))
            return 1;
        if (cfg->bind_host && parse_bind(cfg->bind_host, &bound) == 0 &&
            (ip_is_wildcard(&bound) || (bound.family == addr.family && memcmp(bound.bytes, addr.bytes, 16) == 0)))
            return 1;
    } else if (bracketed) {
        return 0;
    } else if (name_is(host, host_len, "localhost") ||
               (host_len > 10 && strncasecmp(host + host_len - 10, ".localhost", 10) == 0)) {
        /* RFC 6761: *.localhost is loopback and no one can register it, so it cannot be rebound. */
        return 1;
    }
    for (size_t i = 0; i < cfg->n_allow_hosts; i++) {
        const char *name = cfg->allow_hosts[i], *want;
        size_t want_len;
        int want_bracketed;
        if (host_part(name, strlen(name), &want, &want_len, &want_bracketed) < 0) {
            want = name; /* an IPv6 literal given without brackets */
            want_len = strlen(name);
        }
        if (want_len == host_len && strncasecmp(want, host, host_len) == 0)
            return 1;
    }
    return 0;
}

access_body_kind access_body_kind_of(const char *ct, size_t len, const char **type, size_t *type_len)
{
    size_t start = 0, end;
    while (start < len && (ct[start] == ' ' || ct[start] == '\t'))
        start++;
    const char *semi = memchr(ct + start, ';', len - start);
    end = semi ? (size_t)(semi - ct) : len;
    while (end > start && (ct[end - 1] == ' ' || ct[end - 1] == '\t'))
        end--;
    if (type) {
        *type = ct + start;
        *type_len = end - start;
    }
    const char *t = ct + start;
    size_t n = end - start;
    if (name_is(t, n, "application/x-www-form-urlencoded") || name_is(t, n, "multipart/form-data"))
        return ACCESS_BODY_FORM;
    if (name_is(t, n, "text/plain"))
        return ACCESS_BODY_TEXT;
    return ACCESS_BODY_OTHER;
}

/* ---- the check ---- */

/* A client's bytes fit to quote in a message: control and non-ASCII bytes as '?', at most 200. */
static const char *shown(char *buf, size_t size, const char *s, size_t len)
{
    size_t max = size - 4, n = len < max ? len : max;
    for (size_t i = 0; i < n; i++)
        buf[i] = (unsigned char)s[i] < 0x20 || (unsigned char)s[i] >= 0x7f ? '?' : s[i];
    strcpy(buf + n, len > max ? "..." : "");
    return buf;
}

static int origin_allowed(const h2o_iovec_t *origin, const h2o_iovec_t *own_host)
{
    if (own_host && origin->len == 7 + own_host->len && strncasecmp(origin->base, "http://", 7) == 0 &&
        strncasecmp(origin->base + 7, own_host->base, own_host->len) == 0)
        return 1;
    for (size_t i = 0; i < policy.n_allow_origins; i++) {
        const char *o = policy.allow_origins[i];
        size_t n = strlen(o);
        while (n && o[n - 1] == '/')
            n--;
        if (n == origin->len && strncasecmp(o, origin->base, n) == 0)
            return 1;
    }
    return 0;
}

/* The token of "Bearer <token>" (scheme in any case); -1 for another scheme. */
static int bearer_token(const h2o_iovec_t *v, const char **token, size_t *len)
{
    if (v->len < 7 || strncasecmp(v->base, "bearer", 6) != 0 || (v->base[6] != ' ' && v->base[6] != '\t'))
        return -1;
    size_t start = 7, end = v->len;
    while (start < end && (v->base[start] == ' ' || v->base[start] == '\t'))
        start++;
    while (end > start && (v->base[end - 1] == ' ' || v->base[end - 1] == '\t'))
        end--;
    *token = v->base + start;
    *len = end - start;
    return 0;
}

const char *access_rpc_denied(const char *auth, size_t auth_len, int health, int management)
{
    if (!policy.token || health || (policy.scope == ACCESS_SCOPE_MANAGEMENT && !management))
        return NULL;
    if (!auth)
        return "this call needs the daemon's token: send the metadata 'authorization: Bearer <token>' (tritonclient: "
               "headers={'authorization': 'Bearer <token>'})";
    h2o_iovec_t v = h2o_iovec_init(auth, auth_len);
    const char *token;
    size_t token_len;
    if (bearer_token(&v, &token, &token_len) < 0)
        return "the authorization metadata must be 'Bearer <token>'";
    if (!access_token_equal(token, token_len, policy.token, strlen(policy.token)))
        return "the token sent is not the daemon's token";
    return NULL;
}

static void unauthorized(h2o_req_t *req, const char *challenge, const char *msg)
{
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_WWW_AUTHENTICATE, NULL, challenge, strlen(challenge));
    http_error(req, 401, 0, "%s", msg);
}

int access_check(h2o_req_t *req, const h2o_iovec_t *seg, int n)
{
    char buf[204]; /* 200 bytes of a client's value and "..." */
    if (is_health(seg, n))
        return 0;

    /* h2o fills in its default host's name when the request has no Host
     * (HTTP/1.0, or HTTP/2 without :authority): the pointer tells. */
    h2o_iovec_t host = req->input.authority;
    int host_missing = req->hostconf && host.base == req->hostconf->authority.hostport.base;
    if (!host_missing && !access_host_allowed(&policy, host.base, host.len)) {
        http_error(req, 403, 0,
                   "host '%s' does not name this daemon (a guard against DNS rebinding): use localhost or an "
                   "address it listens on, or allow the name with --allow-host",
                   shown(buf, sizeof buf, host.base, host.len));
        return -1;
    }

    const h2o_iovec_t *origin = http_header(req, "origin");
    if (origin && h2o_memis(origin->base, origin->len, H2O_STRLIT("null"))) {
        http_error(req, 403, 0, "requests from an opaque origin (Origin: null: a sandboxed frame, a file or a "
                                "redirect) are refused");
        return -1;
    }
    if (origin && !origin_allowed(origin, host_missing ? NULL : &host)) {
        http_error(req, 403, 0, "cross-origin request from '%s' refused: allow that origin with --allow-origin",
                   shown(buf, sizeof buf, origin->base, origin->len));
        return -1;
    }

    if (policy.token && access_path_needs_token(policy.scope, seg, n)) {
        const h2o_iovec_t *auth = http_header(req, "authorization");
        const char *token;
        size_t token_len;
        if (!auth) {
            unauthorized(req, "Bearer",
                         "this endpoint needs the daemon's token: send 'Authorization: Bearer <token>' (the corral "
                         "client sends $CORRAL_TOKEN)");
            return -1;
        }
        if (bearer_token(auth, &token, &token_len) < 0) {
            unauthorized(req, "Bearer", "the Authorization header must be 'Bearer <token>'");
            return -1;
        }
        if (!access_token_equal(token, token_len, policy.token, strlen(policy.token))) {
            unauthorized(req, "Bearer error=\"invalid_token\"", "the token sent is not the daemon's token");
            return -1;
        }
    }

    if (h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET")) ||
        h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD")))
        return 0;
    int free_form = is_generate(seg, n) || is_sessions(seg, n);
    for (ssize_t i = -1; (i = h2o_find_header(&req->headers, H2O_TOKEN_CONTENT_TYPE, i)) >= 0;) {
        const h2o_iovec_t *ct = &req->headers.entries[i].value;
        const char *type;
        size_t type_len;
        access_body_kind kind = access_body_kind_of(ct->base, ct->len, &type, &type_len);
        if (kind == ACCESS_BODY_FORM || (kind == ACCESS_BODY_TEXT && !free_form)) {
            http_error(req, 415, 0,
                       is_sessions(seg, n) ? "content type '%s' is not accepted for a session (a form type, which "
                                             "browsers send cross-site): send application/json or the content's "
                                             "own type"
                       : free_form ? "content type '%s' is not accepted by generate: send application/json or the "
                                     "type the model takes"
                                   : "content type '%s' is not accepted here: send application/json",
                       shown(buf, sizeof buf, type, type_len));
            return -1;
        }
    }
    return 0;
}
