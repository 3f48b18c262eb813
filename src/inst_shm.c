/*
 * inst_shm — the shared-memory regions an instance lends its worker
 * (docs/worker-protocol.md), and the memory figures that must leave them
 * out; the declarations are in inst_internal.h, the public part in inst.h.
 *
 * Each process of a slot has two regions (memfds the worker inherits): the
 * input region carries one request's tensor data at a time, the output
 * region one answer's. Which request holds which is in inst->cur.
 */
#include "inst.h"
#include "inst_internal.h"

#include "log.h"
#include "procfs.h"
#include "shm.h"
#include "xmalloc.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- lending ---- */

/* Copies a job's deferred tensor data (job.h) to dst. */
static void copy_pieces(const job *j, uint8_t *dst)
{
    for (int k = 0; k < j->npieces; k++) {
        if (j->pieces[k].len)
            memcpy(dst, j->pieces[k].ptr, j->pieces[k].len);
        dst += j->pieces[k].len;
    }
}

uint8_t *inst_shm_place(inst *in, job *j, uint8_t *frame, size_t *len)
{
    uint16_t flags = 0;
    if (in->cur.shm && job_is_tensor(j) && !in->cur.shm_out_job &&
        !(in->cur.shm_out && in->cur.shm_out->refs > 1)) {
        flags |= PROTO_FLAG_SHM_OUT;
        in->cur.shm_out_job = j->id;
    }
    if (j->npieces && in->cur.shm && !in->cur.shm_in_job) {
        int rc = shm_reserve(&in->cur.shm_in, in->cur.shm_fd[0], j->pieces_len);
        if (rc == 0) {
            copy_pieces(j, in->cur.shm_in->addr);
            if (j->pieces_len > in->cur.shm_used[0])
                in->cur.shm_used[0] = j->pieces_len;
            proto_put_u32(frame, (uint32_t)(*len - PROTO_HEADER_SIZE));
            flags |= PROTO_FLAG_SHM_DATA;
            in->cur.shm_in_job = j->id;
        } else {
            INST_LOG(LOG_WARN, in, "%s: cannot grow the shared-memory input region to %zu bytes (%s); "
                     "sending the tensors over the socket", in->label, j->pieces_len, strerror(-rc));
        }
    }
    if (j->npieces && !(flags & PROTO_FLAG_SHM_DATA)) {
        uint8_t *whole = realloc(frame, *len + j->pieces_len); /* sized by the request: may fail */
        if (!whole) {
            if (in->cur.shm_out_job == j->id)
                in->cur.shm_out_job = 0;
            free(frame);
            return NULL;
        }
        frame = whole;
        copy_pieces(j, frame + *len);
        *len += j->pieces_len;
    }
    proto_header_set_flags(frame, flags);
    return frame;
}

void inst_shm_unmap(inst *in)
{
    shm_unref(in->cur.shm_in);
    shm_unref(in->cur.shm_out);
    in->cur.shm_in = in->cur.shm_out = NULL;
}

void inst_release_shm(inst *in)
{
    if (in->state != INST_READY || in->exited || in->inflight || in->cur.shm_in_job || in->cur.shm_out_job ||
        (in->cur.shm_out && in->cur.shm_out->refs > 1))
        return;
    for (int k = 0; k < 2; k++) {
        int rc = in->cur.shm_fd[k] >= 0 ? shm_release_pages(in->cur.shm_fd[k]) : 0;
        if (rc < 0)
            INST_LOG(LOG_WARN, in, "%s: cannot release a shared-memory region's pages: %s", in->label, strerror(-rc));
        in->cur.shm_used[k] = 0;
    }
    inst_shm_unmap(in);
}

void inst_shm_close(inst *in)
{
    for (int k = 0; k < 2; k++) {
        if (in->cur.shm_fd[k] >= 0)
            close(in->cur.shm_fd[k]);
        in->cur.shm_fd[k] = -1;
    }
    inst_shm_unmap(in);
}

/* ---- answers ---- */

/*
 * The length of a result's tensor data in the output region: the sum of the
 * sizes its meta declares, at most the frame limit; -1 when the meta has no
 * such list. Each output is checked against its datatype and shape later
 * (api_v2.c); this bounds what may be read from the region at all.
 */
