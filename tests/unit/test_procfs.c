/*
 * Unit tests of procfs: the stat and statm parsers on fixture lines (COMM
 * with spaces and ')' inside, zombies, short and garbled lines, numbers
 * too large), then live checks against this test's own process and one
 * child it starts, kills and reaps.
 */
#include "check.h"
#include "procfs.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* A real line (cat's own), fields 1..52. */
static const char STAT_CAT[] =
    "8137 (cat) R 8135 8135 397 0 -1 4194304 100 0 0 0 0 0 0 0 20 0 1 0 408266 3133440 389 "
    "18446744073709551615 94613249138688 94613249158569 140728182838128 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0 "
    "94613249174576 94613249176192 94614096273408 140728182839947 140728182839967 140728182839967 "
    "140728182841323 0\n";

static void parses_a_real_line(void)
{
    procfs_stat st = {0};
    CHECK(procfs_parse_stat(STAT_CAT, &st) == 0);
    CHECK(st.pid == 8137);
    CHECK(st.state == 'R');
    CHECK(st.ppid == 8135);
    CHECK(st.pgrp == 8135);
    CHECK(st.rss_pages == 389);
    /* a kernel thread: process group 0, no pages */
    CHECK(procfs_parse_stat("2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 6 0 0 "
                            "18446744073709551615 0 0 0 0 0 0 0 2147483647 0 1 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n",
                            &st) == 0);
    CHECK(st.pid == 2 && st.state == 'S' && st.ppid == 0 && st.pgrp == 0 && st.rss_pages == 0);
    /* the line may end right after rss, with or without its newline */
    CHECK(procfs_parse_stat("7 (x) S 1 7 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5 100 12", &st) == 0);
    CHECK(st.rss_pages == 12);
    CHECK(procfs_parse_stat("7 (x) S 1 7 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5 100 13\n", &st) == 0);
    CHECK(st.rss_pages == 13);
}

static void comm_may_hold_anything(void)
{
    procfs_stat st = {0};
    /* spaces and parentheses: only the last ')' ends COMM */
    CHECK(procfs_parse_stat("42 (a) b (c) S 1 40 40 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5 100 7\n", &st) == 0);
    CHECK(st.pid == 42 && st.state == 'S' && st.ppid == 1 && st.pgrp == 40 && st.rss_pages == 7);
    /* a name that imitates the fields that follow it */
    CHECK(procfs_parse_stat("43 () Z 9 9 9 9) R 2 43 43 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5 100 8\n", &st) == 0);
    CHECK(st.state == 'R' && st.ppid == 2 && st.pgrp == 43 && st.rss_pages == 8);
    /* empty, and a newline inside COMM */
    CHECK(procfs_parse_stat("44 () S 1 44 44 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5 100 9\n", &st) == 0);
    CHECK(st.pgrp == 44 && st.rss_pages == 9);
    CHECK(procfs_parse_stat("45 (a\nb) S 1 45 45 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5 100 10\n", &st) == 0);
    CHECK(st.pgrp == 45 && st.rss_pages == 10);
}

static void zombie_state(void)
{
    procfs_stat st = {0};
    CHECK(procfs_parse_stat("1234 (sh) Z 1 1234 1234 0 -1 4227084 0 0 0 0 0 0 0 0 20 0 1 0 9 0 0 "
                            "18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 0 9\n",
                            &st) == 0);
    CHECK(st.state == 'Z' && st.pgrp == 1234 && st.rss_pages == 0);
}

static void refuses_short_and_garbled_lines(void)
{
    procfs_stat st;
    const char *bad[] = {
        "",
        "\n",
        "42",
        "42 (x",                                                             /* no ')' */
        "42 (x)",                                                            /* nothing after COMM */
        "42 (x) S",                                                          /* no ppid */
        "42 (x) S 1 42",                                                     /* cut after pgrp */
        "42 (x) S 1 42 42 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5 100",            /* cut before rss */
        "42 (x) S 1 42 42 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5 100 ",           /* ... with a trailing blank */
        "(x) S 1 42 42 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5 100 7",             /* no pid */
        "0 (x) S 1 42 42 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5 100 7",           /* pid 0 */
        "42x (x) S 1 42 42 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5 100 7",         /* pid not a number */
        "42(x) S 1 42 42 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5 100 7",           /* no blank before COMM */
        "42 (x) SS 1 42 42 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5 100 7",         /* state of two letters */
        "42 (x) S 1 4x2 42 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5 100 7",         /* pgrp not a number */
        "42 (x) S 1 - 42 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5 100 7",           /* a lone '-' */
        "42 (x) S -1 42 42 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5 100 7",         /* negative ppid */
        "42 (x) S 1 2147483648 42 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5 100 7",  /* pgrp past INT_MAX */
        "42 (x) S 1 42 42 0 -1 0 0 0 zz 0 0 0 0 0 20 0 1 0 5 100 7",         /* a skipped field garbled */
        "42 (x) S 1 42 42 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5 100 99999999999999999999", /* rss overflows */
        "42 (x) S 1 42 42 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5 100 7x",         /* rss not a number */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = procfs_parse_stat(bad[i], &st);
        if (rc != -EINVAL)
            fprintf(stderr, "accepted: \"%s\"\n", bad[i]);
        CHECK(rc == -EINVAL);
    }
    /* a skipped field may be larger than any integer type (vsize is a u64; only rss is kept) */
    CHECK(procfs_parse_stat("42 (x) S 1 42 42 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5 99999999999999999999999 7", &st) == 0);
    CHECK(st.rss_pages == 7);
    /* the largest values that fit */
    CHECK(procfs_parse_stat("2147483647 (x) S 2147483647 2147483647 42 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5 100 "
                            "9223372036854775807",
                            &st) == 0);
    CHECK(st.pid == INT_MAX && st.ppid == INT_MAX && st.pgrp == INT_MAX && st.rss_pages == LLONG_MAX);
}

