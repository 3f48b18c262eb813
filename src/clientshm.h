/*
 * clientshm — Triton's system shared memory extension: the registry of the
 * POSIX shared-memory regions clients register (docs/api.md, "System shared
 * memory"), each a reference-counted mapping of the client's object.
 *
 * Off unless the daemon runs with --allow-client-shm (clientshm_init):
 * registering makes the daemon read and write a file any local process
 * named, which Triton turned off by default too (docs/security.md).
 *
 * Lifetime: the registry holds one reference to each region's mapping; a
 * request that reads an input from a region or writes an output into one
 * holds another (clientshm_acquire) until its data has been copied and its
 * response sent. Unregistering drops the registry's reference only; the
 * last reference unmaps. So a region unregistered while a request waits
 * stays mapped until that request is done, and nothing reads freed memory.
 *
 * A client may shrink its object under the daemon's mapping (POSIX shared
 * memory cannot be sealed), and touching a page past the new end raises
 * SIGBUS. The daemon's SIGBUS handler recognises an address inside a live
 * client mapping, replaces that mapping with zero pages, marks it broken
 * and lets the copy go on; the request that used it is then answered 400
 * (clientshm_broken). Any other SIGBUS kills the daemon as before.
 *
 * Loop thread only; the bounds arithmetic (clientshm_range) and the key
 * check (clientshm_key_check) are pure and unit-tested.
 */
#ifndef CORRAL_CLIENTSHM_H
#define CORRAL_CLIENTSHM_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* At most this many regions registered at once. */
#define CLIENTSHM_MAX_REGIONS 1024
/* At most this many bytes mapped for registered regions together (address space, not memory). */
#define CLIENTSHM_MAX_BYTES (64ULL << 30)
/* The longest region name and key. */
#define CLIENTSHM_MAX_NAME 256
/* Keys corral refuses: its own regions' names begin so (memfds "corral-..."; see shm.c). */
#define CLIENTSHM_RESERVED_PREFIX "/corral"

/* The answer to every use while the extension is off (403). */
extern const char clientshm_disabled_msg[];

/* One registered region's mapping, shared by the registry and the requests using it. */
typedef struct clientshm_map {
    uint8_t *base;      /* the region's first byte (the object's byte at the registered offset) */
    uint64_t byte_size; /* the region's length */
    void *addr;         /* the mapping: page-aligned, len bytes */
    size_t len;
    int refs;
    int slot;           /* its entry in the SIGBUS handler's table */
} clientshm_map;

/* Turns the extension on or off (--allow-client-shm); on installs the SIGBUS handler. */
void clientshm_init(int allowed);
int clientshm_allowed(void);

/*
 * Whether byte_size bytes at offset lie within size bytes: 0, -EOVERFLOW
 * when offset + byte_size wraps around 2^64, -ERANGE when they run past
 * size, or offset is at or past the end (as Triton refuses it).
 */
int clientshm_range(uint64_t size, uint64_t offset, uint64_t byte_size);

/*
 * Whether key may be registered: "/name", one leading '/', no other '/',
 * no "..", no NUL, at most CLIENTSHM_MAX_NAME bytes, not beginning with
 * CLIENTSHM_RESERVED_PREFIX. 0, or -EINVAL with the reason in why.
 */
int clientshm_key_check(const char *key, size_t len, char *why, size_t whylen);

/*
 * Registers region name: opens key (shm_open, O_RDWR, never created),
 * checks offset and byte_size against its size, maps them. Returns 200, or
 * 400 (bad name or key, a name already registered, out of bounds, no such
 * object), 403 (the extension is off) or 503 (too many regions, or bytes)
 * with the message in err.
 */
int clientshm_register(const char *name, size_t name_len, const char *key, size_t key_len, uint64_t offset,
                       uint64_t byte_size, char *err, size_t errlen);

/* Drops region name from the registry (nothing happens for an unknown name, as in Triton); name NULL: every region. */
void clientshm_unregister(const char *name, size_t name_len);

/*
 * Triton's status: [{"name","key","offset","byte_size"}] of every region,
 * or of region name (NULL: all); NULL with *status 404 for an unknown name.
 */
json_t *clientshm_status(const char *name, size_t name_len, int *status);

/* The mapping of region name with a new reference, or NULL when it is not registered. */
clientshm_map *clientshm_acquire(const char *name, size_t name_len);
/* Drops a reference; the last one unmaps. NULL is ignored. */
void clientshm_release(clientshm_map *m);
/* Whether the client shrank the object under the mapping since it was made (its bytes are zeros now). */
int clientshm_broken(const clientshm_map *m);

#endif
