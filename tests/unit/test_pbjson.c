/*
 * Unit tests of pbjson: protobuf-c messages of Triton's protos built from
 * JSON in an arena (every scalar kind, enums, strings, nested, repeated,
 * map and oneof fields, what is skipped), packed and unpacked back; and
 * the JSON corral's own endpoints answer (model configuration,
 * statistics) converted without a member lost.
 */
#include "check.h"
#include "modelcfg.h"
#include "pbjson.h"

#include "grpc_service.pb-c.h"
#include "model_config.pb-c.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

static json_t *load(const char *text)
{
    json_error_t e;
    json_t *j = json_loads(text, 0, &e);
    if (!j)
        fprintf(stderr, "bad test JSON: %s\n", e.text);
    return j;
}

/* m of descriptor d filled from text; the number skipped in *skipped. */
static ProtobufCMessage *from(pb_arena *a, const ProtobufCMessageDescriptor *d, const char *text, int *skipped)
{
    ProtobufCMessage *m = pb_new(a, d);
    json_t *j = load(text);
    *skipped = 0;
    pb_from_json(a, m, j, skipped);
    json_decref(j);
    return m;
}

/* m packed with pb_pack and unpacked again with protobuf-c's own allocator (free with protobuf_c_message_free_unpacked). */
static ProtobufCMessage *round_trip(const ProtobufCMessage *m)
{
    size_t len = 0;
    uint8_t *buf = pb_pack(m, &len);
    CHECK(buf != NULL);
    CHECK(len == protobuf_c_message_get_packed_size(m));
    ProtobufCMessage *back = protobuf_c_message_unpack(m->descriptor, NULL, len, buf);
    CHECK(back != NULL);
    free(buf);
    return back;
}

