"""KServe v2's gRPC service (issue 14), functional side, with a real client: Debian's grpcio and stubs
generated from proto/ (grpc_stubs.py).

- Every served RPC answers what the matching HTTP endpoint answers: health, server and model metadata,
  model configuration, statistics, the repository index, load (Triton's `config` string, corral's
  `instances`) and unload; errors carry the gRPC code of HTTP's status.
- Triton's other RPCs and unknown methods are UNIMPLEMENTED with a message.
- ModelInfer: every v2 datatype through raw_input_contents (Python and C echo models, bit for bit), the
  typed contents fields, the errors of contents and shapes, ids, requested outputs, classification,
  request parameters (priority, sequence_id, the model's own), declared inputs, batching, and the
  /metrics counters shared with HTTP.
- ModelStreamInfer: many requests on one stream, failures answered on it with error_message, and a
  decoupled model (examples/models/tokens) streaming one response per token.
- Client shared memory; the token (ServerLive/ServerReady open, the rest need it; --auth management);
  the --grpc-port flag and GRPC_PORT.

Faults, deadlines, cancellation, drain and large messages are another file's. Most tests share one
daemon (the module's `d`): each uses models of its own where counts or states matter.
"""
from __future__ import annotations

import concurrent.futures
import json
import os
import re
import socket
import struct
import subprocess

import grpc
import pytest
from google.protobuf import json_format

import grpc_stubs
from conftest import BIN, Corral, ctl_manifest, load, tensor, wait_for

pb, pb_grpc = grpc_stubs.load()
SC = grpc.StatusCode
TOKEN = "grpc-tok-81c2"

DECL = """runtime: python
entrypoint: worker.py
instances: 1
inputs: [{name: INPUT0, datatype: FP32, shape: [-1, 2]}]
outputs: [{name: OUTPUT0, datatype: FP32, shape: [-1, 2]}]
"""
ONE = "runtime: python\nentrypoint: worker.py\ninstances: 1\n"


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    c = Corral(tmp_path_factory.mktemp("grpc"))
    c.add("echo", "echo")
    c.add("echoc", "echo-c")
    c.add("stat", "echo-c")
    c.add("batch", "echo-c-batch")
    c.add("tokens", "tokens")
    c.add("ctl", "steerable", manifest=ctl_manifest(parameters={"tag": "file"}))
    c.add("lo", "steerable", manifest=ctl_manifest(parameters={"tag": "file", "keep": "me"}))
    c.add("idle", "steerable", manifest=ctl_manifest())
    c.add("decl", "echo", manifest=DECL)
    c.add("labels", "echo", manifest=ONE, files={"labels.txt": "cat\ndog\nfish\n"})
    c.add("fails", "load_fails")
    c.add("gen", "echo", manifest=ONE + "decoupled: true\n")
    c.add("genc", "echo-c", manifest="runtime: exec\nentrypoint: echo-c\ndecoupled: true\n")
    c.add("broken", "echo", manifest="runtime: python\nentrypoint: worker.py\ninstances: many\n")
    daemon = c.start()
    yield daemon
    c.close()


@pytest.fixture(scope="module")
def g(d):
    stub, channel = grpc_stubs.stub(d.grpc_port)
    yield stub
    channel.close()


def fails(call, req, code, *needles, **kw) -> str:
    """Calls a unary RPC expecting status code with a message holding needles; returns the message."""
    kw.setdefault("timeout", 30)
    with pytest.raises(grpc.RpcError) as e:
        call(req, **kw)
    assert e.value.code() == code, (e.value.code(), e.value.details())
    msg = e.value.details()
    for needle in needles:
        assert needle in msg, f"{needle!r} not in {msg!r}"
    return msg


def as_dict(msg) -> dict:
    return json_format.MessageToDict(msg, preserving_proto_field_name=True, including_default_value_fields=True)


def norm(v):
    """JSON of a message against HTTP's: protobuf's JSON writes 64-bit integers as strings."""
    if isinstance(v, dict):
        return {k: norm(x) for k, x in v.items()}
    if isinstance(v, list):
        return [norm(x) for x in v]
    if isinstance(v, str) and re.fullmatch(r"-?\d+", v):
        return int(v)
    return v


def same_as_http(grpc_json: dict, http_json: dict, where: str = ""):
    """Every member HTTP sends is in the gRPC answer with the same value (the message may have more defaults)."""
    for k, v in http_json.items():
        assert k in grpc_json, f"{where}{k} missing from the gRPC answer: {grpc_json}"
        gv = grpc_json[k]
        if isinstance(v, dict) and isinstance(gv, dict):
            same_as_http(gv, v, f"{where}{k}.")
        elif isinstance(v, list) and isinstance(gv, list) and len(v) == len(gv) and all(
                isinstance(x, dict) for x in v + gv):
            for i, (gx, hx) in enumerate(zip(gv, v)):
                same_as_http(gx, hx, f"{where}{k}[{i}].")
        else:
            assert norm(grpc_json[k]) == norm(v), f"{where}{k}: gRPC {grpc_json[k]!r} != HTTP {v!r}"


def param(**kw) -> dict:
    """InferParameter values by Python type: bool, int (int64), float (double), str, bytes."""
    out = {}
    for k, v in kw.items():
        if isinstance(v, bool):
            out[k] = pb.InferParameter(bool_param=v)
        elif isinstance(v, int):
            out[k] = pb.InferParameter(int64_param=v)
        elif isinstance(v, float):
            out[k] = pb.InferParameter(double_param=v)
        else:
            out[k] = pb.InferParameter(string_param=v)
    return out


def inp(name, datatype, shape, **contents):
    t = pb.ModelInferRequest.InferInputTensor(name=name, datatype=datatype, shape=shape)
    if contents:
        t.contents.CopyFrom(pb.InferTensorContents(**contents))
    return t


def request(model, inputs, raw=None, outputs=None, id="", **params):
    r = pb.ModelInferRequest(model_name=model, id=id, inputs=inputs, parameters=param(**params))
    if raw is not None:
        r.raw_input_contents.extend(raw)
    for o in outputs or []:
        r.outputs.append(o if not isinstance(o, str) else pb.ModelInferRequest.InferRequestedOutputTensor(name=o))
    return r


def outputs(resp) -> dict:
    """name -> (datatype, shape, raw bytes) of a response with raw_output_contents."""
    assert len(resp.raw_output_contents) == len(resp.outputs), resp
    return {o.name: (o.datatype, list(o.shape), resp.raw_output_contents[i]) for i, o in enumerate(resp.outputs)}


def bytes_raw(items) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in items)


def bytes_items(raw: bytes) -> list[bytes]:
    items, i = [], 0
    while i < len(raw):
        (n,) = struct.unpack_from("<I", raw, i)
        items.append(raw[i + 4:i + 4 + n])
        i += 4 + n
    return items


def metric(d, name: str, labels: str) -> float:
    text = d.get("/metrics").text
    m = re.search(r"^%s\{%s\} (\S+)$" % (re.escape(name), re.escape(labels)), text, re.M)
    return float(m.group(1)) if m else 0.0


