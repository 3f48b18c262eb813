/*
 * shm — memfd regions for large tensors; see shm.h.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "shm.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int shm_create(const char *name)
{
    int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0)
        return -errno;
    if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_SEAL) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

int shm_release_pages(int fd)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    if (st.st_blocks == 0)
        return 0;
    if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, st.st_size) < 0)
        return -errno;
    return 0;
}

/* Maps len bytes of fd read-write and shared, with one reference; NULL on failure. */
static shm_region *shm_map(int fd, size_t len)
{
    if (len == 0)
        return NULL;
    void *addr = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (addr == MAP_FAILED)
        return NULL;
    shm_region *r = malloc(sizeof *r);
    if (!r) {
        munmap(addr, len);
        return NULL;
    }
    r->addr = addr;
    r->len = len;
    r->refs = 1;
    return r;
}

void shm_ref(shm_region *r)
{
    r->refs++;
}

void shm_unref(shm_region *r)
{
    if (!r || --r->refs > 0)
        return;
    munmap(r->addr, r->len);
    free(r);
}

static int replace(shm_region **r, int fd, size_t len)
{
    shm_region *fresh = shm_map(fd, len);
    if (!fresh)
        return errno ? -errno : -ENOMEM;
    shm_unref(*r);
    *r = fresh;
    return 0;
}

int shm_reserve(shm_region **r, int fd, size_t need)
{
    if (*r && (*r)->len >= need)
        return 0;
    size_t cap = SHM_MIN_BYTES;
    while (cap < need)
        cap *= 2;
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    if ((size_t)st.st_size < cap && ftruncate(fd, (off_t)cap) < 0)
        return -errno;
    return replace(r, fd, (size_t)st.st_size > cap ? (size_t)st.st_size : cap);
}

int shm_remap_file(shm_region **r, int fd)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    if (st.st_size <= 0)
        return -EINVAL;
    if (*r && (*r)->len == (size_t)st.st_size)
        return 0;
    return replace(r, fd, (size_t)st.st_size);
}
