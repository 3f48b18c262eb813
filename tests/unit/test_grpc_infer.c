/*
 * Unit tests of grpc_infer: hand-built ModelInferRequests read into the
 * v2 document and pieces infer.c parses (raw contents in place, typed
 * contents converted, everything hostile refused with a message), a
 * decoupled model's JSON body, and the answers packed and unpacked back
 * with protobuf-c; and api_grpc_code's HTTP -> gRPC status mapping.
 */
#include "api_grpc.h"
#include "check.h"
#include "grpc_bridge.h"
#include "grpc_infer.h"
#include "job.h"
#include "pbjson.h"
#include "proto.h"
#include "sb.h"
#include "utf8.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

/* A request from its JSON mapping (pbjson); every member must be a field. */
static Inference__ModelInferRequest *req(pb_arena *a, const char *text)
{
    json_error_t e;
    json_t *j = json_loads(text, 0, &e);
    if (!j) {
        fprintf(stderr, "bad test JSON: %s: %s\n", e.text, text);
        CHECK(0);
        j = json_object();
    }
    ProtobufCMessage *m = pb_new(a, &inference__model_infer_request__descriptor);
    int skipped = 0;
    pb_from_json(a, m, j, &skipped);
    CHECK(skipped == 0);
    json_decref(j);
    return (Inference__ModelInferRequest *)m;
}

static char err[1024];

static int read_req(const Inference__ModelInferRequest *in, grpc_request *r)
{
    err[0] = 0;
    int status = grpc_request_read(in, "m", r, err, sizeof err);
    if (status == 0)
        CHECK(err[0] == 0);
    else
        CHECK(err[0] != 0 && r->doc == NULL && r->pieces == NULL && r->conv == NULL);
    return status;
}

/* Reads text as a request and expects a 400 whose message holds what. */
static void refused(const char *text, const char *what)
{
    pb_arena a = {0};
    grpc_request r;
    int status = read_req(req(&a, text), &r);
    CHECK(status == 400);
    CHECK_STR_CONTAINS(err, what);
    grpc_request_clear(&r);
    pb_arena_free(&a);
}

/* Reads one input's typed contents; returns its piece's bytes (NULL on failure, with err set). */
static int convert(const char *text, grpc_request *r)
{
    pb_arena a = {0};
    int status = read_req(req(&a, text), r);
    pb_arena_free(&a); /* the converted pieces are r's own */
    return status;
}

static void raw_in_place(void)
{
    pb_arena a = {0};
    Inference__ModelInferRequest *in =
        req(&a, "{\"id\":\"r1\",\"inputs\":[{\"name\":\"A\",\"datatype\":\"FP32\",\"shape\":[2]},"
                "{\"name\":\"B\",\"datatype\":\"UINT8\",\"shape\":[3]}],\"outputs\":[{\"name\":\"O\"}]}");
    static const float fa[2] = {1.5f, -2.0f};
    static const uint8_t ub[3] = {1, 2, 3};
    ProtobufCBinaryData raw[2] = {{sizeof fa, (uint8_t *)fa}, {sizeof ub, (uint8_t *)ub}};
    in->n_raw_input_contents = 2;
    in->raw_input_contents = raw;
    grpc_request r;
    CHECK(read_req(in, &r) == 0);
    CHECK(r.npieces == 2 && r.conv == NULL);
    CHECK(r.pieces[0].ptr == (const uint8_t *)fa && r.pieces[0].len == sizeof fa);
    CHECK(r.pieces[1].ptr == ub && r.pieces[1].len == 3);
    json_t *ins = json_object_get(r.doc, "inputs");
    CHECK(json_array_size(ins) == 2);
    CHECK(json_integer_value(json_object_get(json_object_get(json_array_get(ins, 1), "parameters"),
                                             "binary_data_size")) == 3);
    CHECK(strcmp(json_string_value(json_object_get(r.doc, "id")), "r1") == 0);
    CHECK(json_array_size(json_object_get(r.doc, "outputs")) == 1);
    grpc_request_clear(&r);
    CHECK(r.doc == NULL && r.pieces == NULL);
    grpc_request_clear(&r); /* on a cleared one too */

    /* an empty raw entry (no data pointer) is a zero-length piece, for a zero-element tensor */
    in = req(&a, "{\"inputs\":[{\"name\":\"A\",\"datatype\":\"FP32\",\"shape\":[0]}]}");
    ProtobufCBinaryData none = {0, NULL};
    in->n_raw_input_contents = 1;
    in->raw_input_contents = &none;
    CHECK(read_req(in, &r) == 0);
    CHECK(r.npieces == 1 && r.pieces[0].ptr != NULL && r.pieces[0].len == 0);
    CHECK(json_object_get(r.doc, "id") == NULL); /* an empty id is none */
    CHECK(json_object_get(r.doc, "outputs") == NULL); /* none asked for: all of them */
    grpc_request_clear(&r);
    pb_arena_free(&a);
}

