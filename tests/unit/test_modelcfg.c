/*
 * Unit tests of modelcfg: a manifest rendered as Triton's model
 * configuration (model_config.proto's field names and enums).
 */
#include "check.h"
#include "modelcfg.h"

#include <stdlib.h>

static manifest *parse(const char *yaml)
{
    manifest *m = NULL;
    char err[512];
    if (manifest_parse("model.yaml", (const unsigned char *)yaml, strlen(yaml), "mydir", &m, err, sizeof err) < 0)
        fprintf(stderr, "%s\n", err);
    return m;
}

static const char *str(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "(none)";
}

static void data_types(void)
{
    CHECK(strcmp(modelcfg_data_type("FP32"), "TYPE_FP32") == 0);
    CHECK(strcmp(modelcfg_data_type("BYTES"), "TYPE_STRING") == 0);
    CHECK(strcmp(modelcfg_data_type("BF16"), "TYPE_BF16") == 0);
    CHECK(strcmp(modelcfg_data_type("BOOL"), "TYPE_BOOL") == 0);
    CHECK(strcmp(modelcfg_data_type("UINT64"), "TYPE_UINT64") == 0);
    CHECK(strcmp(modelcfg_data_type("fp32"), "TYPE_INVALID") == 0);
    CHECK(strcmp(modelcfg_data_type(NULL), "TYPE_INVALID") == 0);
}

static void plain_model(void)
{
    manifest *m = parse("runtime: python\nentrypoint: worker.py\ninstances: 3\n"
                        "parameters: {prefix: \">\", n: 2, nested: {a: [1, 2]}}\n"
                        "inputs: [{name: IN, datatype: FP32, shape: [-1, 4], optional: true}]\n"
                        "outputs: [{name: OUT, datatype: BYTES, shape: [2]}]\n");
    CHECK(m != NULL);
    if (!m)
        return;
    json_t *c = modelcfg_json("echo", m, m->inputs, m->outputs, NULL);
    CHECK(strcmp(str(c, "name"), "echo") == 0);
    CHECK(strcmp(str(c, "platform"), "corral_python") == 0);
    CHECK(strcmp(str(c, "backend"), "python") == 0);
    CHECK(json_integer_value(json_object_get(c, "max_batch_size")) == 0);
    CHECK(json_object_get(c, "dynamic_batching") == NULL); /* unset unless the manifest batches */
    CHECK(json_object_get(c, "sequence_batching") == NULL); /* unset unless the manifest tunes sequences */
    json_t *in = json_array_get(json_object_get(c, "input"), 0);
    CHECK(strcmp(str(in, "name"), "IN") == 0 && strcmp(str(in, "data_type"), "TYPE_FP32") == 0);
    json_t *dims = json_object_get(in, "dims"); /* no batching: the whole shape */
    CHECK(json_array_size(dims) == 2 && json_integer_value(json_array_get(dims, 0)) == -1 &&
          json_integer_value(json_array_get(dims, 1)) == 4);
    CHECK(json_is_true(json_object_get(in, "optional")));
    json_t *out = json_array_get(json_object_get(c, "output"), 0);
    CHECK(strcmp(str(out, "data_type"), "TYPE_STRING") == 0 && strcmp(str(out, "label_filename"), "") == 0);
    json_t *group = json_array_get(json_object_get(c, "instance_group"), 0);
    CHECK(strcmp(str(group, "kind"), "KIND_CPU") == 0 && json_integer_value(json_object_get(group, "count")) == 3);
    CHECK(strcmp(str(group, "name"), "echo_0") == 0);
    json_t *params = json_object_get(c, "parameters");
    CHECK(strcmp(str(json_object_get(params, "prefix"), "string_value"), ">") == 0);
    CHECK(strcmp(str(json_object_get(params, "n"), "string_value"), "2") == 0);
    CHECK(strcmp(str(json_object_get(params, "nested"), "string_value"), "{\"a\":[1,2]}") == 0);
    CHECK(json_integer_value(json_object_get(json_object_get(json_object_get(c, "version_policy"), "latest"),
                                             "num_versions")) == 1);
    CHECK(strcmp(str(c, "default_model_filename"), "worker.py") == 0);
    CHECK(json_is_false(json_object_get(json_object_get(c, "model_transaction_policy"), "decoupled")));
    json_decref(c);
    manifest_free(m);
}

static void batching_model(void)
{
    manifest *m = parse("runtime: exec\nentrypoint: ./w\ntimeout: 2s\nmax_queue: 9\npriority_levels: 4\n"
                        "default_priority: 3\nmax_sequence_idle: 250ms\n"
                        "batching: {max_batch_size: 16, max_queue_delay: 5ms, preferred_batch_sizes: [4, 8]}\n");
    CHECK(m != NULL);
    if (!m)
        return;
    json_t *inputs = json_loads("[{\"name\":\"X\",\"datatype\":\"INT32\",\"shape\":[-1,3,\"?\"]}]", 0, NULL);
    json_t *c = modelcfg_json("b", m, inputs, NULL, "labels.txt");
    CHECK(strcmp(str(c, "platform"), "corral_exec") == 0 && strcmp(str(c, "backend"), "exec") == 0);
    CHECK(json_integer_value(json_object_get(c, "max_batch_size")) == 16);
    json_t *dims = json_object_get(json_array_get(json_object_get(c, "input"), 0), "dims");
    /* the batch dimension is left out; a worker's non-integer becomes -1 */
    CHECK(json_array_size(dims) == 2 && json_integer_value(json_array_get(dims, 0)) == 3 &&
          json_integer_value(json_array_get(dims, 1)) == -1);
    CHECK(json_array_size(json_object_get(c, "output")) == 0);
    json_t *db = json_object_get(c, "dynamic_batching");
    CHECK(json_integer_value(json_object_get(db, "max_queue_delay_microseconds")) == 5000);
    json_t *sb = json_object_get(c, "sequence_batching");
    CHECK(json_integer_value(json_object_get(sb, "max_sequence_idle_microseconds")) == 250000);
    json_t *pref = json_object_get(db, "preferred_batch_size");
    CHECK(json_array_size(pref) == 2 && json_integer_value(json_array_get(pref, 1)) == 8);
    CHECK(json_integer_value(json_object_get(db, "priority_levels")) == 4);
    CHECK(json_integer_value(json_object_get(db, "default_priority_level")) == 3);
    json_t *qp = json_object_get(db, "default_queue_policy");
    CHECK(json_integer_value(json_object_get(qp, "default_timeout_microseconds")) == 2000000);
    CHECK(json_integer_value(json_object_get(qp, "max_queue_size")) == 9);
    json_decref(c);
    /* outputs name the labels' file */
    json_t *outputs = json_loads("[{\"name\":\"P\",\"datatype\":\"FP32\",\"shape\":[-1,10]}]", 0, NULL);
    c = modelcfg_json("b", m, NULL, outputs, "labels.txt");
    json_t *out = json_array_get(json_object_get(c, "output"), 0);
    CHECK(strcmp(str(out, "label_filename"), "labels.txt") == 0);
    CHECK(json_array_size(json_object_get(out, "dims")) == 1);
    json_decref(c);
    json_decref(outputs);
    json_decref(inputs);
    manifest_free(m);
}

CHECK_MAIN(CASE(data_types), CASE(plain_model), CASE(batching_model))
