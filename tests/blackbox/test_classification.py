"""The classification extension (issue 13, item 6): an output asked for with
`"parameters": {"classification": K}` comes back as Triton returns it, a BYTES tensor of the K
largest entries, "value:index" or "value:index:label" with labels from the model directory's
labels.txt, sorted by value (ties: the lower index first), values printed as Triton's std::to_string
prints them; per row of dimension 0 for a batching model, over the whole tensor otherwise; in JSON
and as binary data. Bad K values, datatypes that cannot be classified and a labels.txt that is too
large are errors naming the model and the output; labels are any bytes, read once per load.
Real daemon, real workers (examples/models/echo returns each input as an output)."""
from __future__ import annotations

import json
import struct
import threading

import pytest

from conftest import load, tensor, unload

BATCHING = ("runtime: python\nentrypoint: worker.py\n"
            "batching: {max_batch_size: 8, max_queue_delay: 1ms}\n")


def classify(d, model, inputs, k, binary=False, name="OUTPUT0"):
    params = {"classification": k}
    if binary:
        params["binary_data"] = True
    return d.infer(model, inputs, outputs=[{"name": name, "parameters": params}])


def output(r, name="OUTPUT0"):
    assert r.status_code == 200, r.text
    for o in r.json()["outputs"]:
        if o["name"] == name:
            return o
    raise AssertionError(r.text)


def f32(v: float) -> float:
    return struct.unpack("<f", struct.pack("<f", v))[0]


def f16(v: float) -> float:
    return struct.unpack("<e", struct.pack("<e", v))[0]


def bf16(v: float) -> float:
    bits = struct.unpack("<I", struct.pack("<f", v))[0]
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000  # round to nearest even, as corral converts
    return struct.unpack("<f", struct.pack("<I", bits))[0]


@pytest.fixture
def echo(corral):
    corral.add("echo", "echo")
    return corral.start()


def test_extension_is_listed(echo):
    assert "classification" in echo.get("/v2").json()["extensions"]


def test_top_k_without_labels(echo):
    data = [0.1, 0.7, 0.2, 0.7, -3.0]
    o = output(classify(echo, "echo", [tensor("INPUT0", "FP32", [5], data)], 3))
    assert o["datatype"] == "BYTES" and o["shape"] == [3]
    # equal values: the lower index first
    assert o["data"] == [f"{f32(0.7):f}:1", f"{f32(0.7):f}:3", f"{f32(0.2):f}:2"]
    o = output(classify(echo, "echo", [tensor("INPUT0", "FP32", [5], data)], 1))
    assert o["shape"] == [1] and o["data"] == ["0.700000:1"]


def test_k_larger_than_the_tensor_gives_every_element(echo):
    o = output(classify(echo, "echo", [tensor("INPUT0", "INT32", [3], [5, -1, 9])], 1000))
    assert o["shape"] == [3] and o["data"] == ["9:2", "5:0", "-1:1"]


def test_other_outputs_are_untouched(echo):
    r = echo.infer("echo", [tensor("INPUT0", "INT32", [3], [5, -1, 9]), tensor("INPUT1", "INT32", [2], [1, 2])],
                   outputs=[{"name": "OUTPUT0", "parameters": {"classification": 2}}, {"name": "OUTPUT1"}])
    assert output(r, "OUTPUT1") == {"name": "OUTPUT1", "datatype": "INT32", "shape": [2], "data": [1, 2]}
    assert output(r, "OUTPUT0")["data"] == ["9:2", "5:0"]


