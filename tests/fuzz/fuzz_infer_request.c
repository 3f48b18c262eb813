/*
 * fuzz_infer_request — a v2 inference request body, JSON or JSON plus the
 * binary tensor extension, as the daemon turns it into an INFER frame
 * (infer.c), then answered by an echoing worker and written back as a v2
 * response.
 *
 * Input: byte 0 holds flags (bit 0: an Inference-Header-Content-Length
 * header is present; bit 1: its value is the next 6 raw bytes rather than
 * digits; bit 2: the model declares inputs INPUT0 FP32 [-1, 3] and an
 * optional INPUT1 and outputs OUTPUT0 and INPUT1 (decl.h); bit 3: it
 * batches, so classification goes per row; bits 4-7: the model's priority
 * levels), bytes 1-2 the header's
 * value as a number; the rest is the body. A request that parses must give
 * a well-formed frame whose meta is strict JSON; one that fails must fail
 * with a status and a message the error writer turns into strict JSON; the
 * echoed response must be strict JSON with binary sections inside the
 * result.
 */
#include "fuzz.h"
#include "infer.h"
#include "proto.h"
#include "sb.h"
#include "job.h"

#include <stdint.h>

/* The INFER_RESULT an echoing worker sends: every input back as an output of the same name. */
static void echo(const uint8_t *frame, size_t frame_len, const job *j, const infer_opts *opts)
{
    sb body;
    fuzz_echo_result(frame, frame_len, j, &body);
    infer_response r;
    char err[512];
    int status = infer_build_response("fuzz", opts, (const uint8_t *)body.p, body.len, NULL, 0, &r, err, sizeof err);
    if (status == 200) {
        fuzz_check_json(r.json, r.json_len);
        const uint8_t *owned = (const uint8_t *)r.owned;
        for (size_t i = 0; i < r.nbinary; i++) {
            const uint8_t *p = r.binary[i].ptr, *end = p + r.binary[i].len;
            if ((p < (const uint8_t *)body.p || end > (const uint8_t *)body.p + body.len) &&
                (!owned || p < owned || end > owned + r.owned_len))
                abort();
        }
        free(r.json);
        free(r.owned);
    } else if ((status == 400 || status == 503) && opts->requested) {
        /* an output asked for that the echo does not have, one that cannot be classified, or its
         * classification too large for the memory at hand */
        fuzz_check_error(err);
    } else {
        fprintf(stderr, "fuzz: the echo of a valid request was refused: %d %s\n", status, err);
        abort();
    }
    sb_free(&body);
}

/* The declarations of bit 2: inputs (which 0) or outputs (1), parsed once for the whole run. */
static const decl_list *declared(int which)
{
    static const char *const text[] = {
        "[{\"name\":\"INPUT0\",\"datatype\":\"FP32\",\"shape\":[-1,3]},"
        "{\"name\":\"INPUT1\",\"datatype\":\"INT8\",\"shape\":[-1],\"optional\":true}]",
        "[{\"name\":\"INPUT0\",\"datatype\":\"FP32\",\"shape\":[-1,3]},"
        "{\"name\":\"INPUT1\",\"datatype\":\"INT8\",\"shape\":[-1]}]"};
    static const decl_list *lists[2];
    if (!lists[which])
        lists[which] = fuzz_decl(text[which]);
    return lists[which];
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3)
        return 0;
    char digits[24];
    infer_input in = {.model = "fuzz", .priority_levels = 1 + (data[0] >> 4), .max_batch_size = data[0] & 8 ? 4 : 0};
    if (data[0] & 4) {
        in.inputs_decl = declared(0);
        in.outputs_decl = declared(1);
    }
    if (data[0] & 1) {
        if ((data[0] & 2) && size >= 9) {
            in.header_length = (const char *)data + 3;
            in.header_length_len = 6;
            data += 6;
            size -= 6;
        } else {
            in.header_length_len = (size_t)snprintf(digits, sizeof digits, "%u", data[1] | data[2] << 8);
            in.header_length = digits;
        }
    }
    in.body = data + 3;
    in.len = size - 3;
    fuzz_session_store();
    job *j = job_new(NULL, PROTO_INFER, 0);
    infer_opts opts = {0};
    char err[1024];
    int status = infer_parse_request(&in, j, &opts, err, sizeof err);
    if (status == 0) {
        proto_header h;
        if (proto_header_decode(j->frame, j->frame_len, PROTO_MAX_BODY, &h) < 0 || h.type != PROTO_INFER ||
            h.length != j->frame_len - PROTO_HEADER_SIZE + j->pieces_len)
            abort();
        echo(j->frame, j->frame_len, j, &opts);
    } else {
        if (status != 400 && status != 413 && status != 503)
            abort();
        fuzz_check_error(err);
    }
    infer_opts_clear(&opts);
    job_free(j);
    return 0;
}
