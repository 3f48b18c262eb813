/*
 * fuzz — what every libFuzzer target of corral shares: the check that a
 * piece of JSON the daemon produced is strict JSON in valid UTF-8 (jansson
 * parses it, and utf8_valid accepts every byte), and the check that an
 * error message becomes such JSON through the one error writer; and a
 * model's declared tensors for the targets that check requests against them;
 * and a context store holding a JSON session "j" and a bytes session "b",
 * for the targets whose requests may name one (parameters.session).
 * A failed check aborts, which libFuzzer reports as a crash.
 */
#ifndef CORRAL_FUZZ_H
#define CORRAL_FUZZ_H

#include "decl.h"
#include "http.h"
#include "job.h"
#include "proto.h"
#include "sb.h"
#include "session.h"
#include "utf8.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static inline void fuzz_check_json(const char *s, size_t n)
{
    json_error_t e; /* integers past INT64_MAX (UINT64) and \u0000 are JSON too */
    if (!utf8_valid(s, n)) {
        fprintf(stderr, "fuzz: JSON that is not UTF-8: %.*s\n", (int)(n > 400 ? 400 : n), s);
        abort();
    }
    json_t *j = json_loadb(s, n, JSON_DECODE_ANY | JSON_DECODE_INT_AS_REAL | JSON_ALLOW_NUL, &e);
    if (!j) {
        fprintf(stderr, "fuzz: invalid JSON (%s): %.*s\n", e.text, (int)(n > 400 ? 400 : n), s);
        abort();
    }
    json_decref(j);
}

/* Reads every byte of a buffer, so that ASan checks all of it is there. */
static volatile unsigned char fuzz_sink;
static inline void fuzz_touch(const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        fuzz_sink += b[i];
}

/* An error message as the daemon would send it: must become strict JSON. */
static inline void fuzz_check_error(const char *msg)
{
    size_t len;
    char *text = http_error_text(&len, "%s", msg);
    fuzz_check_json(text, len);
    free(text);
}

/*
 * The INFER_RESULT body an echoing worker sends for a parsed request's
 * frame (frame_len bytes; its tensors in the frame or, when large, in j's
 * pieces): every input back as an output of the same name. Into body,
 * which the caller frees.
 */
static inline void fuzz_echo_result(const uint8_t *frame, size_t frame_len, const job *j, sb *body)
{
    const char *meta;
    size_t meta_len, data_len;
    const uint8_t *data;
    if (proto_split_body(frame + PROTO_HEADER_SIZE, frame_len - PROTO_HEADER_SIZE, &meta, &meta_len, &data,
                         &data_len) < 0)
        abort();
    fuzz_check_json(meta, meta_len);
    json_t *m = json_loadb(meta, meta_len, 0, NULL);
    json_t *outs = json_pack("{s:O}", "outputs", json_object_get(m, "inputs"));
    char *text = json_dumps(outs, JSON_COMPACT);
    size_t tlen = strlen(text);
    sb_init(body, 64);
    uint8_t u32[4];
    proto_put_u32(u32, (uint32_t)tlen);
    sb_add(body, u32, 4);
    sb_add(body, text, tlen);
    if (j->npieces)
        for (int k = 0; k < j->npieces; k++)
            sb_add(body, j->pieces[k].ptr, j->pieces[k].len);
    else
        sb_add(body, data, data_len);
    free(text);
    json_decref(outs);
    json_decref(m);
}

/* Declared tensors (decl.h) from their JSON, for a target's model: kept for the whole run. */
static inline const decl_list *fuzz_decl(const char *text)
{
    json_t *j = json_loads(text, 0, NULL);
    decl_list *l = NULL;
    size_t at;
    char err[256];
    if (decl_parse(j, &l, &at, err, sizeof err) < 0 || !l)
        abort();
    json_decref(j);
    return l;
}

/* Sets the store up once, as the daemon does at start, with one session of each kind. */
static inline void fuzz_session_store(void)
{
    static int ready;
    if (ready)
        return;
    ready = 1;
    session_config cfg = {.default_ttl_s = 3600, .max_ttl_s = 86400, .memory = 1 << 20, .max_size = 4096, .evict = 1};
    session_store_init(NULL, &cfg);
    int created;
    char msg[256];
    if (session_put("j", 1, SESSION_JSON, (const uint8_t *)"{\"a\":[1,\"\\u00e9\"]}", 18, 0, &created, msg,
                    sizeof msg) ||
        session_put("b", 1, "audio/wav", (const uint8_t *)"\0\xff\x80RIFF", 7, 0, &created, msg, sizeof msg))
        abort();
}

#endif
