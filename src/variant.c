/*
 * variant — models created at run time; see variant.h. Their keys are
 * resolved against their base's here, at creation and after every rescan
 * (registry.c calls variant_rescan), in creation order, so a base created
 * at run time is always resolved before its variants.
 */
#include "variant.h"

#include "api.h"
#include "events.h"
#include "model_internal.h"
#include "repo.h"
#include "state.h"
#include "utf8.h"
#include "xmalloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t next_seq = 1;

/* The most models created at run time at once: what a state file reads back of a table. */
#define VARIANT_MAX_RUNTIME STATE_MAX_ROWS

static void entry_clear(repo_entry *e)
{
    free(e->name);
    free(e->dir);
    manifest_free(e->mf);
    free(e->error);
    json_decref(e->keys);
    free(e->from);
    free(e->variant_dir);
    memset(e, 0, sizeof *e);
}

/*
 * The entry of run-time model name, spec's keys over base's (NULL: gone),
 * its code in dir when the base is gone: 0, or 404 (no base), 409 (the
 * base is broken) or 400 (the keys are not valid) with e->error set.
 */
static int resolve(const char *name, const json_t *spec, const model *base, const char *dir, repo_entry *e)
{
    const char *from = json_string_value(json_object_get(spec, "from"));
    char label[400], err[1400];
    memset(e, 0, sizeof *e);
    e->name = xstrdup(name);
    e->from = xstrdup(from);
    snprintf(label, sizeof label, "model '%s' (created from '%s')", name, from);
    if (!base) {
        snprintf(err, sizeof err, "%s: key 'from': base model '%s' does not exist", label, from);
        e->dir = xstrdup(dir ? dir : "");
        e->error = xstrdup(err);
        return 404;
    }
    e->dir = xstrdup(base->dir);
    e->variant_dir = base->variant_dir ? xstrdup(base->variant_dir) : NULL;
    if (!base->keys) {
        const char *why = base->broken ? base->broken : "its manifest is not valid";
        snprintf(err, sizeof err, "%s: key 'from': base model '%s' is unavailable: %s", label, from, why);
        utf8_trim_partial(err);
        e->error = xstrdup(err);
        return 409;
    }
    json_t *keys = manifest_inherit(base->keys, spec);
    uint64_t digest = manifest_keys_digest(keys);
    if (manifest_from_tree(label, keys, name, NULL, digest, &e->mf, err, sizeof err) < 0) {
        e->error = xstrdup(err);
        json_decref(keys);
        return 400;
    }
    e->keys = keys;
    return 0;
}

/* A model in the list from e (cleared), owning spec. */
static model *add(repo_entry *e, json_t *spec)
{
    model *m = registry_model_new(e);
    registry_apply_entry(m, e);
    m->spec = spec;
    m->created_seq = next_seq++;
    entry_clear(e);
    return m;
}

