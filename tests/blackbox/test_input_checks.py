"""Input checks against declared metadata (issue 13, item 5): a v2 inference request whose inputs do
not match the model's declared `inputs` (the manifest's, or those the worker's READY names) is a 400
naming the model, the input, what was expected and what came, before it reaches a worker; an output
asked for that the model does not declare likewise. -1 dimensions match any size, `optional: true`
inputs may be left out, a batching model's declared shape includes dimension 0, and models that
declare nothing keep accepting anything. Real daemon, real workers (examples/models/echo,
tests/models/declares)."""
from __future__ import annotations

import json
import struct

import pytest

from conftest import tensor, wait_for

DECLARED = """runtime: python
entrypoint: worker.py
inputs:
  - {name: INPUT0, datatype: FP32, shape: [-1, 3]}
  - {name: INPUT1, datatype: INT32, shape: [2]}
  - {name: EXTRA, datatype: BYTES, shape: [-1], optional: true}
outputs:
  - {name: OUTPUT0, datatype: FP32, shape: [-1, 3]}
  - {name: OUTPUT1, datatype: INT32, shape: [2]}
  - {name: EXTRA, datatype: BYTES, shape: [-1]}
"""

GOOD = [tensor("INPUT0", "FP32", [2, 3], [1, 2, 3, 4, 5, 6]), tensor("INPUT1", "INT32", [2], [7, 8])]


def served_requests(d, name) -> int:
    return sum(i["requests"] for i in d.model(name)["instances"])


@pytest.fixture
def declared(corral):
    corral.add("echo", "echo", manifest=DECLARED)
    return corral.start()


def test_matching_request_passes(declared):
    r = declared.infer("echo", GOOD)
    assert r.status_code == 200, r.text
    outs = {o["name"]: o for o in r.json()["outputs"]}
    assert outs["OUTPUT0"]["shape"] == [2, 3] and outs["OUTPUT1"]["data"] == [7, 8]
    # -1 takes any size, 0 included; the optional input may come too
    r = declared.infer("echo", [tensor("INPUT0", "FP32", [0, 3], []), tensor("INPUT1", "INT32", [2], [0, 0]),
                                tensor("EXTRA", "BYTES", [3], ["a", "b", "c"])])
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("inputs, message", [
    ([tensor("INPUT0", "INT32", [2, 3], [1] * 6), GOOD[1]],
     "model 'echo': input 'INPUT0': expected datatype FP32, got INT32"),
    ([tensor("INPUT0", "FP32", [2, 4], [1] * 8), GOOD[1]],
     "model 'echo': input 'INPUT0': expected shape [-1, 3], got [2, 4]"),
    ([tensor("INPUT0", "FP32", [6], [1] * 6), GOOD[1]],
     "model 'echo': input 'INPUT0': expected shape [-1, 3], got [6]"),
    ([tensor("INPUT0", "FP32", [1, 2, 3], [1] * 6), GOOD[1]],
     "model 'echo': input 'INPUT0': expected shape [-1, 3], got [1, 2, 3]"),
    ([GOOD[0], tensor("INPUT1", "INT32", [3], [1, 2, 3])],
     "model 'echo': input 'INPUT1': expected shape [2], got [3]"),
    ([GOOD[0]],
     "model 'echo': input 'INPUT1' is missing: the model requires it (INT32 [2])"),
    ([GOOD[1]],
     "model 'echo': input 'INPUT0' is missing: the model requires it (FP32 [-1, 3])"),
    ([*GOOD, tensor("INPUT2", "FP32", [1], [1])],
     "model 'echo': input 'INPUT2' is not declared; the model's inputs are INPUT0, INPUT1, EXTRA"),
    ([*GOOD, tensor("EXTRA", "FP32", [1], [1])],
     "model 'echo': input 'EXTRA': expected datatype BYTES, got FP32"),
])
def test_mismatch_is_400_before_the_worker(declared, inputs, message):
    assert declared.infer("echo", GOOD).status_code == 200  # loaded, one request served
    before = served_requests(declared, "echo")
    r = declared.infer("echo", inputs)
    assert r.status_code == 400, r.text
    assert r.json() == {"error": message}
    assert served_requests(declared, "echo") == before  # it never reached a worker


def test_binary_inputs_are_checked_too(declared):
    header = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 2],
                          "parameters": {"binary_data_size": 8}}, GOOD[1]]}
    head = json.dumps(header).encode()
    r = declared.post("/v2/models/echo/infer", data=head + struct.pack("<2f", 1, 2),
                      headers={"Inference-Header-Content-Length": str(len(head)),
                               "Content-Type": "application/octet-stream"})
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "model 'echo': input 'INPUT0': expected shape [-1, 3], got [1, 2]"


def test_undeclared_output_is_400(declared):
    r = declared.infer("echo", GOOD, outputs=[{"name": "OUTPUT0"}, {"name": "SCORES"}])
    assert r.status_code == 400, r.text
    assert r.json()["error"] == \
        "model 'echo': output 'SCORES' is not declared; the model's outputs are OUTPUT0, OUTPUT1, EXTRA"
    r = declared.infer("echo", GOOD, outputs=[{"name": "OUTPUT1"}])
    assert r.status_code == 200, r.text
    assert [o["name"] for o in r.json()["outputs"]] == ["OUTPUT1"]


def test_hostile_names_are_escaped(declared):
    r = declared.infer("echo", [*GOOD, tensor("\u2028\"<x>\\", "FP32", [1], [1])])
    assert r.status_code == 400
    assert r.json()["error"].startswith("model 'echo': input '\u2028\"<x>\\' is not declared")


