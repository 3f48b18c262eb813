/*
 * Unit tests of the OpenAPI document and the route table: the embedded
 * docs/openapi.yaml is docs/openapi.yaml byte for byte and converts to JSON;
 * its paths and methods are exactly the routes api.c dispatches through
 * (a route missing from either side fails, naming it and the side); every
 * $ref resolves; the served YAML has the address and version filled in;
 * the YAML-to-JSON conversion's rules; and the route matcher.
 */
#include "api.h"
#include "openapi.h"
#include "check.h"

#include <stdlib.h>

static json_t *doc(void)
{
    char err[300] = "";
    json_t *root = openapi_yaml_to_json((const char *)openapi_yaml, openapi_yaml_len, err, sizeof err);
    if (!root)
        fprintf(stderr, "docs/openapi.yaml: %s\n", err);
    return root;
}

static void embedded_is_the_file(void)
{
    FILE *f = fopen("docs/openapi.yaml", "rb");
    CHECK(f != NULL);
    if (!f)
        return;
    char *buf = malloc(openapi_yaml_len + 2);
    size_t n = fread(buf, 1, openapi_yaml_len + 1, f);
    fclose(f);
    CHECK(n == openapi_yaml_len && memcmp(buf, openapi_yaml, n) == 0);
    CHECK(openapi_yaml[openapi_yaml_len] == '\0');
    for (size_t i = 0; i < openapi_yaml_len; i++) /* libyaml's marks count characters: ASCII keeps them bytes */
        if (openapi_yaml[i] > 0x7e || (openapi_yaml[i] < 0x20 && openapi_yaml[i] != '\n')) {
            fprintf(stderr, "docs/openapi.yaml: byte %zu is 0x%02x: the document must be printable ASCII\n", i,
                    openapi_yaml[i]);
            CHECK(0);
            break;
        }
    free(buf);
}

/* The document's key for a method bit: "get". */
static const char *method_key(unsigned bit, char *buf)
{
    const char *name = api_method_name(bit);
    size_t i = 0;
    for (; name[i]; i++)
        buf[i] = (char)(name[i] - 'A' + 'a');
    buf[i] = '\0';
    return buf;
}

/* The drift check: the table's routes and the document's operations, both ways. */
static void paths_are_the_routes(void)
{
    json_t *root = doc();
    CHECK(root != NULL);
    if (!root)
        return;
    CHECK(strcmp(json_string_value(json_object_get(root, "openapi")), "3.1.0") == 0);
    json_t *paths = json_object_get(root, "paths");
    CHECK(json_is_object(paths));
    size_t n;
    const api_route *r = api_routes(&n);
    for (size_t i = 0; i < n; i++) {
        json_t *item = json_object_get(paths, r[i].path);
        for (unsigned m = 1; m < 1u << API_METHODS; m <<= 1) {
            char key[8];
            if (!(r[i].methods & m))
                continue;
            if (!json_object_get(item, method_key(m, key))) {
                fprintf(stderr, "%s %s: the router serves it (src/api.c), docs/openapi.yaml lacks it\n",
                        api_method_name(m), r[i].path);
                CHECK(0);
            }
        }
    }
    const char *path;
    json_t *item;
    json_object_foreach(paths, path, item) {
        const api_route *route = NULL;
        for (size_t i = 0; i < n && !route; i++)
            if (strcmp(r[i].path, path) == 0)
                route = &r[i];
        const char *key;
        json_t *op;
        json_object_foreach(item, key, op) {
            static const char *const methods[] = {"get", "put", "post", "delete", "options", "head", "patch", "trace"};
            int is_method = 0;
            for (size_t k = 0; k < sizeof methods / sizeof methods[0]; k++)
                is_method |= strcmp(key, methods[k]) == 0;
            if (!is_method)
                continue;
            char upper[8] = "";
            for (size_t k = 0; key[k] && k < sizeof upper - 1; k++)
                upper[k] = (char)(key[k] - 'a' + 'A');
            unsigned bit = strcmp(key, "head") == 0 ? 0 : api_method_bit(upper, strlen(upper));
            if (!route || !(route->methods & bit)) {
                fprintf(stderr, "%s %s: docs/openapi.yaml lists it, the router (src/api.c) does not serve it\n", upper,
                        path);
                CHECK(0);
            }
            if (!json_is_object(json_object_get(op, "responses")) || !json_is_string(json_object_get(op, "operationId"))) {
                fprintf(stderr, "%s %s: an operation needs responses and an operationId\n", key, path);
                CHECK(0);
            }
        }
    }
    json_decref(root);
}

