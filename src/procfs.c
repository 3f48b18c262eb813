/*
 * procfs — /proc/PID/stat and /proc/PID/statm, and passes over /proc for
 * process groups; see procfs.h.
 *
 * The parsers are hand-written rather than sscanf: they must accept only
 * what the kernel writes, never overflow on a garbled number, and stay
 * async-signal-safe (the shim's sweep in main.c parses the same lines from
 * a signal handler's context, and could share them).
 */
#include "procfs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Fields of a stat line counted from the one after COMM (proc(5) numbers them from 1: state is 3, rss 24). */
enum {
    STAT_STATE = 0,
    STAT_PPID = 1,
    STAT_PGRP = 2,
    STAT_RSS = 21,
};

static int is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\n';
}

static const char *skip_blanks(const char *p)
{
    while (is_blank(*p))
        p++;
    return p;
}

/*
 * One integer field at p: an optional '-', digits, then a blank or the end
 * of the text. When v is not NULL the value is stored there and must fit
 * in a long long; a field only skipped may be any length (vsize is a u64).
 * Returns the end of the field, or NULL when it is not an integer.
 */
static const char *parse_field(const char *p, long long *v)
{
    int negative = *p == '-';
    p += negative;
    if (*p < '0' || *p > '9')
        return NULL;
    unsigned long long u = 0;
    int overflow = 0;
    for (; *p >= '0' && *p <= '9'; p++) {
        unsigned digit = (unsigned)(*p - '0');
        if (u > (ULLONG_MAX - digit) / 10)
            overflow = 1;
        else
            u = u * 10 + digit;
    }
    if (*p && !is_blank(*p))
        return NULL;
    if (v) {
        if (overflow || u > (unsigned long long)LLONG_MAX)
            return NULL;
        *v = negative ? -(long long)u : (long long)u;
    }
    return p;
}

int procfs_parse_stat(const char *text, procfs_stat *st)
{
    long long pid;
    const char *p = parse_field(skip_blanks(text), &pid);
    if (!p || pid <= 0 || pid > INT_MAX || p[0] != ' ' || p[1] != '(')
        return -EINVAL;
    /* COMM is whatever the process named itself (prctl PR_SET_NAME): only the last ')' ends it. */
    const char *close = strrchr(p, ')');
    if (!close)
        return -EINVAL;
    st->pid = (int)pid;
    p = close + 1;
    for (int field = STAT_STATE; field <= STAT_RSS; field++) {
        p = skip_blanks(p);
        if (field == STAT_STATE) {
            if (!*p || !is_blank(p[1]))
                return -EINVAL;
            st->state = *p++;
            continue;
        }
        long long v;
        int wanted = field == STAT_PPID || field == STAT_PGRP || field == STAT_RSS;
        p = parse_field(p, wanted ? &v : NULL);
        if (!p)
            return -EINVAL;
        if (field == STAT_PPID || field == STAT_PGRP) {
            if (v < 0 || v > INT_MAX)
                return -EINVAL;
            *(field == STAT_PPID ? &st->ppid : &st->pgrp) = (int)v;
        } else if (field == STAT_RSS) {
            st->rss_pages = v;
        }
    }
    return 0;
}

int procfs_parse_statm(const char *text, uint64_t *resident_pages)
{
    long long size, resident;
    const char *p = parse_field(skip_blanks(text), &size);
    if (!p || size < 0)
        return -EINVAL;
    p = parse_field(skip_blanks(p), &resident);
    if (!p || resident < 0)
        return -EINVAL;
    *resident_pages = (uint64_t)resident;
    return 0;
}

/* Reads a small /proc file in one read (the kernel writes stat and statm whole) and NUL-terminates it. */
static int read_text(const char *path, char *buf, size_t len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    ssize_t n;
    do
        n = read(fd, buf, len - 1);
    while (n < 0 && errno == EINTR);
    int err = errno;
    close(fd);
    if (n < 0)
        return -err;
    if (n == 0)
        return -ENODATA;
    buf[n] = 0;
    return 0;
}

int procfs_read_stat(int pid, procfs_stat *st)
{
    char path[64], text[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    int rc = read_text(path, text, sizeof text);
    return rc < 0 ? rc : procfs_parse_stat(text, st);
}

int procfs_rss(int pid, uint64_t *bytes)
{
    char path[64], text[128];
    snprintf(path, sizeof path, "/proc/%d/statm", pid);
    int rc = read_text(path, text, sizeof text);
    uint64_t pages;
    if (rc < 0 || (rc = procfs_parse_statm(text, &pages)) < 0)
        return rc;
    *bytes = pages * (uint64_t)sysconf(_SC_PAGESIZE);
    return 0;
}

/* The next process of the pass that could still be read; 0 at the end of /proc. */
static int next_process(DIR *d, procfs_stat *st)
{
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        char path[64], text[1024];
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        if (read_text(path, text, sizeof text) == 0 && procfs_parse_stat(text, st) == 0)
            return 1;
    }
    return 0;
}

int procfs_group_rss(const int *pgids, size_t n, uint64_t *bytes)
{
    for (size_t i = 0; i < n; i++)
        bytes[i] = 0;
    if (!n)
        return 0;
    DIR *d = opendir("/proc");
    if (!d)
        return -errno;
    uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
    procfs_stat st;
    while (next_process(d, &st)) {
        if (st.pgrp <= 0 || st.rss_pages <= 0)
            continue;
        for (size_t i = 0; i < n; i++)
            if (pgids[i] == st.pgrp)
                bytes[i] += (uint64_t)st.rss_pages * page;
    }
    closedir(d);
    return 0;
}

int procfs_group_running(const int *pgids, size_t n)
{
    if (!n)
        return 0;
    DIR *d = opendir("/proc");
    if (!d)
        return -errno;
    int found = 0;
    procfs_stat st;
    while (!found && next_process(d, &st)) {
        if (st.state == 'Z' || st.pgrp <= 0)
            continue;
        for (size_t i = 0; i < n && !found; i++)
            found = pgids[i] == st.pgrp;
    }
    closedir(d);
    return found;
}
