/*
 * fuzz_session — the context store (session.c) driven by a sequence of
 * operations from the input: puts of any size and ttl, deletes, finds,
 * pins and unpins, the clock moved on, expiry. After each: the store stays
 * within its ceiling, the list holds what the stats count (no expired
 * session in it), and a pinned session's bytes stay readable (ASan) after
 * it was replaced, deleted, evicted or expired.
 */
#include "fuzz.h"
#include "session.h"

#include <stdint.h>

static int64_t fake_now;
static int64_t fake_clock(void)
{
    return fake_now;
}

typedef struct seen {
    uint64_t n;
} seen;

static void on_listed(const session *s, void *ctx)
{
    if (session_expires_ms(s) <= fake_now)
        abort(); /* an expired session was listed */
    ((seen *)ctx)->n++;
}

static void check_store(const session_config *cfg)
{
    session_stats st;
    session_stats_get(&st);
    if (st.bytes > cfg->memory)
        abort();
    seen s = {0};
    session_list(on_listed, &s);
    session_stats_get(&st);
    if (s.n != st.count)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t blob[800];
    session_config cfg = {.default_ttl_s = 5, .max_ttl_s = 20, .memory = 2048, .max_size = 600,
                          .evict = size && (data[0] & 1)};
    fake_now = 1000000;
    session_store_init(NULL, &cfg);
    session_store_set_clock(fake_clock);
    session *pinned[8];
    size_t n_pinned = 0;
    for (size_t i = 1; i + 2 < size; i += 3) {
        uint8_t op = data[i] % 6, a = data[i + 1], b = data[i + 2];
        char id[8];
        int n = snprintf(id, sizeof id, "%ss%u", a & 0x80 ? "-" : "", a % 16); /* "-s3" is not an id */
        char msg[512];
        int created;
        switch (op) {
        case 0: {
            size_t len = (size_t)b * 3;
            memset(blob, 'a' + (b % 26), len);
            int rc = session_put(id, (size_t)n, b & 1 ? SESSION_JSON : "application/octet-stream", blob, len,
                                 a % 25, &created, msg, sizeof msg);
            if (rc != 0 && rc != 400 && rc != 413 && rc != 507)
                abort();
            if (rc)
                fuzz_check_error(msg);
            break;
        }
        case 1:
            session_delete(id, (size_t)n);
            break;
        case 2: {
            session *s = session_find(id, (size_t)n, b & 1);
            if (s && (b & 2) && n_pinned < 8) {
                session_pin(s);
                pinned[n_pinned++] = s;
            }
            break;
        }
        case 3:
            if (n_pinned) {
                session *s = pinned[--n_pinned];
                fuzz_touch(session_data(s), session_size(s));
                session_unpin(s);
            }
            break;
        case 4:
            fake_now += (int64_t)b * 100;
            break;
        default:
            session_expire();
            break;
        }
        check_store(&cfg);
    }
    while (n_pinned) {
        session *s = pinned[--n_pinned];
        fuzz_touch(session_data(s), session_size(s));
        session_unpin(s);
    }
    session_store_close();
    return 0;
}
