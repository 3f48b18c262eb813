/*
 * pull — fetch, verify, unpack and install a model; see pull.h and
 * docs/repository.md.
 *
 * One pull, start to end:
 *   loop:   pull_start checks the request (URL policy, digest, name, no
 *           model or entry of that name, not already being pulled) and
 *           queues the work;
 *   thread: mkdtemp external_models/.pull-NAME-XXXXXX; download to
 *           "download" (sha256 and the size cap as bytes arrive; every
 *           address curl connects to, and every redirect, checked against
 *           the policy); compare the digest; unpack into "tree" (each entry
 *           checked before libarchive writes it, libarchive's secure flags
 *           on); find model.yaml and validate it; check every symbolic link
 *           in the tree; renameat2(RENAME_NOREPLACE) into external_models/NAME;
 *           remove the temporary directory, whatever happened;
 *   loop:   rescan (which links the new entry into models/), events, on_done.
 *
 * What must stay true: nothing but the final rename ever creates
 * external_models/NAME, and every failure removes the temporary directory,
 * so a failed pull leaves nothing behind (a daemon killed mid-pull leaves
 * its .pull-* directory, which the next start removes). Temporary names
 * begin with a dot, which repo_link_external never links.
 */
#include "pull.h"
#include "state.h"

#include "api.h"
#include "events.h"
#include "log.h"
#include "manifest.h"
#include "model.h"
#include "xmalloc.h"

#include <archive.h>
#include <archive_entry.h>
#include <arpa/inet.h>
#include <assert.h>
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/* The most of a redirect's or an error's body read (and dropped) before the transfer is cut. */
#define PULL_MAX_DISCARDED (1 << 20)
/* How often progress is looked at, and the least time between two progress events of one pull. */
#define PROGRESS_TICK_MS 250
#define PROGRESS_EVENT_MS 1000

enum phase { PHASE_STARTED, PHASE_VERIFIED, PHASE_UNPACKED };
static const char *const phase_names[] = {"started", "verified", "unpacked"};

struct pull {
    /* set on the loop before the work is queued, read-only afterwards */
    char *url;
    char *name;
    unsigned char want[32];
    int declared; /* the files of a model declared with source: no model.yaml needed (docs/repository.md) */
    uv_work_t work;
    /* the thread's; read on the loop only after the work is done */
    int status; /* 0 or an HTTP status */
    char err[1024];
    /* written by the thread, read by the loop's progress tick */
    _Atomic int64_t bytes;
    _Atomic int64_t total; /* -1: unknown */
    _Atomic int phase;
    /* written by the loop, read by the thread */
    _Atomic int cancel;
    /* the loop's */
    pull_done_cb on_done; /* NULL once detached */
    void *data;
    int phase_told;       /* the phases already emitted, as a count */
    int64_t bytes_told;
    uint64_t told_ms;
    struct pull *next;
};

static struct {
    uv_loop_t *loop;
    pull_policy policy;
    char *models_dir;
    char *external_real; /* realpath of --external-models; NULL: pulls refused */
    char *file_root_real;
    pull *active;
    int nactive;
    uv_timer_t tick;
    void (*on_idle)(void); /* pull_shutdown's: called once no pull is left */
} P;

/* ---- pure: digest, URL, host and address policy ---- */

/* A digest's 32 bytes as the 64 lowercase hex digits people write, NUL-terminated. */
static void sha256_hex(const unsigned char d[32], char out[65])
{
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        out[2 * i] = digits[d[i] >> 4];
        out[2 * i + 1] = digits[d[i] & 15];
    }
    out[64] = 0;
}

int pull_parse_sha256(const char *hex, unsigned char out[32])
{
    if (!hex || strlen(hex) != 64)
        return -EINVAL;
    for (int i = 0; i < 32; i++) {
        int v = 0;
        for (int k = 0; k < 2; k++) {
            char c = hex[2 * i + k];
            int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
            if (d < 0)
                return -EINVAL;
            v = v * 16 + d;
        }
        out[i] = (unsigned char)v;
    }
    return 0;
}

/* host without the brackets of an IPv6 literal, into buf. */
static const char *unbracket(const char *host, char *buf, size_t len)
{
    size_t n = strlen(host);
    if (n >= 2 && host[0] == '[' && host[n - 1] == ']') {
        snprintf(buf, len, "%.*s", (int)(n - 2), host + 1);
        return buf;
    }
    return host;
}

int pull_host_allowed(const pull_policy *policy, const char *host)
{
    char a[256], b[256];
    const char *h = unbracket(host, a, sizeof a);
    if (!*h)
        return 0;
    for (size_t i = 0; i < policy->n_allow; i++)
        if (strcasecmp(unbracket(policy->allow[i], b, sizeof b), h) == 0)
            return 1;
    return 0;
}