# ---------------------------------------------------------------- health and metadata


def test_server_live_and_ready(g):
    assert g.ServerLive(pb.ServerLiveRequest(), timeout=30).live is True
    assert g.ServerReady(pb.ServerReadyRequest(), timeout=30).ready is True


def test_model_ready(d, g):
    def ready(name, version=""):
        return g.ModelReady(pb.ModelReadyRequest(name=name, version=version), timeout=30).ready

    # a model that loads on demand is ready (as HTTP's /ready says), and asking loads nothing
    assert ready("idle") is True and ready("idle", "1") is True
    assert d.model("idle")["state"] == "unloaded"
    assert load(d, "fails").status_code == 503 and d.model("fails")["state"] == "failed"
    assert ready("fails") is False
    assert ready("broken") is False
    fails(g.ModelReady, pb.ModelReadyRequest(name="nosuch"), SC.NOT_FOUND, "unknown model 'nosuch'")
    fails(g.ModelReady, pb.ModelReadyRequest(name="bad name!"), SC.INVALID_ARGUMENT, "invalid model name")
    fails(g.ModelReady, pb.ModelReadyRequest(name="idle", version="2"), SC.NOT_FOUND, "no version '2'")


def test_server_metadata_matches_http(d, g):
    m = g.ServerMetadata(pb.ServerMetadataRequest(), timeout=30)
    http = d.get("/v2").json()
    assert m.name == "corral" == http["name"]
    assert m.version == http["version"] and m.version
    assert list(m.extensions) == http["extensions"] and "model_configuration" in m.extensions


def test_model_metadata_matches_http(d, g):
    m = g.ModelMetadata(pb.ModelMetadataRequest(name="decl"), timeout=30)
    assert m.name == "decl" and list(m.versions) == ["1"]
    assert [(t.name, t.datatype, list(t.shape)) for t in m.inputs] == [("INPUT0", "FP32", [-1, 2])]
    assert [(t.name, t.datatype, list(t.shape)) for t in m.outputs] == [("OUTPUT0", "FP32", [-1, 2])]
    for name in ("decl", "echo", "tokens"):
        http = d.get(f"/v2/models/{name}").json()
        grpc_json = as_dict(g.ModelMetadata(pb.ModelMetadataRequest(name=name, version="1"), timeout=30))
        same_as_http(grpc_json, http, f"{name}: ")
    fails(g.ModelMetadata, pb.ModelMetadataRequest(name="nosuch"), SC.NOT_FOUND, "nosuch")
    fails(g.ModelMetadata, pb.ModelMetadataRequest(name="decl", version="3"), SC.NOT_FOUND, "version")


def test_model_config_matches_http(d, g):
    for name in ("decl", "batch", "tokens", "echo"):
        c = g.ModelConfig(pb.ModelConfigRequest(name=name), timeout=30).config
        http = d.get(f"/v2/models/{name}/config").json()
        assert c.name == name == http["name"]
        assert c.platform == http["platform"] and c.backend == http["backend"]
        assert c.max_batch_size == http["max_batch_size"]
        assert [i.name for i in c.instance_group] == [i["name"] for i in http["instance_group"]]
        assert [i.count for i in c.instance_group] == [i["count"] for i in http["instance_group"]]
        same_as_http(as_dict(c), http, f"{name}: ")
    c = g.ModelConfig(pb.ModelConfigRequest(name="decl"), timeout=30).config
    i = c.input[0]
    dtype = i.DESCRIPTOR.fields_by_name["data_type"].enum_type.values_by_number[i.data_type].name
    assert (i.name, dtype, list(i.dims)) == ("INPUT0", "TYPE_FP32", [-1, 2]) and c.max_batch_size == 0
    assert g.ModelConfig(pb.ModelConfigRequest(name="batch"), timeout=30).config.max_batch_size == 32
    # decoupled, as Triton's config says it
    assert g.ModelConfig(pb.ModelConfigRequest(name="tokens"), timeout=30).config \
        .model_transaction_policy.decoupled is True
    assert d.get("/v2/models/tokens/config").json()["model_transaction_policy"] == {"decoupled": True}
    assert g.ModelConfig(pb.ModelConfigRequest(name="echo"), timeout=30).config \
        .model_transaction_policy.decoupled is False
    fails(g.ModelConfig, pb.ModelConfigRequest(name="broken"), SC.UNAVAILABLE, "broken", "instances")
    fails(g.ModelConfig, pb.ModelConfigRequest(name="nosuch"), SC.NOT_FOUND, "nosuch")


def test_model_statistics_count_grpc_requests_as_http_shows_them(d, g):
    def stats(name=""):
        return g.ModelStatistics(pb.ModelStatisticsRequest(name=name), timeout=30)

    before = stats("stat").model_stats
    assert [s.name for s in before] == ["stat"] and before[0].inference_stats.success.count == 0
    req = request("stat", [inp("INPUT0", "INT32", [2])], raw=[struct.pack("<2i", 1, 2)])
    for _ in range(3):
        g.ModelInfer(req, timeout=30)
    s = stats("stat").model_stats[0]
    assert s.inference_count == 3 and s.execution_count == 3
    assert s.inference_stats.success.count == 3 and s.inference_stats.fail.count == 0
    # requests on a stream count, and so does a failure (the model's 400)
    assert len(list(g.ModelStreamInfer(iter([req, req]), timeout=60))) == 2
    bad = request("stat", [inp("INPUT0", "INT32", [2])], raw=[struct.pack("<2i", 1, 2)], delay_ms=-1)
    fails(g.ModelInfer, bad, SC.INVALID_ARGUMENT, "delay_ms must be between 0 and")
    s = stats("stat").model_stats[0]
    assert s.inference_stats.success.count == 5 and s.inference_stats.fail.count == 1
    http = d.get("/v2/models/stat/stats").json()
    same_as_http(as_dict(stats("stat")), http)
    # an empty name: every model
    every = stats()
    assert {s.name for s in every.model_stats} == {s["name"] for s in d.get("/v2/models/stats").json()["model_stats"]}
    assert {"stat", "echo", "tokens", "idle"} <= {s.name for s in every.model_stats}
    fails(g.ModelStatistics, pb.ModelStatisticsRequest(name="nosuch"), SC.NOT_FOUND, "nosuch")


# ---------------------------------------------------------------- the repository


def test_repository_index_matches_http(d, g):
    def index(ready=False):
        return [as_dict(m) for m in g.RepositoryIndex(pb.RepositoryIndexRequest(ready=ready), timeout=30).models]

    full = index()
    http = d.post("/v2/repository/index").json()
    assert [m["name"] for m in full] == [m["name"] for m in http]
    # the members Triton's message has (HTTP adds corral_state)
    assert [{k: m.get(k, "") for k in ("name", "version", "state", "reason")} for m in http] == full
    ready = index(True)
    assert [m["name"] for m in ready] == [m["name"] for m in d.post("/v2/repository/index", {"ready": True}).json()]
    assert all(m["state"] == "READY" for m in ready)
    fails(g.RepositoryIndex, pb.RepositoryIndexRequest(repository_name="other"), SC.INVALID_ARGUMENT,
          "one repository", "'other'")


