/*
 * test_batch — batch_split (batch.c): a worker's answer to a batch cut into
 * each request's rows, per-request results handed out, and the answers
 * that must fail the batch.
 */
#include "batch.h"
#include "check.h"
#include "proto.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

/* An entry of rows rows that asked for the outputs named in wanted (NULL: all). */
static batch_entry *entry(uint64_t rows, const char *wanted)
{
    batch_entry *e = calloc(1, sizeof *e);
    e->rows = rows;
    if (wanted)
        e->wanted = json_pack("[s]", wanted);
    return e;
}

/* u32 meta length, meta, data */
static uint8_t *body(const char *meta, const void *data, size_t data_len, size_t *len)
{
    size_t m = strlen(meta);
    *len = 4 + m + data_len;
    uint8_t *b = malloc(*len);
    proto_put_u32(b, (uint32_t)m);
    memcpy(b + 4, meta, m);
    memcpy(b + 4 + m, data, data_len);
    return b;
}

/* The meta and data of a part's INFER_RESULT body. */
static json_t *part_meta(const batch_part *p, const uint8_t **data, size_t *data_len)
{
    const char *meta;
    size_t meta_len;
    if (proto_split_body(p->body, p->len, &meta, &meta_len, data, data_len) < 0)
        return NULL;
    return json_loadb(meta, meta_len, 0, NULL);
}

static void rows_go_to_their_requests(void)
{
    batch_entry *e[3] = {entry(2, NULL), entry(1, NULL), entry(3, "OUT")};
    int32_t out[6] = {10, 11, 20, 30, 31, 32};
    int32_t extra[6] = {1, 2, 3, 4, 5, 6};
    uint8_t data[48];
    memcpy(data, out, 24);
    memcpy(data + 24, extra, 24);
    size_t len;
    uint8_t *b = body("{\"outputs\":[{\"name\":\"OUT\",\"datatype\":\"INT32\",\"shape\":[6],\"size\":24},"
                      "{\"name\":\"EXTRA\",\"datatype\":\"INT32\",\"shape\":[6,1],\"size\":24}]}",
                      data, sizeof data, &len);
    batch_part parts[3];
    char msg[512];
    CHECK(batch_split("m", (const batch_entry *const *)e, 3, 6, b, len, NULL, 0, parts, msg, sizeof msg) == 0);
    const uint8_t *d;
    size_t dlen;
    json_t *m0 = part_meta(&parts[0], &d, &dlen);
    CHECK(parts[0].status == 200 && json_array_size(json_object_get(m0, "outputs")) == 2);
    CHECK(dlen == 16 && memcmp(d, out, 8) == 0 && memcmp(d + 8, extra, 8) == 0);
    CHECK(json_integer_value(json_array_get(json_object_get(json_array_get(json_object_get(m0, "outputs"), 1),
                                                            "shape"), 0)) == 2);
    json_t *m1 = part_meta(&parts[1], &d, &dlen);
    CHECK(dlen == 8 && memcmp(d, out + 2, 4) == 0 && memcmp(d + 4, extra + 2, 4) == 0);
    json_t *m2 = part_meta(&parts[2], &d, &dlen);
    /* the third asked for OUT only */
    CHECK(json_array_size(json_object_get(m2, "outputs")) == 1 && dlen == 12 && memcmp(d, out + 3, 12) == 0);
    json_decref(m0);
    json_decref(m1);
    json_decref(m2);
    batch_parts_free(parts, 3);
    free(b);
    for (int i = 0; i < 3; i++)
        batch_entry_free(e[i]);
}

