/*
 * fuzz_grpc_request — a serialized ModelInferRequest, as ModelInfer and
 * ModelStreamInfer receive one: unpacked as the daemon unpacks it
 * (grpc_unpack_request, checked against protobuf-c's own reading), read by
 * grpc_infer.c into the v2 document and pieces, parsed by infer.c as an
 * HTTP request is, then answered: an echoing worker's INFER_RESULT (every
 * input back as an output) read and packed as a ModelInferResponse and a
 * ModelStreamInferResponse, and the request as a decoupled model's JSON
 * body, itself packed back as a generated chunk.
 *
 * Input: the message's bytes. Its model_name "decl" makes the model
 * declare inputs INPUT0 FP32 [-1, 3] and an optional INPUT1 and outputs
 * OUTPUT0 and INPUT1 (decl.h), its model_version "batch" makes it batch
 * (the seeds in corpus/fuzz_grpc_request/ use both). Every failure must be
 * a status with a message the error writer turns into strict JSON; every
 * packed answer must unpack again with what was put in it.
 */
#include "fuzz.h"
#include "grpc_infer.h"
#include "infer.h"
#include "job.h"
#include "proto.h"
#include "sb.h"

#include <stdint.h>

static const decl_list *declared(int which)
{
    static const char *const text[] = {
        "[{\"name\":\"INPUT0\",\"datatype\":\"FP32\",\"shape\":[-1,3]},"
        "{\"name\":\"INPUT1\",\"datatype\":\"INT8\",\"shape\":[-1],\"optional\":true}]",
        "[{\"name\":\"OUTPUT0\",\"datatype\":\"FP32\",\"shape\":[-1,3]},"
        "{\"name\":\"INPUT1\",\"datatype\":\"INT8\",\"shape\":[-1]}]"};
    static const decl_list *lists[2];
    if (!lists[which])
        lists[which] = fuzz_decl(text[which]);
    return lists[which];
}

/* A packed answer unpacks, and says what res holds: its outputs and their bytes. */
static void check_packed(const uint8_t *buf, size_t len, int stream, const infer_result *res)
{
    if (!buf)
        abort(); /* the fuzzer's sizes are far from out of memory */
    Inference__ModelStreamInferResponse *s = NULL;
    Inference__ModelInferResponse *r;
    if (stream) {
        s = inference__model_stream_infer_response__unpack(NULL, len, buf);
        r = s ? s->infer_response : NULL;
    } else {
        r = inference__model_infer_response__unpack(NULL, len, buf);
    }
    if (!r || r->n_outputs != res->n || r->n_raw_output_contents != res->n)
        abort();
    for (size_t i = 0; i < res->n; i++) {
        const infer_output *o = &res->out[i];
        const Inference__ModelInferResponse__InferOutputTensor *t = r->outputs[i];
        if (strlen(t->name) != o->name_len || memcmp(t->name, o->name, o->name_len) != 0 ||
            t->n_shape != (size_t)o->ndim || (o->ndim && memcmp(t->shape, o->dims, sizeof(int64_t) * o->ndim)))
            abort();
        size_t want = o->shm ? 0 : o->size;
        if (r->raw_output_contents[i].len != want ||
            (want && memcmp(r->raw_output_contents[i].data, o->data, want) != 0))
            abort();
    }
    if (s)
        inference__model_stream_infer_response__free_unpacked(s, NULL);
    else
        inference__model_infer_response__free_unpacked(r, NULL);
}

/* The INFER_RESULT an echoing worker sends: every input back as an output of the same name. */
static void echo(const job *j, const infer_opts *opts, const char *id)
{
    sb body;
    fuzz_echo_result(j->frame, j->frame_len, j, &body);
    infer_result res;
    char err[512];
    int status = infer_read_result("fuzz", opts, (const uint8_t *)body.p, body.len, NULL, 0, &res, err, sizeof err);
    if (status == 200) {
        for (int stream = 0; stream < 2; stream++) {
            size_t len = 0;
            uint8_t *buf = grpc_pack_result("fuzz", id, &res, stream, &len);
            check_packed(buf, len, stream, &res);
            free(buf);
        }
        infer_result_clear(&res);
    } else if ((status == 400 || status == 503) && opts->requested) {
        /* an output asked for that the echo does not have, or one that cannot be classified */
        fuzz_check_error(err);
    } else {
        fprintf(stderr, "fuzz: the echo of a valid request was refused: %d %s\n", status, err);
        abort();
    }
    sb_free(&body);
}

/* The request as a decoupled model's body, and that body back as a generated chunk. */
static void generate(const Inference__ModelInferRequest *in, const grpc_request *r)
{
    char *text = NULL, err[1024];
    size_t len = 0;
    int status = grpc_generate_body(in, r, &text, &len, err, sizeof err);
    if (status) {
        if (status != 400 && status != 503)
            abort();
        fuzz_check_error(err);
        return;
    }
    fuzz_check_json(text, len);
    json_t *o = json_loadb(text, len, JSON_ALLOW_NUL, NULL);
    size_t packed_len;
    uint8_t *buf = grpc_pack_generated("fuzz", in->id, 1, "application/json", (const uint8_t *)text, len, 0, NULL,
                                       &packed_len);
    Inference__ModelStreamInferResponse *s = buf ? inference__model_stream_infer_response__unpack(NULL, packed_len, buf)
                                                 : NULL;
    if (!s || !s->infer_response || s->infer_response->n_outputs != json_object_size(o) ||
        s->infer_response->n_raw_output_contents != json_object_size(o))
        abort();
    inference__model_stream_infer_response__free_unpacked(s, NULL);
    free(buf);
    json_decref(o);
    free(text);
}