def repo_params(**kw):
    out = {}
    for k, v in kw.items():
        out[k] = pb.ModelRepositoryParameter(int64_param=v) if isinstance(v, int) else \
            pb.ModelRepositoryParameter(string_param=v)
    return out


def test_load_with_a_config_and_unload(d, g):
    def load_req(**params):
        return pb.RepositoryModelLoadRequest(model_name="lo", parameters=repo_params(**params))

    cfg = json.dumps({"instances": 2, "parameters": {"tag": "config"}})
    assert g.RepositoryModelLoad(load_req(config=cfg), timeout=60) == pb.RepositoryModelLoadResponse()
    m = d.model("lo")
    assert m["state"] == "ready" and len(m["instances"]) == 2
    assert m["config_override"] == {"instances": 2, "parameters": {"tag": "config"}}
    r = g.ModelInfer(request("lo", [inp("X", "INT32", [1], int_contents=[0])]), timeout=30)
    assert bytes_items(outputs(r)["TAG"][2]) == [b"config"]
    c = g.ModelConfig(pb.ModelConfigRequest(name="lo"), timeout=30).config
    assert c.parameters["tag"].string_value == "config" and c.parameters["keep"].string_value == "me"

    # corral's instances, an int64
    g.RepositoryModelLoad(load_req(instances=1), timeout=60)
    assert len(d.model("lo")["instances"]) == 1

    pids = sorted(d.worker_pids("lo"))
    fails(g.RepositoryModelLoad, load_req(config=json.dumps({"instances": 0})), SC.INVALID_ARGUMENT,
          "model 'lo': the load's config", "key 'instances'")
    fails(g.RepositoryModelLoad, load_req(config="{not json"), SC.INVALID_ARGUMENT, "parameters.config")
    fails(g.RepositoryModelLoad, load_req(version=2), SC.INVALID_ARGUMENT, "unknown parameter 'version'")
    fails(g.RepositoryModelLoad, load_req(**{"config": "{}", "file:1/model.py": "cHJpbnQoKQ=="}),
          SC.INVALID_ARGUMENT, "'file:1/model.py'", "file overrides are not supported")
    fails(g.RepositoryModelLoad, pb.RepositoryModelLoadRequest(model_name="lo", repository_name="x"),
          SC.INVALID_ARGUMENT, "one repository")
    fails(g.RepositoryModelLoad, pb.RepositoryModelLoadRequest(model_name="nosuch"), SC.NOT_FOUND, "nosuch")
    fails(g.RepositoryModelLoad, pb.RepositoryModelLoadRequest(model_name="../x"), SC.INVALID_ARGUMENT,
          "invalid model name")
    assert sorted(d.worker_pids("lo")) == pids and d.model("lo")["state"] == "ready"

    fails(g.RepositoryModelUnload, pb.RepositoryModelUnloadRequest(model_name="lo", repository_name="x"),
          SC.INVALID_ARGUMENT, "one repository")
    fails(g.RepositoryModelUnload, pb.RepositoryModelUnloadRequest(model_name="nosuch"), SC.NOT_FOUND, "nosuch")
    fails(g.RepositoryModelUnload, pb.RepositoryModelUnloadRequest(
        model_name="lo", parameters={"x": pb.ModelRepositoryParameter(bool_param=True)}), SC.INVALID_ARGUMENT,
        "model 'lo': unload: unknown parameter 'x'")
    assert d.model("lo")["state"] == "ready"
    assert g.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(
        model_name="lo", parameters={"unload_dependents": pb.ModelRepositoryParameter(bool_param=True)}),
        timeout=60) == pb.RepositoryModelUnloadResponse()
    m = d.model("lo")
    assert m["state"] == "unloaded" and m["instances"] == []


# ---------------------------------------------------------------- what corral does not serve


@pytest.mark.parametrize("rpc,req", [
    ("SystemSharedMemoryStatus", "SystemSharedMemoryStatusRequest"),
    ("CudaSharedMemoryRegister", "CudaSharedMemoryRegisterRequest"),
    ("TraceSetting", "TraceSettingRequest"),
    ("LogSettings", "LogSettingsRequest"),
])
def test_tritons_other_rpcs_are_unimplemented(g, rpc, req):
    msg = fails(getattr(g, rpc), getattr(pb, req)(), SC.UNIMPLEMENTED, f"corral does not serve {rpc} over gRPC")
    assert len(msg) > len(f"corral does not serve {rpc} over gRPC: ")


def test_unknown_methods_are_unimplemented(d):
    _, channel = grpc_stubs.stub(d.grpc_port)
    try:
        for path in ("/inference.GRPCInferenceService/Nope", "/other.Service/X"):
            call = channel.unary_unary(path, request_serializer=None, response_deserializer=None)
            with pytest.raises(grpc.RpcError) as e:
                call(b"", timeout=30)
            assert e.value.code() == SC.UNIMPLEMENTED, e.value
            assert f"unknown method '{path}'" in e.value.details()
            assert "inference.GRPCInferenceService" in e.value.details()
        # and bytes that are no ModelInferRequest
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer", request_serializer=None,
                                   response_deserializer=None)
        with pytest.raises(grpc.RpcError) as e:
            call(b"\xff\xff\xff\xff\x0f", timeout=30)
        assert e.value.code() == SC.INVALID_ARGUMENT, e.value
        assert "not a valid inference.ModelInferRequest" in e.value.details()
    finally:
        channel.close()


def test_calls_without_a_message_bad_bytes_on_a_stream_and_compression(d, g):
    _, channel = grpc_stubs.stub(d.grpc_port)
    try:
        def raw(method, msgs):
            call = channel.stream_stream("/inference.GRPCInferenceService/" + method, request_serializer=None,
                                         response_deserializer=None)
            return list(call(iter(msgs), timeout=30))

        for method in ("ModelInfer", "ServerLive"):
            with pytest.raises(grpc.RpcError) as e:
                raw(method, [])
            assert e.value.code() == SC.INVALID_ARGUMENT
            assert e.value.details() == f"{method}: the call carried no request message"
        good = request("echoc", [inp("INPUT0", "INT32", [1], int_contents=[5])], id="g").SerializeToString()
        answers = [pb.ModelStreamInferResponse.FromString(b)
                   for b in raw("ModelStreamInfer", [good, b"\xff\xff", good])]
        assert sorted(a.error_message for a in answers) == [
            "", "", "the request is not a valid inference.ModelInferRequest message (2 bytes)"]
        assert all(outputs(a.infer_response)["OUTPUT0"][2] == struct.pack("<i", 5)
                   for a in answers if not a.error_message)
    finally:
        channel.close()
    # a stream with no request ends at once, and well
    assert list(g.ModelStreamInfer(iter([]), timeout=30)) == []
    # a compressed request is a request
    r = g.ModelInfer(request("echoc", [inp("INPUT0", "INT32", [1], int_contents=[6])]), timeout=30,
                     compression=grpc.Compression.Gzip)
    assert outputs(r)["OUTPUT0"][2] == struct.pack("<i", 6)