static void singular_scalars(void)
{
    pb_arena a = {0};
    int skipped;
    /* int32 (a number), enum by name, string, bool */
    Inference__ModelConfig *c = (Inference__ModelConfig *)from(
        &a, &inference__model_config__descriptor,
        "{\"name\":\"m\",\"max_batch_size\":-7,\"platform\":\"p\\u00e9\"}", &skipped);
    CHECK(skipped == 0);
    CHECK(c->max_batch_size == -7 && strcmp(c->name, "m") == 0 && strcmp(c->platform, "p\xc3\xa9") == 0);
    /* int32 as a string of digits; out of range refused */
    c = (Inference__ModelConfig *)from(&a, &inference__model_config__descriptor, "{\"max_batch_size\":\"42\"}",
                                       &skipped);
    CHECK(skipped == 0 && c->max_batch_size == 42);
    c = (Inference__ModelConfig *)from(&a, &inference__model_config__descriptor,
                                       "{\"max_batch_size\":2147483648, \"name\":\"x\"}", &skipped);
    CHECK(skipped == 1 && c->max_batch_size == 0 && strcmp(c->name, "x") == 0);
    c = (Inference__ModelConfig *)from(&a, &inference__model_config__descriptor, "{\"max_batch_size\":-2147483648}",
                                       &skipped);
    CHECK(skipped == 0 && c->max_batch_size == INT32_MIN);
    /* an integral double is taken, a fractional one is not */
    c = (Inference__ModelConfig *)from(&a, &inference__model_config__descriptor, "{\"max_batch_size\":8.0}",
                                       &skipped);
    CHECK(skipped == 0 && c->max_batch_size == 8);
    c = (Inference__ModelConfig *)from(&a, &inference__model_config__descriptor, "{\"max_batch_size\":8.5}",
                                       &skipped);
    CHECK(skipped == 1 && c->max_batch_size == 0);
    /* a double beyond int64's range is no integer (and must not reach the cast) */
    c = (Inference__ModelConfig *)from(&a, &inference__model_config__descriptor,
                                       "{\"max_batch_size\":1e300,\"runtime\":\"r\"}", &skipped);
    CHECK(skipped == 1 && c->max_batch_size == 0 && strcmp(c->runtime, "r") == 0);
    Inference__ModelEnsembling__Step *big = (Inference__ModelEnsembling__Step *)from(
        &a, &inference__model_ensembling__step__descriptor, "{\"model_version\":-9.3e18}", &skipped);
    CHECK(skipped == 1 && big->model_version == 0);
    big = (Inference__ModelEnsembling__Step *)from(&a, &inference__model_ensembling__step__descriptor,
                                                   "{\"model_version\":-4e18}", &skipped);
    CHECK(skipped == 0 && big->model_version == -4000000000000000000LL);

    /* uint32, uint64 (number and digits), bool, enum by name */
    Inference__ModelQueuePolicy *q = (Inference__ModelQueuePolicy *)from(
        &a, &inference__model_queue_policy__descriptor,
        "{\"max_queue_size\":4294967295,\"default_timeout_microseconds\":\"18446744073709551615\","
        "\"allow_timeout_override\":true,\"timeout_action\":\"DELAY\"}",
        &skipped);
    CHECK(skipped == 0);
    CHECK(q->max_queue_size == UINT32_MAX && q->default_timeout_microseconds == UINT64_MAX);
    CHECK(q->allow_timeout_override && q->timeout_action == INFERENCE__MODEL_QUEUE_POLICY__TIMEOUT_ACTION__DELAY);
    /* beyond INT64_MAX, as the JSON mapping writes a uint64 */
    q = (Inference__ModelQueuePolicy *)from(&a, &inference__model_queue_policy__descriptor,
                                            "{\"default_timeout_microseconds\":\"9223372036854775808\"}", &skipped);
    CHECK(skipped == 0 && q->default_timeout_microseconds == (uint64_t)INT64_MAX + 1);
    q = (Inference__ModelQueuePolicy *)from(&a, &inference__model_queue_policy__descriptor,
                                            "{\"default_timeout_microseconds\":12}", &skipped);
    CHECK(skipped == 0 && q->default_timeout_microseconds == 12);
    /* negatives, oversize, non-digits and the wrong kinds are skipped, the field left as it was */
    q = (Inference__ModelQueuePolicy *)from(
        &a, &inference__model_queue_policy__descriptor,
        "{\"max_queue_size\":-1,\"default_timeout_microseconds\":\"-5\",\"allow_timeout_override\":1,"
        "\"timeout_action\":\"NOPE\"}",
        &skipped);
    CHECK(skipped == 4);
    CHECK(q->max_queue_size == 0 && q->default_timeout_microseconds == 0 && !q->allow_timeout_override &&
          q->timeout_action == INFERENCE__MODEL_QUEUE_POLICY__TIMEOUT_ACTION__REJECT);
    q = (Inference__ModelQueuePolicy *)from(
        &a, &inference__model_queue_policy__descriptor,
        "{\"max_queue_size\":4294967296,\"default_timeout_microseconds\":\"12x\",\"allow_timeout_override\":\"true\","
        "\"timeout_action\":9}",
        &skipped);
    CHECK(skipped == 4 && q->max_queue_size == 0 && q->default_timeout_microseconds == 0 &&
          !q->allow_timeout_override);
    q = (Inference__ModelQueuePolicy *)from(&a, &inference__model_queue_policy__descriptor,
                                            "{\"default_timeout_microseconds\":\"\",\"max_queue_size\":null}",
                                            &skipped);
    CHECK(skipped == 2 && q->default_timeout_microseconds == 0);
    /* an enum by number */
    q = (Inference__ModelQueuePolicy *)from(&a, &inference__model_queue_policy__descriptor, "{\"timeout_action\":1}",
                                            &skipped);
    CHECK(skipped == 0 && q->timeout_action == INFERENCE__MODEL_QUEUE_POLICY__TIMEOUT_ACTION__DELAY);

    /* float */
    Inference__ModelSequenceBatching__StrategyDirect *sd = (Inference__ModelSequenceBatching__StrategyDirect *)from(
        &a, &inference__model_sequence_batching__strategy_direct__descriptor,
        "{\"minimum_slot_utilization\":0.25,\"max_queue_delay_microseconds\":3}", &skipped);
    CHECK(skipped == 0 && sd->minimum_slot_utilization == 0.25f && sd->max_queue_delay_microseconds == 3);
    sd = (Inference__ModelSequenceBatching__StrategyDirect *)from(
        &a, &inference__model_sequence_batching__strategy_direct__descriptor, "{\"minimum_slot_utilization\":2}",
        &skipped);
    CHECK(skipped == 0 && sd->minimum_slot_utilization == 2.0f);
    sd = (Inference__ModelSequenceBatching__StrategyDirect *)from(
        &a, &inference__model_sequence_batching__strategy_direct__descriptor, "{\"minimum_slot_utilization\":\"1\"}",
        &skipped);
    CHECK(skipped == 1 && sd->minimum_slot_utilization == 0);

    /* int64: ModelEnsembling.Step.model_version, as a number, as digits, a negative one */
    Inference__ModelEnsembling__Step *st = (Inference__ModelEnsembling__Step *)from(
        &a, &inference__model_ensembling__step__descriptor, "{\"model_version\":\"-9223372036854775808\"}", &skipped);
    CHECK(skipped == 0 && st->model_version == INT64_MIN);
    st = (Inference__ModelEnsembling__Step *)from(&a, &inference__model_ensembling__step__descriptor,
                                                  "{\"model_version\":9223372036854775807}", &skipped);
    CHECK(skipped == 0 && st->model_version == INT64_MAX);
    st = (Inference__ModelEnsembling__Step *)from(&a, &inference__model_ensembling__step__descriptor,
                                                  "{\"model_version\":\"9223372036854775808x\"}", &skipped);
    CHECK(skipped == 1 && st->model_version == 0);

    /* unknown keys are counted, and a NULL skipped is allowed */
    c = (Inference__ModelConfig *)from(&a, &inference__model_config__descriptor,
                                       "{\"nope\":1,\"name\":\"n\",\"maxBatchSize\":3}", &skipped);
    CHECK(skipped == 2 && strcmp(c->name, "n") == 0 && c->max_batch_size == 0);
    json_t *j = load("{\"nope\":1,\"name\":7}");
    pb_from_json(&a, (ProtobufCMessage *)c, j, NULL);
    json_decref(j);
    CHECK(strcmp(c->name, "n") == 0);
    pb_arena_free(&a);
    CHECK(a.head == NULL);
}

