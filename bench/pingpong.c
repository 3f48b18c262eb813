/*
 * pingpong — what one round trip between two processes costs on this
 * machine, with no work at all: a parent and a forked child pass a 64-byte
 * message back and forth over an AF_UNIX socket pair, each blocking in
 * read() between turns. Every request to corral makes such trips (client to
 * daemon, daemon to worker), so this is the floor under its latency.
 *
 *   pingpong ROUND_TRIPS WARMUP
 *
 * Prints one JSON object with the round trip's percentiles in microseconds.
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BENCH_TOOL "pingpong"
#include "bench_tool.h"

static int exchange(int fd, char *buf, int write_first)
{
    if (write_first && write(fd, buf, 64) != 64)
        return -1;
    for (size_t got = 0; got < 64;) {
        ssize_t r = read(fd, buf + got, 64 - got);
        if (r <= 0)
            return -1;
        got += (size_t)r;
    }
    if (!write_first && write(fd, buf, 64) != 64)
        return -1;
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 3 || atol(argv[1]) < 1 || atol(argv[2]) < 0) {
        fprintf(stderr, "usage: pingpong ROUND_TRIPS WARMUP\n");
        return 2;
    }
    long n = atol(argv[1]), warmup = atol(argv[2]);
    int sv[2];
    char buf[64] = {0};
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) {
        perror("pingpong: socketpair");
        return 1;
    }
    pid_t child = fork();
    if (child < 0) {
        perror("pingpong: fork");
        return 1;
    }
    if (child == 0) {
        close(sv[0]);
        while (exchange(sv[1], buf, 0) == 0)
            ;
        _exit(0);
    }
    close(sv[1]);
    double *t = malloc((size_t)n * sizeof *t);
    if (!t)
        return 1;
    for (long i = 0; i < warmup + n; i++) {
        double t0 = now_us();
        if (exchange(sv[0], buf, 1) < 0) {
            fprintf(stderr, "pingpong: the child went away\n");
            return 1;
        }
        if (i >= warmup)
            t[i - warmup] = now_us() - t0;
    }
    close(sv[0]);
    waitpid(child, NULL, 0);
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    double sum = 0;
    for (long i = 0; i < n; i++)
        sum += t[i];
    printf("{\"round_trips\": %ld, \"p50_us\": %.2f, \"p99_us\": %.2f, \"mean_us\": %.2f}\n", n, t[n / 2],
           t[(long)((double)(n - 1) * 0.99)], sum / (double)n);
    return 0;
}