static void typed_contents(void)
{
    grpc_request r;
    /* BOOL */
    CHECK(convert("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"BOOL\",\"shape\":[3],"
                  "\"contents\":{\"bool_contents\":[true,false,true]}}]}", &r) == 0);
    CHECK(r.npieces == 1 && r.pieces[0].len == 3 && memcmp(r.pieces[0].ptr, "\1\0\1", 3) == 0);
    CHECK(r.pieces[0].ptr == r.conv);
    grpc_request_clear(&r);
    /* INT8, INT16, INT32 from int_contents */
    CHECK(convert("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"INT8\",\"shape\":[2],"
                  "\"contents\":{\"int_contents\":[-128,127]}}]}", &r) == 0);
    CHECK(r.pieces[0].len == 2 && (int8_t)r.pieces[0].ptr[0] == -128 && r.pieces[0].ptr[1] == 127);
    grpc_request_clear(&r);
    CHECK(convert("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"INT8\",\"shape\":[2],"
                  "\"contents\":{\"int_contents\":[1,128]}}]}", &r) == 400);
    CHECK_STR_CONTAINS(err, "element 1 (128) is out of range for INT8");
    CHECK(convert("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"INT8\",\"shape\":[1],"
                  "\"contents\":{\"int_contents\":[-129]}}]}", &r) == 400);
    CHECK_STR_CONTAINS(err, "out of range for INT8");
    CHECK(convert("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"INT16\",\"shape\":[2],"
                  "\"contents\":{\"int_contents\":[-32768,32767]}}]}", &r) == 0);
    int16_t i16[2];
    memcpy(i16, r.pieces[0].ptr, 4);
    CHECK(r.pieces[0].len == 4 && i16[0] == -32768 && i16[1] == 32767);
    grpc_request_clear(&r);
    CHECK(convert("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"INT16\",\"shape\":[1],"
                  "\"contents\":{\"int_contents\":[32768]}}]}", &r) == 400);
    CHECK_STR_CONTAINS(err, "out of range for INT16");
    CHECK(convert("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"INT16\",\"shape\":[1],"
                  "\"contents\":{\"int_contents\":[-32769]}}]}", &r) == 400);
    CHECK(convert("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"INT32\",\"shape\":[2],"
                  "\"contents\":{\"int_contents\":[-2147483648,2147483647]}}]}", &r) == 0);
    int32_t i32[2];
    memcpy(i32, r.pieces[0].ptr, 8);
    CHECK(r.pieces[0].len == 8 && i32[0] == INT32_MIN && i32[1] == INT32_MAX);
    grpc_request_clear(&r);
    /* INT64 */
    CHECK(convert("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"INT64\",\"shape\":[1,2],"
                  "\"contents\":{\"int64_contents\":[\"-9223372036854775808\",5]}}]}", &r) == 0);
    int64_t i64[2];
    memcpy(i64, r.pieces[0].ptr, 16);
    CHECK(r.pieces[0].len == 16 && i64[0] == INT64_MIN && i64[1] == 5);
    grpc_request_clear(&r);
    /* UINT8, UINT16, UINT32 from uint_contents */
    CHECK(convert("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"UINT8\",\"shape\":[2],"
                  "\"contents\":{\"uint_contents\":[0,255]}}]}", &r) == 0);
    CHECK(r.pieces[0].len == 2 && r.pieces[0].ptr[0] == 0 && r.pieces[0].ptr[1] == 255);
    grpc_request_clear(&r);
    CHECK(convert("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"UINT8\",\"shape\":[1],"
                  "\"contents\":{\"uint_contents\":[256]}}]}", &r) == 400);
    CHECK_STR_CONTAINS(err, "element 0 (256) is out of range for UINT8");
    CHECK(convert("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"UINT16\",\"shape\":[1],"
                  "\"contents\":{\"uint_contents\":[65535]}}]}", &r) == 0);
    uint16_t u16;
    memcpy(&u16, r.pieces[0].ptr, 2);
    CHECK(r.pieces[0].len == 2 && u16 == 65535);
    grpc_request_clear(&r);
    CHECK(convert("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"UINT16\",\"shape\":[1],"
                  "\"contents\":{\"uint_contents\":[65536]}}]}", &r) == 400);
    CHECK_STR_CONTAINS(err, "out of range for UINT16");
    CHECK(convert("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"UINT32\",\"shape\":[1],"
                  "\"contents\":{\"uint_contents\":[4294967295]}}]}", &r) == 0);
    uint32_t u32;
    memcpy(&u32, r.pieces[0].ptr, 4);
    CHECK(r.pieces[0].len == 4 && u32 == UINT32_MAX);
    grpc_request_clear(&r);
    /* UINT64 */
    CHECK(convert("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"UINT64\",\"shape\":[1],"
                  "\"contents\":{\"uint64_contents\":[\"18446744073709551615\"]}}]}", &r) == 0);
    uint64_t u64;
    memcpy(&u64, r.pieces[0].ptr, 8);
    CHECK(r.pieces[0].len == 8 && u64 == UINT64_MAX);
    grpc_request_clear(&r);
    /* FP32, FP64 */
    CHECK(convert("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[2],"
                  "\"contents\":{\"fp32_contents\":[0.5,-3]}}]}", &r) == 0);
    float f32[2];
    memcpy(f32, r.pieces[0].ptr, 8);
    CHECK(r.pieces[0].len == 8 && f32[0] == 0.5f && f32[1] == -3.0f);
    grpc_request_clear(&r);
    CHECK(convert("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP64\",\"shape\":[1],"
                  "\"contents\":{\"fp64_contents\":[0.1]}}]}", &r) == 0);
    double f64;
    memcpy(&f64, r.pieces[0].ptr, 8);
    CHECK(r.pieces[0].len == 8 && f64 == 0.1);
    grpc_request_clear(&r);
    /* BYTES: each element's little-endian u32 length, then its bytes */
    CHECK(convert("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"BYTES\",\"shape\":[3],"
                  "\"contents\":{\"bytes_contents\":[\"ab\",\"\",\"xyz\"]}}]}", &r) == 0);
    CHECK(r.pieces[0].len == 4 + 2 + 4 + 4 + 3 &&
          memcmp(r.pieces[0].ptr, "\2\0\0\0ab\0\0\0\0\3\0\0\0xyz", 17) == 0);
    CHECK(json_integer_value(json_object_get(json_object_get(json_array_get(json_object_get(r.doc, "inputs"), 0),
                                                             "parameters"),
                                             "binary_data_size")) == 17);
    grpc_request_clear(&r);
    /* several converted inputs share one buffer, each piece at its own place */
    CHECK(convert("{\"inputs\":[{\"name\":\"a\",\"datatype\":\"INT32\",\"shape\":[1],"
                  "\"contents\":{\"int_contents\":[7]}},{\"name\":\"b\",\"datatype\":\"UINT8\",\"shape\":[2],"
                  "\"contents\":{\"uint_contents\":[8,9]}},{\"name\":\"c\",\"datatype\":\"BYTES\",\"shape\":[1],"
                  "\"contents\":{\"bytes_contents\":[\"q\"]}}]}", &r) == 0);
    CHECK(r.npieces == 3 && r.pieces[0].ptr == r.conv && r.pieces[1].ptr == r.conv + 4 &&
          r.pieces[2].ptr == r.conv + 6 && r.pieces[1].ptr[1] == 9 && r.pieces[2].len == 5);
    grpc_request_clear(&r);
}

static void typed_refused(void)
{
    refused("{\"inputs\":[{\"name\":\"h\",\"datatype\":\"FP16\",\"shape\":[1],\"contents\":{\"fp32_contents\":[1]}}]}",
            "FP16 tensors have no typed contents; send them in raw_input_contents");
    refused("{\"inputs\":[{\"name\":\"h\",\"datatype\":\"BF16\",\"shape\":[1],\"contents\":{}}]}",
            "BF16 tensors have no typed contents");
    /* the wrong field for the datatype, or two fields */
    refused("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"INT32\",\"shape\":[1],\"contents\":{\"fp32_contents\":[1]}}]}",
            "a INT32 tensor's contents go in int_contents (this one sets fp32_contents)");
    refused("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"INT64\",\"shape\":[1],\"contents\":{\"int_contents\":[1]}}]}",
            "go in int64_contents");
    refused("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"UINT64\",\"shape\":[1],\"contents\":{\"uint_contents\":[1]}}]}",
            "go in uint64_contents");
    refused("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"INT32\",\"shape\":[2],"
            "\"contents\":{\"int_contents\":[1],\"fp32_contents\":[1]}}]}",
            "go in int_contents");
    /* the count against the shape */
    refused("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[3],\"contents\":{\"fp32_contents\":[1,2]}}]}",
            "input 'x': fp32_contents holds 2 elements; the shape says 3");
    refused("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[2,2],\"contents\":{}}]}",
            "holds 0 elements; the shape says 4");
    /* no data at all */
    refused("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[1]}]}",
            "input 'x' has no data: send it in raw_input_contents or contents");
    /* binary_data_size is HTTP's */
    refused("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[1],"
            "\"parameters\":{\"binary_data_size\":{\"int64_param\":4}},\"contents\":{\"fp32_contents\":[1]}}]}",
            "binary_data_size is HTTP's");
    /* an unknown datatype, or a negative dimension, is left to infer.c to name: the read passes */
    pb_arena a = {0};
    grpc_request r;
    CHECK(read_req(req(&a, "{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FLOAT\",\"shape\":[1],"
                           "\"contents\":{\"fp32_contents\":[1]}}]}"),
                   &r) == 0);
    CHECK(r.npieces == 1 && r.pieces[0].len == 0);
    grpc_request_clear(&r);
    CHECK(read_req(req(&a, "{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[-1],"
                           "\"contents\":{\"fp32_contents\":[1]}}]}"),
                   &r) == 0);
    grpc_request_clear(&r);
    pb_arena_free(&a);
}