/*
 * grpc_unpack_request (the daemon's way in: raw_input_contents left in place)
 * must read what protobuf-c reads, field for field: the same success, the
 * same raw contents, and a message that packs to the same bytes without them.
 */
static Inference__ModelInferRequest *unpack_both(const uint8_t *data, size_t size)
{
    Inference__ModelInferRequest *ref = inference__model_infer_request__unpack(NULL, size, data);
    Inference__ModelInferRequest *in = grpc_unpack_request(data, size);
    if (!ref || !in) {
        if (in) /* it may refuse what protobuf-c takes only when out of memory, never here */
            abort();
        if (ref)
            inference__model_infer_request__free_unpacked(ref, NULL);
        return NULL;
    }
    if (in->n_raw_input_contents != ref->n_raw_input_contents)
        abort();
    for (size_t i = 0; i < in->n_raw_input_contents; i++) {
        const ProtobufCBinaryData *a = &in->raw_input_contents[i], *b = &ref->raw_input_contents[i];
        if (a->len != b->len || (a->len && memcmp(a->data, b->data, a->len) != 0))
            abort();
        if (a->len && (a->data < data || a->data + a->len > data + size)) /* in place, not copied */
            abort();
    }
    size_t na = ref->n_raw_input_contents;
    ProtobufCBinaryData *ra = in->raw_input_contents, *rb = ref->raw_input_contents;
    in->n_raw_input_contents = ref->n_raw_input_contents = 0;
    size_t la = inference__model_infer_request__get_packed_size(in);
    size_t lb = inference__model_infer_request__get_packed_size(ref);
    uint8_t *pa = malloc(la + 1), *pb = malloc(lb + 1);
    if (la != lb || inference__model_infer_request__pack(in, pa) != la ||
        inference__model_infer_request__pack(ref, pb) != lb || memcmp(pa, pb, la) != 0)
        abort();
    free(pa);
    free(pb);
    in->n_raw_input_contents = ref->n_raw_input_contents = na;
    in->raw_input_contents = ra;
    ref->raw_input_contents = rb;
    inference__model_infer_request__free_unpacked(ref, NULL);
    return in;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    Inference__ModelInferRequest *in = unpack_both(data, size);
    if (!in)
        return 0;
    grpc_request r;
    char err[1024];
    int status = grpc_request_read(in, "fuzz", &r, err, sizeof err);
    if (status) {
        if (status != 400 && status != 503)
            abort();
        fuzz_check_error(err);
        size_t len;
        uint8_t *buf = grpc_pack_stream_error("fuzz", utf8_valid(in->id, strlen(in->id)) ? in->id : "", err, &len);
        Inference__ModelStreamInferResponse *s = buf ? inference__model_stream_infer_response__unpack(NULL, len, buf)
                                                     : NULL;
        if (!s || strcmp(s->error_message, err) != 0)
            abort();
        inference__model_stream_infer_response__free_unpacked(s, NULL);
        free(buf);
        grpc_free_request(in);
        return 0;
    }
    if (r.npieces > (int)in->n_inputs)
        abort();
    for (int k = 0; k < r.npieces; k++)
        fuzz_touch(r.pieces[k].ptr, r.pieces[k].len);
    char *doc = json_dumps(r.doc, JSON_COMPACT);
    fuzz_check_json(doc, strlen(doc));
    free(doc);

    int decl = strcmp(in->model_name, "decl") == 0;
    infer_input ii = {.model = "fuzz",
                      .priority_levels = 3,
                      .doc = r.doc,
                      .raw = r.pieces,
                      .nraw = r.npieces,
                      .max_batch_size = strcmp(in->model_version, "batch") == 0 ? 4 : 0,
                      .inputs_decl = decl ? declared(0) : NULL,
                      .outputs_decl = decl ? declared(1) : NULL};
    fuzz_session_store();
    job *j = job_new(NULL, PROTO_INFER, 0);
    infer_opts opts = {0};
    status = infer_parse_request(&ii, j, &opts, err, sizeof err);
    if (status == 0) {
        proto_header h;
        if (proto_header_decode(j->frame, j->frame_len, PROTO_MAX_BODY, &h) < 0 || h.type != PROTO_INFER ||
            h.length != j->frame_len - PROTO_HEADER_SIZE + j->pieces_len)
            abort();
        echo(j, &opts, in->id);
        generate(in, &r);
    } else {
        if (status != 400 && status != 403 && status != 413 && status != 503)
            abort();
        fuzz_check_error(err);
    }
    infer_opts_clear(&opts);
    job_free(j);
    grpc_request_clear(&r);
    grpc_free_request(in);
    return 0;
}
