"""
The Python SDK's sessions (docs/worker-protocol.md, "Sessions"), without the
daemon: a request meta's "session" becomes request.session, and what the
model records (request.session.update, Response(session=...), DELETE) comes
back in the answer's meta, on every kind of answer: INFER_RESULT, a batch's
results and its whole answer, GENERATE_RESULT, and a stream's END.

Reuses test_python_sdk's fake daemon and fixtures (same directory).
Run: /usr/bin/python3 -m pytest -q tests/sdk/test_python_sdk_sessions.py
"""

from __future__ import annotations

import base64
import json
from typing import Any, Dict

import pytest

from test_python_sdk import (  # noqa: F401  (fixtures are used by name)
    BATCH,
    ERROR,
    GENERATE,
    GENERATE_RESULT,
    INFER,
    INFER_RESULT,
    _deadline,
    batch_entry,
    body_with_meta,
    spawn,
    split_meta,
    tensor_raw,
    variant,
)

END = 0x15

MODEL = '''
import corral

class Sessions(corral.Model):
    def infer(self, request):
        s = request.session
        mode = request.parameters.get("mode")
        seen = {"none": s is None} if s is None else {
            "id": s.id, "exists": s.exists, "content_type": s.content_type,
            "content": s.content if not isinstance(s.content, bytes) else list(s.content),
            "body": list(s.body)}
        if mode == "append":
            items = list((s.content or {}).get("items", [])) if s.exists else []
            s.update({"items": items + [len(items)]}, ttl=60)
        elif mode == "bytes":
            s.update(b"\\x00\\xffpcm", content_type="audio/L16")
        elif mode == "delete":
            s.delete()
        elif mode == "mutate":
            s.content["x"] = 2  # its own copy: nothing recorded
        elif mode == "fail":
            s.update({"never": True})
            raise corral.BadRequest("refused")
        elif mode == "bad_ttl":
            s.update({}, ttl=0)
        return {"SEEN": [corral.Response(seen).body.decode()]}

    def generate(self, request):
        s = request.session
        body = request.json or {}
        if body.get("stream"):
            def events():
                yield {"n": 1}
                if s is not None:
                    s.update({"streamed": True})
                yield {"n": 2}
            return events()
        if body.get("delete"):
            return corral.Response({"ok": 1}, session=corral.DELETE)
        return corral.Response({"had": s.content if s else None}, session={"turns": 1}, session_ttl=30)

if __name__ == "__main__":
    corral.run(Sessions)
'''

BATCHER = '''
import corral

class Whole(corral.Model):
    def infer(self, request):
        for i, s in enumerate(request.batch_sessions):
            if s is not None:
                s.update({"row": i, "had": s.content})
        return {"OUTPUT0": request.inputs["INPUT0"]}

if __name__ == "__main__":
    corral.run(Whole)
'''

PER_REQUEST = '''
import corral

class Each(corral.Model):
    def infer_batch(self, requests):
        out = []
        for r in requests:
            if r.session is not None:
                r.session.update({"id": r.id})
            if r.parameters.get("fail"):
                out.append(corral.BadRequest("no"))
            else:
                out.append({"OUTPUT0": r.inputs["INPUT0"]})
        return out

if __name__ == "__main__":
    corral.run(Each)
'''

X = [("INPUT0", "FP32", [1], tensor_raw("FP32", [1.0]))]


