/*
 * Unit tests of clientshm.c: the bounds arithmetic (overflow included), the
 * key check, and the registry against real POSIX shared-memory objects:
 * register, duplicates, bounds, the reference a request holds past
 * unregistration, and an object truncated under its mapping (SIGBUS).
 */
#include "check.h"
#include "clientshm.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static void range_arithmetic(void)
{
    CHECK(clientshm_range(100, 0, 100) == 0);
    CHECK(clientshm_range(100, 99, 1) == 0);
    CHECK(clientshm_range(100, 0, 0) == 0);
    CHECK(clientshm_range(100, 99, 2) == -ERANGE);
    CHECK(clientshm_range(100, 0, 101) == -ERANGE);
    CHECK(clientshm_range(100, 100, 0) == -ERANGE); /* an offset at the end, as Triton refuses it */
    CHECK(clientshm_range(100, 1000, 0) == -ERANGE);
    CHECK(clientshm_range(100, UINT64_MAX, 1) == -EOVERFLOW);
    CHECK(clientshm_range(100, 1, UINT64_MAX) == -EOVERFLOW);
    CHECK(clientshm_range(UINT64_MAX, UINT64_MAX - 1, 1) == 0); /* sums to UINT64_MAX exactly: no wrap */
    CHECK(clientshm_range(UINT64_MAX, UINT64_MAX - 1, 2) == -EOVERFLOW);
    CHECK(clientshm_range(UINT64_MAX - 1, UINT64_MAX - 2, 2) == -ERANGE);
    CHECK(clientshm_range(UINT64_MAX, 0, UINT64_MAX) == 0);
    CHECK(clientshm_range(0, 0, 0) == -ERANGE);
}

static void key_check(void)
{
    char why[200];
    CHECK(clientshm_key_check("/input0", 7, why, sizeof why) == 0);
    CHECK(clientshm_key_check("input0", 6, why, sizeof why) == -EINVAL);
    CHECK(clientshm_key_check("/", 1, why, sizeof why) == -EINVAL);
    CHECK(clientshm_key_check("/a/b", 4, why, sizeof why) == -EINVAL);
    CHECK(clientshm_key_check("//a", 3, why, sizeof why) == -EINVAL);
    CHECK(clientshm_key_check("/..", 3, why, sizeof why) == -EINVAL);
    CHECK(clientshm_key_check("/a..b", 5, why, sizeof why) == -EINVAL);
    CHECK_STR_CONTAINS(why, "..");
    CHECK(clientshm_key_check("/a\0b", 4, why, sizeof why) == -EINVAL);
    CHECK(clientshm_key_check("/corral-in", 10, why, sizeof why) == -EINVAL);
    CHECK_STR_CONTAINS(why, "reserved");
    CHECK(clientshm_key_check("/corral", 7, why, sizeof why) == -EINVAL);
    CHECK(clientshm_key_check("/xcorral", 8, why, sizeof why) == 0);
    char longkey[300];
    memset(longkey, 'a', sizeof longkey);
    longkey[0] = '/';
    CHECK(clientshm_key_check(longkey, sizeof longkey, why, sizeof why) == -EINVAL);
}

/* A fresh POSIX shared-memory object of size bytes, filled with fill; its key in key. */
static int make_object(char *key, size_t keylen, size_t size, int fill)
{
    snprintf(key, keylen, "/test_clientshm_%d_%zu", (int)getpid(), size);
    int fd = shm_open(key, O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd < 0 || ftruncate(fd, (off_t)size) < 0)
        return -1;
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        return -1;
    memset(p, fill, size);
    munmap(p, size);
    return fd;
}

static void disabled(void)
{
    clientshm_init(0);
    char err[600];
    CHECK(clientshm_register("r", 1, "/x", 2, 0, 1, err, sizeof err) == 403);
    CHECK_STR_CONTAINS(err, "--allow-client-shm");
    CHECK(clientshm_acquire("r", 1) == NULL);
}

static void registry(void)
{
    clientshm_init(1);
    char key[64], err[600];
    int fd = make_object(key, sizeof key, 3 * 4096, 7);
    CHECK(fd >= 0);
    size_t klen = strlen(key);
    /* bounds at registration */
    CHECK(clientshm_register("r", 1, key, klen, 0, 3 * 4096 + 1, err, sizeof err) == 400);
    CHECK_STR_CONTAINS(err, "runs past the end");
    CHECK(clientshm_register("r", 1, key, klen, UINT64_MAX, 2, err, sizeof err) == 400);
    CHECK_STR_CONTAINS(err, "overflows");
    CHECK(clientshm_register("r", 1, key, klen, 0, 0, err, sizeof err) == 400);
    CHECK(clientshm_register("r", 1, "/test_clientshm_none", 20, 0, 1, err, sizeof err) == 400);
    CHECK_STR_CONTAINS(err, "cannot open");
    /* an unaligned offset maps from its page */
    CHECK(clientshm_register("r", 1, key, klen, 4096 + 10, 100, err, sizeof err) == 200);
    CHECK(clientshm_register("r", 1, key, klen, 0, 10, err, sizeof err) == 400);
    CHECK_STR_CONTAINS(err, "already registered");
    CHECK(clientshm_register("s", 1, key, klen, 0, 3 * 4096, err, sizeof err) == 200);
    int status;
    json_t *st = clientshm_status(NULL, 0, &status);
    CHECK(status == 200 && json_array_size(st) == 2);
    json_decref(st);
    st = clientshm_status("r", 1, &status);
    CHECK(status == 200 && json_array_size(st) == 1);
    CHECK(json_integer_value(json_object_get(json_array_get(st, 0), "offset")) == 4096 + 10);
    CHECK(json_integer_value(json_object_get(json_array_get(st, 0), "byte_size")) == 100);
    CHECK(strcmp(json_string_value(json_object_get(json_array_get(st, 0), "key")), key) == 0);
    json_decref(st);
    CHECK(clientshm_status("q", 1, &status) == NULL && status == 404);

    /* a request's reference outlives unregistration; the mapping stays readable */
    clientshm_map *m = clientshm_acquire("r", 1);
    CHECK(m && m->byte_size == 100 && m->base[0] == 7 && m->base[99] == 7);
    clientshm_unregister("r", 1);
    CHECK(clientshm_acquire("r", 1) == NULL);
    CHECK(m->base[50] == 7);
    clientshm_release(m);
    clientshm_unregister("nothing", 7); /* unknown: nothing happens, as in Triton */

    /* the object shrunk under a mapping: the copy reads zeros instead of killing the process */
    m = clientshm_acquire("s", 1);
    CHECK(m && !clientshm_broken(m));
    CHECK(ftruncate(fd, 4096) == 0);
    CHECK(m->base[0] == 7);
    volatile uint8_t past = m->base[2 * 4096 + 1];
    CHECK(past == 0);
    CHECK(clientshm_broken(m));
    clientshm_release(m);
    clientshm_unregister(NULL, 0);
    st = clientshm_status(NULL, 0, &status);
    CHECK(json_array_size(st) == 0);
    json_decref(st);
    close(fd);
    shm_unlink(key);
    clientshm_init(0);
}

CHECK_MAIN(CASE(range_arithmetic), CASE(key_check), CASE(disabled), CASE(registry))
