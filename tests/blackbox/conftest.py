"""Black-box test harness: a real corral daemon on an ephemeral port.

Every test gets `corral`, a factory that builds a model repository in the
test's tmp_path from fixture models (tests/models/*, examples/models/*) or
inline manifests, starts `corral serve --port 0` on it, and parses the port
from the daemon's log. Teardown stops every daemon it started (SIGTERM, then
SIGKILL) and fails the test if any process is left whose working directory
is inside the test's repository: every worker runs in its model directory,
so this finds orphans without knowing their pids.
"""
from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from typing import Iterable

import pytest
import requests

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = os.environ.get("CORRAL_BIN", str(ROOT / "build" / "corral"))
FIXTURES = ROOT / "tests" / "models"
# Every daemon the tests start (here or by hand) listens for gRPC on a port of its own choosing: the default
# 8767 would be shared by every test and by a `make serve` running beside them. Daemon.grpc_port reads it.
os.environ.setdefault("GRPC_PORT", "0")
# Nor may any of them keep state (docs/repository.md) beside its repository, or in a file named in the caller's
# CORRAL_STATE: a test that wants state names its own file with --state, which wins over this.
os.environ["CORRAL_STATE"] = "off"
EXAMPLES = ROOT / "examples" / "models"


def processes_under(path: pathlib.Path) -> list[int]:
    """Pids of live processes whose working directory is inside path."""
    found = []
    root = str(path.resolve())
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
            with open(f"/proc/{entry}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and (cwd == root or cwd.startswith(root + "/")):
            found.append(int(entry))
    return found


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"):
    """Polls predicate until it returns a truthy value; fails after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Daemon:
    """One `corral serve` process and a requests session to it."""

    def __init__(self, repo: pathlib.Path, external: pathlib.Path | None, args: Iterable[str], env: dict | None):
        self.repo = repo
        self.log_path = repo.parent / f"corral-{int(time.monotonic() * 1000)}.log"
        cmd = [BIN, "serve", "--models", str(repo), "--port", "0", "--stop-grace", "1s", *args]
        if external is not None:
            cmd += ["--external-models", str(external)]
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.log_file = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self.log_file, stderr=subprocess.STDOUT, env=full_env,
                                     stdin=subprocess.DEVNULL)
        try:
            port = wait_for(self._port, timeout=15, what="the daemon to listen")
        except BaseException:
            # Not yet known to the fixture, which would not stop it: a daemon that never listened must not linger.
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(timeout=10)
            self.log_file.close()
            raise
        self.base = f"http://127.0.0.1:{port}"
        self.http = requests.Session()

    def _port(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.log()}")
        m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", self.log())
        return int(m.group(1)) if m else None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def port(self) -> int:
        return int(self.base.rsplit(":", 1)[1])

    @property
    def grpc_port(self) -> int:
        """The gRPC listener's port, from the log (the daemon logs it right after the HTTP one)."""
        m = wait_for(lambda: re.search(r"listening on grpc://127\.0\.0\.1:(\d+)", self.log()), timeout=5,
                     what="the daemon's gRPC listener")
        return int(m.group(1))

    def url(self, path: str) -> str:
        return self.base + path

    def get(self, path: str, **kw) -> requests.Response:
        kw.setdefault("timeout", 30)
        return self.http.get(self.url(path), **kw)

    def post(self, path: str, json_body=None, **kw) -> requests.Response:
        kw.setdefault("timeout", 60)
        if json_body is not None:
            kw["json"] = json_body
        return self.http.post(self.url(path), **kw)

    def infer(self, model: str, inputs: list, **extra) -> requests.Response:
        body = {"inputs": inputs, **extra}
        return self.post(f"/v2/models/{model}/infer", body)

    def model(self, name: str) -> dict:
        r = self.get(f"/v1/models/{name}")
        assert r.status_code == 200, r.text
        return r.json()

    def worker_pids(self, name: str) -> list[int]:
        return [i["pid"] for i in self.model(name)["instances"] if i["pid"]]

    def wait_state(self, name: str, state: str, timeout: float = 20.0) -> dict:
        return wait_for(lambda: (lambda m: m if m["state"] == state else None)(self.model(name)),
                        timeout=timeout, what=f"model {name} to be {state}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Signals the daemon and waits for its exit; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
                raise AssertionError(f"daemon did not exit within {timeout}s of signal {sig}")
        self.log_file.close()
        self.http.close()
        return self.proc.returncode


class Corral:
    """The `corral` fixture: builds repositories and starts daemons."""

    def __init__(self, tmp_path: pathlib.Path):
        self.tmp = tmp_path
        self.daemons: list[Daemon] = []
        self.repo = tmp_path / "models"
        self.repo.mkdir()
        self.external = tmp_path / "external_models"

    def add(self, name: str, source: str | None = None, manifest: str | None = None,
            files: dict[str, str] | None = None, external: bool = False) -> pathlib.Path:
        """Adds a model directory: a copy of tests/models/<source> or examples/models/<source>,
        with model.yaml replaced by manifest and extra files written, if given."""
        base = self.external if external else self.repo
        base.mkdir(exist_ok=True)
        dest = base / name
        if source:
            src = FIXTURES / source
            if not src.exists():
                src = EXAMPLES / source
            shutil.copytree(src, dest, symlinks=True)
        else:
            dest.mkdir()
        if manifest is not None:
            (dest / "model.yaml").write_text(manifest)
        for fname, text in (files or {}).items():
            (dest / fname).write_text(text)
        return dest

    def start(self, *args: str, external: bool = False, env: dict | None = None) -> Daemon:
        d = Daemon(self.repo, self.external if external else None, args, env)
        self.daemons.append(d)
        return d

    def close(self):
        for d in self.daemons:
            try:
                d.stop(signal.SIGTERM, timeout=20)
            except AssertionError:
                pass
        # Workers get SIGTERM/SIGKILL from the stopping daemon; give the kernel a moment.
        left = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            left = processes_under(self.tmp)
            if not left:
                break
            time.sleep(0.05)
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        assert not left, f"processes outlived the daemon: {left}"
        # The suite runs against the sanitizer build: any report fails the test.
        for d in self.daemons:
            text = d.log()
            for marker in ("ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer"):
                assert marker not in text, \
                    f"sanitizer report in the daemon log:\n{text[max(0, text.index(marker) - 200):][:4000]}"


@pytest.fixture
def corral(tmp_path):
    c = Corral(tmp_path)
    yield c
    c.close()


def post_bytes(path: str, body, headers: bytes = b"", close: bool = False) -> bytes:
    """A JSON POST as raw HTTP/1.1 bytes, with the Host the access guard accepts (127.0.0.1)."""
    payload = json.dumps(body).encode()
    return (b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n%sContent-Length: %d\r\n%s\r\n%s"
            % (path.encode(), b"Connection: close\r\n" if close else b"", len(payload), headers, payload))


def raw_post(d: "Daemon", path: str, body, headers: bytes = b"", close: bool = False, rcvbuf: int | None = None,
             timeout: float = 20) -> socket.socket:
    """Sends a JSON POST over a raw HTTP/1.1 socket and returns the socket, for tests that read slowly or leave."""
    s = socket.socket()
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(timeout)
    s.connect(("127.0.0.1", d.port))
    s.sendall(post_bytes(path, body, headers, close))
    return s


def tensor(name: str, datatype: str, shape: list[int], data) -> dict:
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}


X = [tensor("X", "INT32", [1], [0])]
"""The smallest input: for models that ignore their inputs (tests/models/steerable)."""


def infer(d: Daemon, model: str, timeout: float = 30, **params) -> requests.Response:
    """One small inference; keyword arguments become request parameters."""
    body: dict = {"inputs": X}
    if params:
        body["parameters"] = params
    return d.post(f"/v2/models/{model}/infer", body, timeout=timeout)


def out(resp: requests.Response, name: str):
    """The first element of output `name` of a 200 v2 answer."""
    assert resp.status_code == 200, resp.text
    for o in resp.json()["outputs"]:
        if o["name"] == name:
            return o["data"][0]
    raise AssertionError(f"no output {name} in {resp.text}")


def alive(pid: int) -> bool:
    """True while pid names a process that is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def load(d: Daemon, model: str, body=None, timeout: float = 60) -> requests.Response:
    return d.post(f"/v2/repository/models/{model}/load", body if body is not None else {}, timeout=timeout)


def unload(d: Daemon, model: str, timeout: float = 60) -> requests.Response:
    return d.post(f"/v2/repository/models/{model}/unload", {}, timeout=timeout)


def ctl_manifest(parameters: dict | None = None, **keys) -> str:
    """A tests/models/steerable manifest: keyword arguments become top-level keys."""
    lines = ["runtime: python", "entrypoint: worker.py"] + [f"{k}: {v}" for k, v in keys.items()]
    if parameters:
        lines.append("parameters:")
        lines += [f"  {k}: {v}" for k, v in parameters.items()]
    return "\n".join(lines) + "\n"


def pytest_configure(config):
    # With CORRAL_RECORD_DIR set (`make test`), every answer a test gets is recorded for tests/openapi, which
    # checks them against docs/openapi.yaml.
    sys.path.insert(0, str(ROOT / "tests" / "openapi"))
    import openapi_check
    openapi_check.install_recorder()
    if not os.path.exists(BIN):
        raise pytest.UsageError(f"corral binary not found at {BIN}; run `make build` or set CORRAL_BIN")


__all__ = ["Daemon", "Corral", "wait_for", "processes_under", "tensor", "json", "X", "infer", "out", "alive", "load",
           "unload", "ctl_manifest", "post_bytes", "raw_post"]
