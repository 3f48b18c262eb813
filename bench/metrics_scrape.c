/*
 * metrics_scrape — GET /metrics again and again over one keep-alive HTTP/1.1
 * connection, as a Prometheus server scrapes: the client of bench/'s metrics
 * section.
 *
 *   metrics_scrape scrape PORT PATH SCRAPES WARMUP BODY_OUT
 *       connects to 127.0.0.1:PORT (TCP_NODELAY), sends WARMUP untimed
 *       scrapes and then SCRAPES timed ones, one at a time: each is GET PATH,
 *       answered 200 with a Content-Length body (what the daemon sends for
 *       /metrics), read whole into one buffer that is reused. A scrape is
 *       timed from the request's write to the body's last byte. The last body
 *       is written to BODY_OUT, for promtool and for the bench's checks.
 *   metrics_scrape fds PID REPEATS
 *       lists /proc/PID/fd REPEATS times, as the daemon lists its own
 *       descriptors for the process_open_fds gauge on every scrape (the same
 *       kernel path: one entry per open descriptor).
 *
 * Prints one JSON object: for scrape, the percentiles in microseconds, the
 * bodies' sizes (the last one's lines), the scrapes sent in all (warm-up
 * included, so that the daemon's CPU over the run can be divided by them);
 * for fds, the entries and the time per listing; for both, this process's
 * own CPU seconds.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem */
#endif
#include <arpa/inet.h>
#include <dirent.h>
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

#define BENCH_TOOL "metrics_scrape"
#define BENCH_HTTP_READER
#include "bench_tool.h"

static char *body;      /* the last answer's body */
static size_t body_cap; /* bytes allocated at body; grows only when an answer is larger */

/* Reads one answer, which must be a 200. Returns the body's length. */
static size_t read_answer(void)
{
    size_t len;
    if (http_read_answer(&body, &body_cap, &len) != 200)
        fail("the server did not answer 200");
    return len;
}

static void usage(void)
{
    fprintf(stderr, "usage: metrics_scrape scrape PORT PATH SCRAPES WARMUP BODY_OUT\n"
                    "       metrics_scrape fds PID REPEATS\n");
    exit(2);
}

static int list_fds(const char *pid, long repeats)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%s/fd", pid);
    long entries = 0;
    double cpu0 = cpu_s(), wall0 = now_us();
    for (long i = 0; i < repeats; i++) {
        DIR *d = opendir(path);
        if (!d)
            die(path);
        entries = 0;
        for (struct dirent *e; (e = readdir(d));)
            entries += e->d_name[0] != '.';
        closedir(d);
    }
    double wall_us = now_us() - wall0, cpu = cpu_s() - cpu0;
    printf("{\"repeats\":%ld,\"entries\":%ld,\"us_per_listing\":%.2f,\"cpu_us_per_listing\":%.2f,\"cpu_s\":%.4f}\n",
           repeats, entries, wall_us / (double)repeats, cpu * 1e6 / (double)repeats, cpu);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "fds") == 0) {
        long repeats = atol(argv[3]);
        if (atoi(argv[2]) <= 0 || repeats < 1)
            usage();
        return list_fds(argv[2], repeats);
    }
    if (argc != 7 || strcmp(argv[1], "scrape") != 0)
        usage();
    argv++; /* the scrape's arguments from argv[1] */
    int port = atoi(argv[1]);
    long scrapes = atol(argv[3]), warmup = atol(argv[4]);
    if (port <= 0 || port > 65535 || scrapes < 1 || warmup < 0) {
        fprintf(stderr, "metrics_scrape: bad PORT, or SCRAPES not positive, or WARMUP negative\n");
        return 2;
    }
    char req[1024];
    int req_len =
        snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/plain\r\n\r\n", argv[2]);
    if (req_len < 0 || (size_t)req_len >= sizeof req)
        fail("the request does not fit");
    rbuf = malloc(READ_BUFFER);
    double *times = malloc((size_t)scrapes * sizeof *times);
    if (!rbuf || !times)
        die("out of memory");

    http_connect(port);

    double cpu0 = cpu_s(), wall0 = now_us();
    size_t bytes = 0, bytes_min = (size_t)-1, bytes_max = 0;
    for (long i = -warmup; i < scrapes; i++) {
        double t0 = now_us();
        write_all(conn_fd, req, (size_t)req_len);
        bytes = read_answer();
        double t = now_us() - t0;
        if (i < 0)
            continue;
        times[i] = t;
        bytes_min = bytes < bytes_min ? bytes : bytes_min;
        bytes_max = bytes > bytes_max ? bytes : bytes_max;
    }
    double wall_s = (now_us() - wall0) * 1e-6, client_cpu_s = cpu_s() - cpu0;
    close(conn_fd);

    long lines = 0;
    for (const char *p = body, *end = body + bytes; p < end && (p = memchr(p, '\n', (size_t)(end - p))); p++)
        lines++;
    FILE *f = fopen(argv[5], "wb");
    if (!f || fwrite(body, 1, bytes, f) != bytes || fclose(f) != 0)
        die(argv[5]);

    qsort(times, (size_t)scrapes, sizeof *times, cmp_double);
    size_t n = (size_t)scrapes;
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += times[i];
    printf("{\"scrapes\":%ld,\"scrapes_total\":%ld,\"p50_us\":%.2f,\"p90_us\":%.2f,\"p99_us\":%.2f,"
           "\"min_us\":%.2f,\"max_us\":%.2f,\"mean_us\":%.2f,\"bytes\":%zu,\"bytes_min\":%zu,\"bytes_max\":%zu,"
           "\"lines\":%ld,\"wall_s\":%.4f,\"cpu_s\":%.4f}\n",
           scrapes, scrapes + warmup, percentile(times, n, 50), percentile(times, n, 90), percentile(times, n, 99),
           times[0], times[n - 1], sum / (double)n, bytes, bytes_min, bytes_max, lines, wall_s, client_cpu_s);
    free(times);
    free(body);
    free(rbuf);
    return 0;
}
