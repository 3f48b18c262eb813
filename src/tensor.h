/*
 * tensor — the conversion between JSON tensor data and the raw little-endian
 * layout that the worker protocol and the binary tensor extension both use
 * (so binary HTTP data passes through unchanged). The datatypes themselves,
 * shape products and the raw-data check are in dtype.h, shared with the SDK.
 */
#ifndef CORRAL_TENSOR_H
#define CORRAL_TENSOR_H

#include "dtype.h"
#include "sb.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Appends the raw form of JSON tensor data (a flat or nested array) to out.
 * nelem is the element count the shape promises. Returns 0, or -EINVAL with
 * a reason in err ("element 3 is not a number").
 */
int tensor_from_json(json_t *data, dtype t, int64_t nelem, sb *out, char *err, size_t errlen);

/*
 * Appends raw data as a flat JSON array; the data must pass
 * dtype_check_raw. NaN and infinities become null, since JSON cannot
 * carry them.
 */
void tensor_to_json(sb *out, dtype t, const uint8_t *data, size_t size, int64_t nelem);

/*
 * The most bytes tensor_to_json appends for such data (which must pass
 * dtype_check_raw): with that much room reserved first it never grows the
 * buffer, so a response sized by a worker can be refused, not fatal.
 */
size_t tensor_json_bound(dtype t, size_t size, int64_t nelem);

/*
 * The printf-free fast path of tensor_to_json's numbers: writes "%.*g" of d
 * at p (32 bytes of room) and returns its length when d is a short decimal
 * (see tensor.c), else returns 0. d must be a float or narrower value.
 */
size_t tensor_fast_decimal(char *p, double d, int digits);

#endif
