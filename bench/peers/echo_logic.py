"""echo_logic — the echo model of examples/models/echo, as a plain web app would run it.

The peers (gunicorn, uWSGI, uvicorn+FastAPI) serve the same KServe v2
request and answer with the same response shape as corral's echo, doing the
same work per request: parse the JSON (or the binary tensor extension), turn
each input into a typed numpy array of its shape (what corral's Python
model receives), rename INPUTn -> OUTPUTn, and write the v2 response (JSON
data, or binary data when binary_data_output asks for it).
"""
from __future__ import annotations

import json
from typing import Optional, Tuple

import numpy as np

DTYPES = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
}


class BadRequest(Exception):
    pass


def output_name(name: str) -> str:
    return "OUTPUT" + name[5:] if name.startswith("INPUT") else name


def infer(body: bytes, header_length: Optional[str]) -> Tuple[bytes, Optional[int]]:
    """One v2 inference: returns (response body, Inference-Header-Content-Length or None)."""
    json_len = int(header_length) if header_length else len(body)
    try:
        req = json.loads(body[:json_len])
    except ValueError as e:
        raise BadRequest(f"malformed JSON: {e}")
    binary = memoryview(body)[json_len:]
    offset = 0
    outputs, blobs = [], []
    binary_out = bool((req.get("parameters") or {}).get("binary_data_output"))
    for t in req.get("inputs") or []:
        dtype = DTYPES.get(t.get("datatype"))
        if dtype is None:
            raise BadRequest(f"unsupported datatype {t.get('datatype')!r}")
        shape = t["shape"]
        size = (t.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            arr = np.frombuffer(binary[offset:offset + size], dtype=dtype).reshape(shape)
            offset += size
        else:
            arr = np.asarray(t["data"], dtype=dtype).reshape(shape)
        out = {"name": output_name(t["name"]), "datatype": t["datatype"], "shape": shape}
        if binary_out:
            raw = arr.tobytes()
            out["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            out["data"] = arr.ravel().tolist()
        outputs.append(out)
    resp = {"model_name": "echo", "model_version": "1"}
    if "id" in req:
        resp["id"] = req["id"]
    resp["outputs"] = outputs
    head = json.dumps(resp, separators=(",", ":")).encode()
    if binary_out:
        return b"".join([head, *blobs]), len(head)
    return head, None
