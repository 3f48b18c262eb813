"""Model lifecycle: lazy and eager load, explicit load/unload, concurrent
start, scaling, idle unload, graceful and forced unload, and models whose
load fails.

Fixtures: tests/models/steerable (load/unload/infer steered by parameters),
tests/models/load_fails (load raises ValueError("bad weights")),
tests/models/slowload, examples/models/echo.
"""
from __future__ import annotations

import re
import threading
import time


from conftest import alive, ctl_manifest, infer, load, out, tensor, unload, wait_for


def ready_instances(m: dict) -> list:
    return [i for i in m["instances"] if i["state"] == "ready"]


# ---------------------------------------------------------------- lazy and eager


def test_lazy_model_is_unloaded_until_first_request_which_waits_for_load(corral):
    corral.add("slow", "steerable", manifest=ctl_manifest(parameters={"load_delay": 1.5}))
    d = corral.start()
    listed = {m["name"]: m for m in d.get("/v1/models").json()["models"]}
    assert listed["slow"]["state"] == "unloaded"
    assert listed["slow"]["instances"] == []
    assert d.model("slow")["state"] == "unloaded"

    result = {}

    def request():
        t0 = time.monotonic()
        result["resp"] = infer(d, "slow", timeout=30)
        result["elapsed"] = time.monotonic() - t0

    t = threading.Thread(target=request)
    t.start()
    try:
        # While the first request waits, the model is loading and its instance starting.
        m = wait_for(lambda: (lambda m: m if m["state"] == "loading" else None)(d.model("slow")),
                     timeout=10, interval=0.02, what="slow to be loading")
        assert m["instances"] and m["instances"][0]["state"] == "starting"
        assert m["instances"][0]["pid"] > 0 and alive(m["instances"][0]["pid"])
    finally:
        t.join(timeout=40)
    assert not t.is_alive(), "the first request never got an answer"
    assert result["resp"].status_code == 200, result["resp"].text
    # The request was held for the whole load, not answered early.
    assert result["elapsed"] >= 1.4, result["elapsed"]
    m = d.model("slow")
    assert m["state"] == "ready"
    assert [i["state"] for i in m["instances"]] == ["ready"]
    assert out(result["resp"], "PID") == m["instances"][0]["pid"]
    assert m["instances"][0]["requests"] == 1
    assert "slow: unloaded -> loading" in d.log() and "slow: loading -> ready" in d.log()


def test_eager_model_loads_at_start_without_any_request(corral):
    corral.add("eager", "steerable", manifest=ctl_manifest(load="eager", instances=2, parameters={"load_delay": 0.5}))
    corral.add("lazy", "echo")
    d = corral.start()
    m = d.model("eager")
    assert m["state"] in ("loading", "ready"), m
    assert len(m["instances"]) == 2
    # The model is ready with its first instance; both come up without a request.
    m = wait_for(lambda: (lambda m: m if len(ready_instances(m)) == 2 else None)(d.model("eager")),
                 timeout=20, what="both eager instances ready")
    assert m["state"] == "ready"
    assert all(i["requests"] == 0 for i in m["instances"])
    assert all(alive(i["pid"]) for i in m["instances"])
    # A lazy neighbour stays unloaded.
    assert d.model("lazy")["state"] == "unloaded"
    assert out(infer(d, "eager"), "INSTANCE") in (0, 1)


# ---------------------------------------------------------------- explicit load / unload


