/*
 * Unit tests of sb, the growable byte buffer: growth from an initialised
 * buffer and from a zeroed one (never initialised), sb_take's NUL, and
 * sb_try_reserve refusing a size that cannot be had.
 */
#include "check.h"
#include "sb.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void grows_and_takes(void)
{
    sb b;
    sb_init(&b, 4);
    for (int i = 0; i < 1000; i++)
        sb_addc(&b, (char)('a' + i % 26));
    sb_u64(&b, UINT64_MAX);
    size_t len;
    char *p = sb_take(&b, &len);
    CHECK(len == 1020 && p[len] == 0 && strcmp(p + 1000, "18446744073709551615") == 0);
    CHECK(b.p == NULL && b.len == 0);
    free(p);
}

/* A zeroed sb (as a struct initialiser leaves it) grows on first use instead of looping. */
static void a_zeroed_buffer_grows(void)
{
    sb b = {0};
    sb_adds(&b, "hello");
    CHECK(b.len == 5 && b.cap >= 6 && memcmp(b.p, "hello", 5) == 0);
    sb_free(&b);
    sb c = {0};
    CHECK(sb_try_reserve(&c, 100) == 0 && c.cap >= 101);
    sb_free(&c);
    sb d = {0};
    sb_free(&d); /* nothing to free */
}

static void try_reserve_refuses_the_impossible(void)
{
    sb b;
    sb_init(&b, 16);
    CHECK(sb_try_reserve(&b, SIZE_MAX / 2) == -ENOMEM);
    CHECK(b.cap == 16 && b.len == 0);
    sb_free(&b);
}

CHECK_MAIN(CASE(grows_and_takes), CASE(a_zeroed_buffer_grows), CASE(try_reserve_refuses_the_impossible))