def infer_meta(d: Any, frame_id: int, session: Any, mode: str = "") -> Dict[str, Any]:
    meta: Dict[str, Any] = {"id": f"r{frame_id}", "parameters": {"mode": mode},
                            "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1], "size": 4}]}
    if session is not None:
        meta["session"] = session
    d.send(INFER, frame_id, body_with_meta(meta, X[0][3]))
    frame_type, got_id, body = d.recv()
    assert got_id == frame_id
    return {"type": frame_type, "body": body}


def seen_of(body: bytes) -> Dict[str, Any]:
    meta, data = split_meta(body)
    (n,) = __import__("struct").unpack_from("<I", data)
    return json.loads(data[4 : 4 + n])


def test_infer_sees_the_session_and_answers_an_update(spawn: Any) -> None:
    d = spawn(MODEL)
    d.start()
    r = infer_meta(d, 1, {"id": "chat", "exists": True, "content_type": "application/json", "json": {"items": [0, 1]}},
                   "append")
    assert r["type"] == INFER_RESULT
    meta, _ = split_meta(r["body"])
    assert meta["session"] == {"json": {"items": [0, 1, 2]}, "ttl": 60}
    seen = seen_of(r["body"])
    assert seen["id"] == "chat" and seen["exists"] is True and seen["content"] == {"items": [0, 1]}
    assert bytes(seen["body"]) == b'{"items":[0,1]}'

    r = infer_meta(d, 2, {"id": "new", "exists": False}, "append")
    meta, _ = split_meta(r["body"])
    assert meta["session"] == {"json": {"items": [0]}, "ttl": 60}
    seen = seen_of(r["body"])
    assert seen["exists"] is False and seen["content"] is None and seen["content_type"] is None


def test_no_update_no_session_key(spawn: Any) -> None:
    d = spawn(MODEL)
    d.start()
    r = infer_meta(d, 1, None)
    meta, _ = split_meta(r["body"])
    assert "session" not in meta and seen_of(r["body"]) == {"none": True}
    r = infer_meta(d, 2, {"id": "s", "exists": True, "content_type": "application/json", "json": {"x": 1}}, "mutate")
    meta, _ = split_meta(r["body"])
    assert "session" not in meta  # changing content records nothing


def test_bytes_sessions_both_ways(spawn: Any) -> None:
    d = spawn(MODEL)
    d.start()
    raw = bytes(range(256))
    r = infer_meta(d, 1, {"id": "v", "exists": True, "content_type": "audio/wav",
                          "base64": base64.b64encode(raw).decode()}, "bytes")
    meta, _ = split_meta(r["body"])
    assert meta["session"] == {"base64": base64.b64encode(b"\x00\xffpcm").decode(), "content_type": "audio/L16"}
    seen = seen_of(r["body"])
    assert bytes(seen["content"]) == raw and seen["content_type"] == "audio/wav"


def test_delete_and_failures(spawn: Any) -> None:
    d = spawn(MODEL)
    d.start()
    s = {"id": "s", "exists": True, "content_type": "application/json", "json": 1}
    meta, _ = split_meta(infer_meta(d, 1, s, "delete")["body"])
    assert meta["session"] == {"delete": True}
    r = infer_meta(d, 2, s, "fail")
    assert r["type"] == ERROR and json.loads(r["body"])["status"] == 400  # an ERROR carries no update
    r = infer_meta(d, 3, s, "bad_ttl")
    assert r["type"] == ERROR and "ttl" in json.loads(r["body"])["message"]


def test_malformed_session_meta_is_a_protocol_error(spawn: Any) -> None:
    d = spawn(MODEL)
    d.start()
    meta = {"id": "", "parameters": {}, "inputs": [], "session": {"id": 5}}
    d.send(INFER, 1, body_with_meta(meta))
    assert d.wait_exit() == 2
    assert "'session' must be an object" in d.log()


def test_generate_response_session_and_delete(spawn: Any) -> None:
    d = spawn(MODEL)
    d.start()
    s = {"id": "g", "exists": True, "content_type": "application/json", "json": {"turns": 0}}
    meta = {"id": "", "content_type": "application/json", "session": s}
    d.send(GENERATE, 1, body_with_meta(meta, b"{}"))
    rmeta, data = split_meta(d.expect(GENERATE_RESULT, 1))
    assert rmeta == {"content_type": "application/json", "session": {"json": {"turns": 1}, "ttl": 30}}
    assert json.loads(data) == {"had": {"turns": 0}}
    d.send(GENERATE, 2, body_with_meta(meta, b'{"delete": true}'))
    rmeta, _ = split_meta(d.expect(GENERATE_RESULT, 2))
    assert rmeta["session"] == {"delete": True}
    # a request without a session: Response(session=...) has nothing to update
    d.send(GENERATE, 3, body_with_meta({"id": "", "content_type": "application/json"}, b"{}"))
    rmeta, _ = split_meta(d.expect(GENERATE_RESULT, 3))
    assert "session" not in rmeta


def test_stream_update_travels_with_end(spawn: Any) -> None:
    d = spawn(MODEL)
    d.start()
    s = {"id": "g", "exists": False}
    meta = {"id": "", "content_type": "application/json", "stream": True, "session": s}
    d.send(GENERATE, 1, body_with_meta(meta, b'{"stream": true}'))
    types = []
    while True:
        frame_type, _, body = d.recv()
        types.append(frame_type)
        if frame_type == END:
            break
    endmeta, rest = split_meta(body)
    assert endmeta == {"session": {"json": {"streamed": True}}} and rest == b""
    # without an update END stays empty
    meta = {"id": "", "content_type": "application/json", "stream": True}
    d.send(GENERATE, 2, body_with_meta(meta, b'{"stream": true}'))
    while True:
        frame_type, _, body = d.recv()
        if frame_type == END:
            break
    assert body == b""


def test_whole_batch_answers_sessions_per_request(spawn: Any) -> None:
    d = spawn(BATCHER)
    d.start()
    entries = [batch_entry(11, 1, session={"id": "a", "exists": True, "content_type": "application/json", "json": 7}),
               batch_entry(12, 1),
               batch_entry(13, 1, session={"id": "c", "exists": False})]
    inputs = [("INPUT0", "FP32", [3], tensor_raw("FP32", [1.0, 2.0, 3.0]))]
    meta = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [3], "size": 12}], "batch": entries}
    d.send(BATCH, 99, body_with_meta(meta, inputs[0][3]))
    rmeta, _ = split_meta(d.expect(INFER_RESULT, 99))
    assert rmeta["sessions"] == [{"json": {"row": 0, "had": 7}}, None, {"json": {"row": 2, "had": None}}]


