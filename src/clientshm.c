/*
 * clientshm — the registry of clients' system shared-memory regions; see clientshm.h.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "clientshm.h"

#include "utf8.h"
#include "xmalloc.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

const char clientshm_disabled_msg[] = "client shared memory is disabled: start corral with --allow-client-shm to "
                                      "enable it (docs/security.md)";

/* A registered region: what status reports, and the registry's reference to the mapping. */
typedef struct region {
    char *name;
    size_t name_len;
    char *key;
    uint64_t offset, byte_size;
    clientshm_map *map;
} region;

static struct {
    int allowed;
    region v[CLIENTSHM_MAX_REGIONS];
    int n;
    uint64_t mapped; /* bytes of the registered regions' mappings */
} R;

/*
 * The mappings alive (registered, or held by a request after it was
 * unregistered), for the SIGBUS handler: written on the loop thread only,
 * and SIGBUS from a copy is raised synchronously on that same thread, so
 * the handler never sees an entry half-written.
 */
#define LIVE_SLOTS (2 * CLIENTSHM_MAX_REGIONS)
static struct live {
    uintptr_t start, end; /* 0, 0: free */
    volatile sig_atomic_t broken;
} live[LIVE_SLOTS];

static void on_sigbus(int sig, siginfo_t *si, void *ctx)
{
    (void)ctx;
    uintptr_t a = (uintptr_t)si->si_addr;
    for (int i = 0; i < LIVE_SLOTS; i++) {
        if (a < live[i].start || a >= live[i].end)
            continue;
        /* The client shrank its object: the whole mapping becomes zero
         * pages, and the copy that faulted goes on over them. */
        void *p = mmap((void *)live[i].start, live[i].end - live[i].start, PROT_READ | PROT_WRITE,
                       MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p != MAP_FAILED) {
            live[i].broken = 1;
            return;
        }
        break;
    }
    /* Not a client's region: the default action, when the faulting access is retried. */
    signal(sig, SIG_DFL);
}

void clientshm_init(int allowed)
{
    R.allowed = allowed;
    if (!allowed)
        return;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, NULL);
}

int clientshm_allowed(void)
{
    return R.allowed;
}

int clientshm_range(uint64_t size, uint64_t offset, uint64_t byte_size)
{
    if (byte_size > UINT64_MAX - offset)
        return -EOVERFLOW;
    if (offset >= size)
        return -ERANGE;
    return offset + byte_size <= size ? 0 : -ERANGE;
}

int clientshm_key_check(const char *key, size_t len, char *why, size_t whylen)
{
    const char *reason = NULL;
    if (len < 2 || key[0] != '/')
        reason = "a key must be '/' followed by the object's name, as shm_open takes it";
    else if (len > CLIENTSHM_MAX_NAME)
        reason = "a key may be at most 256 bytes";
    else if (memchr(key, '\0', len))
        reason = "a key may not contain NUL";
    else if (memchr(key + 1, '/', len - 1))
        reason = "a key may hold no '/' after the first";
    else if (memmem(key, len, "..", 2))
        reason = "a key may not contain '..'";
    else if (len >= strlen(CLIENTSHM_RESERVED_PREFIX) &&
             memcmp(key, CLIENTSHM_RESERVED_PREFIX, strlen(CLIENTSHM_RESERVED_PREFIX)) == 0)
        reason = "keys beginning with '" CLIENTSHM_RESERVED_PREFIX "' are reserved for corral's own regions";
    if (!reason)
        return 0;
    snprintf(why, whylen, "%s", reason);
    return -EINVAL;
}

static region *find(const char *name, size_t len)
{
    for (int i = 0; i < R.n; i++)
        if (R.v[i].name_len == len && memcmp(R.v[i].name, name, len) == 0)
            return &R.v[i];
    return NULL;
}

/* Starts the message of a failed registration, "shared memory region 'NAME': " (the error writer escapes
 * the name); returns its length, where the reason goes. */
static size_t err_prefix(char *err, size_t errlen, const char *name, size_t name_len)
{
    int shown = name_len > 64 ? 64 : (int)name_len;
    int n = snprintf(err, errlen, "shared memory region '%.*s%s': ", shown, name, name_len > 64 ? "..." : "");
    return n < 0 || (size_t)n >= errlen ? 0 : (size_t)n;
}

#define FAIL(st, ...)                                                                                                 \
    do {                                                                                                              \
        size_t at_ = err_prefix(err, errlen, name, name_len);                                                         \
        snprintf(err + at_, errlen - at_, __VA_ARGS__);                                                               \
        utf8_trim_partial(err);                                                                                       \
        status = (st);                                                                                                \
        goto fail;                                                                                                    \
    } while (0)

