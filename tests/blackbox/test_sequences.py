"""Triton's sequences (issue 16, item 3; docs/sessions.md, "Sequences"): requests carrying
parameters.sequence_id go to the instance that took the sequence's start, one at a time and in
order; an idle sequence is released (and its worker told); an unknown one without sequence_start
is Triton's 400; a sequence whose instance died is a 409 until it starts again.

The fixture is tests/models/accumulator: a per-sequence running sum kept in the instance, which
reports its instance id and pid with every answer and logs starts, ends and releases."""
from __future__ import annotations

import json
import os
import re
import signal
import threading
import time

import grpc
import pytest

import grpc_stubs
from conftest import raw_post, tensor, wait_for
from test_triton_meta import assert_error as error

SEQ_MANIFEST = "runtime: python\nentrypoint: worker.py\n"


def manifest(**keys) -> str:
    return SEQ_MANIFEST + "".join(f"{k}: {v}\n" for k, v in keys.items())


def step(d, model: str, seq_id, x: int = 1, start: bool = False, end: bool = False, wait: float = 30, **params):
    body = {"inputs": [tensor("X", "INT32", [1], [x])],
            "parameters": {"sequence_id": seq_id, "sequence_start": start, "sequence_end": end, **params}}
    return d.post(f"/v2/models/{model}/infer", body, timeout=wait)


def outs(r) -> dict:
    assert r.status_code == 200, r.text
    return {o["name"]: o["data"][0] for o in r.json()["outputs"]}


def ready(corral, instances: int, **keys):
    """A daemon serving the accumulator with every one of its instances ready."""
    corral.add("acc", "accumulator", manifest=manifest(instances=instances, load="eager", **keys))
    d = corral.start()
    d.wait_state("acc", "ready", timeout=60)
    wait_for(lambda: sum(i["state"] == "ready" for i in d.model("acc")["instances"]) == instances, timeout=60,
             what=f"{instances} ready instances")
    return d


def read_answer(s):
    """Status and JSON body of an answer to raw_post(..., close=True)."""
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def events(model_dir) -> list[str]:
    path = model_dir / "events.log"
    return path.read_text().splitlines() if path.exists() else []


def gauge(d, model: str) -> int:
    text = d.get("/metrics").text
    m = re.search(r'^corral_sequences_active\{model="%s"\} (\d+)$' % re.escape(model), text, re.M)
    assert m, "corral_sequences_active missing from /metrics"
    return int(m.group(1))


