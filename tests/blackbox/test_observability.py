"""Metrics, lifecycle events and Triton's statistics (issue 11): exact counts per outcome and reason,
the pending gauge, histogram counts, promtool's verdict on the exposition, a real Prometheus scraping
it, events of a kill -9 in order, and Last-Event-ID resuming without gaps or repeats. Real daemon,
real workers (tests/models/steerable)."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request

import pytest

from conftest import X, ctl_manifest, infer, raw_post, wait_for


def scrape(d) -> str:
    r = d.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return r.text


def sample(text: str, name: str, **labels) -> float:
    """The value of one sample, found by its name and (a subset of) its labels."""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$", line)
        assert m, f"not an exposition line: {line!r}"
        if m.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        if all(have.get(k) == str(v) for k, v in labels.items()):
            return float(m.group(4))
    raise AssertionError(f"no sample {name}{labels}")


class SSE:
    """A subscriber to /v1/events over a raw HTTP/1.1 socket: events as (id, kind, data)."""

    def __init__(self, d, last_event_id=None):
        self.sock = socket.create_connection(("127.0.0.1", d.port), timeout=15)
        extra = f"Last-Event-ID: {last_event_id}\r\n" if last_event_id is not None else ""
        self.sock.sendall(f"GET /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n".encode())
        self.buf = b""
        head = self._until(b"\r\n\r\n")
        assert b" 200 " in head.split(b"\r\n")[0] and b"text/event-stream" in head, head
        self.chunked = b"transfer-encoding: chunked" in head.lower()
        self.text = ""

    def _until(self, sep: bytes) -> bytes:
        while sep not in self.buf:
            got = self.sock.recv(65536)
            if not got:
                raise EOFError(self.buf)
            self.buf += got
        out, _, self.buf = self.buf.partition(sep)
        return out

    def _more(self) -> None:
        if self.chunked:
            size = int(self._until(b"\r\n"), 16)
            if size == 0:
                raise EOFError("stream ended")
            while len(self.buf) < size + 2:
                got = self.sock.recv(65536)
                if not got:
                    raise EOFError
                self.buf += got
            self.text += self.buf[:size].decode()
            self.buf = self.buf[size + 2:]
        else:
            got = self.sock.recv(65536)
            if not got:
                raise EOFError
            self.text += got.decode()

    def next(self) -> tuple[int, str, dict]:
        """The next event (comments skipped)."""
        while True:
            while "\n\n" not in self.text:
                self._more()
            block, _, self.text = self.text.partition("\n\n")
            fields = {}
            for line in block.split("\n"):
                if line.startswith(":"):
                    continue
                k, _, v = line.partition(": ")
                fields[k] = v
            if "id" in fields:
                return int(fields["id"]), fields["event"], json.loads(fields["data"])

    def until(self, pred, limit=60):
        seen = []
        for _ in range(limit):
            ev = self.next()
            seen.append(ev)
            if pred(ev):
                return seen
        raise AssertionError(f"no matching event among {seen}")

    def close(self):
        self.sock.close()


def test_counters_move_by_exactly_what_was_sent(corral):
    corral.add("c", "steerable", manifest=ctl_manifest(max_queue=1, pipeline=0))  # waiting means queued
    d = corral.start()
    statuses = []
    for _ in range(5):
        statuses.append(infer(d, "c").status_code)
    for params in ({"bad": "no"}, {"bad": "again"}, {"raise": "boom"}, {"exit": 3}):
        statuses.append(infer(d, "c", **params).status_code)
    wait_for(lambda: d.model("c")["state"] == "ready", what="the replacement of the worker that exited")
    # 504 while running (v2's timeout parameter, in µs): the worker is told to CANCEL.
    statuses.append(d.post("/v2/models/c/infer", {"inputs": X, "parameters": {"sleep": 3, "timeout": 300000}}).status_code)
    # The cancelled request's worker still sleeps out its 3 s (steerable does not look at cancelled).
    wait_for(lambda: d.model("c")["instances"][0]["inflight"] == 0, timeout=10, what="the cancelled request to end")
    # One running, one queued, one refused (max_queue 1); the queued one's client leaves before its turn.
    results = {}
    runner = threading.Thread(target=lambda: results.setdefault("run", infer(d, "c", sleep=1.5).status_code))
    runner.start()
    wait_for(lambda: d.model("c")["instances"][0]["inflight"] == 1, what="the long request to run")
    left = raw_post(d, "/v2/models/c/infer", {"inputs": X})
    wait_for(lambda: d.model("c")["queue"] == 1, what="the second request to queue")
    text = scrape(d)
    assert sample(text, "nv_inference_pending_request_count", model="c") == 1  # the queue, not what runs
    assert sample(text, "corral_queue_depth", model="c") == 1
    statuses.append(infer(d, "c").status_code)  # the queue is full
    left.close()
    runner.join(30)
    statuses.append(results["run"])
    wait_for(lambda: d.model("c")["queue"] == 0, what="the queue to empty")
    wait_for(lambda: sample(scrape(d), "nv_inference_request_failure", model="c", reason="CANCELED") == 1,
             what="the departed client's request to count as CANCELED")
    assert statuses == [200] * 5 + [400, 400, 500, 502, 504, 503, 200], statuses

    text = scrape(d)
    assert sample(text, "nv_inference_request_success", model="c", version="1") == 6
    assert sample(text, "nv_inference_request_failure", model="c", reason="BACKEND") == 4  # 400, 400, 500, 502
    assert sample(text, "nv_inference_request_failure", model="c", reason="REJECTED") == 2  # 503, 504
    assert sample(text, "nv_inference_request_failure", model="c", reason="CANCELED") == 1
    assert sample(text, "nv_inference_request_failure", model="c", reason="OTHER") == 0
    assert sample(text, "nv_inference_count", model="c") == 6
    # Executions: every request a worker received (the 503 and the departed one never reached one).
    assert sample(text, "nv_inference_exec_count", model="c") == 11
    assert sample(text, "nv_inference_pending_request_count", model="c") == 0
    # Histograms count every answered request; queue and compute every one a worker took.
    assert sample(text, "corral_request_duration_seconds_count", model="c") == 13
    assert sample(text, "corral_request_duration_seconds_bucket", model="c", le="+Inf") == 13
    assert sample(text, "corral_queue_duration_seconds_count", model="c") == 11
    assert sample(text, "corral_compute_duration_seconds_count", model="c") == 11
    assert sample(text, "corral_batch_size_count", model="c") == 11
    assert sample(text, "corral_instance_restarts_total", model="c", cause="crash") == 1  # the exit
    assert sample(text, "corral_instances", model="c", state="ready") == 1
    assert sample(text, "corral_model_state", model="c", state="ready") == 1
    assert sample(text, "nv_inference_request_duration_us", model="c") > 1.5e6  # the 1.5 s request
    assert sample(text, "nv_model_load_duration_secs", model="c") > 0
    # Memory comes from the once-a-second sample.
    wait_for(lambda: sample(scrape(d), "corral_instance_resident_memory_bytes", model="c", instance="0") > 1 << 20,
             what="the instance's memory sample")
    assert sample(text, "process_resident_memory_bytes") > 1 << 20
    assert sample(text, "process_open_fds") > 3
    assert abs(sample(text, "process_start_time_seconds") - time.time()) < 600

    # Triton's statistics extension, in Triton's shape.
    stats = d.get("/v2/models/c/stats").json()["model_stats"]
    assert len(stats) == 1 and stats[0]["name"] == "c" and stats[0]["version"] == "1"
    inf = stats[0]["inference_stats"]
    assert inf["success"]["count"] == 6 and inf["fail"]["count"] == 7
    assert inf["queue"]["count"] == 6 and inf["compute_infer"]["count"] == 6
    assert inf["success"]["ns"] >= inf["compute_infer"]["ns"] > 1.5e9
    assert stats[0]["inference_count"] == 6 and stats[0]["execution_count"] == 11
    assert abs(stats[0]["last_inference"] / 1000 - time.time()) < 60
    assert {"statistics", "logging"} <= set(d.get("/v2").json()["extensions"])
    every = d.get("/v2/models/stats").json()["model_stats"]
    assert [s["name"] for s in every] == ["c"]


def test_histogram_buckets_are_cumulative_and_streams_count_their_first_chunk(corral):
    corral.add("s", "streams")
    d = corral.start()
    for _ in range(3):
        r = d.post("/v1/models/s/generate", {"stream": True, "events": 2})
        assert r.status_code == 200
    text = scrape(d)
    assert sample(text, "corral_time_to_first_chunk_seconds_count", model="s") == 3
    assert sample(text, "nv_inference_request_success", model="s") == 3
    buckets = [(float(m.group(1)) if m.group(1) != "+Inf" else float("inf"), float(m.group(2)))
               for m in re.finditer(r'corral_request_duration_seconds_bucket\{model="s",le="([^"]+)"\} (\S+)', text)]
    assert len(buckets) == 20 and buckets[-1] == (float("inf"), 3)
    assert all(a[0] < b[0] and a[1] <= b[1] for a, b in zip(buckets, buckets[1:]))


def test_promtool_finds_no_error_in_the_exposition(corral):
    if not shutil.which("promtool"):
        pytest.skip("promtool is missing: scripts/deps.sh installs Debian's prometheus package")
    corral.add("c", "steerable", manifest=ctl_manifest())
    corral.add("idle", "steerable", manifest=ctl_manifest())
    d = corral.start()
    assert infer(d, "c").status_code == 200
    assert infer(d, "c", bad="x").status_code == 400
    p = subprocess.run(["promtool", "check", "metrics"], input=scrape(d).encode(), capture_output=True, timeout=30)
    findings = (p.stdout + p.stderr).decode().strip().splitlines()
    # Exit 1 is a parse error; 3 means lint findings. Only Triton's own names (kept for its dashboards) draw any.
    assert p.returncode in (0, 3), findings
    assert all(f.startswith("nv_") for f in findings), findings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_real_prometheus_scrapes_the_counts(corral, tmp_path):
    if not shutil.which("prometheus"):
        pytest.skip("prometheus is missing: scripts/deps.sh installs Debian's prometheus package")
    corral.add("c", "steerable", manifest=ctl_manifest())
    d = corral.start()
    for _ in range(4):
        assert infer(d, "c").status_code == 200
    assert infer(d, "c", raise_="x" if False else None, bad="no").status_code == 400
    target = d.base.split("//", 1)[1]
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: corral\n"
                   f"    static_configs:\n      - targets: ['{target}']\n")
    port = free_port()
    log = open(tmp_path / "prometheus.log", "wb")
    prom = subprocess.Popen(["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        def query(expr):
            url = f"http://127.0.0.1:{port}/api/v1/query?query=" + urllib.request.quote(expr)
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    res = json.load(r)["data"]["result"]
            except OSError:
                return None
            return float(res[0]["value"][1]) if res else None

        got = wait_for(lambda: query('nv_inference_request_success{model="c"}'), timeout=60, interval=0.5,
                       what="Prometheus to scrape the daemon")
        assert got == 4
        assert query('nv_inference_request_failure{model="c",reason="BACKEND"}') == 1
        assert query('corral_request_duration_seconds_count{model="c"}') == 5
        assert query('corral_request_duration_seconds_bucket{model="c",le="+Inf"}') == 5
    finally:
        os.killpg(prom.pid, signal.SIGTERM)
        try:
            prom.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(prom.pid, signal.SIGKILL)
            prom.wait(timeout=5)
        log.close()


def test_kill_9_events_arrive_in_order_and_last_event_id_resumes_without_gaps(corral):
    corral.add("c", "steerable", manifest=ctl_manifest())
    d = corral.start()
    sub = SSE(d)
    assert infer(d, "c").status_code == 200
    seen = sub.until(lambda e: e[1] == "model.loaded")
    assert [e[1] for e in seen] == ["model.loading", "instance.started", "instance.ready", "model.loaded"]
    pid = d.worker_pids("c")[0]
    os.kill(pid, signal.SIGKILL)
    after = sub.until(lambda e: e[1] == "model.loaded")
    kinds = [e[1] for e in after]
    # Its only instance gone, the model is loading again until the replacement is ready.
    assert kinds == ["instance.exited", "instance.restarting", "model.loading", "instance.started", "instance.ready",
                     "model.loaded"], kinds
    exited = after[0][2]
    assert exited["signal"] == 9 and exited["pid"] == pid and exited["expected"] is False and exited["model"] == "c"
    assert after[1][2]["cause"] == "crash" and after[1][2]["delay_ms"] >= 0
    ids = [e[0] for e in seen + after]
    assert ids == list(range(ids[0], ids[0] + len(ids))), ids  # every event, in order, one id apart
    sub.close()
    last = ids[-1]
    # While nobody listens: a scale up and down.
    assert d.post("/v1/models/c/scale", {"instances": 2}).status_code == 200
    wait_for(lambda: sum(i["state"] == "ready" for i in d.model("c")["instances"]) == 2, what="two instances")
    assert d.post("/v1/models/c/scale", {"instances": 1}).status_code == 200
    wait_for(lambda: len(d.model("c")["instances"]) == 1, what="one instance")
    resumed = SSE(d, last_event_id=last)
    missed = resumed.until(lambda e: e[1] == "instance.exited")
    assert [e[0] for e in missed] == list(range(last + 1, last + 1 + len(missed)))  # no gap, no repeat
    assert missed[0][1] == "model.scaled" and missed[0][2]["from"] == 1 and missed[0][2]["to"] == 2
    resumed.close()
    # From a point older than the history: from the oldest kept (all of it here).
    whole = SSE(d, last_event_id=0)
    assert whole.next()[0] == 1
    whole.close()


def test_events_reach_many_subscribers_and_time_is_utc(corral):
    corral.add("c", "steerable", manifest=ctl_manifest())
    d = corral.start()
    subs = [SSE(d) for _ in range(8)]
    assert d.post("/v2/repository/models/c/load", {}).status_code == 200
    for s in subs:
        ev = s.until(lambda e: e[1] == "model.loaded")
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", ev[-1][2]["time"])
        s.close()
    assert d.get("/v1/events", stream=True, timeout=5).headers["cache-control"] == "no-cache"


# ---- logs: LOG_LEVEL, --log-format json, the access line, Triton's logging extension

def log_records(d) -> list[dict]:
    out = []
    for line in d.log().splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))  # every line of the JSON format is one object
    return out


def test_json_log_lines_carry_model_instance_pid_and_the_access_line(corral):
    corral.add("c", "steerable", manifest=ctl_manifest())
    d = corral.start("--log-format", "json", env={"LOG_LEVEL": "DEBUG"})
    assert infer(d, "c", say="hello from the model").status_code == 200
    assert infer(d, "c", bad="nope").status_code == 400
    lines = d.log().splitlines()
    records = wait_for(lambda: (lambda r: r if any(x.get("stream") == "stdout" and "hello from" in x["message"]
                                                   for x in r) else None)(log_records(d)),
                       what="the worker's line in the log")
    assert all(line.startswith("{") for line in d.log().splitlines() if line.strip()), lines[:5]
    for r in records:
        assert set(r) >= {"time", "level", "message"} and r["level"] in ("error", "warn", "info", "debug")
    said = next(r for r in records if r.get("stream") == "stdout" and "hello from" in r["message"])
    pid = d.worker_pids("c")[0]
    assert said["model"] == "c" and said["instance"] == 0 and said["pid"] == pid
    assert said["message"] == "hello from the model"  # the fields carry the prefix
    def access_lines():
        return [r for r in log_records(d)
                if r["level"] == "debug" and r.get("request") and r["message"].startswith("infer ")]

    # Written just after the answer goes out: the client may have it first.
    access = wait_for(lambda: (lambda a: a if len(a) == 2 else None)(access_lines()), what="two access lines")
    assert ": 200 in " in access[0]["message"] and ": 400 in " in access[1]["message"]
    assert access[0]["model"] == "c" and access[0]["pid"] == pid and "queued" in access[0]["message"]
    state = [r for r in records if r.get("model") == "c" and "loading -> ready" in r["message"]]
    assert state and "instance" not in state[0]


def test_log_level_environment_and_flag(corral, tmp_path):
    from conftest import BIN
    corral.add("c", "steerable", manifest=ctl_manifest())
    port = free_port()
    log = tmp_path / "quiet.log"
    with open(log, "wb") as f:
        p = subprocess.Popen([BIN, "serve", "--models", str(corral.repo), "--port", str(port)], stdout=f,
                             stderr=subprocess.STDOUT, env={**os.environ, "LOG_LEVEL": "Warning"})
    try:
        url = f"http://127.0.0.1:{port}"
        def live():
            try:
                return urllib.request.urlopen(url + "/v2/health/live", timeout=2).status == 200
            except OSError:
                return False

        wait_for(live, what="the daemon to listen")
        req = urllib.request.Request(url + "/v2/models/c/infer", data=json.dumps({"inputs": X}).encode(),
                                     headers={"Content-Type": "application/json"})
        assert urllib.request.urlopen(req, timeout=30).status == 200
    finally:
        p.terminate()
        p.wait(timeout=20)
    text = log.read_text()
    assert "listening" not in text and " info: " not in text, text  # WARNING, any case, hides info lines
    bad = subprocess.run([BIN, "serve", "--port", "0"], env={**os.environ, "LOG_LEVEL": "chatty"},
                         capture_output=True, timeout=10)
    assert bad.returncode == 2 and b"LOG_LEVEL=chatty" in bad.stderr
    bad = subprocess.run([BIN, "serve", "--port", "0", "--log-format", "xml"], capture_output=True, timeout=10)
    assert bad.returncode == 2 and b"--log-format" in bad.stderr


def test_triton_logging_extension_reads_and_sets_the_level(corral):
    corral.add("c", "steerable", manifest=ctl_manifest())
    d = corral.start()
    got = d.get("/v2/logging").json()
    assert got == {"log_file": "", "log_info": True, "log_warning": True, "log_error": True,
                   "log_verbose_level": 0, "log_format": "default", "level": "info"}
    r = d.post("/v2/logging", {"log_verbose_level": 1})
    assert r.status_code == 200 and r.json()["log_verbose_level"] == 1 and r.json()["level"] == "debug"
    assert infer(d, "c").status_code == 200
    wait_for(lambda: "corral debug: infer " in d.log(), what="the access line at debug")
    r = d.post("/v2/logging", {"log_verbose_level": 0, "log_info": False})
    assert r.json()["level"] == "warn" and r.json()["log_info"] is False
    mark = len(d.log())
    assert infer(d, "c", say="quiet now").status_code == 200
    assert d.post("/v1/models/c/scale", {"instances": 2}).status_code == 200
    time.sleep(0.5)
    assert " corral info: " not in d.log()[mark:]
    for body, fragment in [({"log_file": "/tmp/x"}, "stderr only"), ({"verbose": 1}, "unknown logging setting"),
                           ({"log_error": False, "log_info": True}, "by level"), ({"log_info": "yes"}, "true or false"),
                           ([1], "JSON object")]:
        r = d.post("/v2/logging", body)
        assert r.status_code == 400 and fragment in r.json()["error"], (body, r.text)
    assert d.get("/v2/logging").json()["level"] == "warn"  # a refused change changes nothing