int clientshm_register(const char *name, size_t name_len, const char *key, size_t key_len, uint64_t offset,
                       uint64_t byte_size, char *err, size_t errlen)
{
    if (!R.allowed) {
        snprintf(err, errlen, "%s", clientshm_disabled_msg);
        return 403;
    }
    int fd = -1, status = 400;
    char why[200], path[CLIENTSHM_MAX_NAME + 1];
    if (name_len == 0 || name_len > CLIENTSHM_MAX_NAME || memchr(name, '\0', name_len))
        FAIL(400, "a region name must be 1 to %d bytes, without NUL", CLIENTSHM_MAX_NAME);
    if (find(name, name_len))
        FAIL(400, "already registered (unregister it first)");
    if (clientshm_key_check(key, key_len, why, sizeof why) < 0)
        FAIL(400, "key '%.*s': %s", (int)(key_len > 64 ? 64 : key_len), key, why);
    if (byte_size == 0)
        FAIL(400, "byte_size must be at least 1");
    memcpy(path, key, key_len);
    path[key_len] = '\0';
    fd = shm_open(path, O_RDWR, 0); /* never O_CREAT: the client's object, or nothing */
    struct stat st;
    int e = fd < 0 || fstat(fd, &st) < 0 ? errno : 0; /* kept: writing the message may change errno */
    if (e)
        FAIL(400, "cannot %s key '%s': %s", fd < 0 ? "open" : "stat", path, strerror(e));
    if (!S_ISREG(st.st_mode) || st.st_size < 0)
        FAIL(400, "key '%s' is not a shared-memory object", path);
    int rc = clientshm_range((uint64_t)st.st_size, offset, byte_size);
    if (rc == -EOVERFLOW)
        FAIL(400, "offset %llu + byte_size %llu overflows", (unsigned long long)offset, (unsigned long long)byte_size);
    if (rc < 0)
        FAIL(400, "offset %llu + byte_size %llu runs past the end of key '%s' (%lld bytes)",
             (unsigned long long)offset, (unsigned long long)byte_size, path, (long long)st.st_size);
    if (R.n == CLIENTSHM_MAX_REGIONS)
        FAIL(503, "%d regions are registered already, the most corral maps", CLIENTSHM_MAX_REGIONS);
    if (byte_size > CLIENTSHM_MAX_BYTES - R.mapped)
        FAIL(503, "%llu more bytes would pass the %llu bytes corral maps for client regions together",
             (unsigned long long)byte_size, (unsigned long long)CLIENTSHM_MAX_BYTES);
    int slot = -1;
    for (int i = 0; i < LIVE_SLOTS && slot < 0; i++)
        if (!live[i].end)
            slot = i;
    if (slot < 0)
        FAIL(503, "too many regions are still in use by requests; retry later");
    /* mmap wants a page-aligned offset: map from the page that holds the region's first byte. */
    uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
    uint64_t start = offset - offset % page;
    size_t len = (size_t)(offset - start + byte_size);
    void *addr = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)start);
    e = addr == MAP_FAILED ? errno : 0;
    if (e)
        FAIL(e == ENOMEM ? 503 : 400, "cannot map key '%s': %s", path, strerror(e));
    close(fd);
    clientshm_map *m = xmalloc(sizeof *m);
    m->addr = addr;
    m->len = len;
    m->base = (uint8_t *)addr + (offset - start);
    m->byte_size = byte_size;
    m->refs = 1;
    m->slot = slot;
    live[slot].broken = 0;
    live[slot].start = (uintptr_t)addr;
    live[slot].end = (uintptr_t)addr + len;
    region *r = &R.v[R.n++];
    r->name = xmalloc(name_len + 1);
    memcpy(r->name, name, name_len);
    r->name[name_len] = '\0';
    r->name_len = name_len;
    r->key = xstrdup(path);
    r->offset = offset;
    r->byte_size = byte_size;
    r->map = m;
    R.mapped += byte_size;
    return 200;
fail:
    if (fd >= 0)
        close(fd);
    return status;
}
#undef FAIL

static void drop(region *r)
{
    R.mapped -= r->byte_size;
    clientshm_release(r->map);
    free(r->name);
    free(r->key);
    *r = R.v[--R.n];
}

void clientshm_unregister(const char *name, size_t name_len)
{
    if (!name) {
        while (R.n)
            drop(&R.v[R.n - 1]);
        return;
    }
    region *r = find(name, name_len);
    if (r)
        drop(r);
}

json_t *clientshm_status(const char *name, size_t name_len, int *status)
{
    *status = 200;
    json_t *out = json_array();
    for (int i = 0; i < R.n; i++) {
        region *r = &R.v[i];
        if (name && (r->name_len != name_len || memcmp(r->name, name, name_len) != 0))
            continue;
        json_t *e = json_object();
        json_object_set_new(e, "name", utf8_json_string(r->name, r->name_len));
        json_object_set_new(e, "key", utf8_json_string(r->key, strlen(r->key)));
        /* json_integer is signed: a value past INT64_MAX cannot be registered (st_size bounds it) */
        json_object_set_new(e, "offset", json_integer((json_int_t)r->offset));
        json_object_set_new(e, "byte_size", json_integer((json_int_t)r->byte_size));
        json_array_append_new(out, e);
    }
    if (name && json_array_size(out) == 0) {
        json_decref(out);
        *status = 404;
        return NULL;
    }
    return out;
}

clientshm_map *clientshm_acquire(const char *name, size_t name_len)
{
    region *r = R.allowed ? find(name, name_len) : NULL;
    if (!r)
        return NULL;
    r->map->refs++;
    return r->map;
}

void clientshm_release(clientshm_map *m)
{
    if (!m)
        return;
    assert(m->refs > 0);
    if (--m->refs > 0)
        return;
    munmap(m->addr, m->len);
    live[m->slot].start = live[m->slot].end = 0;
    free(m);
}

int clientshm_broken(const clientshm_map *m)
{
    return live[m->slot].broken != 0;
}
