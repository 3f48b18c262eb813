/*
 * grpc_load — the client of bench/'s grpc section: KServe v2 ModelInfer
 * calls over gRPC's C core (the library the daemon serves with), as a C
 * load generator, so that what is timed is the daemon and not the client.
 *
 *   grpc_load rate PORT MODEL SECONDS CONCURRENCY CHANNELS THREADS ELEMENTS
 *       a closed loop: CONCURRENCY calls always in flight, spread over
 *       CHANNELS channels (each its own HTTP/2 connection) and THREADS
 *       threads (each with its own completion queue); as soon as a call
 *       ends, its slot starts the next. Each call carries one FP32 tensor
 *       INPUT0 of shape [1, ELEMENTS] in raw_input_contents (the values of
 *       the HTTP bench's JSON body). Before the SECONDS of timing, every
 *       channel makes one call whose answer is checked field by field (the
 *       echo: OUTPUT0, FP32, the same shape, the same bytes); the timed
 *       answers are checked for status OK and that answer's size.
 *   grpc_load tensor PORT MODEL MIB REPS
 *       one UINT8 tensor of MIB MiB, shape [MIB << 20], sent and echoed
 *       REPS + 1 times, one call at a time on one channel; the first is not
 *       timed. Each call is timed from its start to the whole answer's
 *       arrival (the answer's message is in memory, as gRPC received it);
 *       every answer is then unpacked and compared byte for byte, untimed.
 *
 * The request message is packed once; each call then costs one byte buffer
 * holding a reference to it, and what gRPC itself allocates for a call.
 * Prints one JSON object: rate gives requests/s and the latency
 * percentiles in microseconds, tensor each round trip's seconds and MB/s
 * (tensor bytes, 10^6, over the median round trip); both this process's
 * CPU seconds.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>

#define BENCH_TOOL "grpc_load"
#include "bench_tool.h"

#include "grpc_service.pb-c.h"

#define METHOD "/inference.GRPCInferenceService/ModelInfer"
#define MAX_CHANNELS 1024
#define MAX_THREADS 16

/* One call slot: the call in flight and what its batch fills in. */
typedef struct slot {
    grpc_call *call;
    grpc_channel *channel; /* not owned: one of the run's channels */
    grpc_byte_buffer *send, *recv;
    grpc_metadata_array md_initial, md_trailing;
    grpc_status_code status;
    grpc_slice details;
    double t0;
} slot;

/* What a tensor's echo must look like. */
typedef struct expect {
    const char *datatype;
    const int64_t *shape;
    size_t ndim;
    const uint8_t *data;
    size_t len;
} expect;

static grpc_slice method;
static const char *model;

static void usage(void)
{
    fprintf(stderr, "usage: grpc_load rate PORT MODEL SECONDS CONCURRENCY CHANNELS THREADS ELEMENTS\n"
                    "       grpc_load tensor PORT MODEL MIB REPS\n");
    exit(2);
}

/* The packed ModelInferRequest for one input INPUT0, its bytes in raw_input_contents. */
static grpc_slice pack_request(const expect *x)
{
    Inference__ModelInferRequest__InferInputTensor in = INFERENCE__MODEL_INFER_REQUEST__INFER_INPUT_TENSOR__INIT;
    in.name = "INPUT0";
    in.datatype = (char *)x->datatype;
    in.n_shape = x->ndim;
    in.shape = (int64_t *)x->shape;
    Inference__ModelInferRequest__InferInputTensor *inputs[1] = {&in};
    ProtobufCBinaryData raw = {.len = x->len, .data = (uint8_t *)x->data};
    Inference__ModelInferRequest req = INFERENCE__MODEL_INFER_REQUEST__INIT;
    req.model_name = (char *)model;
    req.n_inputs = 1;
    req.inputs = inputs;
    req.n_raw_input_contents = 1;
    req.raw_input_contents = &raw;
    size_t n = inference__model_infer_request__get_packed_size(&req);
    uint8_t *buf = malloc(n);
    if (!buf)
        die("out of memory");
    if (inference__model_infer_request__pack(&req, buf) != n)
        fail("protobuf-c packed a different size than it announced");
    return grpc_slice_new(buf, n, free);
}

