"""The Open Inference Protocol (KServe v2) as corral serves it, over real HTTP.

Health and metadata, inference with JSON tensors of every datatype through
the Python SDK (with and without numpy) and the C SDK, the binary tensor
extension in both directions, every error status the contract names, the
repository extension, and many concurrent requests. The fixture model
tests/models/api_probe lets a request choose to raise, reject, exit, sleep
or print.
"""
from __future__ import annotations

import concurrent.futures
import json
import math
import os
import re
import signal
import struct
import sys
import threading

import pytest
import requests

from conftest import alive, tensor, wait_for

# The three echo workers: Python SDK without numpy, Python SDK with numpy, C SDK.
ECHO_VARIANTS = ["echo-py", "echo-numpy", "echo-c"]


def add_echo(corral, name: str, instances: int = 1, extra: str = "") -> None:
    """Adds one echo variant under its own name, with a manifest that says which worker it is."""
    if name == "echo-c":
        corral.add(name, "echo-c", manifest=f"runtime: exec\nentrypoint: echo-c\ninstances: {instances}\n{extra}")
    elif name == "echo-numpy":
        # The interpreter running the tests is Debian's, which has numpy (see the Makefile).
        corral.add(name, "echo", manifest=f"runtime: python\nentrypoint: worker.py\npython: {sys.executable}\n"
                                          f"instances: {instances}\n{extra}")
    else:
        corral.add(name, "echo", manifest="runtime: python\nentrypoint: worker.py\nenv:\n  CORRAL_NO_NUMPY: '1'\n"
                                          f"instances: {instances}\n{extra}")


def add_probe(corral, name: str = "probe", extra: str = "", parameters: dict | None = None) -> None:
    manifest = "runtime: python\nentrypoint: worker.py\ninstances: 1\n" + extra
    if parameters:
        manifest += "parameters:\n" + "".join(f"  {k}: {json.dumps(v)}\n" for k, v in parameters.items())
    corral.add(name, "api_probe", manifest=manifest)


def assert_error(r: requests.Response, status: int, *needles: str) -> str:
    """Checks an error response: the status, a JSON {"error": message} body, and words in the message."""
    assert r.status_code == status, f"expected {status}, got {r.status_code}: {r.text}"
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers
    body = r.json()
    assert set(body) == {"error"}, body
    msg = body["error"]
    assert isinstance(msg, str) and msg, body
    assert "\n" not in msg, msg
    for needle in needles:
        assert needle in msg, f"{needle!r} not in error message {msg!r}"
    return msg


def _no_constants(name):
    raise ValueError(f"{name} is not JSON")


def strict_json(r: requests.Response):
    """The body parsed as strict JSON (RFC 8259): NaN and Infinity are not JSON."""
    return json.loads(r.content, parse_constant=_no_constants)


def flatten(value):
    if isinstance(value, list):
        return [x for v in value for x in flatten(v)]
    return [value]


# ---- raw encodings of the v2 binary tensor extension ----

STRUCT_CODES = {"BOOL": "?", "UINT8": "B", "UINT16": "H", "UINT32": "I", "UINT64": "Q", "INT8": "b", "INT16": "h",
                "INT32": "i", "INT64": "q", "FP16": "e", "FP32": "f", "FP64": "d"}


def encode_raw(datatype: str, flat: list) -> bytes:
    if datatype == "BYTES":
        out = b""
        for item in flat:
            b = item.encode() if isinstance(item, str) else item
            out += struct.pack("<I", len(b)) + b
        return out
    if datatype == "BF16":
        return b"".join(struct.pack("<f", x)[2:] for x in flat)
    return struct.pack("<" + STRUCT_CODES[datatype] * len(flat), *flat)