int pull_check_url(const pull_policy *policy, const char *url, int *is_file, char *path, size_t pathlen, char *err,
                   size_t errlen)
{
    int rc = -EINVAL;
    char *scheme = NULL, *host = NULL, *user = NULL, *password = NULL, *upath = NULL;
    CURLU *u = curl_url();
    if (!u)
        abort();
    if (!url || !*url || strlen(url) > 8192) {
        snprintf(err, errlen, "url must be a URL of at most 8192 bytes");
        goto done;
    }
    for (const char *c = url; *c; c++)
        if ((unsigned char)*c <= ' ' || *c == 0x7f) {
            snprintf(err, errlen, "url holds a space or a control character");
            goto done;
        }
    if (curl_url_set(u, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK) {
        snprintf(err, errlen, "url '%s' is not a URL", url);
        goto done;
    }
    rc = -EPERM;
    if (curl_url_get(u, CURLUPART_USER, &user, 0) == CURLUE_OK ||
        curl_url_get(u, CURLUPART_PASSWORD, &password, 0) == CURLUE_OK) {
        snprintf(err, errlen, "url must not carry a user name or password");
        goto done;
    }
    curl_url_get(u, CURLUPART_HOST, &host, 0);
    if (strcmp(scheme, "file") == 0) {
        if (!policy->file_root) {
            snprintf(err, errlen, "file URLs are refused: the daemon was started without --pull-file-root");
            goto done;
        }
        if (host && *host && strcasecmp(host, "localhost") != 0) {
            snprintf(err, errlen, "file URL names host '%s': only local files may be pulled", host);
            goto done;
        }
        if (curl_url_get(u, CURLUPART_PATH, &upath, CURLU_URLDECODE) != CURLUE_OK || upath[0] != '/' ||
            strlen(upath) >= pathlen) {
            snprintf(err, errlen, "file URL has no usable path");
            rc = -EINVAL;
            goto done;
        }
        snprintf(path, pathlen, "%s", upath);
        *is_file = 1;
        rc = 0;
        goto done;
    }
    if (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0) {
        snprintf(err, errlen, "scheme '%s' is refused: only http, https and file", scheme);
        goto done;
    }
    if (!host || !*host) {
        snprintf(err, errlen, "url '%s' has no host", url);
        rc = -EINVAL;
        goto done;
    }
    if (!pull_host_allowed(policy, host)) {
        snprintf(err, errlen, "host '%s' is not allowed (start the daemon with --pull-allow %s)", host, host);
        goto done;
    }
    *is_file = 0;
    rc = 0;
done:
    curl_free(scheme);
    curl_free(host);
    curl_free(user);
    curl_free(password);
    curl_free(upath);
    curl_url_cleanup(u);
    return rc;
}

static int v4_public(uint32_t a)
{
    static const struct {
        uint32_t net, mask;
    } refused[] = {
        {0x00000000, 0xff000000}, /* 0.0.0.0/8 "this network" */
        {0x0a000000, 0xff000000}, /* 10/8 */
        {0x64400000, 0xffc00000}, /* 100.64/10 shared (CGNAT) */
        {0x7f000000, 0xff000000}, /* 127/8 loopback */
        {0xa9fe0000, 0xffff0000}, /* 169.254/16 link-local (cloud metadata) */
        {0xac100000, 0xfff00000}, /* 172.16/12 */
        {0xc0000000, 0xffffff00}, /* 192.0.0/24 protocol assignments */
        {0xc0000200, 0xffffff00}, /* 192.0.2/24 documentation */
        {0xc0a80000, 0xffff0000}, /* 192.168/16 */
        {0xc6120000, 0xfffe0000}, /* 198.18/15 benchmarking */
        {0xc6336400, 0xffffff00}, /* 198.51.100/24 documentation */
        {0xcb007100, 0xffffff00}, /* 203.0.113/24 documentation */
        {0xe0000000, 0xe0000000}, /* 224/3: multicast, reserved, broadcast */
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++)
        if ((a & refused[i].mask) == refused[i].net)
            return 0;
    return 1;
}

int pull_addr_public(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return v4_public(ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr));
    if (sa->sa_family != AF_INET6)
        return 0;
    const uint8_t *b = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
    static const uint8_t zero[12];
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    static const uint8_t nat64[12] = {0x00, 0x64, 0xff, 0x9b};
    uint32_t tail = (uint32_t)b[12] << 24 | (uint32_t)b[13] << 16 | (uint32_t)b[14] << 8 | b[15];
    if (memcmp(b, zero, 12) == 0)
        return 0; /* ::, ::1 and the deprecated IPv4-compatible ::a.b.c.d */
    if (memcmp(b, mapped, 12) == 0 || memcmp(b, nat64, 12) == 0)
        return v4_public(tail);
    if ((b[0] & 0xfe) == 0xfc)
        return 0; /* fc00::/7 unique local */
    if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80)
        return 0; /* fe80::/10 link-local */
    if (b[0] == 0xfe && (b[1] & 0xc0) == 0xc0)
        return 0; /* fec0::/10 site-local */
    if (b[0] == 0xff)
        return 0; /* multicast */
    if (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x0d && b[3] == 0xb8)
        return 0; /* 2001:db8::/32 documentation */
    if (b[0] == 0x20 && b[1] == 0x02)
        return v4_public((uint32_t)b[2] << 24 | (uint32_t)b[3] << 16 | (uint32_t)b[4] << 8 | b[5]); /* 6to4 */
    return 1;
}

