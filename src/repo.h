/*
 * repo — the model repository on disk (SPEC section 1).
 *
 * Links entries of the external-models directory into the models directory
 * (baked-in entries win), then discovers every directory or link holding a
 * model.yaml. Pure filesystem work with no daemon state: the model registry
 * (registry.c) decides what a scan result means for running models.
 */
#ifndef CORRAL_REPO_H
#define CORRAL_REPO_H

#include "manifest.h"

#include <stddef.h>

typedef struct repo_entry {
    char *name;  /* the manifest's name, or the directory name */
    char *dir;   /* absolute path of the model's code: its directory, or for a variant its base's (the chain's root) */
    manifest *mf; /* NULL when the manifest is broken */
    char *error; /* why mf is NULL ("<file>: key 'x': reason"), else NULL */
    json_t *keys; /* the manifest's keys, a variant's resolved over its base's (manifest_inherit); NULL when broken */
    char *from;        /* a variant's base (its `from`), else NULL */
    char *variant_dir; /* a variant's own directory (absolute), else NULL */
} repo_entry;

/*
 * Links each entry of external_dir into models_dir unless models_dir already
 * has an entry of that name, logging every link made and every broken link.
 * Returns the number of links made, or a negative errno when a directory
 * cannot be read.
 */
int repo_link_external(const char *models_dir, const char *external_dir);

/*
 * Scans models_dir. A variant (`from: NAME`) is resolved against the entry
 * named NAME, which may be a variant itself: its keys are its base's with
 * its own over them, its code the chain's root's. A base that is missing,
 * broken, or a loop makes the variant broken, its error naming the chain
 * ("key 'from': a loop: a -> b -> a"); the base is not affected. A variant's
 * digest is that of its resolved keys, so a change to a base changes its
 * variants'. On success returns 0 with a malloc'ed array in *out
 * (sorted by name) that the caller releases with repo_entries_free.
 */
int repo_scan(const char *models_dir, repo_entry **out, size_t *n);
void repo_entries_free(repo_entry *v, size_t n);

#endif
