/*
 * xmalloc — the daemon's one out-of-memory policy for allocations of a
 * size the daemon chooses: they abort when memory cannot be had (as redis'
 * zmalloc calls its handler), so no caller repeats the check. Sizes that a
 * client or a worker decides are allocated with the plain calls and
 * checked, so that the request is refused (503) instead (sb_try_reserve,
 * infer.c, chan.c). All return non-NULL.
 */
#ifndef CORRAL_XMALLOC_H
#define CORRAL_XMALLOC_H

#include <stdlib.h>
#include <string.h>

static inline void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        abort();
    return p;
}

static inline void *xcalloc(size_t count, size_t size)
{
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p)
        abort();
    return p;
}

static inline void *xrealloc(void *old, size_t n)
{
    void *p = realloc(old, n ? n : 1);
    if (!p)
        abort();
    return p;
}

static inline char *xstrdup(const char *s)
{
    char *p = strdup(s);
    if (!p)
        abort();
    return p;
}

#endif