static void bytes_rows_are_cut_at_their_elements(void)
{
    batch_entry *e[2] = {entry(1, NULL), entry(2, NULL)};
    /* three elements: "a", "bc", "" */
    uint8_t data[] = {1, 0, 0, 0, 'a', 2, 0, 0, 0, 'b', 'c', 0, 0, 0, 0};
    size_t len;
    uint8_t *b = body("{\"outputs\":[{\"name\":\"T\",\"datatype\":\"BYTES\",\"shape\":[3],\"size\":15}]}", data,
                      sizeof data, &len);
    batch_part parts[2];
    char msg[512];
    CHECK(batch_split("m", (const batch_entry *const *)e, 2, 3, b, len, NULL, 0, parts, msg, sizeof msg) == 0);
    const uint8_t *d;
    size_t dlen;
    json_t *m = part_meta(&parts[0], &d, &dlen);
    CHECK(dlen == 5 && memcmp(d, data, 5) == 0);
    json_decref(m);
    m = part_meta(&parts[1], &d, &dlen);
    CHECK(dlen == 10 && memcmp(d, data + 5, 10) == 0);
    json_decref(m);
    batch_parts_free(parts, 2);
    free(b);
    for (int i = 0; i < 2; i++)
        batch_entry_free(e[i]);
}

static void per_request_results_and_errors(void)
{
    batch_entry *e[3] = {entry(1, NULL), entry(1, NULL), entry(1, NULL)};
    int32_t v[2] = {7, 9};
    size_t len;
    uint8_t *b = body("{\"results\":[{\"outputs\":[{\"name\":\"O\",\"datatype\":\"INT32\",\"shape\":[1],\"size\":4}]},"
                      "{\"error\":{\"type\":\"BadRequest\",\"message\":\"no\",\"status\":400}},"
                      "{\"outputs\":[{\"name\":\"O\",\"datatype\":\"INT32\",\"shape\":[1],\"size\":4}]}]}",
                      v, sizeof v, &len);
    batch_part parts[3];
    char msg[512];
    CHECK(batch_split("m", (const batch_entry *const *)e, 3, 3, b, len, NULL, 0, parts, msg, sizeof msg) == 0);
    CHECK(parts[1].status == 400 && strstr(parts[1].msg, "rejected the input: no"));
    const uint8_t *d;
    size_t dlen;
    json_t *m = part_meta(&parts[2], &d, &dlen);
    CHECK(parts[2].status == 200 && dlen == 4 && memcmp(d, &v[1], 4) == 0);
    json_decref(m);
    batch_parts_free(parts, 3);
    free(b);
    for (int i = 0; i < 3; i++)
        batch_entry_free(e[i]);
}

static void answers_that_fail_the_batch(void)
{
    batch_entry *e[2] = {entry(1, NULL), entry(1, NULL)};
    static const struct {
        const char *meta;
        size_t data;
        int rc;
        const char *expect;
    } cases[] = {
        {"{\"outputs\":[{\"name\":\"O\",\"datatype\":\"INT32\",\"shape\":[3],\"size\":12}]}", 12, 1,
         "output 'O' of 3 rows"},
        {"{\"outputs\":[{\"name\":\"O\",\"datatype\":\"INT32\",\"shape\":[],\"size\":4}]}", 4, 1, "no dimension"},
        {"{\"outputs\":[{\"name\":\"O\",\"datatype\":\"INT32\",\"shape\":[2],\"size\":8}]}", 12, -1, "claim 8 of 12"},
        {"{\"outputs\":[{\"name\":\"O\",\"datatype\":\"INT32\",\"shape\":[2],\"size\":9}]}", 8, -1, "malformed"},
        {"{\"results\":[{\"outputs\":[]}]}", 0, -1, "1 results for a batch of 2"},
        {"{\"results\":[{\"error\":{}},{\"outputs\":[]}]}", 0, -1, "without a message"},
        {"[1]", 0, -1, "not a JSON object"},
    };
    uint8_t zeros[16] = {0};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t len;
        uint8_t *b = body(cases[i].meta, zeros, cases[i].data, &len);
        batch_part parts[2];
        char msg[900] = "";
        CHECK(batch_split("m", (const batch_entry *const *)e, 2, 2, b, len, NULL, 0, parts, msg, sizeof msg) ==
              cases[i].rc);
        CHECK_STR_CONTAINS(msg, cases[i].expect);
        CHECK(parts[0].body == NULL && parts[1].body == NULL);
        free(b);
    }
    for (int i = 0; i < 2; i++)
        batch_entry_free(e[i]);
}

CHECK_MAIN(CASE(rows_go_to_their_requests), CASE(bytes_rows_are_cut_at_their_elements),
           CASE(per_request_results_and_errors), CASE(answers_that_fail_the_batch))