static grpc_channel *open_channel(int port)
{
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", port);
    grpc_arg args[3] = {
        /* answers as large as the daemon sends (the client's default stops at 4 MiB) */
        {.type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, .value.integer = -1},
        /* each channel its own connection, not one shared subchannel */
        {.type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, .value.integer = 1},
        /* no retries: a retrying call keeps its sent message, which costs the client */
        {.type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_ENABLE_RETRIES, .value.integer = 0},
    };
    grpc_channel_args cargs = {.num_args = 3, .args = args};
    grpc_channel_credentials *creds = grpc_insecure_credentials_create();
    grpc_channel *ch = grpc_channel_create(target, creds, &cargs);
    grpc_channel_credentials_release(creds);
    if (!ch)
        fail("grpc_channel_create failed");
    return ch;
}

static void slot_init(slot *s, grpc_channel *ch)
{
    memset(s, 0, sizeof *s);
    s->channel = ch;
    grpc_metadata_array_init(&s->md_initial);
    grpc_metadata_array_init(&s->md_trailing);
}

static void slot_close(slot *s)
{
    grpc_metadata_array_destroy(&s->md_initial);
    grpc_metadata_array_destroy(&s->md_trailing);
}

/* Starts one unary call on s: the whole exchange in one batch, tagged s. */
static void slot_start(slot *s, grpc_completion_queue *cq, grpc_slice request, gpr_timespec deadline)
{
    s->call = grpc_channel_create_call(s->channel, NULL, GRPC_PROPAGATE_DEFAULTS, cq, method, NULL, deadline, NULL);
    if (!s->call)
        fail("grpc_channel_create_call failed");
    s->send = grpc_raw_byte_buffer_create(&request, 1); /* a reference to the packed request, not a copy */
    s->recv = NULL;
    /* The arrays keep their capacity from call to call: no allocation once it suffices. */
    s->md_initial.count = s->md_trailing.count = 0;
    grpc_op ops[6];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = s->send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &s->md_initial;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &s->recv;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &s->md_trailing;
    ops[5].data.recv_status_on_client.status = &s->status;
    ops[5].data.recv_status_on_client.status_details = &s->details;
    s->t0 = now_us();
    if (grpc_call_start_batch(s->call, ops, 6, s, NULL) != GRPC_CALL_OK)
        fail("grpc_call_start_batch refused the call");
}

/*
 * Ends the call of s once its batch completed. Returns the answer's length
 * in bytes, or -1 with the reason in err when the call failed. The answer
 * stays in s->recv when keep is set (the caller destroys it), else it goes.
 */
static long slot_end(slot *s, int success, int keep, char *err, size_t errlen)
{
    long len = -1;
    grpc_byte_buffer_destroy(s->send);
    s->send = NULL;
    if (!success)
        snprintf(err, errlen, "the call's batch failed");
    else if (s->status != GRPC_STATUS_OK) {
        char *msg = grpc_slice_to_c_string(s->details);
        snprintf(err, errlen, "status %d: %s", (int)s->status, msg);
        gpr_free(msg);
    } else if (!s->recv)
        snprintf(err, errlen, "status OK without an answer");
    else
        len = (long)grpc_byte_buffer_length(s->recv);
    grpc_slice_unref(s->details);
    s->details = grpc_empty_slice();
    grpc_call_unref(s->call);
    s->call = NULL;
    if (s->recv && !keep) {
        grpc_byte_buffer_destroy(s->recv);
        s->recv = NULL;
    }
    return len;
}

