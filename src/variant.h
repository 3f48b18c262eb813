/*
 * variant — models created at run time: a named variant of a model that is
 * in the registry (POST /v1/models, DELETE /v1/models/{name}; `corral
 * create`, `corral delete`; docs/repository.md, "Variants").
 *
 * Contract:
 * - A run-time model is a variant of its base: the base's keys with its own
 *   over them (manifest_inherit), the base's code and directory, a queue,
 *   instances and limits of its own. It has no directory: CORRAL_VARIANT_DIR
 *   is the base's own, when the base is a declared variant, else unset.
 * - Its keys may not choose the program the daemon runs or where its files
 *   are pulled from (manifest_check_runtime_keys); they are validated as a
 *   manifest is, against the base as it is at creation and again at every
 *   rescan, so a changed base marks it changed and a vanished one breaks it.
 * - It is recorded in the state file (state_note_created) and created again
 *   at the next start, before the loads the file records are restored.
 * - Loop thread only. Errors are HTTP statuses with a message naming the
 *   model and the reason.
 */
#ifndef CORRAL_VARIANT_H
#define CORRAL_VARIANT_H

#include "model.h"

#include <jansson.h>
#include <stddef.h>

/*
 * Creates the model body names: {"name", "from", ...manifest keys}. Returns
 * 0 with *out (loading at once when its keys say `load: eager`), or 400 (a
 * body, name or key that is not valid, a name a route reserves
 * (api_model_name_reserved): nothing changed), 404 (from names no
 * model), 409 (the name is taken, on disk or at run time; the base is
 * broken or being deleted) or 503 (the daemon is stopping), with msg.
 */
int variant_create(const json_t *body, model **out, char *msg, size_t msglen);

/*
 * Deletes a run-time model: unloads it as an explicit unload does (queued
 * requests get 503, running ones finish or drain), removes it and its
 * records, then calls w->on_done (200). Returns 0, or 409 with msg for a
 * model that lives on disk, one that another run-time model is created
 * from, or one being deleted already.
 */
int variant_delete(model *m, lifecycle_waiter *w, char *msg, size_t msglen);

/*
 * A DELETE of name (len bytes, a valid name) that no model has: 404 with
 * msg. While the state file is still being read (state_restoring), the
 * delete is remembered first: a run-time model the file records under
 * name is not created again, and its records go. 503 past 4,096 of
 * those (what is remembered is bounded).
 */
int variant_delete_absent(const char *name, size_t len, char *msg, size_t msglen);

#endif
