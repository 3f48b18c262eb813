/*
 * job — jobs, and the per-model priority queue of them; see job.h.
 */
#include "job.h"
#include "shm.h"
#include "xmalloc.h"

#include <stdint.h>
#include <stdlib.h>

static uint64_t next_job_id = 1;

static struct {
    job **v;
    size_t n, cap;
} heap;

static void heap_set(size_t i, job *j)
{
    heap.v[i] = j;
    j->heap_index = i;
}

static void sift_up(size_t i)
{
    job *j = heap.v[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (heap.v[parent]->deadline_ms <= j->deadline_ms)
            break;
        heap_set(i, heap.v[parent]);
        i = parent;
    }
    heap_set(i, j);
}

static void sift_down(size_t i)
{
    job *j = heap.v[i];
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= heap.n)
            break;
        if (child + 1 < heap.n && heap.v[child + 1]->deadline_ms < heap.v[child]->deadline_ms)
            child++;
        if (heap.v[child]->deadline_ms >= j->deadline_ms)
            break;
        heap_set(i, heap.v[child]);
        i = child;
    }
    heap_set(i, j);
}

void sched_deadline_track(job *j)
{
    if (j->heap_index != SIZE_MAX || !j->deadline_ms)
        return;
    if (heap.n == heap.cap) {
        heap.cap = heap.cap ? heap.cap * 2 : 256;
        heap.v = xrealloc(heap.v, heap.cap * sizeof *heap.v);
    }
    heap_set(heap.n++, j);
    sift_up(heap.n - 1);
}

void sched_deadline_untrack(job *j)
{
    size_t i = j->heap_index;
    if (i == SIZE_MAX)
        return;
    j->heap_index = SIZE_MAX;
    job *last = heap.v[--heap.n];
    if (i == heap.n)
        return;
    heap_set(i, last);
    sift_up(i);
    sift_down(last->heap_index);
}

job *sched_deadline_next(void)
{
    return heap.n ? heap.v[0] : NULL;
}

job *job_new(struct model *m, uint8_t kind, int priority)
{
    job *j = xcalloc(1, sizeof *j);
    j->id = next_job_id++;
    j->model = m;
    j->kind = kind;
    j->priority = priority;
    j->heap_index = SIZE_MAX;
    return j;
}

void job_free(job *j)
{
    if (!j)
        return;
    sched_deadline_untrack(j);
    shm_unref(j->shm);
    free(j->frame);
    free(j->pieces);
    free(j->data_owned);
    free(j);
}

void sched_init(sched_queue *q, int levels)
{
    for (int i = 0; i <= SCHED_MAX_LEVELS; i++)
        q->head[i] = q->tail[i] = NULL;
    q->nonempty[0] = q->nonempty[1] = 0;
    q->levels = levels < 1 ? 1 : levels > SCHED_MAX_LEVELS ? SCHED_MAX_LEVELS : levels;
    q->count = 0;
}

void sched_push(sched_queue *q, job *j)
{
    int l = j->priority < 1 ? 1 : j->priority > q->levels ? q->levels : j->priority;
    j->priority = l;
    j->next = NULL;
    j->prev = q->tail[l];
    if (q->tail[l])
        q->tail[l]->next = j;
    else
        q->head[l] = j;
    q->tail[l] = j;
    q->nonempty[l >> 6] |= 1ULL << (l & 63);
    j->queued = 1;
    q->count++;
}

void sched_remove(sched_queue *q, job *j)
{
    int l = j->priority;
    if (j->prev)
        j->prev->next = j->next;
    else
        q->head[l] = j->next;
    if (j->next)
        j->next->prev = j->prev;
    else
        q->tail[l] = j->prev;
    if (!q->head[l])
        q->nonempty[l >> 6] &= ~(1ULL << (l & 63));
    j->next = j->prev = NULL;
    j->queued = 0;
    q->count--;
}

job *sched_pop(sched_queue *q)
{
    int l;
    if (q->nonempty[0])
        l = __builtin_ctzll(q->nonempty[0]);
    else if (q->nonempty[1])
        l = 64 + __builtin_ctzll(q->nonempty[1]);
    else
        return NULL;
    job *j = q->head[l];
    sched_remove(q, j);
    return j;
}