static void repeated_fields(void)
{
    pb_arena a = {0};
    int skipped;
    Inference__InferTensorContents *t = (Inference__InferTensorContents *)from(
        &a, &inference__infer_tensor_contents__descriptor,
        "{\"bool_contents\":[true,false,true],\"int_contents\":[-1,2147483647,\"-2147483648\"],"
        "\"int64_contents\":[-9007199254740993,\"9223372036854775807\"],"
        "\"uint_contents\":[0,4294967295],\"uint64_contents\":[\"18446744073709551615\",5],"
        "\"fp32_contents\":[1.5,-2],\"fp64_contents\":[0.1,1e300,3],"
        "\"bytes_contents\":[\"ab\",\"\"]}",
        &skipped);
    CHECK(skipped == 0);
    CHECK(t->n_bool_contents == 3 && t->bool_contents[0] && !t->bool_contents[1] && t->bool_contents[2]);
    CHECK(t->n_int_contents == 3 && t->int_contents[0] == -1 && t->int_contents[1] == INT32_MAX &&
          t->int_contents[2] == INT32_MIN);
    CHECK(t->n_int64_contents == 2 && t->int64_contents[0] == -9007199254740993LL &&
          t->int64_contents[1] == INT64_MAX);
    CHECK(t->n_uint_contents == 2 && t->uint_contents[1] == UINT32_MAX);
    CHECK(t->n_uint64_contents == 2 && t->uint64_contents[0] == UINT64_MAX && t->uint64_contents[1] == 5);
    CHECK(t->n_fp32_contents == 2 && t->fp32_contents[0] == 1.5f && t->fp32_contents[1] == -2.0f);
    CHECK(t->n_fp64_contents == 3 && t->fp64_contents[0] == 0.1 && t->fp64_contents[1] == 1e300 &&
          t->fp64_contents[2] == 3.0);
    CHECK(t->n_bytes_contents == 2 && t->bytes_contents[0].len == 2 && memcmp(t->bytes_contents[0].data, "ab", 2) == 0 &&
          t->bytes_contents[1].len == 0);

    Inference__InferTensorContents *back = (Inference__InferTensorContents *)round_trip(&t->base);
    if (back) {
        CHECK(back->n_bool_contents == 3 && back->bool_contents[2]);
        CHECK(back->n_int_contents == 3 && back->int_contents[2] == INT32_MIN);
        CHECK(back->n_int64_contents == 2 && back->int64_contents[0] == -9007199254740993LL);
        CHECK(back->n_uint_contents == 2 && back->uint_contents[1] == UINT32_MAX);
        CHECK(back->n_uint64_contents == 2 && back->uint64_contents[0] == UINT64_MAX);
        CHECK(back->n_fp32_contents == 2 && back->fp32_contents[0] == 1.5f);
        CHECK(back->n_fp64_contents == 3 && back->fp64_contents[1] == 1e300);
        CHECK(back->n_bytes_contents == 2 && memcmp(back->bytes_contents[0].data, "ab", 2) == 0);
        protobuf_c_message_free_unpacked(&back->base, NULL);
    }

    /* wrong elements are skipped one by one, the rest kept in order; a non-array skips the field */
    t = (Inference__InferTensorContents *)from(
        &a, &inference__infer_tensor_contents__descriptor,
        "{\"int_contents\":[1,\"x\",2147483648,3,null,{}],\"uint_contents\":[-1,7],\"bool_contents\":true,"
        "\"fp32_contents\":[],\"bytes_contents\":[1,\"q\"]}",
        &skipped);
    CHECK(skipped == 4 + 1 + 1 + 1);
    CHECK(t->n_int_contents == 2 && t->int_contents[0] == 1 && t->int_contents[1] == 3);
    CHECK(t->n_uint_contents == 1 && t->uint_contents[0] == 7);
    CHECK(t->n_bool_contents == 0 && t->bool_contents == NULL);
    CHECK(t->n_fp32_contents == 0);
    CHECK(t->n_bytes_contents == 1 && t->bytes_contents[0].len == 1);

    /* repeated strings and repeated enums (by name and number), repeated messages */
    Inference__ModelConfig *c = (Inference__ModelConfig *)from(
        &a, &inference__model_config__descriptor,
        "{\"instance_group\":[{\"name\":\"g\",\"kind\":\"KIND_GPU\",\"count\":2,\"gpus\":[0,1],"
        "\"profile\":[\"a\",\"b\"]},{\"kind\":2},7],"
        "\"input\":[{\"name\":\"IN\",\"data_type\":\"TYPE_FP32\",\"dims\":[-1,\"4\"]}]}",
        &skipped);
    CHECK(skipped == 1); /* the 7 */
    CHECK(c->n_instance_group == 2);
    if (c->n_instance_group == 2) {
        Inference__ModelInstanceGroup *g = c->instance_group[0];
        CHECK(strcmp(g->name, "g") == 0 && g->kind == INFERENCE__MODEL_INSTANCE_GROUP__KIND__KIND_GPU &&
              g->count == 2);
        CHECK(g->n_gpus == 2 && g->gpus[1] == 1 && g->n_profile == 2 && strcmp(g->profile[1], "b") == 0);
        CHECK(c->instance_group[1]->kind == INFERENCE__MODEL_INSTANCE_GROUP__KIND__KIND_CPU);
    }
    CHECK(c->n_input == 1 && c->input[0]->data_type == INFERENCE__DATA_TYPE__TYPE_FP32 && c->input[0]->n_dims == 2 &&
          c->input[0]->dims[0] == -1 && c->input[0]->dims[1] == 4);
    pb_arena_free(&a);
}

