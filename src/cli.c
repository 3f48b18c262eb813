/*
 * cli — client verbs over libcurl; see cli.h.
 *
 * Output is a table for people, or the daemon's JSON with --json. Any
 * failure prints one line, "corral: <reason>", and exits non-zero. Every
 * request carries $CORRAL_TOKEN as a bearer token when it is set; the
 * token itself is never printed.
 */
#include "cli.h"

#include "access.h"
#include "cli_internal.h"
#include "evstream.h"
#include "sb.h"
#include "xmalloc.h"

#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

typedef struct response {
    long status;
    sb body;
    char content_type[128];
    long long log_start;
} response;

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    sb_add(&((response *)ud)->body, p, size * n);
    return size * n;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    response *r = ud;
    size_t len = size * n;
    if (len > 13 && strncasecmp(p, "content-type:", 13) == 0) {
        size_t i = 13;
        while (i < len && p[i] == ' ')
            i++;
        size_t end = len;
        while (end > i && (p[end - 1] == '\r' || p[end - 1] == '\n'))
            end--;
        snprintf(r->content_type, sizeof r->content_type, "%.*s", (int)(end - i), p + i);
    } else if (len > 19 && strncasecmp(p, "x-corral-log-start:", 19) == 0) {
        r->log_start = atoll(p + 19);
    }
    return len;
}

static const char *base_url(void)
{
    const char *u = getenv("CORRAL_URL");
    return u && *u ? u : "http://127.0.0.1:8766";
}

/*
 * Appends "Authorization: Bearer $CORRAL_TOKEN" to headers when the token
 * is set, cleaned as the daemon cleans it (an empty one counts as unset).
 * Returns 0, or -1 after saying why the token cannot be sent.
 */
static int add_auth(struct curl_slist **headers)
{
    const char *env = getenv("CORRAL_TOKEN");
    char *token;
    int rc = env ? access_token_clean(env, strlen(env), &token) : -ENODATA;
    if (rc == -ENODATA)
        return 0;
    if (rc < 0) {
        fprintf(stderr, "corral: CORRAL_TOKEN %s\n",
                rc == -EINVAL ? "holds a control character: a token must be printable" : "is too long");
        return -1;
    }
    sb h;
    sb_init(&h, 32 + strlen(token));
    sb_adds(&h, "Authorization: Bearer ");
    sb_adds(&h, token);
    char *line = sb_take(&h, NULL);
    *headers = curl_slist_append(*headers, line); /* copies */
    free(line);
    free(token);
    return 0;
}

/*
 * A handle for one request to the daemon: the URL, the method, the body
 * (not copied: it must outlive the transfer), the token, and the headers,
 * which *headers owns and the caller frees after the transfer. accept, when
 * not NULL, is sent as the Accept header. Returns NULL after saying why.
 */
static CURL *open_request(const char *method, const char *path, const char *content_type, const char *accept,
                          const void *body, size_t len, struct curl_slist **headers)
{
    *headers = NULL;
    if (add_auth(headers) < 0)
        return NULL;
    char url[4096];
    const char *base = base_url();
    size_t blen = strlen(base);
    while (blen && base[blen - 1] == '/')
        blen--;
    snprintf(url, sizeof url, "%.*s%s", (int)blen, base, path);
    char h[256];
    if (content_type) {
        snprintf(h, sizeof h, "Content-Type: %s", content_type);
        *headers = curl_slist_append(*headers, h);
    } else {
        /* curl would label a POST form-encoded, which the daemon refuses (415) */
        *headers = curl_slist_append(*headers, "Content-Type:");
    }
    if (accept) {
        snprintf(h, sizeof h, "Accept: %s", accept);
        *headers = curl_slist_append(*headers, h);
    }
    *headers = curl_slist_append(*headers, "Expect:");
    CURL *c = curl_easy_init();
    curl_easy_setopt(c, CURLOPT_URL, url); /* copied */
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (strcmp(method, "POST") == 0 || body) { /* PUT and PATCH send theirs the same way */
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body ? body : "");
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, *headers);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    return c;
}

/* Performs a request; returns 0 or prints why it could not and returns -1. */
static int request(const char *method, const char *path, const char *content_type, const void *body, size_t len,
                   response *r)
{
    memset(r, 0, sizeof *r);
    struct curl_slist *headers;
    CURL *c = open_request(method, path, content_type, NULL, body, len, &headers);
    if (!c)
        return -1;
    sb_init(&r->body, 4096);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
    CURLcode rc = curl_easy_perform(c);
    if (rc == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    curl_slist_free_all(headers);
    curl_easy_cleanup(c);
    if (rc != CURLE_OK) {
        fprintf(stderr, "corral: cannot reach %s: %s\n", base_url(), curl_easy_strerror(rc));
        sb_free(&r->body);
        return -1;
    }
    sb_reserve(&r->body, 0);
    r->body.p[r->body.len] = 0;
    return 0;
}

/* Prints the daemon's {"error"} for a failed status; returns 1. */
static int report_failure(response *r)
{
    json_t *j = json_loadb(r->body.p, r->body.len, 0, NULL);
    const char *msg = json_string_value(json_object_get(j, "error"));
    fprintf(stderr, "corral: HTTP %ld: %s\n", r->status, msg ? msg : r->body.len ? r->body.p : "no message");
    json_decref(j);
    sb_free(&r->body);
    return 1;
}

static int call_json(const char *method, const char *path, const char *body, json_t **out)
{
    response r;
    if (request(method, path, body ? "application/json" : NULL, body, body ? strlen(body) : 0, &r) < 0)
        return 1;
    if (r.status < 200 || r.status > 299)
        return report_failure(&r);
    json_error_t err;
    *out = json_loadb(r.body.p, r.body.len, 0, &err);
    sb_free(&r.body);
    if (!*out) {
        fprintf(stderr, "corral: the daemon answered with malformed JSON: %s\n", err.text);
        return 1;
    }
    return 0;
}

static int has_flag(int argc, char **argv, const char *flag)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], flag) == 0)
            return 1;
    return 0;
}

static void print_json(json_t *j)
{
    char *s = json_dumps(j, JSON_INDENT(2));
    puts(s);
    free(s);
}

static void human_size(double bytes, char *buf, size_t len)
{
    const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (bytes >= 1024 && u < 4) {
        bytes /= 1024;
        u++;
    }
    snprintf(buf, len, u ? "%.1f%s" : "%.0f%s", bytes, units[u]);
}