def decode_raw(datatype: str, raw: bytes) -> list:
    if datatype == "BYTES":
        out, off = [], 0
        while off < len(raw):
            (n,) = struct.unpack_from("<I", raw, off)
            out.append(raw[off + 4:off + 4 + n])
            off += 4 + n
        return out
    if datatype == "BF16":
        return [struct.unpack("<f", b"\0\0" + raw[i:i + 2])[0] for i in range(0, len(raw), 2)]
    code = STRUCT_CODES[datatype]
    return list(struct.unpack("<" + code * (len(raw) // struct.calcsize(code)), raw))


def binary_infer(d, model: str, header: dict, blobs: list[bytes], hcl: int | str | None = None, **kw):
    """POSTs a binary-extension request: the JSON header, then blobs back to back."""
    head = json.dumps(header).encode()
    length = len(head) if hcl is None else hcl
    return d.post(f"/v2/models/{model}/infer", data=head + b"".join(blobs),
                  headers={"Inference-Header-Content-Length": str(length),
                           "Content-Type": "application/octet-stream"}, **kw)


def parse_binary_response(r: requests.Response) -> tuple[dict, dict[str, bytes]]:
    """Splits a binary-extension response into its JSON header and each binary output's bytes."""
    assert r.status_code == 200, r.text
    assert "Inference-Header-Content-Length" in r.headers, r.headers
    n = int(r.headers["Inference-Header-Content-Length"])
    assert 0 < n <= len(r.content)
    header = json.loads(r.content[:n])
    blobs, off = {}, n
    for out in header["outputs"]:
        size = out.get("parameters", {}).get("binary_data_size")
        if size is not None:
            assert "data" not in out, out
            blobs[out["name"]] = r.content[off:off + size]
            off += size
    assert off == len(r.content), f"{len(r.content) - off} bytes after the last binary output"
    return header, blobs


# ---- every datatype: (datatype, shape, nested data, approximate?) ----

DATATYPE_CASES = [
    ("BOOL", [2, 2], [[True, False], [False, True]], False),
    ("UINT8", [3], [0, 127, 255], False),
    ("UINT16", [3], [0, 1000, 65535], False),
    ("UINT32", [2], [0, 4294967295], False),
    ("UINT64", [3], [0, 9007199254740993, 9223372036854775807], False),
    ("INT8", [2, 3], [[-128, -1, 0], [1, 2, 127]], False),
    ("INT16", [2], [-32768, 32767], False),
    ("INT32", [2], [-2147483648, 2147483647], False),
    ("INT64", [3], [-9223372036854775808, 9223372036854775807, -9007199254740993], False),
    ("FP16", [2, 2], [[1.5, -2.25], [65504.0, 0.0009765625]], True),
    ("FP32", [1, 3], [[0.1, -3.5, 3.4028234663852886e+38]], True),
    ("FP64", [3], [0.1, -1e300, 5e-324], False),
    ("BF16", [2, 1], [[1.0], [-3.140625]], True),
    ("BYTES", [2, 2], [["héllo", "wörld"], ["日本語 🦙", ""]], False),
]


def check_output(out: dict, name: str, datatype: str, shape: list, nested, approx: bool) -> None:
    assert out["name"] == name, out
    assert out["datatype"] == datatype, out
    assert out["shape"] == shape, out
    got, want = flatten(out["data"]), flatten(nested)
    assert len(got) == len(want), (name, got, want)
    if approx:
        tol = {"FP16": 1e-3, "BF16": 1e-2, "FP32": 1e-6}[datatype]
        for g, w in zip(got, want):
            assert math.isclose(g, w, rel_tol=tol), (datatype, got, want)
    else:
        assert got == want, (datatype, got, want)
        if datatype == "BOOL":
            assert all(isinstance(v, bool) for v in got), got


# ---- health and metadata ----

def test_server_metadata_and_health(corral):
    corral.add("echo", "echo")
    d = corral.start()
    r = d.get("/v2")
    assert r.status_code == 200, r.text
    meta = r.json()
    assert meta["name"] == "corral"
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", meta["version"]), meta
    # Exactly what is implemented: a new extension must be listed here, one dropped must not stay listed.
    assert sorted(meta["extensions"]) == sorted([
        "binary_tensor_data", "model_repository", "generate", "statistics", "logging", "model_configuration",
        "classification", "system_shared_memory", "schedule_policy", "sequence", "sequence(string_id)"]), meta
    r = d.get("/v2/health/live")
    assert r.status_code == 200 and r.json() == {"live": True}, r.text
    r = d.get("/v2/health/ready")
    assert r.status_code == 200 and r.json() == {"ready": True}, r.text


def test_model_metadata_and_versions(corral):
    corral.add("echo", "echo")
    add_echo(corral, "echo-c")
    d = corral.start()
    for name, platform in [("echo", "corral_python"), ("echo-c", "corral_exec")]:
        for path in (f"/v2/models/{name}", f"/v2/models/{name}/versions/1"):
            r = d.get(path)
            assert r.status_code == 200, r.text
            meta = r.json()
            assert meta["name"] == name
            assert meta["versions"] == ["1"]
            assert meta["platform"] == platform
            assert meta["inputs"] == [] and meta["outputs"] == [], meta  # echo declares no metadata
        assert_error(d.get(f"/v2/models/{name}/versions/2"), 404, name, "2")
        assert_error(d.get(f"/v2/models/{name}/versions/2/ready"), 404, name)
        body = {"inputs": [tensor("INPUT0", "INT8", [1], [4])]}
        r = d.post(f"/v2/models/{name}/versions/1/infer", body)
        assert r.status_code == 200, r.text
        assert r.json()["model_version"] == "1" and r.json()["outputs"][0]["data"] == [4]
        assert_error(d.post(f"/v2/models/{name}/versions/2/infer", body), 404, name, "2")


def test_model_metadata_declared_in_manifest(corral):
    corral.add("typed", "echo", manifest=(
        "runtime: python\nentrypoint: worker.py\n"
        "inputs:\n  - {name: INPUT0, datatype: FP32, shape: [-1, 3]}\n"
        "outputs:\n  - {name: OUTPUT0, datatype: FP32, shape: [-1, 3]}\n"))
    d = corral.start()
    meta = d.get("/v2/models/typed").json()
    assert meta["inputs"] == [{"name": "INPUT0", "datatype": "FP32", "shape": [-1, 3]}], meta
    assert meta["outputs"] == [{"name": "OUTPUT0", "datatype": "FP32", "shape": [-1, 3]}], meta


def test_model_metadata_from_the_worker(corral):
    worker = (
        "import corral\n"
        "class Typed(corral.Model):\n"
        "    inputs = [{'name': 'TEXT', 'datatype': 'BYTES', 'shape': [1]}]\n"
        "    outputs = [{'name': 'SCORE', 'datatype': 'FP32', 'shape': [-1]}]\n"
        "    def infer(self, request):\n"
        "        return {'SCORE': [0.5]}\n"
        "if __name__ == '__main__':\n"
        "    corral.run(Typed)\n")
    corral.add("typed", None, manifest="runtime: python\nentrypoint: worker.py\n", files={"worker.py": worker})
    d = corral.start()
    assert d.post("/v2/repository/models/typed/load").status_code == 200
    meta = d.get("/v2/models/typed").json()
    assert meta["inputs"] == [{"name": "TEXT", "datatype": "BYTES", "shape": [1]}], meta
    assert meta["outputs"] == [{"name": "SCORE", "datatype": "FP32", "shape": [-1]}], meta


def test_model_ready_before_and_after_load(corral):
    """A lazy model is ready before its first load (it loads on demand), and stays so after an unload;
    /v1 tells unloaded from ready (more in test_triton_meta.py)."""
    corral.add("echo", "echo")
    d = corral.start()
    r = d.get("/v2/models/echo/ready")
    assert r.status_code == 200 and r.json() == {"name": "echo", "ready": True}, r.text
    assert d.model("echo")["state"] == "unloaded"
    r = d.post("/v2/repository/models/echo/load")
    assert r.status_code == 200, r.text
    r = d.get("/v2/models/echo/ready")
    assert r.status_code == 200, r.text
    assert r.json()["ready"] is True and r.json()["name"] == "echo"
    r = d.get("/v2/models/echo/versions/1/ready")
    assert r.status_code == 200 and r.json()["ready"] is True, r.text
    assert d.model("echo")["state"] == "ready"
    r = d.post("/v2/repository/models/echo/unload")
    assert r.status_code == 200, r.text
    assert d.get("/v2/models/echo/ready").status_code == 200
    assert d.model("echo")["state"] == "unloaded"
    assert_error(d.get("/v2/models/echo/versions/2/ready"), 404, "echo", "version")


# ---- inference: JSON tensors ----

@pytest.mark.parametrize("variant", ECHO_VARIANTS)
def test_every_datatype_roundtrips_as_json(corral, variant):
    add_echo(corral, variant)
    d = corral.start()
    inputs = [tensor(f"INPUT{i}", dt, shape, data) for i, (dt, shape, data, _) in enumerate(DATATYPE_CASES)]
    r = d.infer(variant, inputs, id="all-types")
    assert r.status_code == 200, r.text
    body = strict_json(r)
    assert body["model_name"] == variant
    assert body["model_version"] == "1"
    assert body["id"] == "all-types"
    assert len(body["outputs"]) == len(DATATYPE_CASES), body
    by_name = {o["name"]: o for o in body["outputs"]}
    for i, (dt, shape, data, approx) in enumerate(DATATYPE_CASES):
        check_output(by_name[f"OUTPUT{i}"], f"OUTPUT{i}", dt, shape, data, approx)


@pytest.mark.parametrize("variant", ECHO_VARIANTS)
def test_flat_data_and_empty_tensors(corral, variant):
    add_echo(corral, variant)
    d = corral.start()
    # The same tensors with flat data arrays; then empty tensors of several types.
    inputs = [tensor(f"INPUT{i}", dt, shape, flatten(data)) for i, (dt, shape, data, _) in enumerate(DATATYPE_CASES)]
    r = d.infer(variant, inputs)
    assert r.status_code == 200, r.text
    body = r.json()
    assert "id" not in body, body  # no id sent, none echoed
    by_name = {o["name"]: o for o in body["outputs"]}
    for i, (dt, shape, data, approx) in enumerate(DATATYPE_CASES):
        check_output(by_name[f"OUTPUT{i}"], f"OUTPUT{i}", dt, shape, data, approx)

    empties = [tensor("INPUT0", "FP32", [0], []), tensor("INPUT1", "BYTES", [0], []),
               tensor("INPUT2", "INT64", [2, 0], []), tensor("INPUT3", "BOOL", [0, 3], [])]
    r = d.infer(variant, empties, id="")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] == ""
    assert body["outputs"] == [
        {"name": "OUTPUT0", "datatype": "FP32", "shape": [0], "data": []},
        {"name": "OUTPUT1", "datatype": "BYTES", "shape": [0], "data": []},
        {"name": "OUTPUT2", "datatype": "INT64", "shape": [2, 0], "data": []},
        {"name": "OUTPUT3", "datatype": "BOOL", "shape": [0, 3], "data": []},
    ]


@pytest.mark.parametrize("variant", ECHO_VARIANTS)
def test_uint64_above_int64_range_as_json(corral, variant):
    add_echo(corral, variant)
    d = corral.start()
    values = [0, 9223372036854775808, 18446744073709551615]
    r = d.infer(variant, [tensor("INPUT0", "UINT64", [3], values)])
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == values


def test_request_id_is_echoed_verbatim(corral):
    add_echo(corral, "echo-py")
    d = corral.start()
    for rid in ["a", "req-42", "ünï \"quoted\" \\ 🦙", "x" * 300]:
        r = d.infer("echo-py", [tensor("INPUT0", "INT32", [1], [7])], id=rid)
        assert r.status_code == 200, r.text
        assert r.json()["id"] == rid
    assert_error(d.infer("echo-py", [tensor("INPUT0", "INT32", [1], [7])], id=5), 400, "id")


@pytest.mark.parametrize("variant", ECHO_VARIANTS)
def test_outputs_filter(corral, variant):
    add_echo(corral, variant)
    d = corral.start()
    inputs = [tensor("INPUT0", "INT32", [2], [1, 2]), tensor("INPUT1", "FP64", [1], [0.5]),
              tensor("INPUT2", "BYTES", [1], ["z"])]
    r = d.infer(variant, inputs, outputs=[{"name": "OUTPUT1"}])
    assert r.status_code == 200, r.text
    assert r.json()["outputs"] == [{"name": "OUTPUT1", "datatype": "FP64", "shape": [1], "data": [0.5]}]
    r = d.infer(variant, inputs, outputs=[{"name": "OUTPUT2"}, {"name": "OUTPUT0"}])
    assert r.status_code == 200, r.text
    assert sorted(o["name"] for o in r.json()["outputs"]) == ["OUTPUT0", "OUTPUT2"]
    # An output the model does not produce is the client's error, as in Triton.
    assert_error(d.infer(variant, inputs, outputs=[{"name": "NOPE"}]), 400, variant, "NOPE")


def test_priority_orders_the_queue(corral):
    # pipeline 0: every waiting request is in the queue, where priorities order it (test_pipeline.py has
    # the one request per instance that pipelining sends ahead)
    add_probe(corral, extra="concurrency: 1\npipeline: 0\npriority_levels: 3\ndefault_priority: 2\n")
    d = corral.start()
    assert d.post("/v2/repository/models/probe/load").status_code == 200
    pool = concurrent.futures.ThreadPoolExecutor(4)
    try:
        busy = pool.submit(d.infer, "probe", [tensor("INPUT0", "INT8", [1], [0])],
                           parameters={"mode": "sleep", "seconds": 1})
        wait_for(lambda: d.model("probe")["instances"][0]["inflight"] == 1, what="the instance to be busy")
        futs = {}
        # queued in the order low, default, high: served high, default, low
        for depth, (label, prio) in enumerate([("low", 3), ("default", 0), ("high", 1)], start=1):
            futs[label] = pool.submit(d.infer, "probe", [tensor("INPUT0", "INT8", [1], [depth])],
                                      parameters={"priority": prio})
            wait_for(lambda: d.model("probe")["queue"] == depth, what=f"{depth} queued")
        assert busy.result(timeout=20).status_code == 200
        seq = {}
        for label, fut in futs.items():
            r = fut.result(timeout=20)
            assert r.status_code == 200, r.text
            seq[label] = {o["name"]: o["data"] for o in r.json()["outputs"]}["SEQ"][0]
    finally:
        pool.shutdown(wait=True)
    assert seq == {"high": 2, "default": 3, "low": 4}, seq


def test_priority_parameter(corral):
    add_echo(corral, "echo-py", extra="priority_levels: 3\n")
    d = corral.start()
    inp = [tensor("INPUT0", "INT8", [1], [1])]
    for prio in (0, 1, 2, 3):
        r = d.infer("echo-py", inp, parameters={"priority": prio})
        assert r.status_code == 200, (prio, r.text)
        assert r.json()["outputs"][0]["data"] == [1]
    for prio in (4, -1, "high", 1.5, None, True):
        assert_error(d.infer("echo-py", inp, parameters={"priority": prio}), 400, "echo-py", "priority")


# ---- inference: the binary tensor extension ----

@pytest.mark.parametrize("variant", ECHO_VARIANTS)
def test_every_datatype_roundtrips_binary(corral, variant):
    add_echo(corral, variant)
    d = corral.start()
    blobs, inputs = [], []
    for i, (dt, shape, data, _) in enumerate(DATATYPE_CASES):
        raw = encode_raw(dt, flatten(data))
        blobs.append(raw)
        inputs.append({"name": f"INPUT{i}", "datatype": dt, "shape": shape,
                       "parameters": {"binary_data_size": len(raw)}})
    r = binary_infer(d, variant, {"id": "bin", "inputs": inputs, "parameters": {"binary_data_output": True}}, blobs)
    header, out_blobs = parse_binary_response(r)
    assert r.headers["content-type"] == "application/octet-stream"
    assert header["id"] == "bin" and header["model_name"] == variant
    assert [o["name"] for o in header["outputs"]] == [f"OUTPUT{i}" for i in range(len(DATATYPE_CASES))]
    for i, (dt, shape, data, _) in enumerate(DATATYPE_CASES):
        out = header["outputs"][i]
        assert out["datatype"] == dt and out["shape"] == shape, out
        assert out["parameters"]["binary_data_size"] == len(blobs[i])
        assert out_blobs[f"OUTPUT{i}"] == blobs[i], dt  # byte-exact, FP16/BF16 included


@pytest.mark.parametrize("variant", ["echo-py", "echo-c"])
def test_binary_in_json_out_and_mixed_inputs(corral, variant):
    add_echo(corral, variant)
    d = corral.start()
    fp32 = encode_raw("FP32", [1.5, -2.0, 0.25, 8.0])
    words = encode_raw("BYTES", ["één", "", "three"])
    header = {"inputs": [
        {"name": "INPUT0", "datatype": "FP32", "shape": [2, 2], "parameters": {"binary_data_size": len(fp32)}},
        tensor("INPUT1", "INT16", [3], [-1, 0, 1]),
        {"name": "INPUT2", "datatype": "BYTES", "shape": [3], "parameters": {"binary_data_size": len(words)}},
    ]}
    r = binary_infer(d, variant, header, [fp32, words])
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert "Inference-Header-Content-Length" not in r.headers
    assert r.json()["outputs"] == [
        {"name": "OUTPUT0", "datatype": "FP32", "shape": [2, 2], "data": [1.5, -2.0, 0.25, 8.0]},
        {"name": "OUTPUT1", "datatype": "INT16", "shape": [3], "data": [-1, 0, 1]},
        {"name": "OUTPUT2", "datatype": "BYTES", "shape": [3], "data": ["één", "", "three"]},
    ]


@pytest.mark.parametrize("variant", ["echo-py", "echo-c"])
def test_json_in_per_output_binary_out(corral, variant):
    add_echo(corral, variant)
    d = corral.start()
    inputs = [tensor("INPUT0", "INT32", [2, 2], [[1, 2], [3, 4]]), tensor("INPUT1", "BYTES", [2], ["ab", "ç"]),
              tensor("INPUT2", "FP64", [1], [2.5])]
    outputs = [{"name": "OUTPUT0", "parameters": {"binary_data": True}},
               {"name": "OUTPUT1", "parameters": {"binary_data": False}},
               {"name": "OUTPUT2", "parameters": {"binary_data": True}}]
    r = d.infer(variant, inputs, outputs=outputs, id="mix")
    header, blobs = parse_binary_response(r)
    assert header["id"] == "mix"
    outs = {o["name"]: o for o in header["outputs"]}
    assert outs["OUTPUT1"] == {"name": "OUTPUT1", "datatype": "BYTES", "shape": [2], "data": ["ab", "ç"]}
    assert set(blobs) == {"OUTPUT0", "OUTPUT2"}
    assert outs["OUTPUT0"]["shape"] == [2, 2] and outs["OUTPUT0"]["parameters"]["binary_data_size"] == 16
    assert decode_raw("INT32", blobs["OUTPUT0"]) == [1, 2, 3, 4]
    assert decode_raw("FP64", blobs["OUTPUT2"]) == [2.5]
    # The header's own length is exactly what Inference-Header-Content-Length says.
    n = int(r.headers["Inference-Header-Content-Length"])
    assert r.content[n - 1:n] == b"}"


@pytest.mark.parametrize("datatype", ["FP16", "FP32", "FP64", "BF16"])
def test_non_finite_floats_are_null_in_json(corral, datatype):
    # NaN and infinities have no JSON form: docs/api.md says they are written as null
    # (so the body stays JSON that strict parsers accept), and binary outputs keep them.
    add_echo(corral, "echo-py")
    d = corral.start()
    raw = encode_raw(datatype, [float("nan"), float("inf"), float("-inf"), 1.0])
    header = {"inputs": [{"name": "INPUT0", "datatype": datatype, "shape": [4],
                          "parameters": {"binary_data_size": len(raw)}}]}
    r = binary_infer(d, "echo-py", header, [raw])
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json"), r.headers
    assert strict_json(r)["outputs"][0]["data"] == [None, None, None, 1.0]
    header["parameters"] = {"binary_data_output": True}
    _, blobs = parse_binary_response(binary_infer(d, "echo-py", header, [raw]))
    assert blobs["OUTPUT0"] == raw


def test_non_utf8_bytes_in_json_output(corral):
    add_echo(corral, "echo-c")
    d = corral.start()
    items = [b"\xff\xfe", b"ok", b"caf\xc3\xa9", b"\x00nul"]
    raw = encode_raw("BYTES", items)
    header = {"inputs": [{"name": "INPUT0", "datatype": "BYTES", "shape": [4],
                          "parameters": {"binary_data_size": len(raw)}}]}
    r = binary_infer(d, "echo-c", header, [raw])
    assert r.status_code == 200, r.text
    # docs/api.md: bytes that are not valid UTF-8 are written as \u00XX
    assert strict_json(r)["outputs"][0]["data"] == ["\u00ff\u00fe", "ok", "café", "\u0000nul"]


def test_bad_binary_sizes_are_rejected(corral):
    add_echo(corral, "echo-py")
    d = corral.start()
    fp32 = encode_raw("FP32", [1.0, 2.0])

    def inp(size, shape=(2,), dt="FP32"):
        return {"inputs": [{"name": "INPUT0", "datatype": dt, "shape": list(shape),
                            "parameters": {"binary_data_size": size}}]}

    # binary_data_size beyond the binary section
    assert_error(binary_infer(d, "echo-py", inp(16), [fp32]), 400, "echo-py", "INPUT0")
    # binary section longer than claimed
    assert_error(binary_infer(d, "echo-py", inp(8), [fp32, b"\0\0\0\0"]), 400, "echo-py")
    # size that does not match the shape
    assert_error(binary_infer(d, "echo-py", inp(8, shape=(3,)), [fp32]), 400, "echo-py", "INPUT0")
    assert_error(binary_infer(d, "echo-py", inp(7), [fp32[:7]]), 400, "echo-py", "INPUT0")
    # BYTES whose length prefix runs past its data
    assert_error(binary_infer(d, "echo-py", inp(6, shape=(1,), dt="BYTES"), [struct.pack("<I", 9) + b"ab"]),
                 400, "echo-py", "INPUT0")
    # negative and non-integer sizes
    assert_error(binary_infer(d, "echo-py", inp(-8), [fp32]), 400, "echo-py", "INPUT0")
    assert_error(binary_infer(d, "echo-py", inp("8"), [fp32]), 400, "echo-py", "INPUT0")
    # Inference-Header-Content-Length longer than the body, or not a number
    head_len = len(json.dumps(inp(8)).encode())
    assert_error(binary_infer(d, "echo-py", inp(8), [fp32], hcl=head_len + 100), 400, "echo-py")
    assert_error(binary_infer(d, "echo-py", inp(8), [fp32], hcl="ten"), 400, "echo-py")
    assert_error(binary_infer(d, "echo-py", inp(8), [fp32], hcl=-1), 400, "echo-py")
    # a header length that cuts the JSON short
    assert_error(binary_infer(d, "echo-py", inp(8), [fp32], hcl=head_len - 3), 400, "echo-py")
    # binary_data_output that is not a boolean
    assert_error(d.infer("echo-py", [tensor("INPUT0", "INT8", [1], [1])], parameters={"binary_data_output": "yes"}),
                 400, "echo-py")
    # and the daemon still answers a good one
    r = binary_infer(d, "echo-py", inp(8), [fp32])
    assert r.status_code == 200 and r.json()["outputs"][0]["data"] == [1.0, 2.0], r.text


# ---- errors: the client's ----

def test_malformed_requests_are_400_naming_the_model(corral):
    add_echo(corral, "echo-py")
    d = corral.start()
    url = "/v2/models/echo-py/infer"
    hdr = {"Content-Type": "application/json"}
    assert_error(d.post(url, data=b'{"inputs": [', headers=hdr), 400, "echo-py", "JSON")
    assert_error(d.post(url, data=b"", headers=hdr), 400, "echo-py")
    assert_error(d.post(url, data=b"[1, 2]", headers=hdr), 400, "echo-py")
    assert_error(d.post(url, data=b"\xff\xfe{}", headers=hdr), 400, "echo-py")
    assert_error(d.post(url, {"id": "x"}), 400, "echo-py", "inputs")
    assert_error(d.post(url, {"inputs": []}), 400, "echo-py", "inputs")
    assert_error(d.post(url, {"inputs": {"name": "INPUT0"}}), 400, "echo-py", "inputs")
    cases = [
        # (input, words the message must hold)
        ({"datatype": "FP32", "shape": [1], "data": [1.0]}, ["name"]),
        ({"name": "INPUT0", "datatype": "FP8", "shape": [1], "data": [1.0]}, ["INPUT0", "datatype"]),
        ({"name": "INPUT0", "datatype": "fp32", "shape": [1], "data": [1.0]}, ["INPUT0", "datatype"]),
        ({"name": "INPUT0", "shape": [1], "data": [1.0]}, ["INPUT0", "datatype"]),
        ({"name": "INPUT0", "datatype": "FP32", "data": [1.0]}, ["INPUT0", "shape"]),
        ({"name": "INPUT0", "datatype": "FP32", "shape": [-1], "data": [1.0]}, ["INPUT0", "shape"]),
        ({"name": "INPUT0", "datatype": "FP32", "shape": [1]}, ["INPUT0", "data"]),
        ({"name": "INPUT0", "datatype": "FP32", "shape": [2, 2], "data": [1, 2, 3]}, ["INPUT0"]),
        ({"name": "INPUT0", "datatype": "FP32", "shape": [2], "data": [1, 2, 3]}, ["INPUT0"]),
        ({"name": "INPUT0", "datatype": "INT32", "shape": [1], "data": [1.5]}, ["INPUT0"]),
        ({"name": "INPUT0", "datatype": "FP32", "shape": [1], "data": ["one"]}, ["INPUT0"]),
        ({"name": "INPUT0", "datatype": "BYTES", "shape": [1], "data": [3]}, ["INPUT0"]),
        ({"name": "INPUT0", "datatype": "BOOL", "shape": [1], "data": ["true"]}, ["INPUT0"]),
    ]
    for spec, words in cases:
        assert_error(d.post(url, {"inputs": [spec]}), 400, "echo-py", *words)
    dup = [tensor("INPUT0", "INT8", [1], [1]), tensor("INPUT0", "INT8", [1], [2])]
    assert_error(d.infer("echo-py", dup), 400, "echo-py", "INPUT0")
    assert_error(d.infer("echo-py", [tensor("INPUT0", "INT8", [1], [1])], parameters=[1]), 400, "echo-py",
                 "parameters")
    assert_error(d.infer("echo-py", [tensor("INPUT0", "INT8", [1], [1])], parameters={"timeout": "soon"}), 400,
                 "echo-py", "timeout")
    assert_error(d.infer("echo-py", [tensor("INPUT0", "INT8", [1], [1])], outputs={"name": "OUTPUT0"}), 400,
                 "echo-py", "outputs")
    # none of that disturbed the model
    r = d.infer("echo-py", [tensor("INPUT0", "INT8", [1], [1])])
    assert r.status_code == 200, r.text


OUT_OF_RANGE = [("INT8", -129), ("INT8", 128), ("UINT8", -1), ("UINT8", 256), ("INT16", -32769), ("INT16", 32768),
                ("UINT16", 65536), ("INT32", 2147483648), ("INT32", -2147483649), ("UINT32", -1),
                ("UINT32", 4294967296), ("UINT64", -1), ("INT64", 9223372036854775808),
                ("UINT64", 18446744073709551616), ("FP16", 1e6), ("FP32", 1e39), ("BOOL", 2)]


def test_out_of_range_values_are_400(corral):
    add_echo(corral, "echo-py")
    d = corral.start()
    for dt, value in OUT_OF_RANGE:
        r = d.infer("echo-py", [tensor("INPUT0", dt, [2], [0, value])])
        assert_error(r, 400, "echo-py", "INPUT0")
    r = d.infer("echo-py", [tensor("INPUT0", "INT8", [1], [5])])
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("path", [
    "/v2/models/bad$name", "/v2/models/bad$name/infer", "/v2/models/bad$name/ready",
    "/v2/models/" + "a" * 200, "/v2/models/" + "a" * 129 + "/infer",
    "/v2/models/%2e%2e", "/v2/models/%2e%2e/ready", "/v2/models/-dash", "/v2/models/.hidden",
    "/v2/models/a%2fb/ready", "/v2/models/sp%20ace",
    "/v1/models/bad$name", "/v1/models/%2e%2e", "/v1/models/%2e%2e/logs",
])
def test_invalid_model_names_are_400(corral, path):
    add_echo(corral, "echo-py")
    d = corral.start()
    method = d.post if path.endswith("/infer") else d.get
    kw = {"json_body": {"inputs": [tensor("INPUT0", "INT8", [1], [1])]}} if method == d.post else {}
    assert_error(method(path, **kw), 400, "invalid model name")


def test_longest_valid_name_is_accepted(corral):
    name = "a" + "b" * 127
    corral.add(name, "echo")
    d = corral.start()
    r = d.infer(name, [tensor("INPUT0", "INT8", [1], [1])])
    assert r.status_code == 200, r.text
    assert r.json()["model_name"] == name
    assert_error(d.get("/v2/models/" + name + "c"), 400, "invalid model name")


def test_unknown_model_and_endpoint_are_404(corral):
    add_echo(corral, "echo-py")
    d = corral.start()
    assert_error(d.get("/v2/models/nope"), 404, "nope")
    assert_error(d.get("/v2/models/nope/ready"), 404, "nope")
    assert_error(d.infer("nope", [tensor("INPUT0", "INT8", [1], [1])]), 404, "nope")
    assert_error(d.post("/v2/repository/models/nope/load"), 404, "nope")
    assert_error(d.post("/v2/repository/models/nope/unload"), 404, "nope")
    for path in ("/v2/nothing", "/v2/models", "/v2/models/echo-py/frobnicate", "/v2/health/dead", "/v3", "/dashboard",
                 "/v2/models/echo-py/versions/1/infer/more"):
        assert_error(d.get(path), 404)


def test_wrong_method_is_405(corral):
    add_echo(corral, "echo-py")
    d = corral.start()
    cases = [("POST", "/v2", "GET"), ("POST", "/v2/health/live", "GET"), ("DELETE", "/v2/health/ready", "GET"),
             ("POST", "/v2/models/echo-py", "GET"), ("POST", "/v2/models/echo-py/ready", "GET"),
             ("GET", "/v2/models/echo-py/infer", "POST"), ("PUT", "/v2/models/echo-py/infer", "POST"),
             ("GET", "/v2/repository/index", "POST"), ("GET", "/v2/repository/models/echo-py/load", "POST"),
             ("DELETE", "/v2/repository/models/echo-py/unload", "POST")]
    for method, path, allowed in cases:
        r = d.http.request(method, d.url(path), timeout=10)
        assert_error(r, 405, method)
        assert r.headers.get("Allow") == allowed, (method, path, r.headers)
    assert d.model("echo-py")["state"] == "unloaded"  # a refused GET .../load loaded nothing


def test_body_too_large_is_413(corral):
    add_echo(corral, "echo-py")
    d = corral.start("--max-body", "1KiB")
    small = [tensor("INPUT0", "INT32", [10], list(range(10)))]
    r = d.infer("echo-py", small)
    assert r.status_code == 200, r.text
    big = [tensor("INPUT0", "INT32", [600], list(range(600)))]
    assert len(json.dumps({"inputs": big})) > 1024
    assert_error(d.infer("echo-py", big), 413, "echo-py")
    # binary bodies too, and generate
    blob = encode_raw("UINT8", [1] * 2048)
    r = binary_infer(d, "echo-py", {"inputs": [{"name": "INPUT0", "datatype": "UINT8", "shape": [2048],
                                               "parameters": {"binary_data_size": 2048}}]}, [blob])
    assert_error(r, 413, "echo-py")
    assert_error(d.post("/v1/models/echo-py/generate", data=b"x" * 4096,
                        headers={"Content-Type": "application/octet-stream"}), 413, "echo-py")
    # the daemon and the model are fine afterwards
    r = d.infer("echo-py", small)
    assert r.status_code == 200, r.text


# ---- errors: the model's and the worker's ----

def test_model_exception_is_500_and_instance_survives(corral):
    add_probe(corral)
    d = corral.start()
    r = d.infer("probe", [tensor("INPUT0", "INT8", [1], [1])])
    assert r.status_code == 200, r.text
    pid = d.worker_pids("probe")
    assert len(pid) == 1
    r = d.infer("probe", [tensor("INPUT0", "INT8", [1], [1])], parameters={"mode": "raise", "text": "kaput 42"})
    assert_error(r, 500, "probe", "RuntimeError", "boom: kaput 42")
    r = d.infer("probe", [tensor("INPUT0", "INT8", [1], [9])])
    assert r.status_code == 200, r.text
    outs = {o["name"]: o["data"] for o in r.json()["outputs"]}
    assert outs == {"OUTPUT0": [9], "PID": pid, "SEQ": [2]}  # the raise counted as no answer
    m = d.model("probe")
    assert [i["pid"] for i in m["instances"]] == pid
    assert m["instances"][0]["restarts"] == 0
    assert m["state"] == "ready"


def test_bad_request_from_model_is_400(corral):
    add_probe(corral)
    d = corral.start()
    r = d.infer("probe", [tensor("INPUT0", "INT8", [1], [1])], parameters={"mode": "bad", "text": "too short"})
    assert_error(r, 400, "probe", "rejected: too short")
    r = d.infer("probe", [tensor("INPUT0", "INT8", [1], [1])])
    assert r.status_code == 200, r.text


def test_echo_c_bad_parameter_is_400(corral):
    add_echo(corral, "echo-c")
    d = corral.start()
    r = d.infer("echo-c", [tensor("INPUT0", "INT8", [1], [1])], parameters={"delay_ms": -5})
    assert_error(r, 400, "echo-c", "delay_ms")


def test_worker_death_is_502_and_next_request_succeeds(corral):
    add_probe(corral, extra="restart: {backoff_min: 10ms, backoff_max: 100ms}\n")
    d = corral.start()
    r = d.infer("probe", [tensor("INPUT0", "INT8", [1], [1])])
    assert r.status_code == 200, r.text
    (pid,) = d.worker_pids("probe")
    r = d.infer("probe", [tensor("INPUT0", "INT8", [1], [1])], parameters={"mode": "exit", "status": 3})
    msg = assert_error(r, 502, "probe", str(pid))
    assert re.search(r"instance 0\b", msg), msg
    assert re.search(r"\b(status|code) 3\b", msg), msg
    # The next request is served once the instance is replaced (it may wait for the restart).
    r = d.infer("probe", [tensor("INPUT0", "INT8", [1], [5])])
    assert r.status_code == 200, r.text
    outs = {o["name"]: o["data"] for o in r.json()["outputs"]}
    assert outs["OUTPUT0"] == [5]
    assert outs["PID"] != [pid]
    m = d.wait_state("probe", "ready")
    assert m["instances"][0]["restarts"] == 1, m
    assert m["instances"][0]["pid"] == outs["PID"][0]


def test_worker_killed_by_signal_is_502_naming_the_signal(corral):
    add_probe(corral, extra="restart: {backoff_min: 10ms, backoff_max: 100ms}\n")
    d = corral.start()
    r = d.post("/v2/repository/models/probe/load")
    assert r.status_code == 200, r.text
    (pid,) = d.worker_pids("probe")
    pool = concurrent.futures.ThreadPoolExecutor(1)
    try:
        fut = pool.submit(d.infer, "probe", [tensor("INPUT0", "INT8", [1], [1])],
                          parameters={"mode": "sleep", "seconds": 30})
        wait_for(lambda: d.model("probe")["instances"][0]["inflight"] == 1, what="the request to reach the worker")
        os.kill(pid, signal.SIGKILL)
        r = fut.result(timeout=20)
    finally:
        pool.shutdown(wait=True)
    msg = assert_error(r, 502, "probe", str(pid))
    assert "SIGKILL" in msg or "signal 9" in msg, msg
    r = d.infer("probe", [tensor("INPUT0", "INT8", [1], [1])])
    assert r.status_code == 200, r.text


def test_queue_full_is_503_with_retry_after(corral):
    add_probe(corral, extra="concurrency: 1\npipeline: 0\nmax_queue: 1\n")  # waiting means queued
    d = corral.start()
    assert d.post("/v2/repository/models/probe/load").status_code == 200
    slow = {"parameters": {"mode": "sleep", "seconds": 1.5}}
    pool = concurrent.futures.ThreadPoolExecutor(2)
    try:
        running = pool.submit(d.infer, "probe", [tensor("INPUT0", "INT8", [1], [1])], **slow)
        wait_for(lambda: d.model("probe")["instances"][0]["inflight"] == 1, what="the first request to run")
        queued = pool.submit(d.infer, "probe", [tensor("INPUT0", "INT8", [1], [2])], **slow)
        wait_for(lambda: d.model("probe")["queue"] == 1, what="the second request to queue")
        for _ in range(3):
            r = d.infer("probe", [tensor("INPUT0", "INT8", [1], [3])])
            assert_error(r, 503, "probe", "max_queue")
            retry = r.headers.get("Retry-After")
            assert retry is not None and retry.isdigit() and int(retry) >= 1, r.headers
        assert running.result(timeout=20).status_code == 200
        assert queued.result(timeout=20).status_code == 200
    finally:
        pool.shutdown(wait=True)
    r = d.infer("probe", [tensor("INPUT0", "INT8", [1], [4])])
    assert r.status_code == 200, r.text


def test_failed_load_is_503_naming_the_reason(corral):
    add_probe(corral, parameters={"fail_load": "weights.bin is missing"},
              extra="restart: {max_restarts: 1, backoff_min: 10ms, backoff_max: 50ms}\n")
    d = corral.start()
    r = d.infer("probe", [tensor("INPUT0", "INT8", [1], [1])])
    msg = assert_error(r, 503, "probe", "weights.bin is missing")
    assert r.headers.get("Retry-After", "").isdigit(), r.headers
    m = d.wait_state("probe", "failed")
    assert "weights.bin is missing" in m["reason"], m
    r = d.infer("probe", [tensor("INPUT0", "INT8", [1], [1])])
    assert_error(r, 503, "probe", "weights.bin is missing")
    assert r.headers.get("Retry-After", "").isdigit(), r.headers
    assert "RuntimeError" in msg or "RuntimeError" in m["reason"], (msg, m)


def test_load_while_unloading_is_409(corral):
    add_probe(corral, parameters={"unload_delay": 1.5})
    d = corral.start("--stop-grace", "10s")
    assert d.post("/v2/repository/models/probe/load").status_code == 200
    pool = concurrent.futures.ThreadPoolExecutor(1)
    try:
        unloading = pool.submit(d.post, "/v2/repository/models/probe/unload")
        d.wait_state("probe", "unloading", timeout=5)
        assert_error(d.post("/v2/repository/models/probe/load"), 409, "probe")
        r = d.infer("probe", [tensor("INPUT0", "INT8", [1], [1])])
        assert_error(r, 503, "probe", "unloading")
        assert "Retry-After" in r.headers
        r = unloading.result(timeout=20)
        assert r.status_code == 200, r.text
    finally:
        pool.shutdown(wait=True)
    assert d.model("probe")["state"] == "unloaded"
    assert d.post("/v2/repository/models/probe/load").status_code == 200
    assert d.model("probe")["state"] == "ready"


# ---- the repository extension ----

def test_repository_index_load_unload(corral):
    add_echo(corral, "echo-py")
    corral.add("echo", "echo")
    add_probe(corral, "broken", parameters={"fail_load": "no GPU here"},
              extra="restart: {max_restarts: 0, backoff_min: 10ms, backoff_max: 10ms}\n")
    d = corral.start()
    r = d.post("/v2/repository/index")
    assert r.status_code == 200, r.text
    index = r.json()
    assert isinstance(index, list)
    assert sorted(e["name"] for e in index) == ["broken", "echo", "echo-py"]
    for e in index:
        assert e["version"] == "1"
        assert e["state"] == "UNAVAILABLE", e
        assert isinstance(e["reason"], str), e
    r = d.post("/v2/repository/index", {"ready": True})
    assert r.status_code == 200 and r.json() == [], r.text

    r = d.post("/v2/repository/models/echo/load", {"instances": 2})
    assert r.status_code == 200, r.text
    assert r.json() == {}
    m = d.model("echo")
    assert m["state"] == "ready" and len(m["instances"]) == 2, m
    assert all(i["state"] == "ready" and i["pid"] > 0 for i in m["instances"]), m
    r = d.post("/v2/repository/models/echo-py/load")
    assert r.status_code == 200, r.text
    assert len(d.model("echo-py")["instances"]) == 1

    assert_error(d.post("/v2/repository/models/broken/load"), 503, "broken", "no GPU here")

    r = d.post("/v2/repository/index", {"ready": True})
    assert r.status_code == 200
    ready = {e["name"]: e for e in r.json()}
    assert set(ready) == {"echo", "echo-py"}
    assert all(e["state"] == "READY" and e["version"] == "1" for e in ready.values())
    full = {e["name"]: e for e in d.post("/v2/repository/index", {"ready": False}).json()}
    assert full["broken"]["state"] == "UNAVAILABLE" and "no GPU here" in full["broken"]["reason"], full

    pids = d.worker_pids("echo")
    r = d.post("/v2/repository/models/echo/unload")
    assert r.status_code == 200, r.text
    m = d.model("echo")
    assert m["state"] == "unloaded" and all(i["pid"] is None for i in m["instances"]), m
    for pid in pids:
        assert not alive(pid), pid
    r = d.post("/v2/repository/index", {"ready": True})
    assert [e["name"] for e in r.json()] == ["echo-py"]
    # bad bodies and instance counts
    assert_error(d.post("/v2/repository/models/echo/load", {"instances": 0}), 400, "instances")
    assert_error(d.post("/v2/repository/models/echo/load", {"instances": "two"}), 400, "instances")
    assert_error(d.post("/v2/repository/models/echo/load", data=b"{nope", headers={"Content-Type": "application/json"}),
                 400, "echo")
    assert_error(d.post("/v2/repository/index", data=b"[1]", headers={"Content-Type": "application/json"}), 400)
    # unloading an unloaded model is fine, as in Triton
    r = d.post("/v2/repository/models/echo/unload")
    assert r.status_code == 200, r.text


def test_repository_load_finds_new_models(corral):
    add_echo(corral, "echo-py")
    d = corral.start()
    corral.add("late", "echo")
    r = d.post("/v2/repository/models/late/load")
    assert r.status_code == 200, r.text
    r = d.infer("late", [tensor("INPUT0", "INT8", [1], [3])])
    assert r.status_code == 200 and r.json()["outputs"][0]["data"] == [3], r.text


# ---- concurrency ----

def test_200_parallel_requests_each_get_their_own_answer(corral):
    add_echo(corral, "echo-py", instances=2)
    d = corral.start()
    assert d.post("/v2/repository/models/echo-py/load").status_code == 200
    local = threading.local()
    sessions = []

    def one(i: int):
        if not hasattr(local, "s"):
            local.s = requests.Session()
            sessions.append(local.s)
        body = {"id": f"req-{i}", "inputs": [tensor("INPUT0", "INT32", [3], [i, i * 7, -i]),
                                             tensor("INPUT1", "BYTES", [1], [f"s{i}é"])]}
        return i, local.s.post(d.url("/v2/models/echo-py/infer"), json=body, timeout=60)

    try:
        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            results = list(pool.map(one, range(200)))
    finally:
        for session in sessions:
            session.close()
    for i, r in results:
        assert r.status_code == 200, (i, r.text)
        body = r.json()
        assert body["id"] == f"req-{i}"
        outs = {o["name"]: o["data"] for o in body["outputs"]}
        assert outs == {"OUTPUT0": [i, i * 7, -i], "OUTPUT1": [f"s{i}é"]}, (i, body)
    m = d.model("echo-py")
    served = [inst["requests"] for inst in m["instances"]]
    assert sum(served) == 200, m
    assert all(n > 0 for n in served), m
    assert m["queue"] == 0


# ---- transport ----

@pytest.mark.parametrize("variant", ["echo-numpy", "echo-c"])
def test_large_binary_tensor_roundtrip(corral, variant):
    add_echo(corral, variant)
    d = corral.start()
    raw = os.urandom(16 << 20)
    header = {"id": "big", "inputs": [{"name": "INPUT0", "datatype": "UINT8", "shape": [4, len(raw) // 4],
                                       "parameters": {"binary_data_size": len(raw)}}],
              "parameters": {"binary_data_output": True}}
    header_out, blobs = parse_binary_response(binary_infer(d, variant, header, [raw]))
    assert header_out["outputs"][0]["shape"] == [4, len(raw) // 4]
    assert blobs["OUTPUT0"] == raw


def _daemon_maps(d) -> str:
    with open(f"/proc/{d.proc.pid}/maps") as f:
        return f.read()


@pytest.mark.parametrize("variant", ["echo-numpy", "echo-c"])
def test_large_tensors_travel_in_shared_memory_which_idle_instances_give_back(corral, variant):
    add_echo(corral, variant)
    d = corral.start()
    for size in (1 << 20, 3 << 20, (1 << 20) - 1, 5 << 20):  # at, past and just below the threshold; growing
        raw = os.urandom(size)
        header = {"inputs": [{"name": "INPUT0", "datatype": "UINT8", "shape": [size],
                              "parameters": {"binary_data_size": size}}], "parameters": {"binary_data_output": True}}
        _, blobs = parse_binary_response(binary_infer(d, variant, header, [raw], timeout=60))
        assert blobs["OUTPUT0"] == raw, size
    maps = _daemon_maps(d)
    assert "memfd:corral-input" in maps and "memfd:corral-output" in maps, "the daemon maps both regions"
    # Idle for a few seconds, the instance's regions give their pages back and the daemon unmaps them.
    wait_for(lambda: "memfd:corral" not in _daemon_maps(d), timeout=20, what="the idle regions to be released")
    (pid,) = d.worker_pids(variant)
    assert all(os.stat(f"/proc/{pid}/fd/{n}").st_blocks == 0 for n in (5, 6)), "the regions hold no pages"
    raw = os.urandom(2 << 20)  # and they grow again
    header = {"inputs": [{"name": "INPUT0", "datatype": "UINT8", "shape": [len(raw)],
                          "parameters": {"binary_data_size": len(raw)}}], "parameters": {"binary_data_output": True}}
    assert parse_binary_response(binary_infer(d, variant, header, [raw], timeout=60))[1]["OUTPUT0"] == raw


def test_large_result_in_shared_memory_answered_as_json(corral):
    add_echo(corral, "echo-c")
    d = corral.start()
    n = 400_000  # 1.6 MB of INT32: past the shared-memory threshold both ways
    raw = struct.pack(f"<{n}i", *range(-n // 2, n // 2))
    header = {"inputs": [{"name": "INPUT0", "datatype": "INT32", "shape": [n],
                          "parameters": {"binary_data_size": len(raw)}}]}
    r = binary_infer(d, "echo-c", header, [raw], timeout=60)
    assert r.status_code == 200, r.text[:300]
    assert r.json()["outputs"][0]["data"] == list(range(-n // 2, n // 2))


@pytest.mark.parametrize("variant", ["echo-numpy", "echo-c"])
def test_concurrent_large_tensors_each_come_back_whole(corral, variant):
    # Two requests at a time per instance: one may use the regions, the other takes the socket.
    add_echo(corral, variant, instances=2, extra="concurrency: 2\n")
    d = corral.start()

    def one(k: int) -> bool:
        raw = os.urandom((1 << 20) + k * 4099)
        header = {"inputs": [{"name": "INPUT0", "datatype": "UINT8", "shape": [len(raw)],
                              "parameters": {"binary_data_size": len(raw)}}],
                  "parameters": {"binary_data_output": True}}
        return parse_binary_response(binary_infer(d, variant, header, [raw], timeout=60))[1]["OUTPUT0"] == raw

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert all(pool.map(one, range(32)))


def test_chunked_request_body(corral):
    add_echo(corral, "echo-py")
    d = corral.start()
    body = json.dumps({"id": "chunked", "inputs": [tensor("INPUT0", "INT32", [3], [1, 2, 3])]}).encode()
    pieces = (body[i:i + 7] for i in range(0, len(body), 7))  # a generator: requests sends it chunked
    r = d.post("/v2/models/echo-py/infer", data=pieces, headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.json()["id"] == "chunked" and r.json()["outputs"][0]["data"] == [1, 2, 3]


def test_clients_that_give_up_do_not_disturb_others(corral):
    add_probe(corral, extra="concurrency: 1\n")
    d = corral.start()
    assert d.post("/v2/repository/models/probe/load").status_code == 200
    (pid,) = d.worker_pids("probe")
    slow = {"parameters": {"mode": "sleep", "seconds": 1}}
    # one client gives up while its request runs, another while its request waits in the queue
    pool = concurrent.futures.ThreadPoolExecutor(2)
    try:
        url = "/v2/models/probe/infer"
        running = pool.submit(d.post, url, {"inputs": [tensor("INPUT0", "INT8", [1], [1])], **slow}, timeout=0.5)
        wait_for(lambda: d.model("probe")["instances"][0]["inflight"] == 1, what="the first request to run")
        queued = pool.submit(d.post, url, {"inputs": [tensor("INPUT0", "INT8", [1], [2])]}, timeout=0.3)
        with pytest.raises(requests.exceptions.Timeout):
            queued.result(timeout=20)
        with pytest.raises(requests.exceptions.Timeout):
            running.result(timeout=20)
    finally:
        pool.shutdown(wait=True)
    wait_for(lambda: (lambda m: m["queue"] == 0 and m["instances"][0]["inflight"] == 0)(d.model("probe")),
             timeout=10, what="the abandoned requests to be withdrawn or finished")
    r = d.infer("probe", [tensor("INPUT0", "INT8", [1], [3])], id="after")
    assert r.status_code == 200, r.text
    outs = {o["name"]: o["data"] for o in r.json()["outputs"]}
    assert r.json()["id"] == "after" and outs["OUTPUT0"] == [3] and outs["PID"] == [pid]
    # the queued request was withdrawn, not run: this is the second infer the worker answered
    assert outs["SEQ"] == [2], outs