static void maps_and_oneofs(void)
{
    pb_arena a = {0};
    int skipped;
    /* map<string, ModelParameter> */
    Inference__ModelConfig *c = (Inference__ModelConfig *)from(
        &a, &inference__model_config__descriptor,
        "{\"parameters\":{\"a\":{\"string_value\":\"1\"},\"b\":{\"string_value\":\"x\"},\"bad\":3},"
        "\"metric_tags\":{\"k\":\"v\",\"n\":1},\"cc_model_filenames\":[]}",
        &skipped);
    CHECK(skipped == 3); /* "bad" (not a message), "n" (not a string), cc_model_filenames (not an object) */
    CHECK(c->n_parameters == 2);
    if (c->n_parameters == 2) {
        CHECK(strcmp(c->parameters[0]->key, "a") == 0 && strcmp(c->parameters[0]->value->string_value, "1") == 0);
        CHECK(strcmp(c->parameters[1]->key, "b") == 0 && strcmp(c->parameters[1]->value->string_value, "x") == 0);
    }
    CHECK(c->n_metric_tags == 1 && strcmp(c->metric_tags[0]->value, "v") == 0);
    CHECK(c->n_cc_model_filenames == 0);

    /* a map with uint64 keys (the JSON mapping writes them as strings), oneof of a message */
    c = (Inference__ModelConfig *)from(
        &a, &inference__model_config__descriptor,
        "{\"dynamic_batching\":{\"priority_queue_policy\":{\"1\":{\"max_queue_size\":3},"
        "\"18446744073709551615\":{},\"x\":{}},\"preferred_batch_size\":[4,8]}}",
        &skipped);
    CHECK(skipped == 1); /* "x" is no uint64 */
    CHECK(c->scheduling_choice_case == INFERENCE__MODEL_CONFIG__SCHEDULING_CHOICE_DYNAMIC_BATCHING);
    Inference__ModelDynamicBatching *db = c->dynamic_batching;
    CHECK(db && db->n_preferred_batch_size == 2 && db->preferred_batch_size[1] == 8);
    CHECK(db && db->n_priority_queue_policy == 2);
    if (db && db->n_priority_queue_policy == 2) {
        CHECK(db->priority_queue_policy[0]->key == 1 && db->priority_queue_policy[0]->value->max_queue_size == 3);
        CHECK(db->priority_queue_policy[1]->key == UINT64_MAX);
    }
    Inference__ModelConfig *cb = (Inference__ModelConfig *)round_trip(&c->base);
    if (cb) {
        CHECK(cb->scheduling_choice_case == INFERENCE__MODEL_CONFIG__SCHEDULING_CHOICE_DYNAMIC_BATCHING);
        CHECK(cb->dynamic_batching->n_priority_queue_policy == 2 &&
              cb->dynamic_batching->priority_queue_policy[1]->key == UINT64_MAX);
        protobuf_c_message_free_unpacked(&cb->base, NULL);
    }

    /* InferParameter's oneof: each member sets its case */
    static const struct {
        const char *json;
        Inference__InferParameter__ParameterChoiceCase want;
    } cases[] = {
        {"{\"bool_param\":true}", INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_BOOL_PARAM},
        {"{\"int64_param\":\"-3\"}", INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_INT64_PARAM},
        {"{\"string_param\":\"s\"}", INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_STRING_PARAM},
        {"{\"double_param\":2.5}", INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_DOUBLE_PARAM},
        {"{\"uint64_param\":\"18446744073709551615\"}", INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_UINT64_PARAM},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        Inference__InferParameter *p =
            (Inference__InferParameter *)from(&a, &inference__infer_parameter__descriptor, cases[i].json, &skipped);
        CHECK(skipped == 0 && p->parameter_choice_case == cases[i].want);
        Inference__InferParameter *pb = (Inference__InferParameter *)round_trip(&p->base);
        if (!pb)
            continue;
        CHECK(pb->parameter_choice_case == cases[i].want);
        switch (cases[i].want) {
        case INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_BOOL_PARAM: CHECK(pb->bool_param); break;
        case INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_INT64_PARAM: CHECK(pb->int64_param == -3); break;
        case INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_STRING_PARAM: CHECK(strcmp(pb->string_param, "s") == 0); break;
        case INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_DOUBLE_PARAM: CHECK(pb->double_param == 2.5); break;
        case INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_UINT64_PARAM: CHECK(pb->uint64_param == UINT64_MAX); break;
        default: CHECK(0);
        }
        protobuf_c_message_free_unpacked(&pb->base, NULL);
    }
    /* a member of the wrong kind leaves the oneof unset */
    Inference__InferParameter *p =
        (Inference__InferParameter *)from(&a, &inference__infer_parameter__descriptor, "{\"bool_param\":1}", &skipped);
    CHECK(skipped == 1 && p->parameter_choice_case == INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE__NOT_SET);

    /* a response's parameters map, of InferParameter: what grpc_infer.c builds outputs' with */
    Inference__ModelInferResponse *r = (Inference__ModelInferResponse *)from(
        &a, &inference__model_infer_response__descriptor,
        "{\"model_name\":\"m\",\"id\":\"7\",\"parameters\":{\"triton_final_response\":{\"bool_param\":true},"
        "\"n\":{\"int64_param\":5}},\"outputs\":[{\"name\":\"o\",\"datatype\":\"FP32\",\"shape\":[2],"
        "\"parameters\":{\"shared_memory_region\":{\"string_param\":\"r\"}}}],"
        "\"raw_output_contents\":[\"abcd\"]}",
        &skipped);
    CHECK(skipped == 0);
    Inference__ModelInferResponse *rb = (Inference__ModelInferResponse *)round_trip(&r->base);
    if (rb) {
        CHECK(strcmp(rb->model_name, "m") == 0 && strcmp(rb->id, "7") == 0 && rb->n_parameters == 2);
        CHECK(rb->n_parameters == 2 && strcmp(rb->parameters[0]->key, "triton_final_response") == 0 &&
              rb->parameters[0]->value->bool_param && rb->parameters[1]->value->int64_param == 5);
        CHECK(rb->n_outputs == 1 && rb->outputs[0]->n_shape == 1 && rb->outputs[0]->shape[0] == 2 &&
              rb->outputs[0]->n_parameters == 1 &&
              strcmp(rb->outputs[0]->parameters[0]->value->string_param, "r") == 0);
        CHECK(rb->n_raw_output_contents == 1 && rb->raw_output_contents[0].len == 4 &&
              memcmp(rb->raw_output_contents[0].data, "abcd", 4) == 0);
        protobuf_c_message_free_unpacked(&rb->base, NULL);
    }
    pb_arena_free(&a);
}

