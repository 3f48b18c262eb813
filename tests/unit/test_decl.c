/* Unit tests for decl: parsing declarations, the shape matcher and the request checks. */
#include "check.h"
#include "decl.h"

#include <errno.h>
#include <stdint.h>

static decl_list *parse(const char *text)
{
    json_t *j = json_loads(text, 0, NULL);
    decl_list *l = NULL;
    size_t at;
    char err[256];
    int rc = decl_parse(j, &l, &at, err, sizeof err);
    json_decref(j);
    return rc == 0 ? l : NULL;
}

static void test_parse(void)
{
    decl_list *l = parse("[{\"name\":\"A\",\"datatype\":\"FP32\",\"shape\":[-1,3]},"
                         "{\"name\":\"B\",\"datatype\":\"BYTES\",\"shape\":[],\"optional\":true}]");
    CHECK(l && l->n == 2);
    CHECK(l->v[0].t == DT_FP32 && l->v[0].ndim == 2 && l->v[0].dims[0] == -1 && l->v[0].dims[1] == 3);
    CHECK(!l->v[0].optional && l->v[1].optional && l->v[1].ndim == 0 && l->v[1].t == DT_BYTES);
    int i = -1;
    CHECK(decl_find(l, "B", 1, &i) == &l->v[1] && i == 1);
    CHECK(decl_find(l, "BB", 2, &i) == NULL && decl_find(l, "A\0", 2, &i) == NULL);
    decl_free(l);

    /* nothing declared */
    size_t at;
    char err[256];
    decl_list *none = (decl_list *)1;
    CHECK(decl_parse(NULL, &none, &at, err, sizeof err) == 0 && none == NULL);
    json_t *empty = json_array();
    CHECK(decl_parse(empty, &none, &at, err, sizeof err) == 0 && none == NULL);
    json_decref(empty);
    decl_free(NULL);
}

