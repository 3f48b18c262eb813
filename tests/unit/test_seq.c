/*
 * test_seq — a model's sequence table (seq.c): ids of both kinds, growth,
 * the FIFO of waiting jobs, the timed lists kept in deadline order, lost
 * marks and their bound.
 */
#include "check.h"
#include "seq.h"

#include <stdlib.h>
#include <string.h>

static void ids_of_both_kinds(void)
{
    seq_table t;
    seq_table_init(&t);
    CHECK(seq_find(&t, 7, NULL, 0) == NULL); /* empty, no buckets yet */
    seq *n = seq_add(&t, 7, NULL, 0);
    seq *s = seq_add(&t, 0, "7", 1);
    CHECK(n != s && t.count == 2 && t.live == 2);
    CHECK(seq_find(&t, 7, NULL, 0) == n);
    CHECK(seq_find(&t, 0, "7", 1) == s); /* 7 and "7" are different ids */
    CHECK(seq_find(&t, 8, NULL, 0) == NULL && seq_find(&t, 0, "77", 2) == NULL && seq_find(&t, 0, "", 0) == NULL);
    CHECK(s->str && strcmp(s->str, "7") == 0 && s->str_len == 1 && s->num == 0);
    const char with_nul[] = {'a', 0, 'b'};
    seq *z = seq_add(&t, 0, with_nul, 3);
    CHECK(seq_find(&t, 0, with_nul, 3) == z && seq_find(&t, 0, "a", 1) == NULL);
    seq_remove(&t, n);
    CHECK(seq_find(&t, 7, NULL, 0) == NULL && seq_find(&t, 0, "7", 1) == s && t.count == 2);
    seq_table_free(&t);
    CHECK(t.count == 0 && t.nbuckets == 0);
}

static void grows_and_finds_every_one(void)
{
    seq_table t;
    seq_table_init(&t);
    enum { N = 5000 };
    for (uint64_t i = 1; i <= N; i++)
        seq_add(&t, i * 2654435761u, NULL, 0);
    CHECK(t.count == N && t.nbuckets >= N);
    int found = 0;
    for (uint64_t i = 1; i <= N; i++)
        found += seq_find(&t, i * 2654435761u, NULL, 0) != NULL;
    CHECK(found == N);
    for (uint64_t i = 1; i <= N; i += 2)
        seq_remove(&t, seq_find(&t, i * 2654435761u, NULL, 0));
    CHECK(t.count == N / 2 && t.live == N / 2);
    CHECK(seq_find(&t, (uint64_t)1 * 2654435761u, NULL, 0) == NULL && seq_find(&t, (uint64_t)2 * 2654435761u, NULL, 0) != NULL);
    seq_table_free(&t);
}

static void fifo_in_order_and_removal_anywhere(void)
{
    seq_table t;
    seq_table_init(&t);
    seq *s = seq_add(&t, 1, NULL, 0);
    job *j[4];
    for (int i = 0; i < 4; i++) {
        j[i] = job_new(NULL, PROTO_INFER, 1);
        seq_fifo_push(&t, s, j[i]);
    }
    CHECK(s->nwaiting == 4 && t.waiting == 4 && j[2]->seq_waiting);
    seq_fifo_remove(&t, s, j[2]); /* a deadline in the middle */
    CHECK(!j[2]->seq_waiting && s->nwaiting == 3 && t.waiting == 3);
    CHECK(seq_fifo_pop(&t, s) == j[0]);
    seq_fifo_remove(&t, s, j[3]); /* the tail */
    CHECK(s->fifo_tail == j[1]);
    CHECK(seq_fifo_pop(&t, s) == j[1]);
    CHECK(seq_fifo_pop(&t, s) == NULL && s->fifo_head == NULL && s->fifo_tail == NULL && t.waiting == 0);
    for (int i = 0; i < 4; i++)
        job_free(j[i]);
    seq_table_free(&t);
}

static void timed_lists_stay_in_deadline_order(void)
{
    seq_table t;
    seq_table_init(&t);
    seq *a = seq_add(&t, 1, NULL, 0), *b = seq_add(&t, 2, NULL, 0), *c = seq_add(&t, 3, NULL, 0);
    CHECK(seq_next_deadline(&t) == 0);
    seq_set_list(&t, a, SEQ_LIST_IDLE, 300);
    seq_set_list(&t, b, SEQ_LIST_IDLE, 100); /* an earlier one (a shorter idle after a reload) goes first */
    seq_set_list(&t, c, SEQ_LIST_IDLE, 200);
    CHECK(seq_list_head(&t, SEQ_LIST_IDLE) == b && b->lnext == c && c->lnext == a && a->lnext == NULL);
    CHECK(seq_next_deadline(&t) == 100);
    seq_set_list(&t, b, SEQ_LIST_READY, 0); /* a request arrived: off the idle list */
    CHECK(seq_list_head(&t, SEQ_LIST_IDLE) == c && seq_list_head(&t, SEQ_LIST_READY) == b);
    CHECK(t.lists[SEQ_LIST_IDLE].count == 2 && t.lists[SEQ_LIST_READY].count == 1);
    CHECK(seq_next_deadline(&t) == 200);
    seq_set_list(&t, c, SEQ_LIST_NONE, 0);
    seq_mark_lost(&t, a, "gone", 50);
    CHECK(a->state == SEQ_LOST && strcmp(a->lost_msg, "gone") == 0 && t.live == 2 && seq_next_deadline(&t) == 50);
    CHECK(seq_list_head(&t, SEQ_LIST_IDLE) == NULL && seq_list_head(&t, SEQ_LIST_LOST) == a);
    seq_revive(&t, a); /* a new start of the lost id */
    CHECK(a->state == SEQ_LIVE && a->lost_msg == NULL && a->list == SEQ_LIST_NONE && t.live == 3);
    CHECK(seq_next_deadline(&t) == 0);
    seq_remove(&t, b); /* removal takes it off its list too */
    CHECK(t.lists[SEQ_LIST_READY].count == 0 && seq_list_head(&t, SEQ_LIST_READY) == NULL);
    seq_table_free(&t);
}

static void lost_marks_are_bounded(void)
{
    seq_table t;
    seq_table_init(&t);
    for (uint64_t i = 1; i <= SEQ_LOST_MAX + 10; i++)
        seq_mark_lost(&t, seq_add(&t, i, NULL, 0), "gone", 1000 + i);
    CHECK(t.lists[SEQ_LIST_LOST].count == SEQ_LOST_MAX + 10); /* marked during a walk: nothing vanishes */
    seq_trim_lost(&t);
    CHECK(t.lists[SEQ_LIST_LOST].count == SEQ_LOST_MAX && t.count == SEQ_LOST_MAX && t.live == 0);
    CHECK(seq_find(&t, 10, NULL, 0) == NULL);    /* the oldest were forgotten */
    CHECK(seq_find(&t, 11, NULL, 0) != NULL);
    CHECK(seq_list_head(&t, SEQ_LIST_LOST)->num == 11);
    seq_table_free(&t);
}

CHECK_MAIN(CASE(ids_of_both_kinds), CASE(grows_and_finds_every_one), CASE(fifo_in_order_and_removal_anywhere),
           CASE(timed_lists_stay_in_deadline_order), CASE(lost_marks_are_bounded))