/* Fails unless answer (a ModelInferResponse) is the echo x describes. */
static void check_echo(grpc_byte_buffer *answer, const expect *x)
{
    grpc_byte_buffer_reader r;
    if (!grpc_byte_buffer_reader_init(&r, answer))
        fail("could not read the answer's byte buffer");
    grpc_slice all = grpc_byte_buffer_reader_readall(&r);
    grpc_byte_buffer_reader_destroy(&r);
    Inference__ModelInferResponse *resp =
        inference__model_infer_response__unpack(NULL, GRPC_SLICE_LENGTH(all), GRPC_SLICE_START_PTR(all));
    grpc_slice_unref(all);
    if (!resp)
        fail("the answer is not a ModelInferResponse");
    if (resp->n_outputs != 1 || strcmp(resp->outputs[0]->name, "OUTPUT0") != 0)
        fail("the answer does not have the one output OUTPUT0");
    const Inference__ModelInferResponse__InferOutputTensor *o = resp->outputs[0];
    if (strcmp(o->datatype, x->datatype) != 0 || o->n_shape != x->ndim ||
        memcmp(o->shape, x->shape, x->ndim * sizeof *x->shape) != 0)
        fail("the answer's OUTPUT0 has another datatype or shape than the input");
    if (resp->n_raw_output_contents != 1 || resp->raw_output_contents[0].len != x->len)
        fail("the answer's raw_output_contents is not one entry of the input's size");
    if (memcmp(resp->raw_output_contents[0].data, x->data, x->len) != 0)
        fail("the answer's bytes differ from the input's: not an echo");
    inference__model_infer_response__free_unpacked(resp, NULL);
}

/* One call on ch, waited for on cq; returns its round trip in µs and checks the answer. */
static double checked_call(grpc_channel *ch, grpc_completion_queue *cq, grpc_slice request, const expect *x,
                           long *answer_len)
{
    slot s;
    slot_init(&s, ch);
    gpr_timespec deadline = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_seconds(300, GPR_TIMESPAN));
    slot_start(&s, cq, request, deadline);
    grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    double us = now_us() - s.t0;
    if (ev.type != GRPC_OP_COMPLETE || ev.tag != &s)
        fail("the completion queue gave something other than the call's end");
    char err[512];
    long len = slot_end(&s, ev.success, 1, err, sizeof err);
    if (len < 0) {
        fprintf(stderr, "grpc_load: ModelInfer on %s: %s\n", model, err);
        exit(1);
    }
    check_echo(s.recv, x);
    grpc_byte_buffer_destroy(s.recv);
    slot_close(&s);
    *answer_len = len;
    return us;
}

static void cq_close(grpc_completion_queue *cq)
{
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type != GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(cq);
}

/* ---- rate ---- */

typedef struct worker {
    pthread_t thread;
    grpc_completion_queue *cq;
    slot *slots;
    size_t nslots;
    double *lat; /* each timed call's round trip, µs */
    size_t nlat, cap;
    long errors;
    char first_error[512];
} worker;

static grpc_slice rate_request;
static long rate_answer_len;
static double t_end_us;
static gpr_timespec t_end;

static void record_latency(worker *w, double us)
{
    if (w->nlat == w->cap) {
        w->cap *= 2;
        w->lat = realloc(w->lat, w->cap * sizeof *w->lat);
        if (!w->lat)
            die("out of memory");
    }
    w->lat[w->nlat++] = us;
}

/* Keeps the worker's slots busy until t_end, then lets the calls in flight finish, uncounted. */
static void *run_worker(void *arg)
{
    worker *w = arg;
    gpr_timespec never = gpr_inf_future(GPR_CLOCK_REALTIME);
    for (size_t i = 0; i < w->nslots; i++)
        slot_start(&w->slots[i], w->cq, rate_request, never);
    size_t in_flight = w->nslots;
    int stopping = 0;
    while (in_flight) {
        grpc_event ev = grpc_completion_queue_next(w->cq, stopping ? gpr_inf_future(GPR_CLOCK_MONOTONIC) : t_end, NULL);
        if (ev.type == GRPC_QUEUE_TIMEOUT) {
            stopping = 1;
            continue;
        }
        if (ev.type != GRPC_OP_COMPLETE)
            fail("the completion queue shut down under a running call");
        slot *s = ev.tag;
        double t = now_us();
        char err[512];
        long len = slot_end(s, ev.success, 0, err, sizeof err);
        if (t <= t_end_us) {
            if (len == rate_answer_len)
                record_latency(w, t - s->t0);
            else {
                if (!w->errors++)
                    snprintf(w->first_error, sizeof w->first_error, "%s",
                             len < 0 ? err : "an answer of another size than the checked one");
            }
        } else
            stopping = 1;
        if (stopping)
            in_flight--;
        else
            slot_start(s, w->cq, rate_request, never);
    }
    return NULL;
}

