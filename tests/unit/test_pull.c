/*
 * test_pull — pull.c's pure parts: the digest's hex, the URL, host and
 * address policy, and the check of each archive entry.
 */
#include "check.h"
#include "pull.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>

static const char *const allow[] = {"models.example.com", "127.0.0.1", "[::1]", "10.1.2.3"};
static const pull_policy policy = {.allow = allow, .n_allow = 4, .max_size = 1 << 20, .max_entries = 100};
static const pull_policy with_files = {.allow = allow, .n_allow = 4, .file_root = "/srv/models"};

static int url_ok(const pull_policy *p, const char *url, char *err)
{
    char path[256];
    int is_file = -1;
    return pull_check_url(p, url, &is_file, path, sizeof path, err, 512);
}

static void sha256_hex(void)
{
    unsigned char d[32];
    CHECK(pull_parse_sha256("00112233445566778899aabbccddeeffFFEEDDCCBBAA99887766554433221100", d) == 0);
    CHECK(d[0] == 0x00 && d[1] == 0x11 && d[15] == 0xff && d[16] == 0xff && d[31] == 0x00);
    CHECK(pull_parse_sha256("0011", d) == -EINVAL);
    CHECK(pull_parse_sha256("g0112233445566778899aabbccddeeffFFEEDDCCBBAA99887766554433221100", d) == -EINVAL);
    CHECK(pull_parse_sha256("00112233445566778899aabbccddeeffFFEEDDCCBBAA99887766554433221100aa", d) == -EINVAL);
    CHECK(pull_parse_sha256(NULL, d) == -EINVAL);
}

static void urls(void)
{
    char err[512];
    CHECK(url_ok(&policy, "https://models.example.com/echo.tar.gz", err) == 0);
    CHECK(url_ok(&policy, "http://MODELS.example.com:8080/echo.tar.gz", err) == 0);
    CHECK(url_ok(&policy, "http://127.0.0.1:9/x.tar", err) == 0);
    CHECK(url_ok(&policy, "http://[::1]:9/x.tar", err) == 0);
    CHECK(url_ok(&policy, "http://evil.example.com/x.tar", err) == -EPERM);
    CHECK_STR_CONTAINS(err, "host 'evil.example.com' is not allowed");
    /* a listed host's suffix or prefix is another host */
    CHECK(url_ok(&policy, "http://models.example.com.evil.net/x", err) == -EPERM);
    CHECK(url_ok(&policy, "http://localhost/x", err) == -EPERM);
    CHECK(url_ok(&policy, "ftp://models.example.com/x", err) == -EPERM);
    CHECK_STR_CONTAINS(err, "scheme 'ftp' is refused");
    CHECK(url_ok(&policy, "gopher://models.example.com/x", err) == -EPERM);
    CHECK(url_ok(&policy, "http://user:pw@models.example.com/x", err) == -EPERM);
    CHECK_STR_CONTAINS(err, "user name or password");
    CHECK(url_ok(&policy, "file:///srv/models/echo.tar", err) == -EPERM);
    CHECK_STR_CONTAINS(err, "--pull-file-root");
    CHECK(url_ok(&policy, "not a url", err) == -EINVAL);
    CHECK(url_ok(&policy, "http://models.example.com/a b", err) == -EINVAL);
    CHECK(url_ok(&policy, "", err) == -EINVAL);

    char path[256];
    int is_file = 0;
    CHECK(pull_check_url(&with_files, "file:///srv/models/e%20cho.tar", &is_file, path, sizeof path, err, sizeof err) == 0);
    CHECK(is_file == 1 && strcmp(path, "/srv/models/e cho.tar") == 0);
    CHECK(pull_check_url(&with_files, "file://otherhost/srv/x", &is_file, path, sizeof path, err, sizeof err) < 0);
}

