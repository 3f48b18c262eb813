/*
 * openapi — docs/openapi.yaml, embedded, served as YAML and as JSON with
 * the daemon's address and version filled in; see openapi.h.
 *
 * The conversion walks libyaml's events once and builds jansson values. The
 * same walk notes where the two scalars the daemon fills in (info.version,
 * servers[0].url) lie in the text, so the YAML answer is the document byte
 * for byte but for those two values.
 */
#include "openapi.h"

#include "http.h"
#include "xmalloc.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#define MAX_DEPTH 64

/* Where in the document a node is, as far as the two filled-in scalars care. */
enum where { AT_OTHER, AT_TOP, AT_INFO, AT_SERVERS, AT_SERVER0, AT_VERSION, AT_URL };

typedef struct span {
    size_t start, end; /* byte offsets of the scalar in the text, quotes included */
    int found;
} span;

typedef struct walk {
    yaml_parser_t parser;
    const char *text;
    size_t len;
    char *err;
    size_t errlen;
    span version, url;
    json_t *anchors; /* anchor name -> its value, for aliases */
} walk;

static int fail(walk *w, size_t line, const char *fmt, const char *what)
{
    char msg[256];
    snprintf(msg, sizeof msg, fmt, what);
    snprintf(w->err, w->errlen, "line %zu: %s", line + 1, msg);
    return -1;
}

static int next_event(walk *w, yaml_event_t *ev)
{
    if (yaml_parser_parse(&w->parser, ev))
        return 0;
    return fail(w, w->parser.problem_mark.line, "%s", w->parser.problem ? w->parser.problem : "malformed YAML");
}

static int all_digits(const char *s, size_t n)
{
    if (n && (*s == '-' || *s == '+'))
        s++, n--;
    if (!n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return 0;
    return 1;
}

/* A float as YAML 1.2's core schema writes one: [-+]?(.digits|digits[.digits])([eE][-+]?digits)? */
static int is_float(const char *s, size_t n)
{
    size_t i = 0, digits = 0;
    if (i < n && (s[i] == '-' || s[i] == '+'))
        i++;
    while (i < n && s[i] >= '0' && s[i] <= '9')
        i++, digits++;
    if (i < n && s[i] == '.')
        for (i++; i < n && s[i] >= '0' && s[i] <= '9'; i++)
            digits++;
    if (!digits)
        return 0;
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '-' || s[i] == '+'))
            i++;
        if (!(i < n && s[i] >= '0' && s[i] <= '9'))
            return 0;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
    }
    return i == n;
}

static json_t *scalar_value(walk *w, const yaml_event_t *ev)
{
    const char *v = (const char *)ev->data.scalar.value;
    size_t n = ev->data.scalar.length;
    const char *tag = (const char *)ev->data.scalar.tag;
    size_t line = ev->start_mark.line;
    if (tag && strcmp(tag, YAML_STR_TAG) != 0 && strcmp(tag, "!") != 0) {
        fail(w, line, "tag '%.100s' is not supported (only !!str)", tag);
        return NULL;
    }
    json_t *out = NULL;
    if (ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE || tag) {
        out = json_stringn(v, n);
    } else if (n == 0 || (n == 1 && *v == '~') || !strcmp(v, "null") || !strcmp(v, "Null") || !strcmp(v, "NULL")) {
        out = json_null();
    } else if (!strcmp(v, "true") || !strcmp(v, "True") || !strcmp(v, "TRUE")) {
        out = json_true();
    } else if (!strcmp(v, "false") || !strcmp(v, "False") || !strcmp(v, "FALSE")) {
        out = json_false();
    } else if (all_digits(v, n)) {
        errno = 0;
        long long i = strtoll(v, NULL, 10);
        if (errno == ERANGE) {
            fail(w, line, "integer '%.64s' is out of range", v);
            return NULL;
        }
        out = json_integer(i);
    } else if (is_float(v, n)) {
        out = json_real(strtod(v, NULL));
    } else {
        out = json_stringn(v, n);
    }
    if (!out)
        fail(w, line, "%s", "a scalar is not valid UTF-8");
    return out;
}

