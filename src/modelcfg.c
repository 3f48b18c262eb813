/*
 * modelcfg — Triton's model configuration of a manifest; see modelcfg.h.
 *
 * Triton prints a ModelConfig with protobuf's JSON printer (field names as
 * in the .proto, every scalar and list even when it holds its default),
 * then turns the 64-bit integers protobuf prints as strings back into
 * numbers. Messages it leaves unset are absent. This file writes the same
 * shape from what corral knows, and only what is true of corral: one
 * version, CPU instances, dynamic batching only when the manifest batches.
 */
#include "modelcfg.h"

#include "dtype.h"

#include "utf8.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *modelcfg_data_type(const char *v2_name)
{
    static const char *const names[DTYPE_COUNT] = {
        [DT_INVALID] = "TYPE_INVALID", [DT_BOOL] = "TYPE_BOOL",   [DT_UINT8] = "TYPE_UINT8",
        [DT_UINT16] = "TYPE_UINT16",   [DT_UINT32] = "TYPE_UINT32", [DT_UINT64] = "TYPE_UINT64",
        [DT_INT8] = "TYPE_INT8",       [DT_INT16] = "TYPE_INT16",   [DT_INT32] = "TYPE_INT32",
        [DT_INT64] = "TYPE_INT64",     [DT_FP16] = "TYPE_FP16",     [DT_FP32] = "TYPE_FP32",
        [DT_FP64] = "TYPE_FP64",       [DT_BF16] = "TYPE_BF16",     [DT_BYTES] = "TYPE_STRING",
    };
    dtype t = v2_name ? dtype_from_name(v2_name, strlen(v2_name)) : DT_INVALID;
    return names[t];
}

/* dims: the shape without the batch dimension when the model batches; a non-integer (a worker's) as -1. */
static json_t *dims_json(const json_t *shape, int batching)
{
    json_t *dims = json_array();
    for (size_t i = batching ? 1 : 0; i < json_array_size(shape); i++) {
        json_t *d = json_array_get(shape, i);
        json_array_append_new(dims, json_integer(json_is_integer(d) ? json_integer_value(d) : -1));
    }
    return dims;
}

static json_t *tensors_json(const json_t *list, int batching, int input, const char *label_filename)
{
    json_t *out = json_array();
    for (size_t i = 0; i < json_array_size(list); i++) {
        json_t *t = json_array_get(list, i);
        const char *name = json_string_value(json_object_get(t, "name"));
        json_t *o = json_object();
        json_object_set_new(o, "name", utf8_json_string(name ? name : "", name ? strlen(name) : 0));
        json_object_set_new(o, "data_type",
                            json_string(modelcfg_data_type(json_string_value(json_object_get(t, "datatype")))));
        if (input)
            json_object_set_new(o, "format", json_string("FORMAT_NONE"));
        json_object_set_new(o, "dims", dims_json(json_object_get(t, "shape"), batching));
        if (input) {
            json_object_set_new(o, "is_shape_tensor", json_false());
            json_object_set_new(o, "allow_ragged_batch", json_false());
            json_object_set_new(o, "optional", json_boolean(json_is_true(json_object_get(t, "optional"))));
        } else {
            json_object_set_new(o, "label_filename", json_string(label_filename ? label_filename : ""));
            json_object_set_new(o, "is_shape_tensor", json_false());
        }
        json_object_set_new(o, "is_non_linear_format_io", json_false());
        json_array_append_new(out, o);
    }
    return out;
}

/* ModelParameter holds strings only: a string as it is, anything else as its compact JSON. */
static json_t *parameters_json(const json_t *params)
{
    json_t *out = json_object();
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)params, key, v) {
        char *text = json_is_string(v) ? NULL : json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        json_t *s = json_is_string(v) ? json_stringn(json_string_value(v), json_string_length(v))
                                      : json_string(text ? text : "");
        free(text);
        json_object_set_new(out, key, json_pack("{s:o}", "string_value", s ? s : json_string("")));
    }
    return out;
}

static json_t *dynamic_batching_json(const manifest *mf)
{
    json_t *preferred = json_array();
    for (int i = 0; i < mf->npreferred; i++)
        json_array_append_new(preferred, json_integer(mf->preferred_batch_sizes[i]));
    /* corral's deadline answers 504 (REJECT); parameters.timeout overrides it; max_queue 503s past it. */
    json_t *policy = json_pack("{s:s, s:I, s:b, s:i}", "timeout_action", "REJECT", "default_timeout_microseconds",
                               (json_int_t)mf->timeout_ms * 1000, "allow_timeout_override", 1, "max_queue_size",
                               mf->max_queue);
    return json_pack("{s:o, s:I, s:b, s:i, s:i, s:o, s:{}}", "preferred_batch_size", preferred,
                     "max_queue_delay_microseconds", (json_int_t)mf->max_queue_delay_ms * 1000, "preserve_ordering", 0,
                     "priority_levels", mf->priority_levels, "default_priority_level", mf->default_priority,
                     "default_queue_policy", policy, "priority_queue_policy");
}

json_t *modelcfg_json(const char *name, const manifest *mf, const json_t *inputs, const json_t *outputs,
                      const char *label_filename)
{
    int batching = mf->max_batch_size > 0;
    char group[160];
    snprintf(group, sizeof group, "%s_0", name);
    json_t *o = json_object();
    json_object_set_new(o, "name", json_string(name));
    json_object_set_new(o, "platform", json_string(mf->runtime == RUNTIME_EXEC ? "corral_exec" : "corral_python"));
    json_object_set_new(o, "backend", json_string(mf->runtime == RUNTIME_EXEC ? "exec" : "python"));
    json_object_set_new(o, "runtime", json_string(""));
    json_object_set_new(o, "version_policy", json_pack("{s:{s:i}}", "latest", "num_versions", 1));
    json_object_set_new(o, "max_batch_size", json_integer(mf->max_batch_size));
    json_object_set_new(o, "input", tensors_json(inputs, batching, 1, NULL));
    json_object_set_new(o, "output", tensors_json(outputs, batching, 0, label_filename));
    json_object_set_new(o, "batch_input", json_array());
    json_object_set_new(o, "batch_output", json_array());
    if (batching)
        json_object_set_new(o, "dynamic_batching", dynamic_batching_json(mf));
    if (mf->sequence_declared) /* every model takes sequences; one that tunes them shows it as Triton would */
        json_object_set_new(o, "sequence_batching",
                            json_pack("{s:I,s:[],s:[],s:b}", "max_sequence_idle_microseconds",
                                      (json_int_t)mf->max_sequence_idle_ms * 1000, "control_input", "state",
                                      "iterative_sequence", 0));
    json_object_set_new(o, "instance_group",
                        json_pack("[{s:s, s:s, s:i, s:[], s:[], s:[], s:b, s:s}]", "name", group, "kind", "KIND_CPU",
                                  "count", mf->instances, "gpus", "secondary_devices", "profile", "passive", 0,
                                  "host_policy", ""));
    json_object_set_new(o, "default_model_filename", json_string(mf->entrypoint));
    json_object_set_new(o, "cc_model_filenames", json_object());
    json_object_set_new(o, "metric_tags", json_object());
    json_object_set_new(o, "parameters", parameters_json(mf->parameters));
    json_object_set_new(o, "model_warmup", json_array());
    /* infer answers once per request; streams are the generate endpoints' */
    json_object_set_new(o, "model_transaction_policy", json_pack("{s:b}", "decoupled", mf->decoupled));
    return o;
}
