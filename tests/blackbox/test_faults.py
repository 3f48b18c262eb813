"""Fault injection: corral under load and faults (issue 3).

Every test drives real processes and checks the same invariant: every request
gets exactly one terminal answer, nothing hangs (every request has a client
timeout and none runs into it unless the test means it to), and no process
outlives the daemon (the `corral` fixture's teardown). Each test prints a
tally line -- sent, ok, each status, lost (no answer: an exception or a client
timeout), dup (an answer seen twice, or an answer carrying another request's
id) -- visible with `pytest -s` and in a failure's captured output.

Timing checks compare durations measured in the same test (a 504 against the
request it waited behind) or use generous bounds: the machine may be shared.

Fixtures: tests/models/counts_spawns (sleep/exit per request, counts its starts in
the file `spawns`, can die in load; generate sleeps), tests/models/leaks_memory
(keeps 20 MiB per request; can hold memory at load and in a child process),
tests/models/steerable, examples/models/echo (also with batching, for the kill -9 storm).
"""
from __future__ import annotations

import collections
import itertools
import json
import os
import random
import re
import signal
import sys
import threading
import time

import pytest
import requests

from conftest import alive, ctl_manifest, infer, load, out, tensor, wait_for

MiB = 1 << 20
TERMINAL = {200, 400, 500, 502, 503, 504}


# ---------------------------------------------------------------- helpers


class Tally:
    """Counts answers per request id: statuses, lost requests, duplicates."""

    def __init__(self, name: str):
        self.name = name
        self.lock = threading.Lock()
        self.sent = 0
        self.statuses: collections.Counter = collections.Counter()
        self.answers: collections.Counter = collections.Counter()  # request id -> answers seen
        self.lost: list = []  # (id, why)
        self.mismatched: list = []  # (id, what came back)
        self.bodies: dict = {}  # status -> a few error messages
        self.no_retry_after: list = []  # 503s without a Retry-After header

    def send(self, rid: str):
        with self.lock:
            self.sent += 1
            self.answers.setdefault(rid, 0)

    def answer(self, rid: str, resp: requests.Response, echoed: str | None = None):
        with self.lock:
            self.statuses[resp.status_code] += 1
            self.answers[rid] += 1
            if echoed is not None and echoed != rid:
                self.mismatched.append((rid, echoed))
                self.answers[echoed] = self.answers.get(echoed, 0) + 1
            if resp.status_code != 200:
                self.bodies.setdefault(resp.status_code, []).append(resp.text[:300])
            if resp.status_code == 503 and not resp.headers.get("Retry-After", "").strip().isdigit():
                self.no_retry_after.append(rid)

    def lose(self, rid: str, why):
        with self.lock:
            self.lost.append((rid, repr(why)[:200]))

    def call(self, call: "Call"):
        """Records a finished (or abandoned) Call."""
        self.send(call.rid)
        if call.resp is not None:
            echoed = None
            if call.resp.status_code == 200:
                try:
                    echoed = call.resp.json().get("id")
                except ValueError:
                    echoed = None
            self.answer(call.rid, call.resp, echoed if echoed else None)
        else:
            self.lose(call.rid, call.exc if call.exc is not None else "no answer (thread still waiting)")

    @property
    def ok(self) -> int:
        return self.statuses[200]

    @property
    def dup(self) -> int:
        return sum(n - 1 for n in self.answers.values() if n > 1) + len(self.mismatched)

    def line(self) -> str:
        parts = [f"sent={self.sent}", f"ok={self.ok}"]
        parts += [f"{s}={self.statuses[s]}" for s in (502, 503, 504)]
        parts += [f"{s}={n}" for s, n in sorted(self.statuses.items()) if s not in (200, 502, 503, 504)]
        parts += [f"lost={len(self.lost)}", f"dup={self.dup}"]
        return f"[{self.name}] " + " ".join(parts)

    def report(self) -> str:
        text = self.line()
        print(text, flush=True)
        for status, bodies in sorted(self.bodies.items()):
            print(f"[{self.name}]   {status} e.g. {bodies[0]}", flush=True)
        if self.lost:
            print(f"[{self.name}]   lost e.g. {self.lost[:3]}", flush=True)
        return text

    def check(self, allowed=TERMINAL, lost_ok: int = 0):
        """The invariant: exactly one terminal answer per request."""
        text = self.report()
        assert len(self.lost) <= lost_ok, f"{text}: requests without an answer: {self.lost[:5]}"
        assert self.dup == 0, f"{text}: duplicated or crossed answers: {self.mismatched[:5]}"
        unanswered = [rid for rid, n in self.answers.items() if n == 0 and rid not in {r for r, _ in self.lost}]
        assert not unanswered, f"{text}: no answer recorded for {unanswered[:5]}"
        unexpected = {s: n for s, n in self.statuses.items() if s not in allowed}
        assert not unexpected, f"{text}: unexpected statuses {unexpected}: {self.bodies}"
        assert sum(self.statuses.values()) + len(self.lost) == self.sent, text
        assert not self.no_retry_after, f"{text}: 503 without Retry-After for {self.no_retry_after[:5]}"
        return text


_ids = itertools.count()


def new_id(prefix: str = "r") -> str:
    return f"{prefix}{next(_ids)}-{random.randrange(1 << 30):x}"


class Call(threading.Thread):
    """One request on its own thread (its own connection); .resp or .exc, .t0/.t1, once joined.

    kind: "infer" (the default; keyword arguments become request parameters)
    or "generate" (json_body is posted to /v1/models/{model}/generate). deadline_us becomes
    parameters.timeout; timeout is the client's own limit.
    """

    def __init__(self, d, model, timeout=30.0, rid=None, kind="infer", json_body=None, start=True,
                 deadline_us=None, **params):
        super().__init__(daemon=True)
        if deadline_us is not None:  # parameters.timeout; `timeout` is the client's own
            params["timeout"] = deadline_us
        self.d, self.model, self.timeout, self.params = d, model, timeout, params
        self.kind, self.json_body = kind, json_body
        self.rid = rid or new_id()
        self.resp = None
        self.exc = None
        self.t0 = self.t1 = None
        if start:
            self.start()

    def run(self):
        self.t0 = time.monotonic()
        try:
            with requests.Session() as s:
                if self.kind == "generate":
                    self.resp = s.post(self.d.url(f"/v1/models/{self.model}/generate"), json=self.json_body,
                                       timeout=self.timeout)
                else:
                    body = {"id": self.rid, "inputs": [tensor("X", "INT32", [1], [0])]}
                    if self.params:
                        body["parameters"] = self.params
                    self.resp = s.post(self.d.url(f"/v2/models/{self.model}/infer"), json=body, timeout=self.timeout)
        except Exception as e:  # noqa: BLE001 - recorded for the test to judge
            self.exc = e
        self.t1 = time.monotonic()

    @property
    def elapsed(self) -> float:
        return self.t1 - self.t0

    def finish(self, timeout=None) -> "Call":
        self.join(timeout=self.timeout + 10 if timeout is None else timeout)
        return self


def error(resp: requests.Response) -> str:
    return resp.json()["error"]


def instance(d, model, iid=0):
    return next(i for i in d.model(model)["instances"] if i["id"] == iid)


def ready(m: dict) -> list:
    return [i for i in m["instances"] if i["state"] == "ready"]