static void addr_text(const struct sockaddr *sa, char *buf, size_t len)
{
    const void *a = sa->sa_family == AF_INET ? (const void *)&((const struct sockaddr_in *)sa)->sin_addr
                                             : (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr;
    if (!inet_ntop(sa->sa_family, a, buf, (socklen_t)len))
        snprintf(buf, len, "(unprintable address)");
}

int pull_check_addr(const pull_policy *policy, const struct sockaddr *sa, char *err, size_t errlen)
{
    if (sa->sa_family != AF_INET && sa->sa_family != AF_INET6) {
        snprintf(err, errlen, "address family %d is refused", sa->sa_family);
        return -EPERM;
    }
    if (pull_addr_public(sa))
        return 0;
    char text[INET6_ADDRSTRLEN];
    addr_text(sa, text, sizeof text);
    if (pull_host_allowed(policy, text))
        return 0;
    snprintf(err, errlen,
             "address %s is loopback, private or reserved, and is refused unless listed itself (--pull-allow %s)",
             text, text);
    return -EPERM;
}

/* ---- pure: archive entries ---- */

/*
 * Walks the components of a relative path: the depth it reaches (each
 * name +1, ".." -1, "." and empty 0) from start, -1 when it goes above
 * the root at any point. *dotdot tells whether any ".." was met.
 */
static int path_depth(const char *path, int start, int *dotdot, int *long_component)
{
    int depth = start;
    *dotdot = *long_component = 0;
    for (const char *s = path; *s;) {
        const char *e = strchr(s, '/');
        size_t n = e ? (size_t)(e - s) : strlen(s);
        if (n > 255)
            *long_component = 1;
        if (n == 2 && s[0] == '.' && s[1] == '.') {
            *dotdot = 1;
            if (--depth < 0)
                return -1;
        } else if (n && !(n == 1 && s[0] == '.')) {
            depth++;
        }
        s += n;
        if (*s == '/')
            s++;
    }
    return depth;
}

/* Checks a path an archive names (an entry, or a hard link's target). */
static int check_path(const char *what, const char *path, char *err, size_t errlen)
{
    int dotdot, longc;
    if (!path || !*path) {
        snprintf(err, errlen, "%s has no name", what);
        return -EPERM;
    }
    if (strlen(path) >= PATH_MAX / 2) {
        snprintf(err, errlen, "%s '%.100s...' has a path longer than %d bytes", what, path, PATH_MAX / 2);
        return -EPERM;
    }
    if (path[0] == '/') {
        snprintf(err, errlen, "%s '%s' has an absolute path", what, path);
        return -EPERM;
    }
    path_depth(path, 0, &dotdot, &longc);
    if (dotdot) {
        snprintf(err, errlen, "%s '%s' has a '..' component", what, path);
        return -EPERM;
    }
    if (longc) {
        snprintf(err, errlen, "%s '%.100s...' has a component longer than 255 bytes", what, path);
        return -EPERM;
    }
    return 0;
}

int pull_check_entry(const char *path, enum pull_entry_type type, const char *link, char *err, size_t errlen)
{
    if (check_path("entry", path, err, errlen) < 0)
        return -EPERM;
    int dotdot, longc;
    int depth = path_depth(path, 0, &dotdot, &longc);
    switch (type) {
    case PULL_ENTRY_FILE:
    case PULL_ENTRY_DIR:
        if (depth == 0 && type == PULL_ENTRY_FILE) {
            snprintf(err, errlen, "entry '%s' names the archive's root as a file", path);
            return -EPERM;
        }
        return 0;
    case PULL_ENTRY_HARDLINK: {
        char what[64 + PATH_MAX / 2];
        snprintf(what, sizeof what, "hard link '%s' -> target", path);
        if (check_path(what, link, err, errlen) < 0)
            return -EPERM;
        return 0;
    }
    case PULL_ENTRY_SYMLINK:
        if (!link || !*link) {
            snprintf(err, errlen, "symbolic link '%s' has no target", path);
            return -EPERM;
        }
        if (link[0] == '/') {
            snprintf(err, errlen, "symbolic link '%s' -> '%s' points to an absolute path", path, link);
            return -EPERM;
        }
        if (depth < 1 || path_depth(link, depth - 1, &dotdot, &longc) < 0) {
            snprintf(err, errlen, "symbolic link '%s' -> '%s' points outside the model directory", path, link);
            return -EPERM;
        }
        return 0;
    case PULL_ENTRY_OTHER:
        break;
    }
    snprintf(err, errlen, "entry '%s' is a device, fifo or socket: only files, directories and links are allowed",
             path);
    return -EPERM;
}

/* The model name a URL suggests: its last path segment less .tar.gz, .tgz, .tar, .zip, .yaml. */
int pull_default_name(const char *url, char *out, size_t len)
{
    CURLU *u = curl_url();
    char *path = NULL;
    int rc = -EINVAL;
    if (!u)
        abort();
    if (curl_url_set(u, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_PATH, &path, CURLU_URLDECODE) == CURLUE_OK) {
        const char *slash = strrchr(path, '/');
        const char *base = slash ? slash + 1 : path;
        size_t n = strlen(base);
        static const char *const ext[] = {".tar.gz", ".tgz", ".tar", ".zip", ".yaml", NULL};
        for (const char *const *e = ext; *e; e++) {
            size_t k = strlen(*e);
            if (n > k && strcasecmp(base + n - k, *e) == 0) {
                n -= k;
                break;
            }
        }
        if (n && n < len && model_name_valid(base, n) && !(n == 5 && strncmp(base, "model", 5) == 0)) {
            snprintf(out, len, "%.*s", (int)n, base);
            rc = 0;
        }
    }
    curl_free(path);
    curl_url_cleanup(u);
    return rc;
}

/* ---- the thread's work ---- */

#define FAIL(p, st, ...)                                                                                              \
    do {                                                                                                              \
        (p)->status = (st);                                                                                           \
        snprintf((p)->err, sizeof (p)->err, __VA_ARGS__);                                                             \
    } while (0)

typedef struct fetch {
    pull *p;
    int fd;
    EVP_MD_CTX *md;
    int64_t bytes;
    int64_t discarded; /* bytes of this hop's redirect or error body, dropped */
    long http_status;
    int refused;       /* the policy refused an address; p->err says why */
    int too_large;
    int write_failed;  /* errno */
} fetch;

static int sink(fetch *f, const void *data, size_t n)
{
    if (f->bytes + (int64_t)n > P.policy.max_size) {
        f->too_large = 1;
        return -1;
    }
    const char *c = data;
    for (size_t done = 0; done < n;) {
        ssize_t w = write(f->fd, c + done, n - done);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            f->write_failed = errno;
            return -1;
        }
        done += (size_t)w;
    }
    EVP_DigestUpdate(f->md, data, n);
    f->bytes += (int64_t)n;
    atomic_store(&f->p->bytes, f->bytes);
    return 0;
}

static size_t on_curl_body(char *data, size_t size, size_t n, void *ud)
{
    fetch *f = ud;
    /* a redirect's and an error's bodies are not kept, and not read past 1 MiB: an endless one would never end */
    if (f->http_status < 200 || f->http_status > 299) {
        f->discarded += (int64_t)(size * n);
        return f->discarded > PULL_MAX_DISCARDED ? 0 : size * n;
    }
    return sink(f, data, size * n) < 0 ? 0 : size * n;
}

static size_t on_curl_header(char *data, size_t size, size_t n, void *ud)
{
    fetch *f = ud;
    size_t len = size * n;
    /* "HTTP/1.1 200 OK": each response (a redirect's, then the next) starts with its status line */
    if (len > 9 && strncmp(data, "HTTP/", 5) == 0) {
        const char *sp = memchr(data, ' ', len);
        f->http_status = sp ? strtol(sp + 1, NULL, 10) : 0;
    }
    return len;
}

static int on_curl_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
    (void)dlnow, (void)ultotal, (void)ulnow;
    fetch *f = ud;
    if (dltotal > 0 && f->http_status >= 200 && f->http_status <= 299)
        atomic_store(&f->p->total, (int64_t)dltotal);
    return atomic_load(&f->p->cancel) ? 1 : 0;
}

