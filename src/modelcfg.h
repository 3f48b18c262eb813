/*
 * modelcfg — a manifest in Triton's model-configuration shape: the JSON
 * that Triton's GET /v2/models/{name}/config answers (model_config.proto's
 * ModelConfig as Triton renders it: proto field names, enums by name,
 * 64-bit integers as numbers), so tritonclient's get_model_config and the
 * tools that read it work (docs/api.md, "Model configuration").
 *
 * Pure: no daemon state; model.c gathers what it needs.
 */
#ifndef CORRAL_MODELCFG_H
#define CORRAL_MODELCFG_H

#include "manifest.h"

#include <jansson.h>

/*
 * Triton's model config for the model `name` running mf. inputs and
 * outputs are the tensor metadata the model declares (the manifest's or
 * the worker's: arrays of {name, datatype, shape[, optional]}; NULL for
 * none); each shape is the whole shape, so with batching its dimension 0
 * (the batch) is left out of dims, as Triton does. label_filename is the
 * classification labels' file, or NULL. Returns a new object.
 */
json_t *modelcfg_json(const char *name, const manifest *mf, const json_t *inputs, const json_t *outputs,
                      const char *label_filename);

/* Triton's DataType name for a v2 datatype name: "FP32" -> "TYPE_FP32", "BYTES" -> "TYPE_STRING"; "TYPE_INVALID" else. */
const char *modelcfg_data_type(const char *v2_name);

#endif
