/*
 * Unit tests of dispatch_pick, the scheduler's choice of instance: the
 * least busy ready instance, turns among equally busy ones from the
 * round-robin cursor, the concurrency cap, and the slots that take no work
 * (starting, exited, retiring, being replaced); and dispatch_pick_start,
 * a sequence's start to the fewest live sequences. The slots are plain
 * structs here: no process, no loop.
 */
#include "check.h"
#include "model_internal.h"

#include <string.h>

#define N 4

static slot slots[N];
static inst *ptrs[N];
static manifest mf;
static struct model m;

/* N ready, idle instances with the given concurrency; the cursor at 0. */
static void setup(int concurrency)
{
    memset(slots, 0, sizeof slots);
    memset(&m, 0, sizeof m);
    memset(&mf, 0, sizeof mf);
    mf.concurrency = concurrency;
    for (int i = 0; i < N; i++) {
        slots[i].in.id = i;
        slots[i].in.state = INST_READY;
        ptrs[i] = &slots[i].in;
    }
    m.slots = ptrs;
    m.nslots = N;
    m.mf = &mf;
}

static void an_idle_instance_from_the_cursor_on(void)
{
    setup(1);
    CHECK(dispatch_pick(&m) == ptrs[0]);
    m.rr = 2;
    CHECK(dispatch_pick(&m) == ptrs[2]);
    m.rr = 3;
    slots[3].in.inflight = 1;
    CHECK(dispatch_pick(&m) == ptrs[0]); /* wraps past the end */
}

static void the_least_busy_instance(void)
{
    setup(8);
    int busy[N] = {3, 2, 5, 2};
    for (int i = 0; i < N; i++)
        slots[i].in.inflight = busy[i];
    CHECK(dispatch_pick(&m) == ptrs[1]); /* the first of the two with 2 */
    m.rr = 2;
    CHECK(dispatch_pick(&m) == ptrs[3]); /* from the cursor, 3 comes before 1 */
}

static void none_when_every_instance_is_at_its_concurrency(void)
{
    setup(2);
    for (int i = 0; i < N; i++)
        slots[i].in.inflight = 2;
    CHECK(dispatch_pick(&m) == NULL);
    slots[2].in.inflight = 1;
    CHECK(dispatch_pick(&m) == ptrs[2]);
}

static void skips_slots_that_take_no_work(void)
{
    setup(1);
    slots[0].in.state = INST_STARTING;
    slots[1].in.exited = 1; /* its exit seen, the group not yet gone */
    slots[2].retire = 1;
    slots[3].replace = 1;
    CHECK(dispatch_pick(&m) == NULL);
    slots[3].replace = 0;
    CHECK(dispatch_pick(&m) == ptrs[3]);
    slots[3].in.state = INST_STOPPING;
    CHECK(dispatch_pick(&m) == NULL);
}

static void a_model_without_a_manifest_runs_one_at_a_time(void)
{
    setup(4);
    m.mf = NULL; /* a broken manifest while instances still run */
    slots[0].in.inflight = 1;
    CHECK(dispatch_pick(&m) == ptrs[1]);
    for (int i = 0; i < N; i++)
        slots[i].in.inflight = 1;
    CHECK(dispatch_pick(&m) == NULL);
}

static void none_without_slots(void)
{
    setup(1);
    m.nslots = 0;
    CHECK(dispatch_pick(&m) == NULL);
}

static void a_start_goes_to_the_fewest_sequences(void)
{
    setup(4);
    int seqs[N] = {2, 1, 1, 3}, busy[N] = {0, 2, 1, 0};
    for (int i = 0; i < N; i++) {
        slots[i].sequences = seqs[i];
        slots[i].in.inflight = busy[i];
    }
    CHECK(dispatch_pick_start(&m) == ptrs[2]); /* 1 and 2 have one each; 2 has less in flight */
    CHECK(dispatch_pick(&m) == ptrs[0]);       /* other requests ignore sequences */
    slots[2].in.inflight = 4;                  /* at its concurrency */
    CHECK(dispatch_pick_start(&m) == ptrs[1]);
    slots[1].retire = 1;                       /* a retiring instance takes no new start */
    CHECK(dispatch_pick_start(&m) == ptrs[0]);
    for (int i = 0; i < N; i++)
        slots[i].in.inflight = 4;
    CHECK(dispatch_pick_start(&m) == NULL);    /* a start waits; it is never pipelined */
}

CHECK_MAIN(CASE(an_idle_instance_from_the_cursor_on), CASE(the_least_busy_instance),
           CASE(none_when_every_instance_is_at_its_concurrency), CASE(skips_slots_that_take_no_work),
           CASE(a_model_without_a_manifest_runs_one_at_a_time), CASE(none_without_slots),
           CASE(a_start_goes_to_the_fewest_sequences))