static void arena(void)
{
    pb_arena a = {0};
    /* many small allocations: each zeroed, aligned, apart from the others */
    int all_ok = 1;
    for (int i = 0; i < 10000; i++) {
        size_t n = (size_t)(i % 37) + 1;
        unsigned char *p = pb_alloc(&a, n);
        int zero = 1;
        for (size_t k = 0; k < n; k++)
            zero &= p[k] == 0;
        all_ok &= zero && (uintptr_t)p % _Alignof(max_align_t) == 0;
        memset(p, 0xab, n);
    }
    CHECK(all_ok);
    /* large ones, past the block size, and small ones after them */
    unsigned char *big = pb_alloc(&a, 1 << 20);
    CHECK(big[0] == 0 && big[(1 << 20) - 1] == 0);
    memset(big, 1, 1 << 20);
    unsigned char *small = pb_alloc(&a, 8);
    CHECK(small[0] == 0 && (small < big || small >= big + (1 << 20)));
    unsigned char *zero = pb_alloc(&a, 0);
    CHECK(zero != NULL);
    char *s = pb_strdup(&a, "hello", 3);
    CHECK(strcmp(s, "hel") == 0);
    s = pb_strdup(&a, NULL, 0);
    CHECK(s && *s == 0);
    /* a message built through many allocations: a long repeated field of messages */
    json_t *groups = json_array();
    for (int i = 0; i < 5000; i++)
        json_array_append_new(groups, json_pack("{s:s,s:i,s:[i,i]}", "name", "group", "count", i, "gpus", i, i + 1));
    json_t *j = json_pack("{s:o}", "instance_group", groups);
    Inference__ModelConfig *c = (Inference__ModelConfig *)pb_new(&a, &inference__model_config__descriptor);
    int skipped = 0;
    pb_from_json(&a, &c->base, j, &skipped);
    json_decref(j);
    CHECK(skipped == 0 && c->n_instance_group == 5000 && c->instance_group[4999]->count == 4999 &&
          c->instance_group[4999]->gpus[1] == 5000);
    Inference__ModelConfig *back = (Inference__ModelConfig *)round_trip(&c->base);
    if (back) {
        CHECK(back->n_instance_group == 5000 && back->instance_group[1234]->gpus[0] == 1234);
        protobuf_c_message_free_unpacked(&back->base, NULL);
    }
    /* a long string */
    char *text = malloc(100001);
    memset(text, 'x', 100000);
    text[100000] = 0;
    j = json_pack("{s:s}", "name", text);
    pb_from_json(&a, &c->base, j, &skipped);
    json_decref(j);
    CHECK(strlen(c->name) == 100000);
    free(text);
    pb_arena_free(&a);
    CHECK(a.head == NULL);
    pb_arena_free(&a); /* twice is harmless */
}

