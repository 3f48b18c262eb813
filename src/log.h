/*
 * log — the daemon's log lines on stderr.
 *
 * One line per event: in text (the default), a UTC timestamp, the level and
 * the message; with --log-format json, one JSON object per line: time,
 * level, model, instance, pid and request where the line has them, and
 * message. Called on the loop thread only; never on the per-request hot
 * path unless the level asks for it (the access log is debug).
 */
#ifndef CORRAL_LOG_H
#define CORRAL_LOG_H

#include <stddef.h>
#include <stdint.h>

enum log_level { LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG };

/* Lines above this level are dropped; LOG_ERROR - 1 drops every line. */
extern int log_threshold;
/* Write JSON lines instead of text. */
extern int log_json;

/* What a line is about, for the JSON format's fields. Any member may be unset (NULL, -1, 0). */
typedef struct log_ctx {
    const char *model;
    int instance; /* -1: none */
    int pid;      /* 0: none */
    uint64_t request; /* 0: none */
} log_ctx;

/* "error", "warn", "info" or "debug" (any case; "warning" too) to a level; -1 when it is none of them. */
int log_level_parse(const char *name);
const char *log_level_name(int level);

/* The current UTC time as log lines write it: "2026-12-01T10:00:00.000Z". */
void log_timestamp(char *buf, size_t len);

void log_with(enum log_level level, const log_ctx *ctx, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A line of a worker's output: "model/instance: line" in text; stream is "stdout" or "stderr". */
void log_worker_line(const log_ctx *ctx, const char *stream, const char *line, size_t len, int cut);

#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

#endif
