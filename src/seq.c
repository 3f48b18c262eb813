/*
 * seq — a model's live sequences and their FIFOs; see seq.h.
 */
#include "seq.h"

#include "xmalloc.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

void seq_table_init(seq_table *t)
{
    memset(t, 0, sizeof *t);
}

void seq_table_free(seq_table *t)
{
    for (size_t b = 0; b < t->nbuckets; b++) {
        for (seq *s = t->buckets[b], *next; s; s = next) {
            next = s->hnext;
            assert(!s->fifo_head); /* the owner answers waiting jobs first */
            free(s->str);
            free(s->lost_msg);
            free(s);
        }
    }
    free(t->buckets);
    seq_table_init(t);
}

/* FNV-1a over the id's bytes, with the kind first so that 7 and "7" differ. */
static uint32_t id_hash(uint64_t num, const char *str, size_t len)
{
    uint32_t h = 2166136261u;
    h = (h ^ (str ? 's' : 'n')) * 16777619u;
    if (str) {
        for (size_t i = 0; i < len; i++)
            h = (h ^ (uint8_t)str[i]) * 16777619u;
    } else {
        for (int i = 0; i < 8; i++)
            h = (h ^ (uint8_t)(num >> (8 * i))) * 16777619u;
    }
    return h;
}

static int same_id(const seq *s, uint64_t num, const char *str, size_t len)
{
    if (!str)
        return !s->str && s->num == num;
    return s->str && s->str_len == len && memcmp(s->str, str, len) == 0;
}

seq *seq_find(const seq_table *t, uint64_t num, const char *str, size_t len)
{
    if (!t->nbuckets)
        return NULL;
    uint32_t h = id_hash(num, str, len);
    for (seq *s = t->buckets[h & (t->nbuckets - 1)]; s; s = s->hnext)
        if (s->hash == h && same_id(s, num, str, len))
            return s;
    return NULL;
}

/* Doubles the buckets once the entries outnumber them: chains stay short. */
static void grow(seq_table *t)
{
    size_t n = t->nbuckets ? t->nbuckets * 2 : 16;
    seq **b = xcalloc(n, sizeof *b);
    for (size_t i = 0; i < t->nbuckets; i++) {
        for (seq *s = t->buckets[i], *next; s; s = next) {
            next = s->hnext;
            s->hnext = b[s->hash & (n - 1)];
            b[s->hash & (n - 1)] = s;
        }
    }
    free(t->buckets);
    t->buckets = b;
    t->nbuckets = n;
}

seq *seq_add(seq_table *t, uint64_t num, const char *str, size_t len)
{
    assert(!seq_find(t, num, str, len));
    if (t->count >= t->nbuckets)
        grow(t);
    seq *s = xcalloc(1, sizeof *s);
    s->num = str ? 0 : num;
    if (str) {
        s->str = xmalloc(len + 1);
        memcpy(s->str, str, len);
        s->str[len] = 0;
        s->str_len = len;
    }
    s->state = SEQ_LIVE;
    s->hash = id_hash(num, str, len);
    s->hnext = t->buckets[s->hash & (t->nbuckets - 1)];
    t->buckets[s->hash & (t->nbuckets - 1)] = s;
    t->count++;
    t->live++;
    return s;
}

static void list_unlink(seq_table *t, seq *s)
{
    if (s->list == SEQ_LIST_NONE)
        return;
    seq_list *l = &t->lists[s->list];
    if (s->lprev)
        s->lprev->lnext = s->lnext;
    else
        l->head = s->lnext;
    if (s->lnext)
        s->lnext->lprev = s->lprev;
    else
        l->tail = s->lprev;
    s->lprev = s->lnext = NULL;
    l->count--;
    s->list = SEQ_LIST_NONE;
}

void seq_set_list(seq_table *t, seq *s, int list, uint64_t until_ms)
{
    list_unlink(t, s);
    if (list == SEQ_LIST_IDLE || list == SEQ_LIST_LOST)
        s->until_ms = until_ms;
    if (list == SEQ_LIST_NONE)
        return;
    seq_list *l = &t->lists[list];
    /* Timed lists stay sorted: one duration per list makes this the tail; the walk covers a change of it. */
    seq *after = l->tail;
    if (list != SEQ_LIST_READY)
        while (after && after->until_ms > s->until_ms)
            after = after->lprev;
    s->lprev = after;
    s->lnext = after ? after->lnext : l->head;
    if (s->lnext)
        s->lnext->lprev = s;
    else
        l->tail = s;
    if (after)
        after->lnext = s;
    else
        l->head = s;
    l->count++;
    s->list = list;
}

void seq_remove(seq_table *t, seq *s)
{
    assert(!s->fifo_head && !s->nwaiting);
    list_unlink(t, s);
    seq **p = &t->buckets[s->hash & (t->nbuckets - 1)];
    while (*p != s)
        p = &(*p)->hnext;
    *p = s->hnext;
    t->count--;
    if (s->state == SEQ_LIVE)
        t->live--;
    free(s->str);
    free(s->lost_msg);
    free(s);
}

void seq_mark_lost(seq_table *t, seq *s, const char *msg, uint64_t until_ms)
{
    assert(s->state == SEQ_LIVE && !s->fifo_head);
    s->state = SEQ_LOST;
    t->live--;
    s->inst = NULL;
    s->running = NULL;
    s->closing = 0;
    free(s->lost_msg);
    s->lost_msg = xstrdup(msg);
    seq_set_list(t, s, SEQ_LIST_LOST, until_ms);
}

void seq_trim_lost(seq_table *t)
{
    while (t->lists[SEQ_LIST_LOST].count > SEQ_LOST_MAX)
        seq_remove(t, t->lists[SEQ_LIST_LOST].head);
}

void seq_revive(seq_table *t, seq *s)
{
    assert(s->state == SEQ_LOST);
    list_unlink(t, s);
    free(s->lost_msg);
    s->lost_msg = NULL;
    s->state = SEQ_LIVE;
    s->inst = NULL;
    s->running = NULL;
    s->closing = 0;
    t->live++;
}

void seq_fifo_push(seq_table *t, seq *s, job *j)
{
    assert(!j->queued && !j->inst && !j->seq_waiting);
    j->next = NULL;
    j->prev = s->fifo_tail;
    if (s->fifo_tail)
        s->fifo_tail->next = j;
    else
        s->fifo_head = j;
    s->fifo_tail = j;
    j->seq_waiting = 1;
    s->nwaiting++;
    t->waiting++;
}

void seq_fifo_remove(seq_table *t, seq *s, job *j)
{
    assert(j->seq_waiting);
    if (j->prev)
        j->prev->next = j->next;
    else
        s->fifo_head = j->next;
    if (j->next)
        j->next->prev = j->prev;
    else
        s->fifo_tail = j->prev;
    j->next = j->prev = NULL;
    j->seq_waiting = 0;
    s->nwaiting--;
    t->waiting--;
}

job *seq_fifo_pop(seq_table *t, seq *s)
{
    job *j = s->fifo_head;
    if (j)
        seq_fifo_remove(t, s, j);
    return j;
}

uint64_t seq_next_deadline(const seq_table *t)
{
    const seq *i = t->lists[SEQ_LIST_IDLE].head, *l = t->lists[SEQ_LIST_LOST].head;
    if (!i)
        return l ? l->until_ms : 0;
    if (!l)
        return i->until_ms;
    return i->until_ms < l->until_ms ? i->until_ms : l->until_ms;
}
