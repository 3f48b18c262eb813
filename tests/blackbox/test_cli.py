"""The corral command line as a client of a running daemon (CORRAL_URL)."""
from __future__ import annotations

import fcntl
import http.server
import io
import json
import os
import re
import select
import signal
import socket
import struct
import subprocess
import termios
import threading
import time
import wave

import pytest
import requests

from conftest import BIN, EXAMPLES, tensor, wait_for


def cli(*args: str, url: str | None, stdin: bytes | None = None, cwd=None, timeout: float = 30):
    env = dict(os.environ)
    env.pop("CORRAL_URL", None)
    if url is not None:
        env["CORRAL_URL"] = url
    return subprocess.run([BIN, *args], input=stdin if stdin is not None else b"", capture_output=True, env=env,
                          cwd=cwd, timeout=timeout)


def ok(p: subprocess.CompletedProcess) -> str:
    assert p.returncode == 0, f"exit {p.returncode}\nstdout: {p.stdout!r}\nstderr: {p.stderr!r}"
    return p.stdout.decode()


def failed(p: subprocess.CompletedProcess, *needles: str) -> str:
    """A failure: non-zero exit, nothing on stdout, one line 'corral: ...' on stderr holding needles."""
    assert p.returncode != 0, f"expected failure\nstdout: {p.stdout!r}\nstderr: {p.stderr!r}"
    assert p.stdout == b"", p.stdout
    err = p.stderr.decode()
    assert err.endswith("\n") and err.count("\n") == 1, f"not one line: {err!r}"
    assert err.startswith("corral: "), err
    for needle in needles:
        assert needle in err, f"{needle!r} not in {err!r}"
    return err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_help_and_version(corral):
    d = corral.start()
    for flag in ("--help", "-h"):
        out = ok(cli(flag, url=None))
        assert "usage" in out
        for verb in ("serve", "ls", "ps", "load", "unload", "scale", "infer", "generate", "logs", "events", "top"):
            assert re.search(rf"\b{verb}\b", out), verb
        for option in ("--stream", "--voice V", "--rate N", "--text TEXT", "-o FILE", "--since ID", "--interval S", "--once"):
            assert option in out, option
    out = ok(cli("--version", url=None))
    version = d.get("/v2").json()["version"]
    assert out == f"corral {version}\n", out


def test_ls_and_ls_json(corral):
    corral.add("echo", "echo")
    corral.add("echo-c", "echo-c")
    d = corral.start()
    out = ok(cli("ls", url=d.base))
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["NAME", "STATE"], out
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(rows) == {"echo", "echo-c"}, out
    assert rows["echo"][1] == "unloaded" and rows["echo-c"][1] == "unloaded"

    assert d.post("/v2/repository/models/echo/load").status_code == 200
    listed = json.loads(ok(cli("ls", "--json", url=d.base)))
    by_name = {m["name"]: m for m in listed["models"]}
    assert by_name["echo"]["state"] == "ready" and len(by_name["echo"]["instances"]) == 2
    assert by_name["echo-c"]["state"] == "unloaded"
    rows = {line.split()[0]: line.split() for line in ok(cli("ls", url=d.base)).splitlines()[1:]}
    assert rows["echo"][1:3] == ["ready", "2"], rows


def test_load_with_a_config(corral):
    corral.add("ctl", "steerable", manifest="runtime: python\nentrypoint: worker.py\nparameters: {tag: file}\n")
    d = corral.start()
    ok(cli("load", "ctl", "--config", '{"parameters": {"tag": "cli"}, "instances": 2}', url=d.base))
    m = d.model("ctl")
    assert len(m["instances"]) == 2 and m["config_override"] == {"parameters": {"tag": "cli"}, "instances": 2}
    failed(cli("load", "ctl", "--config", '{"instance_group": []}', url=d.base), "key 'instance_group': unknown key")
    failed(cli("load", "ctl", "--config", "not json", url=d.base), "parameters.config must be a JSON object")
    ok(cli("load", "ctl", "--instances", "1", url=d.base))  # no config: back to model.yaml
    assert "config_override" not in d.model("ctl") and len(d.model("ctl")["instances"]) == 1


def test_load_ps_scale_unload(corral):
    corral.add("echo", "echo", manifest="runtime: python\nentrypoint: worker.py\ninstances: 1\n")
    d = corral.start()
    out = ok(cli("load", "echo", "--instances", "2", url=d.base))
    assert "echo" in out
    m = d.model("echo")
    assert m["state"] == "ready" and len(m["instances"]) == 2, m

    out = ok(cli("ps", url=d.base))
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["MODEL", "ID", "PID"], out
    rows = [line.split() for line in lines[1:]]
    assert sorted(int(r[2]) for r in rows if r[0] == "echo") == sorted(d.worker_pids("echo")), out
    assert all(r[3] == "ready" for r in rows), out
    ps_json = json.loads(ok(cli("ps", "--json", url=d.base)))
    assert {i["pid"] for m in ps_json["models"] for i in m["instances"]} == set(d.worker_pids("echo"))

    ok(cli("scale", "echo", "3", url=d.base))
    assert d.model("echo")["target_instances"] == 3
    d.wait_state("echo", "ready")
    wait_for(lambda: len(d.worker_pids("echo")) == 3, timeout=20, what="3 instances")
    ok(cli("scale", "echo", "1", url=d.base))
    wait_for(lambda: len(d.model("echo")["instances"]) == 1, timeout=20, what="1 instance")

    out = ok(cli("unload", "echo", url=d.base))
    assert "echo" in out
    assert d.model("echo")["state"] == "unloaded"


def test_ps_shows_no_pid_for_a_stopped_instance(corral):
    corral.add("probe", "api_probe", manifest="runtime: python\nentrypoint: worker.py\n"
                                            "restart: {backoff_min: 10s, backoff_max: 10s}\n")
    d = corral.start()
    r = d.post("/v2/models/probe/infer", {"inputs": [{"name": "X", "datatype": "INT32", "shape": [1], "data": [0]}],
                                          "parameters": {"mode": "exit"}})
    assert r.status_code == 502, r.text
    # waiting out its restart delay, the instance has no process: '-' in the table, null in JSON, never 0
    wait_for(lambda: any(i["state"] == "stopped" for i in d.model("probe")["instances"]), timeout=10,
             what="the instance to wait for its restart")
    rows = [line.split() for line in ok(cli("ps", url=d.base)).splitlines()[1:]]
    assert rows and all(r[2] == "-" and r[3] == "stopped" for r in rows), rows
    ps_json = json.loads(ok(cli("ps", "--json", url=d.base)))
    assert all(i["pid"] is None for m in ps_json["models"] for i in m["instances"]), ps_json