static json_t *node(walk *w, yaml_event_t *ev, enum where where, int depth);

static json_t *sequence(walk *w, enum where where, int depth)
{
    json_t *arr = json_array();
    for (size_t i = 0;; i++) {
        yaml_event_t ev;
        if (next_event(w, &ev) < 0)
            goto fail;
        if (ev.type == YAML_SEQUENCE_END_EVENT) {
            yaml_event_delete(&ev);
            return arr;
        }
        json_t *item = node(w, &ev, where == AT_SERVERS && i == 0 ? AT_SERVER0 : AT_OTHER, depth + 1);
        if (!item)
            goto fail;
        json_array_append_new(arr, item);
    }
fail:
    json_decref(arr);
    return NULL;
}

static enum where child_where(enum where where, const char *key)
{
    if (where == AT_TOP)
        return !strcmp(key, "info") ? AT_INFO : !strcmp(key, "servers") ? AT_SERVERS : AT_OTHER;
    if (where == AT_INFO && !strcmp(key, "version"))
        return AT_VERSION;
    if (where == AT_SERVER0 && !strcmp(key, "url"))
        return AT_URL;
    return AT_OTHER;
}

static json_t *mapping(walk *w, enum where where, int depth)
{
    json_t *obj = json_object();
    for (;;) {
        yaml_event_t ev;
        if (next_event(w, &ev) < 0)
            goto fail;
        if (ev.type == YAML_MAPPING_END_EVENT) {
            yaml_event_delete(&ev);
            return obj;
        }
        size_t line = ev.start_mark.line;
        if (ev.type != YAML_SCALAR_EVENT) {
            yaml_event_delete(&ev);
            fail(w, line, "%s", "a key must be a scalar");
            goto fail;
        }
        const char *key = (const char *)ev.data.scalar.value;
        if (strlen(key) != ev.data.scalar.length || ev.data.scalar.anchor || !strcmp(key, "<<")) {
            yaml_event_delete(&ev);
            fail(w, line, "%s", "a key holds a NUL or an anchor, or is a merge key (not supported)");
            goto fail;
        }
        if (json_object_get(obj, key)) {
            fail(w, line, "duplicate key '%.200s'", key);
            yaml_event_delete(&ev);
            goto fail;
        }
        enum where child = child_where(where, key);
        char *k = xstrdup(key);
        yaml_event_delete(&ev);
        yaml_event_t vev;
        json_t *value = next_event(w, &vev) < 0 ? NULL : node(w, &vev, child, depth + 1);
        if (!value || json_object_set_new(obj, k, value) < 0) {
            if (value)
                fail(w, line, "key '%.200s' is not valid UTF-8", k);
            free(k);
            goto fail;
        }
        free(k);
    }
fail:
    json_decref(obj);
    return NULL;
}

/* The value that starts with ev (which this deletes), or NULL with w->err set. */
static json_t *node(walk *w, yaml_event_t *ev, enum where where, int depth)
{
    size_t line = ev->start_mark.line;
    json_t *out = NULL;
    const char *anchor = NULL;
    if (depth > MAX_DEPTH) {
        fail(w, line, "nested deeper than %s levels", "64");
    } else if (ev->type == YAML_SCALAR_EVENT) {
        anchor = (const char *)ev->data.scalar.anchor;
        if ((out = scalar_value(w, ev)) && (where == AT_VERSION || where == AT_URL)) {
            span *s = where == AT_VERSION ? &w->version : &w->url;
            *s = (span){ev->start_mark.index, ev->end_mark.index, 1};
        }
    } else if (ev->type == YAML_SEQUENCE_START_EVENT) {
        anchor = (const char *)ev->data.sequence_start.anchor;
        if (ev->data.sequence_start.tag)
            fail(w, line, "%s", "tags on sequences are not supported");
        else
            out = sequence(w, where, depth);
    } else if (ev->type == YAML_MAPPING_START_EVENT) {
        anchor = (const char *)ev->data.mapping_start.anchor;
        if (ev->data.mapping_start.tag)
            fail(w, line, "%s", "tags on mappings are not supported");
        else
            out = mapping(w, where, depth);
    } else if (ev->type == YAML_ALIAS_EVENT) {
        /* The anchored value itself, shared: the tree holds it twice, its memory once. */
        const char *name = (const char *)ev->data.alias.anchor;
        out = json_incref(json_object_get(w->anchors, name));
        if (!out)
            fail(w, line, "alias '*%.100s' names no anchor before it", name);
    } else {
        fail(w, line, "%s", "unexpected YAML event");
    }
    if (out && anchor)
        json_object_set(w->anchors, anchor, out);
    yaml_event_delete(ev);
    return out;
}