def test_metadata_reports_what_is_checked(declared):
    meta = declared.get("/v2/models/echo").json()
    assert meta["inputs"][0] == {"name": "INPUT0", "datatype": "FP32", "shape": [-1, 3]}
    assert meta["inputs"][2]["optional"] is True


def test_without_declarations_anything_goes(corral):
    corral.add("echo", "echo")
    d = corral.start()
    for inputs in ([tensor("INPUT0", "INT8", [1, 2, 3], [1] * 6)], [tensor("WHATEVER", "BYTES", [1], ["x"])]):
        r = d.infer("echo", inputs, outputs=[{"name": "OUTPUT0" if inputs[0]["name"] == "INPUT0" else "WHATEVER"}])
        assert r.status_code == 200, r.text


def test_batching_model_declares_the_batch_dimension(corral):
    corral.add("eb", "echo", manifest=DECLARED.replace(
        "entrypoint: worker.py\n", "entrypoint: worker.py\nbatching: {max_batch_size: 4, max_queue_delay: 1ms}\n"))
    d = corral.start()
    for rows in (1, 3):
        r = d.infer("eb", [tensor("INPUT0", "FP32", [rows, 3], [1] * (3 * rows)), GOOD[1]])
        assert r.status_code == 200, r.text
    # the whole shape is declared: a request without the batch dimension does not match
    r = d.infer("eb", [tensor("INPUT0", "FP32", [3], [1, 2, 3]), GOOD[1]])
    assert r.status_code == 400
    assert r.json()["error"] == "model 'eb': input 'INPUT0': expected shape [-1, 3], got [3]"


def test_ready_declarations_are_checked_once_loaded(corral):
    corral.add("dec", "declares")
    d = corral.start()
    ok = [tensor("INPUT0", "FP32", [1, 3], [1, 2, 3])]
    r = d.infer("dec", ok)  # the first request loads it: READY's declarations were not known yet
    assert r.status_code == 200, r.text
    assert d.get("/v2/models/dec").json()["inputs"][0]["shape"] == [-1, 3]
    before = served_requests(d, "dec")
    r = d.infer("dec", [tensor("INPUT0", "FP64", [1, 3], [1, 2, 3])])
    assert r.status_code == 400
    assert r.json()["error"] == "model 'dec': input 'INPUT0': expected datatype FP32, got FP64"
    r = d.infer("dec", [tensor("INPUT0", "FP32", [1, 3], [1, 2, 3]), tensor("MASK", "BOOL", [2], [True, False])])
    assert r.status_code == 200, r.text  # the optional input
    r = d.infer("dec", [tensor("MASK", "BOOL", [1], [True])])
    assert r.status_code == 400
    assert r.json()["error"] == "model 'dec': input 'INPUT0' is missing: the model requires it (FP32 [-1, 3])"
    r = d.infer("dec", ok, outputs=[{"name": "OUTPUT9"}])
    assert r.status_code == 400
    assert "output 'OUTPUT9' is not declared" in r.json()["error"]
    assert served_requests(d, "dec") == before + 1


def test_manifest_declarations_win_over_ready(corral):
    corral.add("dec", "declares", manifest=(
        "runtime: python\nentrypoint: worker.py\n"
        "inputs: [{name: INPUT0, datatype: INT8, shape: [2]}]\n"
        "parameters:\n  inputs: [{name: INPUT0, datatype: FP32, shape: [-1, 3]}]\n"))
    d = corral.start()
    r = d.infer("dec", [tensor("INPUT0", "INT8", [2], [1, 2])])
    assert r.status_code == 200, r.text
    r = d.infer("dec", [tensor("INPUT0", "FP32", [1, 3], [1, 2, 3])])
    assert r.status_code == 400
    assert r.json()["error"] == "model 'dec': input 'INPUT0': expected datatype INT8, got FP32"


def test_bad_ready_declarations_are_ignored_with_a_warning(corral):
    corral.add("dec", "declares", manifest=(
        "runtime: python\nentrypoint: worker.py\n"
        "parameters:\n  inputs: [{name: INPUT0, datatype: FP33, shape: [1]}]\n"))
    d = corral.start()
    assert d.infer("dec", [tensor("INPUT0", "FP32", [1, 3], [1, 2, 3])]).status_code == 200
    assert d.infer("dec", [tensor("INPUT0", "INT8", [4], [1, 2, 3, 4])]).status_code == 200
    wait_for(lambda: "READY's inputs[0]: datatype must be one of" in d.log(), what="the warning")


@pytest.mark.parametrize("entry, message", [
    ("{name: X, datatype: FP32, shape: [-2]}", "key 'inputs[0]': shape must be a list of at most 16 integers"),
    ("{name: X, datatype: FP32, shape: [1], optional: 1}", "key 'inputs[0]': optional must be true or false"),
    ("{name: X, datatype: FP32, shape: [1]}, {name: X, datatype: FP32, shape: [2]}",
     "key 'inputs[1]': name 'X' is declared twice"),
    ("{name: X, datatype: FP32, shape: [1], dims: [1]}", "key 'inputs[0].dims': unknown key"),
])
def test_bad_declarations_break_the_manifest(corral, entry, message):
    corral.add("bad", "echo", manifest=f"runtime: python\nentrypoint: worker.py\ninputs: [{entry}]\n")
    d = corral.start()
    m = d.model("bad")
    assert message in m["manifest_error"], m
    assert d.infer("bad", GOOD).status_code == 503