def test_explicit_load_blocks_until_ready_and_unload_until_workers_exit(corral):
    corral.add("slow", "steerable", manifest=ctl_manifest(instances=2, parameters={"load_delay": 1}))
    d = corral.start()
    t0 = time.monotonic()
    r = load(d, "slow")
    elapsed = time.monotonic() - t0
    assert r.status_code == 200, r.text
    assert elapsed >= 0.9, f"load answered after {elapsed:.2f}s, before the 1 s load finished"
    m = d.model("slow")
    assert m["state"] == "ready"
    assert len(ready_instances(m)) == 2
    pids = [i["pid"] for i in m["instances"]]
    assert len(set(pids)) == 2 and all(alive(p) for p in pids)

    # Loading a ready model again is a no-op: same processes.
    r = load(d, "slow")
    assert r.status_code == 200, r.text
    assert sorted(d.worker_pids("slow")) == sorted(pids)

    r = unload(d, "slow")
    assert r.status_code == 200, r.text
    # unload answers only once the workers have exited.
    assert [p for p in pids if alive(p)] == []
    m = d.model("slow")
    assert m["state"] == "unloaded"
    assert m["instances"] == []

    # Unloading an unloaded model is fine too.
    assert unload(d, "slow").status_code == 200

    # Reloading starts new processes.
    r = load(d, "slow")
    assert r.status_code == 200, r.text
    new_pids = d.worker_pids("slow")
    assert len(new_pids) == 2 and not set(new_pids) & set(pids)
    assert infer(d, "slow").status_code == 200


def test_explicit_load_with_instance_count(corral):
    corral.add("echo", "echo")
    d = corral.start()
    r = load(d, "echo", {"instances": 3})
    assert r.status_code == 200, r.text
    m = d.model("echo")
    assert m["state"] == "ready"
    assert len(ready_instances(m)) == 3
    assert sorted(i["id"] for i in m["instances"]) == [0, 1, 2]
    pids = [i["pid"] for i in m["instances"]]
    assert len(set(pids)) == 3 and all(alive(p) for p in pids)
    assert unload(d, "echo").status_code == 200
    assert [p for p in pids if alive(p)] == []
    # Without a count the manifest's instances (2) apply again.
    assert load(d, "echo").status_code == 200
    assert len(ready_instances(d.model("echo"))) == 2


def test_unload_waits_for_a_graceful_unload_hook(corral):
    corral.add("tidy", "steerable", manifest=ctl_manifest(parameters={"unload_delay": 0.5}))
    d = corral.start()
    assert load(d, "tidy").status_code == 200
    pid = d.worker_pids("tidy")[0]
    t0 = time.monotonic()
    r = unload(d, "tidy")
    elapsed = time.monotonic() - t0
    assert r.status_code == 200, r.text
    assert elapsed >= 0.45, f"unload answered after {elapsed:.2f}s while the model's unload takes 0.5s"
    assert not alive(pid)
    # The model's unload ran (it printed) and the worker exited cleanly.
    logs = wait_for(lambda: (lambda t: t if "instance 0 unloading" in t else None)(d.get("/v1/models/tidy/logs").text),
                    timeout=5, what="the unload hook's line in the logs")
    assert "steerable: instance 0 unloading" in logs
    assert f"(pid {pid}) exited with status 0" in d.log()


def test_unload_of_a_worker_that_ignores_shutdown_is_forced(corral):
    # unload sleeps 60 s: the daemon must move on to SIGTERM after --stop-grace (1 s in the harness).
    corral.add("stuck", "steerable", manifest=ctl_manifest(parameters={"unload_delay": 60}))
    d = corral.start()
    assert load(d, "stuck").status_code == 200
    pid = d.worker_pids("stuck")[0]
    t0 = time.monotonic()
    r = unload(d, "stuck", timeout=20)
    elapsed = time.monotonic() - t0
    assert r.status_code == 200, r.text
    assert elapsed < 15, elapsed
    assert not alive(pid)
    assert d.model("stuck")["state"] == "unloaded"
    assert f"(pid {pid}): no exit after SHUTDOWN; sending SIGTERM" in d.log()


def test_load_while_unloading_conflicts_and_then_succeeds(corral):
    corral.add("tidy", "steerable", manifest=ctl_manifest(parameters={"unload_delay": 0.8}))
    d = corral.start()
    assert load(d, "tidy").status_code == 200
    t = threading.Thread(target=lambda: unload(d, "tidy", timeout=20))
    t.start()
    try:
        wait_for(lambda: d.model("tidy")["state"] == "unloading", timeout=5, interval=0.02, what="unloading")
        r = load(d, "tidy")
        assert r.status_code == 409, r.text
        assert "tidy" in r.json()["error"]
    finally:
        t.join(timeout=30)
    d.wait_state("tidy", "unloaded", timeout=10)
    assert load(d, "tidy").status_code == 200
    assert d.model("tidy")["state"] == "ready"


