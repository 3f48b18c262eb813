/*
 * Unit tests of the embedded dashboard: the table the build generates from
 * web/ (every file there, byte for byte, with its type and an ETag), the
 * lookup, the routes, and that index.html refers only to files it has.
 */
#include "dashboard.h"
#include "check.h"

#include <stdlib.h>

/* web/NAME as read from the source tree (ctest runs in it), malloc'ed. */
static char *read_source(const char *name, size_t *len)
{
    char path[256];
    snprintf(path, sizeof path, "web/%s", name);
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    *len = fread(buf, 1, (size_t)n, f);
    fclose(f);
    return buf;
}

static void table_matches_web(void)
{
    CHECK(dashboard_n_assets >= 4);
    for (size_t i = 0; i < dashboard_n_assets; i++) {
        const dashboard_asset *a = &dashboard_assets[i];
        size_t len = 0;
        char *src = read_source(a->name, &len);
        CHECK(src != NULL);
        CHECK(src && len == a->len && memcmp(src, a->data, len) == 0);
        CHECK(a->data[a->len] == 0);
        free(src);
        CHECK(a->etag[0] == '"' && a->etag[strlen(a->etag) - 1] == '"' && strlen(a->etag) == 26);
        for (size_t j = 0; j < i; j++)
            CHECK(strcmp(dashboard_assets[j].etag, a->etag) != 0);
    }
}

static void content_types(void)
{
    CHECK_STR_CONTAINS(dashboard_find(H2O_STRLIT("index.html"))->content_type, "text/html");
    CHECK_STR_CONTAINS(dashboard_find(H2O_STRLIT("app.js"))->content_type, "text/javascript");
    CHECK_STR_CONTAINS(dashboard_find(H2O_STRLIT("style.css"))->content_type, "text/css");
    CHECK_STR_CONTAINS(dashboard_find(H2O_STRLIT("favicon.svg"))->content_type, "image/svg+xml");
}

static void lookup(void)
{
    CHECK(dashboard_find(H2O_STRLIT("app.js")) != NULL);
    CHECK(dashboard_find(H2O_STRLIT("app.j")) == NULL);   /* a prefix */
    CHECK(dashboard_find(H2O_STRLIT("app.jsx")) == NULL);
    CHECK(dashboard_find(H2O_STRLIT("")) == NULL);
    CHECK(dashboard_find(H2O_STRLIT("../app.js")) == NULL);
}

static void routes(void)
{
    h2o_iovec_t seg[3] = {h2o_iovec_init(H2O_STRLIT("dashboard")), h2o_iovec_init(H2O_STRLIT("app.js")),
                          h2o_iovec_init(H2O_STRLIT("x"))};
    CHECK(dashboard_is_route(seg, 0));
    CHECK(!dashboard_is_route(seg, 1));
    CHECK(dashboard_is_route(seg, 2));
    CHECK(!dashboard_is_route(seg, 3));
    h2o_iovec_t other[2] = {h2o_iovec_init(H2O_STRLIT("v1")), h2o_iovec_init(H2O_STRLIT("app.js"))};
    CHECK(!dashboard_is_route(other, 2));
}

/* Every "/dashboard/NAME" in index.html names an embedded file. */
static void index_refers_to_embedded_files(void)
{
    const dashboard_asset *index = dashboard_find(H2O_STRLIT("index.html"));
    const char *p = (const char *)index->data;
    int refs = 0;
    while ((p = strstr(p, "\"/dashboard/")) != NULL) {
        p += strlen("\"/dashboard/");
        const char *end = strchr(p, '"');
        CHECK(end != NULL);
        if (!end)
            break;
        const dashboard_asset *a = dashboard_find(p, (size_t)(end - p));
        if (!a)
            fprintf(stderr, "index.html refers to /dashboard/%.*s, which is not embedded\n", (int)(end - p), p);
        CHECK(a != NULL);
        refs++;
        p = end;
    }
    CHECK(refs >= 3);
}

CHECK_MAIN(CASE(table_matches_web), CASE(content_types), CASE(lookup), CASE(routes),
           CASE(index_refers_to_embedded_files))
