/*
 * shm — the shared-memory regions that carry large tensors between the
 * daemon and a worker (docs/worker-protocol.md, "Shared memory").
 *
 * Each worker inherits two memfds: the input region, which the daemon fills
 * and the worker reads, and the output region, which the worker fills (and
 * grows) and the daemon reads. A region is the daemon's mapping of one of
 * them; it is reference-counted because an HTTP response may still be
 * sending from a mapping after its instance restarted.
 */
#ifndef CORRAL_SHM_H
#define CORRAL_SHM_H

#include <stddef.h>
#include <stdint.h>

/* Tensor data at least this large travels through shared memory. */
#define SHM_MIN_BYTES (1u << 20)

typedef struct shm_region {
    uint8_t *addr;
    size_t len;
    int refs;
} shm_region;

/*
 * A new memfd (close-on-exec, size 0) named for logs: fd, or a negative
 * errno. It is sealed against shrinking, so no side can pull pages out from
 * under the other's mapping (that would be SIGBUS); it may still grow.
 */
int shm_create(const char *name);

/* Gives the pages of fd back to the system; its size and every mapping stay valid (reads see zeros). */
int shm_release_pages(int fd);

void shm_ref(shm_region *r);
/* Drops a reference; the last one unmaps. NULL is ignored. */
void shm_unref(shm_region *r);

/*
 * Makes *r a mapping of at least need bytes of fd, growing the file first
 * (to a power of two, at least SHM_MIN_BYTES) when it is shorter: 0, or a
 * negative errno with *r unchanged. The old mapping's reference is dropped.
 */
int shm_reserve(shm_region **r, int fd, size_t need);

/*
 * Makes *r a mapping of the whole of fd as the peer left it (the worker
 * grows the output region itself): 0, or a negative errno.
 */
int shm_remap_file(shm_region **r, int fd);

#endif