static void default_names(void)
{
    char n[129];
    CHECK(pull_default_name("https://h/a/echo.tar.gz", n, sizeof n) == 0 && strcmp(n, "echo") == 0);
    CHECK(pull_default_name("https://h/echo-2.zip?sig=1", n, sizeof n) == 0 && strcmp(n, "echo-2") == 0);
    CHECK(pull_default_name("https://h/tts.tgz", n, sizeof n) == 0 && strcmp(n, "tts") == 0);
    CHECK(pull_default_name("https://h/model.yaml", n, sizeof n) == -EINVAL);
    CHECK(pull_default_name("https://h/", n, sizeof n) == -EINVAL);
    CHECK(pull_default_name("https://h/..", n, sizeof n) == -EINVAL);
}

static int v4(const char *text)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    inet_pton(AF_INET, text, &a.sin_addr);
    return pull_addr_public((struct sockaddr *)&a);
}

static int v6(const char *text)
{
    struct sockaddr_in6 a = {.sin6_family = AF_INET6};
    inet_pton(AF_INET6, text, &a.sin6_addr);
    return pull_addr_public((struct sockaddr *)&a);
}

static void addresses(void)
{
    CHECK(v4("93.184.216.34") == 1);
    CHECK(v4("8.8.8.8") == 1);
    CHECK(v4("127.0.0.1") == 0);
    CHECK(v4("127.255.0.9") == 0);
    CHECK(v4("10.0.0.1") == 0);
    CHECK(v4("172.16.0.1") == 0);
    CHECK(v4("172.31.255.255") == 0);
    CHECK(v4("172.32.0.1") == 1);
    CHECK(v4("192.168.1.1") == 0);
    CHECK(v4("169.254.169.254") == 0); /* cloud metadata */
    CHECK(v4("0.0.0.0") == 0);
    CHECK(v4("100.64.0.1") == 0);
    CHECK(v4("224.0.0.1") == 0);
    CHECK(v4("255.255.255.255") == 0);
    CHECK(v6("2606:4700::1111") == 1);
    CHECK(v6("::1") == 0);
    CHECK(v6("::") == 0);
    CHECK(v6("fc00::1") == 0);
    CHECK(v6("fd12:3456::1") == 0);
    CHECK(v6("fe80::1") == 0);
    CHECK(v6("ff02::1") == 0);
    CHECK(v6("::ffff:127.0.0.1") == 0);  /* IPv4-mapped loopback */
    CHECK(v6("::ffff:8.8.8.8") == 1);
    CHECK(v6("64:ff9b::a9fe:a9fe") == 0); /* NAT64 of 169.254.169.254 */
    CHECK(v6("2002:7f00:1::1") == 0);     /* 6to4 of 127.0.0.1 */
    CHECK(v6("::127.0.0.1") == 0);

    char err[512];
    struct sockaddr_in a = {.sin_family = AF_INET};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    CHECK(pull_check_addr(&policy, (struct sockaddr *)&a, err, sizeof err) == 0); /* listed itself */
    inet_pton(AF_INET, "127.0.0.2", &a.sin_addr);
    CHECK(pull_check_addr(&policy, (struct sockaddr *)&a, err, sizeof err) == -EPERM);
    CHECK_STR_CONTAINS(err, "address 127.0.0.2 is loopback, private or reserved");
    inet_pton(AF_INET, "10.1.2.3", &a.sin_addr);
    CHECK(pull_check_addr(&policy, (struct sockaddr *)&a, err, sizeof err) == 0);
    struct sockaddr_in6 b = {.sin6_family = AF_INET6};
    inet_pton(AF_INET6, "::1", &b.sin6_addr);
    CHECK(pull_check_addr(&policy, (struct sockaddr *)&b, err, sizeof err) == 0); /* "[::1]" listed */
    inet_pton(AF_INET6, "::ffff:127.0.0.1", &b.sin6_addr);
    CHECK(pull_check_addr(&policy, (struct sockaddr *)&b, err, sizeof err) == -EPERM);
    struct sockaddr u = {.sa_family = AF_UNIX};
    CHECK(pull_check_addr(&policy, &u, err, sizeof err) == -EPERM);
}

static int entry(const char *path, enum pull_entry_type t, const char *link, char *err)
{
    return pull_check_entry(path, t, link, err, 512);
}

