/*
 * Unit tests of a request's session (sessreq.c) and of base64: the meta a
 * request's frame carries for a JSON, a bytes and an absent session; a
 * worker's update checked (every malformed shape refused, nothing kept),
 * staged from a frame, committed once, and refused by the store without a
 * change; pins held until the request is freed.
 */
#include "base64.h"
#include "check.h"
#include "job.h"
#include "log.h"
#include "proto.h"
#include "session.h"
#include "sessreq.h"

#include <stdlib.h>
#include <time.h>

static void store(void)
{
    session_config cfg = {.default_ttl_s = 60, .max_ttl_s = 600, .memory = 1 << 20, .max_size = 64, .evict = 1};
    session_store_init(NULL, &cfg);
    log_threshold = LOG_ERROR - 1; /* the refusal's warning is expected */
}

static void put(const char *id, const char *type, const char *data)
{
    int created;
    char msg[256];
    CHECK(session_put(id, strlen(id), type, (const uint8_t *)data, strlen(data), 0, &created, msg, sizeof msg) == 0);
}

/* A fresh store holding id (JSON text, or NULL for none), and a job that carries id. */
static job *carrying(const char *id, const char *text, uint8_t kind)
{
    store();
    if (text)
        put(id, SESSION_JSON, text);
    char why[256];
    job *j = job_new(NULL, kind, 0);
    CHECK(sessreq_attach(j, id, strlen(id), why, sizeof why) == 0);
    return j;
}

static const char *content(const char *id)
{
    static char buf[256];
    session *s = session_find(id, strlen(id), 0);
    if (!s)
        return NULL;
    snprintf(buf, sizeof buf, "%s|%.*s", session_content_type(s), (int)session_size(s), (const char *)session_data(s));
    return buf;
}

