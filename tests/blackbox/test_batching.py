"""Dynamic batching (issue 12): batches form under concurrency and never pass max_batch_size, each
request gets exactly its own rows, id and datatype back (JSON and binary in one batch), inputs that
differ are not batched together, a lone request goes after max_queue_delay, infer_batch fails only
the request that failed, a wrong output shape fails the batch, a worker killed holding a batch
answers each of its requests 502 once while the requests still queued go elsewhere with 200,
deadlines inside a batch, and the metrics count executions and rows. Real daemon, real workers
(tests/models/batcher). The kill -9 storm with batching is in test_faults.py."""
from __future__ import annotations

import json
import os
import signal
import struct
import threading
import time

import pytest

from conftest import wait_for


def manifest(max_batch_size=8, delay="200ms", env=None, parameters=None, extra=""):
    text = (f"runtime: python\nentrypoint: worker.py\nbatching:\n  max_batch_size: {max_batch_size}\n"
            f"  max_queue_delay: {delay}\n{extra}")
    if env:
        text += "env:\n" + "".join(f"  {k}: {v}\n" for k, v in env.items())
    if parameters:
        text += "parameters:\n" + "".join(f"  {k}: {v}\n" for k, v in parameters.items())
    return text


def batches(path) -> list[list[int]]:
    try:
        return [[int(x) for x in line.split()] for line in (path / "batches.log").read_text().splitlines()]
    except FileNotFoundError:
        return []


def request(d, rows, value, datatype="INT32", model="b", params=None, binary=False, rid=None, timeout=30):
    shape = [rows, 2]
    data = [[value + r, -value - r] for r in range(rows)]
    body = {"inputs": [{"name": "INPUT0", "datatype": datatype, "shape": shape, "data": data}]}
    if rid is not None:
        body["id"] = rid
    if params:
        body["parameters"] = params
    if binary:
        body["outputs"] = [{"name": "OUTPUT0", "parameters": {"binary_data": True}}, {"name": "BATCH_ROWS"}]
    return d.post(f"/v2/models/{model}/infer", body, timeout=timeout)


