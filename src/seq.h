/*
 * seq — a model's live sequences (Triton's sequence extension): the table
 * from a sequence id (an unsigned integer, or a string of at most
 * SEQ_ID_MAX bytes) to the sequence, its pinned instance, and the FIFO of
 * its requests waiting while one of them runs; and three lists that make
 * every timed step O(1): the idle sequences (released max_sequence_idle
 * after their last answer), the lost marks (an instance died under them;
 * forgotten after a while), and the ready sequences (a request waits,
 * none runs). Each list is kept in the order of its deadline: every entry
 * of a list gets the same duration, so appending keeps it sorted and the
 * one timer the owner arms is for a head.
 *
 * Pure data structure: no clock, no timer, no policy (dispatch.c decides
 * when a sequence starts, runs, idles, is lost or ends). The jobs of a
 * FIFO are linked through job->next/prev, which a waiting job uses for
 * nothing else (it is in no queue and on no instance). Loop thread only;
 * tests/unit/test_seq.c.
 */
#ifndef CORRAL_SEQ_H
#define CORRAL_SEQ_H

#include "job.h"

#include <stddef.h>
#include <stdint.h>

/* The longest string sequence id, in bytes. */
#define SEQ_ID_MAX 256
/* The most live sequences a model keeps: a start past it is refused (503), so memory stays bounded. */
#define SEQ_LIVE_MAX 65536
/* The most lost marks a model keeps; past it the oldest is forgotten. */
#define SEQ_LOST_MAX 4096

typedef enum seq_state {
    SEQ_LIVE, /* started; pinned to inst once its start was dispatched */
    SEQ_LOST, /* its instance died: only the mark (lost_msg) is left, until until_ms */
} seq_state;

typedef struct seq seq;
struct seq {
    /* read-only: the key */
    uint64_t num;     /* the integer id; 0 with str */
    char *str;        /* the string id, NUL-terminated; owned; NULL for an integer id */
    size_t str_len;
    /* the owner's */
    seq_state state;
    void *inst;       /* the pinned instance; NULL until the start is dispatched; not owned */
    job *running;     /* the request of it that is queued in the model or at the instance; not owned */
    int closing;      /* an END was admitted: no request but a START may join it */
    uint64_t until_ms; /* idle: released then; lost: forgotten then */
    char *lost_msg;   /* SEQ_LOST: why, for the 409; owned */
    /* read-only: the FIFO and the lists */
    job *fifo_head, *fifo_tail;
    size_t nwaiting;
    int list;         /* SEQ_LIST_NONE, _IDLE, _LOST or _READY */
    seq *lprev, *lnext;
    seq *hnext;       /* hash chain */
    uint32_t hash;
};

enum { SEQ_LIST_NONE, SEQ_LIST_IDLE, SEQ_LIST_LOST, SEQ_LIST_READY, SEQ_NLISTS };

typedef struct seq_list {
    seq *head, *tail;
    size_t count;
} seq_list;

typedef struct seq_table {
    seq **buckets;    /* owned */
    size_t nbuckets;  /* a power of two, or 0 before the first add */
    size_t count;     /* entries, live and lost */
    size_t live;
    size_t waiting;   /* jobs in all FIFOs */
    seq_list lists[SEQ_NLISTS]; /* [SEQ_LIST_NONE] unused */
} seq_table;

void seq_table_init(seq_table *t);
/* Frees every entry; their FIFOs must be empty (the owner answers them first). */
void seq_table_free(seq_table *t);

/* The entry of an id (str NULL: the integer num), or NULL. */
seq *seq_find(const seq_table *t, uint64_t num, const char *str, size_t len);
/* A new LIVE entry for an id that has none (the string is copied). */
seq *seq_add(seq_table *t, uint64_t num, const char *str, size_t len);
/* Unlinks and frees an entry whose FIFO is empty. */
void seq_remove(seq_table *t, seq *s);

/* Moves s onto list (SEQ_LIST_NONE: off every list), at its tail; until_ms is set for IDLE and LOST. */
void seq_set_list(seq_table *t, seq *s, int list, uint64_t until_ms);
/* The head of a list, or NULL. */
static inline seq *seq_list_head(const seq_table *t, int list)
{
    return t->lists[list].head;
}

/* A LIVE entry becomes a lost mark with msg (copied) until until_ms; its FIFO must be empty. */
void seq_mark_lost(seq_table *t, seq *s, const char *msg, uint64_t until_ms);
/*
 * Bounded memory: past SEQ_LOST_MAX marks the oldest are forgotten (their
 * ids then get Triton's 400). Separate from seq_mark_lost so that a walk
 * over the table can mark many without entries vanishing under it.
 */
void seq_trim_lost(seq_table *t);
/* A lost mark becomes a LIVE entry again (a new start of its id), on no list, pinned nowhere. */
void seq_revive(seq_table *t, seq *s);

void seq_fifo_push(seq_table *t, seq *s, job *j);
/* The oldest waiting job, removed; NULL when none. */
job *seq_fifo_pop(seq_table *t, seq *s);
/* Unlinks a waiting job of s (a deadline, a client gone). */
void seq_fifo_remove(seq_table *t, seq *s, job *j);

/* The earliest until_ms of the idle and lost heads; 0 when both lists are empty. */
uint64_t seq_next_deadline(const seq_table *t);

#endif
