"""Sessions across a daemon restart with --state FILE: what was written
(JSON and bytes, patched, with their expiry) comes back, what was deleted or
expired does not; changes reach the file in batches within a flush
interval, so even a SIGKILL a moment later loses nothing; a smaller
--session-memory at restart keeps those with the most time left and says so;
without --state the store is memory only."""
from __future__ import annotations

import json
import signal
import sqlite3
import time

from conftest import wait_for


def put(d, sid, body, ctype="application/json", ttl=None):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    params = {"ttl": str(ttl)} if ttl else None
    r = d.http.put(d.url(f"/v1/sessions/{sid}"), data=data, headers={"Content-Type": ctype}, params=params,
                   timeout=30)
    assert r.status_code in (200, 201), r.text
    return r.json()


def ids(d) -> list[str]:
    return [s["id"] for s in d.get("/v1/sessions").json()["sessions"]]


def rows(path) -> dict:
    c = sqlite3.connect(str(path))
    try:
        return {r[0]: r[1:] for r in c.execute("SELECT id, content_type, data, expires_ms FROM sessions")}
    finally:
        c.close()


def test_sessions_survive_a_restart(corral, tmp_path):
    state = tmp_path / "state.db"
    d = corral.start("--state", str(state))
    wait_for(lambda: "session" in d.log() and "restored" in d.log(), timeout=10, what="the state file to open")
    chat = put(d, "chat", {"turns": ["hi"]}, ttl=600)
    put(d, "voice", bytes(range(256)), ctype="audio/wav")
    put(d, "gone", {"x": 1})
    put(d, "short", "1", ttl=1)
    d.http.delete(d.url("/v1/sessions/gone"), timeout=10)
    r = d.http.patch(d.url("/v1/sessions/chat"), data='{"turns": ["hi", "there"]}',
                     headers={"Content-Type": "application/merge-patch+json"}, params={"ttl": "600"}, timeout=10)
    assert r.status_code == 200
    assert d.stop() == 0
    time.sleep(1.2)  # short expires meanwhile
    on_disk = rows(state)
    assert set(on_disk) == {"chat", "voice", "short"}  # the file matched the store at exit
    assert on_disk["voice"][0] == "audio/wav" and on_disk["voice"][1] == bytes(range(256))

    d = corral.start("--state", str(state))
    wait_for(lambda: "voice" in ids(d), timeout=10, what="the sessions to be restored")
    assert ids(d) == ["chat", "voice"]
    g = d.get("/v1/sessions/chat")
    assert g.json() == {"turns": ["hi", "there"]} and g.headers["Content-Type"] == "application/json"
    assert 590 <= int(g.headers["Session-TTL"]) <= 600  # the expiry kept, not restarted
    v = d.get("/v1/sessions/voice")
    assert v.content == bytes(range(256)) and v.headers["Content-Type"] == "audio/wav"
    assert "1 expired sessions dropped" in d.log()
    assert chat["id"] == "chat"
    assert d.stop() == 0  # the daemon holds the file's lock while it runs
    assert "short" not in rows(state)  # the expired one left the file at start


def test_changes_reach_the_file_within_a_flush_even_before_a_kill(corral, tmp_path):
    state = tmp_path / "state.db"
    d = corral.start("--state", str(state))
    wait_for(lambda: "restored" in d.log(), timeout=10, what="the state file to open")
    for i in range(200):
        put(d, f"k{i:03d}", {"i": i})
    d.http.delete(d.url("/v1/sessions/k000"), timeout=10)
    time.sleep(0.5)  # a few flush intervals (100 ms)
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait(timeout=10)
    d.stop()
    d = corral.start("--state", str(state))
    wait_for(lambda: d.get("/v1/sessions").json()["count"] == 199, timeout=10, what="199 sessions restored")
    assert d.get("/v1/sessions/k199").json() == {"i": 199}
    assert d.get("/v1/sessions/k000").status_code == 404


def test_a_smaller_store_keeps_those_with_most_time_left(corral, tmp_path):
    state = tmp_path / "state.db"
    d = corral.start("--state", str(state))
    wait_for(lambda: "restored" in d.log(), timeout=10, what="the state file to open")
    for i in range(10):
        put(d, f"s{i}", b"x" * 1000, ctype="application/octet-stream", ttl=100 + i)
    cost = d.get("/v1/sessions").json()["bytes"] // 10
    assert d.stop() == 0
    d = corral.start("--state", str(state), "--session-memory", str(4 * cost), "--session-max-size", "1000")
    wait_for(lambda: "sessions did not fit" in d.log(), timeout=10, what="the restore's report")
    assert ids(d) == ["s6", "s7", "s8", "s9"]
    assert "6 sessions did not fit --session-memory" in d.log()
    assert d.stop() == 0
    assert sorted(rows(state)) == ["s6", "s7", "s8", "s9"]


def test_without_state_sessions_are_memory_only(corral, tmp_path):
    d = corral.start("--state", "off")
    put(d, "a", 1)
    assert d.stop() == 0
    d = corral.start("--state", "off")
    assert ids(d) == []
