"""Pipelining (docs/worker-protocol.md, "Pipelining"): an instance that holds its `concurrency` is sent
the next request ahead of time, so that it finds it in its socket the moment it finishes one.

What must stay true: a request is answered 502 only if its worker had started it (a pipelined request a
dead worker never started is served elsewhere with 200), a pipelined request's deadline and client can
still stop it without replacing the worker, priorities are kept but for the one request per instance
already pipelined, and nothing is pipelined behind a GENERATE or to a batching model.
"""
from __future__ import annotations

import os
import signal
import time

import requests

from conftest import ctl_manifest, load, out, wait_for
from test_faults import Call, Tally, error, instance, metric, wait_inflight


def held(d, model):
    """(requests in flight over the model's instances, requests queued)."""
    m = d.model(model)
    return sum(i["inflight"] for i in m["instances"]), m["queue"]


def wait_held(d, model, inflight, queued, timeout=10):
    return wait_for(lambda: held(d, model) == (inflight, queued), timeout=timeout, interval=0.01,
                    what=f"{inflight} request(s) of {model} in flight and {queued} queued")


def test_a_busy_instance_is_sent_the_next_request_ahead_and_serves_them_in_order(corral):
    corral.add("ft", "counts_spawns")
    d = corral.start()
    assert load(d, "ft").status_code == 200
    assert d.model("ft")["pipeline"] == 1
    busy = Call(d, "ft", sleep=1)
    wait_inflight(d, "ft", 1)
    ahead = Call(d, "ft")
    wait_held(d, "ft", 2, 0)  # pipelined: in flight at the worker, not in the queue
    queued = Call(d, "ft")
    wait_held(d, "ft", 2, 1)  # pipeline 1: the third waits in the daemon's queue
    tally = Tally("pipelined-in-order")
    for c in (busy, ahead, queued):
        tally.call(c.finish())
    tally.check(allowed={200})
    assert [out(c.resp, "COUNT") for c in (busy, ahead, queued)] == [1, 2, 3]
    assert out(ahead.resp, "T") >= out(busy.resp, "T") + 1, "the pipelined request ran while the first slept"
    assert metric(d, "nv_inference_exec_count", "ft") == 3


def test_pipeline_zero_keeps_every_waiting_request_in_the_queue(corral):
    corral.add("ft", "counts_spawns", manifest=ctl_manifest(pipeline=0))
    d = corral.start()
    assert load(d, "ft").status_code == 200
    assert d.model("ft")["pipeline"] == 0
    busy = Call(d, "ft", sleep=0.5)
    wait_inflight(d, "ft", 1)
    waiting = [Call(d, "ft"), Call(d, "ft")]
    wait_held(d, "ft", 1, 2)
    for c in [busy, *waiting]:
        assert c.finish().resp.status_code == 200


def test_a_pipelined_request_the_dead_worker_never_started_is_served_elsewhere_with_200(corral):
    """Two instances, each busy; a third request is pipelined to one of them, which is then killed: its
    running request gets one 502, the pipelined one goes to the other instance and gets 200, and neither
    the restart count nor the execution count counts it twice."""
    corral.add("ft", "counts_spawns", manifest=ctl_manifest(instances=2))
    d = corral.start()
    assert load(d, "ft").status_code == 200
    long_, short = Call(d, "ft", sleep=10), None
    wait_inflight(d, "ft", 1)
    short = Call(d, "ft", sleep=2)
    wait_inflight(d, "ft", 2)
    ahead = Call(d, "ft")
    wait_held(d, "ft", 3, 0)
    victim = next(i for i in d.model("ft")["instances"] if i["inflight"] == 2)
    other = next(i for i in d.model("ft")["instances"] if i["id"] != victim["id"])
    os.kill(victim["pid"], signal.SIGKILL)
    tally = Tally("pipelined-elsewhere")
    for c in (long_, short, ahead):
        tally.call(c.finish())
    tally.check(allowed={200, 502})
    running = long_ if out(short.resp, "PID") == other["pid"] else short
    assert running.resp.status_code == 502, running.resp.text
    assert f"pid {victim['pid']}" in error(running.resp) and "signal 9" in error(running.resp)
    assert ahead.resp.status_code == 200, ahead.resp.text
    assert out(ahead.resp, "PID") != victim["pid"]
    assert ahead.elapsed < 8, "the pipelined request waited for the killed worker's 10 s sleep"
    assert instance(d, "ft", victim["id"])["restarts"] == 1
    assert instance(d, "ft", other["id"])["restarts"] == 0
    assert metric(d, "corral_requests_requeued_total", "ft") == 1
    assert metric(d, "nv_inference_exec_count", "ft") == 3  # the pipelined request ran once


