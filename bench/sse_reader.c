/*
 * sse_reader — a streamed generate answer read over HTTP/1.1 as fast as a
 * client can: the client side of bench/'s streaming section.
 *
 * One keep-alive TCP connection to 127.0.0.1:PORT (TCP_NODELAY); each request
 * is POST PATH with BODY_FILE as its JSON body, and each answer must be a
 * 200 with a chunked body, which is decoded and scanned as it arrives (no
 * copy, no per-event allocation) so that the client is never the bottleneck.
 *
 *   sse_reader first PORT PATH BODY_FILE REQUESTS WARMUP
 *       the same request again and again, one at a time; times request sent
 *       -> first bytes of the body (the first event's "data:"), and -> the
 *       body's last chunk.
 *   sse_reader pipe PORT PATH BODY_FILE REPEATS
 *       one long stream per repeat; counts its events (each ends in a blank
 *       line, "\n\n") and body bytes.
 *
 * Prints one JSON object: the percentiles in microseconds (first), or one
 * entry per repeat (pipe), and this process's own CPU seconds.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem */
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BENCH_TOOL "sse_reader"
#define BENCH_HTTP_READER
#include "bench_tool.h"

/* Longest header block or chunk-size line accepted. */


typedef struct body_scan {
    double t0, first_us, end_us;
    size_t bytes;
    long events;
    char prev;    /* the last body byte scanned, 0 when it ended an event */
    char head[8]; /* the body's first bytes */
} body_scan;

/* Scans len body bytes: events end in "\n\n" (an event's JSON holds no newline). */
static void scan(body_scan *b, const char *p, size_t len)
{
    if (!len)
        return;
    if (b->bytes == 0)
        b->first_us = now_us() - b->t0;
    if (b->bytes < sizeof b->head - 1) {
        size_t k = sizeof b->head - 1 - b->bytes;
        memcpy(b->head + b->bytes, p, k < len ? k : len);
    }
    b->bytes += len;
    const char *end = p + len;
    int pair_at_end = 0; /* the last two bytes ended an event: they start no new pair */
    if (b->prev == '\n' && *p == '\n') {
        b->events++;
        p++;
        pair_at_end = p == end;
    }
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl)
            break;
        if (nl + 1 < end && nl[1] == '\n') {
            b->events++;
            p = nl + 2;
            pair_at_end = p == end;
        } else {
            p = nl + 1;
        }
    }
    b->prev = pair_at_end ? 0 : end[-1];
}

/* Reads one answer: status line, headers, then the chunked body up to its last chunk. */
static void read_answer(body_scan *b)
{
    size_t len;
    const char *line = next_line(&len);
    if (len < 12 || strncmp(line, "HTTP/1.1 200", 12) != 0) {
        fprintf(stderr, "sse_reader: the server answered \"%.*s\"\n", (int)len, line);
        exit(1);
    }
    int chunked = 0;
    while ((line = next_line(&len)) && len > 0) {
        if (len >= 18 && strncasecmp(line, "transfer-encoding:", 18) == 0 && memmem(line, len, "chunked", 7))
            chunked = 1;
        if (len >= 11 && strncasecmp(line, "connection:", 11) == 0 && memmem(line, len, "close", 5))
            fail("the server closes the connection after this answer: no keep-alive");
    }
    if (!chunked)
        fail("the answer is not chunked: not a stream");
    for (;;) {
        line = next_line(&len);
        char *endp;
        unsigned long size = strtoul(line, &endp, 16);
        if (endp == line)
            fail("a bad chunk-size line");
        if (size == 0)
            break;
        while (size) {
            if (rpos == rend)
                fill();
            size_t take = rend - rpos < size ? rend - rpos : size;
            scan(b, rbuf + rpos, take);
            rpos += take;
            size -= take;
        }
        line = next_line(&len);
        if (len != 0)
            fail("a chunk longer than its size line says");
    }
    while (next_line(&len) && len > 0)
        ; /* trailers, then the blank line that ends the body */
    b->end_us = now_us() - b->t0;
    if (b->bytes && strncmp(b->head, "data:", b->bytes < 5 ? b->bytes : 5) != 0)
        fail("the body does not start with \"data:\": not a server-sent event stream");
}

static body_scan request(const char *req, size_t req_len)
{
    body_scan b = {0};
    b.t0 = now_us();
    write_all(conn_fd, req, req_len);
    read_answer(&b);
    return b;
}

/* The whole request, head and body, in one buffer: one write() sends it. */
static char *build_request(const char *path, const char *body_file, size_t *len)
{
    FILE *f = fopen(body_file, "rb");
    if (!f)
        die(body_file);
    fseek(f, 0, SEEK_END);
    long blen = ftell(f);
    fseek(f, 0, SEEK_SET);
    char head[1024];
    int hlen = snprintf(head, sizeof head,
                        "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                        "Content-Length: %ld\r\n\r\n",
                        path, blen);
    if (blen < 0 || hlen < 0 || (size_t)hlen >= sizeof head)
        fail("the request head does not fit");
    char *req = malloc((size_t)hlen + (size_t)blen + 1);
    if (!req)
        die("out of memory");
    memcpy(req, head, (size_t)hlen);
    if (fread(req + hlen, 1, (size_t)blen, f) != (size_t)blen)
        die("reading the request body");
    fclose(f);
    *len = (size_t)hlen + (size_t)blen;
    return req;
}

static void usage(void)
{
    fprintf(stderr, "usage: sse_reader first PORT PATH BODY_FILE REQUESTS WARMUP\n"
                    "       sse_reader pipe PORT PATH BODY_FILE REPEATS\n");
    exit(2);
}

int main(int argc, char **argv)
{
    if (argc < 2)
        usage();
    int first = strcmp(argv[1], "first") == 0;
    if ((first && argc != 7) || (!first && (strcmp(argv[1], "pipe") != 0 || argc != 6)))
        usage();
    int port = atoi(argv[2]);
    long requests = atol(argv[5]), warmup = first ? atol(argv[6]) : 0;
    if (port <= 0 || port > 65535 || requests < 1 || warmup < 0) {
        fprintf(stderr, "sse_reader: bad PORT, or REQUESTS (REPEATS) not positive, or WARMUP negative\n");
        return 2;
    }
    size_t req_len;
    char *req = build_request(argv[3], argv[4], &req_len);
    rbuf = malloc(READ_BUFFER);
    if (!rbuf)
        die("out of memory");

    http_connect(port);

    double cpu0 = cpu_s();
    if (first) {
        double *t_first = malloc((size_t)requests * sizeof *t_first);
        double *t_end = malloc((size_t)requests * sizeof *t_end);
        if (!t_first || !t_end)
            die("out of memory");
        for (long i = -warmup; i < requests; i++) {
            body_scan b = request(req, req_len);
            if (!b.bytes)
                fail("an empty stream");
            if (i >= 0) {
                t_first[i] = b.first_us;
                t_end[i] = b.end_us;
            }
        }
        print_first_end(t_first, t_end, (size_t)requests, cpu0);
    } else {
        printf("{\"runs\":[");
        for (long i = 0; i < requests; i++) {
            double c0 = cpu_s();
            body_scan b = request(req, req_len);
            printf("%s{\"events\":%ld,\"bytes\":%zu,\"first_us\":%.1f,\"end_us\":%.1f,\"cpu_s\":%.4f}", i ? "," : "",
                   b.events, b.bytes, b.first_us, b.end_us, cpu_s() - c0);
        }
        printf("]}\n");
    }
    close(conn_fd);
    free(req);
    free(rbuf);
    return 0;
}