static manifest *parse(const char *yaml)
{
    manifest *m = NULL;
    char err[512];
    if (manifest_parse("model.yaml", (const unsigned char *)yaml, strlen(yaml), "mydir", &m, err, sizeof err) < 0)
        fprintf(stderr, "%s\n", err);
    return m;
}

/* modelcfg's Triton configuration is ModelConfig's JSON mapping: nothing in it is lost on the way to protobuf. */
static void model_config_converts(void)
{
    static const char *const yamls[] = {
        "runtime: python\nentrypoint: worker.py\ninstances: 3\n"
        "parameters: {prefix: \">\", n: 2, nested: {a: [1, 2]}}\n"
        "inputs: [{name: IN, datatype: FP32, shape: [-1, 4], optional: true}]\n"
        "outputs: [{name: OUT, datatype: BYTES, shape: [2]}]\n",
        "runtime: exec\nentrypoint: ./w\ntimeout: 2s\nmax_queue: 9\npriority_levels: 4\ndefault_priority: 3\n"
        "batching: {max_batch_size: 16, max_queue_delay: 5ms, preferred_batch_sizes: [4, 8]}\n"
        "inputs: [{name: A, datatype: INT64, shape: [-1, 2]}, {name: B, datatype: BOOL, shape: [-1]}]\n"
        "outputs: [{name: C, datatype: FP16, shape: [-1, 3]}]\n",
        "runtime: python\nentrypoint: gen.py\ndecoupled: true\n",
    };
    for (size_t i = 0; i < sizeof yamls / sizeof yamls[0]; i++) {
        manifest *mf = parse(yamls[i]);
        CHECK(mf != NULL);
        if (!mf)
            continue;
        json_t *cfg = modelcfg_json("m", mf, mf->inputs, mf->outputs, i == 1 ? "labels.txt" : NULL);
        pb_arena a = {0};
        Inference__ModelConfig *c = (Inference__ModelConfig *)pb_new(&a, &inference__model_config__descriptor);
        int skipped = 0;
        pb_from_json(&a, &c->base, cfg, &skipped);
        if (skipped) {
            char *t = json_dumps(cfg, JSON_COMPACT);
            fprintf(stderr, "manifest %zu: %d skipped in %s\n", i, skipped, t);
            free(t);
        }
        CHECK(skipped == 0);
        CHECK(strcmp(c->name, "m") == 0 && c->version_policy &&
              c->version_policy->policy_choice_case == INFERENCE__MODEL_VERSION_POLICY__POLICY_CHOICE_LATEST &&
              c->version_policy->latest->num_versions == 1);
        CHECK(c->n_instance_group == 1 && c->instance_group[0]->kind == INFERENCE__MODEL_INSTANCE_GROUP__KIND__KIND_CPU);
        if (i == 0) {
            CHECK(c->instance_group[0]->count == 3 && c->n_parameters == 3 && c->n_input == 1 && c->input[0]->optional &&
                  c->n_output == 1 && c->output[0]->data_type == INFERENCE__DATA_TYPE__TYPE_STRING);
            CHECK(c->scheduling_choice_case == INFERENCE__MODEL_CONFIG__SCHEDULING_CHOICE__NOT_SET);
        } else if (i == 1) {
            CHECK(c->max_batch_size == 16 && c->dynamic_batching &&
                  c->scheduling_choice_case == INFERENCE__MODEL_CONFIG__SCHEDULING_CHOICE_DYNAMIC_BATCHING);
            Inference__ModelDynamicBatching *db = c->dynamic_batching;
            CHECK(db && db->n_preferred_batch_size == 2 && db->max_queue_delay_microseconds == 5000 &&
                  db->priority_levels == 4 && db->default_priority_level == 3);
            CHECK(db && db->default_queue_policy && db->default_queue_policy->default_timeout_microseconds == 2000000 &&
                  db->default_queue_policy->max_queue_size == 9 && db->default_queue_policy->allow_timeout_override);
            CHECK(c->n_input == 2 && c->input[0]->n_dims == 1 && c->input[0]->dims[0] == 2 &&
                  c->input[1]->data_type == INFERENCE__DATA_TYPE__TYPE_BOOL);
            CHECK(c->n_output == 1 && c->output[0]->data_type == INFERENCE__DATA_TYPE__TYPE_FP16 &&
                  strcmp(c->output[0]->label_filename, "labels.txt") == 0);
        } else {
            CHECK(c->model_transaction_policy && c->model_transaction_policy->decoupled);
        }
        Inference__ModelConfig *back = (Inference__ModelConfig *)round_trip(&c->base);
        if (back) {
            CHECK(strcmp(back->name, "m") == 0 && back->n_input == c->n_input && back->n_parameters == c->n_parameters);
            protobuf_c_message_free_unpacked(&back->base, NULL);
        }
        pb_arena_free(&a);
        json_decref(cfg);
        manifest_free(mf);
    }
}

