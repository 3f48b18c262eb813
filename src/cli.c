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
    if (strcmp(method, "POST") == 0) {
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
    if (need_name(argc, argv, "load NAME [--instances N]") < 0)
        return 2;
    char body[64] = "";
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--instances") == 0 && i + 1 < argc) {
            int n = atoi(argv[++i]);
            if (n < 1) {
                fprintf(stderr, "corral: --instances needs a positive integer\n");
                return 2;
            }
            snprintf(body, sizeof body, "{\"instances\":%d}", n);
        } else {
            fprintf(stderr, "corral: unknown argument '%s' for load\n", argv[i]);
            return 2;
        }
    }
    char path[512];
    snprintf(path, sizeof path, "/v2/repository/models/%s/load", argv[1]);
    json_t *j;
    if (call_json("POST", path, body[0] ? body : NULL, &j))
        return 1;
    json_decref(j);
    printf("loaded %s\n", argv[1]);
    return 0;
}

static int cmd_unload(int argc, char **argv)
{
    if (need_name(argc, argv, "unload NAME") < 0)
        return 2;
    char path[512];
    snprintf(path, sizeof path, "/v2/repository/models/%s/unload", argv[1]);
    json_t *j;
    if (call_json("POST", path, NULL, &j))
        return 1;
    json_decref(j);
    printf("unloaded %s\n", argv[1]);
    return 0;
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
    "generate NAME (JSON|@FILE|- | --text TEXT) [--voice V] [--rate N] [--stream] [-o FILE]"

typedef struct gen_args {
    const char *model;
    const char *input; /* JSON|@FILE|-, or NULL */
    const char *out;   /* -o FILE, or NULL for stdout */
    const char *text, *voice;
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
 * tts-espeak example's keys) and --stream sets "stream": true, in the
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
    const char *key_flag = a->text ? "--text" : a->voice ? "--voice" : a->rate ? "--rate" : NULL;
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
        (a->voice && set_string(obj, "voice", "--voice", a->voice) < 0)) {
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

int cli_main(int argc, char **argv)
{
    static const struct {
        const char *verb;
        int (*fn)(int, char **);
    } verbs[] = {{"ls", cmd_ls},       {"ps", cmd_ps},         {"load", cmd_load},
                 {"unload", cmd_unload}, {"scale", cmd_scale}, {"infer", cmd_infer},
                 {"generate", cmd_generate}, {"logs", cmd_logs}};
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