static void parses_statm(void)
{
    uint64_t pages = 0;
    CHECK(procfs_parse_statm("765 444 415 5 0 123 0\n", &pages) == 0 && pages == 444);
    CHECK(procfs_parse_statm("1 2", &pages) == 0 && pages == 2);
    CHECK(procfs_parse_statm(" 1 3\n", &pages) == 0 && pages == 3);
    CHECK(procfs_parse_statm("0 0 0 0 0 0 0\n", &pages) == 0 && pages == 0);
    const char *bad[] = {"", "\n", "765", "765 ", "765 x 1", "a 1", "-1 5", "5 -1", "5 4x", "1 99999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK(procfs_parse_statm(bad[i], &pages) == -EINVAL);
}

/* The live checks: this process is running, in its own group, and has pages resident. */
static void reads_own_process(void)
{
    procfs_stat st = {0};
    CHECK(procfs_read_stat((int)getpid(), &st) == 0);
    CHECK(st.pid == (int)getpid());
    CHECK(st.ppid == (int)getppid());
    CHECK(st.pgrp == (int)getpgrp());
    CHECK(st.state == 'R');
    CHECK(st.rss_pages > 0);

    uint64_t rss = 0;
    CHECK(procfs_rss((int)getpid(), &rss) == 0);
    CHECK(rss > 0 && rss % (uint64_t)sysconf(_SC_PAGESIZE) == 0);
    CHECK(procfs_read_stat(INT_MAX, &st) == -ENOENT); /* past any pid_max */
    CHECK(procfs_rss(INT_MAX, &rss) == -ENOENT);

    int pgids[] = {(int)getpgrp(), INT_MAX, 0, -1};
    uint64_t bytes[4] = {1, 1, 1, 1};
    CHECK(procfs_group_rss(pgids, 4, bytes) == 0);
    CHECK(bytes[0] >= rss / 2); /* this process at least (its rss moved a little between the two reads) */
    CHECK(bytes[1] == 0 && bytes[2] == 0 && bytes[3] == 0);
    CHECK(procfs_group_rss(pgids, 0, bytes) == 0);

    CHECK(procfs_group_running(pgids, 1) == 1);
    CHECK(procfs_group_running(pgids + 1, 3) == 0);
    CHECK(procfs_group_running(pgids, 0) == 0);
    int later[] = {INT_MAX, (int)getpgrp()};
    CHECK(procfs_group_running(later, 2) == 1);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {0, ms * 1000000L};
    nanosleep(&ts, NULL);
}

/* One child in a group of its own: running while it runs, not once it is a zombie. */
static void zombie_group_is_not_running(void)
{
    pid_t child = fork();
    if (child == 0) {
        setpgid(0, 0);
        alarm(10); /* never outlives the test for long, whatever happens to it */
        for (;;)
            pause();
    }
    CHECK(child > 0);
    if (child <= 0)
        return;
    setpgid(child, child); /* also here: either order, the group exists before we look */
    int group[] = {(int)child};
    CHECK(procfs_group_running(group, 1) == 1);

    kill(child, SIGKILL);
    procfs_stat st = {0};
    for (int i = 0; i < 200 && !(procfs_read_stat((int)child, &st) == 0 && st.state == 'Z'); i++)
        sleep_ms(10);
    CHECK(st.state == 'Z');
    CHECK(st.pgrp == (int)child);
    CHECK(procfs_group_running(group, 1) == 0);
    uint64_t bytes = 1;
    CHECK(procfs_group_rss(group, 1, &bytes) == 0 && bytes == 0);

    int status;
    CHECK(waitpid(child, &status, 0) == child && WIFSIGNALED(status));
    CHECK(procfs_read_stat((int)child, &st) == -ENOENT);
}

CHECK_MAIN(CASE(parses_a_real_line), CASE(comm_may_hold_anything), CASE(zombie_state),
           CASE(refuses_short_and_garbled_lines), CASE(parses_statm), CASE(reads_own_process),
           CASE(zombie_group_is_not_running))
