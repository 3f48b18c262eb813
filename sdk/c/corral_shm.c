/*
 * corral_shm.c — the worker's side of the shared-memory regions that carry
 * large tensors (docs/worker-protocol.md, "Shared memory"): the input region,
 * which the daemon fills, and the output region, which this worker grows and
 * fills. Both are memfds inherited from the daemon (CORRAL_SHM_FDS).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "corral_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int corral__regions_open(corral__region r[2])
{
    const char *text = getenv("CORRAL_SHM_FDS");
    int fds[2];
    char *end;
    r[0].fd = r[1].fd = -1;
    if (!text || !*text)
        return -ENOENT;
    long a = strtol(text, &end, 10);
    if (*end != ',' || a < 0 || a > 65535)
        return -EINVAL;
    long b = strtol(end + 1, &end, 10);
    if (*end || b < 0 || b > 65535 || a == b)
        return -EINVAL;
    fds[0] = (int)a;
    fds[1] = (int)b;
    for (int k = 0; k < 2; k++) {
        struct stat st;
        if (fstat(fds[k], &st) < 0 || !S_ISREG(st.st_mode))
            return -EBADF;
    }
    for (int k = 0; k < 2; k++) {
        fcntl(fds[k], F_SETFD, FD_CLOEXEC); /* not for the model's own children */
        r[k].fd = fds[k];
        r[k].addr = NULL;
        r[k].len = 0;
        pthread_mutex_init(&r[k].mu, NULL);
    }
    return 0;
}

void corral__regions_close(corral__region r[2])
{
    for (int k = 0; k < 2; k++) {
        if (r[k].fd < 0)
            continue;
        if (r[k].addr)
            munmap(r[k].addr, r[k].len);
        close(r[k].fd);
        pthread_mutex_destroy(&r[k].mu);
        r[k].fd = -1;
        r[k].addr = NULL;
    }
}

/* Maps the whole file when fewer than need bytes are mapped; called under r->mu. */
static uint8_t *map_locked(corral__region *r, size_t need)
{
    if (r->addr && r->len >= need)
        return r->addr;
    struct stat st;
    if (fstat(r->fd, &st) < 0 || st.st_size <= 0 || (size_t)st.st_size < need)
        return NULL;
    void *addr = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, r->fd, 0);
    if (addr == MAP_FAILED)
        return NULL;
    /* The old mapping is no longer used: the request that read it has been answered. */
    if (r->addr)
        munmap(r->addr, r->len);
    r->addr = addr;
    r->len = (size_t)st.st_size;
    return r->addr;
}

uint8_t *corral__region_view(corral__region *r, size_t need)
{
    pthread_mutex_lock(&r->mu);
    uint8_t *p = map_locked(r, need);
    pthread_mutex_unlock(&r->mu);
    return p;
}

uint8_t *corral__region_grow(corral__region *r, size_t need)
{
    pthread_mutex_lock(&r->mu);
    struct stat st;
    uint8_t *p = NULL;
    if (fstat(r->fd, &st) == 0) {
        size_t cap = CORRAL__SHM_MIN;
        while (cap < need)
            cap *= 2;
        if ((size_t)st.st_size >= need || ftruncate(r->fd, (off_t)cap) == 0)
            p = map_locked(r, need);
    }
    pthread_mutex_unlock(&r->mu);
    return p;
}