/*
 * The statistics endpoint's JSON, in the shape metrics_triton_stats
 * renders (metrics.c, model_stats_json): every member is a field of
 * ModelStatisticsResponse.
 */
static void statistics_convert(void)
{
    json_t *j = load("{\"model_stats\":[{\"name\":\"echo\",\"version\":\"1\",\"last_inference\":1764600000123,"
                     "\"inference_count\":12,\"execution_count\":9,\"inference_stats\":{"
                     "\"success\":{\"count\":11,\"ns\":5000},\"fail\":{\"count\":1,\"ns\":70},"
                     "\"queue\":{\"count\":12,\"ns\":300},\"compute_input\":{\"count\":9,\"ns\":0},"
                     "\"compute_infer\":{\"count\":9,\"ns\":4000},\"compute_output\":{\"count\":9,\"ns\":0}},"
                     "\"batch_stats\":[]}]}");
    pb_arena a = {0};
    Inference__ModelStatisticsResponse *r =
        (Inference__ModelStatisticsResponse *)pb_new(&a, &inference__model_statistics_response__descriptor);
    int skipped = 0;
    pb_from_json(&a, &r->base, j, &skipped);
    CHECK(skipped == 0);
    CHECK(r->n_model_stats == 1);
    if (r->n_model_stats == 1) {
        Inference__ModelStatistics *s = r->model_stats[0];
        CHECK(strcmp(s->name, "echo") == 0 && strcmp(s->version, "1") == 0 && s->last_inference == 1764600000123ULL &&
              s->inference_count == 12 && s->execution_count == 9);
        CHECK(s->inference_stats && s->inference_stats->success->count == 11 && s->inference_stats->success->ns == 5000 &&
              s->inference_stats->fail->count == 1 && s->inference_stats->compute_infer->ns == 4000 &&
              s->inference_stats->compute_output->count == 9);
    }
    Inference__ModelStatisticsResponse *back = (Inference__ModelStatisticsResponse *)round_trip(&r->base);
    if (back) {
        CHECK(back->n_model_stats == 1 && back->model_stats[0]->inference_stats->queue->ns == 300);
        protobuf_c_message_free_unpacked(&back->base, NULL);
    }
    pb_arena_free(&a);
    json_decref(j);
}

