/*
 * api_session — the context store's endpoints, /v1/sessions
 * (docs/sessions.md): list, and per id GET/HEAD, PUT, PATCH (RFC 7386 JSON
 * merge patch) and DELETE, over session.h. Routed from api_v1.
 */
#ifndef CORRAL_API_SESSION_H
#define CORRAL_API_SESSION_H

#include "api.h"

#include <jansson.h>
#include <stdint.h>

/* /v1/sessions[/{id}] (p->seg[1] is "sessions"); returns -1 for a path it does not serve. */
int api_sessions(h2o_req_t *req, const api_path *p);

/* ---- pure parts (unit-tested) ---- */

/*
 * RFC 7386: target (a reference stolen; NULL for none) patched with patch
 * (borrowed). Returns the result, a new reference.
 */
json_t *session_merge_patch(json_t *target, const json_t *patch);

/* ms since the Unix epoch as RFC 3339 UTC with milliseconds: "2026-12-01T18:00:00.000Z" (out: 32 bytes). */
void session_format_time(int64_t ms, char *out, size_t outlen);

/*
 * A ttl as a client writes it (the query's ttl=, or Session-TTL): decimal
 * seconds from 1 to max_ttl_s. Returns the seconds, or -1 with why in msg.
 */
int64_t session_parse_ttl(const char *s, size_t len, int64_t max_ttl_s, char *msg, size_t msglen);

#endif
