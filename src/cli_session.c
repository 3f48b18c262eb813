/*
 * cli_session — `corral session`: the context store from the command line
 * (docs/sessions.md), over /v1/sessions.
 *
 *   session ls [--json]
 *   session get ID
 *   session put ID [FILE|-] [--ttl S] [--content-type T] [--json]
 *   session patch ID JSON|@FILE|- [--ttl S] [--json]
 *   session rm ID
 *
 * put without --content-type sends application/json when the bytes parse
 * as JSON, else application/octet-stream. Ids and ttls are percent-encoded
 * into the path as they are: the daemon checks them and says what is wrong.
 */
#include "cli_internal.h"
#include "sb.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char usage[] = "corral: usage: corral session ls [--json] | get ID | put ID [FILE|-] [--ttl S] "
                            "[--content-type T] [--json] | patch ID JSON|@FILE|- [--ttl S] [--json] | rm ID\n";

/* s percent-encoded (all but RFC 3986's unreserved characters) onto out. */
static void add_encoded(sb *out, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        int plain = (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' ||
                    *p == '.' || *p == '_' || *p == '~';
        if (plain) {
            sb_addc(out, (char)*p);
        } else {
            sb_addc(out, '%');
            sb_addc(out, hex[*p >> 4]);
            sb_addc(out, hex[*p & 15]);
        }
    }
}

/* /v1/sessions/ID[?ttl=TTL], malloc'd. */
static char *session_path(const char *id, const char *ttl)
{
    sb p;
    sb_init(&p, 64);
    sb_adds(&p, "/v1/sessions/");
    add_encoded(&p, id);
    if (ttl) {
        sb_adds(&p, "?ttl=");
        add_encoded(&p, ttl);
    }
    return sb_take(&p, NULL);
}

/* Performs the call; a status other than 2xx is reported (1). Returns 0 with a filled, or 1. */
static int call(const char *method, const char *path, const char *ctype, const void *body, size_t len, cli__answer *a)
{
    if (cli__call(method, path, ctype, body, len, a) < 0)
        return 1;
    if (a->status < 200 || a->status > 299) {
        cli__report_failure(a->status, a->body, a->len);
        free(a->body);
        return 1;
    }
    return 0;
}

static json_t *parse_answer(const cli__answer *a)
{
    json_error_t err;
    json_t *j = json_loadb(a->body, a->len, 0, &err);
    if (!j)
        fprintf(stderr, "corral: the daemon answered with malformed JSON: %s\n", err.text);
    return j;
}

static const char *jstr(const json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

static long long jint(const json_t *o, const char *key)
{
    return (long long)json_integer_value(json_object_get(o, key));
}

/* A written session's answer: the JSON as it is with --json, else one line. */
static int print_written(const cli__answer *a, int as_json, const char *verb)
{
    if (as_json) {
        fwrite(a->body, 1, a->len, stdout);
        putchar('\n');
        return 0;
    }
    json_t *j = parse_answer(a);
    if (!j)
        return 1;
    char size[32];
    cli__human_size((double)jint(j, "size"), size, sizeof size);
    printf("%s %s: %s of %s, expires in %llds (%s)\n", jstr(j, "id"),
           strcmp(verb, "put") == 0 ? (a->status == 201 ? "created" : "replaced") : "patched", size,
           jstr(j, "content_type"), jint(j, "expires_in"), jstr(j, "expires_at"));
    json_decref(j);
    return 0;
}

static int cmd_ls(int argc, char **argv)
{
    int as_json = 0;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--json") != 0) {
            fputs(usage, stderr);
            return 2;
        }
        as_json = 1;
    }
    cli__answer a;
    if (call("GET", "/v1/sessions", NULL, NULL, 0, &a))
        return 1;
    if (as_json) {
        fwrite(a.body, 1, a.len, stdout);
        putchar('\n');
        free(a.body);
        return 0;
    }
    json_t *j = parse_answer(&a);
    free(a.body);
    if (!j)
        return 1;
    printf("%-32s %-28s %-10s %s\n", "ID", "TYPE", "SIZE", "EXPIRES IN");
    size_t i;
    json_t *s;
    json_array_foreach(json_object_get(j, "sessions"), i, s) {
        char size[32];
        cli__human_size((double)jint(s, "size"), size, sizeof size);
        printf("%-32s %-28s %-10s %llds\n", jstr(s, "id"), jstr(s, "content_type"), size, jint(s, "expires_in"));
    }
    char used[32], memory[32];
    cli__human_size((double)jint(j, "bytes"), used, sizeof used);
    cli__human_size((double)jint(j, "memory"), memory, sizeof memory);
    printf("%lld session%s, %s of %s\n", jint(j, "count"), jint(j, "count") == 1 ? "" : "s", used, memory);
    json_decref(j);
    return 0;
}