@pytest.mark.parametrize("datatype, data, expected", [
    ("INT8", [-128, 127, 0, -1], ["127:1", "0:2", "-1:3", "-128:0"]),
    ("UINT8", [0, 255, 7], ["255:1", "7:2", "0:0"]),
    ("INT16", [-300, 300], ["300:1", "-300:0"]),
    ("UINT16", [65535, 1], ["65535:0", "1:1"]),
    ("INT32", [-2147483648, 2147483647], ["2147483647:1", "-2147483648:0"]),
    ("UINT32", [4294967295, 0], ["4294967295:0", "0:1"]),
    ("INT64", [-9223372036854775808, 9223372036854775807, 9223372036854775806],
     ["9223372036854775807:1", "9223372036854775806:2", "-9223372036854775808:0"]),
    # above 2^53 and 2^63: compared and printed exactly
    ("UINT64", [18446744073709551615, 18446744073709551614, 9007199254740993, 1],
     ["18446744073709551615:0", "18446744073709551614:1", "9007199254740993:2", "1:3"]),
    ("FP16", [0.5, 1.5, -2.25, 1000.0],
     [f"{f16(1000.0):f}:3", f"{f16(1.5):f}:1", f"{f16(0.5):f}:0", f"{f16(-2.25):f}:2"]),
    ("BF16", [0.1, 3.14159, -7.5],
     [f"{bf16(3.14159):f}:1", f"{bf16(0.1):f}:0", f"{bf16(-7.5):f}:2"]),
    ("FP32", [1e-7, 123456.789, -0.5], [f"{f32(123456.789):f}:1", "0.000000:0", "-0.500000:2"]),
    ("FP64", [1e300, 0.123456789, -1e-9],
     [f"{1e300:f}:0", "0.123457:1", "-0.000000:2"]),
])
def test_every_numeric_datatype(echo, datatype, data, expected):
    o = output(classify(echo, "echo", [tensor("INPUT0", datatype, [len(data)], data)], len(data)))
    assert o["datatype"] == "BYTES" and o["data"] == expected


@pytest.mark.parametrize("datatype, data", [("BOOL", [True, False]), ("BYTES", ["a", "b"])])
def test_datatypes_that_cannot_be_classified(echo, datatype, data):
    r = classify(echo, "echo", [tensor("INPUT0", datatype, [2], data)], 1)
    assert r.status_code == 400
    assert r.json() == {"error": f"model 'echo': output 'OUTPUT0': classification is not available for "
                                 f"datatype {datatype}"}


@pytest.mark.parametrize("k", [0, -1, 1.5, "2", True, None, [1]])
def test_bad_k_is_400(echo, k):
    r = classify(echo, "echo", [tensor("INPUT0", "FP32", [2], [1, 2])], k)
    assert r.status_code == 400, r.text
    assert r.json() == {"error": "model 'echo': output 'OUTPUT0': parameters.classification must be a positive "
                                 "integer (how many classes to return)"}


def test_labels(corral):
    corral.add("lab", "echo", files={"labels.txt": "cat\ndog\r\n\nbird"})
    d = corral.start()
    o = output(classify(d, "lab", [tensor("INPUT0", "FP32", [5], [0.1, 0.2, 0.3, 0.4, 0.5])], 5))
    # line 1's CR is dropped, line 2 is an empty label, index 4 is past the last line: no label
    assert o["data"] == ["0.500000:4", "0.400000:3:bird", "0.300000:2:", "0.200000:1:dog", "0.100000:0:cat"]


def test_labels_are_any_bytes(corral):
    path = corral.add("lab", "echo")
    (path / "labels.txt").write_bytes(b"\xff\xfe\"</script>\x00\\\n\xe2\x82\xac ok\n")
    d = corral.start()
    r = classify(d, "lab", [tensor("INPUT0", "INT8", [2], [1, 2])], 2)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/json")
    # bytes that are not UTF-8 are written as \u00XX; the rest escaped as JSON requires
    assert output(r)["data"] == ["2:1:\u20ac ok", "1:0:\u00ff\u00fe\"</script>\x00\\"]
    # binary, they come back as they are
    r = classify(d, "lab", [tensor("INPUT0", "INT8", [2], [1, 2])], 2, binary=True)
    assert binary_strings(r) == [b"2:1:\xe2\x82\xac ok", b"1:0:\xff\xfe\"</script>\x00\\"]


def binary_strings(r):
    assert r.status_code == 200, r.text
    n = int(r.headers["Inference-Header-Content-Length"])
    head = json.loads(r.content[:n])
    (o,) = head["outputs"]
    assert o["datatype"] == "BYTES"
    blob = r.content[n:]
    assert len(blob) == o["parameters"]["binary_data_size"]
    strings, at = [], 0
    while at < len(blob):
        (size,) = struct.unpack_from("<I", blob, at)
        strings.append(blob[at + 4:at + 4 + size])
        at += 4 + size
    count = 1
    for dim in o["shape"]:
        count *= dim
    assert len(strings) == count
    return strings


def test_binary_output(echo):
    r = classify(echo, "echo", [tensor("INPUT0", "FP64", [4], [0.25, 4.0, -1.0, 2.0])], 2, binary=True)
    assert binary_strings(r) == [b"4.000000:1", b"2.000000:3"]
    r = echo.infer("echo", [tensor("INPUT0", "FP64", [4], [0.25, 4.0, -1.0, 2.0])],
                   outputs=[{"name": "OUTPUT0", "parameters": {"classification": 3}}],
                   parameters={"binary_data_output": True})
    assert binary_strings(r) == [b"4.000000:1", b"2.000000:3", b"0.250000:0"]


