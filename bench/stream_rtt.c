/*
 * stream_rtt — a worker's own streamed answers, with no daemon in between.
 *
 * Plays the daemon's side of docs/worker-protocol.md ("Streams") on already
 * connected sockets (the worker was started by bench/ with the other ends as
 * its fds 3 and 4): sends LOAD, waits for READY, then sends a streamed
 * GENERATE and reads its CHUNK frames up to END, crediting them on the
 * health socket in batches of a quarter window (the daemon's batch), and
 * whatever it owes once the worker has been silent for 1 ms, so that a
 * worker waiting for its window never waits long. So its flow control
 * costs the worker as little as the protocol allows: the daemon also
 * credits each time it holds none of the stream, which for a fast client is
 * far more often, and every CREDIT wakes the worker's health thread. It
 * reads as soon as bytes arrive, though, so it is woken every few frames
 * (it counts its reads), and each waking costs the worker's send.
 *
 *   stream_rtt first FD HEALTH_FD LOAD_JSON BODY_FILE REQUESTS WARMUP
 *       the same GENERATE again and again, one at a time; times GENERATE
 *       sent -> first CHUNK read, and -> END read: the model's own time to
 *       its first chunk, which corral's HTTP figure less it is what the
 *       daemon adds.
 *   stream_rtt pipe FD HEALTH_FD LOAD_JSON BODY_FILE REPEATS
 *       one long stream per repeat, as fast as the worker makes it: the bare
 *       pipe that corral's stream through HTTP is compared with.
 *
 * BODY_FILE holds the GENERATE body (u32 meta length, meta JSON, request
 * body) exactly as the daemon would send it. Prints one JSON object: the
 * percentiles in microseconds (first), or one entry per repeat (pipe, with
 * the read() calls the stream took), and this process's own CPU seconds.
 */
#include "proto.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BENCH_TOOL "stream_rtt"
#include "bench_tool.h"

/* Credit is sent once this much is owed: a quarter of the window, the daemon's batch. */
#define CREDIT_BATCH (PROTO_STREAM_WINDOW / 4)
/* ... or once the worker has sent nothing for this long while some is owed. */
#define IDLE_CREDIT_MS 1
/* What one read() may take. */
#define READ_BUFFER (256 * 1024)

static int sock_fd, health_fd;

/* Bytes read from the worker and not yet parsed: rbuf[rpos, rend). */
static uint8_t *rbuf;
static size_t rpos, rend, rcap;

/* The stream being read: its id and the CHUNK bytes consumed but not yet credited. */
static uint64_t credit_id;
static uint32_t credit_owed;
/* read() calls that returned bytes, since the current stream began. */
static long reads;

static void send_frame(int fd, uint8_t type, uint64_t id, const uint8_t *body, size_t len)
{
    uint8_t hdr[PROTO_HEADER_SIZE];
    proto_header_encode(hdr, type, id, (uint32_t)len);
    write_all(fd, hdr, sizeof hdr);
    if (len)
        write_all(fd, body, len);
}

/* Sends the CREDIT owed for the current stream, if any. */
static void pay_credit(void)
{
    if (!credit_owed)
        return;
    uint8_t n[4];
    proto_put_u32(n, credit_owed);
    send_frame(health_fd, PROTO_CREDIT, credit_id, n, sizeof n);
    credit_owed = 0;
}

/* Makes at least want bytes available at rbuf + rpos, crediting what was consumed as it goes. */
static void need(size_t want)
{
    if (rend - rpos >= want)
        return;
    if (rpos) {
        memmove(rbuf, rbuf + rpos, rend - rpos);
        rend -= rpos;
        rpos = 0;
    }
    if (want > rcap) {
        size_t cap = rcap ? rcap : READ_BUFFER;
        while (cap < want)
            cap *= 2;
        rcap = cap;
        rbuf = realloc(rbuf, rcap);
        if (!rbuf)
            die("out of memory");
    }
    while (rend < want) {
        if (credit_owed >= CREDIT_BATCH)
            pay_credit();
        ssize_t r = read(sock_fd, rbuf + rend, rcap - rend);
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            pay_credit(); /* silent for IDLE_CREDIT_MS (SO_RCVTIMEO): it may be waiting for its window */
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        if (r == 0) {
            errno = 0;
            die("the worker closed its socket");
        }
        if (r < 0)
            die("read from the worker");
        rend += (size_t)r;
        reads++;
    }
}

/* Reads one frame; its body (*body) stays valid until the next call. */
static proto_header read_frame(const uint8_t **body)
{
    need(PROTO_HEADER_SIZE);
    proto_header h;
    if (proto_header_decode(rbuf + rpos, PROTO_HEADER_SIZE, PROTO_MAX_BODY, &h) < 0) {
        errno = 0;
        die("bad frame header from the worker");
    }
    need(PROTO_HEADER_SIZE + (size_t)h.length);
    *body = rbuf + rpos + PROTO_HEADER_SIZE;
    rpos += PROTO_HEADER_SIZE + (size_t)h.length;
    return h;
}

static void die_on_error(proto_header h, const uint8_t *body)
{
    if (h.type != PROTO_ERROR)
        return;
    fprintf(stderr, "stream_rtt: the worker answered ERROR: %.*s\n", (int)h.length, (const char *)body);
    exit(1);
}