def test_infer_literal_file_and_stdin(corral, tmp_path):
    corral.add("echo", "echo")
    d = corral.start()
    req = {"id": "cli-1", "inputs": [tensor("INPUT0", "FP32", [2], [1.5, -2.0]), tensor("INPUT1", "BYTES", [1], ["ü"])]}
    expect = [{"name": "OUTPUT0", "datatype": "FP32", "shape": [2], "data": [1.5, -2.0]},
              {"name": "OUTPUT1", "datatype": "BYTES", "shape": [1], "data": ["ü"]}]
    out = json.loads(ok(cli("infer", "echo", json.dumps(req), url=d.base)))
    assert out["id"] == "cli-1" and out["outputs"] == expect, out
    f = tmp_path / "req.json"
    f.write_text(json.dumps(req))
    out = json.loads(ok(cli("infer", "echo", f"@{f}", url=d.base)))
    assert out["outputs"] == expect, out
    out = json.loads(ok(cli("infer", "echo", "-", url=d.base, stdin=json.dumps(req).encode())))
    assert out["outputs"] == expect, out


def test_generate_json_body(corral, tmp_path):
    corral.add("echo", "echo")
    d = corral.start()
    out = ok(cli("generate", "echo", '{"text": "hi", "n": 2}', url=d.base))
    assert json.loads(out) == {"echo": {"text": "hi", "n": 2}}
    out = ok(cli("generate", "echo", "--text", "héllo", url=d.base))
    assert json.loads(out) == {"echo": {"text": "héllo"}}
    target = tmp_path / "out.json"
    p = cli("generate", "echo", "--text", "to a file", "-o", str(target), url=d.base)
    assert ok(p) == ""
    assert json.loads(target.read_text()) == {"echo": {"text": "to a file"}}


def test_generate_tts_to_wav(corral, tmp_path):
    if not (EXAMPLES / "tts-espeak" / "model.yaml").exists():
        pytest.fail("examples/models/tts-espeak has no model.yaml: the example is not written yet")
    corral.add("tts-espeak", "tts-espeak")
    d = corral.start()
    durations = []
    for i, args in enumerate([("--text", "hi"), ('{"text": "hello there, this is a longer one", "voice": "en"}',)]):
        target = tmp_path / f"out{i}.wav"
        ok(cli("generate", "tts-espeak", *args, "-o", str(target), url=d.base))
        with wave.open(io.BytesIO(target.read_bytes())) as w:
            assert w.getnchannels() == 1 and w.getsampwidth() == 2 and w.getnframes() > 0
            durations.append(w.getnframes() / w.getframerate())
    assert durations[0] < durations[1], durations
    failed(cli("generate", "tts-espeak", "--text", "", url=d.base), "400")


def test_logs(corral):
    corral.add("probe", "api_probe")
    d = corral.start()
    r = d.infer("probe", [tensor("INPUT0", "INT8", [1], [1])], parameters={"mode": "print", "text": "cli-marker"})
    assert r.status_code == 200, r.text
    wait_for(lambda: "stderr says cli-marker" in d.get("/v1/models/probe/logs").text, timeout=5, what="logs")
    out = ok(cli("logs", "probe", url=d.base))
    assert "stdout says cli-marker" in out and "stderr says cli-marker" in out, out
    assert "api_probe: instance 0 loaded" in out


def test_failures_are_one_line(corral, tmp_path):
    corral.add("echo", "echo")
    d = corral.start()
    body = json.dumps({"inputs": [tensor("INPUT0", "INT8", [1], [1])]})
    failed(cli("infer", "nope", body, url=d.base), "nope", "404")
    failed(cli("load", "nope", url=d.base), "nope")
    failed(cli("unload", "nope", url=d.base), "nope")
    failed(cli("logs", "nope", url=d.base), "nope")
    failed(cli("scale", "echo", "2", url=d.base), "echo")  # not loaded: 409
    failed(cli("infer", "echo", "{not json", url=d.base), "400")
    failed(cli("infer", "echo", f"@{tmp_path / 'missing.json'}", url=d.base), "missing.json")
    failed(cli("generate", "nope", "--text", "x", url=d.base), "nope")
    failed(cli("frobnicate", url=d.base), "frobnicate")
    failed(cli("load", url=d.base), "usage")
    failed(cli("load", "echo", "--instances", "zero", url=d.base))
    failed(cli("infer", "echo", url=d.base), "usage")
    assert d.model("echo")["state"] == "unloaded"  # none of those loaded it
    # a bad instance count is refused even when the model could be scaled
    assert d.post("/v2/repository/models/echo/load").status_code == 200
    for bad in ("two", "-1", "0x", ""):
        failed(cli("scale", "echo", bad, url=d.base))
    assert len(d.model("echo")["instances"]) == 2


@pytest.mark.parametrize("verb", [("ls",), ("ps",), ("load", "echo"), ("infer", "echo", "{}"), ("logs", "echo")])
def test_unreachable_daemon(verb):
    url = f"http://127.0.0.1:{free_port()}"
    failed(cli(*verb, url=url, timeout=15), url.split("//")[1].split(":")[0])