# ---------------------------------------------------------------- ModelInfer: datatypes

BF16 = struct.pack("<4H", 0x3F80, 0xC000, 0x7F80, 0x0001)  # 1, -2, inf, a subnormal
ALL = [
    ("BOOL", [3], bytes([1, 0, 1])),
    ("UINT8", [3], bytes([0, 1, 255])),
    ("UINT16", [2], struct.pack("<2H", 0, 65535)),
    ("UINT32", [2], struct.pack("<2I", 1, 2**32 - 1)),
    ("UINT64", [2], struct.pack("<2Q", 0, 2**64 - 1)),
    ("INT8", [3], struct.pack("<3b", -128, 0, 127)),
    ("INT16", [2], struct.pack("<2h", -32768, 32767)),
    ("INT32", [2, 2], struct.pack("<4i", -2**31, -1, 0, 2**31 - 1)),
    ("INT64", [2], struct.pack("<2q", -2**63, 2**63 - 1)),
    ("FP16", [3], struct.pack("<3e", 1.5, -0.0, 65504.0)),
    ("BF16", [4], BF16),
    ("FP32", [3], struct.pack("<3f", 3.25, float("-inf"), 1e-38)),
    ("FP64", [2], struct.pack("<2d", 2.0**-1074, -1.5e300)),
    ("BYTES", [4], bytes_raw([b"hello", b"", b"\xff\xfe\x00\x80", "é".encode()])),
    ("BYTES", [0], b""),
    ("INT32", [0, 3], b""),
]


@pytest.mark.parametrize("model", ["echo", "echoc"])
def test_every_datatype_through_raw_contents_bit_for_bit(g, model):
    inputs = [inp(f"INPUT{i}", dt, shape) for i, (dt, shape, _) in enumerate(ALL)]
    r = g.ModelInfer(request(model, inputs, raw=[raw for _, _, raw in ALL], id="all-types"), timeout=60)
    assert r.model_name == model and r.model_version == "1" and r.id == "all-types"
    got = outputs(r)
    assert set(got) == {f"OUTPUT{i}" for i in range(len(ALL))}
    for i, (dt, shape, raw) in enumerate(ALL):
        assert got[f"OUTPUT{i}"] == (dt, shape, raw), (i, dt)


TYPED = [
    ("BOOL", dict(bool_contents=[True, False, True]), bytes([1, 0, 1])),
    ("INT8", dict(int_contents=[-128, 5, 127]), struct.pack("<3b", -128, 5, 127)),
    ("INT16", dict(int_contents=[-32768, 7, 32767]), struct.pack("<3h", -32768, 7, 32767)),
    ("INT32", dict(int_contents=[-2**31, 0, 2**31 - 1]), struct.pack("<3i", -2**31, 0, 2**31 - 1)),
    ("INT64", dict(int64_contents=[-2**63, 1, 2**63 - 1]), struct.pack("<3q", -2**63, 1, 2**63 - 1)),
    ("UINT8", dict(uint_contents=[0, 9, 255]), bytes([0, 9, 255])),
    ("UINT16", dict(uint_contents=[0, 9, 65535]), struct.pack("<3H", 0, 9, 65535)),
    ("UINT32", dict(uint_contents=[0, 9, 2**32 - 1]), struct.pack("<3I", 0, 9, 2**32 - 1)),
    ("UINT64", dict(uint64_contents=[0, 9, 2**64 - 1]), struct.pack("<3Q", 0, 9, 2**64 - 1)),
    ("FP32", dict(fp32_contents=[1.5, -2.25, 3e38]), struct.pack("<3f", 1.5, -2.25, 3e38)),
    ("FP64", dict(fp64_contents=[1e-300, -0.5, 7.0]), struct.pack("<3d", 1e-300, -0.5, 7.0)),
    ("BYTES", dict(bytes_contents=[b"a", b"", b"\x00\xff"]), bytes_raw([b"a", b"", b"\x00\xff"])),
]


@pytest.mark.parametrize("model", ["echo", "echoc"])
def test_typed_contents_of_every_datatype_that_has_a_field(g, model):
    inputs = [inp(f"INPUT{i}", dt, [3], **c) for i, (dt, c, _) in enumerate(TYPED)]
    got = outputs(g.ModelInfer(request(model, inputs), timeout=60))
    for i, (dt, _, raw) in enumerate(TYPED):
        assert got[f"OUTPUT{i}"] == (dt, [3], raw), dt


def test_contents_errors(g):
    def bad(inputs, raw=None, *needles):
        fails(g.ModelInfer, request("echoc", inputs, raw=raw), SC.INVALID_ARGUMENT, *needles)

    bad([inp("INPUT0", "FP16", [1], fp32_contents=[1.0])], None,
        "input 'INPUT0'", "FP16 tensors have no typed contents", "raw_input_contents")
    bad([inp("INPUT0", "INT32", [1], int64_contents=[1])], None, "contents go in int_contents",
        "this one sets int64_contents")
    bad([inp("INPUT0", "UINT64", [1], uint_contents=[1])], None, "uint64_contents", "uint_contents")
    bad([inp("INPUT0", "INT32", [3], int_contents=[1, 2])], None, "holds 2 elements; the shape says 3")
    bad([inp("INPUT0", "INT8", [2], int_contents=[1, 200])], None, "element 1 (200) is out of range for INT8")
    bad([inp("INPUT0", "UINT8", [1], uint_contents=[256])], None, "out of range for UINT8")
    bad([inp("INPUT0", "INT32", [1], int_contents=[1])], [struct.pack("<i", 1)],
        "contents must not be set when the request uses raw_input_contents")
    bad([inp("INPUT0", "INT32", [1]), inp("INPUT1", "INT32", [1])], [struct.pack("<i", 1)],
        "raw_input_contents has 1 entries")
    bad([inp("INPUT0", "INT32", [1])], None, "input 'INPUT0' has no data")
    bad([inp("INPUT0", "INT32", [3])], [struct.pack("<2i", 1, 2)], "8 bytes of raw contents do not hold 3 INT32")
    bad([inp("INPUT0", "BYTES", [2])], [bytes_raw([b"a"])], "do not hold 2 BYTES elements")
    bad([inp("INPUT0", "NOPE", [1])], [b"\0"], "datatype must be one of")
    bad([inp("INPUT0", "INT32", [-1], int_contents=[1])], None, "shape must be an array", "non-negative")
    bad([inp("INPUT0", "INT32", [2**62, 4], int_contents=[1])], None, "shape is too large")
    bad([inp("", "INT32", [1], int_contents=[1])], None, "inputs[0].name must be a non-empty string")
    bad([inp("INPUT0", "INT32", [1], int_contents=[1]), inp("INPUT0", "INT32", [1], int_contents=[2])], None,
        "input 'INPUT0' appears twice")
    bad([], None, "'inputs' must be a non-empty array")
    r = request("echoc", [inp("INPUT0", "INT32", [1])], raw=[bytes(4)])
    r.inputs[0].parameters["binary_data_size"].int64_param = 4
    fails(g.ModelInfer, r, SC.INVALID_ARGUMENT, "binary_data_size is HTTP's")