/* Every address curl is about to connect to, checked here, after its own resolving: no DNS rebinding past it. */
static curl_socket_t on_curl_open_socket(void *ud, curlsocktype purpose, struct curl_sockaddr *addr)
{
    fetch *f = ud;
    (void)purpose;
    if (pull_check_addr(&P.policy, &addr->addr, f->p->err, sizeof f->p->err) < 0) {
        f->refused = 1;
        return CURL_SOCKET_BAD;
    }
    return socket(addr->family, addr->socktype, addr->protocol);
}

static int fetch_http(pull *p, fetch *f)
{
    CURL *c = curl_easy_init();
    if (!c)
        abort();
    char url[8193];
    snprintf(url, sizeof url, "%s", p->url);
    int rc = -1;
    for (int hop = 0;; hop++) {
        f->http_status = 0;
        f->discarded = 0;
        f->refused = 0;
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L); /* followed here, each hop checked */
        curl_easy_setopt(c, CURLOPT_PROXY, "");          /* no proxy from the environment: the address checked is the server's */
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 30L);
        curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L); /* a transfer stalled for a minute fails */
        curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 60L);
        curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)P.policy.max_size);
        curl_easy_setopt(c, CURLOPT_USERAGENT, "corral/" CORRAL_VERSION);
        curl_easy_setopt(c, CURLOPT_OPENSOCKETFUNCTION, on_curl_open_socket);
        curl_easy_setopt(c, CURLOPT_OPENSOCKETDATA, f);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_curl_body);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, f);
        curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_curl_header);
        curl_easy_setopt(c, CURLOPT_HEADERDATA, f);
        curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_curl_progress);
        curl_easy_setopt(c, CURLOPT_XFERINFODATA, f);
        curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
        CURLcode cc = curl_easy_perform(c);
        long status = 0;
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        if (cc == CURLE_COULDNT_CONNECT && f->refused) {
            /* every address was refused (one refused among several that connected is no failure) */
            p->status = 403;
            goto done;
        }
        if (atomic_load(&p->cancel)) {
            FAIL(p, 503, "pull of '%s' cancelled: the daemon is stopping", p->url);
            goto done;
        }
        if (f->too_large || cc == CURLE_FILESIZE_EXCEEDED) {
            FAIL(p, 413, "'%s' is larger than --pull-max-size (%lld bytes)", url, (long long)P.policy.max_size);
            goto done;
        }
        if (f->write_failed) {
            FAIL(p, 507, "cannot write the download: %s", strerror(f->write_failed));
            goto done;
        }
        if (cc == CURLE_WRITE_ERROR && f->discarded > PULL_MAX_DISCARDED) {
            FAIL(p, 502, "'%s' answered HTTP %ld with a body of more than %d bytes", url, status, PULL_MAX_DISCARDED);
            goto done;
        }
        if (cc != CURLE_OK) {
            FAIL(p, 502, "cannot fetch '%s': %s", url, curl_easy_strerror(cc));
            goto done;
        }
        if (status >= 300 && status <= 399 && status != 304) {
            char *next = NULL;
            curl_easy_getinfo(c, CURLINFO_REDIRECT_URL, &next);
            if (!next) {
                FAIL(p, 502, "'%s' answered HTTP %ld with no Location", url, status);
                goto done;
            }
            if (hop >= PULL_MAX_REDIRECTS) {
                FAIL(p, 502, "'%s': more than %d redirects", p->url, PULL_MAX_REDIRECTS);
                goto done;
            }
            char why[1024], path[16];
            int is_file = 0;
            if (pull_check_url(&P.policy, next, &is_file, path, sizeof path, why, sizeof why) < 0 || is_file) {
                FAIL(p, 403, "redirect from '%s' to '%s' refused: %s", url, next,
                     is_file ? "a redirect may not lead to a file URL" : why);
                goto done;
            }
            snprintf(url, sizeof url, "%s", next);
            continue;
        }
        if (status < 200 || status > 299) {
            FAIL(p, 502, "'%s' answered HTTP %ld", url, status);
            goto done;
        }
        rc = 0;
        break;
    }
done:
    curl_easy_cleanup(c);
    return rc;
}

static int fetch_file(pull *p, fetch *f, const char *path)
{
    char real[PATH_MAX];
    if (!realpath(path, real)) {
        FAIL(p, 404, "file '%s': %s", path, strerror(errno));
        return -1;
    }
    size_t rl = strlen(P.file_root_real);
    if (strncmp(real, P.file_root_real, rl) != 0 || (real[rl] != '/' && !(rl == 1 && P.file_root_real[0] == '/'))) {
        FAIL(p, 403, "file '%s' is not below --pull-file-root '%s'", path, P.file_root_real);
        return -1;
    }
    int fd = open(real, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        FAIL(p, 404, "file '%s' is not a readable regular file%s%s", path, fd < 0 ? ": " : "",
             fd < 0 ? strerror(errno) : "");
        if (fd >= 0)
            close(fd);
        return -1;
    }
    atomic_store(&p->total, (int64_t)st.st_size);
    char buf[65536];
    int rc = 0;
    for (;;) {
        if (atomic_load(&p->cancel)) {
            FAIL(p, 503, "pull of '%s' cancelled: the daemon is stopping", p->url);
            rc = -1;
            break;
        }
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            FAIL(p, 500, "cannot read '%s': %s", path, strerror(errno));
            rc = -1;
            break;
        }
        if (n == 0)
            break;
        if (sink(f, buf, (size_t)n) < 0) {
            if (f->too_large)
                FAIL(p, 413, "'%s' is larger than --pull-max-size (%lld bytes)", path, (long long)P.policy.max_size);
            else
                FAIL(p, 507, "cannot write the download: %s", strerror(f->write_failed));
            rc = -1;
            break;
        }
    }
    close(fd);
    return rc;
}

static int on_remove(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)ftw;
    if (flag == FTW_DP || flag == FTW_D)
        rmdir(path);
    else
        unlink(path);
    return 0;
}

/* rm -rf, never following a link (every directory unpacked is 0755: its owner can empty it). */
static void remove_tree(const char *path)
{
    nftw(path, on_remove, 16, FTW_DEPTH | FTW_PHYS);
}