/*
 * Model metadata (model.c's model_metadata_json: the manifest's declared
 * tensors) and the repository index (api_v2.c's api_repository_index)
 * convert too; what is skipped are corral's own members, which Triton's
 * messages have no field for: an input's "optional", an index entry's
 * "corral_state" and "changed". They stay on HTTP; gRPC drops them.
 */
static void metadata_and_index_convert(void)
{
    manifest *mf = parse("runtime: python\nentrypoint: worker.py\n"
                         "inputs: [{name: IN, datatype: FP32, shape: [-1, 4], optional: true}, "
                         "{name: K, datatype: INT64, shape: [1]}]\n"
                         "outputs: [{name: OUT, datatype: BYTES, shape: [2]}]\n");
    CHECK(mf != NULL);
    if (!mf)
        return;
    json_t *meta = json_pack("{s:s, s:[s], s:s, s:O, s:O}", "name", "m", "versions", "1", "platform", "corral_python",
                             "inputs", mf->inputs, "outputs", mf->outputs);
    pb_arena a = {0};
    Inference__ModelMetadataResponse *md =
        (Inference__ModelMetadataResponse *)pb_new(&a, &inference__model_metadata_response__descriptor);
    int skipped = 0;
    pb_from_json(&a, &md->base, meta, &skipped);
    CHECK(skipped == 1); /* IN's "optional" */
    CHECK(md->n_versions == 1 && md->n_inputs == 2 && md->n_outputs == 1);
    if (md->n_inputs == 2)
        CHECK(strcmp(md->inputs[0]->datatype, "FP32") == 0 && md->inputs[0]->n_shape == 2 &&
              md->inputs[0]->shape[0] == -1 && md->inputs[1]->shape[0] == 1);
    json_decref(meta);
    manifest_free(mf);

    json_t *index = load("{\"models\":[{\"name\":\"m\",\"version\":\"1\",\"state\":\"READY\","
                         "\"corral_state\":\"ready\",\"reason\":\"\",\"changed\":false},"
                         "{\"name\":\"n\",\"version\":\"1\",\"state\":\"UNAVAILABLE\","
                         "\"corral_state\":\"failed\",\"reason\":\"it crashed\",\"changed\":true}]}");
    Inference__RepositoryIndexResponse *ri =
        (Inference__RepositoryIndexResponse *)pb_new(&a, &inference__repository_index_response__descriptor);
    skipped = 0;
    pb_from_json(&a, &ri->base, index, &skipped);
    CHECK(skipped == 4); /* corral_state and changed, twice */
    CHECK(ri->n_models == 2 && strcmp(ri->models[1]->state, "UNAVAILABLE") == 0 &&
          strcmp(ri->models[1]->reason, "it crashed") == 0);
    json_decref(index);
    pb_arena_free(&a);
}

CHECK_MAIN(CASE(singular_scalars), CASE(repeated_fields), CASE(maps_and_oneofs), CASE(arena), CASE(model_config_converts),
           CASE(statistics_convert), CASE(metadata_and_index_convert))