static int cmd_ls(int argc, char **argv)
{
    json_t *j;
    if (call_json("GET", "/v1/models", NULL, &j))
        return 1;
    if (has_flag(argc, argv, "--json")) {
        print_json(j);
    } else {
        printf("%-24s %-10s %-9s %-6s %s\n", "NAME", "STATE", "INSTANCES", "QUEUE", "REASON");
        size_t i;
        json_t *m;
        json_array_foreach(json_object_get(j, "models"), i, m) {
            const char *reason = json_string_value(json_object_get(m, "reason"));
            printf("%-24s %-10s %-9zu %-6lld %s\n", json_string_value(json_object_get(m, "name")),
                   json_string_value(json_object_get(m, "state")), json_array_size(json_object_get(m, "instances")),
                   (long long)json_integer_value(json_object_get(m, "queue")), reason ? reason : "");
        }
    }
    json_decref(j);
    return 0;
}

static int cmd_ps(int argc, char **argv)
{
    json_t *j;
    if (call_json("GET", "/v1/models", NULL, &j))
        return 1;
    if (has_flag(argc, argv, "--json")) {
        print_json(j);
        json_decref(j);
        return 0;
    }
    printf("%-24s %-4s %-8s %-9s %-10s %-9s %-8s %s\n", "MODEL", "ID", "PID", "STATE", "UPTIME", "REQUESTS",
           "RESTARTS", "RSS");
    size_t i, k;
    json_t *m, *in;
    json_array_foreach(json_object_get(j, "models"), i, m) {
        json_array_foreach(json_object_get(m, "instances"), k, in) {
            char rss[32], pid[24] = "-";
            human_size((double)json_integer_value(json_object_get(in, "rss_bytes")), rss, sizeof rss);
            if (json_is_integer(json_object_get(in, "pid")))
                snprintf(pid, sizeof pid, "%lld", (long long)json_integer_value(json_object_get(in, "pid")));
            printf("%-24s %-4lld %-8s %-9s %-10.1f %-9lld %-8lld %s\n", json_string_value(json_object_get(m, "name")),
                   (long long)json_integer_value(json_object_get(in, "id")), pid,
                   json_string_value(json_object_get(in, "state")),
                   json_number_value(json_object_get(in, "uptime_s")),
                   (long long)json_integer_value(json_object_get(in, "requests")),
                   (long long)json_integer_value(json_object_get(in, "restarts")), rss);
        }
    }
    json_decref(j);
    return 0;
}

static int need_name(int argc, char **argv, const char *usage)
{
    if (argc < 2 || argv[1][0] == '-') {
        fprintf(stderr, "corral: usage: corral %s\n", usage);
        return -1;
    }
    return 0;
}

static int cmd_load(int argc, char **argv)
{
    if (need_name(argc, argv, "load NAME [--instances N] [--config JSON]") < 0)
        return 2;
    int instances = 0;
    const char *config = NULL;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--instances") == 0 && i + 1 < argc) {
            instances = atoi(argv[++i]);
            if (instances < 1) {
                fprintf(stderr, "corral: --instances needs a positive integer\n");
                return 2;
            }
        } else if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
            config = argv[++i]; /* the daemon checks it: one place says what a config may hold */
        } else {
            fprintf(stderr, "corral: unknown argument '%s' for load\n", argv[i]);
            return 2;
        }
    }
    /* Triton's load body: the config travels as a string of JSON (docs/api.md, "Load with a config"). */
    json_t *req = json_object();
    if (instances)
        json_object_set_new(req, "instances", json_integer(instances));
    if (config) {
        json_t *s = json_string(config);
        if (!s) {
            json_decref(req);
            fprintf(stderr, "corral: --config must be UTF-8 text\n");
            return 2;
        }
        json_object_set_new(req, "parameters", json_pack("{s:o}", "config", s));
    }
    char *body = json_object_size(req) ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    char path[512];
    snprintf(path, sizeof path, "/v2/repository/models/%s/load", argv[1]);
    json_t *j;
    int rc = call_json("POST", path, body, &j);
    free(body);
    if (rc)
        return 1;
    json_decref(j);
    printf("loaded %s\n", argv[1]);
    return 0;
}

/* A verb of one model name and no body: method on path_fmt (with the name), then "<done> NAME". */
static int name_verb(int argc, char **argv, const char *usage, const char *method, const char *path_fmt,
                     const char *done)
{
    if (need_name(argc, argv, usage) < 0)
        return 2;
    if (argc > 2) {
        fprintf(stderr, "corral: unknown argument '%s' (usage: corral %s)\n", argv[2], usage);
        return 2;
    }
    char path[512];
    snprintf(path, sizeof path, path_fmt, argv[1]);
    json_t *j;
    if (call_json(method, path, NULL, &j))
        return 1;
    json_decref(j);
    printf("%s %s\n", done, argv[1]);
    return 0;
}

static int cmd_unload(int argc, char **argv)
{
    return name_verb(argc, argv, "unload NAME", "POST", "/v2/repository/models/%s/unload", "unloaded");
}

/* corral create NAME --from BASE [--param k=v]... [--instances N] [--json]: POST /v1/models. */
static int cmd_create(int argc, char **argv)
{
    static const char usage[] = "create NAME --from BASE [--param k=v]... [--instances N] [--json]";
    if (need_name(argc, argv, usage) < 0)
        return 2;
    json_t *body = json_pack("{s:s}", "name", argv[1]);
    json_t *params = json_object();
    int json_out = 0, rc = 2;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            json_out = 1;
        } else if (strcmp(argv[i], "--from") == 0 && i + 1 < argc) {
            json_object_set_new(body, "from", json_string(argv[++i]));
        } else if (strcmp(argv[i], "--instances") == 0 && i + 1 < argc) {
            int n = atoi(argv[++i]);
            if (n < 1) {
                fprintf(stderr, "corral: --instances needs a positive integer\n");
                goto done;
            }
            json_object_set_new(body, "instances", json_integer(n));
        } else if (strcmp(argv[i], "--param") == 0 && i + 1 < argc) {
            const char *kv = argv[++i], *eq = strchr(kv, '=');
            if (!eq || eq == kv) {
                fprintf(stderr, "corral: --param needs k=v, not '%s'\n", kv);
                goto done;
            }
            /* The value as JSON when it is JSON (3, true, [1, 2], "x"), else as the text it is. */
            json_t *v = json_loads(eq + 1, JSON_DECODE_ANY, NULL);
            if (!v)
                v = json_string(eq + 1);
            if (!v) {
                fprintf(stderr, "corral: --param %.*s: the value must be UTF-8 text\n", (int)(eq - kv), kv);
                goto done;
            }
            char key[256];
            snprintf(key, sizeof key, "%.*s", (int)(eq - kv), kv);
            json_object_set_new(params, key, v);
        } else {
            fprintf(stderr, "corral: unknown argument '%s' for create (usage: corral %s)\n", argv[i], usage);
            goto done;
        }
    }
    if (!json_object_get(body, "from")) {
        fprintf(stderr, "corral: usage: corral %s (--from names the model it is a variant of)\n", usage);
        goto done;
    }
    if (json_object_size(params))
        json_object_set(body, "parameters", params);
    char *text = json_dumps(body, JSON_COMPACT);
    json_t *j;
    rc = call_json("POST", "/v1/models", text, &j);
    free(text);
    if (rc)
        goto done;
    if (json_out)
        print_json(j);
    else
        printf("created %s from %s\n", argv[1], json_string_value(json_object_get(body, "from")));
    json_decref(j);
