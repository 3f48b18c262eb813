/*
 * events — the daemon's lifecycle events (docs/observability.md lists the
 * kinds): a bounded history and the server-sent-event subscribers of
 * GET /v1/events.
 *
 * Each event is emitted once, by the function that makes the transition
 * (model_set_state, model_scale, the instance callbacks in model.c), and
 * kept as its rendered SSE text:
 *
 *     id: 42
 *     event: instance.exited
 *     data: {"time":"2026-12-01T10:00:00.000Z","model":"echo","instance":0,"pid":1234,"signal":9,...}
 *
 * Ids increase by one for the daemon's life. The newest EVENTS_HISTORY
 * events are kept; a subscriber that sends Last-Event-ID resumes after it
 * (from the oldest kept when it is older). A subscriber holds no copy of
 * its own beyond the send in progress: it is a cursor into the history,
 * so a slow one costs nothing until it falls out of the history, and
 * then it is dropped (its stream ends with a comment saying so) rather
 * than buffered. Loop thread only.
 */
#ifndef CORRAL_EVENTS_H
#define CORRAL_EVENTS_H

#include <h2o.h>
#include <jansson.h>
#include <stdint.h>

#define EVENTS_HISTORY 1024
/* A subscriber that has had nothing to send this long gets a comment line, so a vanished client is noticed. */
#define EVENTS_HEARTBEAT_MS 15000

/* Emits an event of kind with data (a JSON object, stolen; "time" is added first). */
void events_emit(const char *kind, json_t *data);
/* GET /v1/events. */
void events_handle(h2o_req_t *req);
/* The id of the newest event, 0 before the first. */
uint64_t events_last_id(void);
/*
 * Ends every subscriber's stream after what it has not had yet (the daemon
 * is stopping); the history is freed once the last stream has ended.
 */
void events_shutdown(void);

#endif