def test_instances_start_concurrently(corral):
    corral.add("slow", "steerable", manifest=ctl_manifest(parameters={"load_delay": 2}))
    d = corral.start()
    t0 = time.monotonic()
    assert load(d, "slow", {"instances": 1}).status_code == 200
    one = time.monotonic() - t0
    assert unload(d, "slow").status_code == 200

    t0 = time.monotonic()
    assert load(d, "slow", {"instances": 4}).status_code == 200
    four = time.monotonic() - t0
    assert len(ready_instances(d.model("slow"))) == 4
    # Four 2 s loads side by side take about as long as one, not four times as long.
    assert four / one < 2.0, f"1 instance: {one:.2f}s, 4 instances: {four:.2f}s"


# ---------------------------------------------------------------- scaling


def scale(d, model, n):
    return d.post(f"/v1/models/{model}/scale", {"instances": n}, timeout=30)


def test_scale_up_and_down_at_runtime(corral):
    corral.add("ctl", "steerable")
    d = corral.start()
    assert load(d, "ctl").status_code == 200
    first = d.worker_pids("ctl")
    assert len(first) == 1

    r = scale(d, "ctl", 3)
    assert r.status_code == 200, r.text
    m = wait_for(lambda: (lambda m: m if len(ready_instances(m)) == 3 else None)(d.model("ctl")),
                 timeout=20, what="3 ready instances")
    pids = {i["id"]: i["pid"] for i in m["instances"]}
    assert sorted(pids) == [0, 1, 2]
    assert pids[0] == first[0], "scaling up must keep the running instance"

    # Three slow requests at once are spread over the three processes.
    results = [None] * 3

    def call(k):
        results[k] = infer(d, "ctl", timeout=30, sleep=0.5)

    threads = [threading.Thread(target=call, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=40)
    served = {out(r, "PID") for r in results}
    assert served == set(pids.values())

    r = scale(d, "ctl", 1)
    assert r.status_code == 200, r.text
    retired = [pids[1], pids[2]]
    wait_for(lambda: not any(alive(p) for p in retired), timeout=15, what="retired instances to exit")
    m = wait_for(lambda: (lambda m: m if len(m["instances"]) == 1 else None)(d.model("ctl")),
                 timeout=10, what="one instance left")
    assert m["instances"][0]["pid"] == pids[0] and alive(pids[0])
    for _ in range(3):
        assert out(infer(d, "ctl"), "PID") == pids[0]


def test_scale_down_lets_busy_instances_finish_their_request(corral):
    corral.add("ctl", "steerable", manifest=ctl_manifest(instances=2))
    d = corral.start()
    assert load(d, "ctl").status_code == 200
    pids = d.worker_pids("ctl")
    results = [None, None]

    def call(k):
        results[k] = infer(d, "ctl", timeout=30, sleep=1.5)

    threads = [threading.Thread(target=call, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: sum(i["inflight"] for i in d.model("ctl")["instances"]) == 2, timeout=10,
                 interval=0.02, what="both instances busy")
        r = scale(d, "ctl", 1)
        assert r.status_code == 200, r.text
    finally:
        for t in threads:
            t.join(timeout=40)
    assert all(r is not None and r.status_code == 200 for r in results), [r and r.text for r in results]
    assert {out(r, "PID") for r in results} == set(pids)
    wait_for(lambda: len(d.model("ctl")["instances"]) == 1, timeout=15, what="the retired instance to go")
    left = d.worker_pids("ctl")
    assert len(left) == 1
    gone = [p for p in pids if p not in left]
    wait_for(lambda: not alive(gone[0]), timeout=10, what="the retired pid to exit")
    assert out(infer(d, "ctl"), "PID") == left[0]


def test_scale_needs_a_loaded_model(corral):
    corral.add("ctl", "steerable")
    d = corral.start()
    r = scale(d, "ctl", 2)
    assert r.status_code == 409, r.text
    assert "ctl" in r.json()["error"]
    assert d.model("ctl")["state"] == "unloaded"


# ---------------------------------------------------------------- keep_alive


def test_keep_alive_unloads_an_idle_model_and_next_request_reloads(corral):
    corral.add("brief", "steerable", manifest=ctl_manifest(keep_alive="1s"))
    corral.add("echo", "echo")
    d = corral.start()
    pid = out(infer(d, "brief"), "PID")
    assert d.model("brief")["state"] == "ready"
    # Keep it busy past its keep_alive: activity postpones the unload.
    for _ in range(3):
        time.sleep(0.4)
        assert out(infer(d, "brief"), "PID") == pid
    t0 = time.monotonic()
    d.wait_state("brief", "unloaded", timeout=15)
    assert time.monotonic() - t0 >= 0.5
    wait_for(lambda: not alive(pid), timeout=5, what="the idle worker to exit")
    assert "brief: idle for its keep_alive; unloading" in d.log()
    # The next request loads it again, lazily.
    pid2 = out(infer(d, "brief"), "PID")
    assert pid2 != pid and alive(pid2)
    assert d.model("brief")["state"] == "ready"


def test_keep_alive_never_keeps_the_model(corral):
    corral.add("forever", "steerable", manifest=ctl_manifest(keep_alive=-1))
    d = corral.start()
    pid = out(infer(d, "forever"), "PID")
    time.sleep(1.5)
    m = d.model("forever")
    assert m["state"] == "ready" and m["instances"][0]["pid"] == pid


# ---------------------------------------------------------------- load failures


def test_load_that_raises_fails_the_model_with_its_reason(corral):
    corral.add("bad", "load_fails")
    corral.add("echo", "echo")
    d = corral.start()
    t0 = time.monotonic()
    r = infer(d, "bad", timeout=30)
    assert time.monotonic() - t0 < 20
    assert r.status_code == 503, r.text
    assert "Retry-After" in r.headers
    err = r.json()["error"]
    assert "bad" in err and "ValueError: bad weights" in err, err

    m = d.model("bad")
    assert m["state"] == "failed"
    assert "ValueError: bad weights" in m["reason"]
    listed = {x["name"]: x for x in d.get("/v1/models").json()["models"]}
    assert listed["bad"]["state"] == "failed" and "bad weights" in listed["bad"]["reason"]
    wait_for(lambda: not any(alive(i["pid"]) for i in d.model("bad")["instances"] if i["pid"]),
             timeout=10, what="the failed worker to exit")

    # An explicit load reports the same failure.
    r = load(d, "bad", timeout=30)
    assert r.status_code == 503, r.text
    assert "ValueError: bad weights" in r.json()["error"]
    # Later requests are refused quickly while it stays failed.
    r = infer(d, "bad")
    assert r.status_code == 503 and "bad weights" in r.json()["error"]

    # Everything else keeps working.
    assert d.get("/v2/health/live").status_code == 200
    r = d.infer("echo", [tensor("INPUT0", "FP32", [1], [3.0])])
    assert r.status_code == 200, r.text
    assert d.proc.poll() is None


def test_failed_load_recovers_after_the_code_is_fixed(corral):
    path = corral.add("bad", "load_fails")
    d = corral.start()
    r = load(d, "bad", timeout=30)
    assert r.status_code == 503
    d.wait_state("bad", "failed", timeout=10)
    worker = path / "worker.py"
    worker.write_text(worker.read_text().replace('raise ValueError("bad weights")', "pass"))
    r = load(d, "bad", timeout=30)
    assert r.status_code == 200, r.text
    m = d.model("bad")
    assert m["state"] == "ready" and not m.get("reason")
    assert infer(d, "bad").status_code == 200


def test_failed_load_recovers_after_the_manifest_is_fixed(corral):
    path = corral.add("bad", "load_fails")
    d = corral.start()
    assert load(d, "bad", timeout=30).status_code == 503
    d.wait_state("bad", "failed", timeout=10)
    (path / "model.yaml").write_text("runtime: python\nentrypoint: worker.py\nparameters:\n  fixed: true\n")
    # An explicit load reads the repository again, as Triton's load does.
    r = load(d, "bad", timeout=30)
    assert r.status_code == 200, r.text
    assert d.model("bad")["state"] == "ready"
    assert infer(d, "bad").status_code == 200


def test_lazy_load_failure_answers_every_waiting_request(corral):
    corral.add("bad", "load_fails", manifest="runtime: python\nentrypoint: slow_bad.py\n",
               files={"slow_bad.py": "import time, corral\n"
                                     "class M(corral.Model):\n"
                                     "    def load(self, ctx):\n"
                                     "        time.sleep(0.8)\n"
                                     "        raise ValueError('bad weights')\n"
                                     "corral.run(M)\n"})
    d = corral.start()
    results = [None] * 4

    def call(k):
        results[k] = infer(d, "bad", timeout=30)

    threads = [threading.Thread(target=call, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=40)
    assert all(r is not None for r in results), "a waiting request got no answer"
    for r in results:
        assert r.status_code == 503, r.text
        assert "ValueError: bad weights" in r.json()["error"]
    assert d.model("bad")["state"] == "failed"


def test_load_timeout_fails_a_load_that_hangs(corral):
    corral.add("hung", "steerable", manifest=ctl_manifest(
        load_timeout="1s", restart="{max_restarts: 0}", parameters={"load_delay": 60}))
    corral.add("echo", "echo")
    d = corral.start()
    t0 = time.monotonic()
    r = load(d, "hung", timeout=30)
    elapsed = time.monotonic() - t0
    assert r.status_code == 503, r.text
    assert 0.9 <= elapsed < 20, elapsed
    assert "hung" in r.json()["error"] and "load_timeout" in r.json()["error"], r.text
    m = d.model("hung")
    assert m["state"] == "failed" and "load_timeout" in m["reason"]
    wait_for(lambda: not any(alive(i["pid"]) for i in d.model("hung")["instances"] if i["pid"]),
             timeout=10, what="the hung worker to be killed")
    assert d.infer("echo", [tensor("INPUT0", "FP32", [1], [1.0])]).status_code == 200


# ---------------------------------------------------------------- lifecycle operations racing requests


def test_unload_lets_the_running_request_finish_and_refuses_queued_ones(corral):
    corral.add("ctl", "steerable")
    d = corral.start()
    assert load(d, "ctl").status_code == 200
    pid = d.worker_pids("ctl")[0]
    results = {}

    def call(key, **params):
        results[key] = infer(d, "ctl", timeout=30, **params)

    running = threading.Thread(target=call, args=("running",), kwargs={"sleep": 1})
    running.start()
    wait_for(lambda: d.model("ctl")["instances"][0]["inflight"] == 1, timeout=10, interval=0.02, what="running")
    # The second is pipelined to the busy worker (in flight: it finishes too); the third waits in the queue.
    ahead = threading.Thread(target=call, args=("ahead",))
    ahead.start()
    wait_for(lambda: d.model("ctl")["instances"][0]["inflight"] == 2, timeout=10, interval=0.02, what="pipelined")
    queued = threading.Thread(target=call, args=("queued",))
    queued.start()
    wait_for(lambda: d.model("ctl")["queue"] == 1, timeout=10, interval=0.02, what="a queued request")
    r = unload(d, "ctl", timeout=30)
    assert r.status_code == 200, r.text
    for t in (running, ahead, queued):
        t.join(timeout=30)
    for key in ("running", "ahead"):
        assert results[key].status_code == 200, results[key].text
        assert out(results[key], "PID") == pid
    assert results["queued"].status_code == 503, results["queued"].text
    assert "ctl" in results["queued"].json()["error"]
    assert not alive(pid)
    assert d.model("ctl")["state"] == "unloaded"


def test_unload_during_load_cancels_the_load(corral):
    corral.add("slow", "steerable", manifest=ctl_manifest(parameters={"load_delay": 30}))
    d = corral.start()
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("load", load(d, "slow", timeout=40)))
    t.start()
    pids = wait_for(lambda: d.worker_pids("slow"), timeout=10, what="the load to start a worker")
    t0 = time.monotonic()
    r = unload(d, "slow", timeout=30)
    assert r.status_code == 200, r.text
    assert time.monotonic() - t0 < 15
    t.join(timeout=30)
    assert result["load"].status_code in (409, 503), result["load"].text
    assert "slow" in result["load"].json()["error"]
    assert not any(alive(p) for p in pids)
    assert d.model("slow")["state"] == "unloaded"


def test_concurrent_loads_share_one_start(corral):
    corral.add("slow", "steerable", manifest=ctl_manifest(instances=2, parameters={"load_delay": 1}))
    d = corral.start()
    results = [None] * 3

    def call(k):
        results[k] = load(d, "slow", timeout=30)

    threads = [threading.Thread(target=call, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=40)
    assert all(r is not None and r.status_code == 200 for r in results), [r and r.text for r in results]
    assert len(d.worker_pids("slow")) == 2
    assert len(re.findall(r"model slow instance \d+ started", d.log())) == 2


def test_a_burst_of_lazy_requests_starts_the_model_once(corral):
    corral.add("slow", "steerable", manifest=ctl_manifest(parameters={"load_delay": 0.8}))
    d = corral.start()
    results = [None] * 5

    def call(k):
        results[k] = infer(d, "slow", timeout=30)

    threads = [threading.Thread(target=call, args=(k,)) for k in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=40)
    assert all(r is not None and r.status_code == 200 for r in results), [r and r.text for r in results]
    assert len({out(r, "PID") for r in results}) == 1
    assert d.log().count("model slow instance 0 started") == 1
    assert d.model("slow")["instances"][0]["requests"] == 5


def test_keep_alive_does_not_unload_a_busy_model(corral):
    corral.add("brief", "steerable", manifest=ctl_manifest(keep_alive="500ms"))
    d = corral.start()
    pid = out(infer(d, "brief"), "PID")
    r = infer(d, "brief", timeout=30, sleep=1.5)
    assert out(r, "PID") == pid
    assert "brief: idle for its keep_alive" not in d.log()
    d.wait_state("brief", "unloaded", timeout=15)


def test_eager_model_that_fails_does_not_stop_the_daemon(corral):
    corral.add("bad", "load_fails", manifest="runtime: python\nentrypoint: worker.py\nload: eager\n")
    corral.add("echo", "echo")
    d = corral.start()
    m = d.wait_state("bad", "failed", timeout=20)
    assert "ValueError: bad weights" in m["reason"]
    assert d.infer("echo", [tensor("INPUT0", "FP32", [1], [1.0])]).status_code == 200


def test_scale_of_a_failed_model_conflicts(corral):
    corral.add("bad", "load_fails")
    d = corral.start()
    assert load(d, "bad", timeout=30).status_code == 503
    r = scale(d, "bad", 2)
    assert r.status_code == 409, r.text
    assert "bad" in r.json()["error"]


def test_sigterm_while_a_model_is_loading(corral):
    corral.add("slow", "steerable", manifest=ctl_manifest(load="eager", parameters={"load_delay": 60}))
    d = corral.start()
    pids = wait_for(lambda: d.worker_pids("slow"), timeout=10, what="the eager load to start")
    t0 = time.monotonic()
    assert d.stop(timeout=20) == 0
    assert time.monotonic() - t0 < 15
    assert not any(alive(p) for p in pids)