static void base64_round_trips(void)
{
    const uint8_t raw[] = {0, 1, 2, 0xfe, 0xff, 'a', 'b'};
    char enc[16];
    uint8_t dec[16];
    size_t n;
    for (size_t len = 0; len <= sizeof raw; len++) {
        base64_encode(enc, raw, len);
        CHECK(base64_decode(enc, base64_encoded_len(len), dec, &n) == 0 && n == len && memcmp(dec, raw, len) == 0);
    }
    base64_encode(enc, (const uint8_t *)"hi!", 3);
    CHECK(memcmp(enc, "aGkh", 4) == 0);
    base64_encode(enc, (const uint8_t *)"h", 1);
    CHECK(memcmp(enc, "aA==", 4) == 0);
    const char *bad[] = {"aGk", "aGk*", "a=Gk", "aG=k", "a===", "aA==aA==", "aGk\n"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK(base64_decode(bad[i], strlen(bad[i]), dec, &n) < 0);
}

static char *meta_of(job *j)
{
    sb b;
    sb_init(&b, 16);
    sessreq_meta(&b, j->sess);
    CHECK(b.len <= sessreq_meta_size(j->sess));
    sb_addc(&b, 0);
    return sb_take(&b, NULL);
}

static void meta_for_json_bytes_and_absent(void)
{
    store();
    put("chat", SESSION_JSON, "{\"turns\":[1,2]}");
    put("voice", "audio/wav", "RIFF\x01");
    char why[256];
    job *j = job_new(NULL, PROTO_INFER, 0);
    CHECK(sessreq_attach(j, "chat", 4, why, sizeof why) == 0);
    char *m = meta_of(j);
    CHECK(strcmp(m, "\"session\":{\"id\":\"chat\",\"exists\":true,\"content_type\":\"application/json\","
                    "\"json\":{\"turns\":[1,2]}}") == 0);
    free(m);
    CHECK(sessreq_attach(j, "voice", 5, why, sizeof why) == 0); /* a second replaces the first */
    m = meta_of(j);
    CHECK(strcmp(m, "\"session\":{\"id\":\"voice\",\"exists\":true,\"content_type\":\"audio/wav\","
                    "\"base64\":\"UklGRgE=\"}") == 0);
    free(m);
    CHECK(sessreq_attach(j, "nobody", 6, why, sizeof why) == 0);
    m = meta_of(j);
    CHECK(strcmp(m, "\"session\":{\"id\":\"nobody\",\"exists\":false}") == 0);
    free(m);
    CHECK(sessreq_attach(j, "bad id", 6, why, sizeof why) < 0 && why[0]);
    CHECK(sessreq_attach(j, "", 0, why, sizeof why) < 0);
    session_stats st;
    session_stats_get(&st);
    CHECK(st.hits == 2 && st.misses == 1);
    job_free(j);
    session_store_close();
}

static void snapshot_and_pin(void)
{
    job *j = carrying("s", "1", PROTO_INFER);
    CHECK(session_delete("s", 1) == 0); /* gone from the store, still valid under the pin */
    char *m = meta_of(j);
    CHECK_STR_CONTAINS(m, "\"json\":1}");
    free(m);
    job_free(j); /* the last unpin frees it: the sanitizer build would see a leak or a double free */
    session_store_close();
}

static int stage(job *j, const char *text)
{
    char why[256];
    json_t *u = json_loads(text, JSON_DECODE_ANY, NULL);
    int rc = sessreq_stage(j->sess, u, why, sizeof why);
    json_decref(u);
    return rc;
}

static void updates_are_checked(void)
{
    job *j = carrying("u", NULL, PROTO_INFER);
    const char *bad[] = {
        "[1]", "{}", "{\"json\":1,\"delete\":true}", "{\"json\":1,\"base64\":\"\",\"content_type\":\"a/b\"}",
        "{\"json\":1,\"content_type\":\"a/b\"}", "{\"base64\":\"aA==\"}",
        "{\"base64\":\"aA==\",\"content_type\":\"application/json\"}", "{\"base64\":\"aA=\",\"content_type\":\"a/b\"}",
        "{\"base64\":\"aA==\",\"content_type\":\"a/b\\n\"}", "{\"base64\":5,\"content_type\":\"a/b\"}",
        "{\"json\":1,\"ttl\":0}", "{\"json\":1,\"ttl\":\"5\"}", "{\"delete\":1}", "{\"delete\":false}",
        "{\"json\":1,\"extra\":2}",
        /* JSON in any case or with parameters, as a PUT takes it: sent as json, never as bytes */
        "{\"base64\":\"aA==\",\"content_type\":\"APPLICATION/JSON\"}",
        "{\"base64\":\"aA==\",\"content_type\":\"Application/Json; charset=utf-8\"}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = stage(j, bad[i]);
        CHECK(rc < 0);
        if (rc >= 0)
            fprintf(stderr, "  accepted: %s\n", bad[i]);
    }
    CHECK(sessreq_commit(j->sess, "m") == 0 && !content("u")); /* nothing was staged */
    CHECK(stage(j, "{\"json\": {\"a\" :  [1, 2]}, \"ttl\": 5}") == 0);
    CHECK(sessreq_commit(j->sess, "m") == 0);
    CHECK(strcmp(content("u"), "application/json|{\"a\":[1,2]}") == 0); /* compact, as the store keeps JSON */
    session *s = session_find("u", 1, 0);
    int64_t left = session_expires_ms(s) - (int64_t)time(NULL) * 1000; /* the update's ttl: 5 s */
    CHECK(left > 3000 && left <= 6000);
    CHECK(sessreq_commit(j->sess, "m") == 0 && strcmp(content("u"), "application/json|{\"a\":[1,2]}") == 0);
    CHECK(stage(j, "{\"base64\":\"aGkh\",\"content_type\":\"text/plain\"}") == 0);
    CHECK(stage(j, "{\"json\":\"last wins\"}") == 0);
    CHECK(sessreq_commit(j->sess, "m") == 0 && strcmp(content("u"), "application/json|\"last wins\"") == 0);
    CHECK(stage(j, "{\"base64\":\"aGkh\",\"content_type\":\"text/plain\"}") == 0);
    CHECK(sessreq_commit(j->sess, "m") == 0 && strcmp(content("u"), "text/plain|hi!") == 0);
    CHECK(stage(j, "{\"delete\":true}") == 0);
    CHECK(sessreq_commit(j->sess, "m") == 0 && !content("u"));
    CHECK(stage(j, "{\"delete\":true}") == 0); /* already gone: as good */
    CHECK(sessreq_commit(j->sess, "m") == 0);
    job_free(j);
    session_store_close();
}

static void refusals_change_nothing(void)
{
    job *j = carrying("r", "\"before\"", PROTO_INFER);
    uint64_t before = sessreq_refused();
    CHECK(stage(j, "{\"json\":\"0123456789012345678901234567890123456789012345678901234567890123456789\"}") == 0);
    CHECK(sessreq_commit(j->sess, "m") == 413);
    CHECK(stage(j, "{\"json\":1,\"ttl\":601}") == 0);
    CHECK(sessreq_commit(j->sess, "m") == 400);
    CHECK(sessreq_refused() == before + 2);
    CHECK(strcmp(content("r"), "application/json|\"before\"") == 0);
    job_free(j);
    session_store_close();
}

static uint8_t *frame_body(const char *meta, const char *data, size_t *len)
{
    size_t m = strlen(meta), d = strlen(data);
    uint8_t *b = malloc(4 + m + d);
    proto_put_u32(b, (uint32_t)m);
    memcpy(b + 4, meta, m);
    memcpy(b + 4 + m, data, d);
    *len = 4 + m + d;
    return b;
}

static void frames_stage_their_update(void)
{
    job *j = carrying("f", NULL, PROTO_GENERATE);
    char why[256];
    size_t len;
    uint8_t *b = frame_body("{\"content_type\":\"text/plain\",\"session\":{\"json\":[7]}}", "body", &len);
    CHECK(sessreq_stage_frame(j->sess, PROTO_GENERATE_RESULT, b, len, why, sizeof why) == 0);
    free(b);
    CHECK(sessreq_commit(j->sess, "m") == 0 && strcmp(content("f"), "application/json|[7]") == 0);
    CHECK(sessreq_stage_frame(j->sess, PROTO_END, NULL, 0, why, sizeof why) == 0); /* an empty END */
    b = frame_body("{\"session\":{\"delete\":true}}", "", &len);
    CHECK(sessreq_stage_frame(j->sess, PROTO_END, b, len, why, sizeof why) == 0);
    free(b);
    CHECK(sessreq_commit(j->sess, "m") == 0 && !content("f"));
    b = frame_body("{\"session\":{}}", "x", &len); /* END's body is a meta alone */
    CHECK(sessreq_stage_frame(j->sess, PROTO_END, b, len, why, sizeof why) < 0);
    CHECK(sessreq_stage_frame(NULL, PROTO_END, b, len, why, sizeof why) < 0);
    free(b);
    b = frame_body("{\"session\":5}", "", &len);
    CHECK(sessreq_stage_frame(j->sess, PROTO_INFER_RESULT, b, len, why, sizeof why) < 0);
    CHECK(sessreq_stage_frame(NULL, PROTO_INFER_RESULT, b, len, why, sizeof why) == 0); /* no session: ignored */
    free(b);
    b = frame_body("[\"session\"]", "", &len);
    CHECK(sessreq_stage_frame(j->sess, PROTO_INFER_RESULT, b, len, why, sizeof why) < 0);
    free(b);
    uint8_t shortb[3] = {9, 0, 0};
    CHECK(sessreq_stage_frame(j->sess, PROTO_INFER_RESULT, shortb, 3, why, sizeof why) < 0);
    job_free(j);
    session_store_close();
}

CHECK_MAIN(CASE(base64_round_trips), CASE(meta_for_json_bytes_and_absent), CASE(snapshot_and_pin),
           CASE(updates_are_checked), CASE(refusals_change_nothing), CASE(frames_stage_their_update))
