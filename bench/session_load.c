/*
 * session_load — the client of bench/'s sessions section (issue 16, item 6):
 * what a request carrying a session costs over one that carries none.
 *
 *   session_load fill PORT SESSIONS SIZE
 *       PUTs SESSIONS JSON sessions s00000, s00001, ... of SIZE bytes each
 *       ({"history":"xx...x"}, compact) over one keep-alive connection;
 *       every answer must be 201.
 *   session_load run PORT MODEL SESSIONS REQUESTS WARMUP
 *       over one keep-alive HTTP/1.1 connection (TCP_NODELAY), one request
 *       at a time: POST /v2/models/MODEL/infer with a small FP32 tensor
 *       and parameters.mode "read" (tests/models/session_c reads the
 *       session in place and answers the echo alone), in pairs, one
 *       request without a session and one with parameters.session naming
 *       a random one of the SESSIONS, which goes
 *       first in a pair chosen at random, so that drift falls on both
 *       alike. WARMUP untimed pairs first, then REQUESTS timed pairs. Each
 *       request is timed from its write to its answer's last byte; each
 *       answer must be 200.
 *
 * Prints one JSON object: for each kind its p50/p90/p99/min in
 * microseconds, the differences of the medians and of the p99s, and this
 * process's CPU seconds.
 */
#include <stdint.h>

#define BENCH_TOOL "session_load"
#define BENCH_HTTP_READER
#include "bench_tool.h"

static char *body;
static size_t body_cap;

static void usage(void)
{
    fprintf(stderr, "usage: session_load fill PORT SESSIONS SIZE\n"
                    "       session_load run PORT MODEL SESSIONS REQUESTS WARMUP\n");
    exit(2);
}

static void connect_to(int port)
{
    http_connect(port);
    rbuf = malloc(READ_BUFFER);
    if (!rbuf)
        die("out of memory");
}

/* Sends a request (head, then body) and reads its answer; returns the status. */
static int exchange(const char *head, size_t head_len, const char *payload, size_t payload_len)
{
    write_all(conn_fd, head, head_len);
    write_all(conn_fd, payload, payload_len);
    size_t len;
    return http_read_answer(&body, &body_cap, &len);
}

static int fill_sessions(int port, long sessions, long size)
{
    if (size < 16)
        fail("SIZE must be at least 16 bytes");
    char *payload = malloc((size_t)size + 1);
    if (!payload)
        die("out of memory");
    int pre = snprintf(payload, (size_t)size + 1, "{\"history\":\"");
    memset(payload + pre, 'x', (size_t)size - (size_t)pre - 2);
    memcpy(payload + size - 2, "\"}", 2);
    connect_to(port);
    char head[256];
    double t0 = now_us();
    for (long i = 0; i < sessions; i++) {
        int n = snprintf(head, sizeof head,
                         "PUT /v1/sessions/s%05ld HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                         "Content-Length: %ld\r\n\r\n",
                         i, size);
        int status = exchange(head, (size_t)n, payload, (size_t)size);
        if (status != 201 && status != 200) { /* created, or replaced by a run before */
            fprintf(stderr, "session_load: PUT of session %ld answered %d: %.*s\n", i, status,
                    (int)(body_cap < 300 ? body_cap : 300), body);
            return 1;
        }
    }
    printf("{\"sessions\":%ld,\"size\":%ld,\"seconds\":%.3f}\n", sessions, size, (now_us() - t0) * 1e-6);
    free(payload);
    return 0;
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next_random(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void print_kind(const char *name, double *t, size_t n)
{
    qsort(t, n, sizeof *t, cmp_double);
    printf("\"%s\":{\"requests\":%zu,\"p50_us\":%.2f,\"p90_us\":%.2f,\"p99_us\":%.2f,\"min_us\":%.2f},", name, n,
           percentile(t, n, 50), percentile(t, n, 90), percentile(t, n, 99), t[0]);
}

static int run_pairs(int port, const char *model, long sessions, long pairs, long warmup)
{
    static const char tensor[] = "{\"name\":\"INPUT0\",\"datatype\":\"FP32\",\"shape\":[4],\"data\":[1,2,3,4]}";
    char plain[512], with[512], plain_head[512], with_head[512];
    int plain_len = snprintf(plain, sizeof plain, "{\"inputs\":[%s],\"parameters\":{\"mode\":\"read\"}}", tensor);
    /* The session's id is written over the five digits after "s" for each request. */
    int with_len = snprintf(with, sizeof with,
                            "{\"inputs\":[%s],\"parameters\":{\"mode\":\"read\",\"session\":\"s00000\"}}", tensor);
    char *digits = strstr(with, "\"s00000\"") + 2;
    int plain_head_len = snprintf(plain_head, sizeof plain_head,
                                  "POST /v2/models/%s/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                                  "application/json\r\nContent-Length: %d\r\n\r\n",
                                  model, plain_len);
    int with_head_len = snprintf(with_head, sizeof with_head,
                                 "POST /v2/models/%s/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                                 "application/json\r\nContent-Length: %d\r\n\r\n",
                                 model, with_len);
    double *t_plain = malloc((size_t)pairs * sizeof *t_plain), *t_with = malloc((size_t)pairs * sizeof *t_with);
    if (!t_plain || !t_with)
        die("out of memory");
    connect_to(port);
    double cpu0 = cpu_s();
    for (long i = -warmup; i < pairs; i++) {
        uint64_t r = next_random();
        char id[24];
        snprintf(id, sizeof id, "%05ld", (long)((r >> 1) % (uint64_t)sessions));
        memcpy(digits, id, 5);
        for (int k = 0; k < 2; k++) {
            int session = (int)(r & 1) ^ k;
            double t0 = now_us();
            int status = session ? exchange(with_head, (size_t)with_head_len, with, (size_t)with_len)
                                 : exchange(plain_head, (size_t)plain_head_len, plain, (size_t)plain_len);
            double t = now_us() - t0;
            if (status != 200) {
                fprintf(stderr, "session_load: infer answered %d: %.*s\n", status,
                        (int)(body_cap < 300 ? body_cap : 300), body);
                return 1;
            }
            if (i >= 0)
                (session ? t_with : t_plain)[i] = t;
        }
    }
    double cpu = cpu_s() - cpu0;
    printf("{");
    print_kind("without", t_plain, (size_t)pairs);
    print_kind("with", t_with, (size_t)pairs);
    printf("\"added_p50_us\":%.2f,\"added_p99_us\":%.2f,\"cpu_s\":%.4f}\n",
           percentile(t_with, (size_t)pairs, 50) - percentile(t_plain, (size_t)pairs, 50),
           percentile(t_with, (size_t)pairs, 99) - percentile(t_plain, (size_t)pairs, 99), cpu);
    free(t_plain);
    free(t_with);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 5 && strcmp(argv[1], "fill") == 0) {
        int port = atoi(argv[2]);
        long sessions = atol(argv[3]), size = atol(argv[4]);
        if (port <= 0 || port > 65535 || sessions < 1 || sessions > 100000 || size < 16)
            usage();
        return fill_sessions(port, sessions, size);
    }
    if (argc == 7 && strcmp(argv[1], "run") == 0) {
        int port = atoi(argv[2]);
        long sessions = atol(argv[4]), pairs = atol(argv[5]), warmup = atol(argv[6]);
        if (port <= 0 || port > 65535 || sessions < 1 || sessions > 100000 || pairs < 1 || warmup < 0 ||
            strlen(argv[3]) > 128)
            usage();
        return run_pairs(port, argv[3], sessions, pairs, warmup);
    }
    usage();
}