static void raw_refused(void)
{
    pb_arena a = {0};
    grpc_request r;
    static const uint8_t four[4];
    ProtobufCBinaryData raw[3] = {{4, (uint8_t *)four}, {4, (uint8_t *)four}, {4, (uint8_t *)four}};
    /* raw and contents together */
    Inference__ModelInferRequest *in =
        req(&a, "{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[1],\"contents\":{\"fp32_contents\":[1]}}]}");
    in->n_raw_input_contents = 1;
    in->raw_input_contents = raw;
    CHECK(read_req(in, &r) == 400);
    CHECK_STR_CONTAINS(err, "contents must not be set when the request uses raw_input_contents");
    /* more raw entries than inputs */
    in = req(&a, "{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[1]}]}");
    in->n_raw_input_contents = 2;
    in->raw_input_contents = raw;
    CHECK(read_req(in, &r) == 400);
    CHECK_STR_CONTAINS(err, "raw_input_contents has 2 entries for 1 inputs");
    /* fewer */
    in = req(&a, "{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[1]},"
                 "{\"name\":\"y\",\"datatype\":\"FP32\",\"shape\":[1]}]}");
    in->n_raw_input_contents = 1;
    in->raw_input_contents = raw;
    CHECK(read_req(in, &r) == 400);
    CHECK_STR_CONTAINS(err, "fewer than the inputs outside shared memory");
    /* one per input, but one input is in shared memory: one entry too many */
    in = req(&a, "{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[1],"
                 "\"parameters\":{\"shared_memory_region\":{\"string_param\":\"reg\"}}},"
                 "{\"name\":\"y\",\"datatype\":\"FP32\",\"shape\":[1]}]}");
    in->n_raw_input_contents = 2;
    in->raw_input_contents = raw;
    CHECK(read_req(in, &r) == 400);
    CHECK_STR_CONTAINS(err, "raw_input_contents has 2 entries for 1 inputs outside shared memory");
    /* with the right count, the region's input takes no piece */
    in->n_raw_input_contents = 1;
    CHECK(read_req(in, &r) == 0);
    CHECK(r.npieces == 1 && r.pieces[0].ptr == four);
    json_t *x = json_array_get(json_object_get(r.doc, "inputs"), 0);
    CHECK(strcmp(json_string_value(json_object_get(json_object_get(x, "parameters"), "shared_memory_region")),
                 "reg") == 0);
    CHECK(json_object_get(json_object_get(x, "parameters"), "binary_data_size") == NULL);
    grpc_request_clear(&r);
    /* a region's input with typed contents too */
    refused("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[1],"
            "\"parameters\":{\"shared_memory_region\":{\"string_param\":\"reg\"}},\"contents\":{}}]}",
            "set contents or shared_memory_region, not both");
    /* too many tensors */
    json_t *ins = json_array();
    for (int i = 0; i < INFER_MAX_TENSORS + 1; i++)
        json_array_append_new(ins, json_pack("{s:s,s:s,s:[i]}", "name", "x", "datatype", "FP32", "shape", 1));
    json_t *many = json_pack("{s:o}", "inputs", ins);
    char *text = json_dumps(many, JSON_COMPACT);
    json_decref(many);
    in = req(&a, text);
    free(text);
    CHECK(read_req(in, &r) == 400);
    CHECK_STR_CONTAINS(err, "at most 256 inputs");
    pb_arena_free(&a);
}

static void not_utf8(void)
{
    pb_arena a = {0};
    grpc_request r;
    const char *base = "{\"id\":\"i\",\"parameters\":{\"p\":{\"string_param\":\"v\"}},"
                       "\"inputs\":[{\"name\":\"x\",\"datatype\":\"INT32\",\"shape\":[1],"
                       "\"parameters\":{\"q\":{\"int64_param\":1}},\"contents\":{\"int_contents\":[1]}}],"
                       "\"outputs\":[{\"name\":\"o\",\"parameters\":{\"classification\":{\"int64_param\":1}}}]}";
    Inference__ModelInferRequest *in = req(&a, base);
    CHECK(read_req(in, &r) == 0);
    grpc_request_clear(&r);
    char bad[] = "a\xff";

    in = req(&a, base);
    in->id = bad;
    CHECK(read_req(in, &r) == 400);
    CHECK_STR_CONTAINS(err, "the request's id is not valid UTF-8");

    in = req(&a, base);
    in->inputs[0]->name = bad;
    CHECK(read_req(in, &r) == 400);
    CHECK_STR_CONTAINS(err, "inputs[0].name is not valid UTF-8");

    in = req(&a, base);
    in->inputs[0]->datatype = bad;
    CHECK(read_req(in, &r) == 400);
    CHECK_STR_CONTAINS(err, "its datatype is not valid UTF-8");

    in = req(&a, base);
    in->outputs[0]->name = bad;
    CHECK(read_req(in, &r) == 400);
    CHECK_STR_CONTAINS(err, "outputs[0].name is not valid UTF-8");

    in = req(&a, base);
    in->parameters[0]->key = bad;
    CHECK(read_req(in, &r) == 400);
    CHECK_STR_CONTAINS(err, "a parameter's name is not valid UTF-8");

    in = req(&a, base);
    in->parameters[0]->value->string_param = bad;
    CHECK(read_req(in, &r) == 400);
    CHECK_STR_CONTAINS(err, "parameter 'p' is not valid UTF-8");

    in = req(&a, base);
    in->inputs[0]->parameters[0]->key = bad;
    CHECK(read_req(in, &r) == 400);
    CHECK_STR_CONTAINS(err, "input 'x': a parameter's name is not valid UTF-8");

    in = req(&a, base);
    in->outputs[0]->parameters[0]->value->parameter_choice_case = INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_STRING_PARAM;
    in->outputs[0]->parameters[0]->value->string_param = bad;
    CHECK(read_req(in, &r) == 400);
    CHECK_STR_CONTAINS(err, "output 'o': parameter 'classification' is not valid UTF-8");

    /* a long name cut inside a character leaves the message whole characters */
    char longname[200];
    memset(longname, 'a', sizeof longname);
    memcpy(longname + 63, "\xc3\xa9", 2);
    longname[sizeof longname - 1] = 0;
    in = req(&a, "{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[1]}]}");
    in->inputs[0]->name = longname;
    CHECK(read_req(in, &r) == 400);
    if (!utf8_valid(err, strlen(err)))
        fprintf(stderr, "not UTF-8: %s\n", err);
    CHECK(utf8_valid(err, strlen(err)));
    in = req(&a, "{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[2],\"contents\":{\"fp32_contents\":[1]}}],"
                 "\"outputs\":[{\"name\":\"o\",\"parameters\":{\"k\":{}}}]}");
    in->inputs[0]->name = longname; /* the count mismatch names it */
    CHECK(read_req(in, &r) == 400 && utf8_valid(err, strlen(err)));
    CHECK_STR_CONTAINS(err, "holds 1 elements");
    in->inputs[0]->contents->n_fp32_contents = 2;
    in->inputs[0]->contents->fp32_contents = (float[]){1, 2};
    in->outputs[0]->name = longname; /* its parameter without a value names it */
    CHECK(read_req(in, &r) == 400 && utf8_valid(err, strlen(err)));
    CHECK_STR_CONTAINS(err, "has no value");
    in->outputs[0]->name = (char *)"o";
    in->outputs[0]->parameters[0]->key = longname;
    CHECK(read_req(in, &r) == 400 && utf8_valid(err, strlen(err)));
    CHECK_STR_CONTAINS(err, "has no value");
    pb_arena_free(&a);
}

