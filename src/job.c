/*
 * job — jobs, and the per-model priority queue of them; see job.h.
 */
#include "job.h"

#include "proto.h"
#include "shm.h"
#include "xmalloc.h"

#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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

void job_deadline_track(job *j)
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

void job_deadline_untrack(job *j)
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

job *job_deadline_next(void)
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

int job_build_frame(job *j, const char *meta, size_t meta_len, const job_piece *pieces, int n, uint8_t *owned)
{
    assert(!j->frame && !j->pieces && !j->data_owned);
    j->data_owned = owned;
    size_t data = 0;
    for (int k = 0; k < n; k++)
        data += pieces[k].len;
    if (meta_len > PROTO_MAX_BODY || data > PROTO_MAX_BODY - meta_len - 4)
        return -EFBIG;
    size_t body = 4 + meta_len + data;
    int defer = job_is_tensor(j) && data >= SHM_MIN_BYTES;
    size_t len = PROTO_HEADER_SIZE + body - (defer ? data : 0);
    uint8_t *frame = malloc(len); /* sized by the request: may fail */
    job_piece *kept = defer ? malloc((size_t)n * sizeof *kept) : NULL;
    if (!frame || (defer && !kept)) {
        free(frame);
        free(kept);
        return -ENOMEM;
    }
    proto_header_encode(frame, j->kind, j->id, (uint32_t)body);
    uint8_t *w = frame + PROTO_HEADER_SIZE;
    proto_put_u32(w, (uint32_t)meta_len);
    memcpy(w + 4, meta, meta_len);
    w += 4 + meta_len;
    if (defer) {
        memcpy(kept, pieces, (size_t)n * sizeof *kept);
        j->pieces = kept;
        j->npieces = n;
        j->pieces_len = data;
    } else {
        for (int k = 0; k < n; k++) {
            if (pieces[k].len)
                memcpy(w, pieces[k].ptr, pieces[k].len);
            w += pieces[k].len;
        }
        free(j->data_owned); /* copied: nothing points into it */
        j->data_owned = NULL;
    }
    j->frame = frame;
    j->frame_len = len;
    return 0;
}

void job_free(job *j)
{
    if (!j)
        return;
    job_deadline_untrack(j);
    if (j->on_release)
        j->on_release(j);
    if (j->on_free)
        j->on_free(j);
    shm_unref(j->shm);
    if (j->sess)
        j->sess_free(j->sess);
    free(j->frame);
    free(j->pieces);
    free(j->data_owned);
    free(j->seq_str);
    free(j);
}

void job_queue_init(job_queue *q, int levels)
{
    for (int i = 0; i <= JOB_MAX_LEVELS; i++)
        q->head[i] = q->tail[i] = NULL;
    q->nonempty[0] = q->nonempty[1] = 0;
    q->levels = levels < 1 ? 1 : levels > JOB_MAX_LEVELS ? JOB_MAX_LEVELS : levels;
    q->count = 0;
}

static int level_of(const job_queue *q, job *j)
{
    assert(!j->queued && !j->inst); /* queued or running, never both, never twice */
    int l = j->priority < 1 ? 1 : j->priority > q->levels ? q->levels : j->priority;
    j->priority = l;
    return l;
}

static void linked(job_queue *q, job *j, int l)
{
    q->nonempty[l >> 6] |= 1ULL << (l & 63);
    j->queued = 1;
    q->count++;
}

void job_queue_push(job_queue *q, job *j)
{
    int l = level_of(q, j);
    j->next = NULL;
    j->prev = q->tail[l];
    if (q->tail[l])
        q->tail[l]->next = j;
    else
        q->head[l] = j;
    q->tail[l] = j;
    linked(q, j, l);
}

void job_queue_push_front(job_queue *q, job *j)
{
    int l = level_of(q, j);
    j->prev = NULL;
    j->next = q->head[l];
    if (q->head[l])
        q->head[l]->prev = j;
    else
        q->tail[l] = j;
    q->head[l] = j;
    linked(q, j, l);
}

void job_queue_remove(job_queue *q, job *j)
{
    assert(j->queued && q->count > 0);
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

job *job_queue_peek(const job_queue *q)
{
    if (q->nonempty[0])
        return q->head[__builtin_ctzll(q->nonempty[0])];
    if (q->nonempty[1])
        return q->head[64 + __builtin_ctzll(q->nonempty[1])];
    return NULL;
}

job *job_queue_pop(job_queue *q)
{
    job *j = job_queue_peek(q);
    if (j)
        job_queue_remove(q, j);
    return j;
}
