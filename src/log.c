/*
 * log — timestamped log lines on stderr, text or JSON; see log.h.
 */
#include "log.h"

#include "sb.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>

int log_threshold = LOG_INFO;
int log_json;

static const char *const names[] = {"error", "warn", "info", "debug"};

int log_level_parse(const char *name)
{
    for (int l = 0; l < 4; l++)
        if (strcasecmp(name, names[l]) == 0)
            return l;
    return strcasecmp(name, "warning") == 0 ? LOG_WARN : -1;
}

const char *log_level_name(int level)
{
    return level >= LOG_ERROR && level <= LOG_DEBUG ? names[level] : "off";
}

void log_timestamp(char *buf, size_t len)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
             tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(tv.tv_usec / 1000));
}

/* One write per line so lines from concurrent processes never interleave. */
static void emit(const char *line, size_t len)
{
    fwrite(line, 1, len, stderr);
    fflush(stderr);
}

/* {"time":...,"level":...,<ctx fields>,[extra,]"message":...}\n */
static void json_line(enum log_level level, const log_ctx *ctx, const char *extra, const char *msg, size_t len)
{
    char when[32];
    log_timestamp(when, sizeof when);
    sb b;
    sb_init(&b, 256 + len);
    sb_printf(&b, "{\"time\":\"%s\",\"level\":\"%s\"", when, names[level]);
    if (ctx && ctx->model) {
        sb_adds(&b, ",\"model\":");
        sb_json_str(&b, ctx->model, strlen(ctx->model));
    }
    if (ctx && ctx->instance >= 0)
        sb_printf(&b, ",\"instance\":%d", ctx->instance);
    if (ctx && ctx->pid > 0)
        sb_printf(&b, ",\"pid\":%d", ctx->pid);
    if (ctx && ctx->request)
        sb_printf(&b, ",\"request\":%llu", (unsigned long long)ctx->request);
    if (extra)
        sb_adds(&b, extra);
    sb_adds(&b, ",\"message\":");
    sb_json_str(&b, msg, len); /* any bytes: worker output and file names included (utf8.h) */
    sb_adds(&b, "}\n");
    emit(b.p, b.len);
    sb_free(&b);
}

static void vlog(enum log_level level, const log_ctx *ctx, const char *fmt, va_list ap)
{
    if ((int)level > log_threshold)
        return;
    char msg[2048];
    int m = vsnprintf(msg, sizeof msg, fmt, ap);
    size_t len = m < 0 ? 0 : (size_t)m >= sizeof msg ? sizeof msg - 1 : (size_t)m;
    if (log_json) {
        json_line(level, ctx, NULL, msg, len);
        return;
    }
    char when[32], line[2200];
    log_timestamp(when, sizeof when);
    int n = snprintf(line, sizeof line, "%s corral %s: %.*s\n", when, names[level], (int)len, msg);
    emit(line, n < 0 ? 0 : (size_t)n >= sizeof line ? sizeof line - 1 : (size_t)n);
}

void log_with(enum log_level level, const log_ctx *ctx, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(level, ctx, fmt, ap);
    va_end(ap);
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(level, NULL, fmt, ap);
    va_end(ap);
}

void log_worker_line(const log_ctx *ctx, const char *stream, const char *line, size_t len, int cut)
{
    if (LOG_INFO > log_threshold)
        return;
    if (log_json) {
        char extra[64];
        snprintf(extra, sizeof extra, ",\"stream\":\"%s\"%s", stream, cut ? ",\"cut\":true" : "");
        json_line(LOG_INFO, ctx, extra, line, len);
        return;
    }
    log_msg(LOG_INFO, "%s/%d: %.*s%s", ctx->model, ctx->instance, (int)len, line, cut ? " [...]" : "");
}
