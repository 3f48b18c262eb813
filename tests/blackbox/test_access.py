"""Access control against a real daemon: the bearer token (--auth-token-file,
CORRAL_TOKEN, --auth management), the Origin and Host (DNS rebinding)
guards, the content types JSON endpoints refuse, the client's token, and the
warning for a non-loopback listener without a token.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time

import pytest

from conftest import BIN, tensor, wait_for

TOKEN = "tok-3f9a-Secret"
ECHO_ONE = "runtime: python\nentrypoint: worker.py\ninstances: 1\n"
INPUTS = [tensor("INPUT0", "INT32", [2], [1, 2])]


def assert_error(r, status: int, *needles: str) -> str:
    """An error answer: the status, a JSON {"error": message} body holding needles."""
    assert r.status_code == status, f"expected {status}, got {r.status_code}: {r.text}"
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers
    body = r.json()
    assert set(body) == {"error"}, body
    for needle in needles:
        assert needle in body["error"], f"{needle!r} not in {body['error']!r}"
    return body["error"]


def bearer(token: str = TOKEN) -> dict:
    return {"Authorization": f"Bearer {token}"}


def infer_url(model: str = "echo") -> str:
    return f"/v2/models/{model}/infer"


def run_cli(*args: str, url: str, token: str | None):
    env = {k: v for k, v in os.environ.items() if k not in ("CORRAL_URL", "CORRAL_TOKEN")}
    env["CORRAL_URL"] = url
    if token is not None:
        env["CORRAL_TOKEN"] = token
    return subprocess.run([BIN, *args], capture_output=True, env=env, stdin=subprocess.DEVNULL, timeout=60)


def serve_fails(corral, *args: str, env: dict | None = None) -> tuple[int, str]:
    """Runs `corral serve` expecting it to refuse to start; returns its status and stderr."""
    full_env = {k: v for k, v in os.environ.items() if k != "CORRAL_TOKEN"}
    full_env.update(env or {})
    p = subprocess.run([BIN, "serve", "--models", str(corral.repo), "--port", "0", *args], capture_output=True,
                       env=full_env, stdin=subprocess.DEVNULL, timeout=20)
    assert p.returncode != 0, f"the daemon started: {p.stderr!r}"
    return p.returncode, p.stderr.decode()


def raw_request(port: int, text: str) -> str:
    """Sends one request as written and returns the answer's status line and headers."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(text.encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return data.decode(errors="replace")


def port_of(d) -> int:
    return int(d.base.rsplit(":", 1)[1])


# ---- without a token ----

def test_no_token_everything_open(corral):
    corral.add("echo", "echo", manifest=ECHO_ONE)
    d = corral.start()
    assert "no token" not in d.log()  # the default listener is loopback: no warning
    assert d.get("/v2").status_code == 200
    assert d.get("/v1/models").status_code == 200
    assert d.post("/v2/repository/models/echo/load", {}).status_code == 200
    r = d.post(infer_url(), {"inputs": INPUTS})
    assert r.status_code == 200 and r.json()["outputs"][0]["data"] == [1, 2], r.text
    assert d.post("/v1/models/echo/scale", {"instances": 1}).status_code == 200
    assert d.get("/v2/models/echo/config").json()["name"] == "echo"
    assert d.get("/v1/models/echo/logs").status_code == 200
    # a client's Authorization header is ignored when the daemon has no token
    assert d.get("/v1/models", headers=bearer("anything")).status_code == 200


# ---- the token ----

def check_token_guard(d, token: str):
    for path in ("/v2", "/v1/models", "/v2/models/echo", "/nowhere"):
        r = d.get(path)
        assert_error(r, 401, "Authorization: Bearer")
        assert r.headers["WWW-Authenticate"].startswith("Bearer"), r.headers
        r = d.get(path, headers=bearer("wrong-token"))
        assert_error(r, 401, "token")
        assert r.headers["WWW-Authenticate"].startswith("Bearer"), r.headers
    assert_error(d.get("/v2", headers=bearer(token[:-1])), 401)        # a prefix
    assert_error(d.get("/v2", headers=bearer(token + "x")), 401)       # longer
    assert_error(d.get("/v2", headers={"Authorization": token}), 401, "Bearer")
    assert_error(d.get("/v2", headers={"Authorization": f"Basic {token}"}), 401, "Bearer")
    assert_error(d.post(infer_url(), {"inputs": INPUTS}), 401)
    assert_error(d.post("/v2/repository/models/echo/load", {}), 401)
    assert d.get("/v2", headers=bearer(token)).status_code == 200
    assert d.get("/v2", headers={"Authorization": f"bearer  {token}"}).status_code == 200
    assert d.get("/nowhere", headers=bearer(token)).status_code == 404
    for path in ("/v2/health/live", "/v2/health/ready"):
        assert d.get(path).status_code == 200, path
    r = d.post(infer_url(), {"inputs": INPUTS}, headers=bearer(token))
    assert r.status_code == 200 and r.json()["outputs"][0]["data"] == [1, 2], r.text
    assert token not in d.log()


