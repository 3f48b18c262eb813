"""The C SDK's sessions (corral_worker.h, "sessions"; docs/worker-protocol.md, "Sessions") through
tests/models/session_c, with the daemon played by hand as test_c_sdk.py does (its Worker and helpers):
a request meta's "session" read by the model (JSON, bytes, absent, none), and the update each answer
carries (INFER_RESULT, a batch's results, GENERATE_RESULT, a stream's END), nothing on an ERROR, and a
malformed "session" as a protocol error (exit 2).

Run: /usr/bin/python3 -m pytest -q tests/sdk/test_c_sdk_sessions.py
"""
from __future__ import annotations

import base64
import json
import os
import struct
from pathlib import Path

import pytest

from test_c_sdk import (BATCH, END, ERROR, GENERATE, GENERATE_RESULT, INFER, INFER_RESULT, ROOT, Worker,
                        decode_bytes, split_body, tensor_body)

SESSION_DIR = ROOT / "tests" / "models" / "session_c"
SESSION_BIN = Path(os.environ.get("CORRAL_SESSION_C_BIN", SESSION_DIR / "session_c"))
X = struct.pack("<f", 1.5)
JSON_SESSION = {"id": "chat", "exists": True, "content_type": "application/json", "json": {"n": 4, "t": "é"}}


@pytest.fixture
def w():
    worker = Worker(SESSION_BIN, SESSION_DIR)
    worker.start()
    yield worker
    worker.close()