static void parameters(void)
{
    pb_arena a = {0};
    grpc_request r;
    Inference__ModelInferRequest *in = req(
        &a, "{\"parameters\":{\"b\":{\"bool_param\":true},\"i\":{\"int64_param\":-4},\"d\":{\"double_param\":0.5},"
            "\"s\":{\"string_param\":\"t\\u00e9\"},\"u\":{\"uint64_param\":7},"
            "\"big\":{\"uint64_param\":\"18446744073709551615\"},"
            "\"triton_enable_empty_final_response\":{\"bool_param\":true}},"
            "\"inputs\":[{\"name\":\"x\",\"datatype\":\"INT32\",\"shape\":[1],\"contents\":{\"int_contents\":[1]},"
            "\"parameters\":{\"k\":{\"string_param\":\"v\"}}}],"
            "\"outputs\":[{\"name\":\"o\",\"parameters\":{\"classification\":{\"int64_param\":2}}},{\"name\":\"p\"}]}");
    CHECK(read_req(in, &r) == 0);
    CHECK(r.empty_final == 1);
    CHECK(json_object_get(r.params, "triton_enable_empty_final_response") == NULL);
    json_t *p = json_object_get(r.doc, "parameters");
    CHECK(json_object_size(p) == 6);
    CHECK(json_is_true(json_object_get(p, "b")));
    CHECK(json_integer_value(json_object_get(p, "i")) == -4);
    CHECK(json_real_value(json_object_get(p, "d")) == 0.5);
    CHECK(strcmp(json_string_value(json_object_get(p, "s")), "t\xc3\xa9") == 0);
    CHECK(json_integer_value(json_object_get(p, "u")) == 7);
    CHECK(strcmp(json_string_value(json_object_get(p, "big")), "18446744073709551615") == 0);
    json_t *x = json_array_get(json_object_get(r.doc, "inputs"), 0);
    CHECK(strcmp(json_string_value(json_object_get(json_object_get(x, "parameters"), "k")), "v") == 0);
    json_t *outs = json_object_get(r.doc, "outputs");
    CHECK(json_array_size(outs) == 2);
    CHECK(json_integer_value(json_object_get(json_object_get(json_array_get(outs, 0), "parameters"),
                                             "classification")) == 2);
    CHECK(json_object_get(json_array_get(outs, 1), "parameters") == NULL);
    grpc_request_clear(&r);

    in = req(&a, "{\"parameters\":{\"triton_enable_empty_final_response\":{\"bool_param\":false}}}");
    CHECK(read_req(in, &r) == 0);
    CHECK(r.empty_final == 0 && json_object_size(r.params) == 0);
    grpc_request_clear(&r);
    refused("{\"parameters\":{\"triton_enable_empty_final_response\":{\"int64_param\":1}}}",
            "parameter triton_enable_empty_final_response must be a boolean");
    /* a parameter with no value set, or none at all */
    refused("{\"parameters\":{\"e\":{}}}", "parameter 'e' has no value");
    in = req(&a, "{\"parameters\":{\"e\":{}}}");
    in->parameters[0]->value = NULL;
    CHECK(read_req(in, &r) == 400);
    CHECK_STR_CONTAINS(err, "parameter 'e' has no value");
    refused("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[1],\"parameters\":{\"e\":{}}}]}",
            "input 'x': parameter 'e' has no value");
    /* a double JSON cannot hold */
    in = req(&a, "{\"parameters\":{\"t\":{\"double_param\":1}}}");
    in->parameters[0]->value->double_param = NAN;
    CHECK(read_req(in, &r) == 400);
    CHECK_STR_CONTAINS(err, "model 'm': the request: parameter 't' is not a finite number");
    in->parameters[0]->value->double_param = -INFINITY;
    CHECK(read_req(in, &r) == 400);
    CHECK_STR_CONTAINS(err, "parameter 't' is not a finite number");
    pb_arena_free(&a);
}

/* The meta (JSON) of a job's frame. */
static json_t *frame_meta(const job *j)
{
    proto_header h;
    CHECK(proto_header_decode(j->frame, j->frame_len, PROTO_MAX_BODY, &h) == 0 && h.type == PROTO_INFER);
    const char *meta;
    size_t meta_len, data_len;
    const uint8_t *data;
    if (proto_split_body(j->frame + PROTO_HEADER_SIZE, j->frame_len - PROTO_HEADER_SIZE, &meta, &meta_len, &data,
                         &data_len) < 0)
        return NULL;
    return json_loadb(meta, meta_len, 0, NULL);
}

/* A request read and parsed as api_grpc.c does; 0 or the first failing status. */
typedef struct parsed {
    grpc_request r;
    job *j;
    infer_opts opts;
} parsed;

static int parse(const Inference__ModelInferRequest *in, parsed *p, int priority_levels)
{
    memset(p, 0, sizeof *p);
    int status = read_req(in, &p->r);
    if (status)
        return status;
    p->j = job_new(NULL, PROTO_INFER, 0);
    infer_input ii = {.model = "m", .priority_levels = priority_levels, .doc = p->r.doc, .raw = p->r.pieces,
                      .nraw = p->r.npieces};
    return infer_parse_request(&ii, p->j, &p->opts, err, sizeof err);
}