def wait_inflight(d, model, n=1, timeout=10):
    return wait_for(lambda: sum(i["inflight"] for i in d.model(model)["instances"]) >= n, timeout=timeout,
                    interval=0.01, what=f"{n} request(s) of {model} in flight")


def wait_queued(d, model, n, timeout=10):
    return wait_for(lambda: d.model(model)["queue"] >= n, timeout=timeout, interval=0.01,
                    what=f"{n} request(s) queued for {model}")


def wait_held(d, model, n, timeout=10):
    """Waits until n requests of model are in flight or queued (one may be pipelined to a busy worker)."""
    return wait_for(lambda: (lambda m: m["queue"] + sum(i["inflight"] for i in m["instances"]))(d.model(model)) >= n,
                    timeout=timeout, interval=0.01, what=f"{n} request(s) of {model} in flight or queued")


def wait_replaced(d, model, old_pid, iid=0, timeout=20):
    """Waits until instance iid is ready under a pid other than old_pid; returns its record."""
    def check():
        for i in d.model(model)["instances"]:
            if i["id"] == iid and i["state"] == "ready" and i["pid"] not in (0, old_pid):
                return i
        return None
    return wait_for(check, timeout=timeout, interval=0.02, what=f"{model} instance {iid} to be replaced")


def spawns(path) -> int:
    """Processes an counts_spawns model directory has started (lines of its `spawns` file)."""
    f = path / "spawns"
    return len(f.read_text().split()) if f.exists() else 0


def group_rss(pgrp: int) -> int:
    """Resident bytes of every live process in process group pgrp, from /proc."""
    total = 0
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[2]) != pgrp or fields[0] == "Z":
                continue
            with open(f"/proc/{entry}/statm") as f:
                total += int(f.read().split()[1]) * page
        except (OSError, IndexError, ValueError):
            continue
    return total


def pgrp_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[2])


