/*
 * Unit tests of restart_delay, the restart budget and backoff of
 * supervision (docs/supervision.md): which exits count as recent, when the
 * budget is spent, the immediate restart after a long healthy run, and
 * the doubling backoff with its ceiling.
 */
#include "check.h"
#include "model_internal.h"

#include <stdint.h>

/* The manifest's defaults: 5 restarts within 60 s, backoff from 100 ms to 30 s. */
static const restart_policy DEFAULTS = {5, 60000, 100, 30000};

#define NOW 1000000000u /* a monotonic clock well past every window here */

static void long_healthy_run_restarts_at_once(void)
{
    int recent = -1;
    CHECK(restart_delay(&DEFAULTS, NULL, 0, NOW, NOW - 60001, &recent) == 0);
    CHECK(recent == 0);
    /* healthy for exactly the window is not longer than it: backoff */
    CHECK(restart_delay(&DEFAULTS, NULL, 0, NOW, NOW - 60000, &recent) == 100);
}

static void short_run_or_never_ready_backs_off(void)
{
    int recent = -1;
    CHECK(restart_delay(&DEFAULTS, NULL, 0, NOW, NOW - 5, &recent) == 100);
    CHECK(recent == 0);
    /* never became ready (ready_ms 0): not a healthy run however long it took */
    CHECK(restart_delay(&DEFAULTS, NULL, 0, NOW, 0, &recent) == 100);
}

static void backoff_doubles_per_recent_restart(void)
{
    uint64_t at[4] = {NOW - 10, NOW - 20, NOW - 30, NOW - 40};
    int recent = -1;
    CHECK(restart_delay(&DEFAULTS, at, 1, NOW, NOW - 5, &recent) == 200);
    CHECK(recent == 1);
    CHECK(restart_delay(&DEFAULTS, at, 2, NOW, NOW - 5, &recent) == 400);
    CHECK(restart_delay(&DEFAULTS, at, 3, NOW, NOW - 5, &recent) == 800);
    CHECK(restart_delay(&DEFAULTS, at, 4, NOW, NOW - 5, &recent) == 1600);
    CHECK(recent == 4);
    /* a recent restart means backoff even after a long healthy run */
    CHECK(restart_delay(&DEFAULTS, at, 1, NOW, NOW - 120000, &recent) == 200);
}

static void backoff_stops_at_its_ceiling(void)
{
    restart_policy p = {1000, 60000, 100, 30000};
    uint64_t at[64];
    for (int i = 0; i < 64; i++)
        at[i] = NOW - (uint64_t)i;
    int recent = -1;
    CHECK(restart_delay(&p, at, 8, NOW, 0, &recent) == 25600);
    CHECK(restart_delay(&p, at, 9, NOW, 0, &recent) == 30000);
    /* many doublings: the ceiling, no overflow */
    CHECK(restart_delay(&p, at, 64, NOW, 0, &recent) == 30000);
    CHECK(recent == 64);
    /* a ceiling that is not a power-of-two multiple of the floor */
    restart_policy odd = {1000, 60000, 300, 1000};
    CHECK(restart_delay(&odd, at, 2, NOW, 0, &recent) == 1000);
    /* floor equal to ceiling: no growth */
    restart_policy flat = {1000, 60000, 250, 250};
    CHECK(restart_delay(&flat, at, 5, NOW, 0, &recent) == 250);
}

static void only_restarts_within_the_window_count(void)
{
    /* in any order; the window's edge still counts */
    uint64_t at[5] = {NOW - 60001, NOW - 1, NOW - 60000, NOW - 500000, NOW - 30000};
    int recent = -1;
    CHECK(restart_delay(&DEFAULTS, at, 5, NOW, NOW - 5, &recent) == 800);
    CHECK(recent == 3);
    /* every restart long ago: as good as none */
    uint64_t old[3] = {NOW - 70000, NOW - 80000, NOW - 90000};
    CHECK(restart_delay(&DEFAULTS, old, 3, NOW, NOW - 65000, &recent) == 0);
    CHECK(recent == 0);
    /* only the first nrestarts entries are read */
    CHECK(restart_delay(&DEFAULTS, at, 1, NOW, NOW - 5, &recent) == 100);
    CHECK(recent == 0);
}

