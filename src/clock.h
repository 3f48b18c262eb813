/*
 * clock — the daemon's one clock: milliseconds on CLOCK_MONOTONIC, for
 * deadlines, timeouts, uptimes and rate limits. Never the wall clock: a
 * change of the system time must not expire or extend a request.
 */
#ifndef CORRAL_CLOCK_H
#define CORRAL_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Milliseconds on a monotonic clock. */
static inline uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static inline uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

#endif