static enum pull_entry_type kind_of(struct archive_entry *e)
{
    if (archive_entry_hardlink(e))
        return PULL_ENTRY_HARDLINK;
    switch (archive_entry_filetype(e)) {
    case AE_IFREG:
        return PULL_ENTRY_FILE;
    case AE_IFDIR:
        return PULL_ENTRY_DIR;
    case AE_IFLNK:
        return PULL_ENTRY_SYMLINK;
    default:
        return PULL_ENTRY_OTHER; /* devices, fifos, sockets */
    }
}

/* Whether the download starts like an archive this module unpacks (tar, gzip, zip), by its first bytes. */
static int looks_like_archive(const char *path)
{
    unsigned char b[512];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, b, sizeof b);
    close(fd);
    if (n >= 2 && b[0] == 0x1f && b[1] == 0x8b)
        return 1; /* gzip */
    if (n >= 4 && b[0] == 'P' && b[1] == 'K' && ((b[2] == 3 && b[3] == 4) || (b[2] == 5 && b[3] == 6)))
        return 1; /* zip */
    if (n >= 262 && memcmp(b + 257, "ustar", 5) == 0)
        return 1; /* tar (POSIX and GNU) */
    return 0;
}

/*
 * Whether path, as the disk resolves it now (its nearest existing
 * ancestor when it does not exist yet), lies inside root_real (a real
 * path). Links already unpacked are followed, so a chain of them that each
 * looked harmless on its own cannot lead a write out of the tree.
 */
static int resolves_inside(const char *root_real, const char *path)
{
    char probe[PATH_MAX], real[PATH_MAX];
    struct stat st;
    snprintf(probe, sizeof probe, "%s", path);
    while (lstat(probe, &st) < 0) {
        char *slash = strrchr(probe, '/');
        if (errno != ENOENT || !slash || slash == probe)
            return 0;
        *slash = 0;
    }
    if (!realpath(probe, real))
        return 0;
    size_t rl = strlen(root_real);
    return strncmp(real, root_real, rl) == 0 && (real[rl] == '/' || real[rl] == 0);
}

static int unpack(pull *p, const char *download, const char *tree)
{
    struct archive *a = archive_read_new(), *w = archive_write_disk_new();
    int rc = -1;
    int64_t total = 0, entries = 0;
    if (!a || !w)
        abort();
    archive_read_support_format_tar(a);
    archive_read_support_format_zip(a);
    if (archive_read_support_filter_gzip(a) != ARCHIVE_OK) {
        /* ARCHIVE_WARN would mean an external gzip program: none is run on hostile bytes */
        FAIL(p, 500, "this libarchive cannot read gzip itself");
        goto done;
    }
    /*
     * Paths are made absolute below the temporary tree, after corral's own
     * check of the path the archive gave: libarchive's NOABSOLUTEPATHS
     * would refuse every one of them, so it is corral's check that keeps
     * absolute paths out. No owner, no permissions, no ACLs or xattrs.
     */
    archive_write_disk_set_options(w, ARCHIVE_EXTRACT_SECURE_SYMLINKS | ARCHIVE_EXTRACT_SECURE_NODOTDOT |
                                          ARCHIVE_EXTRACT_NO_OVERWRITE);
    char tree_real[PATH_MAX];
    if (!realpath(tree, tree_real)) {
        FAIL(p, 500, "cannot resolve '%s': %s", tree, strerror(errno));
        goto done;
    }
    if (archive_read_open_filename(a, download, 65536) != ARCHIVE_OK) {
        FAIL(p, 422, "cannot read the archive: %s", archive_error_string(a));
        goto done;
    }
    for (;;) {
        if (atomic_load(&p->cancel)) {
            FAIL(p, 503, "pull of '%s' cancelled: the daemon is stopping", p->url);
            goto done;
        }
        struct archive_entry *e;
        int r = archive_read_next_header(a, &e);
        if (r == ARCHIVE_EOF)
            break;
        if (r != ARCHIVE_OK) {
            FAIL(p, 422, "cannot read the archive: %s", archive_error_string(a));
            goto done;
        }
        if (++entries > P.policy.max_entries) {
            FAIL(p, 422, "the archive has more than %lld entries", (long long)P.policy.max_entries);
            goto done;
        }
        /* copied: archive_entry_set_pathname below frees what archive_entry_pathname returned */
        char path[PATH_MAX];
        const char *given = archive_entry_pathname(e);
        snprintf(path, sizeof path, "%s", given ? given : "");
        enum pull_entry_type type = kind_of(e);
        const char *link = type == PULL_ENTRY_HARDLINK ? archive_entry_hardlink(e)
                           : type == PULL_ENTRY_SYMLINK ? archive_entry_symlink(e)
                                                        : NULL;
        char why[900];
        if (pull_check_entry(given, type, link, why, sizeof why) < 0) {
            FAIL(p, 422, "hostile archive refused: %s", why);
            goto done;
        }
        if (type == PULL_ENTRY_FILE && archive_entry_size_is_set(e) &&
            archive_entry_size(e) > P.policy.max_size - total) {
            FAIL(p, 413, "unpacked, the archive is larger than --pull-max-size (%lld bytes)",
                 (long long)P.policy.max_size);
            goto done;
        }
        char full[PATH_MAX];
        struct stat st;
        snprintf(full, sizeof full, "%s/%s", tree, path);
        /* where it would be written: its directory as the disk resolves it now */
        char parent[PATH_MAX];
        snprintf(parent, sizeof parent, "%s", full);
        char *slash = strrchr(parent, '/');
        *slash = 0; /* full begins with tree and a slash */
        if (!resolves_inside(tree_real, parent)) {
            FAIL(p, 422, "hostile archive refused: entry '%s' would be written outside the model directory, "
                         "through a symbolic link", path);
            goto done;
        }
        if (lstat(full, &st) == 0 && !(type == PULL_ENTRY_DIR && S_ISDIR(st.st_mode))) {
            FAIL(p, 422, "hostile archive refused: entry '%s' comes twice, or under a path already taken", path);
            goto done;
        }
        if (type == PULL_ENTRY_HARDLINK) {
            char target[PATH_MAX];
            snprintf(target, sizeof target, "%s/%s", tree, link);
            if (lstat(target, &st) < 0 || !S_ISREG(st.st_mode) || !resolves_inside(tree_real, target)) {
                FAIL(p, 422, "hostile archive refused: hard link '%s' -> '%s' does not name a file unpacked "
                             "before it, inside the model directory", path, link);
                goto done;
            }
            if (archive_entry_size_is_set(e) && archive_entry_size(e) > 0) {
                /* its data would be written into the file it links to */
                FAIL(p, 422, "hostile archive refused: hard link '%s' carries data", path);
                goto done;
            }
            archive_entry_set_hardlink(e, target);
        }
        archive_entry_set_pathname(e, full);
        /* readable by the daemon, removable by it, never set-id */
        archive_entry_set_perm(e, type == PULL_ENTRY_DIR || (archive_entry_perm(e) & 0111) ? 0755 : 0644);
        if (archive_write_header(w, e) != ARCHIVE_OK) {
            FAIL(p, 422, "cannot unpack '%s': %s", path, archive_error_string(w));
            goto done;
        }
        const void *buf;
        size_t n;
        la_int64_t off;
        while ((r = archive_read_data_block(a, &buf, &n, &off)) == ARCHIVE_OK) {
            if (atomic_load(&p->cancel)) {
                FAIL(p, 503, "pull of '%s' cancelled: the daemon is stopping", p->url);
                goto done;
            }
            total += (int64_t)n;
            if (total > P.policy.max_size) {
                FAIL(p, 413, "unpacked, the archive is larger than --pull-max-size (%lld bytes)",
                     (long long)P.policy.max_size);
                goto done;
            }
            if (archive_write_data_block(w, buf, n, off) != ARCHIVE_OK) {
                FAIL(p, 507, "cannot write '%s': %s", path, archive_error_string(w));
                goto done;
            }
        }
        if (r != ARCHIVE_EOF) {
            FAIL(p, 422, "cannot read '%s' from the archive: %s", path, archive_error_string(a));
            goto done;
        }
        if (archive_write_finish_entry(w) != ARCHIVE_OK) {
            FAIL(p, 422, "cannot unpack '%s': %s", path, archive_error_string(w));
            goto done;
        }
    }
    rc = 0;
done:
    archive_read_free(a);
    archive_write_free(w);
    return rc;
}