static void parsed_clear(parsed *p)
{
    job_free(p->j);
    infer_opts_clear(&p->opts);
    grpc_request_clear(&p->r);
}

static void through_infer(void)
{
    pb_arena a = {0};
    parsed p;
    Inference__ModelInferRequest *in =
        req(&a, "{\"id\":\"abc\",\"parameters\":{\"priority\":{\"int64_param\":2},\"k\":{\"string_param\":\"v\"}},"
                "\"inputs\":[{\"name\":\"A\",\"datatype\":\"INT32\",\"shape\":[2],\"contents\":{\"int_contents\":[5,6]}},"
                "{\"name\":\"B\",\"datatype\":\"FP32\",\"shape\":[1,1]}],\"outputs\":[{\"name\":\"O\"}]}");
    static const float one = 1.0f;
    ProtobufCBinaryData raw = {4, (uint8_t *)&one};
    /* both raw and typed: refused (contents must not be set with raw) */
    in->n_raw_input_contents = 1;
    in->raw_input_contents = &raw;
    CHECK(parse(in, &p, 3) == 400);
    parsed_clear(&p);
    /* typed only: B has no data */
    in->n_raw_input_contents = 0;
    CHECK(parse(in, &p, 3) == 400);
    parsed_clear(&p);
    in->inputs[1]->contents = (Inference__InferTensorContents *)pb_new(&a, &inference__infer_tensor_contents__descriptor);
    in->inputs[1]->contents->n_fp32_contents = 1;
    in->inputs[1]->contents->fp32_contents = (float *)&one;
    CHECK(parse(in, &p, 3) == 0);
    CHECK(p.j->priority == 2);
    CHECK(p.opts.id && strcmp(p.opts.id, "abc") == 0);
    json_t *meta = frame_meta(p.j);
    CHECK(meta != NULL);
    json_t *ins = json_object_get(meta, "inputs");
    CHECK(json_array_size(ins) == 2);
    json_t *ia = json_array_get(ins, 0), *ib = json_array_get(ins, 1);
    CHECK(strcmp(json_string_value(json_object_get(ia, "name")), "A") == 0 &&
          strcmp(json_string_value(json_object_get(ia, "datatype")), "INT32") == 0 &&
          json_array_size(json_object_get(ia, "shape")) == 1 &&
          json_integer_value(json_array_get(json_object_get(ia, "shape"), 0)) == 2);
    CHECK(json_integer_value(json_object_get(ia, "size")) == 8);
    CHECK(strcmp(json_string_value(json_object_get(ib, "name")), "B") == 0 &&
          json_array_size(json_object_get(ib, "shape")) == 2 && json_integer_value(json_object_get(ib, "size")) == 4);
    CHECK(strcmp(json_string_value(json_object_get(json_object_get(meta, "parameters"), "k")), "v") == 0);
    /* the tensors' bytes follow the meta, in order */
    const char *m;
    size_t ml, dl;
    const uint8_t *d;
    proto_split_body(p.j->frame + PROTO_HEADER_SIZE, p.j->frame_len - PROTO_HEADER_SIZE, &m, &ml, &d, &dl);
    int32_t a0;
    float b0;
    CHECK(dl == 12);
    if (dl == 12) {
        memcpy(&a0, d, 4);
        memcpy(&b0, d + 8, 4);
        CHECK(a0 == 5 && b0 == 1.0f);
    }
    json_decref(meta);
    parsed_clear(&p);

    /* infer.c checks what grpc_infer leaves to it: the datatype, the count of raw bytes */
    in = req(&a, "{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FLOAT\",\"shape\":[1],\"contents\":{\"fp32_contents\":[1]}}]}");
    CHECK(parse(in, &p, 1) == 400);
    CHECK_STR_CONTAINS(err, "input 'x': datatype must be one of");
    parsed_clear(&p);
    in = req(&a, "{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[2]}]}");
    in->n_raw_input_contents = 1;
    in->raw_input_contents = &raw; /* 4 bytes for 2 FP32 */
    CHECK(parse(in, &p, 1) == 400);
    parsed_clear(&p);
    /* a priority out of the model's range */
    in = req(&a, "{\"parameters\":{\"priority\":{\"int64_param\":9}},"
                 "\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[1],\"contents\":{\"fp32_contents\":[1]}}]}");
    CHECK(parse(in, &p, 2) == 400);
    CHECK_STR_CONTAINS(err, "priority");
    parsed_clear(&p);
    pb_arena_free(&a);
}

/* grpc_generate_body of a request (parsed first, as api_grpc.c does); its status, the body in *out. */
static int generate(const Inference__ModelInferRequest *in, json_t **out)
{
    parsed p;
    *out = NULL;
    int status = parse(in, &p, 3);
    if (status == 0) {
        char *text = NULL;
        size_t len = 0;
        status = grpc_generate_body(in, &p.r, &text, &len, err, sizeof err);
        if (status == 0) {
            CHECK(strlen(text) == len);
            *out = json_loadb(text, len, 0, NULL);
            CHECK(*out != NULL);
            free(text);
        }
    }
    parsed_clear(&p);
    return status;
}