static void entries(void)
{
    char err[512];
    CHECK(entry("model.yaml", PULL_ENTRY_FILE, NULL, err) == 0);
    CHECK(entry("echo/model.yaml", PULL_ENTRY_FILE, NULL, err) == 0);
    CHECK(entry("./echo/./worker.py", PULL_ENTRY_FILE, NULL, err) == 0);
    CHECK(entry("./", PULL_ENTRY_DIR, NULL, err) == 0);
    CHECK(entry("echo/", PULL_ENTRY_DIR, NULL, err) == 0);
    CHECK(entry("", PULL_ENTRY_FILE, NULL, err) == -EPERM);
    CHECK(entry(NULL, PULL_ENTRY_FILE, NULL, err) == -EPERM);
    CHECK(entry(".", PULL_ENTRY_FILE, NULL, err) == -EPERM);
    CHECK(entry("/etc/passwd", PULL_ENTRY_FILE, NULL, err) == -EPERM);
    CHECK_STR_CONTAINS(err, "absolute path");
    CHECK(entry("../evil", PULL_ENTRY_FILE, NULL, err) == -EPERM);
    CHECK_STR_CONTAINS(err, "'..'");
    CHECK(entry("a/../../evil", PULL_ENTRY_FILE, NULL, err) == -EPERM);
    CHECK(entry("a/../b", PULL_ENTRY_FILE, NULL, err) == -EPERM); /* no '..' at all, even one that stays inside */
    CHECK(entry("a/..", PULL_ENTRY_DIR, NULL, err) == -EPERM);
    CHECK(entry("a..b/c", PULL_ENTRY_FILE, NULL, err) == 0);
    char longc[300];
    memset(longc, 'x', sizeof longc - 1);
    longc[sizeof longc - 1] = 0;
    CHECK(entry(longc, PULL_ENTRY_FILE, NULL, err) == -EPERM);

    CHECK(entry("dev", PULL_ENTRY_OTHER, NULL, err) == -EPERM);
    CHECK_STR_CONTAINS(err, "device, fifo or socket");

    CHECK(entry("a/link", PULL_ENTRY_SYMLINK, "target", err) == 0);
    CHECK(entry("a/link", PULL_ENTRY_SYMLINK, "../b/target", err) == 0);
    CHECK(entry("a/b/link", PULL_ENTRY_SYMLINK, "../../x", err) == 0);
    CHECK(entry("link", PULL_ENTRY_SYMLINK, "../x", err) == -EPERM);
    CHECK_STR_CONTAINS(err, "points outside the model directory");
    CHECK(entry("a/link", PULL_ENTRY_SYMLINK, "../../x", err) == -EPERM);
    CHECK(entry("a/link", PULL_ENTRY_SYMLINK, "b/../../../x", err) == -EPERM);
    CHECK(entry("link", PULL_ENTRY_SYMLINK, "/etc/passwd", err) == -EPERM);
    CHECK_STR_CONTAINS(err, "absolute path");
    CHECK(entry("link", PULL_ENTRY_SYMLINK, "", err) == -EPERM);
    CHECK(entry("link", PULL_ENTRY_SYMLINK, NULL, err) == -EPERM);
    CHECK(entry("./", PULL_ENTRY_SYMLINK, "x", err) == -EPERM); /* the root itself as a link */

    CHECK(entry("hard", PULL_ENTRY_HARDLINK, "model.yaml", err) == 0);
    CHECK(entry("hard", PULL_ENTRY_HARDLINK, "/etc/passwd", err) == -EPERM);
    CHECK(entry("hard", PULL_ENTRY_HARDLINK, "../outside", err) == -EPERM);
    CHECK(entry("hard", PULL_ENTRY_HARDLINK, "", err) == -EPERM);
    CHECK(entry("hard", PULL_ENTRY_HARDLINK, NULL, err) == -EPERM);
}

CHECK_MAIN(CASE(sha256_hex), CASE(urls), CASE(default_names), CASE(addresses), CASE(entries))
