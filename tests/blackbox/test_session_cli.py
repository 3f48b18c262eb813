"""`corral session` against a real daemon: ls (table and --json), get,
put from a file or stdin (JSON detected, --content-type, --ttl), patch,
rm, and a one-line reason with a non-zero exit on every failure."""
from __future__ import annotations

import json
import os
import subprocess

from conftest import BIN


def cli(*args: str, url: str, stdin: bytes | None = None, timeout: float = 30):
    env = dict(os.environ, CORRAL_URL=url)
    env.pop("CORRAL_TOKEN", None)
    return subprocess.run([BIN, "session", *args], input=stdin, capture_output=True, env=env, timeout=timeout)


def test_put_get_ls_patch_rm(corral, tmp_path):
    d = corral.start()
    doc = tmp_path / "doc.json"
    doc.write_text('{"turns": ["hi"],  "n": 1}\n')
    p = cli("put", "chat", str(doc), "--ttl", "120", url=d.base)
    assert p.returncode == 0, p.stderr
    assert p.stdout.decode().startswith("chat created: ") and "application/json" in p.stdout.decode()
    assert "expires in 120s" in p.stdout.decode()
    assert d.get("/v1/sessions/chat").json() == {"turns": ["hi"], "n": 1}
    # bytes that are not JSON, from stdin: application/octet-stream
    p = cli("put", "blob", "-", url=d.base, stdin=b"\x00\x01not json")
    assert p.returncode == 0, p.stderr
    g = d.get("/v1/sessions/blob")
    assert g.headers["Content-Type"] == "application/octet-stream" and g.content == b"\x00\x01not json"
    # stdin when no file is named, an explicit type
    p = cli("put", "voice", "--content-type", "audio/wav", url=d.base, stdin=b"RIFF")
    assert p.returncode == 0 and d.get("/v1/sessions/voice").headers["Content-Type"] == "audio/wav"
    p = cli("put", "chat", str(doc), url=d.base)
    assert p.returncode == 0 and p.stdout.decode().startswith("chat replaced: ")
    p = cli("put", "j", "-", "--json", url=d.base, stdin=b"[1, 2]")
    assert p.returncode == 0 and json.loads(p.stdout)["size"] == 5

    p = cli("get", "blob", url=d.base)
    assert p.returncode == 0 and p.stdout == b"\x00\x01not json"
    p = cli("get", "chat", url=d.base)
    assert json.loads(p.stdout) == {"turns": ["hi"], "n": 1}

    p = cli("patch", "chat", '{"n": null, "more": true}', url=d.base)
    assert p.returncode == 0, p.stderr
    assert p.stdout.decode().startswith("chat patched: ")
    assert d.get("/v1/sessions/chat").json() == {"turns": ["hi"], "more": True}
    p = cli("patch", "chat", "-", "--ttl", "7", "--json", url=d.base, stdin=b'{"x": 1}')
    assert p.returncode == 0 and json.loads(p.stdout)["expires_in"] == 7

    p = cli("ls", url=d.base)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.decode().splitlines()
    assert lines[0].split() == ["ID", "TYPE", "SIZE", "EXPIRES", "IN"]
    assert [l.split()[0] for l in lines[1:-1]] == ["blob", "chat", "j", "voice"]
    assert lines[-1].startswith("4 sessions, ") and lines[-1].endswith(" of 256.0MiB")
    p = cli("ls", "--json", url=d.base)
    assert json.loads(p.stdout)["count"] == 4

    p = cli("rm", "blob", url=d.base)
    assert p.returncode == 0 and p.stdout.decode().strip() == "removed blob"
    assert d.get("/v1/sessions/blob").status_code == 404


def test_failures_exit_non_zero_with_the_reason(corral):
    d = corral.start("--session-max-size", "10")
    p = cli("get", "absent", url=d.base)
    assert p.returncode == 1 and p.stderr.decode().strip() == "corral: HTTP 404: no session 'absent'"
    p = cli("rm", "absent", url=d.base)
    assert p.returncode == 1 and "HTTP 404" in p.stderr.decode()
    p = cli("put", "a/b", "-", url=d.base, stdin=b"1")
    assert p.returncode == 1 and "invalid session id 'a/b'" in p.stderr.decode()
    p = cli("put", "big", "-", url=d.base, stdin=b"x" * 11)
    assert p.returncode == 1 and "HTTP 413" in p.stderr.decode()
    p = cli("put", "a", "-", "--ttl", "soon", url=d.base, stdin=b"1")
    assert p.returncode == 1 and "ttl 'soon'" in p.stderr.decode()
    p = cli("put", "w", "--content-type", "audio/wav", url=d.base, stdin=b"RIFF")
    assert p.returncode == 0
    p = cli("patch", "w", "{}", url=d.base)
    assert p.returncode == 1 and "HTTP 409" in p.stderr.decode() and "audio/wav" in p.stderr.decode()
    p = cli("put", "x", "/nonexistent/file", url=d.base)
    assert p.returncode == 1 and "cannot open /nonexistent/file" in p.stderr.decode()
    for args in [(), ("frob",), ("get",), ("put",), ("patch", "x"), ("rm",), ("ls", "--bogus"),
                 ("put", "x", "-", "--bogus")]:
        p = cli(*args, url=d.base, stdin=b"")
        assert p.returncode == 2, args
        assert "usage" in p.stderr.decode() or "unknown argument" in p.stderr.decode()
    assert d.get("/v1/sessions").json()["count"] == 1


def test_unreachable_daemon(tmp_path):
    p = cli("ls", url="http://127.0.0.1:1")
    assert p.returncode == 1 and "cannot reach" in p.stderr.decode()
