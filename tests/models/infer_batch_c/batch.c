/*
 * infer_batch_c — a fixture for the C SDK's second batch form: infer_batch
 * answers each request of a batch on its own (it has no infer, so a request
 * that was not batched comes to infer_batch alone).
 *
 * Each request's inputs come back renamed INPUTn -> OUTPUTn, its own rows
 * only. Request parameters steer it:
 *   fail: true     that request alone fails: 400 BadRequest naming its id;
 *   delay_ms: N    sleep N ms (0..60000) first; a CANCEL of the batch cuts
 *                  it short through that request's on_cancel, and the
 *                  request fails with type Cancelled;
 *   return: N      infer_batch returns N (after answering), recording
 *                  nothing more: with no request failed the whole batch
 *                  fails, else the others do.
 * Every call logs "infer_batch_c: N requests, R rows" on stderr, so a test
 * can see the batches that formed.
 */
#define _POSIX_C_SOURCE 200809L
#include "corral_worker.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define MAX_DELAY_MS 60000
#define MAX_NAME 256

typedef struct nap {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    int woken;
} nap;

static void wake_nap(void *arg)
{
    nap *n = arg;
    pthread_mutex_lock(&n->mu);
    n->woken = 1;
    pthread_cond_signal(&n->cond);
    pthread_mutex_unlock(&n->mu);
}

/* Sleeps delay_ms unless req is cancelled first: 0, or an error recorded in res. */
static int nap_for(const corral_request *req, corral_response *res, int64_t delay_ms)
{
    nap n = {.mu = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += delay_ms / 1000;
    until.tv_nsec += (delay_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    corral_request_on_cancel(req, wake_nap, &n);
    pthread_mutex_lock(&n.mu);
    while (!n.woken && pthread_cond_timedwait(&n.cond, &n.mu, &until) != ETIMEDOUT)
        ;
    pthread_mutex_unlock(&n.mu);
    corral_request_on_cancel(req, NULL, NULL); /* n is about to go */
    if (corral_request_cancelled(req))
        return corral_response_error(res, 500, "Cancelled", "cancelled during a %lld ms sleep", (long long)delay_ms);
    return 0;
}

/* Answers one request: its inputs back, renamed. */
static int echo_one(const corral_request *req, corral_response *res)
{
    const json_t *params = corral_request_parameters(req);
    if (corral_param_bool(params, "fail", 0))
        return corral_bad_request(res, "request '%s' asked to fail", corral_request_id(req));
    int64_t delay_ms = corral_param_int(params, "delay_ms", 0);
    if (delay_ms < 0 || delay_ms > MAX_DELAY_MS)
        return corral_bad_request(res, "delay_ms must be between 0 and %d", MAX_DELAY_MS);
    if (delay_ms > 0 && nap_for(req, res, delay_ms) < 0)
        return -ECANCELED;
    for (size_t i = 0; i < corral_request_ninputs(req); i++) {
        const corral_tensor *in = corral_request_input_at(req, i);
        char name[MAX_NAME];
        snprintf(name, sizeof name, "%s%s", strncmp(in->name, "INPUT", 5) == 0 ? "OUTPUT" : "",
                 strncmp(in->name, "INPUT", 5) == 0 ? in->name + 5 : in->name);
        int rc = corral_response_add_output(res, name, in->dtype, in->shape, in->ndim, in->data, in->size,
                                            CORRAL_BORROW);
        if (rc < 0)
            return corral_response_error(res, 500, NULL, "output '%s': %s", name, strerror(-rc));
    }
    return 0;
}

static int batch_infer_batch(void *state, const corral_request *const *reqs, corral_response *const *res, size_t n)
{
    (void)state;
    int64_t rows = 0;
    int ret = 0;
    for (size_t i = 0; i < n; i++) {
        rows += corral_request_batch_rows(reqs[i], 0);
        echo_one(reqs[i], res[i]); /* an error stays in res[i]: it fails request i alone */
        int64_t r = corral_param_int(corral_request_parameters(reqs[i]), "return", 0);
        if (r != 0)
            ret = (int)r;
    }
    corral_log("infer_batch_c: %zu requests, %lld rows", n, (long long)rows);
    return ret;
}

int main(void)
{
    static const corral_model_ops ops = {.infer_batch = batch_infer_batch};
    return corral_run(&ops);
}