def test_sequences_stay_on_their_instance_under_concurrency(corral):
    d = ready(corral, 4)
    results: dict[int, list] = {}
    failures: list[str] = []

    def run(seq_id: int):
        got = []
        try:
            for k in range(8):
                r = step(d, "acc", seq_id, x=k + 1, start=k == 0, end=k == 7)
                got.append(outs(r))
        except AssertionError as e:
            failures.append(str(e))
        results[seq_id] = got

    threads = [threading.Thread(target=run, args=(100 + i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not failures, failures[:3]
    used = set()
    for seq_id, got in results.items():
        assert len(got) == 8
        assert len({(o["INSTANCE"], o["PID"]) for o in got}) == 1, (seq_id, got)
        assert [o["STEP"] for o in got] == list(range(1, 9)), (seq_id, got)
        assert [o["SUM"] for o in got] == [sum(range(1, k + 2)) for k in range(8)], (seq_id, got)
        used.add(got[0]["INSTANCE"])
    assert len(used) == 4, f"starts go to the instance with the fewest live sequences: {used}"
    assert gauge(d, "acc") == 0  # every sequence ended
    assert not any("released" in e for e in events(corral.repo / "acc"))


def test_one_sequence_runs_one_request_at_a_time_in_arrival_order(corral):
    # concurrency 4: the instance could run four at once, but never two of one sequence.
    corral.add("acc", "accumulator", manifest=manifest(concurrency=4))
    d = corral.start()
    assert outs(step(d, "acc", 9, x=0, start=True))["STEP"] == 1
    socks = []
    for i in range(8):  # sent one after another, answered later: arrival order is known
        body = {"inputs": [tensor("X", "INT32", [1], [1 << i])],
                "parameters": {"sequence_id": 9, "sleep_ms": 100}}
        socks.append(raw_post(d, "/v2/models/acc/infer", body, close=True, timeout=30))
        time.sleep(0.03)
    t0 = time.monotonic()
    answers = []
    for s in socks:
        status, body = read_answer(s)
        assert status == 200, body
        answers.append({o["name"]: o["data"][0] for o in body["outputs"]})
    assert [a["STEP"] for a in answers] == list(range(2, 10))
    assert [a["SUM"] for a in answers] == [(1 << (i + 1)) - 1 for i in range(8)]
    assert time.monotonic() - t0 > 0.4  # serial: 8 x 100 ms, less what ran while the later ones were sent


def test_idle_release_tells_the_worker_then_400(corral):
    model_dir = corral.add("acc", "accumulator", manifest=manifest(max_sequence_idle="300ms"))
    d = corral.start()
    assert outs(step(d, "acc", 7, start=True))["SUM"] == 1
    assert outs(step(d, "acc", 7, x=2))["SUM"] == 3
    assert gauge(d, "acc") == 1
    wait_for(lambda: any("released 7 idle" in e for e in events(model_dir)), timeout=5,
             what="end_sequence(7, 'idle') in the worker")
    assert gauge(d, "acc") == 0
    error(step(d, "acc", 7, x=3), 400, "inference request for sequence 7 to model 'acc' must specify the START "
                                       "flag on the first request of the sequence")
    # A start begins it afresh.
    o = outs(step(d, "acc", 7, x=5, start=True))
    assert (o["SUM"], o["STARTED"]) == (5, 0)
    # The config view shows Triton's sequence_batching for a model that tunes it.
    cfg = d.get("/v2/models/acc/config").json()
    assert cfg["sequence_batching"]["max_sequence_idle_microseconds"] == 300000


def test_default_idle_is_one_second(corral):
    corral.add("acc", "accumulator")
    d = corral.start()
    assert outs(step(d, "acc", 1, start=True))["SUM"] == 1
    time.sleep(0.5)
    assert outs(step(d, "acc", 1))["SUM"] == 2  # 0.5 s idle is within the default 1 s
    time.sleep(1.6)
    error(step(d, "acc", 1), 400, "must specify the START flag")
    assert "sequence_batching" not in d.get("/v2/models/acc/config").json()


def test_start_and_end_reach_the_worker_and_string_ids(corral):
    model_dir = corral.add("acc", "accumulator")
    d = corral.start()
    o = outs(step(d, "acc", "conv-a", x=4, start=True))
    assert (o["SUM"], o["SEQ"]) == (4, "'conv-a'")
    o = outs(step(d, "acc", 7, x=10, start=True))  # 7 and "7" are different sequences
    assert o["SEQ"] == "7"
    o = outs(step(d, "acc", "7", x=1, start=True))
    assert (o["SUM"], o["SEQ"]) == (1, "'7'")
    assert outs(step(d, "acc", 7, x=1))["SUM"] == 11
    assert outs(step(d, "acc", "conv-a", x=1, end=True))["SUM"] == 5
    error(step(d, "acc", "conv-a"), 400, "inference request for sequence conv-a to model 'acc'")
    log = events(model_dir)
    assert any(e.endswith("start 'conv-a'") for e in log) and any(e.endswith("end 'conv-a'") for e in log)
    # A start and end in one request: a one-request sequence.
    assert outs(step(d, "acc", 99, x=3, start=True, end=True))["SUM"] == 3
    error(step(d, "acc", 99), 400, "sequence 99")
    # A start of a live sequence ends the old one early (Triton's rule): the new one begins on its instance.
    first = outs(step(d, "acc", 7, x=0))
    o = outs(step(d, "acc", 7, x=2, start=True))
    assert (o["SUM"], o["INSTANCE"]) == (2, first["INSTANCE"])
    # Ids: bounded strings, unsigned integers.
    error(step(d, "acc", "x" * 257, start=True), 400, "parameters.sequence_id is a string of 257 bytes")
    assert outs(step(d, "acc", "\u00e9\"\n" * 60, start=True))["SUM"] == 1
    assert outs(step(d, "acc", 2 ** 63 - 1, start=True))["SUM"] == 1


def test_killed_instance_loses_its_sequences(corral):
    d = ready(corral, 2, max_sequence_idle="60s")
    a = outs(step(d, "acc", 1, start=True))
    b = outs(step(d, "acc", 2, start=True))
    assert a["INSTANCE"] != b["INSTANCE"]
    # Sequence 1 holds its instance with a slow request while another of it waits in its FIFO.
    slow = raw_post(d, "/v2/models/acc/infer", {"inputs": [tensor("X", "INT32", [1], [1])],
                                               "parameters": {"sequence_id": 1, "sleep_ms": 5000}}, close=True)
    time.sleep(0.3)
    waiting = raw_post(d, "/v2/models/acc/infer", {"inputs": [tensor("X", "INT32", [1], [1])],
                                                  "parameters": {"sequence_id": 1}}, close=True)
    time.sleep(0.3)
    os.kill(a["PID"], signal.SIGKILL)

    status, body = read_answer(slow)
    assert status == 502, body
    status, body = read_answer(waiting)
    assert status == 409, body
    for needle in ("model 'acc'", "sequence 1", f"instance {a['INSTANCE']}", f"pid {a['PID']}",
                   "killed by signal 9", "sequence_start"):
        assert needle in body["error"], body
    # The next request of it, once the instance is back, is a 409 too: never silently sent elsewhere.
    wait_for(lambda: any(i["state"] == "ready" and i["pid"] != a["PID"] and i["id"] == a["INSTANCE"]
                         for i in d.model("acc")["instances"]), timeout=60, what="the replacement")
    error(step(d, "acc", 1), 409, "sequence 1", f"pid {a['PID']}", "start it again with sequence_start")
    # The other sequence lives on; a new start of the lost one works at once.
    assert outs(step(d, "acc", 2, x=5))["SUM"] == 6
    o = outs(step(d, "acc", 1, x=3, start=True))
    assert (o["SUM"], o["STARTED"]) == (3, 0)
    assert outs(step(d, "acc", 1, x=1))["SUM"] == 4
    assert gauge(d, "acc") == 2


def test_scale_down_prefers_instances_without_sequences_and_waits_for_them(corral):
    d = ready(corral, 3, max_sequence_idle="5s")
    a = outs(step(d, "acc", 1, start=True))
    b = outs(step(d, "acc", 2, start=True))
    pinned = {a["INSTANCE"], b["INSTANCE"]}
    assert len(pinned) == 2
    # To 2: the one without a sequence goes.
    assert d.post("/v1/models/acc/scale", {"instances": 2}).status_code == 200
    wait_for(lambda: {i["id"] for i in d.model("acc")["instances"]} == pinned, timeout=30,
             what="the instance without sequences to go")
    # To 1: one with a live sequence retires, but serves its sequence until it ends.
    assert d.post("/v1/models/acc/scale", {"instances": 1}).status_code == 200
    time.sleep(0.5)
    retiring = [i for i in d.model("acc")["instances"] if i["retiring"]]
    assert len(retiring) == 1 and retiring[0]["state"] == "ready"
    seq_of = {a["INSTANCE"]: 1, b["INSTANCE"]: 2}
    s = seq_of[retiring[0]["id"]]
    o = outs(step(d, "acc", s, x=10))
    assert (o["SUM"], o["INSTANCE"]) == (11, retiring[0]["id"])
    # No new start goes to it.
    for k in range(3):
        assert outs(step(d, "acc", 50 + k, start=True))["INSTANCE"] != retiring[0]["id"]
    assert outs(step(d, "acc", s, x=1, end=True))["SUM"] == 12
    wait_for(lambda: len(d.model("acc")["instances"]) == 1, timeout=30,
             what="the retiring instance to stop once its sequence ended")


def test_deadline_and_client_gone_while_waiting_in_the_fifo(corral):
    corral.add("acc", "accumulator", manifest=manifest(concurrency=2))
    d = corral.start()
    assert outs(step(d, "acc", 3, start=True))["SUM"] == 1
    slow = raw_post(d, "/v2/models/acc/infer", {"inputs": [tensor("X", "INT32", [1], [1])],
                                               "parameters": {"sequence_id": 3, "sleep_ms": 1500}}, close=True)
    time.sleep(0.2)
    t0 = time.monotonic()
    error(step(d, "acc", 3, x=100, wait=10, timeout=300000), 504,
          "waiting behind earlier requests of sequence 3")
    assert time.monotonic() - t0 < 1.2
    # A client that leaves while its request waits: it never runs.
    gone = raw_post(d, "/v2/models/acc/infer", {"inputs": [tensor("X", "INT32", [1], [1000])],
                                               "parameters": {"sequence_id": 3}}, close=True)
    time.sleep(0.1)
    gone.close()
    assert read_answer(slow)[0] == 200
    time.sleep(0.3)
    o = outs(step(d, "acc", 3, x=1))
    assert o["SUM"] == 3, "neither the timed-out request nor the abandoned one ran"
    # The other slot of the instance served other work meanwhile: sequences hold one slot, not the instance.


def test_sequences_with_batching_go_alone(corral):
    corral.add("acc", "accumulator", manifest=manifest(instances=2) + "batching:\n  max_batch_size: 8\n"
                                                                        "  max_queue_delay: 50ms\n")
    d = corral.start()
    results: dict[int, list] = {}

    def run(seq_id: int):
        results[seq_id] = [outs(step(d, "acc", seq_id, x=k + 1, start=k == 0, end=k == 4)) for k in range(5)]

    threads = [threading.Thread(target=run, args=(i + 1,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for seq_id, got in results.items():
        assert [o["SUM"] for o in got] == [1, 3, 6, 10, 15], got
        assert len({o["INSTANCE"] for o in got}) == 1
    assert len(results) == 8
    # Every execution carried one request: a sequence's requests never share a batch.
    text = d.get("/metrics").text
    count = re.search(r'^nv_inference_count\{model="acc",version="1"\} (\d+)', text, re.M)
    execs = re.search(r'^nv_inference_exec_count\{model="acc",version="1"\} (\d+)', text, re.M)
    assert count and execs and count.group(1) == execs.group(1) == "40", (count, execs)


def test_sequences_over_grpc(corral):
    corral.add("acc", "accumulator")
    d = corral.start()
    pb, _ = grpc_stubs.load()
    stub, channel = grpc_stubs.stub(d.grpc_port)
    try:
        def req(seq, x, **flags):
            params = {"sequence_id": pb.InferParameter(string_param=seq) if isinstance(seq, str)
                      else pb.InferParameter(int64_param=seq)}
            for k, v in flags.items():
                params[k] = pb.InferParameter(bool_param=v)
            return pb.ModelInferRequest(
                model_name="acc", parameters=params,
                inputs=[pb.ModelInferRequest.InferInputTensor(name="X", datatype="INT32", shape=[1],
                                                              contents=pb.InferTensorContents(int_contents=[x]))])

        def total(resp):
            i = [o.name for o in resp.outputs].index("SUM")
            return int.from_bytes(resp.raw_output_contents[i], "little", signed=True)

        assert total(stub.ModelInfer(req(11, 2, sequence_start=True), timeout=30)) == 2
        assert total(stub.ModelInfer(req(11, 3), timeout=30)) == 5
        assert total(stub.ModelInfer(req("g", 1, sequence_start=True), timeout=30)) == 1
        assert total(stub.ModelInfer(req(11, 1, sequence_end=True), timeout=30)) == 6
        with pytest.raises(grpc.RpcError) as e:
            stub.ModelInfer(req(11, 1), timeout=30)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "inference request for sequence 11 to model 'acc' must specify the START flag" in e.value.details()
        assert total(stub.ModelInfer(req("g", 4), timeout=30)) == 5
        # ModelStreamInfer, as tritonclient's async_stream_infer sends a sequence: answered in order.
        stream = [req(12, 1, sequence_start=True), req(12, 2), req(12, 3), req(12, 4, sequence_end=True)]
        answers = list(stub.ModelStreamInfer(iter(stream), timeout=30))
        assert [a.error_message for a in answers] == [""] * 4
        assert [total(a.infer_response) for a in answers] == [1, 3, 6, 10]
    finally:
        channel.close()


def test_c_sdk_sees_the_sequence_and_its_release(corral):
    corral.add("cseq", "sequences_c")
    d = corral.start()

    def answer(**params):
        r = d.post("/v2/models/cseq/infer", {"inputs": [tensor("X", "INT32", [1], [0])], "parameters": params})
        assert r.status_code == 200, r.text
        return {o["name"]: o["data"][0] for o in r.json()["outputs"]}

    assert json.loads(answer(sequence_id="c1", sequence_start=True)["SEQ"]) == {"id": "c1", "start": True,
                                                                                 "end": False}
    assert json.loads(answer(sequence_id="c1")["SEQ"])["start"] is False
    # max_sequence_idle: 300ms in its manifest: the C model's end_sequence is called.
    wait_for(lambda: answer()["RELEASED"] == '"c1" idle\n', timeout=5, what="end_sequence in the C model")


def test_memory_replacement_loses_the_sequence(corral):
    corral.add("leak", "leaks_memory", manifest="runtime: python\nentrypoint: worker.py\nmax_sequence_idle: 60s\n"
                                                "limits: {memory: 150MiB}\nparameters: {leak_mb: 0}\n")
    d = corral.start()
    first = outs(step(d, "leak", 4, start=True))
    outs(step(d, "leak", 4, leak_mb=200))  # answered; then the instance is replaced between requests
    wait_for(lambda: any(i["pid"] and i["pid"] != first["PID"] and i["state"] == "ready"
                         for i in d.model("leak")["instances"]), timeout=60, what="the replacement")
    error(step(d, "leak", 4), 409, "sequence 4", f"pid {first['PID']}", "limits.memory", "sequence_start")
    assert outs(step(d, "leak", 4, start=True))["COUNT"] == 1


def test_unload_drops_sequences(corral):
    corral.add("acc", "accumulator", manifest=manifest(max_sequence_idle="60s"))
    d = corral.start()
    assert outs(step(d, "acc", 5, start=True))["SUM"] == 1
    slow = raw_post(d, "/v2/models/acc/infer", {"inputs": [tensor("X", "INT32", [1], [1])],
                                               "parameters": {"sequence_id": 5, "sleep_ms": 1000}}, close=True)
    time.sleep(0.2)
    waiting = raw_post(d, "/v2/models/acc/infer", {"inputs": [tensor("X", "INT32", [1], [1])],
                                                  "parameters": {"sequence_id": 5}}, close=True)
    time.sleep(0.2)
    assert gauge(d, "acc") == 1
    assert d.model("acc")["queue"] == 1  # the request waiting in the sequence's FIFO counts as queued
    unloading = threading.Thread(target=lambda: d.post("/v2/repository/models/acc/unload", {}))
    unloading.start()
    status, body = read_answer(waiting)
    assert status == 503 and "being unloaded" in body["error"], body
    assert read_answer(slow)[0] == 200  # the running one finishes
    unloading.join(timeout=30)
    d.wait_state("acc", "unloaded")
    assert gauge(d, "acc") == 0
    error(step(d, "acc", 5), 400, "must specify the START flag")  # an unloaded model knows no sequence


def test_triton_generate_takes_sequences(corral):
    corral.add("acc", "accumulator", manifest=manifest(instances=2))

    def gen(x, path="generate", **params):
        return d.post(f"/v2/models/acc/{path}", {"x": x, "parameters": params})

    d = corral.start()
    r = gen(2, sequence_id="g", sequence_start=True)
    assert r.status_code == 200, r.text
    first = r.json()
    assert (first["sum"], first["seq"]) == (2, "'g'")
    r = gen(3, path="generate_stream", sequence_id="g")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/event-stream"), r.text
    event = json.loads(r.text.split("data: ", 1)[1].split("\n", 1)[0])
    assert (event["sum"], event["instance"]) == (5, first["instance"])
    r = gen(1, sequence_id="g", sequence_end=True)
    assert r.status_code == 200 and r.json()["sum"] == 6, r.text
    error(gen(1, sequence_id="g"), 400, "inference request for sequence g to model 'acc' must specify the START")
    error(gen(1, sequence_start=True), 400, "parameters.sequence_start needs a parameters.sequence_id")
    error(gen(1, sequence_id=[1]), 400, "parameters.sequence_id must be an unsigned integer or a string")


def test_sequences_over_grpc_to_a_decoupled_model(corral):
    """ModelStreamInfer to a decoupled model goes to its generate: the sequence goes with it."""
    corral.add("acc", "accumulator", manifest=manifest(instances=2, decoupled="true"))
    d = corral.start()
    pb, _ = grpc_stubs.load()
    stub, channel = grpc_stubs.stub(d.grpc_port)
    try:
        def req(seq, x, **flags):
            params = {"sequence_id": pb.InferParameter(int64_param=seq)}
            for k, v in flags.items():
                params[k] = pb.InferParameter(bool_param=v)
            return pb.ModelInferRequest(
                model_name="acc", parameters=params, id=f"r{x}",
                inputs=[pb.ModelInferRequest.InferInputTensor(name="x", datatype="INT32", shape=[1],
                                                              contents=pb.InferTensorContents(int_contents=[x]))])

        def out(resp, name):
            i = [o.name for o in resp.outputs].index(name)
            return int.from_bytes(resp.raw_output_contents[i], "little", signed=True)

        stream = [req(21, 2, sequence_start=True), req(21, 3), req(21, 4, sequence_end=True), req(21, 1)]
        answers = list(stub.ModelStreamInfer(iter(stream), timeout=30))
        # Decoupled answers come as they are made: the refused one (an END was accepted before it) at once.
        refused = [a for a in answers if a.error_message]
        assert len(refused) == 1 and "inference request for sequence 21 to model 'acc' must specify the START " \
            "flag" in refused[0].error_message, answers
        ok = [a.infer_response for a in answers if not a.error_message]
        assert [r.id for r in ok] == ["r2", "r3", "r4"], answers  # one at a time, in order
        assert [out(r, "sum") for r in ok] == [2, 5, 9]
        assert len({out(r, "instance") for r in ok}) == 1
    finally:
        channel.close()
