/*
 * Unit tests of job.c's queue: priority order, FIFO within a level, removal from anywhere,
 * putting a job back at the head of its level, peeking, and a large queue.
 */
#include "check.h"
#include "job.h"

#include <stdint.h>
#include <stdlib.h>

static void priority_then_fifo(void)
{
    job_queue q;
    job_queue_init(&q, 3);
    job *jobs[9];
    int prio[9] = {3, 1, 2, 1, 3, 2, 0, 9, 1}; /* 0 and 9 clamp to 1 and 3 */
    for (int i = 0; i < 9; i++) {
        jobs[i] = job_new(NULL, 0, prio[i]);
        job_queue_push(&q, jobs[i]);
    }
    CHECK(q.count == 9);
    int want[9] = {1, 3, 6, 8, 2, 5, 0, 4, 7};
    for (int i = 0; i < 9; i++) {
        job *j = job_queue_pop(&q);
        CHECK(j == jobs[want[i]]);
        job_free(j);
    }
    CHECK(job_queue_pop(&q) == NULL && q.count == 0);
}

static void remove_anywhere(void)
{
    job_queue q;
    job_queue_init(&q, 2);
    job *a = job_new(NULL, 0, 1), *b = job_new(NULL, 0, 1), *c = job_new(NULL, 0, 1), *d = job_new(NULL, 0, 2);
    job_queue_push(&q, a);
    job_queue_push(&q, b);
    job_queue_push(&q, c);
    job_queue_push(&q, d);
    job_queue_remove(&q, b); /* middle */
    CHECK(!b->queued);
    job_queue_remove(&q, a); /* head */
    job_queue_remove(&q, d); /* only one of its level */
    CHECK(q.count == 1);
    CHECK(job_queue_pop(&q) == c);
    CHECK(job_queue_pop(&q) == NULL);
    CHECK(a->id != b->id && b->id != c->id);
    job_free(a);
    job_free(b);
    job_free(c);
    job_free(d);
}

/* A job taken back from a dead worker goes first in its level, behind nothing of a higher one. */
static void push_front_and_peek(void)
{
    job_queue q;
    job_queue_init(&q, 3);
    CHECK(job_queue_peek(&q) == NULL);
    job *a = job_new(NULL, 0, 2), *b = job_new(NULL, 0, 2), *hi = job_new(NULL, 0, 1), *back = job_new(NULL, 0, 2);
    job *alone = job_new(NULL, 0, 3);
    job_queue_push(&q, a);
    job_queue_push(&q, b);
    CHECK(job_queue_peek(&q) == a && q.count == 2);
    job_queue_push_front(&q, back);
    CHECK(back->queued && q.count == 3);
    CHECK(job_queue_peek(&q) == back);
    job_queue_push(&q, hi);
    job_queue_push_front(&q, alone); /* into an empty level: head and tail at once */
    CHECK(job_queue_peek(&q) == hi);
    job *want[] = {hi, back, a, b, alone};
    for (int i = 0; i < 5; i++)
        CHECK(job_queue_pop(&q) == want[i]);
    CHECK(q.count == 0 && job_queue_peek(&q) == NULL);
    job_queue_push_front(&q, alone); /* the emptied level's tail was reset */
    job_queue_push(&q, a);
    CHECK(job_queue_pop(&q) == a && job_queue_pop(&q) == alone);
    for (int i = 0; i < 5; i++)
        job_free(want[i]);
}

static void many_levels(void)
{
    job_queue q;
    job_queue_init(&q, JOB_MAX_LEVELS);
    job *hi = job_new(NULL, 0, 100), *lo = job_new(NULL, 0, 127), *top = job_new(NULL, 0, 64);
    job_queue_push(&q, lo);
    job_queue_push(&q, hi);
    job_queue_push(&q, top);
    CHECK(job_queue_pop(&q) == top);
    CHECK(job_queue_pop(&q) == hi);
    CHECK(job_queue_pop(&q) == lo);
    job_free(hi);
    job_free(lo);
    job_free(top);
}

static void large_queue(void)
{
    enum { N = 100000 };
    job_queue q;
    job_queue_init(&q, 3);
    job **jobs = malloc(N * sizeof *jobs);
    for (int i = 0; i < N; i++) {
        jobs[i] = job_new(NULL, 0, 1 + i % 3);
        job_queue_push(&q, jobs[i]);
    }
    CHECK(q.count == N);
    int last_level = 1, ordered = 1;
    uint64_t last_id = 0;
    for (int i = 0; i < N; i++) {
        job *j = job_queue_pop(&q);
        if (j->priority < last_level || (j->priority == last_level && j->id < last_id))
            ordered = 0;
        last_level = j->priority;
        last_id = j->id;
        job_free(j);
    }
    CHECK(ordered);
    CHECK(q.count == 0);
    free(jobs);
}

/* The heap yields deadlines in order, and untracking from anywhere keeps it a heap. */
static void deadline_heap(void)
{
    enum { N = 100000 };
    job **jobs = malloc(N * sizeof *jobs);
    uint64_t seed = 12345;
    for (int i = 0; i < N; i++) {
        jobs[i] = job_new(NULL, 0, 1);
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        jobs[i]->deadline_ms = 1 + (seed >> 33) % 1000000;
        job_deadline_track(jobs[i]);
    }
    job_deadline_track(jobs[0]); /* twice: no effect */
    /* free every third job: job_free untracks it */
    for (int i = 0; i < N; i += 3) {
        job_free(jobs[i]);
        jobs[i] = NULL;
    }
    uint64_t last = 0;
    int ordered = 1, count = 0;
    job *j;
    while ((j = job_deadline_next())) {
        if (j->deadline_ms < last)
            ordered = 0;
        last = j->deadline_ms;
        job_deadline_untrack(j);
        CHECK(j->heap_index == SIZE_MAX);
        count++;
    }
    CHECK(ordered);
    CHECK(count == N - (N + 2) / 3);
    for (int i = 0; i < N; i++)
        job_free(jobs[i]);
    free(jobs);
    job *none = job_new(NULL, 0, 1); /* no deadline: never tracked */
    job_deadline_track(none);
    CHECK(job_deadline_next() == NULL);
    job_free(none);
}

CHECK_MAIN(CASE(deadline_heap), CASE(priority_then_fifo), CASE(remove_anywhere), CASE(push_front_and_peek),
           CASE(many_levels), CASE(large_queue))
