/*
 * decl — a model's declared tensors (the manifest's `inputs`/`outputs`, or
 * those the worker's READY names), parsed once when the manifest is read or
 * the READY arrives, and the checks a v2 inference request passes against
 * them before it is queued (docs/api.md, "Input checks").
 *
 * A declared shape is the whole shape of a request's tensor, as model
 * metadata reports it: with batching it includes dimension 0, which is
 * normally declared -1 (any size). -1 matches any size; every other
 * dimension, and the rank, must match exactly.
 *
 * The checks allocate nothing: a request's names are looked up in the
 * parsed list, and what it has seen is a bitmap on the caller's stack.
 * Pure (jansson only to parse); any thread.
 */
#ifndef CORRAL_DECL_H
#define CORRAL_DECL_H

#include "dtype.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* The most tensors one list may declare (infer.h's INFER_MAX_TENSORS, the most a request carries). */
#define DECL_MAX_TENSORS 256

typedef struct decl_tensor {
    char *name; /* owned */
    size_t name_len;
    dtype t;
    int ndim;
    int64_t dims[DTYPE_MAX_DIMS]; /* -1: any size */
    int optional;                 /* an input a request may leave out */
} decl_tensor;

typedef struct decl_list {
    int n;
    decl_tensor *v;
} decl_list;

/* The seen-bitmap of one request's inputs, indexed as the declaration list. */
typedef struct decl_seen {
    uint64_t bits[DECL_MAX_TENSORS / 64];
} decl_seen;

/*
 * Parses a JSON list of {name, datatype, shape[, optional]}. Returns 0 with
 * *out (NULL for a NULL, null or empty list: nothing is declared), or
 * -EINVAL with the reason in err ("shape must be a list of ...") and the
 * index of the element at fault in *at (SIZE_MAX: the list itself). Other
 * keys are ignored here (the manifest refuses them itself).
 */
int decl_parse(json_t *list, decl_list **out, size_t *at, char *err, size_t errlen);
void decl_free(decl_list *l);

/* The declaration named by the n bytes at name, with its index in *index; NULL if none. */
const decl_tensor *decl_find(const decl_list *l, const char *name, size_t n, int *index);

/* Whether a shape matches a declaration: the same rank, and each dimension equal or declared -1. */
int decl_shape_matches(const decl_tensor *d, const int64_t *dims, int ndim);

/* Writes "[-1, 3]" into buf (always NUL-terminated, cut if it must be); returns buf. */
char *decl_format_shape(char *buf, size_t len, const int64_t *dims, int ndim);

/*
 * Checks one input of a request against l (not NULL): its name must be
 * declared, its datatype and shape must match. Marks it in seen. Returns 0,
 * or -EINVAL with the reason in why, naming the input and what was
 * expected ("input 'INPUT0': expected datatype FP32, got INT32").
 */
int decl_check_input(const decl_list *l, decl_seen *seen, const char *name, size_t n, dtype t, const int64_t *dims,
                     int ndim, char *why, size_t whylen);

/* Checks that a requested output is declared in l (not NULL): 0, or -EINVAL naming it and the declared ones in why. */
int decl_check_output(const decl_list *l, const char *name, size_t n, char *why, size_t whylen);

/* After every input: -EINVAL with the first declared, required input not seen named in why; else 0. */
int decl_check_missing(const decl_list *l, const decl_seen *seen, char *why, size_t whylen);

#endif
