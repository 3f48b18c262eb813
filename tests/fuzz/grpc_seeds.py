"""Writes the seed corpus of fuzz_grpc_request: a few serialized ModelInferRequests.

Each seed is one request as a client would send it (raw contents, typed
contents of every kind, parameters of every kind, outputs asked for, a
shared-memory input, a declared and batching model, and two the daemon
refuses), serialized with the stubs generated from proto/ (grpc_stubs.py)
and named by its SHA-1 as libFuzzer names corpus files. Run it by hand
when the seeds should change: /usr/bin/python3 tests/fuzz/grpc_seeds.py
"""
from __future__ import annotations

import hashlib
import pathlib
import struct
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "blackbox"))
import grpc_stubs  # noqa: E402

pb, _ = grpc_stubs.load()
OUT = ROOT / "tests" / "fuzz" / "corpus" / "fuzz_grpc_request"


def tensor(name: str, datatype: str, shape: list[int], **contents) -> "pb.ModelInferRequest.InferInputTensor":
    t = pb.ModelInferRequest.InferInputTensor(name=name, datatype=datatype, shape=shape)
    if contents:
        t.contents.CopyFrom(pb.InferTensorContents(**contents))
    return t


def seeds() -> list["pb.ModelInferRequest"]:
    out = []
    # a declared, batching model (model_name "decl", model_version "batch"), raw contents
    r = pb.ModelInferRequest(model_name="decl", model_version="batch", id="r1")
    r.inputs.append(tensor("INPUT0", "FP32", [2, 3]))
    r.raw_input_contents.append(struct.pack("<6f", 1, 2, 3, 4, 5, 6))
    r.inputs.append(tensor("INPUT1", "INT8", [2]))
    r.raw_input_contents.append(struct.pack("<2b", -1, 7))
    r.outputs.add(name="OUTPUT0")
    out.append(r)
    # typed contents of every kind, and parameters of every kind
    r = pb.ModelInferRequest(model_name="m", id="typed")
    r.inputs.append(tensor("b", "BOOL", [2], bool_contents=[True, False]))
    r.inputs.append(tensor("i8", "INT8", [2], int_contents=[-128, 127]))
    r.inputs.append(tensor("i16", "INT16", [1], int_contents=[-300]))
    r.inputs.append(tensor("i32", "INT32", [1, 2], int_contents=[1, -2]))
    r.inputs.append(tensor("i64", "INT64", [1], int64_contents=[-(2 ** 63)]))
    r.inputs.append(tensor("u8", "UINT8", [1], uint_contents=[255]))
    r.inputs.append(tensor("u16", "UINT16", [1], uint_contents=[65535]))
    r.inputs.append(tensor("u32", "UINT32", [1], uint_contents=[2 ** 32 - 1]))
    r.inputs.append(tensor("u64", "UINT64", [1], uint64_contents=[2 ** 64 - 1]))
    r.inputs.append(tensor("f32", "FP32", [2], fp32_contents=[0.5, -1.5]))
    r.inputs.append(tensor("f64", "FP64", [1], fp64_contents=[0.1]))
    r.parameters["flag"].bool_param = True
    r.parameters["n"].int64_param = -3
    r.parameters["s"].string_param = "text"
    r.parameters["d"].double_param = 2.5
    r.parameters["u"].uint64_param = 2 ** 64 - 1
    r.parameters["priority"].int64_param = 1
    out.append(r)
    # a decoupled model's request: BYTES, and Triton's stream flag
    r = pb.ModelInferRequest(model_name="tokens", id="gen")
    r.inputs.append(tensor("text_input", "BYTES", [1], bytes_contents=["hello world".encode()]))
    r.inputs.append(tensor("max_tokens", "INT32", [1], int_contents=[4]))
    r.parameters["triton_enable_empty_final_response"].bool_param = True
    r.parameters["temperature"].double_param = 0.7
    out.append(r)
    # raw FP16 and BYTES, outputs with parameters (classification, binary)
    r = pb.ModelInferRequest(model_name="m")
    r.inputs.append(tensor("h", "FP16", [2]))
    r.raw_input_contents.append(struct.pack("<2H", 0x3C00, 0xC000))
    r.inputs.append(tensor("s", "BYTES", [2]))
    r.raw_input_contents.append(struct.pack("<I", 2) + b"ab" + struct.pack("<I", 0))
    o = r.outputs.add(name="h")
    o.parameters["classification"].int64_param = 1
    r.outputs.add(name="s")
    out.append(r)
    # an input in client shared memory, another raw
    r = pb.ModelInferRequest(model_name="m")
    t = tensor("a", "FP32", [4])
    t.parameters["shared_memory_region"].string_param = "region"
    t.parameters["shared_memory_byte_size"].int64_param = 16
    r.inputs.append(t)
    r.inputs.append(tensor("b", "UINT8", [3]))
    r.raw_input_contents.append(b"\x01\x02\x03")
    out.append(r)
    # refused: FP16 in typed contents; binary_data_size over gRPC
    r = pb.ModelInferRequest(model_name="m")
    r.inputs.append(tensor("h", "FP16", [1], fp32_contents=[1.0]))
    out.append(r)
    r = pb.ModelInferRequest(model_name="m")
    t = tensor("x", "FP32", [1], fp32_contents=[1.0])
    t.parameters["binary_data_size"].int64_param = 4
    r.inputs.append(t)
    out.append(r)
    return out


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for r in seeds():
        data = r.SerializeToString()
        (OUT / hashlib.sha1(data).hexdigest()).write_bytes(data)


if __name__ == "__main__":
    main()
