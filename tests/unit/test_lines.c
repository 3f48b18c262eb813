/*
 * Unit tests of lines: the capped line splitter that worker output goes
 * through (lines split across feeds, CR-LF, the cap and what it counts,
 * a cut that would split a UTF-8 character, the flush of a last line
 * without a newline).
 */
#include "check.h"
#include "lines.h"

#include <stdlib.h>
#include <string.h>

typedef struct got {
    int n;
    char line[8][LINES_MAX + 1];
    size_t len[8], dropped[8];
} got;

static void on_line(void *arg, const char *line, size_t len, size_t dropped)
{
    got *g = arg;
    if (g->n < 8) {
        memcpy(g->line[g->n], line, len);
        g->line[g->n][len] = 0;
        g->len[g->n] = len;
        g->dropped[g->n] = dropped;
    }
    g->n++;
}

static void splits_lines_across_feeds(void)
{
    lines ls = {0};
    got g = {0};
    lines_feed(&ls, "hel", 3, on_line, &g);
    CHECK(g.n == 0);
    lines_feed(&ls, "lo\nwor", 6, on_line, &g);
    CHECK(g.n == 1 && strcmp(g.line[0], "hello") == 0 && g.dropped[0] == 0);
    lines_feed(&ls, "ld\r\n\n", 5, on_line, &g);
    CHECK(g.n == 3 && strcmp(g.line[1], "world") == 0 && g.len[2] == 0);
    lines_flush(&ls, on_line, &g);
    CHECK(g.n == 3); /* nothing partial: no empty line is made up */
    lines_free(&ls);
}

static void flushes_a_last_line_without_newline(void)
{
    lines ls = {0};
    got g = {0};
    lines_feed(&ls, "Traceback\nValueError: bad", 25, on_line, &g);
    CHECK(g.n == 1);
    lines_flush(&ls, on_line, &g);
    CHECK(g.n == 2 && strcmp(g.line[1], "ValueError: bad") == 0);
    lines_free(&ls);
}

static void caps_a_long_line_and_counts_the_rest(void)
{
    lines ls = {0};
    got g = {0};
    size_t total = 3 * LINES_MAX + 17;
    char *big = malloc(total);
    memset(big, 'x', total);
    for (size_t off = 0; off < total; off += 1000) /* many feeds, no newline */
        lines_feed(&ls, big + off, total - off < 1000 ? total - off : 1000, on_line, &g);
    CHECK(g.n == 0);
    lines_feed(&ls, "\nnext\n", 6, on_line, &g);
    CHECK(g.n == 2);
    CHECK(g.len[0] == LINES_MAX && g.dropped[0] == total - LINES_MAX);
    CHECK(strcmp(g.line[1], "next") == 0 && g.dropped[1] == 0);
    free(big);
    lines_free(&ls);
}

static void a_cut_line_ends_on_a_whole_character(void)
{
    lines ls = {0};
    got g = {0};
    /* LINES_MAX - 1 ASCII bytes, then "é" (2 bytes) across the cap */
    char *buf = malloc(LINES_MAX + 8);
    memset(buf, 'a', LINES_MAX - 1);
    memcpy(buf + LINES_MAX - 1, "\xc3\xa9zz\n", 5);
    lines_feed(&ls, buf, LINES_MAX + 4, on_line, &g);
    CHECK(g.n == 1);
    CHECK(g.len[0] == LINES_MAX - 1); /* the half character is not kept */
    CHECK(g.dropped[0] == 4);         /* its 2 bytes and "zz" */
    free(buf);
    lines_free(&ls);
}

static void strips_a_carriage_return_and_feeds_again_after_a_free(void)
{
    lines ls = {0};
    got g = {0};
    lines_feed(&ls, "a\r\n", 3, on_line, &g);
    CHECK(g.n == 1 && g.len[0] == 1);
    lines_free(&ls);
    lines_feed(&ls, "b\n", 2, on_line, &g); /* fed again after a free */
    CHECK(g.n == 2 && strcmp(g.line[1], "b") == 0);
    lines_free(&ls);
}

CHECK_MAIN(CASE(splits_lines_across_feeds), CASE(flushes_a_last_line_without_newline),
           CASE(caps_a_long_line_and_counts_the_rest), CASE(a_cut_line_ends_on_a_whole_character),
           CASE(strips_a_carriage_return_and_feeds_again_after_a_free))