# ---------------------------------------------------------------- ModelInfer: the request


def test_requested_outputs_and_ids(g):
    inputs = [inp("INPUT0", "INT32", [1], int_contents=[1]), inp("INPUT1", "INT32", [1], int_contents=[2])]
    r = g.ModelInfer(request("echoc", inputs, outputs=["OUTPUT1"], id="only-one"), timeout=30)
    assert r.id == "only-one" and outputs(r) == {"OUTPUT1": ("INT32", [1], struct.pack("<i", 2))}
    r = g.ModelInfer(request("echoc", inputs), timeout=30)
    assert r.id == "" and set(outputs(r)) == {"OUTPUT0", "OUTPUT1"}
    fails(g.ModelInfer, request("echoc", inputs, outputs=["NOPE"]), SC.INVALID_ARGUMENT,
          "model 'echoc' has no output 'NOPE'")


def test_classification(g):
    o = pb.ModelInferRequest.InferRequestedOutputTensor(name="OUTPUT0", parameters=param(classification=2))
    r = g.ModelInfer(request("labels", [inp("INPUT0", "FP32", [3], fp32_contents=[0.1, 0.7, 0.2])], outputs=[o]),
                     timeout=60)
    dt, shape, raw = outputs(r)["OUTPUT0"]
    assert (dt, shape) == ("BYTES", [2])
    assert bytes_items(raw) == [b"0.700000:1:dog", b"0.200000:2:fish"]
    # a batching model's: per row
    r = g.ModelInfer(request("batch", [inp("INPUT0", "FP32", [2, 3], fp32_contents=[0.1, 0.7, 0.2, 5, 4, 3])],
                             outputs=[o]), timeout=60)
    dt, shape, raw = outputs(r)["OUTPUT0"]
    assert (dt, shape) == ("BYTES", [2, 2])
    assert bytes_items(raw) == [b"0.700000:1", b"0.200000:2", b"5.000000:0", b"4.000000:1"]
    o.parameters["classification"].int64_param = 0
    fails(g.ModelInfer, request("labels", [inp("INPUT0", "FP32", [1], fp32_contents=[1])], outputs=[o]),
          SC.INVALID_ARGUMENT, "output 'OUTPUT0': parameters.classification must be a positive integer")


def test_request_parameters(g):
    x = [inp("X", "INT32", [1], int_contents=[0])]
    fails(g.ModelInfer, request("ctl", x, priority=99), SC.INVALID_ARGUMENT, "parameters.priority 99 is out of range")
    fails(g.ModelInfer, request("ctl", x, priority=-1), SC.INVALID_ARGUMENT, "parameters.priority")
    fails(g.ModelInfer, request("ctl", x, sequence_id=5), SC.INVALID_ARGUMENT,
          "inference request for sequence 5 to model 'ctl' must specify the START flag")
    assert bytes_items(outputs(g.ModelInfer(request("ctl", x, priority=0, sequence_id=0), timeout=60))["TAG"][2]) \
        == [b"file"]
    # parameters reach the model: its BadRequest is INVALID_ARGUMENT, its exception INTERNAL, with their text
    fails(g.ModelInfer, request("ctl", x, bad="no good, said the model"), SC.INVALID_ARGUMENT,
          "no good, said the model")
    fails(g.ModelInfer, request("ctl", x, **{"raise": "boom from the worker"}), SC.INTERNAL, "boom from the worker")
    # the model still serves
    assert bytes_items(outputs(g.ModelInfer(request("ctl", x, say="hi"), timeout=30))["TAG"][2]) == [b"file"]


def test_unknown_and_bad_models(d, g):
    x = [inp("INPUT0", "INT32", [1], int_contents=[0])]
    fails(g.ModelInfer, request("nosuch", x), SC.NOT_FOUND, "unknown model 'nosuch'")
    fails(g.ModelInfer, request("no such", x), SC.INVALID_ARGUMENT, "invalid model name")
    r = request("echoc", x)
    r.model_version = "2"
    fails(g.ModelInfer, r, SC.NOT_FOUND, "no version '2'")
    # a model that cannot serve: UNAVAILABLE, saying why
    fails(g.ModelInfer, request("broken", x), SC.UNAVAILABLE, "model 'broken' is unavailable", "key 'instances'")
    assert load(d, "fails").status_code == 503
    fails(g.ModelInfer, request("fails", x), SC.UNAVAILABLE, "model 'fails' failed", "bad weights")


def test_declared_inputs_are_checked_before_the_worker(d, g):
    def one(dt, shape, raw):
        return request("decl", [inp("INPUT0", dt, shape)], raw=[raw])

    fails(g.ModelInfer, one("INT32", [1, 2], struct.pack("<2i", 1, 2)), SC.INVALID_ARGUMENT,
          "model 'decl': input 'INPUT0': expected datatype FP32, got INT32")
    fails(g.ModelInfer, one("FP32", [3], struct.pack("<3f", 1, 2, 3)), SC.INVALID_ARGUMENT,
          "input 'INPUT0': expected shape [-1, 2], got [3]")
    fails(g.ModelInfer, one("FP32", [1, 3], struct.pack("<3f", 1, 2, 3)), SC.INVALID_ARGUMENT, "got [1, 3]")
    assert d.model("decl")["state"] == "unloaded"  # refused by the daemon: nothing was loaded for them
    raw = struct.pack("<4f", 1, 2, 3, 4)
    assert outputs(g.ModelInfer(one("FP32", [2, 2], raw), timeout=60)) == {"OUTPUT0": ("FP32", [2, 2], raw)}


def test_a_batching_model_gives_concurrent_requests_their_own_rows(d, g):
    def call(i):
        raw = struct.pack("<3i", i, -i, i * 1000)
        r = g.ModelInfer(request("batch", [inp("INPUT0", "INT32", [1, 3])], raw=[raw], id=f"b{i}"), timeout=60)
        return i, r.id, outputs(r)["OUTPUT0"], raw

    def stats():
        s = g.ModelStatistics(pb.ModelStatisticsRequest(name="batch"), timeout=30).model_stats[0]
        return s.inference_count, s.execution_count

    g.ModelInfer(request("batch", [inp("INPUT0", "INT32", [1, 3])], raw=[bytes(12)]), timeout=60)  # loaded
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        # one slow request holds the instance, so that the others queue up and go in batches
        n = len(d.model("batch")["instances"])
        slow = [pool.submit(g.ModelInfer, request("batch", [inp("INPUT0", "INT32", [1, 3])], raw=[bytes(12)],
                                                   delay_ms=300), timeout=60) for _ in range(n)]
        wait_for(lambda: all(i["inflight"] for i in d.model("batch")["instances"]), timeout=10,
                 what="the slow requests to run")
        rows0, runs0 = stats()
        for i, rid, got, raw in pool.map(call, range(48)):
            assert rid == f"b{i}" and got == ("INT32", [1, 3], raw), i
        for f in slow:
            f.result()
    rows, runs = stats()
    assert rows - rows0 == 48 + n and runs - runs0 < 48 + n, (rows - rows0, runs - runs0)  # batches formed