/* `session VERB ID` without a body: 0 with a filled, 1 on failure, 2 for a usage error. */
static int call_on_id(const char *method, int argc, char **argv, cli__answer *a)
{
    if (argc != 3) {
        fputs(usage, stderr);
        return 2;
    }
    char *path = session_path(argv[2], NULL);
    int rc = call(method, path, NULL, NULL, 0, a);
    free(path);
    return rc;
}

static int cmd_get(int argc, char **argv)
{
    cli__answer a;
    int rc = call_on_id("GET", argc, argv, &a);
    if (rc)
        return rc;
    fwrite(a.body, 1, a.len, stdout);
    if (isatty(STDOUT_FILENO) && strncmp(a.content_type, "application/json", 16) == 0)
        putchar('\n');
    free(a.body);
    return 0;
}

static int cmd_put(int argc, char **argv)
{
    if (argc < 3 || argv[2][0] == '-') {
        fputs(usage, stderr);
        return 2;
    }
    const char *file = NULL, *ttl = NULL, *ctype = NULL;
    int as_json = 0;
    for (int i = 3; i < argc; i++) {
        if (strcmp(argv[i], "--ttl") == 0 && i + 1 < argc)
            ttl = argv[++i];
        else if (strcmp(argv[i], "--content-type") == 0 && i + 1 < argc)
            ctype = argv[++i];
        else if (strcmp(argv[i], "--json") == 0)
            as_json = 1;
        else if (!file && (strcmp(argv[i], "-") == 0 || argv[i][0] != '-'))
            file = argv[i];
        else {
            fprintf(stderr, "corral: unknown argument '%s' for session put\n", argv[i]);
            return 2;
        }
    }
    size_t len;
    char *data;
    if (!file || strcmp(file, "-") == 0) {
        data = cli__read_body("-", &len);
    } else {
        sb at;
        sb_init(&at, strlen(file) + 2);
        sb_addc(&at, '@');
        sb_adds(&at, file);
        char *arg = sb_take(&at, NULL);
        data = cli__read_body(arg, &len);
        free(arg);
    }
    if (!data)
        return 1;
    if (!ctype) {
        json_t *probe = json_loadb(data, len, JSON_DECODE_ANY, NULL);
        ctype = probe ? "application/json" : "application/octet-stream";
        json_decref(probe);
    }
    char *path = session_path(argv[2], ttl);
    cli__answer a;
    int rc = call("PUT", path, ctype, data, len, &a);
    free(path);
    free(data);
    if (rc)
        return 1;
    rc = print_written(&a, as_json, "put");
    free(a.body);
    return rc;
}

static int cmd_patch(int argc, char **argv)
{
    if (argc < 4 || argv[2][0] == '-') {
        fputs(usage, stderr);
        return 2;
    }
    const char *ttl = NULL;
    int as_json = 0;
    for (int i = 4; i < argc; i++) {
        if (strcmp(argv[i], "--ttl") == 0 && i + 1 < argc)
            ttl = argv[++i];
        else if (strcmp(argv[i], "--json") == 0)
            as_json = 1;
        else {
            fprintf(stderr, "corral: unknown argument '%s' for session patch\n", argv[i]);
            return 2;
        }
    }
    size_t len;
    char *data = cli__read_body(argv[3], &len);
    if (!data)
        return 1;
    char *path = session_path(argv[2], ttl);
    cli__answer a;
    int rc = call("PATCH", path, "application/merge-patch+json", data, len, &a);
    free(path);
    free(data);
    if (rc)
        return 1;
    rc = print_written(&a, as_json, "patch");
    free(a.body);
    return rc;
}

static int cmd_rm(int argc, char **argv)
{
    cli__answer a;
    int rc = call_on_id("DELETE", argc, argv, &a);
    if (rc)
        return rc;
    free(a.body);
    printf("removed %s\n", argv[2]);
    return 0;
}

int cli__session(int argc, char **argv)
{
    static const struct {
        const char *verb;
        int (*fn)(int, char **);
    } verbs[] = {{"ls", cmd_ls}, {"get", cmd_get}, {"put", cmd_put}, {"patch", cmd_patch}, {"rm", cmd_rm}};
    for (size_t i = 0; argc >= 2 && i < sizeof verbs / sizeof verbs[0]; i++)
        if (strcmp(argv[1], verbs[i].verb) == 0)
            return verbs[i].fn(argc, argv);
    fputs(usage, stderr);
    return 2;
}