def test_token_from_env(corral):
    corral.add("echo", "echo", manifest=ECHO_ONE)
    d = corral.start(env={"CORRAL_TOKEN": TOKEN})
    check_token_guard(d, TOKEN)


def test_token_from_file_wins_over_env(corral):
    corral.add("echo", "echo", manifest=ECHO_ONE)
    path = corral.tmp / "token"
    path.write_text("  file-token-77  \nsecond line is ignored\n")
    d = corral.start("--auth-token-file", str(path), env={"CORRAL_TOKEN": "env-token"})
    check_token_guard(d, "file-token-77")
    assert_error(d.get("/v2", headers=bearer("env-token")), 401)


def test_token_file_errors(corral):
    empty = corral.tmp / "empty"
    empty.write_text("\n")
    rc, err = serve_fails(corral, "--auth-token-file", str(empty))
    assert err.startswith("corral: --auth-token-file: ") and "is empty" in err and str(empty) in err, err
    missing = corral.tmp / "missing"
    rc, err = serve_fails(corral, "--auth-token-file", str(missing))
    assert "cannot open" in err and str(missing) in err and "No such file" in err, err
    rc, err = serve_fails(corral, "--auth-token-file", str(corral.tmp))
    assert "cannot read" in err, err
    rc, err = serve_fails(corral, "--auth", "management")
    assert rc == 2 and "needs a token" in err, err
    rc, err = serve_fails(corral, "--auth", "some", env={"CORRAL_TOKEN": TOKEN})
    assert rc == 2 and "all or management" in err, err


def test_management_mode(corral):
    corral.add("echo", "echo", manifest=ECHO_ONE)
    d = corral.start("--auth", "management", env={"CORRAL_TOKEN": TOKEN})
    # open: server and model metadata, inference (a lazy load included), generate, health
    assert d.get("/v2").status_code == 200
    assert d.get("/v2/models/echo").status_code == 200
    r = d.post(infer_url(), {"inputs": INPUTS})
    assert r.status_code == 200 and r.json()["outputs"][0]["data"] == [1, 2], r.text
    assert d.get("/v2/models/echo/ready").status_code == 200
    r = d.post("/v1/models/echo/generate", {"text": "hi"})
    assert r.status_code == 200 and r.json() == {"echo": {"text": "hi"}}, r.text
    assert d.get("/v2/health/ready").status_code == 200
    # guarded: the repository, scale, logs and the /v1 views (pids, paths), and the rest of /v1
    for method, path in (("POST", "/v2/repository/index"), ("POST", "/v2/repository/models/echo/load"),
                         ("POST", "/v2/repository/models/echo/unload"), ("POST", "/v1/models/echo/scale"),
                         ("GET", "/v1/models/echo/logs"), ("GET", "/v1/models"), ("GET", "/v1/models/echo"),
                         ("GET", "/v1/events"), ("GET", "/v2/models/echo/config"),
                         ("GET", "/v2/models/echo/versions/1/config")):
        r = d.http.request(method, d.url(path), json={} if method == "POST" else None, timeout=30)
        assert_error(r, 401, "Bearer")
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
    d.http.headers.update(bearer())
    assert d.post("/v2/repository/models/echo/load", {}).status_code == 200
    assert d.model("echo")["state"] == "ready"
    assert d.post("/v1/models/echo/scale", {"instances": 1}).status_code == 200