/* Every "$ref": "#/a/b" names something in the document. */
static void refs_resolve_in(json_t *root, json_t *v, int *bad)
{
    if (json_is_array(v)) {
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x) refs_resolve_in(root, x, bad);
        return;
    }
    if (!json_is_object(v))
        return;
    const char *key;
    json_t *x;
    json_object_foreach(v, key, x) {
        if (strcmp(key, "$ref") == 0 && json_is_string(x)) {
            const char *ref = json_string_value(x);
            json_t *at = strncmp(ref, "#/", 2) == 0 ? root : NULL;
            char part[128];
            for (const char *p = ref + 2; at && *p;) {
                const char *slash = strchr(p, '/');
                size_t len = slash ? (size_t)(slash - p) : strlen(p);
                snprintf(part, sizeof part, "%.*s", (int)len, p);
                at = json_object_get(at, part);
                p += len + (slash ? 1 : 0);
            }
            if (!at) {
                fprintf(stderr, "docs/openapi.yaml: $ref '%s' names nothing\n", ref);
                (*bad)++;
            }
        } else {
            refs_resolve_in(root, x, bad);
        }
    }
}

static void refs_resolve(void)
{
    json_t *root = doc();
    int bad = 0;
    refs_resolve_in(root, root, &bad);
    CHECK(root && bad == 0);
    json_decref(root);
}

static void served_yaml_has_address_and_version(void)
{
    char err[300] = "";
    size_t len = 0;
    char *y = openapi_yaml_with((const char *)openapi_yaml, openapi_yaml_len, "http://[::1]:4321", "9.8.7", &len, err,
                                sizeof err);
    CHECK(y != NULL);
    if (!y) {
        fprintf(stderr, "%s\n", err);
        return;
    }
    CHECK(strlen(y) == len);
    json_t *root = openapi_yaml_to_json(y, len, err, sizeof err);
    CHECK(root != NULL);
    CHECK(strcmp(json_string_value(json_object_get(json_object_get(root, "info"), "version")), "9.8.7") == 0);
    CHECK(strcmp(json_string_value(json_object_get(json_array_get(json_object_get(root, "servers"), 0), "url")),
                 "http://[::1]:4321") == 0);
    json_t *orig = doc();
    json_object_del(root, "info"), json_object_del(orig, "info");
    json_object_del(root, "servers"), json_object_del(orig, "servers");
    CHECK(json_equal(root, orig)); /* nothing else changed */
    json_decref(root);
    json_decref(orig);
    free(y);

    static const char no_servers[] = "openapi: 3.1.0\ninfo: {title: t, version: '1'}\npaths: {}\n";
    CHECK(openapi_yaml_with(no_servers, strlen(no_servers), "u", "v", &len, err, sizeof err) == NULL);
    CHECK_STR_CONTAINS(err, "servers[0].url");
}

static json_t *conv(const char *text, char *err, size_t errlen)
{
    err[0] = '\0';
    return openapi_yaml_to_json(text, strlen(text), err, errlen);
}

static void conversion_rules(void)
{
    char err[300];
    json_t *v = conv("a: ~\nb: null\nc: true\nd: False\ne: 42\nf: -7\ng: 1.5\nh: 2e3\ni: '200'\nj: \"true\"\n"
                     "k: 0x10\nl: hello world\nm: [1, two]\nn: {x: 1}\no: !!str 12\np: |\n  line\n  two\n",
                     err, sizeof err);
    CHECK(v != NULL);
    CHECK(json_is_null(json_object_get(v, "a")) && json_is_null(json_object_get(v, "b")));
    CHECK(json_is_true(json_object_get(v, "c")) && json_is_false(json_object_get(v, "d")));
    CHECK(json_integer_value(json_object_get(v, "e")) == 42 && json_integer_value(json_object_get(v, "f")) == -7);
    CHECK(json_is_real(json_object_get(v, "g")) && json_real_value(json_object_get(v, "h")) == 2000.0);
    CHECK(strcmp(json_string_value(json_object_get(v, "i")), "200") == 0);
    CHECK(strcmp(json_string_value(json_object_get(v, "j")), "true") == 0);
    CHECK(strcmp(json_string_value(json_object_get(v, "k")), "0x10") == 0);
    CHECK(strcmp(json_string_value(json_object_get(v, "l")), "hello world") == 0);
    CHECK(json_array_size(json_object_get(v, "m")) == 2);
    CHECK(json_integer_value(json_object_get(json_object_get(v, "n"), "x")) == 1);
    CHECK(strcmp(json_string_value(json_object_get(v, "o")), "12") == 0);
    CHECK(strcmp(json_string_value(json_object_get(v, "p")), "line\ntwo\n") == 0);
    json_decref(v);

    v = conv("a: &x {k: [1]}\nb: *x\n", err, sizeof err);
    CHECK(v && json_equal(json_object_get(v, "a"), json_object_get(v, "b")));
    json_decref(v);

    CHECK(conv("a: 1\nb: 2\na: 3\n", err, sizeof err) == NULL);
    CHECK_STR_CONTAINS(err, "line 3: duplicate key 'a'");
    CHECK(conv("a: *nope\n", err, sizeof err) == NULL);
    CHECK_STR_CONTAINS(err, "names no anchor");
    CHECK(conv("a: 1\n---\nb: 2\n", err, sizeof err) == NULL);
    CHECK_STR_CONTAINS(err, "a second YAML document");
    CHECK(conv("base: &b {x: 1}\nc:\n  <<: *b\n", err, sizeof err) == NULL);
    CHECK_STR_CONTAINS(err, "merge key");
    CHECK(conv("a: !!int 3\n", err, sizeof err) == NULL);
    CHECK_STR_CONTAINS(err, "not supported");
    CHECK(conv("a: [1, 2\n", err, sizeof err) == NULL);
    CHECK_STR_CONTAINS(err, "line ");
    CHECK(conv("a: 99999999999999999999\n", err, sizeof err) == NULL);
    CHECK_STR_CONTAINS(err, "out of range");
    CHECK(conv("", err, sizeof err) == NULL);
    char deep[400] = "";
    for (int i = 0; i < 70; i++)
        strcat(deep, "[");
    CHECK(conv(deep, err, sizeof err) == NULL);
    CHECK_STR_CONTAINS(err, "nested deeper");
}