static void generate_body(void)
{
    pb_arena a = {0};
    json_t *o;
    Inference__ModelInferRequest *in = req(
        &a, "{\"parameters\":{\"priority\":{\"int64_param\":1},\"timeout\":{\"int64_param\":100},"
            "\"temperature\":{\"double_param\":0.5},\"stream\":{\"bool_param\":true}},"
            "\"inputs\":[{\"name\":\"text_input\",\"datatype\":\"BYTES\",\"shape\":[1],"
            "\"contents\":{\"bytes_contents\":[\"hi \\u00e9\"]}},"
            "{\"name\":\"n\",\"datatype\":\"INT32\",\"shape\":[1],\"contents\":{\"int_contents\":[3]}},"
            "{\"name\":\"s\",\"datatype\":\"UINT8\",\"shape\":[],\"contents\":{\"uint_contents\":[200]}},"
            "{\"name\":\"v\",\"datatype\":\"FP32\",\"shape\":[2],\"contents\":{\"fp32_contents\":[1.5,-2]}},"
            "{\"name\":\"m\",\"datatype\":\"INT64\",\"shape\":[1,1],\"contents\":{\"int64_contents\":[9]}},"
            "{\"name\":\"w\",\"datatype\":\"BYTES\",\"shape\":[2],\"contents\":{\"bytes_contents\":[\"a\",\"b\"]}},"
            "{\"name\":\"f\",\"datatype\":\"BOOL\",\"shape\":[1],\"contents\":{\"bool_contents\":[true]}},"
            "{\"name\":\"d\",\"datatype\":\"FP64\",\"shape\":[1],\"contents\":{\"fp64_contents\":[0.25]}},"
            "{\"name\":\"big\",\"datatype\":\"UINT64\",\"shape\":[1],"
            "\"contents\":{\"uint64_contents\":[\"18446744073709551615\"]}},"
            "{\"name\":\"neg\",\"datatype\":\"INT8\",\"shape\":[1],\"contents\":{\"int_contents\":[-5]}}]}");
    CHECK(generate(in, &o) == 0);
    if (o) {
        CHECK(strcmp(json_string_value(json_object_get(o, "text_input")), "hi \xc3\xa9") == 0);
        CHECK(json_integer_value(json_object_get(o, "n")) == 3);
        CHECK(json_integer_value(json_object_get(o, "s")) == 200);
        json_t *v = json_object_get(o, "v");
        CHECK(json_array_size(v) == 2 && json_real_value(json_array_get(v, 0)) == 1.5 &&
              json_real_value(json_array_get(v, 1)) == -2.0);
        json_t *m = json_object_get(o, "m"); /* two dimensions: a flat array even of one element */
        CHECK(json_array_size(m) == 1 && json_integer_value(json_array_get(m, 0)) == 9);
        json_t *w = json_object_get(o, "w");
        CHECK(json_array_size(w) == 2 && strcmp(json_string_value(json_array_get(w, 1)), "b") == 0);
        CHECK(json_is_true(json_object_get(o, "f")));
        CHECK(json_real_value(json_object_get(o, "d")) == 0.25);
        CHECK(json_is_number(json_object_get(o, "big")) &&
              json_number_value(json_object_get(o, "big")) == 18446744073709551615.0);
        CHECK(json_integer_value(json_object_get(o, "neg")) == -5);
        CHECK(json_real_value(json_object_get(o, "temperature")) == 0.5 && json_is_true(json_object_get(o, "stream")));
        CHECK(json_object_get(o, "priority") == NULL && json_object_get(o, "timeout") == NULL);
        CHECK(json_object_size(o) == 10 + 2);
        json_decref(o);
    }
    /* non-UTF-8 BYTES cannot become a JSON string */
    in = req(&a, "{\"inputs\":[{\"name\":\"t\",\"datatype\":\"BYTES\",\"shape\":[1],"
                 "\"contents\":{\"bytes_contents\":[\"x\"]}}]}");
    static uint8_t notutf8[] = {0xc3, 0x28};
    in->inputs[0]->contents->bytes_contents[0].data = notutf8;
    in->inputs[0]->contents->bytes_contents[0].len = 2;
    CHECK(generate(in, &o) == 400);
    CHECK_STR_CONTAINS(err, "input 't': element 0 is not UTF-8 text");
    /* NaN is no JSON number */
    in = req(&a, "{\"inputs\":[{\"name\":\"v\",\"datatype\":\"FP32\",\"shape\":[2],"
                 "\"contents\":{\"fp32_contents\":[1,2]}}]}");
    in->inputs[0]->contents->fp32_contents[1] = NAN;
    CHECK(generate(in, &o) == 400);
    CHECK_STR_CONTAINS(err, "input 'v': element 1 is not a finite number");
    in->inputs[0]->contents->fp32_contents[1] = INFINITY;
    CHECK(generate(in, &o) == 400);
    /* FP16 raw: converted to numbers */
    in = req(&a, "{\"inputs\":[{\"name\":\"h\",\"datatype\":\"FP16\",\"shape\":[1]}]}");
    static const uint8_t half_one[2] = {0x00, 0x3c};
    ProtobufCBinaryData raw = {2, (uint8_t *)half_one};
    in->n_raw_input_contents = 1;
    in->raw_input_contents = &raw;
    CHECK(generate(in, &o) == 0);
    CHECK(o && json_real_value(json_object_get(o, "h")) == 1.0);
    json_decref(o);
    /* a parameter named as an input */
    in = req(&a, "{\"parameters\":{\"n\":{\"int64_param\":1}},"
                 "\"inputs\":[{\"name\":\"n\",\"datatype\":\"INT32\",\"shape\":[1],\"contents\":{\"int_contents\":[3]}}]}");
    CHECK(generate(in, &o) == 400);
    CHECK_STR_CONTAINS(err, "parameter 'n' has the name of an input");
    /* but priority and timeout never clash: they are left out */
    in = req(&a, "{\"parameters\":{\"timeout\":{\"int64_param\":1000}},"
                 "\"inputs\":[{\"name\":\"timeout\",\"datatype\":\"INT32\",\"shape\":[1],"
                 "\"contents\":{\"int_contents\":[3]}}]}");
    CHECK(generate(in, &o) == 0);
    CHECK(o && json_integer_value(json_object_get(o, "timeout")) == 3);
    json_decref(o);
    /* an input in shared memory is refused (read directly: the region does not exist here) */
    in = req(&a, "{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[1],"
                 "\"parameters\":{\"shared_memory_region\":{\"string_param\":\"reg\"}}}]}");
    grpc_request r;
    CHECK(read_req(in, &r) == 0);
    char *text = NULL;
    size_t len;
    CHECK(grpc_generate_body(in, &r, &text, &len, err, sizeof err) == 400 && text == NULL);
    CHECK_STR_CONTAINS(err, "not in shared memory");
    grpc_request_clear(&r);
    /* no inputs: infer.c refuses it, as it does HTTP's */
    in = req(&a, "{\"parameters\":{\"max_tokens\":{\"int64_param\":4}}}");
    CHECK(generate(in, &o) == 400 && o == NULL);
    pb_arena_free(&a);
}

/* A worker's INFER_RESULT body: its meta, then data. */
static uint8_t *result_body(const char *meta, const void *data, size_t data_len, size_t *len)
{
    size_t ml = strlen(meta);
    *len = 4 + ml + data_len;
    uint8_t *b = malloc(*len);
    proto_put_u32(b, (uint32_t)ml);
    memcpy(b + 4, meta, ml);
    memcpy(b + 4 + ml, data, data_len);
    return b;
}

static Inference__InferParameter *param_of(Inference__ModelInferResponse__ParametersEntry **ps, size_t n,
                                           const char *key)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(ps[i]->key, key) == 0)
            return ps[i]->value;
    return NULL;
}

