/*
 * sched_bench — enqueue/dequeue cost of corral's request queue (src/job.c).
 *
 * Links the daemon's own job.c, so what is measured is the code that runs
 * on every request. Jobs are made with job_new beforehand (a request's job
 * is allocated when it arrives, not by the queue), with priorities drawn at
 * random from the model's default 3 levels. Two patterns, at each depth:
 *
 *   fill/drain  push DEPTH jobs into an empty queue (enqueue ns/op), then pop
 *               them all (dequeue ns/op);
 *   steady      with DEPTH jobs queued, push one and pop one, repeatedly:
 *               the queue's size stays at DEPTH (mixed ns/op, one op = one
 *               push or one pop).
 *
 * bench/pyqueue_bench.py runs the same patterns on Python's
 * asyncio.PriorityQueue and heapq. Output: one JSON object per line.
 *
 *   sched_bench [MIN_SECONDS] DEPTH...
 */
#include "job.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define LEVELS 3

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static int random_priority(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return 1 + (int)(rng_state % LEVELS);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

#define MAX_ROUNDS 100000

static double push_ns[MAX_ROUNDS], pop_ns[MAX_ROUNDS];

/* Fill then drain, as many rounds as fit in min_seconds (at least 5). */
static void fill_drain(size_t depth, double min_seconds)
{
    job **jobs = malloc(depth * sizeof *jobs);
    if (!jobs)
        abort();
    for (size_t i = 0; i < depth; i++)
        jobs[i] = job_new(NULL, 0, random_priority());
    job_queue *q = malloc(sizeof *q);
    if (!q)
        abort();
    job_queue_init(q, LEVELS);

    int rounds = 0;
    double start = now_s();
    while (rounds < MAX_ROUNDS && (rounds < 5 || now_s() - start < min_seconds)) {
        double t0 = now_s();
        for (size_t i = 0; i < depth; i++)
            job_queue_push(q, jobs[i]);
        double t1 = now_s();
        size_t popped = 0;
        while (job_queue_pop(q))
            popped++;
        double t2 = now_s();
        if (popped != depth) {
            fprintf(stderr, "sched_bench: popped %zu of %zu jobs\n", popped, depth);
            exit(1);
        }
        push_ns[rounds] = (t1 - t0) * 1e9 / (double)depth;
        pop_ns[rounds] = (t2 - t1) * 1e9 / (double)depth;
        rounds++;
    }
    double push = median(push_ns, rounds), pop = median(pop_ns, rounds);
    printf("{\"impl\":\"corral sched (C)\",\"pattern\":\"fill_drain\",\"depth\":%zu,\"rounds\":%d,"
           "\"enqueue_ns\":%.2f,\"dequeue_ns\":%.2f,\"enqueue_ops\":%.0f,\"dequeue_ops\":%.0f}\n",
           depth, rounds, push, pop, 1e9 / push, 1e9 / pop);
    for (size_t i = 0; i < depth; i++)
        job_free(jobs[i]);
    free(jobs);
    free(q);
}

/* DEPTH queued; then push one, pop one, for min_seconds. */
static void steady(size_t depth, double min_seconds)
{
    size_t pool = depth + 1;
    job **jobs = malloc(pool * sizeof *jobs);
    if (!jobs)
        abort();
    for (size_t i = 0; i < pool; i++)
        jobs[i] = job_new(NULL, 0, random_priority());
    job_queue *q = malloc(sizeof *q);
    if (!q)
        abort();
    job_queue_init(q, LEVELS);
    for (size_t i = 0; i < depth; i++)
        job_queue_push(q, jobs[i]);

    job *spare = jobs[depth];
    const size_t batch = 100000;
    size_t ops = 0;
    double start = now_s(), elapsed;
    do {
        for (size_t i = 0; i < batch; i++) {
            spare->priority = random_priority();
            job_queue_push(q, spare);
            spare = job_queue_pop(q);
        }
        ops += 2 * batch;
        elapsed = now_s() - start;
    } while (elapsed < min_seconds);
    if (q->count != depth) {
        fprintf(stderr, "sched_bench: %zu queued, expected %zu\n", q->count, depth);
        exit(1);
    }
    double ns = elapsed * 1e9 / (double)ops;
    printf("{\"impl\":\"corral sched (C)\",\"pattern\":\"steady\",\"depth\":%zu,\"ops\":%zu,"
           "\"mixed_ns\":%.2f,\"mixed_ops\":%.0f}\n",
           depth, ops, ns, 1e9 / ns);
    while (job_queue_pop(q))
        ;
    for (size_t i = 0; i < pool; i++)
        job_free(jobs[i]);
    free(jobs);
    free(q);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: sched_bench MIN_SECONDS DEPTH...\n");
        return 2;
    }
    double min_seconds = atof(argv[1]);
    for (int a = 2; a < argc; a++) {
        size_t depth = (size_t)strtoull(argv[a], NULL, 10);
        if (depth == 0) {
            fprintf(stderr, "sched_bench: depth must be positive: %s\n", argv[a]);
            return 2;
        }
        fill_drain(depth, min_seconds);
        steady(depth, min_seconds);
        fflush(stdout);
    }
    return 0;
}
