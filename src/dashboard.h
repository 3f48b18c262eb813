/*
 * dashboard — the web page at GET /: the files of web/, embedded in the
 * binary at build time (cmake/embed.cmake writes dashboard_assets.c), served
 * with their content types, an ETag and a strict Content-Security-Policy.
 *
 * Contract:
 * - dashboard_handle is called by api_handle after access_check, with the
 *   request's path segments. The routes are GET|HEAD "/" (index.html) and
 *   "/dashboard/{file}"; access.c keeps exactly these free of the token
 *   (they hold no data: the page asks for the token itself, docs/security.md),
 *   so the two files must agree on them.
 * - The assets are read-only static data; nothing is allocated per request
 *   beyond h2o's headers in the request's pool. Loop thread only.
 */
#ifndef CORRAL_DASHBOARD_H
#define CORRAL_DASHBOARD_H

#include <h2o.h>
#include <stddef.h>

typedef struct dashboard_asset {
    const char *name;         /* "app.js": one path segment */
    const char *content_type;
    const unsigned char *data; /* len bytes, then a NUL */
    size_t len;
    const char *etag;         /* quoted, from the content's SHA-256 */
} dashboard_asset;

/* The table the build generates, in web/'s order. */
extern const dashboard_asset dashboard_assets[];
extern const size_t dashboard_n_assets;

/* The asset called name[0..len), or NULL. */
const dashboard_asset *dashboard_find(const char *name, size_t len);

/*
 * Whether the path seg[0..n) is one of the dashboard's routes ("/" or
 * "/dashboard/..."), whichever file it names.
 */
int dashboard_is_route(const h2o_iovec_t *seg, int n);

/*
 * Answers req when its path seg[0..n) is the dashboard's: 200 with the
 * file, 304 when If-None-Match holds its ETag, 404 for an unknown file, 405
 * for a method other than GET or HEAD. Returns 0 when it answered, -1 when
 * the path is not the dashboard's.
 */
int dashboard_handle(h2o_req_t *req, const h2o_iovec_t *seg, int n);

#endif
