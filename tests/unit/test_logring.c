/*
 * Unit tests of logring: the buffer of a model's newest worker output
 * (lines appended whole, the oldest dropped at a line boundary and
 * counted, a line longer than the ring refused).
 */
#include "check.h"
#include "logring.h"

#include <stdio.h>
#include <string.h>

static void appends_lines_with_prefix_and_suffix(void)
{
    logring r = {.cap = 64};
    CHECK(logring_append(&r, "[0 out] ", 8, "hello", 5, "", 0) == 0);
    CHECK(logring_append(&r, "[1 err] ", 8, "x", 1, " [cut]", 6) == 0);
    CHECK(r.len == 14 + 16 && r.cut == 0);
    CHECK(memcmp(r.buf, "[0 out] hello\n[1 err] x [cut]\n", r.len) == 0);
    logring_free(&r);
}

/* Whatever was dropped, the ring holds whole lines, the newest last, and
 * what it dropped plus what it holds is everything ever appended. */
static void drops_the_oldest_whole_lines_and_counts_them(void)
{
    logring r = {.cap = 100};
    size_t total = 0;
    char line[32];
    for (int i = 0; i < 50; i++) {
        int n = snprintf(line, sizeof line, "line %d", i);
        CHECK(logring_append(&r, "", 0, line, (size_t)n, "", 0) == 0);
        total += (size_t)n + 1;
        CHECK(r.len <= r.cap);
        CHECK(r.cut + r.len == total);
        CHECK(r.buf[r.len - 1] == '\n');
        CHECK(r.len == 0 || memcmp(r.buf, "line ", 5) == 0); /* starts on a line */
    }
    CHECK(r.len >= 8 && memcmp(r.buf + r.len - 8, "line 49\n", 8) == 0);
    CHECK(r.cut > 0);
    logring_free(&r);
}

static void a_line_that_needs_more_than_half_empties_the_ring(void)
{
    logring r = {.cap = 32};
    CHECK(logring_append(&r, "", 0, "aaaaaaaaa", 9, "", 0) == 0);  /* 10 bytes */
    CHECK(logring_append(&r, "", 0, "bbbbbbbbb", 9, "", 0) == 0);  /* 20 */
    CHECK(logring_append(&r, "", 0, "cccccccccccccccccccc", 20, "", 0) == 0); /* 21: both old lines go */
    CHECK(r.len == 21 && r.cut == 20 && r.buf[0] == 'c');
    logring_free(&r);
}

static void refuses_a_line_longer_than_the_ring(void)
{
    logring r = {.cap = 16};
    CHECK(logring_append(&r, "", 0, "short", 5, "", 0) == 0);
    CHECK(logring_append(&r, "[0 out] ", 8, "0123456789", 10, "", 0) == -1);
    CHECK(r.len == 6 && r.cut == 0); /* unchanged */
    CHECK(logring_append(&r, "", 0, "exactly fifteen", 15, "", 0) == 0); /* 16 with its newline: fits alone */
    CHECK(r.len == 16 && r.cut == 6);
    logring_free(&r);
}

CHECK_MAIN(CASE(appends_lines_with_prefix_and_suffix), CASE(drops_the_oldest_whole_lines_and_counts_them),
           CASE(a_line_that_needs_more_than_half_empties_the_ring), CASE(refuses_a_line_longer_than_the_ring))