def test_logs_follow(corral):
    corral.add("probe", "api_probe")
    d = corral.start()
    assert d.post("/v2/repository/models/probe/load").status_code == 200
    env = dict(os.environ, CORRAL_URL=d.base)
    follower = subprocess.Popen([BIN, "logs", "probe", "-f"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        seen = b""
        os.set_blocking(follower.stdout.fileno(), False)

        def read_until(marker: bytes):
            nonlocal seen
            def got():
                nonlocal seen
                chunk = follower.stdout.read()
                if chunk:
                    seen += chunk
                assert follower.poll() is None, follower.stderr.read()
                return marker in seen
            wait_for(got, timeout=10, what=f"{marker!r} from corral logs -f")

        read_until(b"api_probe: instance 0 loaded")
        for k in range(2):
            r = d.infer("probe", [tensor("INPUT0", "INT8", [1], [1])], parameters={"mode": "print", "text": f"tail-{k}"})
            assert r.status_code == 200, r.text
            read_until(f"stderr says tail-{k}".encode())
        # every line once: following does not repeat what it already printed
        assert seen.count(b"api_probe: instance 0 loaded") == 1, seen
        assert seen.count(b"stdout says tail-0") == 1, seen
    finally:
        follower.terminate()
        follower.wait(timeout=10)
        follower.stdout.close()
        follower.stderr.close()


# ---- generate --voice, --rate ----

def one_line_error(err: bytes, *needles: str) -> str:
    text = err.decode()
    assert text.endswith("\n") and text.count("\n") == 1 and text.startswith("corral: "), f"not one line: {text!r}"
    for needle in needles:
        assert needle in text, f"{needle!r} not in {text!r}"
    return text


def test_generate_voice_and_rate_set_keys_of_the_body(corral, tmp_path):
    corral.add("echo", "echo")
    d = corral.start()
    out = ok(cli("generate", "echo", "--text", "hi", "--voice", "fr", "--rate", "120", url=d.base))
    assert json.loads(out) == {"echo": {"text": "hi", "voice": "fr", "rate": 120}}
    # merged into a JSON body argument, the flags winning; with --stream, "stream": true as well
    out = ok(cli("generate", "echo", '{"text": "a", "voice": "en", "n": 1}', "--voice", "de", "--rate", "90",
                 url=d.base))
    assert json.loads(out) == {"echo": {"text": "a", "voice": "de", "n": 1, "rate": 90}}
    f = tmp_path / "body.json"
    f.write_text('{"text": "from a file", "stream": false}')
    out = ok(cli("generate", "echo", f"@{f}", "--rate", "300", "--stream", url=d.base))
    assert json.loads(out) == {"echo": {"text": "from a file", "stream": True, "rate": 300}}
    out = ok(cli("generate", "echo", "-", "--voice", "it", url=d.base, stdin=b'{"text": "stdin"}'))
    assert json.loads(out) == {"echo": {"text": "stdin", "voice": "it"}}
    # --text with a body argument sets its "text" too
    out = ok(cli("generate", "echo", '{"text": "old", "n": 2}', "--text", "new", url=d.base))
    assert json.loads(out) == {"echo": {"text": "new", "n": 2}}


def test_generate_bad_flags_are_usage_errors(corral):
    corral.add("echo", "echo")
    d = corral.start()
    for bad in ("0", "-5", "12x", "", " 12", "+3", "1.5", "99999999999999999999"):
        p = cli("generate", "echo", "--text", "hi", "--rate", bad, url=d.base)
        assert p.returncode == 2, (bad, p)
        one_line_error(p.stderr, "--rate", "positive integer")
    for args in (("--voice",), ("--text", "x", "--rate"), ("--text", "x", "-o")):
        p = cli("generate", "echo", *args, url=d.base)
        assert p.returncode == 2, (args, p)
        one_line_error(p.stderr, "needs a value")
    p = cli("generate", "echo", "--text", "x", "--speed", "3", url=d.base)
    assert p.returncode == 2
    one_line_error(p.stderr, "--speed")
    p = cli("generate", "echo", "--voice", "fr", url=d.base)  # nothing to say
    assert p.returncode == 2
    one_line_error(p.stderr, "usage", "--voice V", "--rate N", "--stream")
    for body in ("[1, 2]", "not json"):
        p = cli("generate", "echo", body, "--voice", "fr", url=d.base)
        assert p.returncode == 2, p
        one_line_error(p.stderr, "--voice", "JSON object")
    p = cli("generate", "echo", "--text", os.fsdecode(b"\xff"), url=d.base)
    assert p.returncode == 2
    one_line_error(p.stderr, "--text", "UTF-8")
    assert d.model("echo")["state"] == "unloaded"  # none of them reached the daemon


def test_generate_tts_voice_and_rate_reach_the_model(corral, tmp_path):
    if not (EXAMPLES / "tts-espeak" / "tts-espeak").exists():
        pytest.fail("examples/models/tts-espeak is not built: run `make build`")
    corral.add("tts-espeak", "tts-espeak")
    d = corral.start()
    durations = {}
    for rate in ("80", "400"):
        target = tmp_path / f"r{rate}.wav"
        ok(cli("generate", "tts-espeak", "--text", "hello there, how are you", "--voice", "fr", "--rate", rate,
               "-o", str(target), url=d.base))
        with wave.open(io.BytesIO(target.read_bytes())) as w:
            assert w.getnchannels() == 1 and w.getsampwidth() == 2 and w.getnframes() > 0
            durations[rate] = w.getnframes() / w.getframerate()
    assert durations["80"] > 2 * durations["400"], durations  # the rate reached espeak
    failed(cli("generate", "tts-espeak", "--text", "hi", "--voice", "no-such-voice", url=d.base), "400",
           "no-such-voice")
    failed(cli("generate", "tts-espeak", "--text", "hi", "--rate", "20", url=d.base), "400", "rate")
    # --stream to a model that answers whole: the WAV arrives as a byte stream
    target = tmp_path / "streamed.wav"
    p = cli("generate", "tts-espeak", "--text", "hi", "--voice", "fr", "--stream", "-o", str(target), url=d.base)
    assert ok(p) == "" and "audio/wav" in p.stderr.decode()
    with wave.open(io.BytesIO(target.read_bytes())) as w:
        assert w.getnframes() > 0


# ---- generate --stream ----

GATE_WORKER = '''"""gate — a stream that, with "gate" in its body, waits after its first chunk until a file of that
name exists in the model directory, so a test can see the first chunk arrive before the model is done."""
import os
import time

import corral


class Gate(corral.Model):
    def load(self, ctx):
        self.dir = ctx.model_dir

    def generate(self, request):
        body = request.json

        def wait():
            while "gate" in body and not os.path.exists(os.path.join(self.dir, body["gate"])):
                if request.cancelled:
                    return
                time.sleep(0.02)

        def chunks():
            yield b"first chunk\\n"
            wait()
            yield b"second chunk\\n"
            if body.get("break"):
                raise RuntimeError("broke")

        def events():
            yield {"i": 0}
            wait()
            yield {"i": 1}

        if body.get("bytes"):
            return corral.Stream(chunks(), content_type="application/octet-stream")
        return events()


if __name__ == "__main__":
    corral.run(Gate)
'''


@pytest.fixture
def gate(corral):
    """A daemon serving tests/models/streams as 's', the gate model above as 'gate', and examples/models/tokens."""
    corral.add("s", "streams")
    corral.add("tokens", "tokens")
    path = corral.add("gate", manifest="runtime: python\nentrypoint: worker.py\n", files={"worker.py": GATE_WORKER})
    return corral.start(), path


def spawn(*args: str, url: str, **kw) -> subprocess.Popen:
    env = dict(os.environ, CORRAL_URL=url)
    return subprocess.Popen([BIN, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env, **kw)


def finish(p: subprocess.Popen, timeout: float = 30) -> tuple[int, bytes, bytes]:
    """Waits for a spawned CLI; kills it if it takes longer than timeout."""
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        raise AssertionError(f"the CLI did not exit within {timeout}s")
    return p.returncode, out, err


def read_line(f, timeout: float = 20) -> bytes:
    """One line from a pipe, or a failure after timeout: a CLI that holds its output back never gives it."""
    line = b""
    deadline = time.monotonic() + timeout
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        assert left > 0 and select.select([f], [], [], left)[0], f"no whole line within {timeout}s: {line!r}"
        byte = os.read(f.fileno(), 1)
        assert byte, f"the output ended at {line!r}"
        line += byte
    return line


def test_generate_stream_prints_one_event_per_line_in_order(gate):
    d, _ = gate
    p = cli("generate", "s", '{"events": 5, "tag": "t"}', "--stream", url=d.base)
    assert [json.loads(line) for line in ok(p).splitlines()] == [{"i": k, "tag": "t"} for k in range(5)]
    assert p.stderr == b""
    # --text builds the body, and --stream asks for a stream of it: the tokens example
    p = cli("generate", "tokens", "--text", "one two three", "--stream", url=d.base)
    assert [json.loads(line)["token"] for line in ok(p).splitlines()] == ["one", "two", "three"]
    # an event stream with no event in it is an empty, successful answer
    assert ok(cli("generate", "s", '{"events": 0}', "--stream", url=d.base)) == ""
    # without --stream, the same model's answer is the whole collected body, as before
    assert ok(cli("generate", "s", '{"events": 2}', url=d.base)) == '{"i":0,"tag":null}\n{"i":1,"tag":null}\n'


def test_generate_stream_prints_each_event_as_it_arrives(gate):
    d, path = gate
    p = spawn("generate", "gate", '{"gate": "go-events"}', "--stream", url=d.base)
    try:
        assert json.loads(read_line(p.stdout)) == {"i": 0}
        # the model is still waiting for the gate: the first event came before the model finished
        assert p.poll() is None and not (path / "go-events").exists()
        (path / "go-events").touch()
        rc, rest, err = finish(p)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert rc == 0, err
    assert rest == b'{"i":1}\n' and err == b""


def test_generate_stream_writes_a_byte_stream_to_a_file_as_it_arrives(gate, tmp_path):
    d, path = gate
    target = tmp_path / "out.bin"
    p = spawn("generate", "gate", '{"gate": "go-bytes", "bytes": true}', "--stream", "-o", str(target), url=d.base)
    try:
        wait_for(lambda: target.exists() and target.read_bytes() == b"first chunk\n", timeout=20,
                 what="the first chunk in the output file")
        assert p.poll() is None and not (path / "go-bytes").exists()
        (path / "go-bytes").touch()
        rc, out, err = finish(p)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert rc == 0, err
    assert target.read_bytes() == b"first chunk\nsecond chunk\n" and out == b""
    assert err.decode() == f"wrote 25 bytes (application/octet-stream) to {target}\n"


def test_generate_stream_byte_stream_is_exactly_the_bytes(gate, tmp_path):
    d, _ = gate
    body = '{"bytes": 300000, "chunk": 70000}'
    target = tmp_path / "x.bin"
    p = cli("generate", "s", body, "--stream", "-o", str(target), url=d.base)
    assert ok(p) == ""
    assert target.read_bytes() == b"x" * 300_000
    assert p.stderr.decode() == f"wrote 300000 bytes (text/x-test) to {target}\n"
    # to a pipe, when there is no -o
    p = cli("generate", "s", body, "--stream", url=d.base)
    assert p.returncode == 0 and p.stdout == b"x" * 300_000 and p.stderr == b"", p.stderr


def test_generate_stream_error_event_fails_with_its_reason(gate):
    d, _ = gate
    p = cli("generate", "s", '{"fail_after": 2}', "--stream", url=d.base)
    assert p.returncode == 1, p
    assert p.stdout == b'{"i":0,"tag":null}\n{"i":1,"tag":null}\n'  # what came before the error stays printed
    one_line_error(p.stderr, "after 2 events", "'s'", "ValueError: failed after 2 chunks")
    # a worker that dies mid-stream: the daemon's error event names it
    p = cli("generate", "s", '{"exit_after": 1}', "--stream", url=d.base)
    assert p.returncode == 1 and p.stdout == b'{"i":0,"tag":null}\n', p
    one_line_error(p.stderr, "after 1 event:", "exited with status 3")


def test_generate_stream_errors_before_the_stream_are_one_line(gate):
    d, _ = gate
    failed(cli("generate", "s", '{"fail_after": 0}', "--stream", url=d.base), "500", "failed after 0 chunks")
    failed(cli("generate", "nope", "--text", "x", "--stream", url=d.base), "404", "nope")
    failed(cli("generate", "s", '{"stream": "yes"', "--stream", url=d.base), "400")  # not JSON: sent as it is
    url = f"http://127.0.0.1:{free_port()}"
    failed(cli("generate", "s", "{}", "--stream", url=url, timeout=15), "cannot reach", "127.0.0.1")


def test_generate_stream_truncated_byte_stream_fails(gate, tmp_path):
    """The daemon cuts a byte stream whose model fails (no final chunk): the CLI must not call that a success."""
    d, _ = gate
    target = tmp_path / "cut.bin"
    p = cli("generate", "gate", '{"bytes": true, "break": true}', "--stream", "-o", str(target), url=d.base)
    assert p.returncode == 1 and p.stdout == b"", p
    one_line_error(p.stderr, "broke off", "'gate'", f"{target} is incomplete")
    assert target.read_bytes() == b"first chunk\nsecond chunk\n"
    p = cli("generate", "gate", '{"bytes": true, "break": true}', "--stream", url=d.base)
    assert p.returncode == 1 and p.stdout == b"first chunk\nsecond chunk\n", p
    one_line_error(p.stderr, "broke off after 25 bytes")


def test_generate_stream_refuses_binary_to_a_terminal(gate):
    d, _ = gate
    primary, secondary = os.openpty()
    try:
        env = dict(os.environ, CORRAL_URL=d.base)
        p = subprocess.run([BIN, "generate", "gate", '{"bytes": true}', "--stream"], stdin=subprocess.DEVNULL,
                           stdout=secondary, stderr=subprocess.PIPE, env=env, timeout=30)
        os.close(secondary)
        secondary = -1
        shown = b""
        while select.select([primary], [], [], 0)[0]:
            try:
                got = os.read(primary, 4096)
            except OSError:  # EIO: the terminal's other end is closed
                break
            if not got:
                break
            shown += got
    finally:
        os.close(primary)
        if secondary >= 0:
            os.close(secondary)
    assert p.returncode == 1, p
    one_line_error(p.stderr, "application/octet-stream", "terminal", "-o FILE")
    assert b"chunk" not in shown, shown
    # text goes to a terminal
    primary, secondary = os.openpty()
    try:
        p = subprocess.run([BIN, "generate", "s", '{"bytes": 5}', "--stream"], stdin=subprocess.DEVNULL,
                           stdout=secondary, stderr=subprocess.PIPE, env=env, timeout=30)
        assert p.returncode == 0, p.stderr
        assert os.read(primary, 100) == b"xxxxx"
    finally:
        os.close(primary)
        os.close(secondary)


# ---- the stream parser against a scripted server: what the daemon never sends, but a stream may hold ----

class Scripted(http.server.BaseHTTPRequestHandler):
    """Answers every POST with self.server.answer: (status, content type, [pieces], whole) — pieces sent with a
    flush between them, chunked; whole=False leaves out the final chunk. The request is kept in server.seen."""

    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.seen.append((self.path, dict(self.headers), body))
        status, ctype, pieces, whole = self.server.answer
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        for piece in pieces:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.flush()
        if whole:
            self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
        self.close_connection = True

    do_GET = do_POST

    def log_message(self, *args):
        pass


@pytest.fixture
def scripted():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_generate_stream_parses_server_sent_events(scripted):
    server, url = scripted
    server.answer = (200, "text/event-stream", [
        b"\xef\xbb\xbf: a comment\n\n", b"data: {\"a\":\r\ndata:  1}\r\n", b"\r\n",      # data over two lines
        b"event: tick\rid: 7\rretry: 100\rdata:{\"b\":2}\r\r",                         # CR line ends, other fields
        b": keep-alive\n\n", b"da", b"ta: {\"c\": \"x\"}\n", b"\n",                     # split anywhere
        b"data: not json\ndata: at all\n\n", b"id: 9\n\n",                             # no data: no event
    ], True)
    p = cli("generate", "m", '{"x": 1}', "--stream", url=url)
    assert ok(p).splitlines() == ['{"a":1}', '{"b":2}', '{"c": "x"}', "not json", "at all"]
    path, headers, body = server.seen[0]
    assert path == "/v1/models/m/generate"
    assert headers["Accept"] == "text/event-stream" and headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"x": 1, "stream": True}
    # a body that is not a JSON object goes as it is: Accept alone asks for the stream
    ok(cli("generate", "m", "[1,2]", "--stream", url=url))
    assert server.seen[1][2] == b"[1,2]" and server.seen[1][1]["Accept"] == "text/event-stream"


def test_generate_stream_parses_ndjson(scripted):
    server, url = scripted
    server.answer = (200, "application/x-ndjson", [b'{"i":0}\n{"i"', b':1}\r\n\n', b'{"i":2}'], True)
    assert ok(cli("generate", "m", "{}", "--stream", url=url)).splitlines() == ['{"i":0}', '{"i":1}', '{"i":2}']
    server.answer = (200, "application/x-ndjson", [b'{"i":0}\n', b'{"error": "boom at 1"}\n', b'{"i":2}\n'], True)
    p = cli("generate", "m", "{}", "--stream", url=url)
    assert p.returncode == 1 and p.stdout == b'{"i":0}\n', p
    one_line_error(p.stderr, "after 1 event:", "boom at 1")
    # an object that merely has an "error" key among others is an event
    server.answer = (200, "application/x-ndjson", [b'{"error": "none", "i": 0}\n'], True)
    assert ok(cli("generate", "m", "{}", "--stream", url=url)) == '{"error": "none", "i": 0}\n'


def test_generate_stream_cut_off_streams_fail(scripted, tmp_path):
    server, url = scripted
    # the connection closes without the last chunk, in the middle of an event
    server.answer = (200, "text/event-stream", [b"data: {\"i\":0}\n\n", b"data: {\"i\""], False)
    p = cli("generate", "m", "{}", "--stream", url=url)
    assert p.returncode == 1 and p.stdout == b'{"i":0}\n', p
    one_line_error(p.stderr, "broke off after 1 event")
    # a whole response that ends in the middle of an event is cut off too
    server.answer = (200, "text/event-stream", [b"data: {\"i\":0}\n\n", b"data: {\"i\":1}\n"], True)
    p = cli("generate", "m", "{}", "--stream", url=url)
    assert p.returncode == 1 and p.stdout == b'{"i":0}\n', p
    one_line_error(p.stderr, "broke off after 1 event", "middle of an event")
    # bytes
    server.answer = (200, "audio/wav", [b"RIFF", b"more"], False)
    target = tmp_path / "cut.wav"
    p = cli("generate", "m", "{}", "--stream", "-o", str(target), url=url)
    assert p.returncode == 1, p
    one_line_error(p.stderr, "broke off after 8 bytes", "is incomplete")
    assert target.read_bytes() == b"RIFFmore"
    # an error answer's body is read whole for its reason
    server.answer = (503, "application/json", [b'{"error": "model ', b"'m' is busy\"}"], True)
    failed(cli("generate", "m", "{}", "--stream", url=url), "HTTP 503", "model 'm' is busy")


# ---- events ----

def events_manifest(**parameters) -> str:
    """tests/models/steerable, one instance; keyword arguments become its parameters."""
    lines = ["runtime: python", "entrypoint: worker.py", "instances: 1"]
    if parameters:
        lines.append("parameters:")
        lines += [f"  {k}: {v}" for k, v in parameters.items()]
    return "\n".join(lines) + "\n"


def stop_cli(p: subprocess.Popen) -> None:
    """Ends a CLI that tails forever, and closes its pipes."""
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    p.stdout.close()
    p.stderr.close()


def read_events(p: subprocess.Popen, until: str, limit: int = 40) -> list[dict]:
    """--json lines, read one at a time as they come, up to the first event of kind `until`."""
    got = []
    for _ in range(limit):
        got.append(json.loads(read_line(p.stdout)))
        if got[-1]["event"] == until:
            return got
    raise AssertionError(f"no {until} among {got}")


def test_events_json_prints_a_load_as_it_happens(corral):
    corral.add("c", "steerable", manifest=events_manifest(load_delay=2))
    d = corral.start()
    # --since 0: every event from the daemon's first, so none is missed while the CLI connects
    p = spawn("events", "--json", "--since", "0", url=d.base)
    loader = threading.Thread(target=lambda: d.post("/v2/repository/models/c/load", timeout=60), daemon=True)
    try:
        loader.start()
        first = json.loads(read_line(p.stdout))
        second = json.loads(read_line(p.stdout))
        # the load is still sleeping in the model's load(): the lines came as the events did, not at the end
        assert loader.is_alive() and d.model("c")["state"] == "loading"
        assert (first["event"], second["event"]) == ("model.loading", "instance.started"), (first, second)
        rest = read_events(p, "model.loaded")
        loader.join(timeout=30)
        events = [first, second, *rest]
        assert [e["event"] for e in events] == ["model.loading", "instance.started", "instance.ready", "model.loaded"]
        assert [e["id"] for e in events] == list(range(1, 5)), events
        assert set(events[0]) == {"id", "event", "data"}
        assert events[0]["data"]["model"] == "c" and events[0]["data"]["state"] == "loading"
        assert events[2]["data"]["pid"] == d.worker_pids("c")[0] and events[2]["data"]["instance"] == 0
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", events[3]["data"]["time"])
        assert p.poll() is None  # it tails on
    finally:
        stop_cli(p)


def test_events_since_resumes_without_gaps_or_repeats(corral):
    corral.add("c", "steerable", manifest=events_manifest())
    d = corral.start()
    assert d.post("/v2/repository/models/c/load").status_code == 200
    assert d.post("/v2/repository/models/c/unload").status_code == 200
    p = spawn("events", "--json", "--since", "0", url=d.base)
    try:
        history = read_events(p, "model.unloaded")
    finally:
        stop_cli(p)
    ids = [e["id"] for e in history]
    assert ids == list(range(1, len(ids) + 1)) and len(ids) == 7, history
    # from the middle of the history: exactly what came after that id, then live events
    mark = ids[2]
    p = spawn("events", "--json", "--since", str(mark), url=d.base)
    try:
        again = read_events(p, "model.unloaded")
        assert again == history[3:], (again, history)
        assert d.post("/v2/repository/models/c/load").status_code == 200
        live = read_events(p, "model.loaded")
        assert [e["id"] for e in live] == list(range(ids[-1] + 1, ids[-1] + 1 + len(live))), live
    finally:
        stop_cli(p)
    # from the newest id: nothing old, only what happens next
    newest = live[-1]["id"]
    p = spawn("events", "--json", "--since", str(newest), url=d.base)
    try:
        assert d.post("/v1/models/c/scale", {"instances": 2}).status_code == 200
        nxt = json.loads(read_line(p.stdout))
        assert nxt["id"] == newest + 1 and nxt["event"] == "model.scaled", nxt
        assert nxt["data"]["from"] == 1 and nxt["data"]["to"] == 2
    finally:
        stop_cli(p)


def test_events_for_people_show_a_kill_9(corral):
    corral.add("c", "steerable", manifest=events_manifest())
    d = corral.start()
    assert d.post("/v2/repository/models/c/load").status_code == 200
    pid = d.worker_pids("c")[0]
    p = spawn("events", url=d.base)
    try:
        head = read_line(p.stdout).decode().split()
        assert head == ["ID", "TIME", "EVENT", "MODEL", "INST", "DETAIL"], head  # printed once subscribed
        os.kill(pid, signal.SIGKILL)
        lines = []
        while not lines or " instance.ready " not in lines[-1]:
            lines.append(read_line(p.stdout).decode().rstrip("\n"))
            assert len(lines) < 20, lines
    finally:
        stop_cli(p)
    rows = [line.split(None, 5) for line in lines]
    kinds = [r[2] for r in rows]
    assert kinds == ["instance.exited", "instance.restarting", "model.loading", "instance.started", "instance.ready"]
    ids = [int(r[0]) for r in rows]
    assert ids == list(range(ids[0], ids[0] + len(ids))), lines
    exited, restarting = rows[0], rows[1]
    assert exited[3] == "c" and exited[4] == "0", exited
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", exited[1]), exited
    assert f"pid {pid}, killed by signal 9 (SIGKILL), unexpected" in exited[5], exited
    assert re.search(r"restarting in \d+ ms \(crash\)$", restarting[5]), restarting
    assert "loading" in rows[2][5] and rows[2][4] == "-", rows[2]  # a model's event has no instance
    assert re.search(r"loaded in \d+ ms$", rows[4][5]), rows[4]


def test_events_end_with_the_daemon(corral):
    corral.add("c", "steerable", manifest=events_manifest())
    d = corral.start()
    assert d.post("/v2/repository/models/c/load").status_code == 200
    p = spawn("events", "--json", "--since", "0", url=d.base)
    try:
        read_events(p, "model.loaded")
        assert d.stop() == 0  # stopping unloads c: its events come last, then the end of the stream
        rc, out, err = finish(p, timeout=20)
    finally:
        stop_cli(p)
    assert rc == 0 and err == b"", (rc, out, err)  # the daemon ended the stream: a clean end
    assert [json.loads(line)["event"] for line in out.splitlines()] == ["model.unloading", "instance.exited",
                                                                       "model.unloaded"], out
    # a daemon that dies breaks the connection: that is a failure, said in one line
    d = corral.start()
    p = spawn("events", "--json", url=d.base)
    try:
        assert d.post("/v1/models/nope/scale", {"instances": 1}).status_code == 404  # the daemon is up
        time.sleep(0.5)
        d.proc.kill()
        rc, out, err = finish(p, timeout=20)
    finally:
        stop_cli(p)
    assert rc == 1 and out == b"", (rc, out, err)
    one_line_error(err, "broke off after 0 events", d.base)


def test_events_failures_are_one_line(corral):
    url = f"http://127.0.0.1:{free_port()}"
    failed(cli("events", url=url, timeout=15), "cannot reach", "127.0.0.1")
    for args in (("--since",), ("--since", "x1"), ("--since", "-1"), ("--since", "1\r\nX-Evil: 1"), ("--follow",)):
        p = cli("events", *args, url=url)
        assert p.returncode == 2 and p.stdout == b"", (args, p)
        one_line_error(p.stderr, "events")
    d = corral.start(env={"CORRAL_TOKEN": "s3cret-token"})
    env = {k: v for k, v in os.environ.items() if k != "CORRAL_TOKEN"}
    p = subprocess.run([BIN, "events"], capture_output=True, env={**env, "CORRAL_URL": d.base}, timeout=15,
                       stdin=subprocess.DEVNULL)
    failed(p, "HTTP 401")
    # with the token it subscribes
    q = subprocess.Popen([BIN, "events"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                         env={**env, "CORRAL_URL": d.base, "CORRAL_TOKEN": "s3cret-token"})
    try:
        assert read_line(q.stdout).split()[:2] == [b"ID", b"TIME"]
    finally:
        stop_cli(q)


def test_events_from_a_scripted_stream(scripted):
    server, url = scripted
    # the daemon dropped a subscriber that read too slowly: said so, with where to resume
    server.answer = (200, "text/event-stream", [
        b": corral events; the newest id is 2\n\n", b"id: 41\nevent: model.loaded\ndata: {\"model\":\"m\"}\n\n",
        b": events were lost: this subscriber read too slowly; reconnect with Last-Event-ID\n\n"], True)
    p = cli("events", "--json", url=url)
    assert p.returncode == 1, p
    assert [json.loads(line) for line in p.stdout.splitlines()] == [
        {"id": 41, "event": "model.loaded", "data": {"model": "m"}}]
    one_line_error(p.stderr, "after 1 event:", "events were lost", "--since 41")
    path, headers, _ = server.seen[-1]
    assert path == "/v1/events" and headers["Accept"] == "text/event-stream" and "Last-Event-ID" not in headers
    # --since sends Last-Event-ID; an event of a kind this client does not know shows its fields;
    # data that is not JSON is a string; a stream cut in the middle of an event is a failure
    server.answer = (200, "text/event-stream; charset=utf-8", [
        b"id: 7\nevent: pull.progress\ndata: {\"model\":\"m\",\"time\":\"t\",\"bytes\":5}\n\n",
        b"id: 8\nevent: odd\ndata: not json\n\n", b"id: 9\ndata: {\"cut"], False)
    p = cli("events", "--since", "6", url=url)
    assert server.seen[-1][1]["Last-Event-ID"] == "6"
    lines = p.stdout.decode().splitlines()
    assert p.returncode == 1 and len(lines) == 3, p
    assert lines[1].split() == ["7", "t", "pull.progress", "m", "-", '{"bytes":5}'], lines
    assert lines[2].split()[:3] == ["8", "-", "odd"] and lines[2].endswith("not json"), lines
    one_line_error(p.stderr, "broke off after 2 events", "--since 8")
    p = cli("events", "--json", url=url)
    assert json.loads(p.stdout.splitlines()[1]) == {"id": 8, "event": "odd", "data": "not json"}
    # an answer that is not an event stream
    server.answer = (200, "application/json", [b"{}"], True)
    failed(cli("events", url=url), "not an event stream", "application/json")
    server.answer = (404, "application/json", [b'{"error": "no such endpoint"}'], True)
    failed(cli("events", url=url), "HTTP 404", "no such endpoint")


# ---- top ----

def seconds(text: str) -> float:
    """A latency as top prints it: 850us, 1.2ms, 3.40s."""
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    assert m, text
    return float(m.group(1)) * {"us": 1e-6, "ms": 1e-3, "s": 1}[m.group(2)]


def top_tables(out: str) -> tuple[dict, dict]:
    """top's two tables: models by name, instances by (model, id); each row a dict of its columns."""
    blocks = [b for b in out.strip("\n").split("\n\n")]
    assert len(blocks) == 2, out
    tables = []
    for block in blocks:
        lines = block.splitlines()
        head = lines[0].split()
        rows = [line.split() for line in lines[1:]]
        tables.append([dict(zip(head, row)) for row in rows])
    models = {r["MODEL"]: r for r in tables[0]}
    instances = {(r["MODEL"], int(r["ID"])): r for r in tables[1]}
    return models, instances


class Sender:
    """Sends requests to a model, one after another, until stopped."""

    def __init__(self, d, model: str, **params):
        self.d, self.model, self.params, self.sent, self.errors = d, model, params, 0, []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        session = requests.Session()
        body = {"inputs": [tensor("X", "INT32", [1], [0])], "parameters": self.params}
        while not self.stopping.is_set():
            r = session.post(self.d.url(f"/v2/models/{self.model}/infer"), json=body, timeout=30)
            if r.status_code != 200:
                self.errors.append(r.text)
            self.sent += 1
        session.close()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self.thread.join(timeout=30)


def test_top_once_shows_the_rates_and_latency_of_the_interval(corral):
    corral.add("c", "steerable", manifest=events_manifest())
    corral.add("idle", "steerable", manifest=events_manifest())
    d = corral.start()
    assert d.post("/v2/repository/models/c/load").status_code == 200
    # fast requests before: a p50 from the counters since the start would be one of these, not of the interval's
    for _ in range(60):
        assert d.infer("c", [tensor("X", "INT32", [1], [0])]).status_code == 200
    with Sender(d, "c", sleep=0.06) as sender:
        out = ok(cli("top", "--once", "--interval", "1.5", url=d.base))
    assert not sender.errors and sender.sent > 5, (sender.sent, sender.errors)
    models, instances = top_tables(out)
    assert list(models) == ["c", "idle"], out
    c = models["c"]
    assert c["STATE"] == "ready" and c["INST"] == "1/1", out
    # ~16 requests a second can pass one instance that sleeps 60 ms in each
    assert 3 <= float(c["REQ/S"]) <= 17, out
    assert float(c["ERR/S"]) == 0
    # the interval's requests took 60 ms and more: a p50 of the counters since the start would be a fast one's
    assert 0.05 <= seconds(c["P50"]) <= 0.25 and seconds(c["P50"]) <= seconds(c["P99"]) <= 0.5, out
    assert c["QUEUE"] == "0" and re.fullmatch(r"[\d.]+MiB", c["MEM"]), out
    idle = models["idle"]
    assert idle["STATE"] == "unloaded" and idle["INST"] == "0/0" and idle["REQ/S"] == "0.0", out
    assert idle["P50"] == "-" and idle["P99"] == "-" and idle["MEM"] == "-", out
    assert set(instances) == {("c", 0)}, out
    inst = instances[("c", 0)]
    assert int(inst["PID"]) == d.worker_pids("c")[0] and inst["STATE"] == "ready", out
    assert 3 <= float(inst["REQ/S"]) <= 17 and int(inst["REQUESTS"]) >= 60, out
    # not on a terminal, top is the same one table without --once; and no requests: a rate of 0
    p = cli("top", "--interval", "0.2", url=d.base, timeout=15)
    models, _ = top_tables(ok(p))
    assert models["c"]["REQ/S"] == "0.0" and models["c"]["P50"] == "-", p.stdout
    assert b"\x1b" not in p.stdout


def test_top_counts_failures(corral):
    corral.add("c", "steerable", manifest=events_manifest())
    d = corral.start()
    assert d.post("/v2/repository/models/c/load").status_code == 200
    with Sender(d, "c", bad="no") as sender:
        out = ok(cli("top", "--once", "--interval", "1", url=d.base))
    models, _ = top_tables(out)
    assert sender.errors and float(models["c"]["ERR/S"]) > 0, out
    assert float(models["c"]["REQ/S"]) >= float(models["c"]["ERR/S"]), out


def test_top_failures_are_one_line(corral):
    url = f"http://127.0.0.1:{free_port()}"
    failed(cli("top", "--once", url=url, timeout=15), "cannot reach", "127.0.0.1")
    failed(cli("top", url=url, timeout=15), "cannot reach")
    for args in (("--interval",), ("--interval", "0"), ("--interval", "-1"), ("--interval", "fast"), ("--watch",)):
        p = cli("top", *args, url=url)
        assert p.returncode == 2 and p.stdout == b"", (args, p)
        one_line_error(p.stderr, "top")
    d = corral.start(env={"CORRAL_TOKEN": "s3cret-token"})
    env = {k: v for k, v in os.environ.items() if k != "CORRAL_TOKEN"}
    p = subprocess.run([BIN, "top", "--once"], capture_output=True, env={**env, "CORRAL_URL": d.base}, timeout=15,
                       stdin=subprocess.DEVNULL)
    failed(p, "HTTP 401")
    p = subprocess.run([BIN, "top", "--once", "--interval", "0.1"], capture_output=True, timeout=15,
                       stdin=subprocess.DEVNULL, env={**env, "CORRAL_URL": d.base, "CORRAL_TOKEN": "s3cret-token"})
    assert p.returncode == 0 and b"MODEL" in p.stdout, p


class Terminal:
    """A pseudo-terminal of 120 x 30 for a CLI; everything it shows is kept in .shown."""

    def __init__(self, *args: str, url: str):
        self.primary, self.secondary = os.openpty()
        fcntl.ioctl(self.secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
        self.before = termios.tcgetattr(self.secondary)
        self.proc = subprocess.Popen([BIN, *args], stdin=self.secondary, stdout=self.secondary, stderr=self.secondary,
                                     env=dict(os.environ, CORRAL_URL=url), start_new_session=True)
        self.shown = b""

    def read(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if select.select([self.primary], [], [], left)[0]:
                try:
                    self.shown += os.read(self.primary, 65536)
                except OSError:
                    return

    def until(self, predicate, timeout: float = 15, what: str = "the screen") -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self.shown):
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {self.shown[-2000:]!r}"
            assert self.proc.poll() is None, f"exited {self.proc.returncode}: {self.shown[-2000:]!r}"
            self.read(0.1)

    def attrs(self) -> list:
        return termios.tcgetattr(self.secondary)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.primary)
        os.close(self.secondary)


def frames(shown: bytes) -> list[bytes]:
    """What each redraw wrote: top homes the cursor, then writes the whole table."""
    return shown.split(b"\x1b[H")[1:]


def test_top_on_a_terminal_redraws_and_quits_on_q(corral):
    corral.add("c", "steerable", manifest=events_manifest())
    d = corral.start()
    assert d.post("/v2/repository/models/c/load").status_code == 200
    term = Terminal("top", "--interval", "0.3", url=d.base)
    try:
        term.until(lambda s: len(frames(s)) >= 3 and b"c " in frames(s)[-1], what="three frames")
        assert term.shown.startswith(b"\x1b[?1049h"), term.shown[:100]  # the alternate screen
        last = frames(term.shown)[-1]
        assert b"corral top" in last and b"MODEL" in last and b" ready " in last, last
        lflag = term.attrs()[3]
        assert not lflag & termios.ECHO and not lflag & termios.ICANON  # keys are read as they are typed
        with Sender(d, "c"):
            term.until(lambda s: re.search(rb"c +ready +1/1 +0 +[1-9][\d.]* ", frames(s)[-1]), what="a rate")
        os.write(term.primary, b"q")
        rc = term.proc.wait(timeout=10)
        term.read(0.3)
        assert rc == 0, term.shown[-2000:]
        assert term.shown.endswith(b"\x1b[?25h\x1b[?1049l"), term.shown[-200:]  # the screen given back
        assert term.attrs() == term.before  # the terminal as it was
    finally:
        term.close()


def test_top_redraws_at_once_on_a_lifecycle_event_and_quits_on_ctrl_c(corral):
    corral.add("c", "steerable", manifest=events_manifest())
    d = corral.start()
    # an interval far longer than the test: only /v1/events can make it redraw
    term = Terminal("top", "--interval", "600", url=d.base)
    try:
        term.until(lambda s: len(frames(s)) >= 1 and b" unloaded " in frames(s)[-1], what="the first frame")
        time.sleep(0.5)  # the event stream is open
        assert d.post("/v2/repository/models/c/load").status_code == 200
        term.until(lambda s: b" ready " in frames(s)[-1] and b"1/1" in frames(s)[-1], what="the load")
        os.killpg(term.proc.pid, signal.SIGINT)  # Ctrl-C
        rc = term.proc.wait(timeout=10)
        term.read(0.3)
        assert rc == 0 and term.shown.endswith(b"\x1b[?25h\x1b[?1049l"), (rc, term.shown[-200:])
        assert term.attrs() == term.before
    finally:
        term.close()