/* Walks the one document of text; its value, or NULL with err set. */
static json_t *walk_document(walk *w)
{
    json_t *root = NULL;
    yaml_event_t ev;
    w->anchors = json_object();
    yaml_parser_initialize(&w->parser);
    yaml_parser_set_input_string(&w->parser, (const unsigned char *)w->text, w->len);
    for (int i = 0; i < 2; i++) { /* the stream's start, the document's start */
        if (next_event(w, &ev) < 0)
            goto done;
        int ok = ev.type == (i == 0 ? YAML_STREAM_START_EVENT : YAML_DOCUMENT_START_EVENT);
        size_t line = ev.start_mark.line;
        yaml_event_delete(&ev);
        if (!ok) {
            fail(w, line, "%s", "the text holds no YAML document");
            goto done;
        }
    }
    if (next_event(w, &ev) < 0 || !(root = node(w, &ev, AT_TOP, 0)))
        goto done;
    for (int i = 0; i < 2; i++) {
        if (next_event(w, &ev) < 0) {
            json_decref(root);
            root = NULL;
            goto done;
        }
        int ok = ev.type == (i == 0 ? YAML_DOCUMENT_END_EVENT : YAML_STREAM_END_EVENT);
        size_t line = ev.start_mark.line;
        yaml_event_delete(&ev);
        if (!ok) {
            fail(w, line, "%s", "a second YAML document follows the first");
            json_decref(root);
            root = NULL;
            goto done;
        }
    }
done:
    yaml_parser_delete(&w->parser);
    json_decref(w->anchors);
    return root;
}

json_t *openapi_yaml_to_json(const char *text, size_t len, char *err, size_t errlen)
{
    walk w = {.text = text, .len = len, .err = err, .errlen = errlen};
    return walk_document(&w);
}

/* The scalar's bytes are where libyaml says (its marks count characters: true of ASCII text only). */
static int span_checked(const walk *w, const span *s, const json_t *v, const char *path)
{
    if (!s->found || !json_is_string(v) || s->end > w->len || s->start >= s->end) {
        snprintf(w->err, w->errlen, "the document has no %s string", path);
        return -1;
    }
    const char *at = w->text + s->start;
    size_t n = s->end - s->start, vlen = json_string_length(v);
    int same = (n == vlen && memcmp(at, json_string_value(v), n) == 0) ||
               (n == vlen + 2 && (*at == '"' || *at == '\'') && memcmp(at + 1, json_string_value(v), vlen) == 0);
    if (!same) {
        snprintf(w->err, w->errlen, "%s must be a one-line ASCII scalar without escapes", path);
        return -1;
    }
    return 0;
}

