/*
 * bench_tool.h — what the bench's C tools share (sse_reader, stream_rtt,
 * metrics_scrape, worker_rtt, pingpong): the clocks, dying with a reason,
 * whole writes, percentiles, and (with BENCH_HTTP_READER defined) the
 * buffered line reader of the HTTP clients and their Content-Length answers. Header-only, because each
 * tool is built by one `cc` of its own file (bench/measure.py); a tool
 * defines BENCH_TOOL, its name for messages, before including it.
 */
#ifndef BENCH_TOOL_H
#define BENCH_TOOL_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem */
#endif
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static inline double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec * 1e-3;
}

/* This process's user and system CPU, in seconds. */
static inline double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
}

/* Exits 1 with "TOOL: what[: strerror(errno)]". */
static inline void die(const char *what)
{
    fprintf(stderr, "%s: %s%s%s\n", BENCH_TOOL, what, errno ? ": " : "", errno ? strerror(errno) : "");
    exit(1);
}

/* die() without errno's text: the reason is what. */
static inline void fail(const char *what)
{
    errno = 0;
    die(what);
}

static inline void write_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            die("write");
        p += w;
        n -= (size_t)w;
    }
}

static inline int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The p-th percentile (0..100) of n sorted values, nearest rank. */
static inline double percentile(const double *sorted, size_t n, double p)
{
    size_t i = (size_t)(p / 100.0 * (double)(n - 1) + 0.5);
    return sorted[i < n ? i : n - 1];
}

/*
 * Sorts the first-chunk and end times of n timed requests (µs, from the
 * request's start) and prints them as one JSON line: the first chunk's
 * p50/p90/p99/min, the end's p50, and the CPU seconds since cpu0. Frees both.
 */
static inline void print_first_end(double *t_first, double *t_end, size_t n, double cpu0)
{
    qsort(t_first, n, sizeof *t_first, cmp_double);
    qsort(t_end, n, sizeof *t_end, cmp_double);
    printf("{\"requests\":%zu,\"p50_us\":%.2f,\"p90_us\":%.2f,\"p99_us\":%.2f,\"min_us\":%.2f,"
           "\"end_p50_us\":%.2f,\"cpu_s\":%.4f}\n",
           n, percentile(t_first, n, 50), percentile(t_first, n, 90), percentile(t_first, n, 99), t_first[0],
           percentile(t_end, n, 50), cpu_s() - cpu0);
    free(t_first);
    free(t_end);
}

#ifdef BENCH_HTTP_READER
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <sys/socket.h>

/* The connection read line by line: rbuf[rpos, rend) holds bytes read and not yet parsed. */
#define READ_BUFFER (256 * 1024)
/* Longest status line, header or chunk-size line accepted. */
#define MAX_LINE (64 * 1024)

static int conn_fd;
static char *rbuf;
static size_t rpos, rend;

/* Connects conn_fd to 127.0.0.1:port, with TCP_NODELAY. */
static inline void http_connect(int port)
{
    conn_fd = socket(AF_INET, SOCK_STREAM, 0);
    if (conn_fd < 0)
        die("socket");
    int one = 1;
    setsockopt(conn_fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(conn_fd, (struct sockaddr *)&sa, sizeof sa) < 0)
        die("connect to 127.0.0.1");
}

/* Reads more bytes into rbuf, keeping the unparsed ones. */
static inline void fill(void)
{
    if (rpos) {
        memmove(rbuf, rbuf + rpos, rend - rpos);
        rend -= rpos;
        rpos = 0;
    }
    if (rend == READ_BUFFER)
        fail("a header block or chunk-size line longer than the read buffer");
    for (;;) {
        ssize_t r = read(conn_fd, rbuf + rend, READ_BUFFER - rend);
        if (r < 0 && errno == EINTR)
            continue;
        if (r == 0)
            fail("the server closed the connection");
        if (r < 0)
            die("read from the server");
        rend += (size_t)r;
        return;
    }
}

/* The next line ending in "\r\n": its start, with *len its length without the "\r\n". */
static inline const char *next_line(size_t *len)
{
    for (;;) {
        char *nl = memmem(rbuf + rpos, rend - rpos, "\r\n", 2);
        if (nl) {
            const char *line = rbuf + rpos;
            *len = (size_t)(nl - line);
            rpos += *len + 2;
            return line;
        }
        if (rend - rpos > MAX_LINE)
            fail("a line longer than 64 KiB");
        fill();
    }
}
/* Largest answer body accepted: far above any the bench asks for. */
#define MAX_BODY (1024L * 1024 * 1024)

/*
 * Reads one answer: status line, headers, then Content-Length bytes of
 * body into *body (grown to the largest answer so far, *cap its size).
 * Returns the status, with *len the body's length. Fails on a chunked
 * answer, one without Content-Length, or one that closes the connection.
 */
static inline int http_read_answer(char **body, size_t *cap, size_t *len)
{
    size_t n;
    const char *line = next_line(&n);
    if (n < 12 || strncmp(line, "HTTP/1.1 ", 9) != 0) {
        fprintf(stderr, "%s: the server answered \"%.*s\"\n", BENCH_TOOL, (int)n, line);
        exit(1);
    }
    int status = atoi(line + 9);
    long length = -1;
    while ((line = next_line(&n)) && n > 0) {
        if (n >= 15 && strncasecmp(line, "content-length:", 15) == 0)
            length = strtol(line + 15, NULL, 10);
        if (n >= 18 && strncasecmp(line, "transfer-encoding:", 18) == 0)
            fail("the answer is chunked; this client reads only Content-Length bodies");
        if (n >= 11 && strncasecmp(line, "connection:", 11) == 0 && memmem(line, n, "close", 5))
            fail("the server closes the connection after this answer: no keep-alive");
    }
    if (length < 0 || length > MAX_BODY)
        fail("the answer has no Content-Length, or one above 1 GiB");
    if ((size_t)length > *cap) {
        free(*body);
        *cap = (size_t)length;
        *body = malloc(*cap);
        if (!*body)
            die("out of memory");
    }
    size_t got = 0;
    while (got < (size_t)length) {
        if (rpos == rend) {
            /* Large bodies go straight from the socket into place, not through rbuf. */
            rpos = rend = 0;
            ssize_t r = read(conn_fd, *body + got, (size_t)length - got);
            if (r < 0 && errno == EINTR)
                continue;
            if (r == 0)
                fail("the server closed the connection in the middle of a body");
            if (r < 0)
                die("read from the server");
            got += (size_t)r;
            continue;
        }
        size_t take = rend - rpos < (size_t)length - got ? rend - rpos : (size_t)length - got;
        memcpy(*body + got, rbuf + rpos, take);
        rpos += take;
        got += take;
    }
    *len = (size_t)length;
    return status;
}
#endif

#endif