done:
    json_decref(params);
    json_decref(body);
    return rc;
}

static int cmd_delete(int argc, char **argv)
{
    return name_verb(argc, argv, "delete NAME", "DELETE", "/v1/models/%s", "deleted");
}

static int cmd_scale(int argc, char **argv)
{
    if (argc < 3 || need_name(argc, argv, "scale NAME N") < 0) {
        fprintf(stderr, "corral: usage: corral scale NAME N\n");
        return 2;
    }
    char path[512], body[64];
    snprintf(path, sizeof path, "/v1/models/%s/scale", argv[1]);
    snprintf(body, sizeof body, "{\"instances\":%d}", atoi(argv[2]));
    json_t *j;
    if (call_json("POST", path, body, &j))
        return 1;
    if (has_flag(argc, argv, "--json"))
        print_json(j);
    else
        printf("scaled %s to %d instances\n", argv[1], atoi(argv[2]));
    json_decref(j);
    return 0;
}

/* A body given as literal text, @FILE, or - for standard input. */
static char *read_body(const char *arg, size_t *len)
{
    sb b;
    sb_init(&b, 4096);
    if (strcmp(arg, "-") == 0 || arg[0] == '@') {
        FILE *f = strcmp(arg, "-") == 0 ? stdin : fopen(arg + 1, "rb");
        if (!f) {
            fprintf(stderr, "corral: cannot open %s: %s\n", arg + 1, strerror(errno));
            sb_free(&b);
            return NULL;
        }
        size_t n;
        while ((n = fread(sb_reserve(&b, 65536), 1, 65536, f)) > 0)
            b.len += n;
        if (f != stdin)
            fclose(f);
    } else {
        sb_adds(&b, arg);
    }
    return sb_take(&b, len);
}

static int cmd_infer(int argc, char **argv)
{
    if (argc < 3 || need_name(argc, argv, "infer NAME JSON|@FILE|-") < 0) {
        fprintf(stderr, "corral: usage: corral infer NAME JSON|@FILE|-   (a v2 inference request)\n");
        return 2;
    }
    size_t len;
    char *body = read_body(argv[2], &len);
    if (!body)
        return 1;
    char path[512];
    snprintf(path, sizeof path, "/v2/models/%s/infer", argv[1]);
    response r;
    int rc = request("POST", path, "application/json", body, len, &r);
    free(body);
    if (rc < 0)
        return 1;
    if (r.status != 200)
        return report_failure(&r);
    json_t *j = json_loadb(r.body.p, r.body.len, 0, NULL);
    if (j)
        print_json(j);
    else
        fwrite(r.body.p, 1, r.body.len, stdout);
    json_decref(j);
    sb_free(&r.body);
    return 0;
}

/* ---- generate ---- */

#define GENERATE_USAGE                                                                                                \
    "generate NAME (JSON|@FILE|- | --text TEXT) [--voice V] [--rate N] [--session ID] [--stream] [-o FILE]"

typedef struct gen_args {
    const char *model;
    const char *input; /* JSON|@FILE|-, or NULL */
    const char *out;   /* -o FILE, or NULL for stdout */
    const char *text, *voice, *session;
    long long rate; /* 0: not given */
    int stream;
} gen_args;

/* Parses --rate: a positive decimal integer, nothing else. */
static int parse_rate(const char *s, long long *rate)
{
    if (*s < '0' || *s > '9')
        return -1;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || v < 1 || v > INT_MAX)
        return -1;
    *rate = v;
    return 0;
}

/* Returns 0, or 2 after a usage message. */
static int parse_generate(int argc, char **argv, gen_args *a)
{
    memset(a, 0, sizeof *a);
    if (argc < 2 || argv[1][0] == '-') {
        fprintf(stderr, "corral: usage: corral " GENERATE_USAGE "\n");
        return 2;
    }
    a->model = argv[1];
    const char *rate = NULL;
    for (int i = 2; i < argc; i++) {
        const char *arg = argv[i], **value;
        if (strcmp(arg, "-o") == 0 || strcmp(arg, "--output") == 0)
            value = &a->out;
        else if (strcmp(arg, "--text") == 0)
            value = &a->text;
        else if (strcmp(arg, "--voice") == 0)
            value = &a->voice;
        else if (strcmp(arg, "--session") == 0)
            value = &a->session;
        else if (strcmp(arg, "--rate") == 0)
            value = &rate;
        else if (strcmp(arg, "--stream") == 0) {
            a->stream = 1;
            continue;
        } else if (arg[0] == '-' && arg[1]) {
            fprintf(stderr, "corral: unknown option '%s' for generate (usage: corral " GENERATE_USAGE ")\n", arg);
            return 2;
        } else if (!a->input) {
            a->input = arg;
            continue;
        } else {
            fprintf(stderr, "corral: unknown argument '%s' for generate\n", arg);
            return 2;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "corral: %s needs a value (usage: corral " GENERATE_USAGE ")\n", arg);
            return 2;
        }
        *value = argv[++i];
    }
    if (rate && parse_rate(rate, &a->rate) < 0) {
        fprintf(stderr, "corral: --rate needs a positive integer (words per minute), not '%s'\n", rate);
        return 2;
    }
    if (!a->input && !a->text) {
        fprintf(stderr, "corral: usage: corral " GENERATE_USAGE "\n");
        return 2;
    }
    return 0;
}