def describe(pid: int) -> str:
    """state, ppid, pgrp and command line of pid, for failure messages."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        return f"state {fields[0]} ppid {fields[1]} pgrp {fields[2]}: {cmd[:120]}"
    except OSError as e:
        return f"gone ({e.strerror})"


def ft_manifest(parameters: dict | None = None, **keys) -> str:
    """A manifest for counts_spawns or leaks_memory (both runtime python, worker.py); nested maps as YAML flow text."""
    return ctl_manifest(parameters, **keys)


# ---------------------------------------------------------------- crashes under load


def kill9_storm(d, model: str, name: str, total: int, concurrency: int, make_request,
                min_ok: float = 0.95) -> tuple[Tally, list]:
    """`total` requests of `model` from `concurrency` client threads while a killer SIGKILLs a random ready
    worker every 100-200 ms; then the storm's invariants: none lost, none answered twice, every 200 carries
    exactly what its request sent, >= min_ok of them succeed, the rest are 502 naming the killed worker, and
    the model ends the storm ready with every instance back. Returns the tally and the pids killed.

    make_request(n) -> (body, check): the JSON body of request n (its id included) and a function of a
    200's JSON answer that returns None when the answer is that request's own, else what came back."""
    tally = Tally(name)
    counter = itertools.count()
    stop = threading.Event()
    kills = []
    t_end = time.monotonic() + 100  # the whole test stays well under 120 s

    def client():
        with requests.Session() as s:
            while time.monotonic() < t_end:
                n = next(counter)
                if n >= total:
                    return
                body, check = make_request(n)
                rid = body["id"]
                tally.send(rid)
                try:
                    r = s.post(d.url(f"/v2/models/{model}/infer"), timeout=60, json=body)
                except Exception as e:  # noqa: BLE001
                    tally.lose(rid, e)
                    continue
                echoed = None
                if r.status_code == 200:
                    answer = r.json()
                    echoed = answer.get("id")
                    wrong = check(answer)
                    if wrong is not None:
                        tally.mismatched.append((rid, wrong))
                tally.answer(rid, r, echoed)

    def killer():
        with requests.Session() as s:
            while not stop.is_set():
                time.sleep(random.uniform(0.1, 0.2))
                try:
                    m = s.get(d.url(f"/v1/models/{model}"), timeout=10).json()
                except Exception:  # noqa: BLE001 - the daemon is busy; try again
                    continue
                pids = [i["pid"] for i in m["instances"] if i["state"] == "ready" and i["pid"]]
                if not pids:
                    continue
                pid = random.choice(pids)
                try:
                    os.kill(pid, signal.SIGKILL)
                    kills.append(pid)
                except ProcessLookupError:
                    pass

    t0 = time.monotonic()
    k = threading.Thread(target=killer, daemon=True)
    k.start()
    clients = [threading.Thread(target=client, daemon=True) for _ in range(concurrency)]
    for c in clients:
        c.start()
    for c in clients:
        c.join(timeout=max(1, t_end + 15 - time.monotonic()))
    stop.set()
    k.join(timeout=15)
    elapsed = time.monotonic() - t0
    hung = [c for c in clients if c.is_alive()]
    print(f"[{name}] {elapsed:.1f}s, {len(kills)} workers killed", flush=True)
    assert not hung, f"{len(hung)} client threads still waiting: {tally.line()}"
    assert tally.sent == total, f"only {tally.sent} of {total} sent in the time allowed: {tally.line()}"
    text = tally.check(allowed={200, 502, 503})
    assert tally.ok >= min_ok * total, text
    assert len(kills) >= 5, f"the killer only killed {len(kills)} workers; the test proved little"
    for body in tally.bodies.get(502, []):
        assert model in body and "instance" in body and "pid" in body and "signal 9" in body, body
    # The model survives the storm: not failed, every instance back.
    want = len(d.model(model)["instances"])
    m = wait_for(lambda: (lambda m: m if len(ready(m)) == want else None)(d.model(model)), timeout=20,
                 what=f"all {want} {model} instances ready again")
    assert m["state"] == "ready"
    assert not any(alive(p) for p in kills)
    return tally, kills


def metric(d, name: str, model: str) -> float:
    """The value of a /metrics series of name for model."""
    for line in d.get("/metrics").text.splitlines():
        if line.startswith(name + "{") and f'model="{model}"' in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name} for {model} in /metrics")


STORM_RESTART = "{max_restarts: 1000, window: 60s, backoff_min: 10ms, backoff_max: 100ms}"


def test_kill9_of_random_workers_during_2000_requests(corral):
    """2,000 requests at concurrency 32 on two echo instances while a killer SIGKILLs a random worker
    every 100-200 ms: no request lost or answered twice, every 200 carries its own id and data,
    >= 95% succeed, the rest are 502 (held by a killed worker) or 503. With 32 clients on two instances
    each worker always has a request pipelined behind the one it runs: a kill answers at most the one
    it had started 502 and sends the pipelined one elsewhere."""
    corral.add("echo", "echo", manifest=ft_manifest(instances=2, restart=STORM_RESTART))
    d = corral.start()
    assert load(d, "echo").status_code == 200

    def make_request(n):
        payload = f"payload-{n}-{random.randrange(1 << 40):x}"

        def check(answer):
            data = answer["outputs"][0]["data"]
            return None if data == [payload] else f"data {data!r}"
        return {"id": f"storm-{n}", "inputs": [tensor("INPUT0", "BYTES", [1], [payload])]}, check

    tally, kills = kill9_storm(d, "echo", "kill9-storm", 2000, 32, make_request)
    requeued = metric(d, "corral_requests_requeued_total", "echo")
    print(f"[kill9-storm] {requeued:.0f} pipelined requests went back to the queue", flush=True)
    assert tally.statuses[502] <= len(kills), f"{tally.line()}: more 502s than the {len(kills)} killed workers started"
    assert requeued >= 1, "no kill caught a pipelined request: the storm did not exercise pipelining"


def test_kill9_of_random_workers_during_1500_batched_requests(corral):
    """The kill -9 storm with dynamic batching: 1,500 requests of 1-3 rows each (a BYTES and an INT32 input,
    every row its own values) at concurrency 32 on two batching echo instances (max_batch_size 8,
    max_queue_delay 5 ms): batches form (fewer executions than requests), no request is lost or answered
    twice, and every 200 carries exactly its own rows of both outputs, in order -- rows handed to another
    request of the batch would show."""
    corral.add("echo", "echo", manifest=ft_manifest(
        instances=2, restart=STORM_RESTART, batching="{max_batch_size: 8, max_queue_delay: 5ms}"))
    d = corral.start()
    assert load(d, "echo").status_code == 200

    def make_request(n):
        rows = random.randint(1, 3)
        words = [f"p{n}.{k}-{random.randrange(1 << 40):x}" for k in range(rows)]
        ints = [v for k in range(rows) for v in (10 * n + k, -(10 * n + k))]

        def check(answer):
            got = {o["name"]: (o["shape"], o["data"]) for o in answer["outputs"]}
            want = {"OUTPUT0": ([rows], words), "OUTPUT1": ([rows, 2], ints)}
            return None if got == want else f"outputs {got!r}, sent {want!r}"
        body = {"id": f"bstorm-{n}", "inputs": [tensor("INPUT0", "BYTES", [rows], words),
                                                 tensor("INPUT1", "INT32", [rows, 2], ints)]}
        return body, check

    total = 1500
    # A killed worker held one batch (concurrency 1) of at most 8 requests: at most 8 502s per kill, and a
    # slower machine (a sanitizer build) sees more kills per request, so the floor is lower than the plain storm's.
    tally, kills = kill9_storm(d, "echo", "kill9-batch-storm", total, 32, make_request, min_ok=0.9)
    assert tally.statuses[502] <= 8 * len(kills), f"{tally.line()}: more 502s than {len(kills)} killed batches hold"
    executions = metric(d, "nv_inference_exec_count", "echo")
    rows = metric(d, "corral_batch_size_sum", "echo")
    print(f"[kill9-batch-storm] {executions:.0f} executions for {tally.sent} requests "
          f"({rows / executions:.2f} rows each)", flush=True)
    assert executions < 0.5 * total, f"{executions:.0f} executions for {total} requests: they hardly batched"


def test_every_request_a_dead_worker_held_gets_one_502(corral):
    """An instance with concurrency 4 holding four requests is killed: each of the four gets exactly one
    502 naming model, instance, pid and signal; the request pipelined behind them (never started) and the
    one queued in the daemon are served by the replacement."""
    corral.add("ft", "counts_spawns", manifest=ft_manifest(concurrency=4))
    d = corral.start()
    pid = out(infer(d, "ft"), "PID")
    held = [Call(d, "ft", sleep=10) for _ in range(4)]
    wait_inflight(d, "ft", 4)
    queued = [Call(d, "ft")]
    wait_inflight(d, "ft", 5)  # pipelined: the worker holds it, and has not started it
    queued.append(Call(d, "ft"))
    wait_queued(d, "ft", 1)
    os.kill(pid, signal.SIGKILL)
    tally = Tally("dead-worker-held-4")
    for c in held + queued:
        tally.call(c.finish())
    tally.check(allowed={200, 502})
    for c in held:
        assert c.resp.status_code == 502, c.resp.text
        err = error(c.resp)
        assert "ft" in err and "instance 0" in err and f"pid {pid}" in err and "signal 9" in err, err
        assert c.elapsed < 8, f"the 502 came {c.elapsed:.2f}s after the request, as if it waited for the sleep"
    new = instance(d, "ft")
    for c in queued:
        assert c.resp.status_code == 200, c.resp.text
        assert out(c.resp, "PID") == new["pid"] != pid
    assert new["restarts"] == 1
    assert metric(d, "corral_requests_requeued_total", "ft") == 1


def test_mixed_faults_every_request_gets_exactly_one_answer(corral):
    """Chaos on two counts_spawns instances (concurrency 2, pings every 200 ms): 600 requests at concurrency 16,
    each at random a plain one, one that sleeps past its own deadline, one that makes its worker exit,
    or a slow one; meanwhile a killer SIGKILLs or SIGSTOPs a random worker. Whatever happens, every request
    gets exactly one answer, of the kind its fate allows; the model ends ready."""
    corral.add("ft", "counts_spawns", manifest=ft_manifest(
        instances=2, concurrency=2, max_queue=1000, health="{interval: 200ms, timeout: 300ms}",
        restart="{max_restarts: 1000, window: 60s, backoff_min: 10ms, backoff_max: 100ms}"))
    d = corral.start("--stop-grace", "300ms")
    assert load(d, "ft").status_code == 200
    total, concurrency = 600, 16
    tally = Tally("mixed-faults")
    counter = itertools.count()
    stop = threading.Event()
    faults = collections.Counter()
    signalled = []
    wrong = []
    kinds = collections.Counter()
    t_end = time.monotonic() + 90

    def client():
        with requests.Session() as s:
            while time.monotonic() < t_end:
                n = next(counter)
                if n >= total:
                    return
                rid = f"mix-{n}"
                kind = random.choice(["plain"] * 6 + ["deadline", "exit", "slow"])
                kinds[kind] += 1
                params = {"plain": {}, "slow": {"sleep": 0.2},
                          "deadline": {"sleep": 3, "timeout": 200_000}, "exit": {"exit": 5}}[kind]
                tally.send(rid)
                try:
                    r = s.post(d.url("/v2/models/ft/infer"), timeout=60,
                               json={"id": rid, "inputs": [tensor("X", "INT32", [1], [n])], "parameters": params})
                except Exception as e:  # noqa: BLE001
                    tally.lose(rid, e)
                    continue
                echoed = r.json()["id"] if r.status_code == 200 else None
                tally.answer(rid, r, echoed)
                allowed = {"plain": {200, 502}, "slow": {200, 502},
                           "deadline": {502, 504}, "exit": {502, 504}}[kind]
                if r.status_code not in allowed:
                    wrong.append((rid, kind, r.status_code, r.text[:200]))

    def killer():
        with requests.Session() as s:
            while not stop.is_set():
                time.sleep(random.uniform(0.2, 0.4))
                try:
                    m = s.get(d.url("/v1/models/ft"), timeout=10).json()
                except Exception:  # noqa: BLE001
                    continue
                pids = [i["pid"] for i in m["instances"] if i["state"] == "ready" and i["pid"]]
                if not pids:
                    continue
                pid = random.choice(pids)
                sig = random.choice([signal.SIGKILL, signal.SIGSTOP])
                try:
                    os.kill(pid, sig)
                    faults[signal.Signals(sig).name] += 1
                    signalled.append(pid)
                except ProcessLookupError:
                    pass

    k = threading.Thread(target=killer, daemon=True)
    k.start()
    clients = [threading.Thread(target=client, daemon=True) for _ in range(concurrency)]
    t0 = time.monotonic()
    try:
        for c in clients:
            c.start()
        for c in clients:
            c.join(timeout=max(1, t_end + 15 - time.monotonic()))
    finally:
        stop.set()
        k.join(timeout=15)
        # Frozen workers the daemon has not killed yet must not outlive the test,
        # and the last one killed must be gone before the model counts as ready.
        wait_for(lambda: not any(alive(p) for p in signalled), timeout=10, what="every signalled worker to be gone")
    print(f"[mixed-faults] {time.monotonic() - t0:.1f}s; requests {dict(kinds)}; faults {dict(faults)}", flush=True)
    assert not any(c.is_alive() for c in clients), f"client threads still waiting: {tally.line()}"
    assert tally.sent == total, tally.line()
    tally.check(allowed={200, 502, 504})
    assert not wrong, f"answers their request's fate does not allow: {wrong[:5]}"
    for body in tally.bodies.get(502, []):
        assert "'ft'" in body and "instance" in body and "pid" in body, body
    assert sum(faults.values()) >= 5, faults
    m = wait_for(lambda: (lambda m: m if len([i for i in ready(m) if i["pid"] not in signalled]) == 2 else None)(
                 d.model("ft")), timeout=20, what="both instances ready after the chaos, in new processes")
    assert m["state"] == "ready"
    assert infer(d, "ft").status_code == 200


# ---------------------------------------------------------------- hung workers


def test_sigstopped_worker_is_detected_by_ping_and_replaced(corral):
    """A worker frozen with SIGSTOP misses its ping: it is killed (SIGTERM, SIGKILL after the grace) and
    replaced within about interval + timeout + grace; the request it held gets 502 (or 504)."""
    corral.add("ft", "counts_spawns", manifest=ft_manifest(health="{interval: 200ms, timeout: 300ms}"))
    d = corral.start("--stop-grace", "500ms")
    pid = out(infer(d, "ft"), "PID")
    held = Call(d, "ft", sleep=1)
    wait_inflight(d, "ft", 1)
    t0 = time.monotonic()
    os.kill(pid, signal.SIGSTOP)
    try:
        new = wait_replaced(d, "ft", pid, timeout=15)
        took = time.monotonic() - t0
    finally:
        if alive(pid):  # a failing daemon must not leave a frozen process behind
            os.kill(pid, signal.SIGCONT)
    tally = Tally("sigstop")
    tally.call(held.finish())
    tally.check(allowed={502, 504})
    print(f"[sigstop] replaced {took:.2f}s after SIGSTOP (interval 0.2 + timeout 0.3 + grace 0.5)", flush=True)
    assert took < 5, f"replaced only {took:.2f}s after SIGSTOP"
    err = error(held.resp)
    assert "ft" in err and f"pid {pid}" in err, err
    wait_for(lambda: not alive(pid), timeout=3, what="the frozen worker to be killed")
    assert new["restarts"] == 1
    log = d.log()
    assert re.search(rf"ft instance 0 \(pid {pid}\).*ping", log, re.I) or \
        re.search(rf"pid {pid}.*(ping|pong)", log, re.I), "the daemon log does not mention the missed ping"
    r = infer(d, "ft")
    assert out(r, "PID") == new["pid"]


def test_hung_worker_counts_toward_the_restart_budget(corral):
    """With max_restarts 1, a second hang within the window fails the model; nothing is left running."""
    corral.add("ft", "counts_spawns", manifest=ft_manifest(
        health="{interval: 200ms, timeout: 300ms}",
        restart="{max_restarts: 1, window: 60s, backoff_min: 10ms, backoff_max: 50ms}"))
    d = corral.start("--stop-grace", "500ms")
    frozen = []
    try:
        pid = out(infer(d, "ft"), "PID")
        os.kill(pid, signal.SIGSTOP)
        frozen.append(pid)
        new = wait_replaced(d, "ft", pid, timeout=15)
        os.kill(new["pid"], signal.SIGSTOP)
        frozen.append(new["pid"])
        m = d.wait_state("ft", "failed", timeout=15)
    finally:
        for p in frozen:
            if alive(p):
                os.kill(p, signal.SIGCONT)
    assert m["reason"], m
    wait_for(lambda: not any(alive(p) for p in frozen), timeout=5, what="the frozen workers to be killed")
    tally = Tally("hang-budget")
    c = Call(d, "ft", timeout=10).finish()
    tally.call(c)
    tally.check(allowed={503})
    assert "ft" in error(c.resp)
    assert spawns(corral.repo / "ft") == 2


# ---------------------------------------------------------------- deadlines


def test_deadline_passing_while_queued_is_answered_at_that_moment(corral):
    """A request with a 300 ms deadline queued behind a 3 s request gets 504 when its deadline passes,
    not when it would have been dequeued; the worker never sees it."""
    corral.add("ft", "counts_spawns")
    d = corral.start()
    assert out(infer(d, "ft"), "COUNT") == 1
    blocker = Call(d, "ft", sleep=3)
    wait_inflight(d, "ft", 1)
    queued = Call(d, "ft", deadline_us=300_000)
    queued.finish()
    depth_after = d.model("ft")["queue"]
    blocker.finish()
    tally = Tally("deadline-queued")
    tally.call(blocker)
    tally.call(queued)
    tally.check(allowed={200, 504})
    assert queued.resp.status_code == 504, queued.resp.text
    err = error(queued.resp)
    assert "ft" in err and "deadline" in err and "queued" in err, err
    print(f"[deadline-queued] 504 after {queued.elapsed:.2f}s; the blocking request took {blocker.elapsed:.2f}s",
          flush=True)
    assert queued.elapsed < blocker.elapsed / 2, \
        f"the 504 came after {queued.elapsed:.2f}s, the blocking request took {blocker.elapsed:.2f}s"
    assert queued.t1 < blocker.t1 - 1, "the 504 came only when the instance freed up"
    assert depth_after == 0, "the expired request is still counted in the queue"
    assert out(blocker.resp, "COUNT") == 2
    assert out(infer(d, "ft"), "COUNT") == 3, "the worker saw the expired request"


def test_many_queued_deadlines_each_expire_at_their_own_time(corral):
    """Twelve requests with deadlines from 0.2 to 2.4 s queued behind a 4 s request: each gets its 504 at its
    own deadline -- never before it, and not long after -- whatever the order they were queued in."""
    corral.add("ft", "counts_spawns")
    d = corral.start()
    assert out(infer(d, "ft"), "COUNT") == 1
    blocker = Call(d, "ft", sleep=4)
    wait_inflight(d, "ft", 1)
    deadlines = [0.2 * (k + 1) for k in range(12)]
    random.shuffle(deadlines)
    calls = [Call(d, "ft", deadline_us=int(dl * 1e6)) for dl in deadlines]
    tally = Tally("many-deadlines")
    for c in calls:
        tally.call(c.finish())
    blocker.finish()
    tally.call(blocker)
    tally.check(allowed={200, 504})
    late = []
    for dl, c in zip(deadlines, calls):
        assert c.resp.status_code == 504, c.resp.text
        assert "queued" in error(c.resp), c.resp.text
        assert c.elapsed >= dl - 0.02, f"a {dl:.1f}s deadline answered after {c.elapsed:.3f}s: early"
        late.append(c.elapsed - dl)
    print(f"[many-deadlines] 504s came {min(late) * 1000:.0f}..{max(late) * 1000:.0f} ms after their deadlines",
          flush=True)
    assert max(late) < 1.0, late
    assert blocker.resp.status_code == 200 and max(c.t1 for c in calls) < blocker.t1
    assert out(infer(d, "ft"), "COUNT") == 3, "a worker saw an expired request"


def test_deadline_passing_while_the_model_loads_is_answered_at_that_moment(corral):
    """A lazy model takes 3 s to load: a request with a 500 ms deadline waiting for it gets 504 at its
    deadline; one without a short deadline waits and is served; the load is not abandoned."""
    corral.add("slow", "steerable", manifest=ctl_manifest(parameters={"load_delay": 3}))
    d = corral.start()
    patient = Call(d, "slow", timeout=30)
    d.wait_state("slow", "loading", timeout=10)
    hasty = Call(d, "slow", deadline_us=500_000).finish()
    patient.finish()
    tally = Tally("deadline-during-load")
    tally.call(hasty)
    tally.call(patient)
    tally.check(allowed={200, 504})
    assert hasty.resp.status_code == 504, hasty.resp.text
    err = error(hasty.resp)
    assert "slow" in err and "deadline" in err, err
    assert 0.45 <= hasty.elapsed < patient.elapsed / 2, (hasty.elapsed, patient.elapsed)
    assert patient.resp.status_code == 200, patient.resp.text
    assert d.model("slow")["state"] == "ready"


def test_deadline_passing_while_running_replaces_the_instance_without_failing_the_model(corral):
    """A request past its deadline while running gets 504 naming instance and pid; the instance is killed and
    replaced (restarts +1). Timeouts are not crashes: three of them with max_restarts 1 leave the model ready."""
    corral.add("ft", "counts_spawns", manifest=ft_manifest(
        restart="{max_restarts: 1, window: 60s, backoff_min: 10ms, backoff_max: 50ms}"))
    d = corral.start()
    pid = out(infer(d, "ft"), "PID")
    tally = Tally("deadline-running")
    old = []
    for k in range(1, 4):
        c = Call(d, "ft", sleep=8, deadline_us=500_000).finish()
        tally.call(c)
        assert c.resp is not None and c.resp.status_code == 504, (c.exc, c.resp is not None and c.resp.text)
        err = error(c.resp)
        assert "ft" in err and "deadline" in err and "running" in err, err
        assert "instance 0" in err and f"pid {pid}" in err, err
        assert c.elapsed < 4, f"the 504 came {c.elapsed:.2f}s after the request (deadline 0.5 s, sleep 8 s)"
        assert c.elapsed >= 0.48, f"the 504 came {c.elapsed:.3f}s after the request, before its 0.5 s deadline"
        new = wait_replaced(d, "ft", pid)
        assert new["restarts"] == k, new
        old.append(pid)
        pid = new["pid"]
    tally.check(allowed={504})
    m = d.model("ft")
    assert m["state"] == "ready", m
    wait_for(lambda: not any(alive(p) for p in old), timeout=5, what="the timed-out workers to be gone")
    r = infer(d, "ft")
    assert out(r, "PID") == pid


def test_manifest_timeout_applies_when_the_request_names_none(corral):
    """parameters.timeout 0 or absent means the manifest's timeout, for infer and for generate; a request's
    own timeout overrides it."""
    corral.add("ft", "counts_spawns", manifest=ft_manifest(timeout="700ms"))
    d = corral.start()
    pid = out(infer(d, "ft"), "PID")
    tally = Tally("manifest-timeout")
    cases = [("absent", Call(d, "ft", sleep=8, start=False)),
             ("zero", Call(d, "ft", sleep=8, start=False, deadline_us=0)),
             ("generate", Call(d, "ft", kind="generate", json_body={"sleep": 8}, start=False))]
    for what, c in cases:
        c.start()
        c.finish()
        tally.call(c)
        assert c.resp is not None and c.resp.status_code == 504, (what, c.exc, c.resp is not None and c.resp.text)
        err = error(c.resp)
        assert "ft" in err and "deadline" in err, (what, err)
        assert c.elapsed < 4, f"{what}: the 504 came after {c.elapsed:.2f}s (manifest timeout 0.7 s, sleep 8 s)"
        pid = wait_replaced(d, "ft", pid)["pid"]
    # A request's own, longer timeout wins over the manifest's.
    c = Call(d, "ft", sleep=1.2, deadline_us=10_000_000).finish()
    tally.call(c)
    tally.check(allowed={200, 504})
    assert out(c.resp, "PID") == pid


# ---------------------------------------------------------------- backpressure and priority


def test_full_queue_is_503_with_retry_after_at_once_and_never_reaches_a_worker(corral):
    corral.add("ft", "counts_spawns", manifest=ft_manifest(max_queue=2, pipeline=0))  # waiting means queued
    d = corral.start()
    assert out(infer(d, "ft"), "COUNT") == 1
    busy = Call(d, "ft", sleep=2.5)
    wait_inflight(d, "ft", 1)
    queued = []
    for _ in range(2):
        queued.append(Call(d, "ft"))
        wait_queued(d, "ft", len(queued))
    rejected = []
    t0 = time.monotonic()
    for _ in range(5):
        rejected.append(Call(d, "ft", timeout=10).finish())
    rejecting = time.monotonic() - t0
    busy_done_then = busy.t1 is not None
    busy.finish()
    for c in queued:
        c.finish()
    tally = Tally("queue-full")
    for c in [busy, *queued, *rejected]:
        tally.call(c)
    tally.check(allowed={200, 503})
    for c in rejected:
        assert c.resp.status_code == 503, c.resp.text
        assert "ft" in error(c.resp), c.resp.text
        assert c.resp.headers.get("Retry-After", "").strip().isdigit(), dict(c.resp.headers)
    print(f"[queue-full] 5 rejections in {rejecting:.3f}s; the busy request took {busy.elapsed:.2f}s", flush=True)
    assert not busy_done_then, "the rejections waited for the busy request"
    assert rejecting < busy.elapsed / 3, f"5 rejections took {rejecting:.2f}s"
    assert out(busy.resp, "COUNT") == 2
    assert [out(c.resp, "COUNT") for c in queued] == [3, 4]
    assert out(infer(d, "ft"), "COUNT") == 5, "a rejected request reached the worker"


def test_priority_levels_with_fifo_within_a_level(corral):
    """One busy instance; requests queued with priorities 3,3,1,absent,2,1,0 (absent and 0 mean the
    default, 2) are served 1,1,2,2,2,3,3 -- each level in arrival order. (pipeline 0: test_pipeline.py
    has the one request per instance pipelining sends ahead.)"""
    corral.add("ft", "counts_spawns", manifest=ft_manifest(pipeline=0))
    d = corral.start()
    assert out(infer(d, "ft"), "COUNT") == 1
    busy = Call(d, "ft", sleep=3)
    wait_inflight(d, "ft", 1)
    prios = [3, 3, 1, None, 2, 1, 0]
    calls = []
    for n, p in enumerate(prios):
        params = {} if p is None else {"priority": p}
        calls.append(Call(d, "ft", rid=f"q{n}-p{p}", **params))
        wait_queued(d, "ft", n + 1)
    assert busy.t1 is None, "the busy request finished before everything was queued; the test proved nothing"
    tally = Tally("priority")
    tally.call(busy.finish())
    for c in calls:
        tally.call(c.finish())
    tally.check(allowed={200})
    served = [c.rid for c in sorted(calls, key=lambda c: out(c.resp, "COUNT"))]
    print(f"[priority] served in order {served}", flush=True)
    expected = ["q2-p1", "q5-p1", "q3-pNone", "q4-p2", "q6-p0", "q0-p3", "q1-p3"]
    assert served == expected
    assert sorted(out(c.resp, "COUNT") for c in calls) == list(range(3, 3 + len(calls)))


# ---------------------------------------------------------------- crash loops


def test_crash_loop_reaches_failed_within_its_budget_with_bounded_spawns(corral):
    path = corral.add("loop", "counts_spawns", manifest=ft_manifest(
        parameters={"die_in_load": True},
        restart="{max_restarts: 2, window: 60s, backoff_min: 50ms, backoff_max: 200ms}"))
    d = corral.start()
    calls = [Call(d, "loop", timeout=30) for _ in range(4)]
    tally = Tally("crash-loop")
    for c in calls:
        tally.call(c.finish())
    tally.check(allowed={503})
    m = d.wait_state("loop", "failed", timeout=10)
    assert "loop" in error(calls[0].resp)
    assert m["reason"], m
    ends = [c.t1 for c in calls]
    assert max(ends) - min(ends) < 1.5, "the queued requests were not answered together when the model failed"
    assert max(c.elapsed for c in calls) < 20
    n = spawns(path)
    started = d.log().count("model loop instance 0 started")
    print(f"[crash-loop] {n} processes started ({started} in the daemon log); max_restarts 2", flush=True)
    assert 1 <= n <= 2 + 2 and started <= 2 + 2, (n, started)
    # Exponential backoff between backoff_min and backoff_max.
    delays = [int(x) for x in re.findall(r"model loop instance 0: restarting in (\d+) ms", d.log())]
    assert delays and all(50 <= x <= 200 for x in delays) and delays == sorted(delays), delays
    # Nothing more is spawned: not by time, not by new requests.
    time.sleep(1.5)
    r = Call(d, "loop", timeout=10).finish()
    tally2 = Tally("crash-loop-after")
    tally2.call(r)
    tally2.check(allowed={503})
    assert r.elapsed < 2, f"a request to a failed model took {r.elapsed:.2f}s"
    time.sleep(0.5)
    assert spawns(path) == n, "a failed model started more processes"
    assert d.model("loop")["state"] == "failed"
    # An explicit load tries again, within the same bound.
    assert load(d, "loop", timeout=30).status_code == 503
    assert n < spawns(path) <= 2 * n


# ---------------------------------------------------------------- memory


def test_rss_is_the_sum_over_the_instances_process_group(corral):
    corral.add("leak", "leaks_memory", manifest=ft_manifest(parameters={"initial_mb": 32, "child_mb": 64, "leak_mb": 0}))
    d = corral.start()
    r = infer(d, "leak")
    pid, child = out(r, "PID"), out(r, "CHILD")
    assert child and pgrp_of(child) == pgrp_of(pid)

    def rss():
        return instance(d, "leak")["rss_bytes"]

    # The child's 64 MiB count too: the worker alone holds only ~32 MiB plus the interpreter.
    wait_for(lambda: rss() >= 96 * MiB, timeout=10, what="rss_bytes to include the child's memory")
    measured, reported = group_rss(pgrp_of(pid)), rss()
    print(f"[rss] reported {reported / MiB:.1f} MiB, /proc sum over the group {measured / MiB:.1f} MiB", flush=True)
    assert abs(reported - measured) < 0.2 * measured, (reported, measured)
    # Refreshed about every second.
    infer(d, "leak", leak_mb=40)
    wait_for(lambda: rss() >= reported + 35 * MiB, timeout=6, what="rss_bytes to follow a 40 MiB allocation")


def test_leaking_model_is_replaced_at_its_memory_limit_without_dropping_a_request(corral):
    corral.add("leak", "leaks_memory", manifest=ft_manifest(limits="{memory: 150MiB}", parameters={"leak_mb": 20}))
    d = corral.start()
    tally = Tally("memory-limit")
    pids = []
    restarts_seen = 0
    for n in range(30):
        c = Call(d, "leak", timeout=30).finish()
        tally.call(c)
        if c.resp is not None and c.resp.status_code == 200:
            pids.append(out(c.resp, "PID"))
        time.sleep(0.15)
    restarts_seen = max(i["restarts"] for i in d.model("leak")["instances"])
    tally.check(allowed={200})
    assert tally.ok == 30
    distinct = list(dict.fromkeys(pids))
    print(f"[memory-limit] {len(distinct)} processes served 30 requests; restarts {restarts_seen}", flush=True)
    assert len(distinct) >= 2, "the leaking instance was never replaced"
    assert restarts_seen >= 1
    log = d.log()
    assert any("leak" in line and "memory" in line.lower() for line in log.splitlines()), \
        "no daemon log line names the memory limit"
    # Each replaced process is gone.
    wait_for(lambda: not any(alive(p) for p in distinct[:-1]), timeout=10, what="the replaced workers to exit")


def test_shared_memory_of_large_tensors_does_not_count_toward_the_memory_limit(corral):
    """48 MiB tensors in and out of a Python echo under limits.memory 100MiB: the worker touches
    96 MiB of shared-memory regions (the daemon's transport buffers), which its memory figures
    leave out, so it is not replaced."""
    corral.add("echo", "echo", manifest=f"runtime: python\nentrypoint: worker.py\npython: {sys.executable}\n"
                                        f"limits: {{memory: 100MiB}}\n")
    d = corral.start()
    assert load(d, "echo").status_code == 200
    (pid,) = d.worker_pids("echo")
    size = 48 << 20
    raw = os.urandom(size)
    head = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "UINT8", "shape": [size],
                                   "parameters": {"binary_data_size": size}}],
                       "parameters": {"binary_data_output": True}}).encode()
    for _ in range(3):
        r = d.post("/v2/models/echo/infer", data=head + raw, timeout=60,
                   headers={"Inference-Header-Content-Length": str(len(head)),
                            "Content-Type": "application/octet-stream"})
        assert r.status_code == 200, r.text[:300]
        assert r.content[-size:] == raw
    time.sleep(1.5)  # a tick samples the process group too
    m = d.model("echo")
    (inst,) = m["instances"]
    assert inst["pid"] == pid and inst["restarts"] == 0, m
    assert inst["rss_bytes"] < 100 << 20, m
    assert "above limits.memory" not in d.log()


def test_leaking_instances_under_concurrent_load_are_replaced_without_dropping_a_request(corral):
    """Two leaking instances, four clients at once: instances are replaced one after another at their limit
    while the other keeps serving; all 48 requests get 200."""
    corral.add("leak", "leaks_memory", manifest=ft_manifest(instances=2, limits="{memory: 150MiB}",
                                                       parameters={"leak_mb": 20}))
    d = corral.start()
    assert load(d, "leak").status_code == 200
    tally = Tally("memory-limit-concurrent")
    pids = set()
    lock = threading.Lock()

    def client():
        for _ in range(12):
            c = Call(d, "leak", timeout=60, sleep=0.05).finish()
            tally.call(c)
            if c.resp is not None and c.resp.status_code == 200:
                with lock:
                    pids.add(out(c.resp, "PID"))

    clients = [threading.Thread(target=client, daemon=True) for _ in range(4)]
    for c in clients:
        c.start()
    for c in clients:
        c.join(timeout=120)
    assert not any(c.is_alive() for c in clients)
    tally.check(allowed={200})
    restarts = sum(i["restarts"] for i in d.model("leak")["instances"])
    print(f"[memory-limit-concurrent] {len(pids)} processes served 48 requests; restarts {restarts}", flush=True)
    assert len(pids) >= 4 and restarts >= 2, (pids, restarts)
    m = wait_for(lambda: (lambda m: m if len(ready(m)) == 2 else None)(d.model("leak")), timeout=20,
                 what="both instances ready")
    assert m["state"] == "ready"


def test_memory_budget_unloads_lru_idle_models_then_refuses_with_503(corral):
    """--memory-budget 400MiB. A and B (each ~115 MiB measured, limit 150MiB) are loaded, A used least
    recently. Loading C (limit 250MiB): 230 + 250 > 400, so A, idle and LRU, is unloaded to make room.
    With B and C both busy, loading D (limit 350MiB) cannot fit however: 503 naming B and C."""
    big = dict(parameters={"initial_mb": 100, "leak_mb": 0}, limits="{memory: 150MiB}", keep_alive=-1)
    corral.add("a", "leaks_memory", manifest=ft_manifest(**big))
    corral.add("b", "leaks_memory", manifest=ft_manifest(**big))
    corral.add("c", "counts_spawns", manifest=ft_manifest(limits="{memory: 250MiB}", keep_alive=-1))
    d_path = corral.add("d", "counts_spawns", manifest=ft_manifest(limits="{memory: 350MiB}", keep_alive=-1))
    d = corral.start("--memory-budget", "400MiB")
    assert load(d, "a").status_code == 200
    assert load(d, "b").status_code == 200
    assert infer(d, "a").status_code == 200
    assert infer(d, "b").status_code == 200
    for name in ("a", "b"):
        wait_for(lambda: instance(d, name)["rss_bytes"] >= 100 * MiB, timeout=10, what=f"{name}'s rss measured")
    r = load(d, "c")
    assert r.status_code == 200, r.text
    assert d.model("a")["state"] == "unloaded", d.model("a")
    assert d.model("b")["state"] == "ready"
    assert d.model("c")["state"] == "ready"
    assert re.search(r"unloading.*\ba\b.*to make room|\ba\b.*unloading.*to make room", d.log()), \
        "no 'unloading ... to make room' log line for a"
    # B and C busy: nothing idle to unload.
    busy = [Call(d, "b", sleep=4), Call(d, "c", sleep=4)]
    wait_inflight(d, "b", 1)
    wait_inflight(d, "c", 1)
    wait_for(lambda: instance(d, "c")["rss_bytes"] > 0, timeout=5, what="c's rss measured")
    r = load(d, "d", timeout=30)
    assert r.status_code == 503, r.text
    assert r.headers.get("Retry-After", "").strip().isdigit(), dict(r.headers)
    err = error(r)
    print(f"[memory-budget] 503: {err}", flush=True)
    assert "d" in err and re.search(r"\bb\b", err) and re.search(r"\bc\b", err) and re.search(r"\d", err), err
    assert all(c.t1 is None for c in busy), "the busy requests ended before the refusal; the test proved little"
    tally = Tally("memory-budget")
    for c in busy:
        tally.call(c.finish())
    tally.check(allowed={200})
    assert spawns(d_path) == 0, "the refused model started a worker"
    assert d.model("b")["state"] == "ready" and d.model("c")["state"] == "ready"
    assert d.model("d")["state"] != "ready"


# ---------------------------------------------------------------- autoscaling


def test_autoscale_grows_under_queue_pressure_and_shrinks_when_idle(corral):
    corral.add("ft", "counts_spawns", manifest=ft_manifest(instances=1, max_instances=3, keep_alive=-1))
    d = corral.start()
    assert load(d, "ft").status_code == 200
    tally = Tally("autoscale")
    stop = threading.Event()
    peak = [1]

    def client():
        while not stop.is_set():
            tally.call(Call(d, "ft", timeout=60, sleep=0.5).finish())

    clients = [threading.Thread(target=client, daemon=True) for _ in range(8)]
    t0 = time.monotonic()
    for c in clients:
        c.start()
    try:
        def grown():
            peak[0] = max(peak[0], len(ready(d.model("ft"))))
            return peak[0] > 1
        wait_for(grown, timeout=25, interval=0.2, what="a second instance under queue pressure")
        grew_after = time.monotonic() - t0
        time.sleep(2)
        peak[0] = max(peak[0], len(ready(d.model("ft"))))
    finally:
        stop.set()
        for c in clients:
            c.join(timeout=70)
    assert not any(c.is_alive() for c in clients)
    tally.check(allowed={200})
    assert peak[0] <= 3
    t1 = time.monotonic()
    m = wait_for(lambda: (lambda m: m if len(m["instances"]) == 1 and len(ready(m)) == 1 else None)(d.model("ft")),
                 timeout=40, interval=0.25, what="the model to shrink back to one instance")
    print(f"[autoscale] grew after {grew_after:.1f}s to {peak[0]} instances; back to 1 after "
          f"{time.monotonic() - t1:.1f}s idle", flush=True)
    assert m["state"] == "ready"
    assert infer(d, "ft").status_code == 200


# ---------------------------------------------------------------- stopping the daemon


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_sigterm_drains_in_flight_and_queued_requests(corral, sig):
    corral.add("ft", "counts_spawns")
    d = corral.start()
    pid = out(infer(d, "ft"), "PID")
    running = Call(d, "ft", sleep=1)
    wait_inflight(d, "ft", 1)
    queued = []
    for _ in range(3):
        queued.append(Call(d, "ft", sleep=0.2))
        wait_held(d, "ft", 1 + len(queued))
    d.proc.send_signal(sig)
    time.sleep(0.2)
    late = Call(d, "ft", timeout=10).finish()
    assert d.proc.wait(timeout=30) == 0
    tally = Tally(f"{signal.Signals(sig).name.lower()}-drain")
    for c in [running, *queued]:
        tally.call(c.finish())
    tally.check(allowed={200})
    for c in [running, *queued]:
        assert out(c.resp, "PID") == pid
    # A request arriving after SIGTERM is refused: no connection, or 503.
    assert late.resp is None and isinstance(late.exc, requests.ConnectionError) or \
        late.resp is not None and late.resp.status_code == 503, (late.exc, late.resp is not None and late.resp.text)
    assert not alive(pid)
    d.stop()


def test_sigterm_with_a_short_drain_timeout_answers_the_rest_503_and_exits_0(corral):
    corral.add("ft", "counts_spawns")
    d = corral.start("--drain-timeout", "1s")
    pid = out(infer(d, "ft"), "PID")
    running = Call(d, "ft", sleep=10)
    wait_inflight(d, "ft", 1)
    queued = [Call(d, "ft", sleep=10)]
    wait_held(d, "ft", 2)  # pipelined to the busy worker
    queued.append(Call(d, "ft", sleep=10))
    wait_queued(d, "ft", 1)
    t0 = time.monotonic()
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(timeout=20) == 0
    took = time.monotonic() - t0
    tally = Tally("sigterm-drain-timeout")
    for c in [running, *queued]:
        tally.call(c.finish())
    tally.check(allowed={503})
    print(f"[sigterm-drain-timeout] exited {took:.2f}s after SIGTERM (drain 1 s, requests 10 s)", flush=True)
    assert took < 8
    for c in [running, *queued]:
        assert "ft" in error(c.resp), c.resp.text
    assert not alive(pid)
    d.stop()


def test_sigterm_during_a_crash_storm(corral):
    """SIGTERM while 16 clients hammer two echo instances and a killer SIGKILLs workers: every request the
    daemon accepted gets exactly one answer (200, 502 or 503), later ones are refused, the daemon exits 0
    within its drain timeout plus the stop grace, and nothing is left running."""
    corral.add("echo", "echo", manifest=ft_manifest(
        instances=2, restart="{max_restarts: 1000, window: 60s, backoff_min: 10ms, backoff_max: 100ms}"))
    d = corral.start("--drain-timeout", "3s")
    assert load(d, "echo").status_code == 200
    tally = Tally("sigterm-storm")
    refused = collections.Counter()
    t_sig = []
    stop = threading.Event()
    kills = []

    def client():
        while not stop.is_set():
            rid = new_id("st")
            payload = f"p-{rid}"
            t0 = time.monotonic()
            try:
                # A new connection per request: after SIGTERM the listener is closed and a new one is refused.
                r = requests.post(d.url("/v2/models/echo/infer"), timeout=30,
                                  json={"id": rid, "inputs": [tensor("INPUT0", "BYTES", [1], [payload])]})
            except requests.ConnectionError as e:
                if t_sig and t0 > t_sig[0] - 0.3:  # sent around or after SIGTERM: refusing it is right
                    refused["refused"] += 1
                    time.sleep(0.02)
                    continue
                tally.send(rid)
                tally.lose(rid, e)
                continue
            except Exception as e:  # noqa: BLE001
                tally.send(rid)
                tally.lose(rid, e)
                continue
            tally.send(rid)
            echoed = None
            if r.status_code == 200:
                body = r.json()
                echoed = body.get("id")
                if body["outputs"][0]["data"] != [payload]:
                    tally.mismatched.append((rid, body["outputs"][0]["data"]))
            tally.answer(rid, r, echoed)

    def killer():
        with requests.Session() as s:
            while not stop.is_set():
                time.sleep(random.uniform(0.1, 0.2))
                try:
                    m = s.get(d.url("/v1/models/echo"), timeout=5).json()
                except Exception:  # noqa: BLE001 - stopping, or busy
                    continue
                pids = [i["pid"] for i in m["instances"] if i["state"] == "ready" and i["pid"]]
                if pids:
                    pid = random.choice(pids)
                    try:
                        os.kill(pid, signal.SIGKILL)
                        kills.append(pid)
                    except ProcessLookupError:
                        pass

    threads = [threading.Thread(target=client, daemon=True) for _ in range(16)]
    threads.append(threading.Thread(target=killer, daemon=True))
    for t in threads:
        t.start()
    try:
        time.sleep(2)
        t_sig.append(time.monotonic())
        d.proc.send_signal(signal.SIGTERM)
        rc = d.proc.wait(timeout=30)
        took = time.monotonic() - t_sig[0]
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=40)
    assert not any(t.is_alive() for t in threads), f"threads still waiting: {tally.line()}"
    print(f"[sigterm-storm] exit {rc} {took:.2f}s after SIGTERM; {len(kills)} workers killed; "
          f"{refused['refused']} requests refused after SIGTERM", flush=True)
    tally.check(allowed={200, 502, 503})
    assert rc == 0
    assert took < 3 + 10, took
    assert tally.ok > 0 and len(kills) >= 3


def test_sigterm_while_a_lazy_load_has_a_request_waiting(corral):
    corral.add("slow", "steerable", manifest=ctl_manifest(parameters={"load_delay": 2}))
    d = corral.start()
    c = Call(d, "slow", timeout=30)
    d.wait_state("slow", "loading", timeout=10)
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(timeout=30) == 0
    tally = Tally("sigterm-mid-load")
    tally.call(c.finish())
    tally.check(allowed={200})
    assert c.elapsed >= 1.5
    d.stop()


def test_sigkill_of_the_daemon_leaves_no_orphans(corral):
    """SIGKILL of the daemon: every worker (busy, idle, loading, frozen by SIGSTOP) and every process a
    worker started is gone within about a second."""
    corral.add("echo", "echo")
    corral.add("ctl", "steerable", manifest=ctl_manifest(instances=2, parameters={"spawn_child": True}))
    corral.add("ft", "counts_spawns")
    corral.add("frozen", "counts_spawns")
    corral.add("loading", "steerable", manifest=ctl_manifest(load="eager", parameters={"load_delay": 60}))
    d = corral.start()
    assert load(d, "echo").status_code == 200
    assert load(d, "ctl").status_code == 200
    children = []
    for _ in range(6):
        children.append(out(infer(d, "ctl"), "CHILD"))
    children = sorted(set(children))
    frozen = out(infer(d, "frozen"), "PID")
    busy = Call(d, "ft", sleep=30, timeout=40)
    wait_inflight(d, "ft", 1)
    loading = wait_for(lambda: d.worker_pids("loading"), timeout=10, what="the eager load to start")
    os.kill(frozen, signal.SIGSTOP)
    pids = d.worker_pids("echo") + d.worker_pids("ctl") + d.worker_pids("ft") + [frozen] + loading + children
    assert len(children) == 2 and all(alive(p) for p in pids), pids

    roles = {p: "echo" for p in d.worker_pids("echo")}
    roles.update({p: "ctl" for p in d.worker_pids("ctl")})
    roles.update({p: "ctl's child" for p in children})
    roles.update({p: "ft (busy)" for p in d.worker_pids("ft")})
    roles.update({frozen: "frozen (SIGSTOP)"})
    roles.update({p: "loading" for p in loading})

    def survivors():
        return ", ".join(f"{p} ({roles.get(p)}: {describe(p)})" for p in pids if alive(p))

    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait(timeout=10)
    t0 = time.monotonic()
    try:
        try:
            wait_for(lambda: not any(alive(p) for p in pids), timeout=3, interval=0.02, what="the workers to die")
        except AssertionError:
            raise AssertionError(f"alive 3 s after the daemon's SIGKILL: {survivors()}") from None
    finally:
        if alive(frozen):
            os.kill(frozen, signal.SIGCONT)
    print(f"[sigkill-daemon] {len(pids)} processes gone {time.monotonic() - t0:.2f}s after the daemon died",
          flush=True)
    busy.finish()
    tally = Tally("sigkill-daemon")
    tally.call(busy)
    tally.check(allowed=set(), lost_ok=1)  # the one request in flight died with the daemon, as it must
    assert isinstance(busy.exc, requests.ConnectionError)
    d.stop()