int variant_create(const json_t *body, model **out, char *msg, size_t msglen)
{
    *out = NULL;
    if (!json_is_object(body)) {
        snprintf(msg, msglen,
                 "create request body must be a JSON object: {\"name\": NAME, \"from\": BASE, ...model.yaml keys}");
        return 400;
    }
    json_t *jname = json_object_get(body, "name"), *jfrom = json_object_get(body, "from");
    if (!json_is_string(jname) || !json_is_string(jfrom)) {
        int no_name = !json_is_string(jname);
        snprintf(msg, msglen, "create request: '%s' is required, a string: %s", no_name ? "name" : "from",
                 no_name ? "the new model's name" : "the name of the model it is a variant of");
        return 400;
    }
    const char *name = json_string_value(jname), *from = json_string_value(jfrom);
    if (!model_name_valid(name, json_string_length(jname)) || !model_name_valid(from, json_string_length(jfrom))) {
        int bad_name = !model_name_valid(name, json_string_length(jname));
        char why[300];
        model_name_error(bad_name ? name : from, json_string_length(bad_name ? jname : jfrom), why, sizeof why);
        snprintf(msg, msglen, "create request: '%s': %s", bad_name ? "name" : "from", why);
        return 400;
    }
    char reserved[400];
    if (api_model_name_reserved(name, json_string_length(jname), reserved, sizeof reserved)) {
        snprintf(msg, msglen, "create request: 'name': %s", reserved);
        return 400;
    }
    if (R.shutting_down) {
        snprintf(msg, msglen, "model '%s': corral is shutting down", name);
        return 503;
    }
    /* The body's keys first: a refused one changes nothing, not even the repository's view. */
    json_t *spec = json_deep_copy(body);
    json_object_del(spec, "name");
    char label[400];
    snprintf(label, sizeof label, "model '%s' (created from '%s')", name, from);
    if (manifest_check_runtime_keys(spec, label, msg, msglen) < 0) {
        json_decref(spec);
        return 400;
    }
    /* What is kept, in memory and in the state file, is bounded: the keys as the state file stores one record, and
     * the models as many as it reads back. */
    char *encoded = state_encode_config(spec);
    size_t spec_len = encoded ? strlen(encoded) : 0;
    free(encoded);
    size_t runtime = 0;
    for (const model *o = R.head; o; o = o->next)
        runtime += o->spec != NULL;
    if (spec_len > STATE_MAX_CONFIG || runtime >= VARIANT_MAX_RUNTIME) {
        if (spec_len > STATE_MAX_CONFIG)
            snprintf(msg, msglen, "%s: its keys are %zu bytes of JSON, more than the %d a model created at run time "
                     "may have", label, spec_len, STATE_MAX_CONFIG);
        else
            snprintf(msg, msglen, "%s: %d models created at run time exist already, the most there may be; delete "
                     "one first", label, VARIANT_MAX_RUNTIME);
        json_decref(spec);
        return spec_len > STATE_MAX_CONFIG ? 413 : 409;
    }
    registry_rescan(); /* a directory added since the last scan has the name first */
    const model *taken = model_find(name, strlen(name));
    if (taken) {
        if (taken->spec)
            snprintf(msg, msglen, "model '%s' exists already: it was created at run time from '%s'", name, taken->from);
        else
            snprintf(msg, msglen, "model '%s' exists already, in the repository (%s)", name,
                     taken->variant_dir ? taken->variant_dir : taken->dir);
        utf8_trim_partial(msg);
        json_decref(spec);
        return 409;
    }
    const model *base = model_find(from, strlen(from));
    if (base && base->deleting) { /* it would be left behind, created from a model that is gone */
        snprintf(msg, msglen, "%s: key 'from': model '%s' is being deleted", label, from);
        json_decref(spec);
        return 409;
    }
    repo_entry e;
    int status = resolve(name, spec, base, NULL, &e);
    if (status) {
        snprintf(msg, msglen, "%s", e.error);
        utf8_trim_partial(msg);
        entry_clear(&e);
        json_decref(spec);
        return status;
    }
    model *m = add(&e, spec);
    state_note_created(m->name, m->spec);
    MODEL_LOG(LOG_INFO, m, "model %s: created at run time from %s", m->name, m->from);
    events_emit("model.created", json_pack("{s:s,s:s}", "model", m->name, "base", m->from));
    if (m->mf->load_eager) {
        char ignored[1200];
        model_load(m, 0, NULL, ignored, sizeof ignored); /* a failure is the model's state, as for any eager model */
    }
    *out = m;
    return 0;
}

/* The unload of a deleted model is done: it goes. */
static void on_delete_unloaded(void *ctx, int status, const char *msg)
{
    (void)status;
    (void)msg;
    model *m = ctx;
    MODEL_LOG(LOG_INFO, m, "model %s: deleted", m->name);
    events_emit("model.deleted", json_pack("{s:s}", "model", m->name));
    if (m->nslots == 0)
        registry_model_remove(m);
    /* else: can't happen (every slot is removed before an unload is done); the next rescan drops it */
}

int variant_delete(model *m, lifecycle_waiter *w, char *msg, size_t msglen)
{
    if (!m->spec) {
        snprintf(msg, msglen, "model '%s' lives in the repository (%s): remove its directory to remove it; DELETE "
                              "removes only models created at run time", m->name,
                 m->variant_dir ? m->variant_dir : m->dir);
        utf8_trim_partial(msg);
        return 409;
    }
    if (m->deleting) {
        snprintf(msg, msglen, "model '%s' is being deleted already", m->name);
        return 409;
    }
    for (model *o = model_next(NULL); o; o = model_next(o))
        if (o != m && o->spec && o->from && strcmp(o->from, m->name) == 0) {
            snprintf(msg, msglen, "model '%s': model '%s' is created from it; delete '%s' first", m->name, o->name,
                     o->name);
            return 409;
        }
    m->deleting = 1;
    state_note_deleted(m->name);
    MODEL_LOG(LOG_INFO, m, "model %s: deleting it: unloading first", m->name);
    m->delete_waiter = (lifecycle_waiter){.on_done = on_delete_unloaded, .ctx = m};
    model_unload(m, w, msg, msglen); /* an explicit unload: its record in the state file goes too */
    if (m->state == MODEL_UNLOADING) {
        /* First in the list: the model is gone when the client hears the delete is done. */
        m->delete_waiter.next = m->unload_waiters;
        m->unload_waiters = &m->delete_waiter;
    } else {
        on_delete_unloaded(m, 200, NULL);
    }
    return 0;
}

/* How many deletes of a model not there yet were remembered while the state file was read: bounded. */
static size_t absent_deletes;

