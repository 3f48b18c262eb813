/*
 * inst_internal — what inst.c, inst_shm.c and inst_stream.c share and nothing else sees.
 * Loop thread only, like inst.h.
 */
#ifndef CORRAL_INST_INTERNAL_H
#define CORRAL_INST_INTERNAL_H

#include "inst.h"
#include "log.h"

/*
 * Kills the worker for breaking the protocol; the reason is logged and kept
 * in fault. Nothing the process sent after the violation counts, frames
 * already read included: every request it held gets the error of its exit.
 */
void inst_protocol_error(inst *in, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * Large tensors through shared memory (docs/worker-protocol.md): a job's
 * deferred tensor data goes into the input region when the worker maps the
 * regions and the input region is free; and any INFER may answer in the
 * output region when that is free (no other request holds it and no
 * response is still being sent from it). Otherwise the data is appended to
 * the frame. Returns the frame, possibly reallocated, with *len its length;
 * NULL (the frame freed) when there is no memory to append the data.
 */
uint8_t *inst_shm_place(inst *in, job *j, uint8_t *frame, size_t *len);

/*
 * An answer arrived (h, body): the regions it held are free again. When it
 * says its tensors are in the output region, checks that it was allowed to
 * and that the sizes its meta declares fit the region; returns their total
 * (0 when the answer is not in shared memory), or -1 after killing the
 * worker for a protocol error.
 */
long long inst_shm_result(inst *in, const proto_header *h, const uint8_t *body);

/* Hands the output region, holding len bytes of j's result, to the job until its response is sent. */
void inst_shm_attach(inst *in, job *j, long long len);

/* The job with this id in flight on the instance, or NULL. */
job *inst_find_inflight(inst *in, uint64_t id);

/* A CHUNK (inst_stream.c): handed to the job's owner, or dropped (and credited back) once the request is cancelled; body is consumed. */
void inst_on_chunk(inst *in, const proto_header *h, uint8_t *body);

/* Drops the daemon's mappings of the regions; responses still sending from one hold their own reference. */
void inst_shm_unmap(inst *in);

/* The process exited: closes its memfds and drops the mappings. */
void inst_shm_close(inst *in);

/* A log line about the instance: its model, id and pid are fields of the JSON format (log.h). */
#define INST_LOG(level, in, ...)                                                                            \
    log_with((level), &(log_ctx){.model = (in)->log_name, .instance = (in)->id, .pid = (in)->pid}, __VA_ARGS__)

#endif