/* Sets key to a string given on the command line; -1 after saying why it cannot be JSON. */
static int set_string(json_t *obj, const char *key, const char *flag, const char *value)
{
    json_t *v = json_string(value);
    if (!v) {
        fprintf(stderr, "corral: %s is not valid UTF-8, which a JSON string must be\n", flag);
        return -1;
    }
    json_object_set_new(obj, key, v);
    return 0;
}

/*
 * The request body. The argument goes as it is unless a flag sets a key of
 * it: --text, --voice and --rate set "text", "voice" and "rate" (the
 * tts-espeak example's keys), --session sets "session" (the session the
 * request carries, docs/sessions.md) and --stream sets "stream": true, in the
 * argument's JSON object (the flags win over its keys) or in a new one.
 * --stream on a body that is not a JSON object leaves it as it is, and the
 * Accept header alone asks for the stream. Returns 0, -EINVAL after a
 * usage message, or -EIO after saying why the body cannot be read.
 */
static int generate_body(const gen_args *a, char **body, size_t *len)
{
    char *raw = NULL;
    size_t raw_len = 0;
    if (a->input && !(raw = read_body(a->input, &raw_len)))
        return -EIO;
    const char *key_flag = a->text      ? "--text"
                           : a->voice   ? "--voice"
                           : a->rate    ? "--rate"
                           : a->session ? "--session"
                                        : NULL;
    if (!key_flag && !a->stream) {
        *body = raw;
        *len = raw_len;
        return 0;
    }
    json_t *obj = raw ? json_loadb(raw, raw_len, 0, NULL) : json_object();
    if (!json_is_object(obj)) {
        json_decref(obj);
        if (key_flag) {
            fprintf(stderr, "corral: %s sets a key of a JSON object, and the body %s is not one\n", key_flag,
                    strcmp(a->input, "-") == 0 ? "from standard input" : a->input[0] == '@' ? "in the file" : "given");
            free(raw);
            return -EINVAL;
        }
        *body = raw;
        *len = raw_len;
        return 0;
    }
    free(raw);
    if ((a->text && set_string(obj, "text", "--text", a->text) < 0) ||
        (a->voice && set_string(obj, "voice", "--voice", a->voice) < 0) ||
        (a->session && set_string(obj, "session", "--session", a->session) < 0)) {
        json_decref(obj);
        return -EINVAL;
    }
    if (a->rate)
        json_object_set_new(obj, "rate", json_integer(a->rate));
    if (a->stream)
        json_object_set_new(obj, "stream", json_true());
    *body = json_dumps(obj, JSON_COMPACT);
    *len = strlen(*body);
    json_decref(obj);
    return 0;
}

/* The whole answer, to FILE or stdout. */
static int generate_whole(const gen_args *a, const char *path, const char *body, size_t len)
{
    response r;
    if (request("POST", path, "application/json", body, len, &r) < 0)
        return 1;
    if (r.status != 200)
        return report_failure(&r);
    FILE *f = a->out ? fopen(a->out, "wb") : stdout;
    if (!f) {
        fprintf(stderr, "corral: cannot write %s: %s\n", a->out, strerror(errno));
        sb_free(&r.body);
        return 1;
    }
    fwrite(r.body.p, 1, r.body.len, f);
    if (a->out) {
        fclose(f);
        fprintf(stderr, "wrote %zu bytes (%s) to %s\n", r.body.len, r.content_type, a->out);
    }
    sb_free(&r.body);
    return 0;
}

/* What a streamed answer turned out to be, decided at its first byte (gen_begin). */
typedef enum gen_kind { GEN_PENDING, GEN_FAILED, GEN_EVENTS, GEN_BYTES } gen_kind;

/* The most of a failed answer's body kept for its one-line reason. */
#define GEN_ERROR_BODY_MAX 65536

/* One streamed answer, handled as it arrives: nothing of it is kept but a failed answer's body. */
typedef struct gen_stream {
    const gen_args *args; /* not owned */
    CURL *curl;           /* not owned: the transfer this reads */
    response r;           /* the content type; the body of a failed answer */
    gen_kind kind;
    evstream ev;       /* GEN_EVENTS */
    FILE *out;         /* stdout, or -o FILE (owned); NULL until the answer is known to be a stream */
    size_t bytes;      /* written to out */
    size_t printed;    /* events printed */
    char *error;       /* the message of an {"error"} event, which ends the stream; owned */
    char stop[640];    /* why the client stopped reading, when it did */
} gen_stream;