def test_cli_sends_the_token(corral):
    corral.add("echo", "echo", manifest=ECHO_ONE)
    d = corral.start(env={"CORRAL_TOKEN": TOKEN})
    p = run_cli("ls", url=d.base, token=TOKEN)
    assert p.returncode == 0 and b"echo" in p.stdout, p
    for verb in ("load", "unload"):  # bodiless POSTs: no Content-Type, not curl's form-encoded default
        p = run_cli(verb, "echo", url=d.base, token=TOKEN)
        assert p.returncode == 0, p
    p = run_cli("infer", "echo", '{"inputs":[{"name":"INPUT0","datatype":"INT32","shape":[1],"data":[7]}]}',
                url=d.base, token=f" {TOKEN}\n")  # surrounding whitespace goes, as the daemon strips it
    assert p.returncode == 0 and b"OUTPUT0" in p.stdout, p
    for token in (None, "", "wrong"):
        p = run_cli("ls", url=d.base, token=token)
        err = p.stderr.decode()
        assert p.returncode != 0 and p.stdout == b"", p
        assert err.startswith("corral: HTTP 401: ") and err.count("\n") == 1, err
    p = run_cli("ls", url=d.base, token="bad\x01token")
    assert p.returncode != 0 and "control character" in p.stderr.decode(), p
    for p in (run_cli("ls", url=d.base, token="wrong"), run_cli("ls", url=d.base, token=TOKEN)):
        assert TOKEN.encode() not in p.stdout + p.stderr


# ---- Origin ----

def test_cross_origin_refused_without_token(corral):
    corral.add("echo", "echo", manifest=ECHO_ONE)
    d = corral.start("--allow-origin", "http://localhost:3000/")
    own = f"http://127.0.0.1:{port_of(d)}"
    evil = {"Origin": "http://evil.example"}
    assert_error(d.post(infer_url(), {"inputs": INPUTS}, headers=evil), 403, "http://evil.example", "--allow-origin")
    assert_error(d.post("/v2/repository/models/echo/load", {}, headers=evil), 403, "http://evil.example")
    assert_error(d.get("/v1/models", headers=evil), 403)
    assert_error(d.get("/v2", headers={"Origin": "null"}), 403, "null")
    assert_error(d.get("/v2", headers={"Origin": f"https://127.0.0.1:{port_of(d)}"}), 403)  # another scheme
    assert_error(d.get("/v2", headers={"Origin": "http://localhost:3001"}), 403)
    assert_error(d.get("/v2", headers={"Origin": "http://evil.example\u00e9\"x"}), 403, "evil.example?\"x")
    assert d.model("echo")["state"] == "unloaded"  # nothing loaded behind the refusals
    assert d.get("/v2/health/live", headers=evil).status_code == 200
    # the daemon's own origin, and --allow-origin ones (case aside)
    r = d.post(infer_url(), {"inputs": INPUTS}, headers={"Origin": own})
    assert r.status_code == 200, r.text
    assert d.get("/v2", headers={"Origin": "http://LOCALHOST:3000"}).status_code == 200
    assert d.get("/v2", headers={"Origin": f"http://localhost:{port_of(d)}",
                                 "Host": f"localhost:{port_of(d)}"}).status_code == 200
    assert_error(d.get("/v2", headers={"Origin": f"http://localhost:{port_of(d)}"}), 403)  # Host is 127.0.0.1


def test_origin_checked_before_the_token(corral):
    d = corral.start(env={"CORRAL_TOKEN": TOKEN})
    assert_error(d.get("/v2", headers={"Origin": "http://evil.example", **bearer()}), 403, "evil.example")
    assert d.get("/v2", headers={"Origin": d.base, **bearer()}).status_code == 200


# ---- Host (DNS rebinding) ----

def test_host_must_name_the_daemon(corral):
    d = corral.start()
    port = port_of(d)
    for host in ("evil.example", f"evil.example:{port}", f"localhost.evil.example:{port}", "10.1.2.3",
                 f"127.0.0.1.nip.io:{port}"):
        assert_error(d.get("/v2", headers={"Host": host}), 403, host.split(":")[0], "--allow-host")
    for host in (f"localhost:{port}", "localhost", f"LOCALHOST:{port}", f"app.localhost:{port}", "127.0.0.1",
                 f"127.0.0.2:{port}", f"[::1]:{port}"):
        assert d.get("/v2", headers={"Host": host}).status_code == 200, host
    assert d.get("/v2/health/live", headers={"Host": "evil.example"}).status_code == 200
    # HTTP/1.0 without a Host is allowed; HTTP/1.1 with a foreign one is not
    assert raw_request(port, "GET /v2 HTTP/1.0\r\n\r\n").startswith("HTTP/1.1 200")
    assert raw_request(port, "GET /v2 HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n") \
        .startswith("HTTP/1.1 403")