static const api_route *match(const char *path)
{
    h2o_iovec_t seg[8];
    int n = 0;
    char *copy = strdup(path);
    for (char *s = strtok(copy, "/"); s && n < 8; s = strtok(NULL, "/"))
        seg[n++] = h2o_iovec_init(s, strlen(s));
    const api_route *r = api_route_match(seg, n);
    free(copy); /* r points into the static table, not into copy */
    return r;
}

static void route_matching(void)
{
    CHECK(match("/") && strcmp(match("/")->path, "/") == 0);
    CHECK(strcmp(match("/v2/models/echo/infer")->path, "/v2/models/{model_name}/infer") == 0);
    CHECK(strcmp(match("/v2/models/echo/versions/1/infer")->path,
                 "/v2/models/{model_name}/versions/{model_version}/infer") == 0);
    CHECK(strcmp(match("/v2/models/stats")->path, "/v2/models/stats") == 0);
    CHECK(strcmp(match("/v2/models/stats/ready")->path, "/v2/models/{model_name}/ready") == 0);
    CHECK(strcmp(match("/v1/models/pull")->path, "/v1/models/pull") == 0);
    CHECK(match("/v1/models/pull")->methods == API_POST);
    CHECK(strcmp(match("/v1/models/pull/logs")->path, "/v1/models/{model_name}/logs") == 0);
    CHECK(match("/v2/models/echo/versions") == NULL);
    CHECK(match("/v2/models/echo/infer/more") == NULL);
    CHECK(match("/v1/nothing") == NULL);
    CHECK(match("/metricsx") == NULL);
    CHECK(strcmp(api_route_allow(API_GET), "GET") == 0 && strcmp(api_route_allow(API_POST), "POST") == 0 &&
          strcmp(api_route_allow(API_GET | API_POST), "GET, POST") == 0);
    CHECK(strcmp(api_route_allow(API_GET | API_PUT | API_PATCH | API_DELETE), "GET, PUT, PATCH, DELETE") == 0);
    CHECK(strcmp(api_route_allow(API_DELETE), "DELETE") == 0);
    CHECK(api_method_bit(H2O_STRLIT("HEAD")) == API_GET && api_method_bit(H2O_STRLIT("PATCH")) == API_PATCH);
    CHECK(api_method_bit(H2O_STRLIT("OPTIONS")) == 0 && api_method_bit(H2O_STRLIT("get")) == 0);
    CHECK(api_method_name(API_DELETE) && strcmp(api_method_name(API_DELETE), "DELETE") == 0);
    CHECK(api_method_name(API_GET | API_POST) == NULL);
}

/* A model name that a literal route shadows where another takes {model_name}: derived from the table. */
static void reserved_model_names(void)
{
    char why[300] = "";
    CHECK(api_model_name_reserved(H2O_STRLIT("pull"), why, sizeof why));
    CHECK(strstr(why, "'pull'") && strstr(why, "/v1/models/pull") && strstr(why, "/v1/models/{model_name}"));
    CHECK(api_model_name_reserved(H2O_STRLIT("stats"), why, sizeof why));
    CHECK(strstr(why, "/v2/models/stats") && strstr(why, "/v2/models/{model_name}"));
    /* literal segments no {model_name} route shares a position with, and near misses */
    const char *free_names[] = {"echo", "pull2", "pul", "events", "sessions", "models", "v1", "v2", "repository",
                                "index", "infer", "ready", "health", "metrics", "{model_name}"};
    for (size_t i = 0; i < sizeof free_names / sizeof free_names[0]; i++) {
        why[0] = 0;
        CHECK(!api_model_name_reserved(free_names[i], strlen(free_names[i]), why, sizeof why));
        CHECK(why[0] == 0);
    }
}

CHECK_MAIN(CASE(embedded_is_the_file), CASE(paths_are_the_routes), CASE(refs_resolve),
           CASE(served_yaml_has_address_and_version), CASE(conversion_rules), CASE(route_matching),
           CASE(reserved_model_names))