static void test_parse_errors(void)
{
    static const struct {
        const char *text;
        size_t at;
        const char *why;
    } cases[] = {
        {"{}", SIZE_MAX, "must be a list"},
        {"[1]", 0, "must be a mapping"},
        {"[{\"name\":\"\",\"datatype\":\"FP32\",\"shape\":[]}]", 0, "name must be a non-empty string"},
        {"[{\"name\":\"A\",\"datatype\":\"FP32\",\"shape\":[]},{\"name\":\"B\",\"datatype\":\"F32\",\"shape\":[]}]", 1,
         "datatype must be one of"},
        {"[{\"name\":\"A\",\"datatype\":\"FP32\",\"shape\":[-2]}]", 0, "shape must be a list"},
        {"[{\"name\":\"A\",\"datatype\":\"FP32\",\"shape\":[1.5]}]", 0, "shape must be a list"},
        {"[{\"name\":\"A\",\"datatype\":\"FP32\",\"shape\":[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1]}]", 0, "at most 16"},
        {"[{\"name\":\"A\",\"datatype\":\"FP32\",\"shape\":[1],\"optional\":\"yes\"}]", 0, "optional must be"},
        {"[{\"name\":\"A\",\"datatype\":\"FP32\",\"shape\":[1]},{\"name\":\"A\",\"datatype\":\"INT8\",\"shape\":[1]}]",
         1, "name 'A' is declared twice"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        json_t *j = json_loads(cases[k].text, 0, NULL);
        decl_list *l = (decl_list *)1;
        size_t at = 99;
        char err[256] = "";
        CHECK(decl_parse(j, &l, &at, err, sizeof err) == -EINVAL);
        CHECK(l == NULL && at == cases[k].at);
        CHECK_STR_CONTAINS(err, cases[k].why);
        json_decref(j);
    }
}

static void test_shape_matches(void)
{
    decl_tensor d = {.ndim = 3, .dims = {-1, 3, -1}};
    CHECK(decl_shape_matches(&d, (int64_t[]){0, 3, 7}, 3));
    CHECK(decl_shape_matches(&d, (int64_t[]){5, 3, 0}, 3));
    CHECK(!decl_shape_matches(&d, (int64_t[]){5, 4, 0}, 3));
    CHECK(!decl_shape_matches(&d, (int64_t[]){5, 3}, 2));
    CHECK(!decl_shape_matches(&d, (int64_t[]){5, 3, 1, 1}, 4));
    decl_tensor scalar = {.ndim = 0};
    CHECK(decl_shape_matches(&scalar, NULL, 0));
    CHECK(!decl_shape_matches(&scalar, (int64_t[]){1}, 1));

    char buf[64];
    CHECK(strcmp(decl_format_shape(buf, sizeof buf, d.dims, 3), "[-1, 3, -1]") == 0);
    CHECK(strcmp(decl_format_shape(buf, sizeof buf, NULL, 0), "[]") == 0);
    char small[6];
    CHECK(strcmp(decl_format_shape(small, sizeof small, (int64_t[]){123, 456}, 2), "[123,") == 0);
}

static void test_checks(void)
{
    decl_list *l = parse("[{\"name\":\"A\",\"datatype\":\"FP32\",\"shape\":[-1,3]},"
                         "{\"name\":\"B\",\"datatype\":\"INT8\",\"shape\":[2]},"
                         "{\"name\":\"C\",\"datatype\":\"BOOL\",\"shape\":[1],\"optional\":true}]");
    char why[256];
    decl_seen seen = {{0}};
    CHECK(decl_check_missing(l, &seen, why, sizeof why) == -EINVAL);
    CHECK(strcmp(why, "input 'A' is missing: the model requires it (FP32 [-1, 3])") == 0);
    CHECK(decl_check_input(l, &seen, "A", 1, DT_FP32, (int64_t[]){4, 3}, 2, why, sizeof why) == 0);
    CHECK(decl_check_missing(l, &seen, why, sizeof why) == -EINVAL);
    CHECK(strcmp(why, "input 'B' is missing: the model requires it (INT8 [2])") == 0);
    CHECK(decl_check_input(l, &seen, "B", 1, DT_INT16, (int64_t[]){2}, 1, why, sizeof why) == -EINVAL);
    CHECK(strcmp(why, "input 'B': expected datatype INT8, got INT16") == 0);
    CHECK(decl_check_input(l, &seen, "B", 1, DT_INT8, (int64_t[]){2, 1}, 2, why, sizeof why) == -EINVAL);
    CHECK(strcmp(why, "input 'B': expected shape [2], got [2, 1]") == 0);
    CHECK(decl_check_input(l, &seen, "B", 1, DT_INT8, (int64_t[]){2}, 1, why, sizeof why) == 0);
    CHECK(decl_check_missing(l, &seen, why, sizeof why) == 0); /* C is optional */
    CHECK(decl_check_input(l, &seen, "D", 1, DT_INT8, (int64_t[]){2}, 1, why, sizeof why) == -EINVAL);
    CHECK(strcmp(why, "input 'D' is not declared; the model's inputs are A, B, C") == 0);
    CHECK(decl_check_output(l, "C", 1, why, sizeof why) == 0);
    CHECK(decl_check_output(l, "Z", 1, why, sizeof why) == -EINVAL);
    CHECK(strcmp(why, "output 'Z' is not declared; the model's outputs are A, B, C") == 0);
    decl_free(l);
}

/* The seen bitmap spans every one of the 256 declarations a list may have. */
static void test_many(void)
{
    json_t *a = json_array();
    for (int i = 0; i < DECL_MAX_TENSORS; i++) {
        char name[16];
        snprintf(name, sizeof name, "T%d", i);
        json_array_append_new(a, json_pack("{s:s,s:s,s:[i]}", "name", name, "datatype", "UINT8", "shape", 1));
    }
    decl_list *l = NULL;
    size_t at;
    char why[256];
    CHECK(decl_parse(a, &l, &at, why, sizeof why) == 0 && l && l->n == DECL_MAX_TENSORS);
    decl_seen seen = {{0}};
    for (int i = 0; i < DECL_MAX_TENSORS - 1; i++) {
        char name[16];
        int n = snprintf(name, sizeof name, "T%d", i);
        CHECK(decl_check_input(l, &seen, name, (size_t)n, DT_UINT8, (int64_t[]){1}, 1, why, sizeof why) == 0);
    }
    CHECK(decl_check_missing(l, &seen, why, sizeof why) == -EINVAL);
    CHECK_STR_CONTAINS(why, "input 'T255' is missing");
    /* the list of 256 names is cut, and says so */
    char big[512]; /* as infer.c's */
    CHECK(decl_check_input(l, &seen, "nope", 4, DT_UINT8, (int64_t[]){1}, 1, big, sizeof big) == -EINVAL);
    CHECK_STR_CONTAINS(big, "input 'nope' is not declared; the model's inputs are T0, T1, T2");
    CHECK(strlen(big) < 320 && strcmp(big + strlen(big) - 3, "...") == 0);
    CHECK(decl_check_input(l, &seen, "T255", 4, DT_UINT8, (int64_t[]){1}, 1, why, sizeof why) == 0);
    CHECK(decl_check_missing(l, &seen, why, sizeof why) == 0);
    decl_free(l);
    json_array_append_new(a, json_pack("{s:s,s:s,s:[]}", "name", "X", "datatype", "UINT8", "shape"));
    CHECK(decl_parse(a, &l, &at, why, sizeof why) == -EINVAL && at == SIZE_MAX);
    json_decref(a);
}

CHECK_MAIN(CASE(test_parse), CASE(test_parse_errors), CASE(test_shape_matches), CASE(test_checks), CASE(test_many))
