/*
 * fuzz_pull_entry — the check pull.c makes of every archive entry before
 * it is extracted (pull_check_entry): for any path, type and link target,
 * an entry it accepts must, resolved the simple way (a stack of
 * components), stay inside the model directory; and every refusal's
 * message becomes strict JSON through the error writer.
 *
 * Input: one byte of type (modulo the types), then the path, a NUL, the
 * link's target (none when there is no NUL).
 */
#include "fuzz.h"
#include "pull.h"

#include <stdint.h>

/* The depth path reaches from start, one component at a time; -1 when it leaves the root. */
static int depth_of(const char *path, int start)
{
    int depth = start;
    char *copy = strdup(path), *save = NULL;
    for (char *c = strtok_r(copy, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
        if (strcmp(c, "..") == 0) {
            if (--depth < 0)
                break;
        } else if (strcmp(c, ".") != 0) {
            depth++;
        }
    }
    free(copy);
    return depth;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    enum pull_entry_type type = (enum pull_entry_type)(data[0] % 5);
    char *buf = malloc(size + 1);
    memcpy(buf, data + 1, size - 1);
    buf[size - 1] = buf[size] = 0;
    const char *path = buf;
    size_t plen = strlen(path);
    const char *link = plen < size - 1 ? buf + plen + 1 : NULL;
    char err[1024];
    err[0] = 0;
    if (pull_check_entry(path, type, link, err, sizeof err) == 0) {
        if (type == PULL_ENTRY_OTHER || path[0] == '/' ||
            depth_of(path, 0) < 0)
            abort();
        for (const char *s = path; (s = strstr(s, "..")); s += 2)
            if ((s == path || s[-1] == '/') && (s[2] == 0 || s[2] == '/'))
                abort(); /* a '..' component was accepted */
        if (type == PULL_ENTRY_SYMLINK) {
            int d = depth_of(path, 0);
            if (!link || link[0] == '/' || d < 1 || depth_of(link, d - 1) < 0)
                abort();
        }
        if (type == PULL_ENTRY_HARDLINK && (!link || link[0] == '/' || depth_of(link, 0) < 0))
            abort();
    } else {
        fuzz_check_error(err);
    }
    free(buf);
    return 0;
}