def test_a_pipelined_requests_deadline_answers_504_at_once_and_it_never_runs(corral):
    """Its deadline passes while it waits behind the running request: 504 then (not when the worker gets
    to it), the worker is told to CANCEL and answers it without running the model, and is not replaced."""
    corral.add("ft", "counts_spawns")
    d = corral.start()
    pid = out(d.post("/v2/models/ft/infer", {"inputs": [{"name": "X", "datatype": "INT32", "shape": [1],
                                                          "data": [0]}]}), "PID")
    busy = Call(d, "ft", sleep=2)
    wait_inflight(d, "ft", 1)
    late = Call(d, "ft", deadline_us=300_000)
    late.finish()
    assert late.resp.status_code == 504, late.resp.text
    assert late.elapsed < 1.5, f"the 504 came {late.elapsed:.2f}s after the request"
    assert "queued at instance 0" in error(late.resp) and "behind" in error(late.resp), error(late.resp)
    assert busy.finish().resp.status_code == 200
    nxt = d.post("/v2/models/ft/infer", {"inputs": [{"name": "X", "datatype": "INT32", "shape": [1], "data": [0]}]})
    assert out(nxt, "PID") == pid and out(nxt, "COUNT") == 3, "the cancelled request ran, or the worker was replaced"
    assert instance(d, "ft")["restarts"] == 0


def test_a_pipelined_request_whose_client_left_never_runs(corral):
    corral.add("ft", "counts_spawns")
    d = corral.start()
    assert load(d, "ft").status_code == 200
    busy = Call(d, "ft", sleep=1.5)
    wait_inflight(d, "ft", 1)
    gone = Call(d, "ft", timeout=0.3)  # the client gives up and closes its connection
    gone.finish()
    assert isinstance(gone.exc, requests.Timeout), gone.exc
    assert busy.finish().resp.status_code == 200
    wait_held(d, "ft", 0, 0)
    nxt = Call(d, "ft").finish()
    assert out(nxt.resp, "COUNT") == 2, "the departed client's pipelined request ran"
    assert instance(d, "ft")["restarts"] == 0


def test_priorities_hold_for_all_but_the_one_request_already_pipelined(corral):
    """Busy instance; requests of priority 3, 3 then 1 arrive: the first 3 was pipelined before the 1
    arrived and keeps its place; the 1 goes before the second 3."""
    corral.add("ft", "counts_spawns")
    d = corral.start()
    assert load(d, "ft").status_code == 200
    busy = Call(d, "ft", sleep=1.5)
    wait_inflight(d, "ft", 1)
    calls = []
    for n, p in enumerate([3, 3, 1]):
        calls.append(Call(d, "ft", rid=f"q{n}-p{p}", priority=p))
        wait_held(d, "ft", 2, n)
    assert busy.t1 is None, "the busy request finished before everything was queued; the test proved nothing"
    for c in [busy, *calls]:
        assert c.finish().resp.status_code == 200
    served = [c.rid for c in sorted(calls, key=lambda c: out(c.resp, "COUNT"))]
    assert served == ["q0-p3", "q2-p1", "q1-p3"], served


def test_nothing_is_pipelined_behind_a_generate(corral):
    corral.add("ft", "counts_spawns")
    d = corral.start()
    assert load(d, "ft").status_code == 200
    gen = Call(d, "ft", kind="generate", json_body={"sleep": 1})
    wait_inflight(d, "ft", 1)
    waiting = Call(d, "ft")
    wait_held(d, "ft", 1, 1)
    assert gen.finish().resp.status_code == 200
    assert waiting.finish().resp.status_code == 200


def test_a_batching_model_has_no_pipeline_and_a_bad_depth_is_a_manifest_error(corral):
    corral.add("b", "counts_spawns", manifest=ctl_manifest(batching="{max_batch_size: 4, max_queue_delay: 1ms}"))
    corral.add("deep", "counts_spawns", manifest=ctl_manifest(pipeline=9))
    corral.add("neg", "counts_spawns", manifest=ctl_manifest(pipeline=-1))
    d = corral.start()
    assert d.model("b")["pipeline"] == 0
    for name in ("deep", "neg"):
        m = d.model(name)
        assert "pipeline" in (m.get("manifest_error") or m.get("reason") or ""), m


def test_the_c_sdk_answers_a_cancelled_pipelined_request_at_once_and_keeps_its_worker(corral):
    corral.add("echo-c", "echo-c")
    d = corral.start()
    assert load(d, "echo-c").status_code == 200
    pid = d.model("echo-c")["instances"][0]["pid"]
    body = {"inputs": [{"name": "X", "datatype": "INT32", "shape": [1], "data": [7]}]}
    busy = Call(d, "echo-c", delay_ms=1500)
    wait_inflight(d, "echo-c", 1)
    late = Call(d, "echo-c", deadline_us=300_000, delay_ms=5000).finish()
    assert late.resp.status_code == 504, late.resp.text
    assert late.elapsed < 1.5
    assert busy.finish().resp.status_code == 200
    t0 = time.monotonic()
    assert d.post("/v2/models/echo-c/infer", body).status_code == 200
    # Had the cancelled request run, its 5 s sleep would hold the instance (or get it replaced).
    assert time.monotonic() - t0 < 3
    assert d.model("echo-c")["instances"][0]["pid"] == pid
    assert d.model("echo-c")["instances"][0]["restarts"] == 0
