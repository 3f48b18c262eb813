"""Sessions reach the model (issue 16, item 2), against a real daemon and real
Python and C workers: a request naming a session (parameters.session on v2
infer over HTTP and gRPC, "session" in a generate body, the Session-Id header
for any body) carries the session's content to its model; the model's update
is stored when, and only when, the request succeeded; the next request sees it,
on another instance or another model. Failed requests (an exception, a 400, a
worker that dies, a deadline, a stream that breaks) change nothing; a bytes
session travels both ways; batches carry each request's own; an update the
store refuses leaves a 200 answer, the session as it was, and a warning.
Fixtures: tests/models/counter (Python), tests/models/session_c (C)."""
from __future__ import annotations

import concurrent.futures
import json
import struct
import time

import grpc
import pytest

import grpc_stubs
from conftest import load, tensor, wait_for

X = [tensor("X", "INT32", [1], [0])]
SSE = {"Accept": "text/event-stream"}


def put(d, sid, body, ctype="application/json"):
    data = body if isinstance(body, bytes) else json.dumps(body)
    r = d.http.put(d.url(f"/v1/sessions/{sid}"), data=data, headers={"Content-Type": ctype}, timeout=30)
    assert r.status_code in (200, 201), r.text
    return r


def stored(d, sid):
    """The session's content (parsed JSON, or (content type, bytes)), or None when there is none."""
    r = d.get(f"/v1/sessions/{sid}")
    if r.status_code == 404:
        return None
    assert r.status_code == 200, r.text
    if r.headers["Content-Type"].startswith("application/json"):
        return r.json()
    return r.headers["Content-Type"], r.content


def call(d, model, session=None, http_timeout=30, **params):
    if session is not None:
        params["session"] = session
    body = {"inputs": X, "parameters": params}
    return d.post(f"/v2/models/{model}/infer", body, timeout=http_timeout)


def answer(r):
    """(instance, what the request saw of its session) of a counter answer."""
    assert r.status_code == 200, r.text
    outs = {o["name"]: o["data"] for o in r.json()["outputs"]}
    return outs["INSTANCE"][0], json.loads(outs["SEEN"][0])


def loaded(d, model):
    """d, once model is loaded with every instance ready."""
    assert load(d, model).status_code == 200
    wait_for(lambda: all(i["state"] == "ready" for i in d.model(model)["instances"]), what=f"{model}'s instances")
    return d


@pytest.fixture
def counter(corral):
    corral.add("counter", "counter")
    return loaded(corral.start(), "counter")


def test_without_a_session_the_model_sees_none(counter):
    inst, seen = answer(call(counter, "counter"))
    assert seen is None


def test_a_missing_session_is_absent_and_the_update_creates_it(counter):
    inst, seen = answer(call(counter, "counter", "fresh"))
    assert seen == {"id": "fresh", "exists": False, "content_type": None, "content": None}
    assert stored(counter, "fresh") == {"items": [inst]}
    r = counter.get("/v1/sessions/fresh")
    assert 3500 <= int(r.headers["Session-TTL"]) <= 3600  # the default ttl


def test_the_update_is_seen_by_the_next_request_on_another_instance(counter):
    put(counter, "chat", {"items": []})
    first, seen = answer(call(counter, "counter", "chat"))
    assert seen["exists"] and seen["content"] == {"items": []}
    assert stored(counter, "chat") == {"items": [first]}
    # Hold the instance that served it; the next request can only go to the other one.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        while True:
            busy = pool.submit(call, counter, "counter", None, 30, sleep=1.5, mode="read")
            time.sleep(0.3)
            if [i["inflight"] for i in counter.model("counter")["instances"] if i["id"] == first] == [1]:
                break
            busy.result()
        second, seen = answer(call(counter, "counter", "chat"))
        assert answer(busy.result())[0] == first
    assert second != first
    assert seen["content"] == {"items": [first]}
    assert stored(counter, "chat") == {"items": [first, second]}