static long long shm_result_len(const uint8_t *body, size_t len)
{
    const char *meta;
    size_t meta_len, data_len;
    const uint8_t *data;
    if (proto_split_body(body, len, &meta, &meta_len, &data, &data_len) < 0 || data_len != 0)
        return -1;
    json_t *m = json_loadb(meta, meta_len, 0, NULL);
    json_t *results = json_object_get(m, "results"); /* a batch's per-request results (batch.h) */
    long long total = json_is_array(results) || json_is_array(json_object_get(m, "outputs")) ? 0 : -1;
    size_t r, nr = json_is_array(results) ? json_array_size(results) : 1;
    for (r = 0; r < nr && total >= 0; r++) {
        json_t *outputs = json_object_get(results ? json_array_get(results, r) : m, "outputs");
        size_t i;
        json_t *o;
        json_array_foreach(outputs, i, o) {
            json_t *size = json_object_get(o, "size");
            if (!json_is_integer(size) || json_integer_value(size) < 0 ||
                (total += json_integer_value(size)) > (long long)PROTO_MAX_BODY) {
                total = -1;
                break;
            }
        }
    }
    json_decref(m);
    return total;
}

long long inst_shm_result(inst *in, const proto_header *h, const uint8_t *body)
{
    long long len = 0;
    if (h->flags & PROTO_FLAG_SHM_DATA) {
        if (!in->cur.shm || in->cur.shm_out_job != h->id) {
            inst_protocol_error(in, "answered request %llu in shared memory without being allowed to",
                                (unsigned long long)h->id);
            return -1;
        }
        int rc = shm_remap_file(&in->cur.shm_out, in->cur.shm_fd[1]);
        if (rc < 0) {
            inst_protocol_error(in, "left an output region that cannot be mapped (%s)", strerror(-rc));
            return -1;
        }
        len = shm_result_len(body, h->length);
        if (len < 0 || (size_t)len > in->cur.shm_out->len) {
            inst_protocol_error(in, "answered request %llu in shared memory with output sizes %s the %zu-byte region",
                                (unsigned long long)h->id,
                                len < 0 ? "missing from its meta, or beyond" : "that run past", in->cur.shm_out->len);
            return -1;
        }
        if ((size_t)len > in->cur.shm_used[1])
            in->cur.shm_used[1] = (size_t)len;
    }
    /* An answer, even a late one, means the worker is done with the regions it was lent. */
    if (h->id == in->cur.shm_in_job)
        in->cur.shm_in_job = 0;
    if (h->id == in->cur.shm_out_job)
        in->cur.shm_out_job = 0;
    return len;
}

void inst_shm_attach(inst *in, job *j, long long len)
{
    j->shm = in->cur.shm_out; /* the response holds the region until it is sent */
    shm_ref(j->shm);
    j->shm_data = in->cur.shm_out->addr;
    j->shm_len = (size_t)len;
}

/* ---- memory figures ---- */

/*
 * Bytes the instance's shared-memory regions hold for tensors: each file's
 * allocated pages, but no more than the largest tensor data it carried
 * since its pages were last released. Memory figures leave them out: they
 * are the daemon's transport buffers, and a worker that touched them would
 * otherwise look larger by up to twice its largest tensor, and be replaced
 * under limits.memory. A worker cannot hide memory of its own in them: what
 * it writes beyond the results it declared still counts.
 */
static uint64_t shm_bytes(const inst *in)
{
    uint64_t total = 0;
    for (int k = 0; k < 2; k++) {
        struct stat st;
        if (in->cur.shm_fd[k] < 0 || fstat(in->cur.shm_fd[k], &st) < 0)
            continue;
        uint64_t allocated = (uint64_t)st.st_blocks * 512;
        total += allocated < in->cur.shm_used[k] ? allocated : in->cur.shm_used[k];
    }
    return total;
}

static uint64_t less_shm(const inst *in, uint64_t rss)
{
    uint64_t shm = shm_bytes(in);
    return rss > shm ? rss - shm : 0;
}

uint64_t inst_worker_rss(const inst *in)
{
    uint64_t rss;
    if (procfs_rss(in->pid, &rss) < 0)
        return 0;
    return less_shm(in, rss);
}

void inst_sample_rss(inst **v, size_t n)
{
    /* Until HELLO names the worker, pid is the guard's, whose group holds the guard alone: 0 counts nothing. */
    if (n == 0)
        return;
    int *pgids = xcalloc(n, sizeof *pgids);
    uint64_t *bytes = xcalloc(n, sizeof *bytes);
    for (size_t i = 0; i < n; i++)
        pgids[i] = v[i]->state != INST_IDLE && v[i]->pid != v[i]->cur.guard_pid ? v[i]->pid : 0;
    procfs_group_rss(pgids, n, bytes);
    for (size_t i = 0; i < n; i++)
        v[i]->rss_bytes = less_shm(v[i], bytes[i]);
    free(pgids);
    free(bytes);
}

