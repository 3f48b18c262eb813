"""Worker processes and their supervision: model exceptions versus crashes,
restarts and crash loops, the daemon's own SIGTERM and SIGKILL, captured
worker output, and what a worker process looks like from the OS.

Fixtures: tests/models/steerable, tests/models/dies_in_load, tests/models/raw_protocol,
examples/models/echo, examples/models/echo-c.
"""
from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from conftest import alive, ctl_manifest, infer, load, out, tensor, unload, wait_for


def stat_fields(pid: int) -> list[str]:
    """Fields of /proc/pid/stat after the command name: [state, ppid, pgrp, session, ...]."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def instance(d, model, iid=0):
    return next(i for i in d.model(model)["instances"] if i["id"] == iid)


def wait_restarted(d, model, old_pid, iid=0, timeout=15):
    """Waits until instance iid runs again under a new pid; returns its /v1 record."""
    def check():
        m = d.model(model)
        for i in m["instances"]:
            if i["id"] == iid and i["state"] == "ready" and i["pid"] not in (0, old_pid):
                return i
        return None
    return wait_for(check, timeout=timeout, what=f"{model} instance {iid} to restart")


class Call(threading.Thread):
    """An inference on its own thread; .resp or .exc once joined."""

    def __init__(self, d, model, timeout=30, **params):
        super().__init__(daemon=True)
        self.args_ = (d, model, timeout, params)
        self.resp = None
        self.exc = None
        self.start()

    def run(self):
        d, model, timeout, params = self.args_
        try:
            self.resp = infer(d, model, timeout=timeout, **params)
        except Exception as e:  # noqa: BLE001 - recorded for the test to judge
            self.exc = e


# ---------------------------------------------------------------- exceptions and crashes


def test_model_exception_is_a_500_and_the_instance_survives(corral):
    corral.add("ctl", "steerable")
    d = corral.start()
    pid = out(infer(d, "ctl"), "PID")
    r = infer(d, "ctl", **{"raise": "tokenizer exploded"})
    assert r.status_code == 500, r.text
    err = r.json()["error"]
    assert "ctl" in err and "RuntimeError" in err and "tokenizer exploded" in err, err
    i = instance(d, "ctl")
    assert i["pid"] == pid and i["restarts"] == 0 and i["state"] == "ready"
    assert out(infer(d, "ctl"), "PID") == pid
    assert d.model("ctl")["state"] == "ready"
    assert alive(pid)


def test_worker_crash_while_holding_a_request_is_a_502_and_the_instance_restarts(corral):
    corral.add("ctl", "steerable", manifest=ctl_manifest(instances=2))
    d = corral.start()
    assert load(d, "ctl").status_code == 200
    pids = {i["id"]: i["pid"] for i in d.model("ctl")["instances"]}
    # Whichever instance takes the crashing request, the message must name that one.
    r = infer(d, "ctl", exit=3)
    assert r.status_code == 502, r.text
    err = r.json()["error"]
    crashed = next(iid for iid, p in pids.items() if f"pid {p}" in err)
    assert "ctl" in err
    assert f"instance {crashed}" in err, err
    assert "exited with status 3" in err, err

    i = wait_restarted(d, "ctl", pids[crashed], iid=crashed)
    assert i["restarts"] == 1
    assert not alive(pids[crashed])
    other = 1 - crashed
    survivor = instance(d, "ctl", other)
    assert survivor["pid"] == pids[other] and survivor["restarts"] == 0
    assert d.model("ctl")["state"] == "ready"
    # Two requests at once need both instances: the restarted one serves again.
    calls = [Call(d, "ctl", sleep=0.5) for _ in range(2)]
    for c in calls:
        c.join(timeout=30)
    assert {out(c.resp, "PID") for c in calls} == {i["pid"], pids[other]}
    assert f"(pid {pids[crashed]}) exited with status 3" in d.log()


def test_crash_after_some_requests_restarts_a_fresh_process(corral):
    corral.add("flaky", "steerable", manifest=ctl_manifest(parameters={"crash_after": 3}))
    d = corral.start()
    first = infer(d, "flaky")
    pid = out(first, "PID")
    assert out(first, "COUNT") == 1
    assert out(infer(d, "flaky"), "COUNT") == 2
    r = infer(d, "flaky")
    assert r.status_code == 502, r.text
    assert f"pid {pid}" in r.json()["error"] and "status 3" in r.json()["error"]
    i = wait_restarted(d, "flaky", pid)
    assert i["restarts"] == 1
    again = infer(d, "flaky")
    assert out(again, "PID") == i["pid"]
    assert out(again, "COUNT") == 1  # a new process, loaded afresh


def test_worker_killed_by_a_signal_is_reported_and_restarted(corral):
    corral.add("ctl", "steerable")
    d = corral.start()
    pid = out(infer(d, "ctl"), "PID")
    call = Call(d, "ctl", sleep=5)
    wait_for(lambda: instance(d, "ctl")["inflight"] == 1, timeout=10, interval=0.02, what="the request to run")
    os.kill(pid, signal.SIGKILL)
    call.join(timeout=20)
    assert call.exc is None, call.exc
    assert call.resp.status_code == 502, call.resp.text
    err = call.resp.json()["error"]
    assert f"pid {pid}" in err and "instance 0" in err and "signal 9" in err, err
    i = wait_restarted(d, "ctl", pid)
    assert i["restarts"] == 1
    assert out(infer(d, "ctl"), "PID") == i["pid"]

    # An idle worker killed from outside is replaced too.
    os.kill(i["pid"], signal.SIGKILL)
    j = wait_restarted(d, "ctl", i["pid"])
    assert j["restarts"] == 2
    assert out(infer(d, "ctl"), "PID") == j["pid"]


def test_crash_loop_fails_the_model_and_answers_queued_requests(corral):
    corral.add("loop", "dies_in_load")
    corral.add("echo", "echo")
    d = corral.start()
    calls = [Call(d, "loop", timeout=30) for _ in range(3)]
    t0 = time.monotonic()
    for c in calls:
        c.join(timeout=35)
    assert time.monotonic() - t0 < 30
    for c in calls:
        assert c.exc is None, c.exc
        assert c.resp.status_code == 503, c.resp.text
        assert "loop" in c.resp.json()["error"]
    m = d.wait_state("loop", "failed", timeout=10)
    reason = m["reason"]
    assert "status 3" in reason and "restart" in reason, reason
    # Three starts (the first and two restarts), with backoff between them.
    log = d.log()
    assert log.count("model loop instance 0 started") == 3, log
    assert "loop instance 0: restarting in 50 ms" in log
    assert "loop instance 0: restarting in 100 ms" in log
    wait_for(lambda: not any(i["pid"] and alive(i["pid"]) for i in d.model("loop")["instances"]),
             timeout=10, what="no live worker of the failed model")

    # A later explicit load tries again from scratch and fails the same way, in bounded time.
    wait_for(lambda: d.model("loop")["instances"] == [], timeout=10, what="the failed slots to go")
    t0 = time.monotonic()
    r = load(d, "loop", timeout=30)
    assert time.monotonic() - t0 < 25
    assert r.status_code == 503, r.text
    assert "loop" in r.json()["error"] and "status 3" in r.json()["error"]
    # The daemon and other models are fine.
    assert d.infer("echo", [tensor("INPUT0", "INT32", [1], [7])]).status_code == 200


# ---------------------------------------------------------------- the daemon's signals


def test_sigterm_stops_every_worker_and_exits_zero(corral):
    corral.add("echo", "echo")
    corral.add("ctl", "steerable", manifest=ctl_manifest(parameters={"spawn_child": True}))
    d = corral.start()
    assert load(d, "echo").status_code == 200
    child = out(infer(d, "ctl"), "CHILD")
    pids = d.worker_pids("echo") + d.worker_pids("ctl")
    assert len(pids) == 3 and all(alive(p) for p in pids) and alive(child)
    assert d.stop(signal.SIGTERM, timeout=20) == 0
    # The daemon exits only after its workers did.
    assert [p for p in pids if alive(p)] == []
    wait_for(lambda: not alive(child), timeout=5, what="the worker's own child to be gone")
    assert "every worker has exited" in d.log()


def test_sigkill_of_the_daemon_takes_every_worker_with_it(corral):
    corral.add("echo", "echo")
    corral.add("busy", "steerable")
    corral.add("loading", "steerable", manifest=ctl_manifest(load="eager", parameters={"load_delay": 60}))
    corral.add("c", "echo-c")
    d = corral.start()
    assert load(d, "echo").status_code == 200
    assert load(d, "c").status_code == 200
    busy_pid = out(infer(d, "busy"), "PID")
    call = Call(d, "busy", timeout=30, sleep=30)
    wait_for(lambda: instance(d, "busy")["inflight"] == 1, timeout=10, interval=0.02, what="busy to be busy")
    loading = wait_for(lambda: d.worker_pids("loading"), timeout=10, what="the eager load to start")
    pids = d.worker_pids("echo") + d.worker_pids("c") + [busy_pid] + loading
    assert len(pids) == 5 and all(alive(p) for p in pids)

    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait(timeout=10)
    wait_for(lambda: not any(alive(p) for p in pids), timeout=3, interval=0.02,
             what=f"workers {[p for p in pids if alive(p)]} to die with the daemon")
    call.join(timeout=10)
    assert call.resp is None and call.exc is not None  # the connection died with the daemon
    d.stop()


def test_sigkill_of_the_daemon_takes_what_workers_started_with_it(corral):
    corral.add("ctl", "steerable", manifest=ctl_manifest(parameters={"spawn_child": True}))
    d = corral.start()
    r = infer(d, "ctl")
    pid, child = out(r, "PID"), out(r, "CHILD")
    assert alive(pid) and alive(child)
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait(timeout=10)
    wait_for(lambda: not alive(pid) and not alive(child), timeout=3, interval=0.02,
             what="the worker and the process it started to die with the daemon")
    d.stop()


def test_requests_running_and_queued_at_sigterm_are_answered(corral):
    corral.add("ctl", "steerable")
    d = corral.start()
    assert load(d, "ctl").status_code == 200
    running = Call(d, "ctl", timeout=30, sleep=0.8)
    wait_for(lambda: instance(d, "ctl")["inflight"] == 1, timeout=10, interval=0.02, what="the request to run")
    ahead = Call(d, "ctl", timeout=30)  # pipelined to the busy worker
    wait_for(lambda: instance(d, "ctl")["inflight"] == 2, timeout=10, interval=0.02, what="a request pipelined")
    queued = Call(d, "ctl", timeout=30)
    wait_for(lambda: d.model("ctl")["queue"] == 1, timeout=10, interval=0.02, what="a request to queue")
    d.proc.send_signal(signal.SIGTERM)
    for c in (running, ahead, queued):
        c.join(timeout=25)
    assert d.proc.wait(timeout=20) == 0
    d.stop()
    assert running.exc is None, f"the running request lost its connection: {running.exc!r}"
    assert running.resp.status_code == 200 or running.resp.status_code >= 500, running.resp.text
    assert ahead.exc is None and ahead.resp.status_code == 200, ahead.exc or ahead.resp.text
    assert queued.exc is None, f"the queued request lost its connection: {queued.exc!r}"
    # Queued work drains too (within --drain-timeout): it runs after the running one.
    assert queued.resp.status_code == 200, queued.resp.text


# ---------------------------------------------------------------- output capture


def test_worker_stdout_and_stderr_are_captured(corral):
    corral.add("ctl", "steerable")
    d = corral.start()
    r = infer(d, "ctl", say="out-marker-5521", say_err="err-marker-7713")
    pid = out(r, "PID")

    def logs_have(*needles):
        text = d.get("/v1/models/ctl/logs").text
        return text if all(n in text for n in needles) else None

    text = wait_for(lambda: logs_have("out-marker-5521", "err-marker-7713"), timeout=5, what="markers in the logs")
    assert f"steerable: instance 0 loading (pid {pid})" in text
    assert "steerable: stderr hello from instance 0" in text
    # Lines stay whole and in order per stream.
    lines = text.splitlines()
    out_line = next(line for line in lines if "out-marker-5521" in line)
    err_line = next(line for line in lines if "err-marker-7713" in line)
    assert out_line.endswith("out-marker-5521") and err_line.endswith("err-marker-7713")
    assert out_line != err_line
    # The daemon's own log carries them too.
    wait_for(lambda: "out-marker-5521" in d.log() and "err-marker-7713" in d.log(), timeout=5,
             what="markers in the daemon log")
    # The captured output outlives the process.
    assert unload(d, "ctl").status_code == 200
    text = d.get("/v1/models/ctl/logs").text
    assert "out-marker-5521" in text and "steerable: instance 0 unloading" in text


def test_last_words_of_a_dying_worker_are_captured(corral):
    corral.add("loop", "dies_in_load")
    d = corral.start()
    assert load(d, "loop", timeout=30).status_code == 503
    text = d.get("/v1/models/loop/logs").text
    assert "dies_in_load: instance 0 dying in load" in text
    # The failure reason quotes them as well.
    assert "dying in load" in d.model("loop")["reason"]


def test_c_worker_output_is_captured(corral):
    corral.add("c", "echo-c")
    d = corral.start()
    assert load(d, "c").status_code == 200
    text = wait_for(lambda: (lambda t: t if "echo-c: model 'c' instance 0 loaded" in t else None)(
        d.get("/v1/models/c/logs").text), timeout=5, what="the C worker's load line")
    assert "echo-c" in text


# ---------------------------------------------------------------- the worker process


def test_worker_process_has_its_own_group_cwd_and_environment(corral):
    path = corral.add("ctl", "steerable", manifest=ctl_manifest(env="{GREETING: hello-env}"))
    d = corral.start()
    pid = out(infer(d, "ctl"), "PID")
    assert os.readlink(f"/proc/{pid}/cwd") == str(path.resolve())
    fields = stat_fields(pid)
    guard, pgrp, session = int(fields[1]), int(fields[2]), int(fields[3])
    guard_fields = stat_fields(guard)
    assert int(guard_fields[1]) == d.proc.pid, "the worker's guard is the daemon's child"
    assert session == guard, "the guard leads the worker's own session"
    assert pgrp == pid, "the worker leads its own process group"
    assert int(stat_fields(d.proc.pid)[2]) != pgrp, "the worker is not in the daemon's process group"
    with open(f"/proc/{pid}/environ", "rb") as f:
        env = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
    assert env[b"CORRAL_MODEL"] == b"ctl"
    assert env[b"CORRAL_INSTANCE"] == b"0"
    assert env[b"CORRAL_MODEL_DIR"] == str(path.resolve()).encode()
    assert env[b"CORRAL_PROTOCOL"] == b"1"
    assert env[b"CORRAL_FD"] == b"3"
    assert env[b"CORRAL_HEALTH_FD"] == b"4"
    assert env[b"CORRAL_SHM_FDS"] == b"5,6"
    fds = {n: os.readlink(f"/proc/{pid}/fd/{n}") for n in (3, 4, 5, 6)}
    assert fds[3].startswith("socket:") and fds[4].startswith("socket:"), fds
    assert fds[5].startswith("/memfd:corral-input") and fds[6].startswith("/memfd:corral-output"), fds
    assert env[b"GREETING"] == b"hello-env"


def test_processes_a_worker_started_are_swept_with_it(corral):
    corral.add("ctl", "steerable", manifest=ctl_manifest(parameters={"spawn_child": True}))
    d = corral.start()
    r = infer(d, "ctl")
    pid, child = out(r, "PID"), out(r, "CHILD")
    assert alive(child) and int(stat_fields(child)[2]) == int(stat_fields(pid)[2]), "the child is in the worker's group"
    # A crash takes the worker's process group with it...
    assert infer(d, "ctl", exit=4).status_code == 502
    wait_for(lambda: not alive(child), timeout=5, what="the crashed worker's child to be killed")
    i = wait_restarted(d, "ctl", pid)
    child2 = out(infer(d, "ctl"), "CHILD")
    assert alive(child2) and child2 != child
    # ...and so does a graceful unload.
    assert unload(d, "ctl").status_code == 200
    assert not alive(i["pid"])
    wait_for(lambda: not alive(child2), timeout=5, what="the unloaded worker's child to be killed")


def test_c_worker_lifecycle(corral):
    corral.add("c", "echo-c")
    d = corral.start()
    assert load(d, "c", {"instances": 2}).status_code == 200
    pids = d.worker_pids("c")
    assert len(pids) == 2 and all(alive(p) for p in pids)
    r = d.infer("c", [tensor("INPUT0", "FP32", [2], [1.0, 2.0])])
    assert r.status_code == 200, r.text
    assert unload(d, "c").status_code == 200
    assert not any(alive(p) for p in pids)
    for p in pids:
        assert f"(pid {p}) exited with status 0" in d.log()


# ---------------------------------------------------------------- misbehaving workers (tests/models/raw_protocol)


def raw_manifest(mode: str, extra: str = "") -> str:
    return f"runtime: exec\nentrypoint: worker.py\nargs: [{mode}]\n{extra}"


def test_raw_protocol_worker_serves(corral):
    corral.add("raw", "raw_protocol", manifest=raw_manifest("ok"))
    d = corral.start()
    r = infer(d, "raw")
    assert r.status_code == 200, r.text
    assert r.json()["outputs"] == []


def test_worker_that_closes_its_socket_but_keeps_running_is_replaced(corral):
    corral.add("raw", "raw_protocol", manifest=raw_manifest("linger"))
    d = corral.start()
    assert load(d, "raw").status_code == 200
    pid = d.worker_pids("raw")[0]
    t0 = time.monotonic()
    r = infer(d, "raw", timeout=30)
    assert time.monotonic() - t0 < 20
    assert r.status_code == 502, r.text
    err = r.json()["error"]
    assert f"pid {pid}" in err and "raw" in err and "instance 0" in err, err
    wait_for(lambda: not alive(pid), timeout=10, what="the lingering worker to be killed")
    i = wait_restarted(d, "raw", pid)
    assert i["restarts"] == 1


def test_worker_that_breaks_the_protocol_is_replaced(corral):
    corral.add("raw", "raw_protocol", manifest=raw_manifest("garbage"))
    d = corral.start()
    assert load(d, "raw").status_code == 200
    pid = d.worker_pids("raw")[0]
    r = infer(d, "raw", timeout=30)
    assert r.status_code == 502, r.text
    err = r.json()["error"]
    assert f"pid {pid}" in err and "raw" in err, err
    assert "protocol" in err or "protocol" in d.log()
    wait_for(lambda: not alive(pid), timeout=10, what="the broken worker to be killed")
    i = wait_restarted(d, "raw", pid)
    assert i["restarts"] == 1


@pytest.mark.parametrize("mode, why", [
    ("shm-unasked", "in shared memory without being allowed to"),
    ("shm-short", "output sizes that run past the 1048576-byte region"),
])
def test_worker_that_misuses_shared_memory_gets_502(corral, mode, why):
    corral.add("raw", "raw_protocol", manifest=raw_manifest(mode))
    d = corral.start()
    assert load(d, "raw").status_code == 200
    r = infer(d, "raw", timeout=30)
    assert r.status_code == 502, r.text
    assert why in r.text or why in d.log(), (r.text, d.log()[-2000:])


def test_shared_memory_regions_can_grow_but_never_shrink(corral):
    # Shrinking a region under the other side's mapping would be SIGBUS there: the memfds are sealed.
    corral.add("raw", "raw_protocol", manifest=raw_manifest("shm-shrink"))
    d = corral.start()
    r = infer(d, "raw")
    assert r.status_code == 200, r.text
    logs = wait_for(lambda: (lambda t: t if t.count("refused") == 2 else None)(d.get("/v1/models/raw/logs").text),
                    timeout=5, what="both shrink attempts to be logged")
    assert "shrank" not in logs and "Operation not permitted" in logs, logs


def test_worker_that_ignores_shutdown_and_sigterm_is_killed(corral):
    corral.add("raw", "raw_protocol", manifest=raw_manifest("deaf"))
    d = corral.start()
    assert load(d, "raw").status_code == 200
    pid = d.worker_pids("raw")[0]
    t0 = time.monotonic()
    r = unload(d, "raw", timeout=30)
    assert r.status_code == 200, r.text
    assert time.monotonic() - t0 < 15
    assert not alive(pid)
    assert f"(pid {pid}): no exit after SHUTDOWN; sending SIGTERM" in d.log()
    assert "sending SIGKILL" in d.log()
    # The same on the daemon's own SIGTERM: it still exits 0, with the worker gone.
    assert load(d, "raw").status_code == 200
    pid = d.worker_pids("raw")[0]
    assert d.stop(signal.SIGTERM, timeout=20) == 0
    assert not alive(pid)


def test_drain_timeout_bounds_requests_in_flight_at_sigterm(corral):
    corral.add("ctl", "steerable")
    d = corral.start("--drain-timeout", "1s")
    assert load(d, "ctl").status_code == 200
    pid = d.worker_pids("ctl")[0]
    long = Call(d, "ctl", timeout=40, sleep=30)
    wait_for(lambda: instance(d, "ctl")["inflight"] == 1, timeout=10, interval=0.02, what="the request to run")
    t0 = time.monotonic()
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(timeout=20) == 0
    assert time.monotonic() - t0 < 15
    long.join(timeout=10)
    assert long.exc is None, f"the request in flight got no answer: {long.exc!r}"
    assert long.resp.status_code >= 500, long.resp.text
    assert "ctl" in long.resp.json()["error"]
    assert not alive(pid)
    d.stop()


def test_requests_queued_behind_a_crash_are_served_by_the_restarted_instance(corral):
    corral.add("ctl", "steerable")
    d = corral.start()
    pid = out(infer(d, "ctl"), "PID")
    crash = Call(d, "ctl", sleep=0.5, exit=3)
    wait_for(lambda: instance(d, "ctl")["inflight"] == 1, timeout=10, interval=0.02, what="the crashing request")
    queued = [Call(d, "ctl") for _ in range(3)]
    wait_for(lambda: d.model("ctl")["queue"] == 3, timeout=10, interval=0.02, what="three queued requests")
    crash.join(timeout=30)
    for c in queued:
        c.join(timeout=30)
    assert crash.resp.status_code == 502, crash.resp.text
    for c in queued:
        assert c.exc is None, c.exc
        new_pid = out(c.resp, "PID")
        assert new_pid != pid
    assert instance(d, "ctl")["restarts"] == 1


def test_instance_records_report_uptime_requests_and_memory(corral):
    corral.add("ctl", "steerable")
    d = corral.start()
    pid = out(infer(d, "ctl"), "PID")
    out(infer(d, "ctl"), "PID")
    a = instance(d, "ctl")
    time.sleep(0.3)
    b = instance(d, "ctl")
    assert a["pid"] == b["pid"] == pid
    assert a["state"] == "ready" and a["restarts"] == 0 and a["requests"] == 2
    assert b["uptime_ms"] >= a["uptime_ms"] + 250
    assert b["rss_bytes"] > 1 << 20  # a Python interpreter is well over 1 MiB resident