def test_http_and_grpc_count_in_the_same_metrics(d, g):
    key = 'model="echo",version="1"'
    before = metric(d, "nv_inference_request_success", key)
    assert d.infer("echo", [tensor("INPUT0", "INT32", [1], [3])]).status_code == 200
    for _ in range(2):
        g.ModelInfer(request("echo", [inp("INPUT0", "INT32", [1], int_contents=[3])]), timeout=60)
    assert metric(d, "nv_inference_request_success", key) == before + 3
    # failures by the model, by either protocol, in one counter
    x = [inp("X", "INT32", [1], int_contents=[0])]
    fkey = 'model="ctl",version="1",reason="BACKEND"'
    failed = metric(d, "nv_inference_request_failure", fkey)
    with pytest.raises(grpc.RpcError):
        g.ModelInfer(request("ctl", x, **{"raise": "counted"}), timeout=60)
    assert d.infer("ctl", [tensor("X", "INT32", [1], [0])], parameters={"raise": "counted"}).status_code == 500
    assert metric(d, "nv_inference_request_failure", fkey) == failed + 2


def test_client_shared_memory_mixed_with_raw_contents(corral):
    """Regions registered over HTTP serve gRPC requests: inputs read from one, outputs written into one."""
    from multiprocessing import shared_memory

    corral.add("echoc", "echo-c")
    d = corral.start("--allow-client-shm")
    shm = shared_memory.SharedMemory(create=True, size=64)
    g, channel = grpc_stubs.stub(d.grpc_port)
    try:
        assert d.post("/v2/systemsharedmemory/region/r/register",
                      {"key": "/" + shm.name, "offset": 0, "byte_size": 64}).status_code == 200
        data = struct.pack("<4i", 1, -2, 3, 2**31 - 1)
        shm.buf[8:24] = data
        in_shm = pb.ModelInferRequest.InferInputTensor(
            name="INPUT0", datatype="INT32", shape=[4],
            parameters=param(shared_memory_region="r", shared_memory_byte_size=16, shared_memory_offset=8))
        out_shm = pb.ModelInferRequest.InferRequestedOutputTensor(
            name="OUTPUT0", parameters=param(shared_memory_region="r", shared_memory_byte_size=16,
                                             shared_memory_offset=32))
        req = request("echoc", [in_shm, inp("INPUT1", "INT64", [1])], raw=[struct.pack("<q", 9)],
                      outputs=[out_shm, "OUTPUT1"])
        r = g.ModelInfer(req, timeout=30)
        by_name = {o.name: (o, r.raw_output_contents[i]) for i, o in enumerate(r.outputs)}
        o0, raw0 = by_name["OUTPUT0"]
        assert raw0 == b"" and (o0.datatype, list(o0.shape)) == ("INT32", [4])
        assert dict(o0.parameters) == param(shared_memory_region="r", shared_memory_byte_size=16,
                                            shared_memory_offset=32)
        assert bytes(shm.buf[32:48]) == data
        assert by_name["OUTPUT1"][1] == struct.pack("<q", 9)
        # an output region too small for the answer
        out_small = pb.ModelInferRequest.InferRequestedOutputTensor(
            name="OUTPUT0", parameters=param(shared_memory_region="r", shared_memory_byte_size=8))
        fails(g.ModelInfer, request("echoc", [in_shm], outputs=[out_small]), SC.INVALID_ARGUMENT, "OUTPUT0")
        fails(g.ModelInfer, request("echoc", [pb.ModelInferRequest.InferInputTensor(
            name="INPUT0", datatype="INT32", shape=[4],
            parameters=param(shared_memory_region="nope", shared_memory_byte_size=16))]),
              SC.INVALID_ARGUMENT, "no shared memory region 'nope' is registered")
    finally:
        channel.close()
        d.post("/v2/systemsharedmemory/unregister", {})
        shm.close()
        shm.unlink()


# ---------------------------------------------------------------- ModelStreamInfer


def final(resp) -> bool:
    p = resp.infer_response.parameters.get("triton_final_response")
    assert p is not None and p.WhichOneof("parameter_choice") == "bool_param", resp
    return p.bool_param


def test_a_stream_answers_each_request_with_its_id(g):
    reqs = [request("echoc", [inp("INPUT0", "INT64", [1], int64_contents=[i])], id=f"s{i}") for i in range(8)]
    got = {}
    for resp in g.ModelStreamInfer(iter(reqs), timeout=60):
        assert resp.error_message == "", resp.error_message
        r = resp.infer_response
        assert final(resp) is True and r.model_name == "echoc"
        got[r.id] = outputs(r)["OUTPUT0"]
    assert got == {f"s{i}": ("INT64", [1], struct.pack("<q", i)) for i in range(8)}


def test_a_failed_request_is_answered_on_the_stream_which_goes_on(g):
    x = [inp("INPUT0", "INT32", [1], int_contents=[7])]
    reqs = [request("echoc", x, id="ok1"), request("nosuch", x, id="unknown"),
            request("echoc", [inp("INPUT0", "INT32", [1])], id="nodata"),
            request("ctl", [inp("X", "INT32", [1], int_contents=[0])], id="badreq", bad="the model says no"),
            request("echoc", x, id="ok2")]
    got = {}
    for resp in g.ModelStreamInfer(iter(reqs), timeout=60):
        got[resp.infer_response.id] = resp
    assert set(got) == {"ok1", "unknown", "nodata", "badreq", "ok2"}
    for ok in ("ok1", "ok2"):
        assert got[ok].error_message == "" and outputs(got[ok].infer_response)["OUTPUT0"][2] == struct.pack("<i", 7)
    assert "unknown model 'nosuch'" in got["unknown"].error_message
    assert "has no data" in got["nodata"].error_message
    assert "the model says no" in got["badreq"].error_message


def tokens_request(text, id="", **params):
    return request("tokens", [inp("text", "BYTES", [1], bytes_contents=[text.encode()])], id=id, **params)


def token_of(resp):
    got = outputs(resp.infer_response)
    assert got["index"][:2] == ("INT64", [1]) and got["token"][:2] == ("BYTES", [1]), got
    return struct.unpack("<q", got["index"][2])[0], bytes_items(got["token"][2])[0].decode()