def concurrently(fns):
    results = [None] * len(fns)

    def run(i, fn):
        results[i] = fn()

    threads = [threading.Thread(target=run, args=(i, fn)) for i, fn in enumerate(fns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def output(r, name):
    for o in r.json()["outputs"]:
        if o["name"] == name:
            return o
    raise AssertionError(f"no {name} in {r.text}")


@pytest.fixture
def batcher(corral):
    def make(**kw):
        path = corral.add("b", "batcher", manifest=manifest(**kw))
        return corral.start(), path
    return make


def test_batches_form_under_concurrency_and_each_request_gets_its_own_rows(batcher):
    d, path = batcher()
    assert request(d, 1, 0).status_code == 200  # loaded: later batches are not held up by the load
    rows = [1, 2, 1, 3, 1, 2, 1, 1, 2, 1, 1, 3]
    results = concurrently([lambda i=i, n=n: request(d, n, 100 * i, rid=f"r{i}") for i, n in enumerate(rows)])
    for i, (n, r) in enumerate(zip(rows, results)):
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["id"] == f"r{i}"
        out = output(r, "OUTPUT0")
        assert out["datatype"] == "INT32" and out["shape"] == [n, 2]
        assert out["data"] == [v for k in range(n) for v in (100 * i + k, -100 * i - k)]  # its rows, in order
        assert len(output(r, "BATCH_ROWS")["data"]) == n
    seen = batches(path)[1:]
    assert sum(sum(b) for b in seen) == sum(rows) and sum(len(b) for b in seen) == len(rows)
    assert all(sum(b) <= 8 for b in seen), seen  # never past max_batch_size
    assert any(len(b) > 1 for b in seen), seen  # they did batch
    # A request's rows are never split: each batch's entries are whole requests' row counts.
    assert sorted(x for b in seen for x in b) == sorted(rows)


def test_json_and_binary_answers_mixed_in_one_batch(batcher):
    d, path = batcher()
    assert request(d, 1, 0).status_code == 200
    results = concurrently([lambda: request(d, 2, 10, binary=True), lambda: request(d, 1, 20)])
    assert any(len(b) == 2 for b in batches(path)), batches(path)
    binary, plain = results
    assert binary.status_code == 200 and plain.status_code == 200
    hlen = int(binary.headers["inference-header-content-length"])
    header = json.loads(binary.content[:hlen])
    out = next(o for o in header["outputs"] if o["name"] == "OUTPUT0")
    assert out["parameters"]["binary_data_size"] == 16 and out["shape"] == [2, 2]
    assert struct.unpack("<4i", binary.content[hlen:hlen + 16]) == (10, -10, 11, -11)
    assert output(plain, "OUTPUT0")["data"] == [20, -20]


def test_different_shapes_or_datatypes_are_not_batched_together(batcher):
    d, path = batcher()
    assert request(d, 1, 0).status_code == 200
    results = concurrently([lambda: request(d, 1, 1), lambda: request(d, 1, 2, datatype="FP32"),
                            lambda: request(d, 1, 3)])
    assert [r.status_code for r in results] == [200, 200, 200]
    assert output(results[1], "OUTPUT0")["datatype"] == "FP32"
    assert sorted(len(b) for b in batches(path)[1:]) == [1, 2]  # the two INT32 together, the FP32 alone


def test_a_lone_request_goes_after_max_queue_delay(batcher):
    d, path = batcher(delay="300ms")
    assert request(d, 1, 0).status_code == 200
    t0 = time.monotonic()
    assert request(d, 1, 1).status_code == 200
    took = time.monotonic() - t0
    assert 0.3 <= took < 3, took  # waited for company, then went alone
    t0 = time.monotonic()  # a full batch goes at once
    results = concurrently([lambda i=i: request(d, 4, i) for i in range(2)])
    assert all(r.status_code == 200 for r in results)
    assert batches(path)[-1] == [4, 4] and time.monotonic() - t0 < 0.3 + 3


def test_a_member_whose_client_left_is_dropped_when_the_batch_goes(batcher):
    """Two requests wait for a batch; one client leaves before it goes: the batch carries the other alone
    (the departed one is answered to nobody and counted as cancelled), and the daemon goes on serving."""
    from conftest import raw_post
    d, path = batcher(delay="600ms")
    assert request(d, 1, 0).status_code == 200
    body = {"inputs": [{"name": "INPUT0", "datatype": "INT32", "shape": [3, 2], "data": [[1, 2]] * 3}]}
    gone = raw_post(d, "/v2/models/b/infer", body)
    stays = []
    t = threading.Thread(target=lambda: stays.append(request(d, 1, 7)))
    t.start()
    wait_for(lambda: d.model("b")["queue"] == 2, timeout=10, interval=0.01, what="two requests waiting for a batch")
    gone.close()
    t.join(30)
    assert stays and stays[0].status_code == 200, stays and stays[0].text
    assert output(stays[0], "OUTPUT0")["data"] == [7, -7]
    assert batches(path)[-1] == [1], batches(path)
    assert request(d, 2, 9).status_code == 200  # still serving


def test_a_batch_goes_at_once_when_it_reaches_a_preferred_size(corral):
    path = corral.add("b", "batcher", manifest=manifest(delay="5s", extra="") .replace(
        "  max_queue_delay: 5s\n", "  max_queue_delay: 5s\n  preferred_batch_sizes: [2]\n"))
    d = corral.start()
    t0 = time.monotonic()
    results = concurrently([lambda i=i: request(d, 1, i) for i in range(2)])
    assert all(r.status_code == 200 for r in results)
    assert batches(path) == [[1, 1]] and time.monotonic() - t0 < 5  # not the 5 s delay


def test_batches_take_the_highest_priority_first(corral):
    path = corral.add("b", "batcher", manifest=manifest(max_batch_size=2, delay="50ms", extra="priority_levels: 2\n"))
    d = corral.start()
    assert request(d, 1, 0).status_code == 200
    busy = threading.Thread(target=lambda: request(d, 1, 1, params={"sleep": 1.5}, rid="busy"))
    busy.start()
    wait_for(lambda: d.model("b")["instances"][0]["inflight"] == 1, what="the instance to be busy")
    time.sleep(0.2)  # the busy request's batch has gone: nothing else may join it
    low = [threading.Thread(target=lambda i=i: request(d, 1, 10 + i, params={"priority": 2}, rid=f"low{i}"))
           for i in range(2)]
    high = [threading.Thread(target=lambda i=i: request(d, 1, 20 + i, params={"priority": 1}, rid=f"high{i}"))
            for i in range(2)]
    for t in low:
        t.start()
    wait_for(lambda: d.model("b")["queue"] == 2, what="the low-priority requests to queue")
    for t in high:
        t.start()
    wait_for(lambda: d.model("b")["queue"] == 4, what="the high-priority requests to queue")
    for t in [busy] + low + high:
        t.join(30)
    ids = (path / "batches.log.ids").read_text().splitlines()
    assert sorted(ids[-2].split()) == ["high0", "high1"] and sorted(ids[-1].split()) == ["low0", "low1"], ids


def test_infer_batch_fails_only_the_request_that_failed(batcher):
    d, path = batcher(env={"BATCHER_FORM": "infer_batch"})
    assert request(d, 1, 0).status_code == 200
    results = concurrently([lambda: request(d, 1, 1), lambda: request(d, 2, 2, params={"fail": True}),
                            lambda: request(d, 1, 3)])
    assert len(batches(path)[-1]) == 3, batches(path)
    ok1, bad, ok3 = results
    assert bad.status_code == 400 and "asked to fail" in bad.json()["error"], bad.text
    assert ok1.status_code == 200 and output(ok1, "OUTPUT0")["data"] == [1, -1]
    assert ok3.status_code == 200 and output(ok3, "OUTPUT0")["data"] == [3, -3]


def test_an_output_without_the_batch_rows_fails_every_request_of_it(batcher):
    d, _ = batcher(parameters={"bad_rows": True})
    results = concurrently([lambda: request(d, 1, 1), lambda: request(d, 2, 2)])
    for r in results:
        assert r.status_code == 502, r.text
        assert "BATCH_ROWS" in r.json()["error"] and "model 'b'" in r.json()["error"]


def test_a_worker_killed_holding_a_batch_answers_each_request_502_once(batcher):
    d, path = batcher()
    assert request(d, 1, 0).status_code == 200
    pid = d.worker_pids("b")[0]
    out = {}

    def go(i):
        out[i] = request(d, 1, i, params={"sleep": 30})

    threads = [threading.Thread(target=go, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    wait_for(lambda: len(batches(path)) == 2, what="the batch to reach the model")
    os.kill(pid, signal.SIGKILL)
    for t in threads:
        t.join(30)
    assert [out[i].status_code for i in range(3)] == [502, 502, 502], [out[i].text for i in range(3)]
    assert all(f"pid {pid}" in out[i].json()["error"] for i in range(3))
    wait_for(lambda: d.model("b")["state"] == "ready", what="the replacement")
    assert request(d, 1, 9).status_code == 200


def test_requests_queued_when_a_batch_holder_is_killed_are_served_elsewhere_with_200(batcher):
    """Two instances, both busy: instance A holds a long batch, instance B a short one, and three more
    requests wait in the queue. A is killed: its batch's requests get 502 once each, and the queued ones,
    which the dead worker never had, are served by B or A's replacement with 200 and their own rows."""
    d, path = batcher(max_batch_size=4, extra="instances: 2\n")
    assert request(d, 1, 0).status_code == 200
    wait_for(lambda: len([i for i in d.model("b")["instances"] if i["state"] == "ready"]) == 2,
             what="both instances ready")
    out = {}

    def go(name, rows, value, params=None):
        out[name] = request(d, rows, value, params=params, rid=name)

    def start(names, rows, value, params=None):
        threads = [threading.Thread(target=go, args=(n, rows, value + k, params)) for k, n in enumerate(names)]
        for t in threads:
            t.start()
        return threads

    held = start(["held0", "held1"], 1, 10, {"sleep": 30})
    wait_for(lambda: len(batches(path)) == 2, what="the long batch to reach the model")
    victim = next(i for i in d.model("b")["instances"] if i["inflight"])
    short = start(["short0", "short1"], 1, 20, {"sleep": 2})
    wait_for(lambda: len(batches(path)) == 3, what="the short batch to reach the other instance")
    assert all(i["inflight"] for i in d.model("b")["instances"]), d.model("b")
    queued = start(["queued0", "queued1", "queued2"], 2, 30)
    wait_for(lambda: d.model("b")["queue"] == 3, what="three requests queued behind the two batches")
    os.kill(victim["pid"], signal.SIGKILL)
    for t in held + short + queued:
        t.join(30)
    assert sorted(out) == sorted(["held0", "held1", "short0", "short1", "queued0", "queued1", "queued2"]), out
    for name in ["held0", "held1"]:
        assert out[name].status_code == 502, out[name].text
        assert f"pid {victim['pid']}" in out[name].json()["error"], out[name].text
    for name in ["short0", "short1", "queued0", "queued1", "queued2"]:
        assert out[name].status_code == 200, (name, out[name].text)
        assert out[name].json()["id"] == name
    for k in range(3):
        assert output(out[f"queued{k}"], "OUTPUT0")["data"] == [30 + k, -30 - k, 31 + k, -31 - k]
    ids = [sorted(line.split()) for line in (path / "batches.log.ids").read_text().splitlines()]
    assert ids[1] == ["held0", "held1"] and ids[2] == ["short0", "short1"], ids
    assert sorted(x for line in ids[3:] for x in line) == ["queued0", "queued1", "queued2"], ids  # once each
    m = d.model("b")
    restarts = {i["id"]: i["restarts"] for i in m["instances"]}
    assert restarts == {victim["id"]: 1, 1 - victim["id"]: 0}, m


def test_a_deadline_inside_a_running_batch_answers_that_request_alone(batcher):
    d, path = batcher()
    assert request(d, 1, 0).status_code == 200
    results = concurrently([lambda: request(d, 1, 1, params={"sleep": 1}),
                            lambda: request(d, 1, 2, params={"timeout": 400000})])
    assert results[0].status_code == 200
    assert results[1].status_code == 504 and "in a batch" in results[1].json()["error"]
    assert batches(path)[-1] == [1, 1]


def test_metrics_count_executions_and_rows(batcher):
    d, path = batcher()
    assert request(d, 1, 0).status_code == 200
    concurrently([lambda i=i: request(d, 2, i) for i in range(3)])
    text = d.get("/metrics").text

    def value(name, **labels):
        for line in text.splitlines():
            if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
        raise AssertionError(name)

    n_batches = len(batches(path))
    assert value("nv_inference_request_success", model="b") == 4
    assert value("nv_inference_count", model="b") == 7  # rows: 1 + 2 + 2 + 2
    assert value("nv_inference_exec_count", model="b") == n_batches
    assert value("corral_batch_size_count", model="b") == n_batches
    assert value("corral_batch_size_sum", model="b") == 7
    stats = d.get("/v2/models/b/stats").json()["model_stats"][0]
    assert stats["execution_count"] == n_batches and stats["inference_count"] == 7


# ---- the C SDK's two forms through the daemon

C_DELAY = "batching:\n  max_batch_size: 8\n  max_queue_delay: 200ms\n"


def c_request(d, model, rows, value, params=None):
    body = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [rows, 2],
                        "data": [[value + r, value - r] for r in range(rows)]}]}
    if params:
        body["parameters"] = params
    return d.post(f"/v2/models/{model}/infer", body, timeout=30)


def test_echo_c_batch_gives_each_request_its_rows(corral):
    corral.add("ec", "echo-c-batch", manifest=f"runtime: exec\nentrypoint: echo-c\n{C_DELAY}")
    d = corral.start()
    assert c_request(d, "ec", 1, 0).status_code == 200
    rows = [1, 3, 2, 1, 1]
    results = concurrently([lambda i=i, n=n: c_request(d, "ec", n, 10.0 * i) for i, n in enumerate(rows)])
    for i, (n, r) in enumerate(zip(rows, results)):
        assert r.status_code == 200, r.text
        out = output(r, "OUTPUT0")
        assert out["shape"] == [n, 2] and out["data"] == [v for k in range(n) for v in (10.0 * i + k, 10.0 * i - k)]
    text = d.get("/metrics").text
    execs = float(next(line for line in text.splitlines() if line.startswith('nv_inference_exec_count{model="ec"'))
                  .rsplit(" ", 1)[1])
    assert execs < 1 + len(rows), text  # fewer executions than requests: they were batched


def test_infer_batch_c_fails_only_its_bad_request(corral):
    corral.add("ib", "infer_batch_c", manifest=f"runtime: exec\nentrypoint: infer_batch_c\n{C_DELAY}")
    d = corral.start()
    assert c_request(d, "ib", 1, 0).status_code == 200
    results = concurrently([lambda: c_request(d, "ib", 1, 1.0), lambda: c_request(d, "ib", 2, 2.0, {"fail": True}),
                            lambda: c_request(d, "ib", 1, 3.0)])
    assert results[1].status_code == 400, results[1].text
    assert results[0].status_code == 200 and output(results[0], "OUTPUT0")["data"] == [1.0, 1.0]
    assert results[2].status_code == 200 and output(results[2], "OUTPUT0")["data"] == [3.0, 3.0]
    assert "3 requests" in d.get("/v1/models/ib/logs").text  # one batch of the three
