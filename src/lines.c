/* lines — capped line splitting; see lines.h. */
#include "lines.h"

#include "utf8.h"
#include "xmalloc.h"

#include <stdlib.h>
#include <string.h>

static void emit(lines *ls, lines_on_line on_line, void *arg)
{
    size_t len = ls->len, dropped = ls->drop;
    if (!dropped && len && ls->buf[len - 1] == '\r')
        len--;
    if (dropped) { /* cut by the cap: end on a whole character */
        size_t keep = utf8_whole_len(ls->buf, len);
        dropped += len - keep;
        len = keep;
    }
    ls->len = ls->drop = 0;
    on_line(arg, ls->buf, len, dropped);
}

void lines_feed(lines *ls, const char *p, size_t n, lines_on_line on_line, void *arg)
{
    while (n) {
        const char *nl = memchr(p, '\n', n);
        size_t seg = nl ? (size_t)(nl - p) : n;
        if (!ls->buf)
            ls->buf = xmalloc(LINES_MAX);
        size_t room = LINES_MAX - ls->len;
        size_t take = seg < room ? seg : room;
        memcpy(ls->buf + ls->len, p, take);
        ls->len += take;
        ls->drop += seg - take;
        if (!nl)
            break;
        emit(ls, on_line, arg);
        p += seg + 1;
        n -= seg + 1;
    }
}

void lines_flush(lines *ls, lines_on_line on_line, void *arg)
{
    if (ls->len || ls->drop)
        emit(ls, on_line, arg);
}

void lines_free(lines *ls)
{
    free(ls->buf);
    ls->buf = NULL;
    ls->len = ls->drop = 0;
}