def test_a_decoupled_model_streams_one_response_per_token(g):
    resps = list(g.ModelStreamInfer(iter([tokens_request("one two three", id="t1", delay=0.0)]), timeout=60))
    assert all(r.error_message == "" and r.infer_response.id == "t1" for r in resps), resps
    assert [token_of(r) for r in resps] == [(0, "one"), (1, "two"), (2, "three")]
    assert [final(r) for r in resps] == [False] * 3

    resps = list(g.ModelStreamInfer(iter([tokens_request("a b", id="t2", delay=0.01,
                                                         triton_enable_empty_final_response=True)]), timeout=60))
    assert [token_of(r) for r in resps[:-1]] == [(0, "a"), (1, "b")]
    assert [final(r) for r in resps] == [False, False, True]
    last = resps[-1].infer_response
    assert last.id == "t2" and len(last.outputs) == 0 and len(last.raw_output_contents) == 0

    # two on one stream: each its own tokens, in order, under its own id
    by_id = {}
    for r in g.ModelStreamInfer(iter([tokens_request("w x y", id="u1", delay=0.02),
                                      tokens_request("p q", id="u2", delay=0.02)]), timeout=60):
        assert r.error_message == "", r.error_message
        by_id.setdefault(r.infer_response.id, []).append(token_of(r))
    assert by_id == {"u1": [(0, "w"), (1, "x"), (2, "y")], "u2": [(0, "p"), (1, "q")]}

    # outputs asked for: only those come back in each response, as Triton filters a decoupled model's answers
    req = tokens_request("c d", id="t4", delay=0.0)
    req.outputs.append(pb.ModelInferRequest.InferRequestedOutputTensor(name="token"))
    resps = list(g.ModelStreamInfer(iter([req]), timeout=60))
    assert [[o.name for o in r.infer_response.outputs] for r in resps] == [["token"], ["token"]]
    assert [bytes_items(r.infer_response.raw_output_contents[0])[0] for r in resps] == [b"c", b"d"]

    # the model's BadRequest, on the stream
    (resp,) = list(g.ModelStreamInfer(iter([tokens_request("   ", id="t3")]), timeout=60))
    assert "'text' is empty" in resp.error_message and resp.infer_response.id == "t3"


def test_decoupled_and_ordinary_requests_share_a_stream(g):
    x = [inp("INPUT0", "INT32", [1], int_contents=[1])]
    reqs = [request("echoc", x, id="e1", triton_enable_empty_final_response=True),  # one answer all the same
            tokens_request("a b", id="t", delay=0.05, triton_enable_empty_final_response=True),
            request("echoc", x, id="e2")]
    by_id = {}
    for r in g.ModelStreamInfer(iter(reqs), timeout=60):
        assert r.error_message == "", r.error_message
        by_id.setdefault(r.infer_response.id, []).append((sorted(o.name for o in r.infer_response.outputs), final(r)))
    assert by_id == {"e1": [(["OUTPUT0"], True)], "e2": [(["OUTPUT0"], True)],
                     "t": [(["index", "token"], False), (["index", "token"], False), ([], True)]}
    fails(g.ModelInfer, request("echoc", x, triton_enable_empty_final_response=1), SC.INVALID_ARGUMENT,
          "parameter triton_enable_empty_final_response must be a boolean")


def test_a_decoupled_request_becomes_the_json_object_its_generate_takes(g):
    # examples/models/echo's generate answers {"echo": body} at once: one response, the final one
    req = request("gen", [inp("text", "BYTES", [1], bytes_contents=["é".encode()]),
                          inp("v", "FP32", [2], fp32_contents=[1, 2.5]), inp("n", "INT64", [1], int64_contents=[7]),
                          inp("ok", "BOOL", [1], bool_contents=[True])], id="j", k="v", level=3)
    (resp,) = list(g.ModelStreamInfer(iter([req]), timeout=60))
    assert resp.error_message == "" and resp.infer_response.id == "j" and final(resp) is True
    dt, shape, raw = outputs(resp.infer_response)["echo"]
    assert (dt, shape) == ("BYTES", [1])
    assert json.loads(bytes_items(raw)[0]) == {"text": "é", "v": [1.0, 2.5], "n": 7, "ok": True, "k": "v", "level": 3}

    def error(req):
        (resp,) = list(g.ModelStreamInfer(iter([req]), timeout=60))
        assert resp.infer_response.id == req.id, resp
        return resp.error_message

    assert "input 'text': element 0 is not UTF-8 text" in error(
        request("tokens", [inp("text", "BYTES", [1], bytes_contents=[b"\xff a"])], id="u"))
    assert "input 'f': element 0 is not a finite number" in error(request("tokens", [
        inp("text", "BYTES", [1], bytes_contents=[b"a"]), inp("f", "FP32", [1], fp32_contents=[float("nan")])], id="n"))
    assert "parameter 'text' has the name of an input" in error(
        request("tokens", [inp("text", "BYTES", [1], bytes_contents=[b"a"])], id="p", text="x"))


def test_a_decoupled_stream_of_bytes_gives_each_chunk_as_content_with_its_type(g):
    # echo-c's generate sends each string of "chunks" as a chunk of text
    req = request("genc", [inp("chunks", "BYTES", [3], bytes_contents=[b"ab", b"", "cé".encode()])], id="c")
    resps = list(g.ModelStreamInfer(iter([req]), timeout=60))
    assert all(r.error_message == "" and r.infer_response.id == "c" and final(r) is False for r in resps), resps
    got = []
    for r in resps:
        (o,) = r.infer_response.outputs
        assert (o.name, o.datatype, list(o.shape)) == ("content", "BYTES", [1])
        # every chunk says the stream's type, though the worker names it on the first only
        assert dict(o.parameters) == param(content_type="text/plain; charset=utf-8"), o
        got += bytes_items(r.infer_response.raw_output_contents[0])
    assert b"".join(got) == "abcé".encode()


def test_a_decoupled_model_refuses_unary_infer(d, g):
    fails(g.ModelInfer, tokens_request("a b"), SC.INVALID_ARGUMENT, "decoupled", "ModelStreamInfer")
    r = d.infer("tokens", [tensor("text", "BYTES", [1], ["a b"])])
    assert r.status_code == 400 and "decoupled" in r.json()["error"], r.text


# ---------------------------------------------------------------- the token


def rpc_code(fn, req, **kw):
    try:
        fn(req, timeout=30, **kw)
        return SC.OK
    except grpc.RpcError as e:
        return e.code()


def bearer(token=TOKEN):
    return [("authorization", f"Bearer {token}")]