@pytest.mark.parametrize("mode,status", [("raise", 500), ("bad", 400), ("die", 502)])
def test_a_failed_request_does_not_update(counter, mode, status):
    put(counter, "keep", {"items": ["before"]})
    r = call(counter, "counter", "keep", mode=mode)
    assert r.status_code == status, r.text
    assert stored(counter, "keep") == {"items": ["before"]}
    call(counter, "counter", "gone", mode=mode)  # nor does it create one
    assert stored(counter, "gone") is None


def test_a_request_past_its_deadline_does_not_update(counter):
    put(counter, "late", {"items": ["before"]})
    r = call(counter, "counter", "late", sleep=1.0, timeout=200000)  # microseconds
    assert r.status_code == 504, r.text
    time.sleep(1.5)  # the worker's answer, update and all, arrives after the 504: dropped
    assert stored(counter, "late") == {"items": ["before"]}


def test_bytes_sessions_both_ways(counter):
    put(counter, "voice", bytes(range(8)), "audio/x-sample")
    inst, seen = answer(call(counter, "counter", "voice", mode="bytes"))
    assert seen == {"id": "voice", "exists": True, "content_type": "audio/x-sample", "hex": bytes(range(8)).hex()}
    assert stored(counter, "voice") == ("application/x-test", b"\x00\x01raw")


def test_delete_and_ttl_from_the_model(counter):
    put(counter, "d", {"items": []})
    answer(call(counter, "counter", "d", mode="delete"))
    assert stored(counter, "d") is None
    answer(call(counter, "counter", "t", ttl=7))
    assert int(counter.get("/v1/sessions/t").headers["Session-TTL"]) <= 7


def test_bad_session_ids_are_400(counter):
    for bad in ("has space", "../x", "", "x" * 200):
        r = call(counter, "counter", bad)
        assert r.status_code == 400 and "parameters.session" in r.json()["error"], r.text
    r = counter.post("/v2/models/counter/infer", {"inputs": X, "parameters": {"session": 5}})
    assert r.status_code == 400 and "parameters.session must be a string" in r.json()["error"]
    r = counter.post("/v1/models/counter/generate", {"session": "a b"})
    assert r.status_code == 400 and "session" in r.json()["error"]
    r = counter.post("/v1/models/counter/generate", {"session": 1})
    assert r.status_code == 400 and "must be a string" in r.json()["error"]
    r = counter.post("/v1/models/counter/generate", {"session": "a"}, headers={"Session-Id": "b"})
    assert r.status_code == 400 and "different sessions" in r.json()["error"]


