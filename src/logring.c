/* logring — the newest lines of worker output; see logring.h. */
#include "logring.h"

#include "xmalloc.h"

#include <stdlib.h>
#include <string.h>

int logring_append(logring *r, const char *prefix, size_t plen, const char *line, size_t len, const char *suffix,
                   size_t slen)
{
    size_t need = plen + len + slen + 1;
    if (need > r->cap)
        return -1;
    if (!r->buf)
        r->buf = xmalloc(r->cap);
    if (r->len + need > r->cap) {
        size_t drop = r->len / 2 > need ? r->len / 2 : need;
        char *nl = drop < r->len ? memchr(r->buf + drop - 1, '\n', r->len - drop + 1) : NULL;
        drop = nl ? (size_t)(nl - r->buf) + 1 : r->len;
        memmove(r->buf, r->buf + drop, r->len - drop);
        r->len -= drop;
        r->cut += drop;
    }
    char *w = r->buf + r->len;
    memcpy(w, prefix, plen);
    memcpy(w + plen, line, len);
    memcpy(w + plen + len, suffix, slen);
    w[plen + len + slen] = '\n';
    r->len += need;
    return 0;
}

void logring_free(logring *r)
{
    free(r->buf);
    r->buf = NULL;
    r->len = 0;
}
