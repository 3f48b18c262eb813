"""Hostile input must never kill the daemon (issue 8): bytes that are not UTF-8
anywhere they are echoed, allocations sized by claims, protocol strictness,
and bounded worker output.

Every test here checks that the daemon is still alive and answering after
the hostile request, and that every error body is strict JSON in valid UTF-8.
"""
from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import time

import pytest

from conftest import ROOT, Daemon, alive, infer, load, tensor, wait_for

PLAIN_BIN = ROOT / "build" / "corral"


def raw_request(d: Daemon, data: bytes, timeout: float = 10) -> tuple[int, bytes]:
    """Sends raw bytes as one HTTP/1.1 request; returns the status and the body."""
    host, port = d.base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(data)
        buf = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
            head, sep, rest = buf.partition(b"\r\n\r\n")
            if sep:
                length = [int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:")]
                if length and len(rest) >= length[0]:
                    break
    head, _, body = buf.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


def strict_error(body: bytes) -> str:
    """The message of an {"error": ...} body that must be strict UTF-8 JSON."""
    doc = json.loads(body.decode("utf-8", errors="strict"))
    assert set(doc) == {"error"}, doc
    return doc["error"]


def assert_alive(d: Daemon):
    assert d.proc.poll() is None, f"the daemon died:\n{d.log()[-3000:]}"
    assert d.get("/v2/health/live").status_code == 200


def raw_manifest(mode: str, extra: str = "") -> str:
    return f"runtime: exec\nentrypoint: worker.py\nargs: [{mode}]\n{extra}"


# ---------------------------------------------------------------- text that is not UTF-8


@pytest.mark.parametrize("path", [
    "/v2/models/%ff", "/v2/models/%c0%ae", "/v2/models/%ff/infer", "/v2/models/%c0%ae/ready",
    "/v1/models/%ff", "/v1/models/%ff/logs", "/v2/models/echo/versions/%ff",
])
def test_invalid_utf8_in_a_model_route_is_a_json_400_or_404(corral, path):
    corral.add("echo", "echo")
    d = corral.start()
    r = d.get(path) if "infer" not in path else d.post(path, {"inputs": []})
    assert r.status_code in (400, 404), r.text
    strict_error(r.content)
    assert_alive(d)


def test_invalid_utf8_in_load_and_unload_routes(corral):
    d = corral.start()
    for action in ("load", "unload"):
        r = d.post(f"/v2/repository/models/%ff%fe/{action}", {})
        assert r.status_code == 400, r.text
        strict_error(r.content)
    assert_alive(d)


def test_raw_0xff_byte_in_an_unknown_path(corral):
    d = corral.start()
    status, body = raw_request(d, b"GET /no/such/\xff\xfe HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert status == 404
    assert "no such endpoint" in strict_error(body)
    assert_alive(d)


def test_invalid_utf8_in_inference_header_content_length(corral):
    corral.add("echo", "echo")
    d = corral.start()
    body = b'{"inputs":[]}'
    status, answer = raw_request(
        d, b"POST /v2/models/echo/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
           b"Inference-Header-Content-Length: \xff\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    assert status == 400
    assert "Inference-Header-Content-Length" in strict_error(answer)
    assert_alive(d)


def test_long_tensor_name_is_cut_at_a_character_boundary(corral):
    corral.add("echo", "echo")
    d = corral.start()
    name = "é" * 600  # 1200 bytes: any fixed buffer of 1 KiB cuts inside a character
    r = d.post("/v2/models/echo/infer", {"inputs": [tensor(name, "NOPE", [1], [1])]})
    assert r.status_code == 400
    msg = strict_error(r.content)
    assert msg.startswith("model 'echo': input '") and "é" * 400 in msg, msg
    # a byte of a cut character would come back as U+0080..U+00FF (its \u00XX escape): only whole é's
    assert all(c == "é" or ord(c) < 0x80 for c in msg), [c for c in msg if ord(c) >= 0x80 and c != "é"][:5]
    assert_alive(d)


RAISER = '''
import corral

class Raiser(corral.Model):
    def infer(self, request):
        mode = request.parameters.get("mode", "")
        if mode == "long":
            raise ValueError("\\u00e9" * 3000)
        if mode == "bad":
            raise corral.BadRequest("\\u00e9" * 3000)
        return {"OUT\\u00e9" * 100: request.inputs["X"]}

if __name__ == "__main__":
    corral.run(Raiser)
'''


def test_model_exceptions_with_long_non_ascii_text(corral):
    corral.add("raiser", manifest="runtime: python\nentrypoint: worker.py\n", files={"worker.py": RAISER})
    d = corral.start()
    for mode, status in (("long", 500), ("bad", 400)):
        r = infer(d, "raiser", mode=mode)
        assert r.status_code == status, r.text
        msg = strict_error(r.content)
        assert msg.count("é") > 100 and msg.endswith(("é", "...")), msg[-40:]
    r = infer(d, "raiser")  # an output name of 400 two-byte characters
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["name"] == "OUTé" * 100
    assert_alive(d)


def test_model_state_with_non_ascii_load_error_is_valid_json(corral):
    worker = "import corral\nclass M(corral.Model):\n    def load(self, ctx):\n" \
             "        raise RuntimeError('\\u00e9' * 700)\nif __name__ == '__main__':\n    corral.run(M)\n"
    corral.add("broken", manifest="runtime: python\nentrypoint: worker.py\nrestart: {max_restarts: 0}\n",
               files={"worker.py": worker})
    d = corral.start()
    r = load(d, "broken")
    assert r.status_code >= 400
    strict_error(r.content)
    for path in ("/v1/models", "/v1/models/broken"):
        r = d.get(path)
        assert r.status_code == 200, r.text
        json.loads(r.content.decode("utf-8", errors="strict"))
    r = d.post("/v2/repository/index", {})
    assert r.status_code == 200
    json.loads(r.content.decode("utf-8", errors="strict"))
    assert_alive(d)


# ---------------------------------------------------------------- claims are not data


def test_claimed_shape_is_not_allocated(corral):
    corral.add("echo", "echo")
    d = corral.start()
    body = {"inputs": [tensor("INPUT0", "INT8", [1073741824], [1])]}
    r = d.post("/v2/models/echo/infer", body)
    assert r.status_code == 400
    assert "has 1 elements but its shape holds 1073741824" in strict_error(r.content)
    assert_alive(d)


def test_uint64_out_of_range_says_so(corral):
    corral.add("echo", "echo")
    d = corral.start()
    body = b'{"inputs":[{"name":"INPUT0","datatype":"UINT64","shape":[1],"data":[123456789012345678901234567890]}]}'
    r = d.post("/v2/models/echo/infer", data=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    msg = strict_error(r.content)
    assert "out of range for UINT64" in msg, msg


@pytest.mark.skipif(not PLAIN_BIN.exists(), reason="needs the plain build (make build)")
def test_hostile_requests_under_an_address_space_limit(tmp_path):
    """The release build under `prlimit --as`: a claim of 1 GiB, from a client or a worker, is refused."""
    repo = tmp_path / "models"
    (repo / "raw").mkdir(parents=True)
    src = ROOT / "tests" / "models" / "raw_protocol" / "worker.py"
    (repo / "raw" / "worker.py").write_bytes(src.read_bytes())
    (repo / "raw" / "worker.py").chmod(0o755)
    (repo / "raw" / "model.yaml").write_text(raw_manifest("huge-claim", "timeout: 3s\n"))
    log = open(tmp_path / "daemon.log", "wb")
    limit = str(768 << 20)
    proc = subprocess.Popen(["prlimit", f"--as={limit}", str(PLAIN_BIN), "serve", "--models", str(repo), "--port", "0",
                             "--stop-grace", "1s"], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        text = lambda: (tmp_path / "daemon.log").read_text(errors="replace")
        port = wait_for(lambda: (lambda m: m and m.group(1))(
            __import__("re").search(r"listening on http://127\.0\.0\.1:(\d+)", text())), timeout=15,
            what="the daemon to listen")
        import requests
        base = f"http://127.0.0.1:{port}"
        body = {"inputs": [tensor("INPUT0", "INT8", [1073741824], [1])]}
        r = requests.post(base + "/v2/models/raw/infer", json=body, timeout=30)
        assert r.status_code == 400, r.text
        body = {"inputs": [tensor("INPUT0", "FP64", [134217727], [1])]}
        r = requests.post(base + "/v2/models/raw/infer", json=body, timeout=30)
        assert r.status_code == 400, r.text
        # A request head that claims 900 MB of body and sends 1 KB: a charge, not an allocation.
        claim = socket.create_connection(("127.0.0.1", int(port)), timeout=10)
        claim.sendall(b"POST /v2/models/raw/infer HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 900000000\r\n\r\n" + b" " * 1024)
        time.sleep(0.5)
        assert proc.poll() is None, text()
        assert requests.get(base + "/v2/health/live", timeout=5).status_code == 200
        claim.close()
        # The worker answers with a header claiming a 1 GiB body, then stalls.
        r = requests.post(base + "/v2/models/raw/infer", json={"inputs": [tensor("X", "INT32", [1], [0])]},
                          timeout=30)
        assert r.status_code == 504, r.text
        assert proc.poll() is None, text()
        assert requests.get(base + "/v2/health/live", timeout=5).status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


# ---------------------------------------------------------------- protocol strictness


def test_hello_that_is_not_json_fails_the_start(corral):
    corral.add("raw", "raw_protocol", manifest=raw_manifest("hello-garbage", "restart: {max_restarts: 0}\n"))
    d = corral.start()
    r = load(d, "raw")
    assert r.status_code >= 400, r.text
    msg = strict_error(r.content)
    assert "HELLO" in msg, msg
    assert_alive(d)


def test_a_lying_result_gets_502_and_the_worker_is_replaced(corral):
    corral.add("raw", "raw_protocol", manifest=raw_manifest("lying"))
    d = corral.start()
    assert load(d, "raw").status_code == 200
    pid = d.worker_pids("raw")[0]
    r = infer(d, "raw")
    assert r.status_code == 502
    msg = strict_error(r.content)
    assert "malformed INFER_RESULT" in msg and f"pid {pid}" in msg and "replaced" in msg, msg
    wait_for(lambda: not alive(pid), timeout=10, what="the lying worker to be killed")
    wait_for(lambda: (lambda p: p and p[0] != pid)(d.worker_pids("raw")), timeout=20,
             what="a new worker")
    assert_alive(d)


def test_generate_priority_out_of_range_is_a_400(corral):
    corral.add("echo", "echo")
    d = corral.start()
    r = d.post("/v1/models/echo/generate", {"text": "hi", "parameters": {"priority": 99}})
    assert r.status_code == 400
    assert "priority" in strict_error(r.content)
    r = d.post("/v2/models/echo/infer", {"inputs": [tensor("INPUT0", "INT32", [1], [1])],
                                          "parameters": {"priority": 99}})
    assert r.status_code == 400
    assert "priority 99 is out of range" in strict_error(r.content)


def test_a_crash_report_quotes_only_lines_written_during_the_request(corral):
    corral.add("raw", "raw_protocol", manifest=raw_manifest("stale-line"))
    d = corral.start()
    assert infer(d, "raw").status_code == 200  # prints the line while answering
    r = infer(d, "raw")  # exits with status 3 without a word
    assert r.status_code == 502
    msg = strict_error(r.content)
    assert "exited with status 3" in msg and "stale line" not in msg, msg


# ---------------------------------------------------------------- bounded worker output


FLOOD = '''
import sys, time
import corral

class Flood(corral.Model):
    def infer(self, request):
        mode = request.parameters.get("mode", "")
        if mode == "long":
            for _ in range(320):
                sys.stdout.write("x" * 65536)
            sys.stdout.write("\\n")
            sys.stdout.flush()
        elif mode == "many":
            for i in range(20000):
                print("line", i)
            sys.stdout.flush()
        else:
            print("after the flood", flush=True)
        return {"X": request.inputs["X"]}

if __name__ == "__main__":
    corral.run(Flood)
'''


def test_worker_output_floods_are_bounded_in_the_daemon_log(corral):
    corral.add("flood", manifest="runtime: python\nentrypoint: worker.py\n", files={"worker.py": FLOOD})
    d = corral.start()
    assert infer(d, "flood").status_code == 200
    before = len(d.log())
    assert infer(d, "flood", mode="long").status_code == 200  # 20 MiB on one line
    wait_for(lambda: "more bytes of this line dropped" in d.get("/v1/models/flood/logs").text, timeout=10,
             what="the long line in the model's log")
    logs = d.get("/v1/models/flood/logs").text
    assert len(logs) < 300_000, len(logs)
    assert len(d.log()) - before < 20_000, len(d.log()) - before
    before = len(d.log())
    assert infer(d, "flood", mode="many").status_code == 200  # 20,000 lines at once
    time.sleep(1.2)
    assert infer(d, "flood").status_code == 200
    wait_for(lambda: "were not copied here" in d.log(), timeout=10, what="the note on held-back lines")
    added = d.log()[before:]
    assert added.count("\n") < 700, added.count("\n")
    r = d.get("/v1/models/flood/logs")
    assert "line 19999" in r.text  # the ring keeps the newest
    assert int(r.headers["X-Corral-Log-Start"]) > 0  # and says how much it dropped
    assert_alive(d)