def test_per_request_batch_results_carry_sessions(spawn: Any) -> None:
    d = spawn(PER_REQUEST)
    d.start()
    entries = [batch_entry(11, 1, session={"id": "a", "exists": False}),
               batch_entry(12, 1, parameters={"fail": True}, session={"id": "b", "exists": False}),
               batch_entry(13, 1)]
    inputs = [("INPUT0", "FP32", [3], tensor_raw("FP32", [1.0, 2.0, 3.0]))]
    meta = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [3], "size": 12}], "batch": entries}
    d.send(BATCH, 99, body_with_meta(meta, inputs[0][3]))
    rmeta, _ = split_meta(d.expect(INFER_RESULT, 99))
    results = rmeta["results"]
    assert results[0]["session"] == {"json": {"id": "client-11"}}
    assert "error" in results[1] and "session" not in results[1]
    assert "session" not in results[2]


def test_update_values_are_checked_in_the_model() -> None:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "sdk" / "python"))
    import corral

    s = corral.Session("x")
    with pytest.raises(ValueError):
        s.update(b"x", content_type="application/json")
    with pytest.raises(ValueError):
        s.update({"a": 1}, ttl=-1)
    with pytest.raises((TypeError, ValueError)):
        s.update({"a": object()})
    assert s.pending_update is None
    s.update("text")
    assert s.pending_update == {"json": "text"}
    s.update(corral.DELETE)
    assert s.pending_update == {"delete": True}
    assert corral.Response(b"", session=[1]).session_update == {"json": [1]}
    assert corral.Response(b"").session_update is None
    with pytest.raises(AttributeError):
        s.id = "y"  # read-only
