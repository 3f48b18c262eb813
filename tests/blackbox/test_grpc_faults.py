"""gRPC under faults and load (issue 14): real grpcio clients against corral's GRPCInferenceService.

What must stay true over gRPC as over HTTP (test_faults.py, test_pipeline.py): a call whose deadline
passes, or whose client cancels or vanishes, frees its instance at once, because the worker is told to
CANCEL (the instance keeps its pid and serves the next request at once; /metrics counts the request as a
failure); a request whose deadline passes in the queue never reaches a worker; a stream keeps at most
its window of requests (32) in the daemon however slowly its client reads; every call gets exactly one
outcome under a kill -9 storm, and a worker's death is an INTERNAL that names the model, instance, pid
and signal; a message past --max-body is RESOURCE_EXHAUSTED; SIGTERM lets calls in flight finish and
refuses new ones; garbage, as a message or on the socket, gets an error and disturbs nothing else.

Timing checks compare durations measured in the same test (the request after a cancelled one against
the delay the cancelled one asked for), never tight wall-clock bounds: the machine may be shared.
Models: examples/models/echo-c (request parameter delay_ms sleeps, and stops at once on CANCEL),
examples/models/tokens (decoupled), tests/models/steerable (request parameter exit, sleep).
"""
from __future__ import annotations

import itertools
import os
import queue
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import grpc
import pytest

import grpc_stubs
from conftest import ROOT, alive, ctl_manifest, load, processes_under, wait_for

pb, pb_grpc = grpc_stubs.load()
MiB = 1 << 20
LONG_MS = 20000  # a run the tests cut short: were it not, the next request would wait this long
METHOD = "/inference.GRPCInferenceService/"


# ---------------------------------------------------------------- helpers


def echo_c(instances: int = 1, extra: str = "") -> str:
    return f"runtime: exec\nentrypoint: echo-c\ninstances: {instances}\n{extra}"


