"""The corral command line as a client of a running daemon (CORRAL_URL)."""
from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
import wave

import pytest

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
        for verb in ("serve", "ls", "ps", "load", "unload", "scale", "infer", "generate", "logs"):
            assert re.search(rf"\b{verb}\b", out), verb
        for option in ("--voice V", "--rate N", "--text TEXT", "-o FILE"):
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
    # merged into a JSON body argument, the flags winning
    out = ok(cli("generate", "echo", '{"text": "a", "voice": "en", "n": 1}', "--voice", "de", "--rate", "90",
                 url=d.base))
    assert json.loads(out) == {"echo": {"text": "a", "voice": "de", "n": 1, "rate": 90}}
    f = tmp_path / "body.json"
    f.write_text('{"text": "from a file", "stream": false}')
    out = ok(cli("generate", "echo", f"@{f}", "--rate", "300", url=d.base))
    assert json.loads(out) == {"echo": {"text": "from a file", "stream": False, "rate": 300}}
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
    one_line_error(p.stderr, "usage", "--voice V", "--rate N")
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
