/*
 * Unit tests of access's pure helpers: the token comparison and cleaning,
 * the token file, Host matching, loopback detection, which paths need the
 * token, and the classification of request body types.
 */
#include "access.h"
#include "check.h"

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#define HOST_OK(cfg, s) access_host_allowed((cfg), (s), strlen(s))

static void token_equal(void)
{
    CHECK(access_token_equal("s3cret", 6, "s3cret", 6));
    CHECK(!access_token_equal("s3cret", 6, "s3creT", 6));
    CHECK(!access_token_equal("s3cret", 6, "s3cre", 5)); /* a prefix */
    CHECK(!access_token_equal("s3cre", 5, "s3cret", 6));
    CHECK(!access_token_equal("s3cret", 6, "s3cret\0", 7)); /* a NUL does not end the comparison */
    CHECK(!access_token_equal("", 0, "x", 1));
    CHECK(access_token_equal("", 0, NULL, 0));
    char long_a[5000], long_b[5000];
    memset(long_a, 'a', sizeof long_a);
    memcpy(long_b, long_a, sizeof long_b);
    CHECK(access_token_equal(long_a, sizeof long_a, long_b, sizeof long_b));
    long_b[4999] = 'b';
    CHECK(!access_token_equal(long_a, sizeof long_a, long_b, sizeof long_b));
}