static void pack_result(void)
{
    infer_opts opts = {0};
    static const struct {
        float f[2];
        uint8_t bytes[4 + 3];
    } data = {{1.0f, 2.0f}, {3, 0, 0, 0, 'a', 'b', 'c'}};
    size_t len;
    uint8_t *body = result_body("{\"outputs\":[{\"name\":\"O\",\"datatype\":\"FP32\",\"shape\":[1,2],\"size\":8},"
                                "{\"name\":\"S\",\"datatype\":\"BYTES\",\"shape\":[1],\"size\":7}]}",
                                &data, sizeof data, &len);
    infer_result res;
    CHECK(infer_read_result("m", &opts, body, len, NULL, 0, &res, err, sizeof err) == 200);
    for (int stream = 0; stream < 2; stream++) {
        size_t n = 0;
        uint8_t *buf = grpc_pack_result("m", stream ? "" : "req-1", &res, stream, &n);
        CHECK(buf != NULL);
        Inference__ModelInferResponse *r;
        Inference__ModelStreamInferResponse *s = NULL;
        if (stream) {
            s = inference__model_stream_infer_response__unpack(NULL, n, buf);
            CHECK(s && s->infer_response && strcmp(s->error_message, "") == 0);
            r = s ? s->infer_response : NULL;
        } else {
            r = inference__model_infer_response__unpack(NULL, n, buf);
        }
        CHECK(r != NULL);
        if (r) {
            CHECK(strcmp(r->model_name, "m") == 0 && strcmp(r->model_version, "1") == 0 &&
                  strcmp(r->id, stream ? "" : "req-1") == 0);
            CHECK(r->n_outputs == 2 && r->n_raw_output_contents == 2);
            if (r->n_outputs == 2 && r->n_raw_output_contents == 2) {
                CHECK(strcmp(r->outputs[0]->name, "O") == 0 && strcmp(r->outputs[0]->datatype, "FP32") == 0 &&
                      r->outputs[0]->n_shape == 2 && r->outputs[0]->shape[1] == 2);
                CHECK(r->raw_output_contents[0].len == 8 && memcmp(r->raw_output_contents[0].data, data.f, 8) == 0);
                CHECK(strcmp(r->outputs[1]->datatype, "BYTES") == 0 && r->raw_output_contents[1].len == 7 &&
                      memcmp(r->raw_output_contents[1].data, data.bytes, 7) == 0);
            }
            Inference__InferParameter *fin = param_of(r->parameters, r->n_parameters, "triton_final_response");
            if (stream)
                CHECK(fin && fin->parameter_choice_case == INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_BOOL_PARAM &&
                      fin->bool_param);
            else
                CHECK(fin == NULL && r->n_parameters == 0);
        }
        if (s)
            inference__model_stream_infer_response__free_unpacked(s, NULL);
        else if (r)
            inference__model_infer_response__free_unpacked(r, NULL);
        free(buf);
    }
    infer_result_clear(&res);
    free(body);

    /* no outputs at all */
    body = result_body("{\"outputs\":[]}", "", 0, &len);
    CHECK(infer_read_result("m", &opts, body, len, NULL, 0, &res, err, sizeof err) == 200);
    size_t n;
    uint8_t *buf = grpc_pack_result("m", NULL, &res, 0, &n);
    Inference__ModelInferResponse *r = inference__model_infer_response__unpack(NULL, n, buf);
    CHECK(r && r->n_outputs == 0 && strcmp(r->id, "") == 0);
    if (r)
        inference__model_infer_response__free_unpacked(r, NULL);
    free(buf);
    infer_result_clear(&res);
    free(body);

    /* an output placed in a client region: where it is, and no bytes of its own */
    infer_shm_ref ref = {.region = (char *)"reg", .region_len = 3, .offset = 16, .byte_size = 64};
    infer_output out = {.name = "O", .name_len = 1, .t = DT_FP32, .ndim = 1, .dims = {4}, .count = 4,
                        .data = (const uint8_t *)"", .size = 16, .shm = &ref};
    infer_result shm_res = {.out = &out, .n = 1};
    buf = grpc_pack_result("m", "i", &shm_res, 0, &n);
    r = inference__model_infer_response__unpack(NULL, n, buf);
    CHECK(r && r->n_outputs == 1 && r->n_raw_output_contents == 1 && r->raw_output_contents[0].len == 0);
    if (r && r->n_outputs == 1) {
        const Inference__ModelInferResponse__InferOutputTensor *o = r->outputs[0];
        Inference__InferParameter *reg = NULL, *size = NULL, *off = NULL;
        for (size_t i = 0; i < o->n_parameters; i++) {
            const char *k = o->parameters[i]->key;
            Inference__InferParameter *v = o->parameters[i]->value;
            if (strcmp(k, "shared_memory_region") == 0)
                reg = v;
            else if (strcmp(k, "shared_memory_byte_size") == 0)
                size = v;
            else if (strcmp(k, "shared_memory_offset") == 0)
                off = v;
        }
        CHECK(o->n_parameters == 3);
        CHECK(reg && reg->parameter_choice_case == INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_STRING_PARAM &&
              strcmp(reg->string_param, "reg") == 0);
        CHECK(size && size->parameter_choice_case == INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_INT64_PARAM &&
              size->int64_param == 16);
        CHECK(off && off->parameter_choice_case == INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_INT64_PARAM &&
              off->int64_param == 16);
        CHECK(o->n_shape == 1 && o->shape[0] == 4);
    }
    if (r)
        inference__model_infer_response__free_unpacked(r, NULL);
    free(buf);
}

static Inference__ModelInferResponse *unpack_stream(uint8_t *buf, size_t n, Inference__ModelStreamInferResponse **s)
{
    CHECK(buf != NULL);
    *s = buf ? inference__model_stream_infer_response__unpack(NULL, n, buf) : NULL;
    free(buf);
    CHECK(*s && (*s)->infer_response);
    return *s ? (*s)->infer_response : NULL;
}

static int final_of(const Inference__ModelInferResponse *r)
{
    Inference__InferParameter *fin = param_of(r->parameters, r->n_parameters, "triton_final_response");
    CHECK(fin && fin->parameter_choice_case == INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_BOOL_PARAM);
    return fin ? fin->bool_param : -1;
}

static const Inference__ModelInferResponse__InferOutputTensor *output_of(const Inference__ModelInferResponse *r,
                                                                          const char *name, size_t *at)
{
    for (size_t i = 0; i < r->n_outputs; i++)
        if (strcmp(r->outputs[i]->name, name) == 0) {
            *at = i;
            return r->outputs[i];
        }
    return NULL;
}

/* Output name of r is of datatype dt, count elements, bytes raw (raw_len of them). */
static int output_is(const Inference__ModelInferResponse *r, const char *name, const char *dt, int64_t count,
                     const void *raw, size_t raw_len)
{
    size_t at;
    const Inference__ModelInferResponse__InferOutputTensor *o = output_of(r, name, &at);
    if (!o || strcmp(o->datatype, dt) != 0 || o->n_shape != 1 || o->shape[0] != count || at >= r->n_raw_output_contents)
        return 0;
    return r->raw_output_contents[at].len == raw_len && memcmp(r->raw_output_contents[at].data, raw, raw_len) == 0;
}