def infer(w, session=None, mode=None, id_=1):
    meta = {"id": "", "parameters": {"mode": mode} if mode else {},
            "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1], "size": 4}]}
    if session is not None:
        meta["session"] = session
    w.send(INFER, id_, tensor_body(meta, X))
    type_, got, body = w.recv()
    assert got == id_
    return type_, body


def seen(body):
    """The SESSION output's one element, and the answer's meta."""
    meta, data = split_body(body)
    off = 0
    for o in meta["outputs"]:
        if o["name"] == "SESSION":
            return decode_bytes(data[off:off + o["size"]])[0], meta
        off += o["size"]
    raise AssertionError(meta)


def daemon_meta(session_member: str, rest: str) -> bytes:
    """A meta as the daemon writes it: the session member first, in its fixed form, then the rest."""
    return ("{" + session_member + ("," + rest if rest else "") + "}").encode()


@pytest.mark.parametrize("value", ['{"n":4,"t":"\\u00e9 \\" }{"}', '[1,[2,{"a":[]}]]', '"text \\"q\\""', '17', 'true',
                                   'null', '{}'])
def test_the_daemons_form_is_cut_out_of_the_meta(w, value):
    """The fast path: the text reaches the model as the daemon sent it, and the rest of the meta still parses."""
    member = '"session":{"id":"chat","exists":true,"content_type":"application/json","json":' + value + '}'
    rest = '"id":"r1","parameters":{"mode":"count","session":"chat"},' \
           '"inputs":[{"name":"INPUT0","datatype":"FP32","shape":[1],"size":4}]'
    m = daemon_meta(member, rest)
    w.send(INFER, 1, struct.pack("<I", len(m)) + m + X)
    type_, _, body = w.recv()
    assert type_ == INFER_RESULT, body
    text, meta = seen(body)
    assert text == value.encode()
    n = json.loads(value)["n"] if value.startswith('{"n"') else 0
    assert meta["session"] == {"json": {"n": n + 1, "instance": 0}}


def test_the_daemons_form_for_bytes_and_absent(w):
    rest = '"id":"","parameters":{},"inputs":[{"name":"INPUT0","datatype":"FP32","shape":[1],"size":4}]'
    raw = bytes(range(256))
    for i, (member, want) in enumerate([
            ('"session":{"id":"v","exists":true,"content_type":"audio/wav","base64":"'
             + base64.b64encode(raw).decode() + '"}', raw),
            ('"session":{"id":"n","exists":false}', b"absent")]):
        m = daemon_meta(member, rest)
        w.send(INFER, i + 1, struct.pack("<I", len(m)) + m + X)
        type_, _, body = w.recv()
        assert type_ == INFER_RESULT and seen(body)[0] == want


def test_reads_json_bytes_absent_and_none(w):
    type_, body = infer(w, JSON_SESSION)
    text, meta = seen(body)
    assert type_ == INFER_RESULT and json.loads(text) == {"n": 4, "t": "é"} and "session" not in meta
    raw = bytes(range(200))
    text, _ = seen(infer(w, {"id": "v", "exists": True, "content_type": "audio/wav",
                             "base64": base64.b64encode(raw).decode()}, id_=2)[1])
    assert text == raw
    assert seen(infer(w, {"id": "new", "exists": False}, id_=3)[1])[0] == b"absent"
    assert seen(infer(w, None, id_=4)[1])[0] == b"none"


def test_updates_in_every_form(w):
    _, body = infer(w, JSON_SESSION, "count")
    assert seen(body)[1]["session"] == {"json": {"n": 5, "instance": 0}}
    _, body = infer(w, JSON_SESSION, "bytes", id_=2)
    assert seen(body)[1]["session"] == {"base64": base64.b64encode(X).decode(), "content_type": "application/x-raw"}
    _, body = infer(w, JSON_SESSION, "delete", id_=3)
    assert seen(body)[1]["session"] == {"delete": True}
    type_, body = infer(w, JSON_SESSION, "fail", id_=4)  # an error carries no update
    assert type_ == ERROR and json.loads(body)["status"] == 400
    _, body = infer(w, None, "count", id_=5)  # no session: nothing to update (-ENOENT), no key
    assert "session" not in seen(body)[1]


def test_batch_results_carry_each_requests_update(w):
    entries = [{"id": 11, "client_id": "a", "rows": 1, "parameters": {"mode": "count"}, "session": JSON_SESSION},
               {"id": 12, "client_id": "b", "rows": 1, "parameters": {"mode": "count"}},
               {"id": 13, "client_id": "c", "rows": 1, "parameters": {"mode": "delete"},
                "session": {"id": "x", "exists": False}}]
    meta = {"batch": entries, "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [3], "size": 12}]}
    w.send(BATCH, 99, tensor_body(meta, X * 3))
    rmeta, _ = split_body(w.expect(INFER_RESULT, 99))
    results = rmeta["results"]
    assert results[0]["session"] == {"json": {"n": 5, "instance": 0}}
    assert "session" not in results[1]
    assert results[2]["session"] == {"delete": True}


def test_generate_update_goes_with_the_answer_or_the_end(w):
    meta = {"id": "", "content_type": "application/json", "stream": True,
            "session": {"id": "g", "exists": True, "content_type": "application/json", "json": {"streamed": 1}}}
    w.send(GENERATE, 1, tensor_body(meta, b"{}"))
    events, end_type, end_body = w.stream(1)
    assert end_type == END and len(events) == 2
    endmeta, rest = split_body(end_body)
    assert endmeta == {"session": {"json": {"streamed": 2}}} and rest == b""
    del meta["stream"]  # collected into one answer: the update in GENERATE_RESULT's meta
    w.send(GENERATE, 2, tensor_body(meta, b"{}"))
    rmeta, _ = split_body(w.expect(GENERATE_RESULT, 2))
    assert rmeta["session"] == {"json": {"streamed": 2}}
    del meta["session"]
    meta["stream"] = True  # no session: END stays empty
    w.send(GENERATE, 3, tensor_body(meta, b"{}"))
    _, end_type, end_body = w.stream(3)
    assert end_type == END and end_body == b""


def test_bad_base64_in_the_daemons_form_is_a_protocol_error():
    worker = Worker(SESSION_BIN, SESSION_DIR)
    try:
        worker.start()
        m = daemon_meta('"session":{"id":"v","exists":true,"content_type":"a/b","base64":"a*=="}',
                        '"id":"","inputs":[{"name":"INPUT0","datatype":"FP32","shape":[1],"size":4}]')
        worker.send(INFER, 1, struct.pack("<I", len(m)) + m + X)
        assert worker.wait() == 2
        assert "base64" in worker.stderr_text()
    finally:
        worker.close()


@pytest.mark.parametrize("session", [{"id": 1, "exists": True}, {"id": "a"},
                                     {"id": "a", "exists": True, "content_type": "x/y"},
                                     {"id": "a", "exists": True, "content_type": "x/y", "base64": "a*=="}])
def test_a_malformed_session_is_a_protocol_error(session):
    worker = Worker(SESSION_BIN, SESSION_DIR)
    try:
        worker.start()
        meta = {"id": "", "parameters": {}, "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1], "size": 4}],
                "session": session}
        worker.send(INFER, 1, tensor_body(meta, X))
        assert worker.wait() == 2
        assert "session" in worker.stderr_text()
    finally:
        worker.close()