def test_generate_body_and_header_name_the_session(counter):
    put(counter, "g", {"items": [9]})
    r = counter.post("/v1/models/counter/generate", {"session": "g"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["seen"]["content"] == {"items": [9]}
    assert stored(counter, "g") == {"items": [9, body["instance"]]}
    # a raw body names it with the header
    r = counter.http.post(counter.url("/v1/models/counter/generate"), data=b"raw bytes",
                          headers={"Content-Type": "application/octet-stream", "Session-Id": "g"}, timeout=30)
    assert r.status_code == 200, r.text
    assert len(stored(counter, "g")["items"]) == 3
    # Triton's generate extension takes "session" in its JSON object
    r = counter.post("/v2/models/counter/generate", {"session": "g", "mode": "read"})
    assert r.status_code == 200, r.text
    assert len(r.json()["seen"]["content"]["items"]) == 3
    # an answer the endpoint refuses (500) stores nothing, though the model's update came with it
    r = counter.post("/v2/models/counter/generate", {"session": "g", "as_list": True})
    assert r.status_code == 500 and "not a JSON object" in r.text, r.text
    assert len(stored(counter, "g")["items"]) == 3


def test_a_stream_stores_its_update_at_its_end(counter):
    put(counter, "s", {"items": []})
    r = counter.post("/v1/models/counter/generate", {"session": "s", "stream": True, "events": 3}, headers=SSE)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/event-stream"), r.text
    events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
    assert len(events) == 3
    assert stored(counter, "s") == {"items": [events[0]["instance"]]}
    # a stream that breaks after setting its update stores nothing
    r = counter.post("/v1/models/counter/generate", {"session": "s", "stream": True, "events": 3,
                                                     "fail_after": True}, headers=SSE)
    assert r.status_code == 200 and "the stream broke" in r.text
    assert stored(counter, "s") == {"items": [events[0]["instance"]]}
    # Triton's generate_stream too
    r = counter.post("/v2/models/counter/generate_stream", {"session": "s", "events": 2})
    assert r.status_code == 200, r.text
    assert len(stored(counter, "s")["items"]) == 2


def test_two_models_share_one_session(corral):
    corral.add("one", "counter")
    corral.add("two", "counter")
    d = corral.start()
    answer(call(d, "one", "shared"))
    inst, seen = answer(call(d, "two", "shared"))
    assert seen["content"] == {"items": [seen["content"]["items"][0]]}
    assert len(stored(d, "shared")["items"]) == 2


def test_a_refused_update_leaves_the_answer_and_the_session(corral):
    corral.add("counter", "counter")
    d = corral.start("--session-max-size", "64")
    put(d, "small", {"items": []})
    r = call(d, "counter", "small", mode="big", size=100)
    assert r.status_code == 200, r.text
    assert stored(d, "small") == {"items": []}
    wait_for(lambda: "update of session 'small' that was not stored (413)" in d.log(), what="the warning")
    assert "\ncorral_session_updates_refused_total 1\n" in d.get("/metrics").text


def test_batches_carry_each_requests_session(corral):
    corral.add("counter", "counter", manifest="runtime: python\nentrypoint: worker.py\ninstances: 1\n"
               "batching:\n  max_batch_size: 8\n  max_queue_delay: 300ms\n")
    d = corral.start()
    call(d, "counter", mode="read")  # loaded and warm
    ids = [f"b{i}" for i in range(4)]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        rs = list(pool.map(lambda sid: d.post("/v2/models/counter/infer", {
            "inputs": X, "parameters": {"session": sid}}, timeout=30), ids))
    batch = []
    for sid, r in zip(ids, rs):
        assert r.status_code == 200, r.text
        outs = {o["name"]: o["data"] for o in r.json()["outputs"]}
        assert json.loads(outs["SEEN"][0])["id"] == sid
        batch.append(outs["BATCH"][0])
        assert stored(d, sid) == {"items": [0]}
    assert max(batch) > 1, "no batch formed"


def test_grpc_infer_carries_the_session(counter):
    pb, _ = grpc_stubs.load()
    stub, channel = grpc_stubs.stub(counter.grpc_port)
    try:
        put(counter, "rpc", {"items": ["http"]})
        req = pb.ModelInferRequest(model_name="counter", inputs=[
            pb.ModelInferRequest.InferInputTensor(name="X", datatype="INT32", shape=[1],
                                                  contents=pb.InferTensorContents(int_contents=[0]))])
        req.parameters["session"].string_param = "rpc"
        resp = stub.ModelInfer(req, timeout=30)
        names = [o.name for o in resp.outputs]
        raw = resp.raw_output_contents[names.index("SEEN")]
        (n,) = struct.unpack_from("<I", raw)
        assert json.loads(raw[4:4 + n])["content"] == {"items": ["http"]}
        assert len(stored(counter, "rpc")["items"]) == 2
        req.parameters["session"].string_param = "bad id"
        with pytest.raises(grpc.RpcError) as e:
            stub.ModelInfer(req, timeout=30)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "parameters.session" in e.value.details()
    finally:
        channel.close()


# ---- the C SDK (tests/models/session_c) ----

def c_call(d, session=None, **params):
    r = call(d, "sc", session, **params)
    assert r.status_code == 200, r.text
    outs = {o["name"]: o["data"] for o in r.json()["outputs"]}
    return outs["SESSION"][0]


@pytest.fixture
def c_model(corral):
    corral.add("sc", "session_c")
    return loaded(corral.start(), "sc")


def test_c_model_reads_and_updates(c_model):
    d = c_model
    assert c_call(d) == "none"
    assert c_call(d, "c1") == "absent"
    assert stored(d, "c1") is None  # read only: nothing stored
    c_call(d, "c1", mode="count")
    assert stored(d, "c1")["n"] == 1
    assert json.loads(c_call(d, "c1", mode="count"))["n"] == 1
    assert stored(d, "c1")["n"] == 2
    r = call(d, "sc", "c1", mode="fail")
    assert r.status_code == 400
    assert stored(d, "c1")["n"] == 2
    c_call(d, "c1", mode="bytes")
    assert stored(d, "c1") == ("application/x-raw", struct.pack("<i", 0))
    c_call(d, "c1", mode="delete")
    assert stored(d, "c1") is None


def test_c_model_stream_update_goes_with_its_end(c_model):
    d = c_model
    put(d, "cs", {"streamed": 4})
    r = d.post("/v1/models/sc/generate", {"session": "cs", "stream": True}, headers=SSE)
    assert r.status_code == 200 and r.text.count("data: ") == 2, r.text
    assert stored(d, "cs") == {"streamed": 5}
    r = d.post("/v1/models/sc/generate", {"session": "cs"})  # collected into one answer: the update too
    assert r.status_code == 200, r.text
    assert stored(d, "cs") == {"streamed": 6}


DECOUPLED = '''
import corral

class Turns(corral.Model):
    def generate(self, request):
        s = request.session
        n = s.content["n"] if s is not None and s.exists else 0
        def events():
            yield {"n": n}
            if s is not None:
                s.update({"n": n + 1})
        return events()

if __name__ == "__main__":
    corral.run(Turns)
'''


def test_grpc_stream_to_a_decoupled_model_carries_the_session(corral):
    corral.add("turns", None, manifest="runtime: python\nentrypoint: worker.py\ndecoupled: true\n",
               files={"worker.py": DECOUPLED})
    d = loaded(corral.start(), "turns")
    pb, _ = grpc_stubs.load()
    stub, channel = grpc_stubs.stub(d.grpc_port)
    try:
        def req():
            r = pb.ModelInferRequest(model_name="turns", inputs=[
                pb.ModelInferRequest.InferInputTensor(name="x", datatype="INT32", shape=[1],
                                                      contents=pb.InferTensorContents(int_contents=[0]))])
            r.parameters["session"].string_param = "dec"
            return r
        for want in (0, 1):
            (resp,) = list(stub.ModelStreamInfer(iter([req()]), timeout=30))
            assert resp.error_message == "", resp.error_message
            (n,) = struct.unpack("<q", resp.infer_response.raw_output_contents[0])
            assert n == want
        assert stored(d, "dec") == {"n": 2}
    finally:
        channel.close()


def test_cli_generate_names_the_session(counter):
    """`corral generate NAME ... --session ID` carries the session; the update is stored as over HTTP."""
    import os
    import subprocess

    from conftest import BIN
    put(counter, "cli", {"items": [4]})
    env = dict(os.environ, CORRAL_URL=counter.base)
    env.pop("CORRAL_TOKEN", None)
    p = subprocess.run([BIN, "generate", "counter", "{}", "--session", "cli"], capture_output=True, env=env,
                       timeout=30)
    assert p.returncode == 0, p.stderr
    body = json.loads(p.stdout)
    assert body["seen"]["content"] == {"items": [4]}
    assert stored(counter, "cli") == {"items": [4, body["instance"]]}
    p = subprocess.run([BIN, "generate", "counter", "[1]", "--session", "cli"], capture_output=True, env=env,
                       timeout=30)
    assert p.returncode != 0 and b"--session sets a key of a JSON object" in p.stderr, p.stderr