def test_without_batching_the_whole_tensor_is_one(echo):
    o = output(classify(echo, "echo", [tensor("INPUT0", "INT32", [2, 3], [1, 9, 2, 8, 3, 7])], 2))
    assert o["shape"] == [2] and o["data"] == ["9:1", "8:3"]


def test_with_batching_each_row_is_classified(corral):
    corral.add("eb", "echo", manifest=BATCHING, files={"labels.txt": "a\nb\nc\n"})
    d = corral.start()
    o = output(classify(d, "eb", [tensor("INPUT0", "INT32", [2, 3], [1, 9, 2, 8, 3, 7])], 2))
    assert o["shape"] == [2, 2] and o["data"] == ["9:1:b", "2:2:c", "8:0:a", "7:2:c"]
    o = output(classify(d, "eb", [tensor("INPUT0", "INT32", [2, 3], [1, 9, 2, 8, 3, 7])], 10))
    assert o["shape"] == [2, 3]
    r = classify(d, "eb", [tensor("INPUT0", "UINT8", [3, 2], [1, 2, 4, 3, 5, 6])], 1, binary=True)
    assert binary_strings(r) == [b"2:1:b", b"4:0:a", b"6:1:b"]


def test_labels_are_read_once_per_load(corral):
    path = corral.add("lab", "echo", files={"labels.txt": "old0\nold1\n"})
    d = corral.start()
    x = [tensor("INPUT0", "INT8", [2], [1, 2])]
    assert output(classify(d, "lab", x, 1))["data"] == ["2:1:old1"]
    (path / "labels.txt").write_text("new0\nnew1\n")
    assert output(classify(d, "lab", x, 1))["data"] == ["2:1:old1"]
    assert unload(d, "lab").status_code == 200
    assert load(d, "lab").status_code == 200
    assert output(classify(d, "lab", x, 1))["data"] == ["2:1:new1"]
    (path / "labels.txt").unlink()
    assert unload(d, "lab").status_code == 200
    assert output(classify(d, "lab", x, 1))["data"] == ["2:1"]


def test_labels_file_too_large(corral):
    path = corral.add("lab", "echo")
    (path / "labels.txt").write_bytes(b"x\n" * (8 * 1024 * 1024 + 1))
    d = corral.start()
    x = [tensor("INPUT0", "INT8", [2], [1, 2])]
    r = classify(d, "lab", x, 1)
    assert r.status_code == 500
    assert r.json()["error"] == \
        f"model 'lab': cannot classify: {path}/labels.txt: larger than 16777216 bytes (16 MiB)"
    # the raw output does not need the labels
    assert d.infer("lab", x).status_code == 200


def test_classification_of_a_missing_output_is_the_usual_400(echo):
    r = echo.infer("echo", [tensor("INPUT0", "INT8", [2], [1, 2])],
                   outputs=[{"name": "NOPE", "parameters": {"classification": 1}}])
    assert r.status_code == 400
    assert "model 'echo'" in r.json()["error"] and "'NOPE'" in r.json()["error"]


def test_requests_batched_together_each_get_their_own_classification(corral):
    """Three requests that share one batch: each answer is its own rows, classified with its own K."""
    corral.add("eb", "echo", manifest=BATCHING.replace("1ms", "300ms") + "instances: 1\n", files={"labels.txt": "zero\none\ntwo\n"})
    d = corral.start()
    assert load(d, "eb").status_code == 200
    asks = [([[3, 1, 2]], 1, False), ([[0, 5, 9], [7, 7, 1]], 2, False), ([[4, 6, 5]], 3, True)]
    results = [None] * len(asks)

    def ask(i):
        rows, k, binary = asks[i]
        results[i] = classify(d, "eb", [tensor("INPUT0", "INT64", [len(rows), 3], rows)], k, binary=binary)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(asks))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert output(results[0])["data"] == ["3:0:zero"]
    assert output(results[1])["shape"] == [2, 2]
    assert output(results[1])["data"] == ["9:2:two", "5:1:one", "7:0:zero", "7:1:one"]
    assert binary_strings(results[2]) == [b"6:1:one", b"5:2:two", b"4:0:zero"]
    # they did share a batch: one execution served all four rows
    stats = d.get("/v2/models/eb/stats").json()["model_stats"][0]
    assert stats["inference_count"] == 4 and stats["execution_count"] == 1, stats