static void token_clean(void)
{
    char *t;
    CHECK(access_token_clean("  abc-123 \r\n", 12, &t) == 0 && t && strcmp(t, "abc-123") == 0);
    free(t);
    CHECK(access_token_clean(" \t\n", 3, &t) == -ENODATA && t == NULL);
    CHECK(access_token_clean("", 0, &t) == -ENODATA);
    CHECK(access_token_clean("ab\x01" "cd", 5, &t) == -EINVAL && t == NULL);
    CHECK(access_token_clean("ab\0cd", 5, &t) == -EINVAL);
    CHECK(access_token_clean("a\nb", 3, &t) == -EINVAL);
    char big[5000];
    memset(big, 'x', sizeof big);
    CHECK(access_token_clean(big, sizeof big, &t) == -E2BIG);
    CHECK(access_token_clean(big, 4096, &t) == 0 && strlen(t) == 4096);
    free(t);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

static void token_file(void)
{
    char dir[] = "/tmp/corral-access-XXXXXX", path[64], err[256];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/token", dir);
    char *t;

    write_file(path, "tok-en\nsecond line\n");
    CHECK(access_read_token_file(path, &t, err, sizeof err) == 0 && strcmp(t, "tok-en") == 0);
    free(t);
    write_file(path, "no-newline   ");
    CHECK(access_read_token_file(path, &t, err, sizeof err) == 0 && strcmp(t, "no-newline") == 0);
    free(t);

    write_file(path, "");
    CHECK(access_read_token_file(path, &t, err, sizeof err) == -ENODATA && t == NULL);
    CHECK_STR_CONTAINS(err, "is empty");
    CHECK_STR_CONTAINS(err, path);
    write_file(path, "\n\nlater\n"); /* the token is the first line, and it is blank */
    CHECK(access_read_token_file(path, &t, err, sizeof err) == -ENODATA);

    unlink(path);
    CHECK(access_read_token_file(path, &t, err, sizeof err) == -ENOENT && t == NULL);
    CHECK_STR_CONTAINS(err, "cannot open");
    CHECK_STR_CONTAINS(err, path);
    CHECK(access_read_token_file(dir, &t, err, sizeof err) == -EISDIR);
    CHECK_STR_CONTAINS(err, "cannot read");
    rmdir(dir);
}

static void host_loopback_names(void)
{
    access_config cfg = {.bind_host = "127.0.0.1"};
    CHECK(HOST_OK(&cfg, "localhost"));
    CHECK(HOST_OK(&cfg, "localhost:8766"));
    CHECK(HOST_OK(&cfg, "LocalHost:8766"));
    CHECK(HOST_OK(&cfg, "localhost."));
    CHECK(HOST_OK(&cfg, "app.localhost:3000"));
    CHECK(HOST_OK(&cfg, "127.0.0.1:8766"));
    CHECK(HOST_OK(&cfg, "127.1.2.3"));
    CHECK(HOST_OK(&cfg, "[::1]:8766"));
    CHECK(HOST_OK(&cfg, "[::1]"));
    CHECK(HOST_OK(&cfg, "[::ffff:127.0.0.1]"));

    CHECK(!HOST_OK(&cfg, "evil.example"));
    CHECK(!HOST_OK(&cfg, "evil.example:8766"));
    CHECK(!HOST_OK(&cfg, "localhost.evil.example"));
    CHECK(!HOST_OK(&cfg, "evillocalhost"));
    CHECK(!HOST_OK(&cfg, ".localhost"));
    CHECK(!HOST_OK(&cfg, "127.0.0.1.evil.example"));
    CHECK(!HOST_OK(&cfg, "10.0.0.1"));
    CHECK(!HOST_OK(&cfg, "[::2]"));
    CHECK(!HOST_OK(&cfg, ""));
    CHECK(!HOST_OK(&cfg, ":8766"));
    CHECK(!HOST_OK(&cfg, "localhost:80x"));
    CHECK(!HOST_OK(&cfg, "localhost@evil.example"));
    CHECK(!HOST_OK(&cfg, "[::1"));
    CHECK(!HOST_OK(&cfg, "[localhost]"));
    CHECK(!HOST_OK(&cfg, "::1")); /* an IPv6 literal needs its brackets in a Host */
}

static void host_bound_address(void)
{
    access_config v4 = {.bind_host = "192.168.1.5"};
    CHECK(HOST_OK(&v4, "192.168.1.5:8766"));
    CHECK(HOST_OK(&v4, "localhost"));
    CHECK(!HOST_OK(&v4, "192.168.1.6"));
    CHECK(!HOST_OK(&v4, "[::1:2]"));

    access_config v6 = {.bind_host = "fd00::5"};
    CHECK(HOST_OK(&v6, "[fd00::5]:8766"));
    CHECK(HOST_OK(&v6, "[FD00:0::5]"));
    CHECK(!HOST_OK(&v6, "[fd00::6]"));

    access_config any4 = {.bind_host = "0.0.0.0"}, any6 = {.bind_host = "::"};
    CHECK(HOST_OK(&any4, "10.1.2.3:8766"));
    CHECK(HOST_OK(&any4, "[2001:db8::1]"));
    CHECK(HOST_OK(&any6, "203.0.113.9"));
    CHECK(!HOST_OK(&any4, "evil.example"));
    CHECK(!HOST_OK(&any6, "evil.example:8766"));
}

static void host_allow_list(void)
{
    const char *names[] = {"corral.internal", "gpu-box:8766", "[fd00::9]"};
    access_config cfg = {.bind_host = "127.0.0.1", .allow_hosts = names, .n_allow_hosts = 3};
    CHECK(HOST_OK(&cfg, "corral.internal"));
    CHECK(HOST_OK(&cfg, "CORRAL.internal:9000"));
    CHECK(HOST_OK(&cfg, "gpu-box"));
    CHECK(HOST_OK(&cfg, "[fd00::9]:1"));
    CHECK(!HOST_OK(&cfg, "x.corral.internal"));
    CHECK(!HOST_OK(&cfg, "corral.internal.evil.example"));

    const char *any[] = {"*"};
    access_config open = {.bind_host = "127.0.0.1", .allow_hosts = any, .n_allow_hosts = 1};
    CHECK(HOST_OK(&open, "evil.example"));
    CHECK(HOST_OK(&open, "anything at all"));
}

static void loopback(void)
{
    CHECK(access_is_loopback("127.0.0.1"));
    CHECK(access_is_loopback("127.255.0.1"));
    CHECK(access_is_loopback("::1"));
    CHECK(!access_is_loopback("0.0.0.0"));
    CHECK(!access_is_loopback("::"));
    CHECK(!access_is_loopback("192.168.1.5"));
    CHECK(!access_is_loopback("localhost")); /* --host takes addresses */
}

#define PATH(...) ((const h2o_iovec_t[]){__VA_ARGS__})
#define S(lit) {(char *)(lit), sizeof(lit) - 1}
#define NEEDS(scope, ...)                                                                                             \
    access_path_needs_token((scope), PATH(__VA_ARGS__), (int)(sizeof PATH(__VA_ARGS__) / sizeof(h2o_iovec_t)))

static void paths_needing_the_token(void)
{
    access_scope all = ACCESS_SCOPE_ALL, mgmt = ACCESS_SCOPE_MANAGEMENT;
    CHECK(!NEEDS(all, S("v2"), S("health"), S("live")));
    CHECK(!NEEDS(mgmt, S("v2"), S("health"), S("ready")));
    CHECK(NEEDS(all, S("v2")));
    CHECK(NEEDS(all, S("v2"), S("models"), S("echo"), S("infer")));
    CHECK(NEEDS(all, S("v1"), S("models"), S("echo"), S("generate")));
    CHECK(NEEDS(all, S("nowhere")));
    /* The dashboard's files: "/" and /dashboard/{file}, nothing deeper or beside them. */
    CHECK(!access_path_needs_token(all, NULL, 0));
    CHECK(!NEEDS(all, S("dashboard"), S("app.js")));
    CHECK(!NEEDS(mgmt, S("dashboard"), S("style.css")));
    CHECK(NEEDS(all, S("dashboard")));
    CHECK(NEEDS(all, S("dashboard"), S("app.js"), S("x")));
    CHECK(NEEDS(all, S("index.html")));

    CHECK(NEEDS(mgmt, S("v2"), S("repository"), S("index")));
    CHECK(NEEDS(mgmt, S("v2"), S("repository"), S("models"), S("echo"), S("load")));
    CHECK(NEEDS(mgmt, S("v2"), S("repository"), S("models"), S("echo"), S("unload")));
    CHECK(NEEDS(mgmt, S("v1"), S("models")));
    CHECK(NEEDS(mgmt, S("v1"), S("models"), S("echo")));
    CHECK(NEEDS(mgmt, S("v1"), S("models"), S("echo"), S("scale")));
    CHECK(NEEDS(mgmt, S("v1"), S("models"), S("echo"), S("logs")));
    CHECK(NEEDS(mgmt, S("v1"), S("events")));
    CHECK(NEEDS(mgmt, S("v1"), S("models"), S("echo"), S("generate"), S("extra")));
    CHECK(!NEEDS(mgmt, S("v1"), S("models"), S("echo"), S("generate")));
    CHECK(!NEEDS(mgmt, S("v2")));
    CHECK(!NEEDS(mgmt, S("v2"), S("models"), S("echo")));
    CHECK(!NEEDS(mgmt, S("v2"), S("models"), S("echo"), S("versions"), S("1"), S("infer")));
    CHECK(!NEEDS(mgmt, S("v2"), S("models"), S("echo"), S("ready")));
    CHECK(NEEDS(mgmt, S("v2"), S("models"), S("echo"), S("config")));
    CHECK(NEEDS(mgmt, S("v2"), S("models"), S("echo"), S("versions"), S("1"), S("config")));
    CHECK(!NEEDS(mgmt, S("v2"), S("models"), S("config"))); /* the metadata of a model named "config" */
    CHECK(NEEDS(mgmt, S("v2"), S("logging")));
    CHECK(!NEEDS(mgmt, S("v2"), S("models"), S("stats")));
    CHECK(!NEEDS(mgmt, S("v2"), S("models"), S("echo"), S("stats")));
    CHECK(!NEEDS(mgmt, S("metrics")));
    CHECK(NEEDS(all, S("metrics")));
}

#define KIND(s) access_body_kind_of((s), strlen(s), NULL, NULL)

static void body_kinds(void)
{
    CHECK(KIND("application/x-www-form-urlencoded") == ACCESS_BODY_FORM);
    CHECK(KIND("multipart/form-data; boundary=----x") == ACCESS_BODY_FORM);
    CHECK(KIND("Application/X-WWW-Form-URLEncoded;charset=UTF-8") == ACCESS_BODY_FORM);
    CHECK(KIND("text/plain") == ACCESS_BODY_TEXT);
    CHECK(KIND("text/plain;charset=UTF-8") == ACCESS_BODY_TEXT);
    CHECK(KIND("  TEXT/PLAIN ; charset=utf-8") == ACCESS_BODY_TEXT);
    CHECK(KIND("application/json") == ACCESS_BODY_OTHER);
    CHECK(KIND("application/json; charset=utf-8") == ACCESS_BODY_OTHER);
    CHECK(KIND("application/octet-stream") == ACCESS_BODY_OTHER);
    CHECK(KIND("") == ACCESS_BODY_OTHER);
    CHECK(KIND("text/plainx") == ACCESS_BODY_OTHER);
    CHECK(KIND("text/html") == ACCESS_BODY_OTHER);
    const char *type;
    size_t len;
    const char *ct = " text/plain ; charset=utf-8";
    access_body_kind_of(ct, strlen(ct), &type, &len);
    CHECK(len == 10 && strncmp(type, "text/plain", 10) == 0);
}

CHECK_MAIN(CASE(token_equal), CASE(token_clean), CASE(token_file), CASE(host_loopback_names),
           CASE(host_bound_address), CASE(host_allow_list), CASE(loopback), CASE(paths_needing_the_token),
           CASE(body_kinds))