def request(model: str, data: bytes = b"\x07", rid: str = "", datatype: str = "UINT8", **params):
    """A ModelInferRequest of one input INPUT0 (raw bytes); keyword arguments become int64 parameters."""
    req = pb.ModelInferRequest(model_name=model, id=rid)
    width = {"UINT8": 1, "INT32": 4}[datatype]
    req.inputs.add(name="INPUT0", datatype=datatype, shape=[len(data) // width])
    req.raw_input_contents.append(data)
    for k, v in params.items():
        req.parameters[k].int64_param = v
    return req


def steer(model: str, **params):
    req = pb.ModelInferRequest(model_name=model)
    req.inputs.add(name="X", datatype="INT32", shape=[1])
    req.raw_input_contents.append(struct.pack("<i", 0))
    for k, v in params.items():
        req.parameters[k].int64_param = v
    return req


def output(resp, name: str = "OUTPUT0") -> bytes:
    for i, o in enumerate(resp.outputs):
        if o.name == name:
            return resp.raw_output_contents[i]
    raise AssertionError(f"no output {name} in {resp}")


def held(d, name: str) -> int:
    """Requests of the model in flight at its instances or in its queue."""
    m = d.model(name)
    return m["queue"] + sum(i["inflight"] for i in m["instances"])


def wait_held(d, name: str, n: int, timeout: float = 10):
    return wait_for(lambda: held(d, name) == n, timeout=timeout, interval=0.01,
                    what=f"{n} request(s) of {name} in flight or queued")


def failures(d, name: str, reason: str) -> float:
    """nv_inference_request_failure of the model for one reason (0 when the series is absent)."""
    for line in d.get("/metrics").text.splitlines():
        if line.startswith("nv_inference_request_failure{") and f'model="{name}"' in line \
                and f'reason="{reason}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def metric(d, family: str, name: str) -> float:
    for line in d.get("/metrics").text.splitlines():
        if line.startswith(family + "{") and f'model="{name}"' in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {family} for {name} in /metrics")


def timed_call(stub, req, timeout: float = 60) -> float:
    """Seconds one ModelInfer took (it must succeed)."""
    t0 = time.monotonic()
    stub.ModelInfer(req, timeout=timeout)
    return time.monotonic() - t0


def check_freed(d, stub, name: str, pid: int, cancelled_ms: int, reasons: tuple, before: float):
    """After a cut-short LONG_MS run: the instance frees at once, serves the next request fast (a fraction of
    the delay the cut request asked for), under the same pid (the worker took the CANCEL, it was not replaced),
    and /metrics counts the cut request as a failure for one of reasons (before: their sum before the cut)."""
    t0 = time.monotonic()
    wait_held(d, name, 0, timeout=cancelled_ms / 1000)
    freed = time.monotonic() - t0
    took = timed_call(stub, request(name))
    ratio = (freed + took) / (cancelled_ms / 1000)
    print(f"[{name}] instance freed {freed:.3f}s after the cut, next call {took:.3f}s: {ratio:.3f} of the "
          f"{cancelled_ms} ms the cut request asked for", flush=True)
    assert ratio < 0.25, f"the instance was held {ratio:.2f} of the cancelled request's delay"
    inst = d.model(name)["instances"][0]
    assert inst["pid"] == pid and inst["restarts"] == 0, f"the worker was replaced, not cancelled: {inst}"
    wait_for(lambda: sum(failures(d, name, r) for r in reasons) == before + 1, timeout=5,
             what=f"the cut request counted as a failure ({' or '.join(reasons)})")


def up(d, name: str):
    """Loads the model (models load lazily) and waits until every instance has a worker."""
    r = load(d, name)
    assert r.status_code == 200, r.text
    wait_for(lambda: (lambda m: all(i["state"] == "ready" and i["pid"] for i in m["instances"]))(d.model(name)),
             timeout=20, what=f"every instance of {name} ready")


def ready_pid(d, name: str) -> int:
    up(d, name)
    return wait_for(lambda: d.worker_pids(name), what=f"{name}'s worker")[0]


class Feed:
    """The request iterator of a ModelStreamInfer call, fed from the test; close() half-closes the stream."""
    END = object()

    def __init__(self):
        self.q: queue.Queue = queue.Queue()

    def put(self, req):
        self.q.put(req)

    def close(self):
        self.q.put(self.END)

    def __iter__(self):
        while True:
            item = self.q.get()
            if item is self.END:
                return
            yield item


# ---------------------------------------------------------------- 1. deadlines


def test_a_grpc_timeout_shorter_than_the_run_is_deadline_exceeded_and_the_worker_is_cancelled(corral):
    corral.add("echo-c", "echo-c")
    d = corral.start()
    stub, ch = grpc_stubs.stub(d.grpc_port)
    with ch:
        pid = ready_pid(d, "echo-c")
        stub.ModelInfer(request("echo-c"), timeout=30)
        # the daemon's deadline (REJECTED) and the client's cancel at the same instant (CANCELED) race
        reasons = ("REJECTED", "CANCELED")
        before = sum(failures(d, "echo-c", r) for r in reasons)
        t0 = time.monotonic()
        with pytest.raises(grpc.RpcError) as e:
            stub.ModelInfer(request("echo-c", delay_ms=LONG_MS), timeout=0.5)
        assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED, e.value
        assert time.monotonic() - t0 < LONG_MS / 1000 / 4
        check_freed(d, stub, "echo-c", pid, LONG_MS, reasons, before)


def test_parameters_timeout_is_deadline_exceeded_with_a_message_and_the_worker_is_cancelled(corral):
    corral.add("echo-c", "echo-c")
    d = corral.start()
    stub, ch = grpc_stubs.stub(d.grpc_port)
    with ch:
        pid = ready_pid(d, "echo-c")
        stub.ModelInfer(request("echo-c"), timeout=30)
        before = failures(d, "echo-c", "REJECTED")
        with pytest.raises(grpc.RpcError) as e:  # no gRPC deadline: the daemon's own ends the call
            stub.ModelInfer(request("echo-c", delay_ms=LONG_MS, timeout=500_000))
        assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED, e.value
        assert "echo-c" in e.value.details(), e.value.details()
        check_freed(d, stub, "echo-c", pid, LONG_MS, ("REJECTED",), before)


def test_a_deadline_passing_in_the_queue_is_deadline_exceeded_then_and_never_reaches_the_worker(corral):
    """pipeline 0: the late requests wait in the daemon's queue, behind the busy instance, not at the worker.
    One has a gRPC deadline (the client gives up then, and the daemon withdraws it), one only
    parameters.timeout (the daemon itself answers it, then), and a third is cancelled by its client."""
    corral.add("echo-c", "echo-c", manifest=echo_c(extra="pipeline: 0\n"))
    d = corral.start()
    stub, ch = grpc_stubs.stub(d.grpc_port)
    with ch:
        pid = ready_pid(d, "echo-c")
        stub.ModelInfer(request("echo-c"), timeout=30)
        busy = stub.ModelInfer.future(request("echo-c", delay_ms=LONG_MS), timeout=60)
        wait_held(d, "echo-c", 1)
        for late_req, grpc_timeout in ((request("echo-c", delay_ms=LONG_MS), 0.3),
                                       (request("echo-c", delay_ms=LONG_MS, timeout=300_000), 30)):
            t0 = time.monotonic()
            late = stub.ModelInfer.future(late_req, timeout=grpc_timeout)
            with pytest.raises(grpc.RpcError) as e:
                late.result()
            waited = time.monotonic() - t0
            assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED, e.value
            print(f"[queued-deadline] DEADLINE_EXCEEDED after {waited:.3f}s: {e.value.details()}", flush=True)
            assert waited < LONG_MS / 1000 / 4, f"the queued deadline was answered after {waited:.2f}s"
            assert not busy.done(), "the busy request ended first: the test proved nothing"
        assert "queued" in e.value.details() and "echo-c" in e.value.details(), e.value.details()
        # and one its client cancels while it waits
        gone = stub.ModelInfer.future(request("echo-c", delay_ms=LONG_MS), timeout=60)
        wait_held(d, "echo-c", 2)
        assert gone.cancel()
        wait_held(d, "echo-c", 1)
        assert not busy.done()
        busy.cancel()
        wait_held(d, "echo-c", 0)
        # only the warm-up and the busy request reached the worker; the three late ones left the queue
        assert metric(d, "nv_inference_exec_count", "echo-c") == 2
        wait_for(lambda: failures(d, "echo-c", "REJECTED") + failures(d, "echo-c", "CANCELED") == 4, timeout=5,
                 what="four failures counted")
        assert timed_call(stub, request("echo-c")) < LONG_MS / 1000 / 4
        assert d.model("echo-c")["instances"][0]["pid"] == pid


# ---------------------------------------------------------------- 2. cancellation


def test_a_cancelled_future_frees_the_instance_and_the_worker_gets_cancel(corral):
    corral.add("echo-c", "echo-c")
    d = corral.start()
    stub, ch = grpc_stubs.stub(d.grpc_port)
    with ch:
        pid = ready_pid(d, "echo-c")
        stub.ModelInfer(request("echo-c"), timeout=30)
        before = failures(d, "echo-c", "CANCELED")
        fut = stub.ModelInfer.future(request("echo-c", delay_ms=LONG_MS), timeout=60)
        wait_held(d, "echo-c", 1)
        assert fut.cancel()
        assert fut.cancelled()
        check_freed(d, stub, "echo-c", pid, LONG_MS, ("CANCELED",), before)


def test_a_closed_channel_cancels_its_call(corral):
    corral.add("echo-c", "echo-c")
    d = corral.start()
    stub, ch = grpc_stubs.stub(d.grpc_port)
    with ch:
        pid = ready_pid(d, "echo-c")
        stub.ModelInfer(request("echo-c"), timeout=30)
        before = failures(d, "echo-c", "CANCELED")
        gone_stub, gone = grpc_stubs.stub(d.grpc_port)
        fut = gone_stub.ModelInfer.future(request("echo-c", delay_ms=LONG_MS), timeout=60)
        wait_held(d, "echo-c", 1)
        gone.close()
        check_freed(d, stub, "echo-c", pid, LONG_MS, ("CANCELED",), before)
        assert fut.done()


CLIENT = """
import sys
sys.path.insert(0, sys.argv[1])
import grpc_stubs
pb, _ = grpc_stubs.load()
stub, ch = grpc_stubs.stub(int(sys.argv[2]))
req = pb.ModelInferRequest(model_name="echo-c")
req.inputs.add(name="INPUT0", datatype="UINT8", shape=[1])
req.raw_input_contents.append(b"x")
req.parameters["delay_ms"].int64_param = int(sys.argv[3])
print("calling", flush=True)
stub.ModelInfer(req, timeout=120)
print("answered", flush=True)
"""


def test_a_client_killed_mid_call_cancels_its_request(corral):
    corral.add("echo-c", "echo-c")
    d = corral.start()
    stub, ch = grpc_stubs.stub(d.grpc_port)
    with ch:
        pid = ready_pid(d, "echo-c")
        stub.ModelInfer(request("echo-c"), timeout=30)
        before = failures(d, "echo-c", "CANCELED")
        client = subprocess.Popen([sys.executable, "-c", CLIENT, str(ROOT / "tests" / "blackbox"), str(d.grpc_port),
                                   str(LONG_MS)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            wait_held(d, "echo-c", 1, timeout=30)
            client.kill()
            client.wait(timeout=10)
            check_freed(d, stub, "echo-c", pid, LONG_MS, ("CANCELED",), before)
        finally:
            if client.poll() is None:
                client.kill()
                client.wait(timeout=10)


def test_cancelling_a_stream_frees_the_instances_of_its_requests_in_flight(corral):
    n = 3
    corral.add("echo-c", "echo-c", manifest=echo_c(n))
    d = corral.start()
    stub, ch = grpc_stubs.stub(d.grpc_port)
    with ch:
        up(d, "echo-c")
        wait_for(lambda: len(d.worker_pids("echo-c")) == n, what="every instance")
        pids = sorted(d.worker_pids("echo-c"))
        before = failures(d, "echo-c", "CANCELED")
        feed = Feed()
        call = stub.ModelStreamInfer(iter(feed), timeout=120)
        for k in range(n):
            feed.put(request("echo-c", rid=f"s{k}", delay_ms=LONG_MS))
        wait_for(lambda: all(i["inflight"] == 1 for i in d.model("echo-c")["instances"]), timeout=10,
                 interval=0.01, what="a stream request at every instance")
        t0 = time.monotonic()
        assert call.cancel()
        feed.close()
        wait_held(d, "echo-c", 0, timeout=LONG_MS / 1000)
        futs = [stub.ModelInfer.future(request("echo-c"), timeout=60) for _ in range(n)]
        for f in futs:
            f.result()
        took = time.monotonic() - t0
        print(f"[stream-cancel] {n} instances freed and serving {took:.3f}s after the cancel", flush=True)
        assert took < LONG_MS / 1000 / 4
        assert sorted(d.worker_pids("echo-c")) == pids, "a worker was replaced, not cancelled"
        wait_for(lambda: failures(d, "echo-c", "CANCELED") >= before + n, timeout=5,
                 what=f"{n} cancelled stream requests counted")


def token_request(rid: str, text: str, delay: float):
    r = pb.ModelInferRequest(model_name="tokens", id=rid)
    r.inputs.add(name="text", datatype="BYTES", shape=[1])
    r.raw_input_contents.append(struct.pack("<I", len(text)) + text.encode())
    r.parameters["delay"].double_param = delay
    return r


def test_cancelling_a_decoupled_stream_mid_generation_frees_its_instance(corral):
    """tokens yields 400 words 50 ms apart (20 s); the client cancels after three: the generator is closed at
    the next word, and the same worker streams the next request's first word at once."""
    corral.add("tokens", "tokens")
    d = corral.start()
    stub, ch = grpc_stubs.stub(d.grpc_port)
    long_s = 400 * 0.05
    with ch:
        pid = ready_pid(d, "tokens")
        feed = Feed()
        call = stub.ModelStreamInfer(iter(feed), timeout=120)
        feed.put(token_request("long", " ".join(f"w{i}" for i in range(400)), 0.05))
        for _ in range(3):
            r = next(call)
            assert not r.error_message and r.infer_response.id == "long", r
        assert call.cancel()
        feed.close()
        t0 = time.monotonic()
        first = next(iter(stub.ModelStreamInfer(iter([token_request("next", "after the cancel", 0)]), timeout=60)))
        took = time.monotonic() - t0
        print(f"[decoupled-cancel] the next stream's first token {took:.3f}s after the cancel "
              f"({took / long_s:.3f} of the cancelled generation)", flush=True)
        assert not first.error_message and first.infer_response.id == "next", first
        assert took < long_s / 4
        inst = d.model("tokens")["instances"][0]
        assert inst["pid"] == pid and inst["restarts"] == 0, inst


def test_a_worker_killed_under_a_stream_request_is_an_error_message_and_the_stream_goes_on(corral):
    corral.add("echo-c", "echo-c", manifest=echo_c(extra="restart: {backoff_min: 10ms}\n"))
    d = corral.start()
    stub, ch = grpc_stubs.stub(d.grpc_port)
    with ch:
        pid = ready_pid(d, "echo-c")
        feed = Feed()
        call = stub.ModelStreamInfer(iter(feed), timeout=60)
        feed.put(request("echo-c", b"doomed", "doomed", delay_ms=LONG_MS))
        wait_held(d, "echo-c", 1)
        os.kill(pid, signal.SIGKILL)
        r = next(call)
        print(f"[stream-kill9] {r.error_message}", flush=True)
        assert r.error_message and r.infer_response.id in ("", "doomed"), r
        for part in ("'echo-c'", "instance 0", f"pid {pid}", "signal 9"):
            assert part in r.error_message, (part, r.error_message)
        feed.put(request("echo-c", b"after", "after"))
        r = next(call)
        assert not r.error_message and r.infer_response.id == "after" and output(r.infer_response) == b"after", r
        feed.close()
        assert list(call) == []
        assert call.code() == grpc.StatusCode.OK


def test_a_storm_of_cancels_and_vanishing_streams_leaves_every_instance_free_and_serving(corral):
    """For 3 s, 12 clients race cancels against answers: unary calls cancelled 0-30 ms into a 0-30 ms run,
    and streams of a few requests dropped with their channel mid-flight. Every future ends once (an answer
    or cancelled), no worker is replaced (each took its CANCELs), nothing stays held, the model serves at
    once, and the daemon counts no more outcomes than calls were made (a call cancelled before it reached
    the daemon is not counted at all)."""
    corral.add("echo-c", "echo-c", manifest=echo_c(2))
    d = corral.start()
    up(d, "echo-c")
    pids = sorted(d.worker_pids("echo-c"))
    port = d.grpc_port
    stop = threading.Event()
    tally = {"sent": 0, "unary": 0, "ok": 0, "cancelled": 0, "streams": 0}
    problems = []
    lock = threading.Lock()

    def unary():
        stub, ch = grpc_stubs.stub(port)
        with ch:
            while not stop.is_set():
                data = os.urandom(8)
                fut = stub.ModelInfer.future(request("echo-c", data, delay_ms=random.randrange(0, 30)), timeout=30)
                time.sleep(random.uniform(0, 0.03))
                fut.cancel()
                try:
                    r = fut.result(timeout=30)
                    outcome = "ok" if output(r) == data else None
                except grpc.FutureCancelledError:
                    outcome = "cancelled"
                except grpc.RpcError as e:
                    outcome = None
                    problems.append(f"{e.code()} {e.details()}")
                with lock:
                    tally["sent"] += 1
                    tally["unary"] += 1
                    if outcome:
                        tally[outcome] += 1

    def streams():
        while not stop.is_set():
            stub, ch = grpc_stubs.stub(port)
            n = random.randrange(1, 6)
            call = stub.ModelStreamInfer(iter([request("echo-c", delay_ms=random.randrange(0, 50))
                                               for _ in range(n)]), timeout=30)
            time.sleep(random.uniform(0, 0.05))
            ch.close()
            try:
                list(call)
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.CANCELLED:
                    problems.append(f"stream: {e.code()} {e.details()}")
            with lock:
                tally["sent"] += n
                tally["streams"] += 1

    threads = [threading.Thread(target=unary, daemon=True) for _ in range(8)]
    threads += [threading.Thread(target=streams, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(3)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    print(f"[cancel-storm] {tally}", flush=True)
    assert not any(t.is_alive() for t in threads), "a client hung"
    assert not problems, problems[:5]
    assert tally["ok"] + tally["cancelled"] == tally["unary"], tally  # each future ended exactly once
    wait_held(d, "echo-c", 0)
    m = d.model("echo-c")
    assert sorted(i["pid"] for i in m["instances"]) == pids and all(i["restarts"] == 0 for i in m["instances"]), m
    stub, ch = grpc_stubs.stub(port)
    with ch:
        assert output(stub.ModelInfer(request("echo-c", b"after"), timeout=30)) == b"after"
    counted = metric(d, "nv_inference_request_success", "echo-c") + \
        sum(failures(d, "echo-c", r) for r in ("REJECTED", "CANCELED", "BACKEND", "OTHER"))
    assert counted <= tally["sent"] + 1, (counted, tally)
    assert metric(d, "nv_inference_request_success", "echo-c") >= tally["ok"] + 1


def test_a_decoupled_worker_killed_mid_generation_ends_that_request_with_an_error_and_the_stream_goes_on(corral):
    corral.add("tokens", "tokens",
               manifest="runtime: python\nentrypoint: worker.py\ndecoupled: true\nrestart: {backoff_min: 10ms}\n")
    d = corral.start()
    stub, ch = grpc_stubs.stub(d.grpc_port)
    with ch:
        pid = ready_pid(d, "tokens")
        feed = Feed()
        call = stub.ModelStreamInfer(iter(feed), timeout=60)
        feed.put(token_request("long", " ".join(f"w{i}" for i in range(400)), 0.05))
        for _ in range(3):
            r = next(call)
            assert not r.error_message and r.infer_response.id == "long", r
        os.kill(pid, signal.SIGKILL)
        tokens_after = 0
        while not (r := next(call)).error_message:
            tokens_after += 1  # words already on their way
        print(f"[decoupled-kill9] after {tokens_after} more token(s): {r.error_message}", flush=True)
        assert r.infer_response.id == "long" and r.infer_response.parameters["triton_final_response"].bool_param, r
        for part in ("'tokens'", "instance 0", f"pid {pid}", "signal 9"):
            assert part in r.error_message, (part, r.error_message)
        feed.put(token_request("next", "served again", 0))
        got = [next(call) for _ in range(2)]
        assert all(not g.error_message and g.infer_response.id == "next" for g in got), got
        feed.close()
        assert list(call) == [] and call.code() == grpc.StatusCode.OK


# ---------------------------------------------------------------- 3. streams at scale


def test_a_thousand_requests_on_one_stream_are_each_answered_once_and_correctly(corral):
    corral.add("echo-c", "echo-c", manifest=echo_c(2))
    d = corral.start()
    stub, ch = grpc_stubs.stub(d.grpc_port)
    total = 1000
    sent = {f"one-stream-{k}": os.urandom(random.randrange(1, 200)) for k in range(total)}
    with ch:
        up(d, "echo-c")
        reqs = (request("echo-c", data, rid) for rid, data in sent.items())
        seen: dict = {}
        errors = []
        for r in stub.ModelStreamInfer(reqs, timeout=120):
            if r.error_message:
                errors.append(r.error_message)
                continue
            rid = r.infer_response.id
            seen[rid] = seen.get(rid, 0) + 1
            if output(r.infer_response) != sent.get(rid):
                errors.append(f"{rid}: wrong answer")
    lost = [rid for rid in sent if rid not in seen]
    dup = sum(n - 1 for n in seen.values()) + len(set(seen) - set(sent))
    print(f"[one-stream] sent={total} answered={sum(seen.values())} lost={len(lost)} dup={dup} "
          f"errors={len(errors)}", flush=True)
    assert not errors, errors[:5]
    assert not lost and dup == 0


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def test_a_slow_reader_stream_never_fails_and_the_daemon_stays_bounded(corral):
    """500 requests of 256 KiB sent as fast as the client can, answers read 5 ms apart after a 2 s stall:
    125 MiB passes, but the daemon reads no further than its window of 32 requests plus unsent answers,
    so its resident memory grows by far less. ASan's quarantine is kept small for this daemon, else it
    would hold every freed buffer and its RSS would measure the sanitizer, not the daemon."""
    corral.add("echo-c", "echo-c", manifest=echo_c(2))
    asan = os.environ.get("ASAN_OPTIONS", "")
    d = corral.start(env={"ASAN_OPTIONS": (asan + ":" if asan else "") + "quarantine_size_mb=4"})
    stub, ch = grpc_stubs.stub(d.grpc_port)
    total, size = 500, 256 << 10
    blob = os.urandom(size)
    with ch:
        up(d, "echo-c")
        stub.ModelInfer(request("echo-c", blob), timeout=30)  # the first big buffers: part of the baseline
        base = rss_kib(d.proc.pid)
        peak = [base]
        sampling = threading.Event()

        def sampler():
            while not sampling.wait(0.02):
                peak[0] = max(peak[0], rss_kib(d.proc.pid))

        sampler_thread = threading.Thread(target=sampler, daemon=True)
        sampler_thread.start()
        reqs = (request("echo-c", blob[k:] + blob[:k], f"slow-{k}") for k in range(total))
        answered, wrong, errors = 0, 0, []
        t0 = time.monotonic()
        stream = stub.ModelStreamInfer(reqs, timeout=240)
        time.sleep(2)  # nothing read: the daemon must stop reading at its window
        for r in stream:
            if r.error_message:
                errors.append(r.error_message)
                continue
            k = int(r.infer_response.id.split("-")[1])
            answered += 1
            wrong += output(r.infer_response) != blob[k:] + blob[:k]
            time.sleep(0.005)
        took = time.monotonic() - t0
        sampling.set()
        sampler_thread.join()
    grown = (peak[0] - base) / 1024
    print(f"[slow-reader] {answered}/{total} answered in {took:.1f}s; daemon RSS {base / 1024:.1f} MiB, "
          f"peak +{grown:.1f} MiB for {total * size / MiB:.0f} MiB streamed", flush=True)
    assert not errors and wrong == 0 and answered == total, (errors[:3], wrong, answered)
    assert grown < total * size / MiB / 3, f"the daemon grew by {grown:.1f} MiB: it read past its window"


def tokens_of(responses):
    """Per request id: the tokens in order of arrival, and whether its empty final response came."""
    got: dict = {}
    for r in responses:
        assert not r.error_message, r.error_message
        ir = r.infer_response
        rec = got.setdefault(ir.id, {"tokens": [], "final": False, "after_final": 0})
        if rec["final"]:
            rec["after_final"] += 1
        final = ir.parameters["triton_final_response"].bool_param
        if not ir.outputs:
            assert final, ir
            rec["final"] = True
            continue
        index = struct.unpack("<q", output(ir, "index"))[0]
        raw = output(ir, "token")
        token = raw[4:4 + struct.unpack("<I", raw[:4])[0]].decode()
        rec["tokens"].append((index, token))
        rec["final"] = rec["final"] or final
    return got


def test_a_decoupled_model_streams_several_interleaved_requests_on_one_stream(corral):
    corral.add("tokens", "tokens", manifest="runtime: python\nentrypoint: worker.py\ndecoupled: true\ninstances: 3\n")
    d = corral.start()
    stub, ch = grpc_stubs.stub(d.grpc_port)
    texts = {f"t{k}": " ".join(f"w{k}.{i}" for i in range(8)) for k in range(3)}
    with ch:
        up(d, "tokens")
        wait_for(lambda: len(d.worker_pids("tokens")) == 3, timeout=20, what="three tokens instances")

        def reqs():
            for rid, text in texts.items():
                r = token_request(rid, text, 0.05)
                r.parameters["triton_enable_empty_final_response"].bool_param = True
                yield r

        arrival = []
        responses = []
        for r in stub.ModelStreamInfer(reqs(), timeout=60):
            responses.append(r)
            arrival.append(r.infer_response.id)
    got = tokens_of(responses)
    assert set(got) == set(texts)
    for rid, text in texts.items():
        assert [t for _, t in got[rid]["tokens"]] == text.split(), got[rid]
        assert [i for i, _ in got[rid]["tokens"]] == list(range(8))
        assert got[rid]["final"] and got[rid]["after_final"] == 0, got[rid]
    switches = sum(1 for a, b in zip(arrival, arrival[1:]) if a != b)
    print(f"[decoupled-stream] {len(responses)} responses, the request id changed {switches} times", flush=True)
    assert switches > len(texts), f"the three requests' tokens did not interleave: {arrival}"


# ---------------------------------------------------------------- 4. many channels


def test_64_concurrent_channels_every_answer_correct_none_lost(corral):
    corral.add("echo-c", "echo-c", manifest=echo_c(3))
    d = corral.start()
    up(d, "echo-c")
    port = d.grpc_port
    per, nchan = 20, 64
    results: dict = {}
    problems = []
    lock = threading.Lock()
    go = threading.Barrier(nchan)

    def client(c):
        stub, ch = grpc_stubs.stub(port)
        with ch:
            go.wait()
            for k in range(per):
                rid = f"ch{c}-{k}"
                data = struct.pack("<ii", c, k) + os.urandom(8)
                try:
                    r = stub.ModelInfer(request("echo-c", data, rid), timeout=60)
                    problem = None if r.id == rid and output(r) == data else f"{rid}: answered {r.id}"
                except grpc.RpcError as e:
                    problem = f"{rid}: {e.code()} {e.details()}"
                with lock:
                    results[rid] = results.get(rid, 0) + 1
                    if problem:
                        problems.append(problem)

    threads = [threading.Thread(target=client, args=(c,), daemon=True) for c in range(nchan)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    took = time.monotonic() - t0
    print(f"[64-channels] {sum(results.values())}/{nchan * per} answered in {took:.1f}s, "
          f"{len(problems)} problems", flush=True)
    assert not any(t.is_alive() for t in threads), "a client thread hung"
    assert not problems, problems[:5]
    assert len(results) == nchan * per and all(n == 1 for n in results.values())


# ---------------------------------------------------------------- 5, 6. workers dying


STORM_RESTART = "{max_restarts: 1000, window: 60s, backoff_min: 10ms, backoff_max: 100ms}"


def test_kill9_storm_over_grpc_every_call_has_one_outcome(corral):
    """16 clients, each on its own channel, call ModelInfer on three echo-c instances for 3 s while a
    killer SIGKILLs a random ready worker every 100-200 ms: each call ends once, either with its own
    answer or with INTERNAL (UNAVAILABLE) naming the model, instance, pid and signal; none lost or
    answered twice; then the model serves again on every instance."""
    corral.add("echo-c", "echo-c", manifest=echo_c(3, f"restart: {STORM_RESTART}\n"))
    d = corral.start()
    up(d, "echo-c")
    port = d.grpc_port
    outcomes: dict = {}
    ok, failed, problems, kills = [0], [], [], []
    lock = threading.Lock()
    stop = threading.Event()
    ids = itertools.count()

    def client():
        stub, ch = grpc_stubs.stub(port)
        with ch:
            while not stop.is_set():
                n = next(ids)
                rid, data = f"storm-{n}", struct.pack("<q", n) + os.urandom(16)
                with lock:
                    outcomes[rid] = 0
                try:
                    r = stub.ModelInfer(request("echo-c", data, rid), timeout=30)
                except grpc.RpcError as e:
                    with lock:
                        outcomes[rid] += 1
                        failed.append((rid, e.code(), e.details()))
                    continue
                with lock:
                    outcomes[rid] += 1
                    if r.id != rid or output(r) != data:
                        problems.append(f"{rid}: answered {r.id}")
                    else:
                        ok[0] += 1

    def killer():
        while not stop.is_set():
            time.sleep(random.uniform(0.1, 0.2))
            try:
                pids = [i["pid"] for i in d.model("echo-c")["instances"] if i["state"] == "ready" and i["pid"]]
            except Exception:  # noqa: BLE001 - the daemon is busy; try again
                continue
            if pids:
                pid = random.choice(pids)
                try:
                    os.kill(pid, signal.SIGKILL)
                    kills.append(pid)
                except ProcessLookupError:
                    pass

    threads = [threading.Thread(target=client, daemon=True) for _ in range(16)]
    k = threading.Thread(target=killer, daemon=True)
    for t in threads:
        t.start()
    k.start()
    time.sleep(3)
    stop.set()
    for t in [*threads, k]:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a client hung"
    lost = [rid for rid, n in outcomes.items() if n == 0]
    dup = sum(n - 1 for n in outcomes.values() if n > 1)
    codes: dict = {}
    for _, code, _ in failed:
        codes[code.name] = codes.get(code.name, 0) + 1
    print(f"[grpc-kill9-storm] sent={len(outcomes)} ok={ok[0]} {codes} lost={len(lost)} dup={dup} "
          f"kills={len(kills)}", flush=True)
    for rid, code, details in failed[:3]:
        print(f"[grpc-kill9-storm]   {code.name} e.g. {details}", flush=True)
    assert not lost and dup == 0 and not problems, (lost[:5], problems[:5])
    assert len(kills) >= 5, "the storm killed too few workers to prove anything"
    assert ok[0] >= len(outcomes) * 0.5
    for rid, code, details in failed:
        assert code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE), (rid, code, details)
        assert "echo-c" in details, details
        if code == grpc.StatusCode.INTERNAL:
            m = re.search(r"pid (\d+)", details)
            assert m and int(m.group(1)) in kills and "instance" in details and "signal 9" in details, details
    wait_for(lambda: (lambda m: m["state"] == "ready" and len(m["instances"]) == 3 and
                      all(i["state"] == "ready" for i in m["instances"]))(d.model("echo-c")),
             timeout=20, what="every instance back")
    stub, ch = grpc_stubs.stub(port)
    with ch:
        for n in range(10):
            r = stub.ModelInfer(request("echo-c", bytes([n]), f"after-{n}"), timeout=30)
            assert r.id == f"after-{n}" and output(r) == bytes([n])
    # The daemon's own count agrees: one outcome per call.
    success = metric(d, "nv_inference_request_success", "echo-c")
    failed_n = sum(failures(d, "echo-c", r) for r in ("REJECTED", "CANCELED", "BACKEND", "OTHER"))
    assert (success, failed_n) == (ok[0] + 10, len(failed)), (success, failed_n, ok[0], len(failed))


def test_a_worker_that_exits_mid_request_is_internal_naming_model_instance_pid_and_status(corral):
    corral.add("st", "steerable", manifest=ctl_manifest(restart="{backoff_min: 10ms}"))
    d = corral.start()
    stub, ch = grpc_stubs.stub(d.grpc_port)
    with ch:
        pid = ready_pid(d, "st")
        with pytest.raises(grpc.RpcError) as e:
            stub.ModelInfer(steer("st", exit=3), timeout=30)
        assert e.value.code() == grpc.StatusCode.INTERNAL, e.value
        msg = e.value.details()
        print(f"[worker-exit] {msg}", flush=True)
        assert "'st'" in msg and "instance 0" in msg and f"pid {pid}" in msg and "status 3" in msg, msg

        pid = wait_for(lambda: (lambda i: i["pid"] if i["state"] == "ready" and i["pid"] != pid else None)(
            d.model("st")["instances"][0]), timeout=20, what="st's worker to be replaced")
        fut = stub.ModelInfer.future(steer("st", sleep=30), timeout=60)
        wait_held(d, "st", 1)
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(grpc.RpcError) as e:
            fut.result()
        assert e.value.code() == grpc.StatusCode.INTERNAL, e.value
        msg = e.value.details()
        print(f"[worker-kill9] {msg}", flush=True)
        assert "'st'" in msg and "instance 0" in msg and f"pid {pid}" in msg and "signal 9" in msg, msg
        wait_for(lambda: (lambda p: p and p[0] != pid)(d.worker_pids("st")), timeout=20, what="a new worker")
        stub.ModelInfer(steer("st"), timeout=30)


# ---------------------------------------------------------------- 7. large messages


def test_a_64_mib_tensor_round_trips_bit_exact(corral):
    corral.add("echo-c", "echo-c")
    d = corral.start()
    stub, ch = grpc_stubs.stub(d.grpc_port)
    data = os.urandom(64 * MiB)
    with ch:
        up(d, "echo-c")
        t0 = time.monotonic()
        r = stub.ModelInfer(request("echo-c", data, "big"), timeout=120)
        took = time.monotonic() - t0
        print(f"[64MiB] round trip {took:.2f}s", flush=True)
        assert r.outputs[0].shape == [64 * MiB] and r.outputs[0].datatype == "UINT8"
        assert output(r) == data


def test_a_message_past_max_body_is_resource_exhausted_and_the_daemon_serves_on(corral):
    corral.add("echo-c", "echo-c")
    d = corral.start("--max-body", "8MiB")
    stub, ch = grpc_stubs.stub(d.grpc_port)
    with ch:
        up(d, "echo-c")
        assert output(stub.ModelInfer(request("echo-c", b"\1" * (4 * MiB)), timeout=60)) == b"\1" * (4 * MiB)
        for _ in range(2):
            with pytest.raises(grpc.RpcError) as e:
                stub.ModelInfer(request("echo-c", os.urandom(9 * MiB)), timeout=60)
            assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e.value
            print(f"[max-body] {e.value.details()}", flush=True)
            assert output(stub.ModelInfer(request("echo-c", b"ok"), timeout=30)) == b"ok"
        # and on a stream: the stream carries the refusal; the daemon still answers a fresh call
        with pytest.raises(grpc.RpcError) as e:
            list(stub.ModelStreamInfer(iter([request("echo-c", os.urandom(9 * MiB))]), timeout=60))
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e.value
        assert output(stub.ModelInfer(request("echo-c", b"ok"), timeout=30)) == b"ok"
    assert d.get("/v2/health/ready").status_code == 200


# ---------------------------------------------------------------- 8. SIGTERM


def test_sigterm_lets_calls_in_flight_finish_refuses_new_ones_and_exits_0(corral):
    """Three calls in flight at SIGTERM, one per instance: a unary call, a stream the client keeps open and
    a stream the client has half-closed. Each gets its answer; then the open stream ends UNAVAILABLE
    ("corral is shutting down": the daemon closes it, as it had not ended) and the half-closed one OK.
    A new call, on a fresh channel or on the one in use, is UNAVAILABLE."""
    corral.add("echo-c", "echo-c", manifest=echo_c(3))
    d = corral.start("--drain-timeout", "10s")
    stub, ch = grpc_stubs.stub(d.grpc_port)
    port = d.grpc_port
    with ch:
        up(d, "echo-c")
        pids = d.worker_pids("echo-c")
        assert len(pids) == 3
        unary = stub.ModelInfer.future(request("echo-c", b"unary", "unary", delay_ms=1500), timeout=30)
        feed = Feed()
        open_stream = stub.ModelStreamInfer(iter(feed), timeout=30)
        feed.put(request("echo-c", b"open", "open", delay_ms=1500))
        closed_stream = stub.ModelStreamInfer(iter([request("echo-c", b"closed", "closed", delay_ms=1500)]),
                                              timeout=30)
        wait_for(lambda: all(i["inflight"] == 1 for i in d.model("echo-c")["instances"]), timeout=10,
                 interval=0.01, what="a call at every instance")
        t0 = time.monotonic()
        d.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        late_stub, late_ch = grpc_stubs.stub(port)
        with late_ch:
            for s, where in ((late_stub, "a fresh channel"), (stub, "the channel in use")):
                with pytest.raises(grpc.RpcError) as e:
                    s.ModelInfer(request("echo-c", b"late"), timeout=10)
                print(f"[sigterm] a new call on {where}: {e.value.code().name}: {e.value.details()}", flush=True)
                assert e.value.code() == grpc.StatusCode.UNAVAILABLE, (where, e.value)
        r = unary.result()
        assert r.id == "unary" and output(r) == b"unary"
        answers = []
        with pytest.raises(grpc.RpcError) as e:
            for a in open_stream:
                answers.append(a)
        print(f"[sigterm] the open stream ended {e.value.code().name}: {e.value.details()}", flush=True)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE, e.value
        assert len(answers) == 1 and not answers[0].error_message, answers
        assert answers[0].infer_response.id == "open" and output(answers[0].infer_response) == b"open"
        feed.close()
        answers = list(closed_stream)  # ends OK, or this raises
        assert len(answers) == 1 and output(answers[0].infer_response) == b"closed", answers
        assert closed_stream.code() == grpc.StatusCode.OK
        assert d.proc.wait(timeout=15) == 0
        took = time.monotonic() - t0
    print(f"[sigterm] exited 0 {took:.2f}s after SIGTERM (drain timeout 10 s)", flush=True)
    assert took < 10
    wait_for(lambda: not processes_under(corral.repo), timeout=5, what="every worker to exit")
    assert not [p for p in pids if alive(p)]


def test_sigterm_with_a_streams_window_full_gives_every_request_one_outcome(corral):
    """40 requests of 50 ms on one stream and one instance: the daemon holds its window of 32 when SIGTERM
    comes. Those it holds are answered; those it reads after the signal get "shutting down" as their
    error_message; each exactly once, then the stream ends UNAVAILABLE and the daemon exits 0."""
    corral.add("echo-c", "echo-c")
    d = corral.start()
    up(d, "echo-c")
    stub, ch = grpc_stubs.stub(d.grpc_port)
    total = 40
    feed = Feed()
    for k in range(total):
        feed.put(request("echo-c", struct.pack("<i", k), f"w{k}", delay_ms=50))
    with ch:
        call = stub.ModelStreamInfer(iter(feed), timeout=60)
        wait_held(d, "echo-c", 32)
        d.proc.send_signal(signal.SIGTERM)
        got: dict = {}
        with pytest.raises(grpc.RpcError) as e:
            for r in call:
                rid = r.infer_response.id
                got.setdefault(rid, []).append(r.error_message or output(r.infer_response))
        feed.close()
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE, e.value
    answered = [rid for rid, v in got.items() if v[0] == struct.pack("<i", int(rid[1:]))]
    refused = [rid for rid, v in got.items() if isinstance(v[0], str) and "shutting down" in v[0]]
    print(f"[sigterm-window] {len(answered)} answered, {len(refused)} refused, then {e.value.code().name}",
          flush=True)
    assert sorted(got) == sorted(f"w{k}" for k in range(total)) and all(len(v) == 1 for v in got.values()), got
    assert len(answered) + len(refused) == total and len(answered) >= 32, got
    assert d.proc.wait(timeout=20) == 0


# ---------------------------------------------------------------- 9. garbage


def junk(n: int) -> bytes:
    """n random bytes that are no protobuf message: a field of number 0, wire type 7, first."""
    return b"\x07" + os.urandom(n - 1)


def test_garbage_as_a_message_is_invalid_argument_and_a_stream_answers_it_and_goes_on(corral):
    corral.add("echo-c", "echo-c")
    d = corral.start()
    stub, ch = grpc_stubs.stub(d.grpc_port)
    with ch:
        up(d, "echo-c")
        raw = ch.unary_unary(METHOD + "ModelInfer")  # no serializers: bytes as they are
        for n in (1, 100, 64 << 10):
            with pytest.raises(grpc.RpcError) as e:
                raw(junk(n), timeout=30)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value
            assert "not a valid" in e.value.details(), e.value.details()
        raw_stream = ch.stream_stream(METHOD + "ModelStreamInfer")
        good = request("echo-c", b"after-junk", "good").SerializeToString()
        got = [pb.ModelStreamInferResponse.FromString(b)
               for b in raw_stream(iter([junk(300), good, junk(5), good]), timeout=30)]
        # answers come as they are ready: the refusals at once, the echoes once the worker has answered
        refused = [g.error_message for g in got if g.error_message]
        answered = [g.infer_response for g in got if not g.error_message]
        assert len(refused) == 2 and all("not a valid inference.ModelInferRequest" in m for m in refused), got
        assert len(answered) == 2 and all(a.id == "good" and output(a) == b"after-junk" for a in answered), got


def test_junk_on_the_grpc_socket_does_not_disturb_the_daemon(corral):
    corral.add("echo-c", "echo-c")
    d = corral.start()
    port = d.grpc_port
    up(d, "echo-c")
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    # a well-formed HEADERS frame header announcing a length the bytes after it do not fill
    bad_frame = struct.pack(">I", 0x4000)[1:] + b"\x01\x04" + struct.pack(">I", 1)
    stub, ch = grpc_stubs.stub(port)
    with ch:
        for k in range(30):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            try:
                head = [b"", preface, preface + bad_frame][k % 3]
                s.sendall(head + os.urandom(random.randrange(1, 8192)))
                if k % 2:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with RST
            except OSError:
                pass  # the daemon may have closed first
            finally:
                s.close()
            if k % 10 == 9:
                assert stub.ServerLive(pb.ServerLiveRequest(), timeout=10).live
                assert output(stub.ModelInfer(request("echo-c", b"still"), timeout=30)) == b"still"
                assert d.get("/v2/health/live").status_code == 200
    assert d.proc.poll() is None