@pytest.mark.parametrize("how", ["file", "env"])
def test_the_token_guards_everything_but_health(corral, tmp_path, how):
    corral.add("echoc", "echo-c")
    if how == "file":
        path = tmp_path / "token"
        path.write_text(TOKEN + "\n")
        d = corral.start("--auth-token-file", str(path))
    else:
        d = corral.start(env={"CORRAL_TOKEN": TOKEN})
    g, channel = grpc_stubs.stub(d.grpc_port)
    try:
        assert g.ServerLive(pb.ServerLiveRequest(), timeout=30).live
        assert g.ServerReady(pb.ServerReadyRequest(), timeout=30).ready
        req = request("echoc", [inp("INPUT0", "INT32", [1], int_contents=[4])])
        fails(g.ModelInfer, req, SC.UNAUTHENTICATED, "this call needs the daemon's token",
              "'authorization: Bearer <token>'")
        fails(g.ModelInfer, req, SC.UNAUTHENTICATED, "the token sent is not the daemon's token",
              metadata=bearer("wrong"))
        fails(g.ModelInfer, req, SC.UNAUTHENTICATED, "must be 'Bearer <token>'", metadata=[("authorization", TOKEN)])
        fails(g.ModelInfer, req, SC.UNAUTHENTICATED, metadata=[("authorization", f"Basic {TOKEN}")])
        # the scheme is case-insensitive, as HTTP's is
        assert g.ModelInfer(req, timeout=30, metadata=[("authorization", f"bearer {TOKEN}")]).outputs
        assert outputs(g.ModelInfer(req, timeout=30, metadata=bearer()))["OUTPUT0"][2] == struct.pack("<i", 4)
        for fn, r in ((g.ModelReady, pb.ModelReadyRequest(name="echoc")),
                      (g.ServerMetadata, pb.ServerMetadataRequest()),
                      (g.ModelMetadata, pb.ModelMetadataRequest(name="echoc")),
                      (g.RepositoryIndex, pb.RepositoryIndexRequest())):
            assert rpc_code(fn, r) == SC.UNAUTHENTICATED, fn
            assert rpc_code(fn, r, metadata=bearer()) == SC.OK, fn
        # a stream too
        with pytest.raises(grpc.RpcError) as e:
            list(g.ModelStreamInfer(iter([req]), timeout=30))
        assert e.value.code() == SC.UNAUTHENTICATED
        assert len(list(g.ModelStreamInfer(iter([req]), timeout=30, metadata=bearer()))) == 1
    finally:
        channel.close()


def test_management_mode_guards_the_repository_only(corral):
    corral.add("echoc", "echo-c")
    d = corral.start("--auth", "management", env={"CORRAL_TOKEN": TOKEN})
    g, channel = grpc_stubs.stub(d.grpc_port)
    try:
        req = request("echoc", [inp("INPUT0", "INT32", [1], int_contents=[4])])
        assert outputs(g.ModelInfer(req, timeout=30))["OUTPUT0"][2] == struct.pack("<i", 4)
        assert g.ModelMetadata(pb.ModelMetadataRequest(name="echoc"), timeout=30).name == "echoc"
        load_req = pb.RepositoryModelLoadRequest(model_name="echoc")
        fails(g.RepositoryModelLoad, load_req, SC.UNAUTHENTICATED)
        fails(g.RepositoryModelUnload, pb.RepositoryModelUnloadRequest(model_name="echoc"), SC.UNAUTHENTICATED)
        fails(g.RepositoryIndex, pb.RepositoryIndexRequest(), SC.UNAUTHENTICATED)
        fails(g.ModelConfig, pb.ModelConfigRequest(name="echoc"), SC.UNAUTHENTICATED)
        g.RepositoryModelLoad(load_req, timeout=60, metadata=bearer())
        assert d.get("/v1/models/echoc", headers={"Authorization": f"Bearer {TOKEN}"}).json()["state"] == "ready"
        assert g.ModelConfig(pb.ModelConfigRequest(name="echoc"), timeout=30, metadata=bearer()).config.name == "echoc"
    finally:
        channel.close()


# ---------------------------------------------------------------- --grpc-port


def listening_ports(pid: int) -> set[int]:
    """The TCP ports process pid listens on (from /proc: its socket inodes in LISTEN state)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        m = re.fullmatch(r"socket:\[(\d+)\]", link)
        if m:
            inodes.add(m.group(1))
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                if cols[3] == "0A" and cols[9] in inodes:
                    ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


@pytest.mark.parametrize("how", ["flag", "env"])
def test_grpc_off(corral, how):
    corral.add("echoc", "echo-c")
    d = corral.start("--grpc-port", "off") if how == "flag" else corral.start(env={"GRPC_PORT": "off"})
    assert d.get("/v2/health/live").status_code == 200
    assert "grpc://" not in d.log() and "listening on http://" in d.log()
    assert listening_ports(d.proc.pid) == {d.port}


def test_an_explicit_grpc_port(corral):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    a = corral.start("--grpc-port", str(port))
    assert a.grpc_port == port and listening_ports(a.proc.pid) == {a.port, port}
    g, channel = grpc_stubs.stub(port)
    try:
        assert g.ServerLive(pb.ServerLiveRequest(), timeout=30).live
    finally:
        channel.close()
    # a second daemon on the same port fails to start, saying why
    p = subprocess.Popen([BIN, "serve", "--models", str(corral.repo), "--port", "0", "--grpc-port", str(port)],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        text, _ = p.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        raise AssertionError("a second daemon on the same gRPC port did not exit")
    text = text.decode(errors="replace")
    assert p.returncode != 0, text
    assert f"cannot listen for gRPC on 127.0.0.1:{port}" in text, text
    assert a.get("/v2/health/live").status_code == 200  # the first one is unharmed


@pytest.mark.parametrize("value", ["70000", "abc", "-1", ""])
def test_bad_grpc_ports_exit_2(corral, value):
    p = subprocess.run([BIN, "serve", "--models", str(corral.repo), "--port", "0", "--grpc-port", value],
                       capture_output=True, stdin=subprocess.DEVNULL, timeout=20)
    err = p.stderr.decode(errors="replace")
    assert p.returncode == 2, (p.returncode, err)
    assert "--grpc-port must be a port from 0 to 65535, or off" in err, err


def test_the_flag_wins_over_the_environment_and_a_bad_environment_exits_2(corral):
    d = corral.start("--grpc-port", "0", env={"GRPC_PORT": "off"})
    g, channel = grpc_stubs.stub(d.grpc_port)
    try:
        assert g.ServerLive(pb.ServerLiveRequest(), timeout=30).live
    finally:
        channel.close()
    p = subprocess.run([BIN, "serve", "--models", str(corral.repo), "--port", "0"], capture_output=True,
                       stdin=subprocess.DEVNULL, timeout=20, env={**os.environ, "GRPC_PORT": "abc"})
    assert p.returncode == 2 and b"GRPC_PORT=abc: must be a port from 0 to 65535, or off" in p.stderr, p
    # with the flag given, the environment is not read at all: a bad GRPC_PORT is no reason to stop
    d = corral.start("--grpc-port", "0", env={"GRPC_PORT": "abc"})
    g, channel = grpc_stubs.stub(d.grpc_port)
    try:
        assert g.ServerLive(pb.ServerLiveRequest(), timeout=30).live
    finally:
        channel.close()


def test_help_mentions_the_flag():
    p = subprocess.run([BIN, "serve", "--help"], capture_output=True, stdin=subprocess.DEVNULL, timeout=20)
    assert p.returncode == 0, p
    text = (p.stdout + p.stderr).decode()
    assert "--grpc-port" in text and "8767" in text, text
