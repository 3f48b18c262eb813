/*
 * sessreq — a session carried by a request (docs/sessions.md, "Sessions
 * and models"): the session a request names, pinned from its acceptance
 * until it is answered; its content as the request frame's meta says it
 * (worker protocol, "Sessions"); and the update the model answers with,
 * checked when the answer arrives and stored only once the request has
 * succeeded.
 *
 * Contract:
 * - Loop thread only. A request names at most one session; its sessreq
 *   hangs on its job (job->sess, owned, freed by job_free).
 * - Snapshot. The request's frame holds the session's content as it was
 *   when the request was accepted (sessreq_meta is called while the frame
 *   is built); a later write to the session does not reach it.
 * - An update from a worker is hostile input: sessreq_stage checks its
 *   shape (one of json, base64 with a content type, delete; an optional
 *   ttl) and copies what it will store, so nothing of the worker's frame is
 *   kept. A malformed one is a protocol error for the caller.
 * - sessreq_commit stores the staged update (session_put, session_delete)
 *   at most once; the store's refusal (413, 507, a ttl over the maximum)
 *   leaves the session as it was, the answer as it was (already sent), and
 *   is logged at warning level and counted (sessreq_refused).
 */
#ifndef CORRAL_SESSREQ_H
#define CORRAL_SESSREQ_H

#include "sb.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

struct job;
typedef struct sessreq sessreq;

/*
 * Attaches the session named id (len bytes) to j: validated as session ids
 * are (a bad one fills why and returns -1, for a 400), looked up as a
 * request's (a hit or a miss), pinned when it exists. A session that does
 * not exist is no error: the model sees it absent, and its update creates it.
 */
int sessreq_attach(struct job *j, const char *id, size_t len, char *why, size_t whylen);

/*
 * Appends "session":{...} (the request meta's member, no comma) for r, in
 * one fixed form: "id", "exists", then "content_type" and "json" (the
 * stored text as it is) or "base64". The callers put it first in
 * the meta, where the C SDK takes it out by hand before jansson (about
 * 60 MB/s) reads the rest: parsing a 4 KiB session would cost a request
 * some 70 µs (docs/worker-protocol.md, "Sessions").
 */
void sessreq_meta(sb *out, const sessreq *r);

/* At most the bytes sessreq_meta appends, to reserve them at once. */
size_t sessreq_meta_size(const sessreq *r);

/* The session's id. */
const char *sessreq_id(const sessreq *r);

/*
 * Checks the worker's update (the "session" member of its answer's meta)
 * and keeps it for sessreq_commit, replacing any staged before. Returns 0,
 * or -1 with why when it is malformed.
 */
int sessreq_stage(sessreq *r, json_t *update, char *why, size_t whylen);

/*
 * The update in a worker's final frame for the request (INFER_RESULT,
 * GENERATE_RESULT, or END, whose body may be a meta alone): its meta's
 * "session" member, staged; a frame without one stages nothing, nor does any
 * frame when r is NULL (the request named no session). Returns 0,
 * or -1 with why when the frame or the update is malformed.
 */
int sessreq_stage_frame(sessreq *r, uint8_t type, const uint8_t *body, size_t len, char *why, size_t whylen);

/*
 * Stores the staged update, if any, for model (named in the log line of a
 * refusal). Returns 0 (stored, or nothing staged) or the store's status.
 */
int sessreq_commit(sessreq *r, const char *model);

/*
 * Forgets the staged update: the daemon answered the client with an error
 * although the worker's answer arrived (an answer that does not fit the
 * endpoint). NULL is fine.
 */
void sessreq_drop(sessreq *r);

/* Updates the store refused since the start. */
uint64_t sessreq_refused(void);

/* Unpins the session and frees r; NULL is fine. */
void sessreq_free(sessreq *r);

#endif
