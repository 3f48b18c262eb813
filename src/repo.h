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
    char *dir;   /* absolute path of the model directory */
    manifest *mf; /* NULL when the manifest is broken */
    char *error; /* why mf is NULL ("<file>: key 'x': reason"), else NULL */
} repo_entry;

/*
 * Links each entry of external_dir into models_dir unless models_dir already
 * has an entry of that name, logging every link made and every broken link.
 * Returns the number of links made, or a negative errno when a directory
 * cannot be read.
 */
int repo_link_external(const char *models_dir, const char *external_dir);

/*
 * Scans models_dir. On success returns 0 with a malloc'ed array in *out
 * (sorted by name) that the caller releases with repo_entries_free.
 */
int repo_scan(const char *models_dir, repo_entry **out, size_t *n);
void repo_entries_free(repo_entry *v, size_t n);

#endif
