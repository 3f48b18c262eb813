/*
 * openapi — the API's own description, docs/openapi.yaml, served at
 * GET /openapi.json and GET /openapi.yaml.
 *
 * Contract:
 * - The document is embedded at build time (cmake/embed_text.cmake writes
 *   openapi_doc.c); nothing is read at run time.
 * - Both answers carry the daemon's listen address as servers[0].url and
 *   its version as info.version. Each is built once, at its first request
 *   (the YAML converted to JSON with libyaml and jansson), and kept for the
 *   daemon's life: later requests allocate nothing but h2o's headers.
 * - openapi_yaml_to_json and openapi_yaml_with are pure, for the unit test.
 *   Loop thread only.
 */
#ifndef CORRAL_OPENAPI_H
#define CORRAL_OPENAPI_H

#include "api.h"

#include <jansson.h>
#include <stddef.h>

/* The embedded docs/openapi.yaml: openapi_yaml_len bytes, then a NUL. */
extern const unsigned char openapi_yaml[];
extern const size_t openapi_yaml_len;

/* The address the daemon listens on, once bound: servers[0].url becomes "http://host:port". */
void openapi_set_server(const char *host, int port);

/* The route handler of /openapi.json and /openapi.yaml (api.c's table). */
int openapi_serve(h2o_req_t *req, const api_path *p);

/*
 * Converts a YAML document (one, of mappings, sequences and scalars;
 * anchors and aliases, no merge keys, no tags but !!str) to JSON. Plain scalars follow YAML
 * 1.2's core schema (null, true/false, decimal integers and floats);
 * quoted and block scalars are strings; a duplicate key is an error.
 * Returns a new reference, or NULL with the line and reason in err.
 */
json_t *openapi_yaml_to_json(const char *text, size_t len, char *err, size_t errlen);

/*
 * The YAML text with the scalars of info.version and servers[0].url
 * replaced by url and version (double-quoted), everything else byte for
 * byte. Returns a malloc'ed text (*out_len bytes and a NUL), or NULL with
 * the reason in err (the document lacks either scalar, or does not parse).
 */
char *openapi_yaml_with(const char *text, size_t len, const char *url, const char *version, size_t *out_len,
                        char *err, size_t errlen);

#endif