static void pack_generated(void)
{
    Inference__ModelStreamInferResponse *s;
    uint8_t *buf;
    /* a JSON object chunk: each member a typed output */
    static const char chunk[] = "{\"text\":\"hi\",\"n\":3,\"x\":1.5,\"b\":true,\"arr\":[1,2],\"mixed\":[1,2.5],"
                                "\"strs\":[\"a\",\"bc\"],\"obj\":{\"a\":1},\"empty\":[],\"odd\":[1,\"a\"],\"nul\":null}";
    size_t n;
    Inference__ModelInferResponse *r = (buf = grpc_pack_generated("m", "g1", 1, "application/json", (const uint8_t *)chunk, sizeof chunk - 1, 0, NULL, &n), unpack_stream(buf, n, &s));
    if (r) {
        CHECK(strcmp(r->id, "g1") == 0 && final_of(r) == 0);
        CHECK(r->n_outputs == 11 && r->n_raw_output_contents == 11);
        CHECK(output_is(r, "text", "BYTES", 1, "\2\0\0\0hi", 6));
        int64_t three = 3, one_two[2] = {1, 2};
        double x = 1.5, mixed[2] = {1.0, 2.5};
        CHECK(output_is(r, "n", "INT64", 1, &three, 8));
        CHECK(output_is(r, "x", "FP64", 1, &x, 8));
        CHECK(output_is(r, "b", "BOOL", 1, "\1", 1));
        CHECK(output_is(r, "arr", "INT64", 2, one_two, 16));
        CHECK(output_is(r, "mixed", "FP64", 2, mixed, 16));
        CHECK(output_is(r, "strs", "BYTES", 2, "\1\0\0\0a\2\0\0\0bc", 11));
        CHECK(output_is(r, "obj", "BYTES", 1, "\7\0\0\0{\"a\":1}", 11));
        CHECK(output_is(r, "empty", "BYTES", 1, "\2\0\0\0[]", 6));
        CHECK(output_is(r, "odd", "BYTES", 1, "\7\0\0\0[1,\"a\"]", 11));
        CHECK(output_is(r, "nul", "BYTES", 1, "\4\0\0\0null", 8));
        inference__model_stream_infer_response__free_unpacked(s, NULL);
    }
    /* a string with a NUL in it (a BYTES element's) is still a string */
    static const char nul[] = "{\"t\":\"a\\u0000b\"}";
    r = (buf = grpc_pack_generated("m", "g0", 1, "application/json", (const uint8_t *)nul, sizeof nul - 1, 0, NULL, &n),
         unpack_stream(buf, n, &s));
    if (r) {
        CHECK(r->n_outputs == 1 && output_is(r, "t", "BYTES", 1, "\3\0\0\0a\0b", 7));
        inference__model_stream_infer_response__free_unpacked(s, NULL);
    }
    /* other bytes (not events, or not a JSON object): one BYTES output "content" with its content type */
    r = (buf = grpc_pack_generated("m", "g2", 0, "text/plain", (const uint8_t *)"hello", 5, 1, NULL, &n), unpack_stream(buf, n, &s));
    if (r) {
        CHECK(final_of(r) == 1 && r->n_outputs == 1);
        CHECK(output_is(r, "content", "BYTES", 1, "\5\0\0\0hello", 9));
        const Inference__ModelInferResponse__InferOutputTensor *o = r->outputs[0];
        Inference__InferParameter *ct = NULL;
        for (size_t i = 0; i < o->n_parameters; i++)
            if (strcmp(o->parameters[i]->key, "content_type") == 0)
                ct = o->parameters[i]->value;
        CHECK(ct && ct->parameter_choice_case == INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_STRING_PARAM &&
              strcmp(ct->string_param, "text/plain") == 0);
        inference__model_stream_infer_response__free_unpacked(s, NULL);
    }
    r = (buf = grpc_pack_generated("m", "g3", 1, NULL, (const uint8_t *)"[1,2]", 5, 0, NULL, &n), unpack_stream(buf, n, &s));
    if (r) {
        CHECK(output_is(r, "content", "BYTES", 1, "\5\0\0\0[1,2]", 9));
        CHECK(r->outputs[0]->n_parameters == 1 &&
              strcmp(r->outputs[0]->parameters[0]->value->string_param, "application/octet-stream") == 0);
        inference__model_stream_infer_response__free_unpacked(s, NULL);
    }
    /* Triton's empty final response: no outputs, final true */
    r = (buf = grpc_pack_generated("m", "g4", 0, NULL, NULL, 0, 1, NULL, &n), unpack_stream(buf, n, &s));
    if (r) {
        CHECK(final_of(r) == 1 && r->n_outputs == 0 && r->n_raw_output_contents == 0 && strcmp(r->id, "g4") == 0);
        inference__model_stream_infer_response__free_unpacked(s, NULL);
    }
}

static void pack_stream_error(void)
{
    size_t n;
    uint8_t *buf;
    Inference__ModelStreamInferResponse *s;
    Inference__ModelInferResponse *r =
        (buf = grpc_pack_stream_error("m", "e1", "model 'm': it failed", &n), unpack_stream(buf, n, &s));
    if (r) {
        CHECK(strcmp(s->error_message, "model 'm': it failed") == 0);
        CHECK(strcmp(r->id, "e1") == 0 && strcmp(r->model_name, "m") == 0 && r->n_outputs == 0 && final_of(r) == 1);
        inference__model_stream_infer_response__free_unpacked(s, NULL);
    }
    r = (buf = grpc_pack_stream_error("m", NULL, "x", &n), unpack_stream(buf, n, &s));
    if (r) {
        CHECK(strcmp(r->id, "") == 0);
        inference__model_stream_infer_response__free_unpacked(s, NULL);
    }
}

static void grpc_codes(void)
{
    static const struct {
        int http, grpc;
    } map[] = {{200, GB_OK},
               {400, GB_INVALID_ARGUMENT},
               {415, GB_INVALID_ARGUMENT},
               {401, GB_UNAUTHENTICATED},
               {403, GB_PERMISSION_DENIED},
               {404, GB_NOT_FOUND},
               {409, GB_ABORTED},
               {413, GB_RESOURCE_EXHAUSTED},
               {507, GB_RESOURCE_EXHAUSTED},
               {500, GB_INTERNAL},
               {502, GB_INTERNAL},
               {503, GB_UNAVAILABLE},
               {504, GB_DEADLINE_EXCEEDED},
               {418, GB_UNKNOWN},
               {0, GB_UNKNOWN},
               {-1, GB_UNKNOWN}};
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
        if (api_grpc_code(map[i].http) != map[i].grpc)
            fprintf(stderr, "api_grpc_code(%d) = %d, not %d\n", map[i].http, api_grpc_code(map[i].http), map[i].grpc);
        CHECK(api_grpc_code(map[i].http) == map[i].grpc);
    }
}

CHECK_MAIN(CASE(raw_in_place), CASE(typed_contents), CASE(typed_refused), CASE(raw_refused), CASE(not_utf8),
           CASE(parameters), CASE(through_infer), CASE(generate_body), CASE(pack_result), CASE(pack_generated),
           CASE(pack_stream_error), CASE(grpc_codes))