static void budget_spent_gives_up(void)
{
    uint64_t at[6] = {NOW - 1, NOW - 2, NOW - 3, NOW - 4, NOW - 5, NOW - 6};
    int recent = -1;
    CHECK(restart_delay(&DEFAULTS, at, 4, NOW, NOW - 5, &recent) == 1600);
    CHECK(restart_delay(&DEFAULTS, at, 5, NOW, NOW - 5, &recent) == RESTART_GIVE_UP);
    CHECK(recent == 5);
    CHECK(restart_delay(&DEFAULTS, at, 6, NOW, NOW - 5, &recent) == RESTART_GIVE_UP);
    CHECK(recent == 6);
    /* restarts outside the window do not spend it */
    uint64_t mixed[6] = {NOW - 1, NOW - 2, NOW - 3, NOW - 4, NOW - 70000, NOW - 80000};
    CHECK(restart_delay(&DEFAULTS, mixed, 6, NOW, NOW - 5, &recent) == 1600);
    CHECK(recent == 4);
}

static void zero_budget_gives_up_at_the_first_exit(void)
{
    restart_policy p = {0, 60000, 100, 30000};
    int recent = -1;
    CHECK(restart_delay(&p, NULL, 0, NOW, NOW - 120000, &recent) == RESTART_GIVE_UP);
    CHECK(recent == 0);
}

static void zero_backoff_restarts_at_once(void)
{
    restart_policy p = {5, 60000, 0, 0};
    uint64_t at[2] = {NOW - 1, NOW - 2};
    int recent = -1;
    CHECK(restart_delay(&p, at, 2, NOW, NOW - 5, &recent) == 0);
    CHECK(recent == 2);
}

static void zero_window_counts_only_this_instant(void)
{
    restart_policy p = {2, 0, 100, 30000};
    uint64_t at[3] = {NOW, NOW - 1, NOW};
    int recent = -1;
    /* healthy for 1 ms is longer than a window of 0 */
    CHECK(restart_delay(&p, at + 1, 1, NOW, NOW - 1, &recent) == 0);
    CHECK(recent == 0);
    CHECK(restart_delay(&p, at, 2, NOW, NOW - 1, &recent) == 200);
    CHECK(recent == 1);
    CHECK(restart_delay(&p, at, 3, NOW, NOW - 1, &recent) == RESTART_GIVE_UP);
}

static void same_inputs_same_answer(void)
{
    uint64_t at[3] = {NOW - 10, NOW - 20, NOW - 70000};
    uint64_t copy[3] = {NOW - 10, NOW - 20, NOW - 70000};
    int r1 = -1, r2 = -1;
    int64_t d1 = restart_delay(&DEFAULTS, at, 3, NOW, NOW - 5, &r1);
    int64_t d2 = restart_delay(&DEFAULTS, at, 3, NOW, NOW - 5, &r2);
    CHECK(d1 == 400 && d2 == 400 && r1 == 2 && r2 == 2);
    CHECK(memcmp(at, copy, sizeof at) == 0);
}

/* Past RESTART_HISTORY restarts the newest times are still recorded, so a crash loop still spends its budget. */
static void history_keeps_the_newest(void)
{
    uint64_t at[RESTART_HISTORY];
    int n = 0;
    for (uint64_t k = 0; k < 200; k++)
        restart_record(at, &n, NOW + k * 10);
    CHECK(n == RESTART_HISTORY);
    CHECK(at[RESTART_HISTORY - 1] == NOW + 199 * 10);
    CHECK(at[0] == NOW + (200 - RESTART_HISTORY) * 10);
    int recent = -1;
    CHECK(restart_delay(&DEFAULTS, at, n, NOW + 2000, 0, &recent) == RESTART_GIVE_UP);
    CHECK(recent == RESTART_HISTORY);
}

CHECK_MAIN(CASE(history_keeps_the_newest), CASE(long_healthy_run_restarts_at_once), CASE(short_run_or_never_ready_backs_off),
           CASE(backoff_doubles_per_recent_restart), CASE(backoff_stops_at_its_ceiling),
           CASE(only_restarts_within_the_window_count), CASE(budget_spent_gives_up),
           CASE(zero_budget_gives_up_at_the_first_exit), CASE(zero_backoff_restarts_at_once),
           CASE(zero_window_counts_only_this_instant), CASE(same_inputs_same_answer))