static int run_rate(int port, double seconds, int concurrency, int nchannels, int nthreads, int elements)
{
    if (seconds <= 0 || concurrency < 1 || nchannels < 1 || nchannels > MAX_CHANNELS || nthreads < 1 ||
        nthreads > MAX_THREADS || nthreads > concurrency || elements < 1)
        usage();
    /* The HTTP bench's values (bench/measure.py, request_values): multiples of 0.25. */
    float *values = malloc((size_t)elements * sizeof *values);
    if (!values)
        die("out of memory");
    for (int i = 0; i < elements; i++)
        values[i] = (float)((i * 7) % 64) * 0.25f;
    int64_t shape[2] = {1, elements};
    expect x = {.datatype = "FP32", .shape = shape, .ndim = 2, .data = (const uint8_t *)values,
                .len = (size_t)elements * sizeof *values};
    rate_request = pack_request(&x);

    grpc_channel *channels[MAX_CHANNELS];
    grpc_completion_queue *check_cq = grpc_completion_queue_create_for_next(NULL);
    for (int i = 0; i < nchannels; i++) {
        channels[i] = open_channel(port);
        checked_call(channels[i], check_cq, rate_request, &x, &rate_answer_len); /* connects it, too */
    }
    cq_close(check_cq);

    worker workers[MAX_THREADS];
    memset(workers, 0, sizeof workers);
    for (int t = 0; t < nthreads; t++) {
        worker *w = &workers[t];
        w->cq = grpc_completion_queue_create_for_next(NULL);
        w->slots = calloc((size_t)concurrency, sizeof *w->slots);
        w->cap = 1 << 16;
        w->lat = malloc(w->cap * sizeof *w->lat);
        if (!w->slots || !w->lat)
            die("out of memory");
    }
    /* Slot k: thread k mod THREADS, channel k mod CHANNELS. */
    for (int k = 0; k < concurrency; k++) {
        worker *w = &workers[k % nthreads];
        slot_init(&w->slots[w->nslots++], channels[k % nchannels]);
    }

    double cpu0 = cpu_s(), t0 = now_us();
    t_end_us = t0 + seconds * 1e6;
    t_end = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_micros((int64_t)(seconds * 1e6), GPR_TIMESPAN));
    for (int t = 0; t < nthreads; t++)
        if (pthread_create(&workers[t].thread, NULL, run_worker, &workers[t]) != 0)
            fail("pthread_create failed");
    for (int t = 0; t < nthreads; t++)
        pthread_join(workers[t].thread, NULL);
    double client_cpu = cpu_s() - cpu0;

    size_t n = 0;
    long errors = 0;
    const char *first_error = NULL;
    for (int t = 0; t < nthreads; t++) {
        n += workers[t].nlat;
        errors += workers[t].errors;
        if (workers[t].errors && !first_error)
            first_error = workers[t].first_error;
    }
    if (!n)
        fail(first_error ? first_error : "no call completed in the time given");
    double *lat = malloc(n * sizeof *lat), sum = 0;
    if (!lat)
        die("out of memory");
    for (int t = 0, k = 0; t < nthreads; t++)
        for (size_t i = 0; i < workers[t].nlat; i++, k++)
            sum += lat[k] = workers[t].lat[i];
    qsort(lat, n, sizeof *lat, cmp_double);
    printf("{\"requests\":%zu,\"duration_us\":%.0f,\"rps\":%.2f,\"p50_us\":%.2f,\"p90_us\":%.2f,\"p99_us\":%.2f,"
           "\"mean_us\":%.2f,\"max_us\":%.2f,\"errors\":%ld,\"concurrency\":%d,"
           "\"channels\":%d,\"threads\":%d,\"request_bytes\":%zu,\"answer_bytes\":%ld,\"cpu_s\":%.4f}\n",
           n, seconds * 1e6, (double)n / seconds, percentile(lat, n, 50), percentile(lat, n, 90),
           percentile(lat, n, 99), sum / (double)n, lat[n - 1], errors, concurrency,
           nchannels, nthreads, GRPC_SLICE_LENGTH(rate_request), rate_answer_len, client_cpu);
    if (first_error)
        fprintf(stderr, "grpc_load: %ld failed calls; the first: %s\n", errors, first_error);
    free(lat);
    for (int t = 0; t < nthreads; t++) {
        for (size_t i = 0; i < workers[t].nslots; i++)
            slot_close(&workers[t].slots[i]);
        free(workers[t].slots);
        free(workers[t].lat);
        cq_close(workers[t].cq);
    }
    for (int i = 0; i < nchannels; i++)
        grpc_channel_destroy(channels[i]);
    grpc_slice_unref(rate_request);
    free(values);
    return 0;
}

