/*
 * log — the daemon's log lines on stderr.
 *
 * One line per event, prefixed with a UTC timestamp and the level. Called on
 * the loop thread only; never on the per-request hot path except for errors.
 */
#ifndef CORRAL_LOG_H
#define CORRAL_LOG_H

#include <stddef.h>

enum log_level { LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG };

extern int log_threshold;

/* The current UTC time as log lines write it: "2026-12-01T10:00:00.000Z". */
void log_timestamp(char *buf, size_t len);

void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

#endif