/* Whether a Content-Type names type, parameters aside. */
static int media_is(const char *ct, const char *type)
{
    size_t n = strlen(type);
    return strncasecmp(ct, type, n) == 0 && (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ');
}

/* Whether bytes of this type can go to a terminal: text, and JSON or XML. */
static int media_is_text(const char *ct)
{
    const char *semi = strchr(ct, ';');
    size_t n = semi ? (size_t)(semi - ct) : strlen(ct);
    while (n && ct[n - 1] == ' ')
        n--;
    if (strncasecmp(ct, "text/", 5) == 0)
        return 1;
    static const char *const ends[] = {"/json", "+json", "/xml", "+xml", "/x-ndjson"};
    for (size_t i = 0; i < sizeof ends / sizeof ends[0]; i++) {
        size_t k = strlen(ends[i]);
        if (n >= k && strncasecmp(ct + n - k, ends[i], k) == 0)
            return 1;
    }
    return 0;
}

static int gen_write(gen_stream *g, const char *p, size_t len)
{
    if ((len && fwrite(p, 1, len, g->out) != len) || fflush(g->out) != 0) {
        snprintf(g->stop, sizeof g->stop, "cannot write %s: %s", g->args->out ? g->args->out : "standard output",
                 strerror(errno));
        return -1;
    }
    g->bytes += len;
    return 0;
}

/*
 * One event: its JSON goes out on a line of its own at once. Data of
 * several lines is JSON written across lines: it is printed compact, on one.
 * An object {"error": "..."} is how the daemon ends a stream that failed.
 */
static int on_event(void *data, const char *event, size_t len)
{
    gen_stream *g = data;
    json_t *j = json_loadb(event, len, JSON_DECODE_ANY, NULL);
    const char *msg = json_object_size(j) == 1 ? json_string_value(json_object_get(j, "error")) : NULL;
    if (msg) {
        g->error = xstrdup(msg);
        json_decref(j);
        return 1;
    }
    char *line = j && memchr(event, '\n', len) ? json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    json_decref(j);
    if (line) {
        event = line;
        len = strlen(line);
    }
    int rc = gen_write(g, event, len) < 0 || gen_write(g, "\n", 1) < 0 ? -1 : 0;
    free(line);
    if (rc == 0)
        g->printed++;
    return rc;
}

/* The answer's first byte, or its end if it had none: what it is, and where it goes. -1 stops it. */
static int gen_begin(gen_stream *g)
{
    const gen_args *a = g->args;
    curl_easy_getinfo(g->curl, CURLINFO_RESPONSE_CODE, &g->r.status);
    const char *ct = g->r.content_type;
    if (g->r.status < 200 || g->r.status > 299) {
        g->kind = GEN_FAILED;
        return 0;
    }
    int sse = media_is(ct, "text/event-stream");
    g->kind = sse || media_is(ct, "application/x-ndjson") ? GEN_EVENTS : GEN_BYTES;
    if (g->kind == GEN_EVENTS)
        evstream_init(&g->ev, sse ? EVSTREAM_SSE : EVSTREAM_NDJSON, on_event, g);
    if (g->kind == GEN_BYTES && !a->out && isatty(STDOUT_FILENO) && !media_is_text(ct)) {
        snprintf(g->stop, sizeof g->stop,
                 "model '%s' answers %s, which a terminal cannot show: use -o FILE, or send stdout to a file or a "
                 "pipe",
                 a->model, *ct ? ct : "bytes of no stated type");
        return -1;
    }
    g->out = a->out ? fopen(a->out, "wb") : stdout;
    if (!g->out) {
        snprintf(g->stop, sizeof g->stop, "cannot write %s: %s", a->out, strerror(errno));
        return -1;
    }
    return 0;
}

static size_t on_stream_body(char *p, size_t size, size_t n, void *ud)
{
    gen_stream *g = ud;
    size_t len = size * n;
    if (g->kind == GEN_PENDING && gen_begin(g) < 0)
        return 0; /* anything but len stops the transfer, and the daemon cancels the model */
    switch (g->kind) {
    case GEN_FAILED:
        sb_add(&g->r.body, p, len < GEN_ERROR_BODY_MAX - g->r.body.len ? len : GEN_ERROR_BODY_MAX - g->r.body.len);
        return len;
    case GEN_EVENTS: {
        int rc = evstream_feed(&g->ev, p, len);
        if (rc < 0 && !g->stop[0])
            snprintf(g->stop, sizeof g->stop, "model '%s' sent an event %s", g->args->model,
                     rc == -EMSGSIZE ? "larger than the client takes (256 MiB)" : "too large for the memory at hand");
        return rc ? 0 : len;
    }
    case GEN_BYTES:
        return gen_write(g, p, len) < 0 ? 0 : len;
    case GEN_PENDING:
        break;
    }
    return 0; /* can't happen: gen_begin decided the kind */
}

/* Says what came of a streamed answer; returns the exit status. */
static int gen_finish(gen_stream *g, CURLcode rc)
{
    const gen_args *a = g->args;
    size_t count = g->kind == GEN_EVENTS ? g->printed : g->bytes;
    const char *unit = g->kind == GEN_EVENTS ? (count == 1 ? "event" : "events") : count == 1 ? "byte" : "bytes";
    if (g->error) {
        fprintf(stderr, "corral: the stream failed after %zu event%s: %s\n", g->printed, g->printed == 1 ? "" : "s",
                g->error);
        return 1;
    }
    if (g->stop[0]) {
        fprintf(stderr, "corral: %s\n", g->stop);
        return 1;
    }
    if (rc != CURLE_OK && g->kind == GEN_PENDING && !g->r.status) {
        fprintf(stderr, "corral: cannot reach %s: %s\n", base_url(), curl_easy_strerror(rc));
        return 1;
    }
    if (g->kind == GEN_FAILED || (g->r.status && (g->r.status < 200 || g->r.status > 299))) {
        sb_reserve(&g->r.body, 0);
        g->r.body.p[g->r.body.len] = 0;
        return report_failure(&g->r); /* frees the body, and a second sb_free is harmless */
    }
    int cut = rc != CURLE_OK;
    if (!cut && g->kind == GEN_EVENTS && evstream_end(&g->ev) == -EPIPE)
        cut = 1;
    if (g->out && g->out != stdout) {
        FILE *f = g->out;
        g->out = NULL;
        if (fclose(f) != 0 && !cut) {
            fprintf(stderr, "corral: cannot write %s: %s\n", a->out, strerror(errno));
            return 1;
        }
    }
    if (cut) {
        fprintf(stderr, "corral: the stream from model '%s' broke off after %zu %s%s%s%s: %s\n", a->model, count,
                unit, a->out ? " (" : "", a->out ? a->out : "", a->out ? " is incomplete)" : "",
                rc != CURLE_OK ? curl_easy_strerror(rc) : "it ended in the middle of an event");
        return 1;
    }
    if (a->out)
        fprintf(stderr, "wrote %zu %s (%s) to %s\n", count, unit, *g->r.content_type ? g->r.content_type : "no type",
                a->out);
    return 0;
}

/* The answer as it arrives: events printed one per line, bytes written as they come. */
static int generate_stream(const gen_args *a, const char *path, const char *body, size_t len)
{
    gen_stream g = {.args = a};
    struct curl_slist *headers;
    g.curl = open_request("POST", path, "application/json", "text/event-stream", body, len, &headers);
    if (!g.curl)
        return 1;
    sb_init(&g.r.body, 256);
    curl_easy_setopt(g.curl, CURLOPT_WRITEFUNCTION, on_stream_body);
    curl_easy_setopt(g.curl, CURLOPT_WRITEDATA, &g);
    curl_easy_setopt(g.curl, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(g.curl, CURLOPT_HEADERDATA, &g.r);
    CURLcode rc = curl_easy_perform(g.curl);
    if (rc == CURLE_OK && g.kind == GEN_PENDING)
        gen_begin(&g); /* an answer without a body: an empty stream, or an empty file */
    else if (g.kind == GEN_PENDING)
        curl_easy_getinfo(g.curl, CURLINFO_RESPONSE_CODE, &g.r.status);
    int status = gen_finish(&g, rc);
    if (g.out && g.out != stdout)
        fclose(g.out);
    if (g.kind == GEN_EVENTS)
        evstream_close(&g.ev);
    free(g.error);
    sb_free(&g.r.body);
    curl_slist_free_all(headers);
    curl_easy_cleanup(g.curl);
    return status;
}

static int cmd_generate(int argc, char **argv)
{
    gen_args a;
    int rc = parse_generate(argc, argv, &a);
    if (rc)
        return rc;
    char *body;
    size_t len;
    if ((rc = generate_body(&a, &body, &len)) < 0)
        return rc == -EINVAL ? 2 : 1;
    char path[512];
    snprintf(path, sizeof path, "/v1/models/%s/generate", a.model);
    rc = a.stream ? generate_stream(&a, path, body, len) : generate_whole(&a, path, body, len);
    free(body);
    return rc;
}

static int cmd_logs(int argc, char **argv)
{
    if (need_name(argc, argv, "logs NAME [-f]") < 0)
        return 2;
    int follow = has_flag(argc, argv, "-f") || has_flag(argc, argv, "--follow");
    char path[512];
    snprintf(path, sizeof path, "/v1/models/%s/logs", argv[1]);
    long long printed = 0; /* bytes of the whole log stream printed so far */
    for (;;) {
        response r;
        if (request("GET", path, NULL, NULL, 0, &r) < 0)
            return 1;
        if (r.status != 200)
            return report_failure(&r);
        long long end = r.log_start + (long long)r.body.len;
        long long from = printed > r.log_start ? printed - r.log_start : 0;
        if (end > printed) {
            fwrite(r.body.p + from, 1, r.body.len - (size_t)from, stdout);
            fflush(stdout);
            printed = end;
        }
        sb_free(&r.body);
        if (!follow)
            return 0;
        usleep(500000);
    }
}

/* ---- events ---- */

#define EVENTS_USAGE "events [--json] [--since ID]"
/* The daemon writes at least a keep-alive comment every 15 s: this long without a byte, it is gone. */
#define EVENTS_SILENCE_S 45L

/* One tail of /v1/events, printed as it arrives. */
typedef struct ev_tail {
    int json;        /* --json: one object per line; else a table for people */
    CURL *curl;      /* not owned: the transfer this reads */
    response r;      /* the content type; the body of a failed answer */
    int begun;       /* the answer's first byte came: its status is known */
    int failed;      /* the answer is an error, its body collected for report_failure */
    int streaming;   /* ev is set up: the answer is an event stream */
    evstream ev;     /* while streaming */
    size_t printed;  /* events printed */
    char last_id[32];  /* the newest event's id, for a --since that resumes */
    char dropped[256]; /* why the daemon ended the stream, when it said so */
    char stop[640];    /* why the client stopped reading, when it did */
} ev_tail;

/* Appends s with its control characters as '?': what a worker said must not steer the terminal. */
static void add_printable(sb *out, const char *s)
{
    for (; s && *s; s++)
        sb_addc(out, (unsigned char)*s < 0x20 || *s == 0x7f ? '?' : *s);
}

static const char *jstr(json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

static long long jint(json_t *o, const char *key)
{
    return (long long)json_integer_value(json_object_get(o, key));
}

/* The table's columns: the widths of ID, TIME, EVENT, MODEL and INST; DETAIL takes the rest. */
enum { EV_COL_ID = 6, EV_COL_TIME = 24, EV_COL_EVENT = 19, EV_COL_MODEL = 16, EV_COL_INST = 4 };

/* A column: text, printable, then spaces to width and one more (a longer text pushes the rest right). */
static void add_column(sb *out, const char *text, size_t width)
{
    size_t start = out->len;
    add_printable(out, text);
    do
        sb_addc(out, ' ');
    while (out->len - start < width + 1);
}

/* What a person wants to know of an event beyond its kind, model and instance. */
static void event_detail(const char *kind, json_t *d, sb *out)
{
    char a[32], b[32];
    size_t start = out->len;
    if (json_is_integer(json_object_get(d, "pid")))
        sb_printf(out, "pid %lld", jint(d, "pid"));
    const char *sep = out->len > start ? ", " : "";
    if (strncmp(kind, "model.", 6) == 0 && jstr(d, "from") && jstr(d, "state")) {
        sb_printf(out, "%s%s -> %s", sep, jstr(d, "from"), jstr(d, "state"));
        if (jstr(d, "reason")) {
            sb_adds(out, ": ");
            add_printable(out, jstr(d, "reason"));
        }
    } else if (strcmp(kind, "model.created") == 0) {
        sb_printf(out, "%sfrom ", sep);
        add_printable(out, jstr(d, "base") ? jstr(d, "base") : "?");
    } else if (strcmp(kind, "model.scaled") == 0) {
        sb_printf(out, "%s%lld -> %lld instances (by ", sep, jint(d, "from"), jint(d, "to"));
        add_printable(out, jstr(d, "by") ? jstr(d, "by") : "?");
        sb_addc(out, ')');
    } else if (strcmp(kind, "pull") == 0) {
        human_size((double)jint(d, "bytes"), a, sizeof a);
        sb_printf(out, "%s%s, %s", sep, jstr(d, "state") ? jstr(d, "state") : "?", a);
        if (json_is_integer(json_object_get(d, "total"))) {
            human_size((double)jint(d, "total"), b, sizeof b);
            sb_printf(out, " of %s", b);
        }
        if (jstr(d, "error")) {
            sb_adds(out, ": ");
            add_printable(out, jstr(d, "error"));
        }
    } else if (strcmp(kind, "instance.started") == 0) {
        /* the pid is all there is to say */
    } else if (strcmp(kind, "instance.ready") == 0) {
        sb_printf(out, "%sloaded in %lld ms", sep, jint(d, "load_ms"));
    } else if (strcmp(kind, "instance.exited") == 0) {
        /* why is exit and then, after ": ", what the worker said last */
        const char *exit = jstr(d, "exit"), *why = jstr(d, "why");
        size_t n = exit ? strlen(exit) : 0;
        sb_adds(out, sep);
        add_printable(out, exit ? exit : why ? why : "exited");
        if (json_is_false(json_object_get(d, "expected")))
            sb_adds(out, ", unexpected");
        if (exit && why && strncmp(why, exit, n) == 0 && strncmp(why + n, ": ", 2) == 0) {
            sb_adds(out, " - ");
            add_printable(out, why + n + 2);
        }
    } else if (strcmp(kind, "instance.restarting") == 0) {
        sb_printf(out, "%srestarting in %lld ms (", sep, jint(d, "delay_ms"));
        add_printable(out, jstr(d, "cause") ? jstr(d, "cause") : "?");
        sb_addc(out, ')');
    } else if (strcmp(kind, "instance.killed") == 0) {
        sb_adds(out, sep);
        sb_adds(out, "killed (");
        add_printable(out, jstr(d, "cause") ? jstr(d, "cause") : "?");
        sb_addc(out, ')');
        if (json_is_integer(json_object_get(d, "request")))
            sb_printf(out, ": request %lld", jint(d, "request"));
        if (json_is_integer(json_object_get(d, "rss_bytes"))) {
            human_size((double)jint(d, "rss_bytes"), a, sizeof a);
            human_size((double)jint(d, "limit_bytes"), b, sizeof b);
            sb_printf(out, ": %s resident, the limit is %s", a, b);
        }
        if (jstr(d, "why")) {
            sb_adds(out, ": ");
            add_printable(out, jstr(d, "why"));
        }
    } else {
        /* A kind this client does not know: the fields the columns leave out, as they came. */
        json_t *rest = json_deep_copy(d);
        static const char *const shown[] = {"time", "model", "instance", "pid"};
        for (size_t i = 0; i < sizeof shown / sizeof shown[0]; i++)
            json_object_del(rest, shown[i]);
        if (json_object_size(rest)) {
            char *text = json_dumps(rest, JSON_COMPACT);
            sb_adds(out, sep);
            add_printable(out, text);
            free(text);
        }
        json_decref(rest);
    }
}

/* Writes a line and flushes it, so a pipe gets each event as it comes; -1 after noting why it cannot. */
static int ev_write(ev_tail *t, const char *line, size_t len)
{
    if (fwrite(line, 1, len, stdout) != len || fflush(stdout) != 0) {
        snprintf(t->stop, sizeof t->stop, "cannot write standard output: %s", strerror(errno));
        return -1;
    }
    return 0;
}

static int on_daemon_event(void *ud, const char *text, size_t len)
{
    ev_tail *t = ud;
    snprintf(t->last_id, sizeof t->last_id, "%s", t->ev.last_id);
    json_t *data = json_loadb(text, len, JSON_DECODE_ANY, NULL);
    if (!data)
        data = json_stringn(text, len); /* not JSON: kept as the text it is */
    if (!data)
        data = json_string("(not UTF-8)");
    sb line;
    sb_init(&line, 256);
    if (t->json) {
        const char *id = t->ev.last_id;
        size_t n = strspn(id, "0123456789");
        json_t *jid = !*id ? json_null() : id[n] || n > 18 ? json_string(id) : json_integer(atoll(id));
        json_t *o = json_pack("{s:o?,s:s,s:O}", "id", jid, "event", t->ev.event_type, "data", data);
        char *s = o ? json_dumps(o, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
        sb_adds(&line, s ? s : "{}");
        free(s);
        json_decref(o);
    } else {
        json_t *d = json_is_object(data) ? data : NULL;
        char inst[24] = "-";
        if (json_is_integer(json_object_get(d, "instance")))
            snprintf(inst, sizeof inst, "%lld", jint(d, "instance"));
        add_column(&line, *t->ev.last_id ? t->ev.last_id : "-", EV_COL_ID);
        add_column(&line, jstr(d, "time") ? jstr(d, "time") : "-", EV_COL_TIME);
        add_column(&line, t->ev.event_type, EV_COL_EVENT);
        add_column(&line, jstr(d, "model") ? jstr(d, "model") : "-", EV_COL_MODEL);
        add_column(&line, inst, EV_COL_INST);
        if (d)
            event_detail(t->ev.event_type, d, &line);
        else
            add_printable(&line, json_string_value(data));
        while (line.len && line.p[line.len - 1] == ' ')
            line.len--;
    }
    json_decref(data);
    sb_addc(&line, '\n');
    int rc = ev_write(t, line.p, line.len);
    sb_free(&line);
    if (rc == 0)
        t->printed++;
    return rc;
}

/* The daemon's comments: a keep-alive, or why it ends this stream. */
static int on_daemon_comment(void *ud, const char *text, size_t len)
{
    ev_tail *t = ud;
    (void)len;
    if (strncmp(text, "events were lost", 16) == 0)
        snprintf(t->dropped, sizeof t->dropped, "%s", text);
    return 0;
}

/* The answer's first byte: a stream to print, or an error to collect. -1 stops it. */
static int ev_begin(ev_tail *t)
{
    t->begun = 1;
    curl_easy_getinfo(t->curl, CURLINFO_RESPONSE_CODE, &t->r.status);
    if (t->r.status < 200 || t->r.status > 299) {
        t->failed = 1;
        return 0;
    }
    if (!media_is(t->r.content_type, "text/event-stream")) {
        snprintf(t->stop, sizeof t->stop, "%s/v1/events answered %s, not an event stream", base_url(),
                 *t->r.content_type ? t->r.content_type : "bytes of no stated type");
        return -1;
    }
    evstream_init(&t->ev, EVSTREAM_SSE, on_daemon_event, t);
    t->ev.on_comment = on_daemon_comment;
    t->streaming = 1;
    if (!t->json) {
        sb head;
        sb_init(&head, 128);
        add_column(&head, "ID", EV_COL_ID);
        add_column(&head, "TIME", EV_COL_TIME);
        add_column(&head, "EVENT", EV_COL_EVENT);
        add_column(&head, "MODEL", EV_COL_MODEL);
        add_column(&head, "INST", EV_COL_INST);
        sb_adds(&head, "DETAIL\n");
        int rc = ev_write(t, head.p, head.len);
        sb_free(&head);
        return rc;
    }
    return 0;
}

static size_t on_events_body(char *p, size_t size, size_t n, void *ud)
{
    ev_tail *t = ud;
    size_t len = size * n;
    if (!t->begun && ev_begin(t) < 0)
        return 0;
    if (!t->streaming) {
        sb_add(&t->r.body, p, len < GEN_ERROR_BODY_MAX - t->r.body.len ? len : GEN_ERROR_BODY_MAX - t->r.body.len);
        return len;
    }
    int rc = evstream_feed(&t->ev, p, len);
    if (rc < 0 && !t->stop[0])
        snprintf(t->stop, sizeof t->stop, "the daemon sent an event %s",
                 rc == -EMSGSIZE ? "larger than the client takes (256 MiB)" : "too large for the memory at hand");
    return rc ? 0 : len;
}

/* Says how the tail ended; returns the exit status. */
static int ev_finish(ev_tail *t, CURLcode rc)
{
    if (t->stop[0]) {
        fprintf(stderr, "corral: %s\n", t->stop);
        return 1;
    }
    if (!t->begun && rc != CURLE_OK) {
        fprintf(stderr, "corral: cannot reach %s: %s\n", base_url(), curl_easy_strerror(rc));
        return 1;
    }
    if (!t->begun || t->failed) {
        if (!t->begun)
            curl_easy_getinfo(t->curl, CURLINFO_RESPONSE_CODE, &t->r.status);
        sb_reserve(&t->r.body, 0);
        t->r.body.p[t->r.body.len] = 0;
        if (t->r.status >= 200 && t->r.status <= 299) {
            fprintf(stderr, "corral: %s/v1/events answered with no stream at all\n", base_url());
            return 1;
        }
        return report_failure(&t->r);
    }
    char resume[96] = "";
    if (t->last_id[0])
        snprintf(resume, sizeof resume, " (resume with corral events --since %s)", t->last_id);
    if (rc == CURLE_OK && t->dropped[0]) {
        fprintf(stderr, "corral: the daemon ended the stream after %zu event%s: %s%s\n", t->printed,
                t->printed == 1 ? "" : "s", t->dropped, resume);
        return 1;
    }
    if (rc == CURLE_OK && evstream_end(&t->ev) == 0)
        return 0; /* the daemon ended the stream: it is stopping */
    fprintf(stderr, "corral: the event stream from %s broke off after %zu event%s%s: %s\n", base_url(), t->printed,
            t->printed == 1 ? "" : "s", resume,
            rc == CURLE_OPERATION_TIMEDOUT ? "nothing came from the daemon for 45 s, not even a keep-alive"
            : rc != CURLE_OK               ? curl_easy_strerror(rc)
                                           : "it ended in the middle of an event");
    return 1;
}

/* Whether s is an event id the daemon could have sent: a decimal number. */
static int is_event_id(const char *s)
{
    size_t n = strspn(s, "0123456789");
    return n && !s[n] && n <= 20;
}

static int cmd_events(int argc, char **argv)
{
    ev_tail t = {0};
    const char *since = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            t.json = 1;
        } else if (strcmp(argv[i], "--since") == 0) {
            if (i + 1 >= argc || !is_event_id(argv[i + 1])) {
                fprintf(stderr, "corral: --since needs an event id, a decimal number (usage: corral " EVENTS_USAGE
                                ")\n");
                return 2;
            }
            since = argv[++i];
        } else {
            fprintf(stderr, "corral: unknown argument '%s' for events (usage: corral " EVENTS_USAGE ")\n", argv[i]);
            return 2;
        }
    }
    struct curl_slist *headers;
    t.curl = open_request("GET", "/v1/events", NULL, "text/event-stream", NULL, 0, &headers);
    if (!t.curl)
        return 1;
    if (since) {
        char h[64];
        snprintf(h, sizeof h, "Last-Event-ID: %s", since);
        headers = curl_slist_append(headers, h);
        curl_easy_setopt(t.curl, CURLOPT_HTTPHEADER, headers);
    }
    sb_init(&t.r.body, 256);
    curl_easy_setopt(t.curl, CURLOPT_WRITEFUNCTION, on_events_body);
    curl_easy_setopt(t.curl, CURLOPT_WRITEDATA, &t);
    curl_easy_setopt(t.curl, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(t.curl, CURLOPT_HEADERDATA, &t.r);
    curl_easy_setopt(t.curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(t.curl, CURLOPT_LOW_SPEED_TIME, EVENTS_SILENCE_S);
    CURLcode rc = curl_easy_perform(t.curl);
    int status = ev_finish(&t, rc);
    if (t.streaming)
        evstream_close(&t.ev);
    sb_free(&t.r.body);
    curl_slist_free_all(headers);
    curl_easy_cleanup(t.curl);
    return status;
}

/* ---- for the client's other files (cli_internal.h) ---- */

const char *cli__base_url(void)
{
    return base_url();
}

CURL *cli__open_request(const char *method, const char *path, const char *accept, struct curl_slist **headers)
{
    return open_request(method, path, NULL, accept, NULL, 0, headers);
}

CURL *cli__open_json_post(const char *path, const char *body, size_t len, struct curl_slist **headers)
{
    return open_request("POST", path, "application/json", NULL, body, len, headers);
}

void cli__human_size(double bytes, char *buf, size_t len)
{
    human_size(bytes, buf, len);
}

int cli__report_failure(long status, const char *body, size_t len)
{
    response r = {.status = status};
    sb_init(&r.body, len + 1);
    sb_add(&r.body, body, len);
    sb_reserve(&r.body, 0);
    r.body.p[r.body.len] = 0;
    return report_failure(&r);
}

char *cli__read_body(const char *arg, size_t *len)
{
    return read_body(arg, len);
}

int cli__call(const char *method, const char *path, const char *content_type, const void *body, size_t len,
              cli__answer *out)
{
    response r;
    if (request(method, path, content_type, body, len, &r) < 0)
        return -1;
    out->status = r.status;
    snprintf(out->content_type, sizeof out->content_type, "%s", r.content_type);
    out->body = sb_take(&r.body, &out->len);
    return 0;
}

int cli_main(int argc, char **argv)
{
    static const struct {
        const char *verb;
        int (*fn)(int, char **);
    } verbs[] = {{"ls", cmd_ls},       {"ps", cmd_ps},         {"load", cmd_load},
                 {"unload", cmd_unload}, {"scale", cmd_scale}, {"infer", cmd_infer},
                 {"generate", cmd_generate}, {"logs", cmd_logs}, {"events", cmd_events},
                 {"top", cli__top}, {"pull", cli__pull}, {"session", cli__session}, {"create", cmd_create},
                 {"delete", cmd_delete}};
    for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++) {
        if (strcmp(argv[0], verbs[i].verb) == 0) {
            curl_global_init(CURL_GLOBAL_DEFAULT);
            int rc = verbs[i].fn(argc, argv);
            curl_global_cleanup();
            return rc;
        }
    }
    fprintf(stderr, "corral: unknown command '%s' (try corral --help)\n", argv[0]);
    return 2;
}