char *openapi_yaml_with(const char *text, size_t len, const char *url, const char *version, size_t *out_len,
                        char *err, size_t errlen)
{
    walk w = {.text = text, .len = len, .err = err, .errlen = errlen};
    json_t *root = walk_document(&w);
    char *out = NULL, *qurl = NULL, *qver = NULL;
    if (!root ||
        span_checked(&w, &w.version, json_object_get(json_object_get(root, "info"), "version"), "info.version") < 0 ||
        span_checked(&w, &w.url, json_object_get(json_array_get(json_object_get(root, "servers"), 0), "url"),
                     "servers[0].url") < 0)
        goto done;
    json_t *su = json_string(url), *sv = json_string(version);
    qurl = su ? json_dumps(su, JSON_ENCODE_ANY) : NULL;
    qver = sv ? json_dumps(sv, JSON_ENCODE_ANY) : NULL;
    json_decref(su);
    json_decref(sv);
    if (!qurl || !qver) {
        snprintf(err, errlen, "the address or the version is not valid UTF-8");
        goto done;
    }
    /* The two spans in the order they appear. */
    const span *first = w.version.start < w.url.start ? &w.version : &w.url;
    const span *second = first == &w.version ? &w.url : &w.version;
    const char *qfirst = first == &w.version ? qver : qurl, *qsecond = first == &w.version ? qurl : qver;
    size_t n = len - (first->end - first->start) - (second->end - second->start) + strlen(qfirst) + strlen(qsecond);
    out = xmalloc(n + 1);
    char *p = out;
    memcpy(p, text, first->start), p += first->start;
    memcpy(p, qfirst, strlen(qfirst)), p += strlen(qfirst);
    memcpy(p, text + first->end, second->start - first->end), p += second->start - first->end;
    memcpy(p, qsecond, strlen(qsecond)), p += strlen(qsecond);
    memcpy(p, text + second->end, len - second->end), p += len - second->end;
    *p = '\0';
    *out_len = n;
done:
    free(qurl);
    free(qver);
    json_decref(root);
    return out;
}

/* ---- serving ---- */

static struct {
    char url[300];             /* "" until the listener is bound */
    char *json, *yaml;         /* built at the first request of each, kept */
    size_t json_len, yaml_len;
} O;

void openapi_set_server(const char *host, int port)
{
    int v6 = strchr(host, ':') != NULL;
    snprintf(O.url, sizeof O.url, "http://%s%s%s:%d", v6 ? "[" : "", host, v6 ? "]" : "", port);
}

/* Builds the document as served, once: -1 with err set when the embedded one is broken (test_openapi keeps it whole). */
static int build(int as_json, char *err, size_t errlen)
{
    const char *text = (const char *)openapi_yaml;
    const char *url = O.url[0] ? O.url : "http://127.0.0.1:8766";
    if (!as_json) {
        O.yaml = openapi_yaml_with(text, openapi_yaml_len, url, CORRAL_VERSION, &O.yaml_len, err, errlen);
        return O.yaml ? 0 : -1;
    }
    json_t *root = openapi_yaml_to_json(text, openapi_yaml_len, err, errlen);
    if (!root)
        return -1;
    json_t *info = json_object_get(root, "info"), *server = json_array_get(json_object_get(root, "servers"), 0);
    if (!json_is_object(info) || !json_is_object(server)) {
        snprintf(err, errlen, "the document has no info or servers[0]");
        json_decref(root);
        return -1;
    }
    json_object_set_new(info, "version", json_string(CORRAL_VERSION));
    json_object_set_new(server, "url", json_string(url));
    O.json = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (!O.json) {
        snprintf(err, errlen, "no memory for the document");
        return -1;
    }
    O.json_len = strlen(O.json);
    return 0;
}

int openapi_serve(h2o_req_t *req, const api_path *p)
{
    int as_json = SEG_IS(p, 0, "openapi.json");
    char err[300];
    if (!(as_json ? O.json : O.yaml) && build(as_json, err, sizeof err) < 0) {
        http_error(req, 500, 0, "the embedded OpenAPI document is broken: %s", err);
        return 0;
    }
    if (as_json)
        http_send(req, 200, "application/json", O.json, O.json_len);
    else
        http_send(req, 200, "application/yaml", O.yaml, O.yaml_len);
    return 0;
}
