/*
 * procfs — what Linux's /proc says about processes and process groups:
 * the parsing of /proc/PID/stat and /proc/PID/statm, one process's
 * resident memory, and one pass over /proc for the resident memory of
 * process groups or whether any of them still runs.
 *
 * Pure OS code: it knows pids and process groups, nothing of instances or
 * models; the caller decides which groups are whose.
 *
 * Errors: 0 (or a count, or a yes/no as documented) on success, a negative
 * errno value on failure; nothing is logged. A process that exits while it
 * is being read is simply not there.
 * Threads: no shared state; any thread may call any function. The two
 * parsers allocate nothing and call only async-signal-safe functions, so a
 * signal handler may use them on text it read itself.
 */
#ifndef CORRAL_PROCFS_H
#define CORRAL_PROCFS_H

#include <stddef.h>
#include <stdint.h>

/* The fields of one /proc/PID/stat line that corral uses. */
typedef struct procfs_stat {
    int pid;
    char state; /* 'R', 'S', 'D', 'T', 'Z' (a zombie: exited, not yet reaped), ... */
    int ppid;
    int pgrp;
    long long rss_pages; /* resident pages, as the stat line counts them */
} procfs_stat;

/*
 * Parses one /proc/PID/stat line, "PID (COMM) STATE PPID PGRP ... RSS ...",
 * up to its 24th field (rss). COMM may hold anything, spaces and ')'
 * included, so the fields are read after the last ')'. 0, or -EINVAL when
 * the line is short or a field is not what it should be (st is then
 * unspecified). text must be NUL-terminated.
 */
int procfs_parse_stat(const char *text, procfs_stat *st);

/*
 * Parses one /proc/PID/statm line, "SIZE RESIDENT SHARED ..." (in pages),
 * for its resident pages. 0, or -EINVAL. text must be NUL-terminated.
 */
int procfs_parse_statm(const char *text, uint64_t *resident_pages);

/* Reads and parses /proc/PID/stat. 0, or a negative errno (-ENOENT: no such process). */
int procfs_read_stat(int pid, procfs_stat *st);

/* The resident memory of one process, in bytes, from /proc/PID/statm: one small read. 0, or a negative errno. */
int procfs_rss(int pid, uint64_t *bytes);

/*
 * One pass over /proc: bytes[i] becomes the resident memory, in bytes, of
 * every process whose group is pgids[i] (a zombie holds none). A pgid of 0
 * or less matches nothing, so a caller may leave holes in pgids. 0, or a
 * negative errno when /proc cannot be read (bytes is then all zero).
 */
int procfs_group_rss(const int *pgids, size_t n, uint64_t *bytes);

/*
 * Whether any process of any of the groups pgids[0..n) still runs
 * (zombies do not count): 1 or 0, from one pass over /proc that stops at
 * the first one found; a negative errno when /proc cannot be read. A pgid
 * of 0 or less matches nothing.
 */
int procfs_group_running(const int *pgids, size_t n);

#endif