/* ---- tensor ---- */

static int run_tensor(int port, long mib, int reps)
{
    if (mib < 1 || mib > 1024 || reps < 1)
        usage();
    size_t len = (size_t)mib << 20;
    uint8_t *data = malloc(len);
    double *times = malloc((size_t)reps * sizeof *times);
    if (!data || !times)
        die("out of memory");
    /* Not a constant pattern: a shifted or repeated block would not compare equal. */
    uint64_t state = 0x9e3779b97f4a7c15u;
    for (size_t i = 0; i < len; i++) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        data[i] = (uint8_t)state;
    }
    int64_t shape[1] = {(int64_t)len};
    expect x = {.datatype = "UINT8", .shape = shape, .ndim = 1, .data = data, .len = len};
    grpc_slice request = pack_request(&x);
    grpc_channel *ch = open_channel(port);
    grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
    long answer_len = 0;
    double cpu0 = cpu_s();
    checked_call(ch, cq, request, &x, &answer_len); /* connects, maps the worker's regions in: not timed */
    for (int i = 0; i < reps; i++)
        times[i] = checked_call(ch, cq, request, &x, &answer_len) * 1e-6;
    double client_cpu = cpu_s() - cpu0;
    printf("{\"mib\":%ld,\"bytes\":%zu,\"reps\":%d,\"seconds\":[", mib, len, reps);
    for (int i = 0; i < reps; i++)
        printf("%s%.6f", i ? "," : "", times[i]);
    qsort(times, (size_t)reps, sizeof *times, cmp_double);
    double med = reps % 2 ? times[reps / 2] : (times[reps / 2 - 1] + times[reps / 2]) / 2;
    printf("],\"seconds_median\":%.6f,\"seconds_min\":%.6f,\"mb_s\":%.2f,\"request_bytes\":%zu,"
           "\"answer_bytes\":%ld,\"cpu_s\":%.4f}\n",
           med, times[0], (double)len / med / 1e6, GRPC_SLICE_LENGTH(request), answer_len, client_cpu);
    cq_close(cq);
    grpc_channel_destroy(ch);
    grpc_slice_unref(request);
    free(times);
    free(data);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 4)
        usage();
    int port = atoi(argv[2]);
    if (port <= 0 || port > 65535)
        usage();
    model = argv[3];
    int rc;
    if (strcmp(argv[1], "rate") == 0 && argc == 9) {
        grpc_init();
        method = grpc_slice_from_static_string(METHOD);
        rc = run_rate(port, atof(argv[4]), atoi(argv[5]), atoi(argv[6]), atoi(argv[7]), atoi(argv[8]));
    } else if (strcmp(argv[1], "tensor") == 0 && argc == 6) {
        grpc_init();
        method = grpc_slice_from_static_string(METHOD);
        rc = run_tensor(port, atol(argv[4]), atoi(argv[5]));
    } else
        usage();
    grpc_shutdown();
    return rc;
}
