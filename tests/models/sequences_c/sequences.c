/*
 * sequences_c — a fixture for the C SDK's sequences: infer answers SEQ, the
 * request's sequence as compact JSON ("null" for none), and RELEASED, every
 * end_sequence call so far as "id reason" lines (the id as JSON).
 */
#define _POSIX_C_SOURCE 200809L
#include "corral_worker.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static char released[4096];

static int seq_infer(void *state, const corral_request *req, corral_response *res)
{
    (void)state;
    const json_t *seq = corral_request_sequence(req);
    char *text = seq ? json_dumps(seq, JSON_COMPACT | JSON_SORT_KEYS) : strdup("null");
    if (!text)
        return corral_response_error(res, 500, "MemoryError", "out of memory");
    pthread_mutex_lock(&mu);
    const void *items[2] = {text, released};
    size_t lens[2] = {strlen(text), strlen(released)};
    int64_t shape[1] = {1};
    int rc = corral_response_add_bytes(res, "SEQ", shape, 1, &items[0], &lens[0]);
    if (rc == 0)
        rc = corral_response_add_bytes(res, "RELEASED", shape, 1, &items[1], &lens[1]);
    pthread_mutex_unlock(&mu);
    free(text);
    return rc < 0 ? corral_response_error(res, 500, NULL, "output: %s", strerror(-rc)) : 0;
}

static void seq_end(void *state, const json_t *sequence_id, const char *reason)
{
    (void)state;
    char *id = json_dumps(sequence_id, JSON_ENCODE_ANY | JSON_COMPACT);
    pthread_mutex_lock(&mu);
    size_t used = strlen(released);
    snprintf(released + used, sizeof released - used, "%s %s\n", id ? id : "?", reason);
    pthread_mutex_unlock(&mu);
    free(id);
}

int main(void)
{
    static const corral_model_ops ops = {.infer = seq_infer, .end_sequence = seq_end};
    return corral_run(&ops);
}