int variant_delete_absent(const char *name, size_t len, char *msg, size_t msglen)
{
    if (!state_restoring()) {
        snprintf(msg, msglen, "unknown model '%.*s'", (int)len, name);
        return 404;
    }
    if (absent_deletes >= VARIANT_MAX_RUNTIME) {
        snprintf(msg, msglen, "model '%.*s' is not there yet: the state file is still being read; try again once it "
                 "is", (int)len, name);
        return 503;
    }
    absent_deletes++;
    char copy[256]; /* a valid name is at most 128 bytes */
    snprintf(copy, sizeof copy, "%.*s", (int)len, name);
    state_note_deleted(copy);  /* noted before the restore: the file's record is not created again, and goes */
    state_note_unloaded(copy); /* and its load record, as a delete's unload removes it */
    log_info("model %s: deleted before the state file was read: a model it records as created at run time under "
             "this name is not created again", copy);
    snprintf(msg, msglen, "unknown model '%.*s': the state file is still being read; a model created at run time "
             "that it records under this name is not created again", (int)len, name);
    return 404;
}

static int by_seq(const void *a, const void *b)
{
    const model *x = *(model *const *)a, *y = *(model *const *)b;
    return x->created_seq < y->created_seq ? -1 : x->created_seq > y->created_seq;
}

void variant_rescan(void)
{
    size_t n = 0;
    for (model *m = R.head; m; m = m->next)
        n += m->spec != NULL;
    if (!n)
        return;
    model **v = xmalloc(n * sizeof *v);
    n = 0;
    for (model *m = R.head; m; m = m->next)
        if (m->spec)
            v[n++] = m;
    qsort(v, n, sizeof *v, by_seq);
    for (size_t i = 0; i < n; i++) {
        model *m = v[i];
        const char *from = json_string_value(json_object_get(m->spec, "from"));
        repo_entry e;
        resolve(m->name, m->spec, model_find(from, strlen(from)), m->dir, &e);
        if (e.error && (!m->broken || strcmp(m->broken, e.error) != 0))
            MODEL_LOG(LOG_ERROR, m, "model %s: unavailable: %s", m->name, e.error);
        registry_apply_entry(m, &e);
        entry_clear(&e);
    }
    free(v);
}

void variant_restore(const state_snapshot *s)
{
    if (!s->n_runtime)
        return;
    char *done = xcalloc(s->n_runtime, 1);
    /* Passes until none creates a model: a base recorded after its variant is created first. */
    for (int progress = 1; progress;) {
        progress = 0;
        for (size_t i = 0; i < s->n_runtime; i++) {
            const state_runtime *r = &s->runtime[i];
            if (done[i])
                continue;
            const char *from = json_string_value(json_object_get(r->spec, "from"));
            char why[400];
            if (api_model_name_reserved(r->name, strlen(r->name), why, sizeof why)) {
                /* Recorded by a corral that did not reserve it: unreachable, so not even a DELETE could remove it. */
                log_warn("state: model %s created at run time is not created again: %s; its records are removed",
                         r->name, why);
                state_note_deleted(r->name);
                state_note_unloaded(r->name);
                done[i] = 1;
                continue;
            }
            const model *taken = model_find(r->name, strlen(r->name));
            if (taken) {
                log_warn("state: model %s was created at run time before the restart, but a model of that name is "
                         "in the repository now (%s); not created (its record is kept)",
                         r->name, taken->dir);
                done[i] = 1;
                continue;
            }
            model *base = model_find(from, strlen(from));
            if (!base)
                continue;
            if (base->deleting) {
                log_warn("state: model %s created at run time is not created again: its base %s is being deleted",
                         r->name, from);
                done[i] = 1;
                continue;
            }
            json_t *spec = json_deep_copy(r->spec);
            char err[300];
            if (manifest_check_runtime_keys(spec, r->name, err, sizeof err) < 0) { /* no create would accept it */
                log_warn("state: model %s created at run time is not created again: %s", r->name, err);
                json_decref(spec);
                done[i] = progress = 1;
                continue;
            }
            repo_entry e;
            /* Created even when its keys no longer fit its base: unavailable, with the reason, until they do. */
            if (resolve(r->name, spec, base, NULL, &e))
                log_warn("state: model %s created at run time is created again, but is unavailable: %s", r->name,
                         e.error);
            model *m = add(&e, spec);
            MODEL_LOG(LOG_INFO, m, "state: model %s created again, from %s", m->name, m->from);
            if (m->mf && m->mf->load_eager)
                model_load(m, 0, NULL, err, sizeof err);
            done[i] = progress = 1;
        }
    }
    for (size_t i = 0; i < s->n_runtime; i++)
        if (!done[i])
            log_warn("state: model %s was created at run time from %s, which is not in the repository now; not "
                     "created (its record is kept)",
                     s->runtime[i].name, json_string_value(json_object_get(s->runtime[i].spec, "from")));
    free(done);
}