typedef struct stream_times {
    double first_us; /* GENERATE sent -> first CHUNK read */
    double end_us;   /* GENERATE sent -> END read */
    long chunks;
    size_t data_bytes; /* chunk data, meta excluded */
    long reads;        /* read() calls it took */
} stream_times;

/* Sends one streamed GENERATE with id and reads its answer up to END. */
static stream_times run_stream(uint64_t id, const uint8_t *generate, size_t len)
{
    stream_times st = {0};
    credit_id = id;
    credit_owed = 0;
    reads = 0;
    double t0 = now_us();
    send_frame(sock_fd, PROTO_GENERATE, id, generate, len);
    for (;;) {
        const uint8_t *body;
        proto_header h = read_frame(&body);
        if (h.type == PROTO_PONG)
            continue;
        die_on_error(h, body);
        if (h.id != id) {
            errno = 0;
            die("a frame for another request");
        }
        if (h.type == PROTO_END) {
            st.end_us = now_us() - t0;
            break;
        }
        if (h.type != PROTO_CHUNK || h.length < 4) {
            errno = 0;
            die("the worker did not stream: a frame other than CHUNK, END or ERROR");
        }
        uint32_t meta_len = proto_get_u32(body);
        if (meta_len > h.length - 4) {
            errno = 0;
            die("a CHUNK whose meta runs past its body");
        }
        if (st.chunks == 0) {
            st.first_us = now_us() - t0;
            if (meta_len == 0 || !memmem(body + 4, meta_len, "\"events\"", 8)) {
                errno = 0;
                die("the first CHUNK does not say {\"events\": true}");
            }
        } else if (meta_len) {
            errno = 0;
            die("meta on a later CHUNK");
        }
        st.chunks++;
        st.data_bytes += h.length - 4 - meta_len;
        credit_owed += PROTO_HEADER_SIZE + h.length;
    }
    credit_owed = 0; /* an ended stream needs no credit */
    st.reads = reads;
    return st;
}

static uint8_t *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        die(path);
    fseek(f, 0, SEEK_END);
    long flen = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *p = malloc(flen > 0 ? (size_t)flen : 1);
    if (!p || fread(p, 1, (size_t)flen, f) != (size_t)flen)
        die("reading the GENERATE body");
    fclose(f);
    *len = (size_t)flen;
    return p;
}

static void usage(void)
{
    fprintf(stderr, "usage: stream_rtt first FD HEALTH_FD LOAD_JSON BODY_FILE REQUESTS WARMUP\n"
                    "       stream_rtt pipe FD HEALTH_FD LOAD_JSON BODY_FILE REPEATS\n");
    exit(2);
}

int main(int argc, char **argv)
{
    if (argc < 2)
        usage();
    int first = strcmp(argv[1], "first") == 0;
    if ((first && argc != 8) || (!first && (strcmp(argv[1], "pipe") != 0 || argc != 7)))
        usage();
    sock_fd = atoi(argv[2]);
    health_fd = atoi(argv[3]);
    const char *load = argv[4];
    long requests = atol(argv[6]), warmup = first ? atol(argv[7]) : 0;
    if (requests < 1 || warmup < 0) {
        fprintf(stderr, "stream_rtt: REQUESTS (REPEATS) must be positive and WARMUP non-negative\n");
        return 2;
    }
    size_t len;
    uint8_t *generate = read_file(argv[5], &len);
    /* A read times out after IDLE_CREDIT_MS of silence, so that what is owed is paid (see need). */
    struct timeval idle = {.tv_sec = 0, .tv_usec = IDLE_CREDIT_MS * 1000};
    if (setsockopt(sock_fd, SOL_SOCKET, SO_RCVTIMEO, &idle, sizeof idle) < 0)
        die("setting SO_RCVTIMEO on the worker's socket");

    send_frame(sock_fd, PROTO_LOAD, 0, (const uint8_t *)load, strlen(load));
    for (;;) {
        const uint8_t *body;
        proto_header h = read_frame(&body);
        if (h.type == PROTO_READY)
            break;
        if (h.type == PROTO_ERROR) {
            errno = 0;
            die("the worker's load failed");
        }
    }

    double cpu0 = cpu_s();
    if (first) {
        double *t_first = malloc((size_t)requests * sizeof *t_first);
        double *t_end = malloc((size_t)requests * sizeof *t_end);
        if (!t_first || !t_end)
            die("out of memory");
        for (long i = -warmup; i < requests; i++) {
            stream_times st = run_stream((uint64_t)(i + warmup + 1), generate, len);
            if (i >= 0) {
                t_first[i] = st.first_us;
                t_end[i] = st.end_us;
            }
        }
        print_first_end(t_first, t_end, (size_t)requests, cpu0);
    } else {
        printf("{\"runs\":[");
        for (long i = 0; i < requests; i++) {
            double c0 = cpu_s();
            stream_times st = run_stream((uint64_t)(i + 1), generate, len);
            printf("%s{\"chunks\":%ld,\"data_bytes\":%zu,\"first_us\":%.1f,\"end_us\":%.1f,\"reads\":%ld,"
                   "\"cpu_s\":%.4f}",
                   i ? "," : "", st.chunks, st.data_bytes, st.first_us, st.end_us, st.reads, cpu_s() - c0);
        }
        printf("]}\n");
    }
    send_frame(sock_fd, PROTO_SHUTDOWN, 0, NULL, 0);
    free(generate);
    free(rbuf);
    return 0;
}