def test_allow_host(corral):
    d = corral.start("--allow-host", "corral.test", "--allow-host", "gpu-box:9999")
    port = port_of(d)
    assert d.get("/v2", headers={"Host": f"corral.test:{port}"}).status_code == 200
    assert d.get("/v2", headers={"Host": "gpu-box"}).status_code == 200
    assert_error(d.get("/v2", headers={"Host": "x.corral.test"}), 403)
    assert_error(d.get("/v2", headers={"Host": "evil.example"}), 403)
    # the daemon's origin follows the Host it was reached by
    r = d.get("/v2", headers={"Host": f"corral.test:{port}", "Origin": f"http://corral.test:{port}"})
    assert r.status_code == 200, r.text
    d.stop()
    d = corral.start("--allow-host", "*")
    assert d.get("/v2", headers={"Host": "evil.example"}).status_code == 200


# ---- content types ----

def test_browser_content_types_refused(corral):
    corral.add("echo", "echo", manifest=ECHO_ONE)
    d = corral.start()
    assert d.post("/v2/repository/models/echo/load", {}).status_code == 200
    body = '{"inputs":[{"name":"INPUT0","datatype":"INT32","shape":[1],"data":[1]}]}'
    for ct in ("text/plain", "text/plain;charset=UTF-8", "TEXT/Plain ; charset=utf-8",
               "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        msg = assert_error(d.post(infer_url(), data=body, headers={"Content-Type": ct}), 415, "application/json")
        assert ct.split(";")[0].strip() in msg, msg
    # a form-encoded scale to 3 changes nothing, whichever way it is encoded
    assert_error(d.post("/v1/models/echo/scale", data={"instances": 3}), 415, "application/x-www-form-urlencoded")
    assert_error(d.post("/v1/models/echo/scale", data='{"instances": 3}', headers={"Content-Type": "text/plain"}),
                 415, "text/plain")
    assert_error(d.post("/v1/models/echo/scale", files={"instances": ("x", b"3")}), 415, "multipart/form-data")
    for path in ("/v2/repository/models/echo/unload", "/v2/repository/index", "/v2/repository/models/echo/load"):
        assert_error(d.post(path, data="{}", headers={"Content-Type": "text/plain"}), 415, "application/json")
    time.sleep(0.3)
    m = d.model("echo")
    assert m["state"] == "ready" and len(m["instances"]) == 1, m
    # accepted: no type, JSON with parameters, octet-stream (the binary extension)
    assert d.post(infer_url(), data=body).status_code == 200
    assert d.post(infer_url(), data=body, headers={"Content-Type": "application/json; charset=utf-8"}) \
        .status_code == 200
    r = d.post(infer_url(), data=body, headers={"Content-Type": "application/octet-stream",
                                                "Inference-Header-Content-Length": str(len(body))})
    assert r.status_code == 200, r.text
    # generate takes the model's own types, text/plain included, but no forms
    r = d.post("/v1/models/echo/generate", data=b"words", headers={"Content-Type": "text/plain"})
    assert r.status_code == 200 and r.content == b"words", r.text
    assert_error(d.post("/v1/models/echo/generate", data={"text": "hi"}), 415, "application/x-www-form-urlencoded",
                 "generate")
    assert_error(d.post("/v1/models/echo/generate", files={"f": ("x", b"y")}), 415, "multipart/form-data")
    assert d.post("/v1/models/echo/scale", {"instances": 2}).status_code == 200


# ---- the listen address ----

def start_raw(corral, *args: str, env: dict | None = None):
    log_path = corral.tmp / f"raw-{time.monotonic_ns()}.log"
    full_env = {k: v for k, v in os.environ.items() if k != "CORRAL_TOKEN"}
    full_env.update(env or {})
    log = open(log_path, "wb")
    proc = subprocess.Popen([BIN, "serve", "--models", str(corral.repo), "--port", "0", "--stop-grace", "1s", *args],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=full_env)
    return proc, log, log_path


def stop_raw(proc, log):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    log.close()


@pytest.mark.parametrize("token", [None, TOKEN])
def test_non_loopback_listener_warns_without_token(corral, token):
    """Binds the wildcard address on a free port; no traffic goes to any non-loopback address."""
    proc, log, log_path = start_raw(corral, "--host", "0.0.0.0", env={"CORRAL_TOKEN": token} if token else None)
    try:
        text = wait_for(lambda: (lambda t: t if re.search(r"listening on http://0\.0\.0\.0:\d+", t) else None)(
            log_path.read_text(errors="replace")) if proc.poll() is None else pytest.fail(
            log_path.read_text(errors="replace")), timeout=15, what="the daemon to listen")
        time.sleep(0.1)
        text = log_path.read_text(errors="replace")
        warned = "0.0.0.0 is not a loopback address and no token is set" in text
        assert warned == (token is None), text
        if token:
            assert token not in text
    finally:
        stop_raw(proc, log)