/* The tree being checked by check_links (nftw has no user pointer; one pull per thread at a time). */
static _Thread_local const char *links_root;
static _Thread_local char *links_bad;

static int on_check_link(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)ftw;
    if (flag != FTW_SL && flag != FTW_SLN)
        return 0;
    char real[PATH_MAX];
    size_t rl = strlen(links_root);
    if (!realpath(path, real) || strncmp(real, links_root, rl) != 0 || (real[rl] != '/' && real[rl] != 0)) {
        links_bad = xstrdup(path + rl + (path[rl] == '/'));
        return 1;
    }
    return 0;
}

/* After unpacking: every symbolic link resolves, inside root. 0, or -1 with the pull failed. */
static int check_links(pull *p, const char *root)
{
    char real[PATH_MAX];
    if (!realpath(root, real)) {
        FAIL(p, 500, "cannot resolve '%s': %s", root, strerror(errno));
        return -1;
    }
    links_root = real;
    links_bad = NULL;
    nftw(real, on_check_link, 16, FTW_PHYS);
    if (links_bad) {
        FAIL(p, 422, "hostile archive refused: symbolic link '%s' does not resolve inside the model directory",
             links_bad);
        free(links_bad);
        links_bad = NULL;
        return -1;
    }
    return 0;
}

/* The unpacked tree's model directory: root, or its one top-level directory. */
static int find_model_dir(pull *p, const char *tree, char *dir, size_t len)
{
    struct stat st;
    char yaml[PATH_MAX];
    snprintf(yaml, sizeof yaml, "%s/model.yaml", tree);
    if (lstat(yaml, &st) == 0 && S_ISREG(st.st_mode)) {
        snprintf(dir, len, "%s", tree);
        return 0;
    }
    DIR *d = opendir(tree);
    struct dirent *e;
    char only[NAME_MAX + 1] = "";
    int count = 0;
    while (d && (e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        count++;
        snprintf(only, sizeof only, "%s", e->d_name);
    }
    if (d)
        closedir(d);
    if (count == 1) {
        snprintf(dir, len, "%s/%s", tree, only);
        snprintf(yaml, sizeof yaml, "%s/model.yaml", dir);
        if (lstat(dir, &st) == 0 && S_ISDIR(st.st_mode) && lstat(yaml, &st) == 0 && S_ISREG(st.st_mode))
            return 0;
    }
    FAIL(p, 422, "'%s' holds no model.yaml, neither at its root nor in a single top-level directory", p->url);
    return -1;
}

static void run_pull(pull *p)
{
    char tmp[PATH_MAX], download[PATH_MAX], tree[PATH_MAX], dir[PATH_MAX], final[PATH_MAX];
    fetch f = {.p = p, .fd = -1};
    snprintf(tmp, sizeof tmp, "%s/.pull-%s-XXXXXX", P.external_real, p->name);
    if (!mkdtemp(tmp)) {
        FAIL(p, 507, "cannot make a temporary directory in '%s': %s", P.external_real, strerror(errno));
        return;
    }
    snprintf(download, sizeof download, "%s/download", tmp);
    snprintf(tree, sizeof tree, "%s/tree", tmp);
    snprintf(final, sizeof final, "%s/%s", P.external_real, p->name);
    f.fd = open(download, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    f.md = EVP_MD_CTX_new();
    if (f.fd < 0 || !f.md || !EVP_DigestInit_ex(f.md, EVP_sha256(), NULL)) {
        FAIL(p, 507, "cannot create '%s': %s", download, strerror(errno));
        goto done;
    }
    char path[PATH_MAX], why[1024];
    int is_file = 0;
    if (pull_check_url(&P.policy, p->url, &is_file, path, sizeof path, why, sizeof why) < 0) {
        FAIL(p, 403, "%s", why); /* checked at the start already: can't happen */
        goto done;
    }
    if ((is_file ? fetch_file(p, &f, path) : fetch_http(p, &f)) < 0)
        goto done;
    if (close(f.fd) < 0) {
        f.fd = -1;
        FAIL(p, 507, "cannot write the download: %s", strerror(errno));
        goto done;
    }
    f.fd = -1;
    unsigned char got[32];
    unsigned int glen = 0;
    EVP_DigestFinal_ex(f.md, got, &glen);
    if (memcmp(got, p->want, 32) != 0) {
        char hex[65];
        sha256_hex(got, hex);
        FAIL(p, 422, "sha256 mismatch: '%s' (%lld bytes) has sha256 %s, not the one expected", p->url,
             (long long)f.bytes, hex);
        goto done;
    }
    atomic_store(&p->phase, PHASE_VERIFIED);
    if (mkdir(tree, 0755) < 0) {
        FAIL(p, 507, "cannot make '%s': %s", tree, strerror(errno));
        goto done;
    }
    if (looks_like_archive(download)) {
        if (unpack(p, download, tree) < 0)
            goto done;
    } else {
        /* a single file: the model directory holds it, under the URL's last segment */
        char *slash = strrchr(is_file ? path : p->url, '/');
        char base[NAME_MAX + 1];
        snprintf(base, sizeof base, "%s", slash ? slash + 1 : "");
        char *q = strpbrk(base, "?#");
        if (q)
            *q = 0;
        if (!p->declared && strcmp(base, "model.yaml") != 0) {
            FAIL(p, 422, "'%s' is a single file that is not model.yaml (and not a tar, tar.gz or zip archive): "
                         "it would make a model directory with no model.yaml", p->url);
            goto done;
        }
        if (!*base || base[0] == '.' || strchr(base, '%')) {
            FAIL(p, 422, "'%s' is a single file whose URL gives it no usable file name", p->url);
            goto done;
        }
        char to[PATH_MAX];
        snprintf(to, sizeof to, "%s/%s", tree, base);
        if (rename(download, to) < 0) {
            FAIL(p, 507, "cannot move the download into place: %s", strerror(errno));
            goto done;
        }
        chmod(to, 0644);
    }
    if (p->declared) {
        /* the files of a declared model: the tree as it is, no manifest of its own */
        snprintf(dir, sizeof dir, "%s", tree);
        if (check_links(p, dir) < 0)
            goto done;
        goto install;
    }
    if (find_model_dir(p, tree, dir, sizeof dir) < 0 || check_links(p, dir) < 0)
        goto done;
    char yaml[PATH_MAX], merr[1024];
    snprintf(yaml, sizeof yaml, "%s/model.yaml", dir);
    manifest *mf = NULL;
    if (manifest_load(yaml, p->name, &mf, merr, sizeof merr) < 0) {
        FAIL(p, 422, "the pulled model.yaml is invalid: %s", merr + (strncmp(merr, yaml, strlen(yaml)) == 0 ? strlen(yaml) + 2 : 0));
        goto done;
    }
    int other_name = strcmp(mf->name, p->name) != 0;
    if (other_name)
        FAIL(p, 409, "the pulled model.yaml names the model '%s', not '%s'", mf->name, p->name);
    manifest_free(mf);
    if (other_name)
        goto done;
install:
    atomic_store(&p->phase, PHASE_UNPACKED);
    if (atomic_load(&p->cancel)) {
        FAIL(p, 503, "pull of '%s' cancelled: the daemon is stopping", p->url);
        goto done;
    }
    if (renameat2(AT_FDCWD, dir, AT_FDCWD, final, RENAME_NOREPLACE) < 0) {
        if (errno == EEXIST || errno == ENOTEMPTY)
            FAIL(p, 409, "'%s' exists already", final);
        else
            FAIL(p, 507, "cannot rename the model into '%s': %s", final, strerror(errno));
        goto done;
    }
    p->status = 0;
done:
    if (f.fd >= 0)
        close(f.fd);
    EVP_MD_CTX_free(f.md);
    remove_tree(tmp);
}

static void on_work(uv_work_t *w)
{
    run_pull(w->data);
}

/* ---- the loop's side ---- */

static void emit(pull *p, const char *state, const char *error)
{
    int64_t total = atomic_load(&p->total);
    json_t *d = json_pack("{s:s,s:s,s:I}", "model", p->name, "state", state, "bytes", (json_int_t)atomic_load(&p->bytes));
    json_object_set_new(d, "total", total >= 0 ? json_integer(total) : json_null());
    if (error)
        json_object_set_new(d, "error", json_string(error));
    events_emit("pull", d);
}

/* The phases reached and not told yet, in order. */
static void tell_phases(pull *p)
{
    int reached = atomic_load(&p->phase) + 1;
    for (; p->phase_told < reached; p->phase_told++)
        emit(p, phase_names[p->phase_told], NULL);
}

static void on_tick(uv_timer_t *t)
{
    (void)t;
    uint64_t now = uv_now(P.loop);
    for (pull *p = P.active; p; p = p->next) {
        tell_phases(p);
        int64_t b = atomic_load(&p->bytes);
        if (b != p->bytes_told && now - p->told_ms >= PROGRESS_EVENT_MS && p->phase_told == 1) {
            emit(p, "progress", NULL);
            p->bytes_told = b;
            p->told_ms = now;
        }
    }
}

static void pull_free(pull *p)
{
    free(p->url);
    free(p->name);
    free(p);
}

static void on_after_work(uv_work_t *w, int status)
{
    pull *p = w->data;
    for (pull **pp = &P.active; *pp; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    P.nactive--;
    if (!P.nactive)
        uv_timer_stop(&P.tick);
    if (status == UV_ECANCELED)
        FAIL(p, 503, "pull of '%s' cancelled: the daemon is stopping", p->url);
    if (p->status == 0) {
        tell_phases(p);
        log_info("pulled model %s from %s (%lld bytes)", p->name, p->url, (long long)atomic_load(&p->bytes));
        char hex[65];
        sha256_hex(p->want, hex);
        state_note_pull(p->name, p->url, hex); /* with --state: where it came from, for `corral pull NAME` */
        registry_rescan();
        emit(p, "done", NULL);
    } else {
        tell_phases(p);
        log_warn("pull of model %s from %s failed: %s", p->name, p->url, p->err);
        emit(p, "failed", p->err);
    }
    if (p->on_done)
        p->on_done(p, p->status, p->name, p->err, p->data);
    pull_free(p);
    if (!P.nactive && P.on_idle) {
        void (*cb)(void) = P.on_idle;
        P.on_idle = NULL;
        cb();
    }
}

/* Temporary directories of a daemon that was killed mid-pull. */
static void remove_stale(void)
{
    DIR *d = opendir(P.external_real);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (strncmp(e->d_name, ".pull-", 6) != 0)
            continue;
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/%s", P.external_real, e->d_name);
        log_info("removing '%s', left by an interrupted pull", path);
        nftw(path, on_remove, 16, FTW_DEPTH | FTW_PHYS);
    }
    if (d)
        closedir(d);
}

void pull_init(uv_loop_t *loop, const pull_policy *policy, const char *models_dir, const char *external_dir)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    P.loop = loop;
    P.policy = *policy;
    if (!P.policy.max_size)
        P.policy.max_size = PULL_DEFAULT_MAX_SIZE;
    if (!P.policy.max_entries)
        P.policy.max_entries = PULL_MAX_ENTRIES;
    P.models_dir = xstrdup(models_dir);
    char real[PATH_MAX];
    if (external_dir && realpath(external_dir, real)) {
        P.external_real = xstrdup(real);
        remove_stale();
    } else if (external_dir) {
        log_warn("pulls are off: --external-models '%s': %s", external_dir, strerror(errno));
    }
    if (policy->file_root) {
        if (realpath(policy->file_root, real))
            P.file_root_real = xstrdup(real);
        else
            log_warn("file URLs are off: --pull-file-root '%s': %s", policy->file_root, strerror(errno));
    }
    if (!P.file_root_real)
        P.policy.file_root = NULL;
    uv_timer_init(loop, &P.tick);
    uv_unref((uv_handle_t *)&P.tick);
}

int pull_start(const char *url, const char *sha256_hex, const char *name, pull_done_cb on_done, void *data,
               pull **out, char *err, size_t errlen)
{
    int declared = 0;
    if (!url && name) {
        /* a model declared with source: its files go to external_models/NAME */
        model *m = model_name_valid(name, strlen(name)) ? model_find(name, strlen(name)) : NULL;
        const manifest *mf = m ? model_manifest(m) : NULL;
        if (!m) {
            snprintf(err, errlen, "no model '%.200s' is declared: give a URL to pull a new one", name);
            return 404;
        }
        if (!mf) {
            snprintf(err, errlen, "model '%s': its model.yaml is broken, so its source is unknown", name);
            return 409;
        }
        if (!mf->source_url) {
            snprintf(err, errlen, "model '%s' declares no source in its model.yaml: give a URL", name);
            return 409;
        }
        url = mf->source_url;
        sha256_hex = mf->source_sha256;
        declared = 1;
    }
    char derived[129], path[PATH_MAX];
    unsigned char want[32];
    int is_file;
    if (!P.external_real) {
        snprintf(err, errlen, "pulling needs the daemon started with --external-models DIR (a directory it can write)");
        return 409;
    }
    if (registry_draining()) {
        snprintf(err, errlen, "the daemon is stopping");
        return 503;
    }
    int rc = pull_check_url(&P.policy, url, &is_file, path, sizeof path, err, errlen);
    if (rc < 0)
        return rc == -EPERM ? 403 : 400;
    if (pull_parse_sha256(sha256_hex, want) < 0) {
        snprintf(err, errlen, "sha256 must be 64 hex digits");
        return 400;
    }
    if (!name) {
        if (pull_default_name(url, derived, sizeof derived) < 0) {
            snprintf(err, errlen, "no model name can be made from the URL's last segment: give a name");
            return 400;
        }
        name = derived;
    }
    if (!model_name_valid(name, strlen(name))) {
        snprintf(err, errlen, "'%.200s' is not a valid model name ([A-Za-z0-9][A-Za-z0-9._-]{0,127})", name);
        return 400;
    }
    if (api_model_name_reserved(name, strlen(name), err, errlen)) /* the scan would only mark it broken */
        return 400;
    struct stat st;
    char where[PATH_MAX];
    for (pull *p = P.active; p; p = p->next)
        if (strcmp(p->name, name) == 0) {
            snprintf(err, errlen, "model '%s' is being pulled already", name);
            return 409;
        }
    snprintf(where, sizeof where, "%s/%s", P.models_dir, name);
    if (!declared && (model_find(name, strlen(name)) || lstat(where, &st) == 0)) {
        snprintf(err, errlen, "model '%s' exists already", name);
        return 409;
    }
    snprintf(where, sizeof where, "%s/%s", P.external_real, name);
    if (lstat(where, &st) == 0) {
        snprintf(err, errlen, "'%s' exists already%s", where, declared ? ": the model's files are on disk" : "");
        return 409;
    }
    if (P.nactive >= PULL_MAX_ACTIVE) {
        snprintf(err, errlen, "%d pulls are running already; try again when one is done", PULL_MAX_ACTIVE);
        return 503;
    }
    pull *p = xcalloc(1, sizeof *p);
    p->url = xstrdup(url);
    p->name = xstrdup(name);
    memcpy(p->want, want, 32);
    p->declared = declared;
    /* a failure until run_pull's very end says otherwise */
    p->status = 500;
    snprintf(p->err, sizeof p->err, "can't happen: the pull of '%s' ended with no result", url);
    p->total = -1;
    p->on_done = on_done;
    p->data = data;
    p->work.data = p;
    p->told_ms = uv_now(P.loop);
    p->next = P.active;
    P.active = p;
    P.nactive++;
    uv_queue_work(P.loop, &p->work, on_work, on_after_work);
    tell_phases(p);
    uv_timer_start(&P.tick, on_tick, PROGRESS_TICK_MS, PROGRESS_TICK_MS);
    log_info("pulling model %s from %s", name, url);
    if (out)
        *out = p;
    return 0;
}

void pull_detach(pull *p)
{
    p->on_done = NULL;
    p->data = NULL;
}

void pull_shutdown(void (*on_idle)(void))
{
    for (pull *p = P.active; p; p = p->next) {
        atomic_store(&p->cancel, 1);
        uv_cancel((uv_req_t *)&p->work); /* one not started yet never starts */
    }
    if (!on_idle)
        return;
    if (!P.nactive)
        on_idle();
    else
        P.on_idle = on_idle;
}
