/*
 * worker_rtt — a worker's own time per request, with no daemon in between.
 *
 * Plays the daemon's side of docs/worker-protocol.md on an already connected
 * socket (the worker was started by bench/ with the other end as its fd 3):
 * sends LOAD, waits for READY, then sends the same INFER frame again and
 * again, one at a time, and times each INFER -> INFER_RESULT round trip.
 * That round trip is what the worker itself costs per request (its SDK's
 * framing and decoding, the model's infer, one socket round trip), so
 * corral's HTTP latency minus it is what the daemon adds.
 *
 *   worker_rtt FD LOAD_JSON BODY_FILE REQUESTS WARMUP
 *
 * BODY_FILE holds the INFER body (u32 meta length, meta JSON, tensor data)
 * exactly as the daemon would send it. Prints one JSON object with the
 * latency percentiles in microseconds.
 */
#include "proto.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BENCH_TOOL "worker_rtt"
#include "bench_tool.h"

static int sock_fd;

static void read_all(uint8_t *p, size_t n)
{
    while (n) {
        ssize_t r = read(sock_fd, p, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r == 0) {
            errno = 0;
            die("the worker closed its socket");
        }
        if (r < 0)
            die("read from the worker");
        p += r;
        n -= (size_t)r;
    }
}

static uint8_t *body_buf;
static size_t body_cap;

/* Reads one frame; its body stays in body_buf until the next call. */
static proto_header read_frame(void)
{
    uint8_t hdr[PROTO_HEADER_SIZE];
    read_all(hdr, sizeof hdr);
    proto_header h;
    if (proto_header_decode(hdr, sizeof hdr, PROTO_MAX_BODY, &h) < 0) {
        errno = 0;
        die("bad frame header from the worker");
    }
    if (h.length > body_cap) {
        body_cap = h.length;
        body_buf = realloc(body_buf, body_cap);
        if (!body_buf)
            die("out of memory");
    }
    read_all(body_buf, h.length);
    return h;
}

static void send_frame(uint8_t type, uint64_t id, const uint8_t *body, size_t len)
{
    uint8_t hdr[PROTO_HEADER_SIZE];
    proto_header_encode(hdr, type, id, (uint32_t)len);
    write_all(sock_fd, hdr, sizeof hdr);
    write_all(sock_fd, body, len);
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: worker_rtt FD LOAD_JSON BODY_FILE REQUESTS WARMUP\n");
        return 2;
    }
    sock_fd = atoi(argv[1]);
    const char *load = argv[2];
    long requests = atol(argv[4]), warmup = atol(argv[5]);
    if (requests < 1 || warmup < 0) {
        fprintf(stderr, "worker_rtt: REQUESTS must be positive and WARMUP non-negative\n");
        return 2;
    }

    FILE *f = fopen(argv[3], "rb");
    if (!f)
        die(argv[3]);
    fseek(f, 0, SEEK_END);
    long flen = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *infer = malloc(flen > 0 ? (size_t)flen : 1);
    if (!infer || fread(infer, 1, (size_t)flen, f) != (size_t)flen)
        die("reading the INFER body");
    fclose(f);

    send_frame(PROTO_LOAD, 0, (const uint8_t *)load, strlen(load));
    for (;;) {
        proto_header h = read_frame();
        if (h.type == PROTO_READY)
            break;
        if (h.type == PROTO_ERROR) {
            errno = 0;
            die("the worker's load failed");
        }
    }

    double *rtt = malloc((size_t)requests * sizeof *rtt);
    if (!rtt)
        die("out of memory");
    double total_start = now_us();
    for (long i = -warmup; i < requests; i++) {
        uint64_t id = (uint64_t)(i + warmup + 1);
        double t0 = now_us();
        send_frame(PROTO_INFER, id, infer, (size_t)flen);
        proto_header h;
        do
            h = read_frame();
        while (h.type == PROTO_PONG);
        double t1 = now_us();
        if (h.type != PROTO_INFER_RESULT || h.id != id) {
            errno = 0;
            die("the worker did not answer INFER with its INFER_RESULT");
        }
        if (i >= 0)
            rtt[i] = t1 - t0;
        if (i == -1)
            total_start = now_us();
    }
    double total = now_us() - total_start;
    send_frame(PROTO_SHUTDOWN, 0, NULL, 0);

    qsort(rtt, (size_t)requests, sizeof *rtt, cmp_double);
    double sum = 0;
    for (long i = 0; i < requests; i++)
        sum += rtt[i];
    printf("{\"requests\":%ld,\"p50_us\":%.2f,\"p90_us\":%.2f,\"p99_us\":%.2f,\"mean_us\":%.2f,\"min_us\":%.2f,"
           "\"rps\":%.1f}\n",
           requests, percentile(rtt, (size_t)requests, 50), percentile(rtt, (size_t)requests, 90),
           percentile(rtt, (size_t)requests, 99), sum / (double)requests, rtt[0], (double)requests / total * 1e6);
    free(rtt);
    free(infer);
    free(body_buf);
    return 0;
}
