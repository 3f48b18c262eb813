/*
 * sched — per-model priority queue of jobs; see sched.h.
 */
#include "sched.h"

#include <stdlib.h>

static uint64_t next_job_id = 1;

job *job_new(struct model *m, uint8_t kind, int priority)
{
    job *j = calloc(1, sizeof *j);
    if (!j)
        abort();
    j->id = next_job_id++;
    j->model = m;
    j->kind = kind;
    j->priority = priority;
    return j;
}

void job_free(job *j)
{
    if (!j)
        return;
    free(j->frame);
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
