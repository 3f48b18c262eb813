"""The context store over HTTP, against a real daemon: /v1/sessions and its
statuses (PUT 201/200, GET with Session-Expires and Session-TTL, HEAD,
DELETE, PATCH as RFC 7386 merge patch, the list), ttl from the query or the
header and its bounds, expiry by the store's timer, LRU eviction under a
small --session-memory and 507 with --session-evict off, 413 over
--session-max-size, ids checked like model names, the metrics, the debug
log lines, and bad input that leaves the store as it was."""
from __future__ import annotations

import json
import re
import subprocess
import time

import pytest
import requests

from conftest import BIN, wait_for


def put(d, sid, body, ctype="application/json", **kw):
    headers = dict(kw.pop("headers", {}))
    if ctype is not None:
        headers["Content-Type"] = ctype
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return d.http.put(d.url(f"/v1/sessions/{sid}"), data=data, headers=headers, timeout=30, **kw)


def patch(d, sid, body, ctype="application/merge-patch+json", **kw):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    headers = {"Content-Type": ctype} if ctype else {}
    return d.http.patch(d.url(f"/v1/sessions/{sid}"), data=data, headers=headers, timeout=30, **kw)


def get(d, sid, **kw):
    return d.get(f"/v1/sessions/{sid}", **kw)


def listing(d) -> dict:
    r = d.get("/v1/sessions")
    assert r.status_code == 200, r.text
    return r.json()


def metric(d, name: str) -> int:
    text = d.get("/metrics").text
    m = re.search(rf"^{name} (\d+)$", text, re.M)
    assert m, f"{name} not in /metrics"
    return int(m.group(1))


def test_put_get_replace_delete(corral):
    d = corral.start()
    r = put(d, "chat-1", {"turns": ["hi"], "n": 1})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["id"] == "chat-1" and body["content_type"] == "application/json"
    assert body["size"] == len('{"turns":["hi"],"n":1}')
    assert body["expires_in"] == 3600 and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", body["expires_at"])
    g = get(d, "chat-1")
    assert g.status_code == 200 and g.headers["Content-Type"] == "application/json"
    assert g.content == b'{"turns":["hi"],"n":1}'  # compact, as stored
    assert g.headers["Session-Expires"] == body["expires_at"]
    assert 3590 <= int(g.headers["Session-TTL"]) <= 3600
    h = d.http.head(d.url("/v1/sessions/chat-1"), timeout=10)
    assert h.status_code == 200 and h.content == b"" and h.headers["Session-TTL"]
    r = put(d, "chat-1", [1, 2, 3])
    assert r.status_code == 200 and r.json()["size"] == 7
    assert get(d, "chat-1").json() == [1, 2, 3]
    r = d.http.delete(d.url("/v1/sessions/chat-1"), timeout=10)
    assert r.status_code == 200 and r.json() == {"id": "chat-1"}
    r = get(d, "chat-1")
    assert r.status_code == 404 and "no session 'chat-1'" in r.json()["error"]
    assert d.http.delete(d.url("/v1/sessions/chat-1"), timeout=10).status_code == 404


def test_bytes_sessions_keep_their_type_and_bytes(corral):
    d = corral.start()
    blob = bytes(range(256)) * 4
    r = put(d, "voice", blob, ctype="audio/wav")
    assert r.status_code == 201 and r.json()["content_type"] == "audio/wav" and r.json()["size"] == 1024
    g = get(d, "voice")
    assert g.content == blob and g.headers["Content-Type"] == "audio/wav"
    r = put(d, "note", "plain text", ctype="text/plain; charset=utf-8")
    assert r.status_code == 201 and r.json()["content_type"] == "text/plain; charset=utf-8"
    assert get(d, "note").text == "plain text"
    r = put(d, "empty", b"", ctype="application/octet-stream")
    assert r.status_code == 201 and r.json()["size"] == 0 and get(d, "empty").content == b""
    # no type: JSON, checked; application/json with parameters: JSON too, stored as application/json
    r = put(d, "j", '{"a": 1}', ctype=None)
    assert r.status_code == 201 and r.json()["content_type"] == "application/json"
    r = put(d, "j2", '{"a": 1}', ctype="Application/JSON; charset=utf-8")
    assert r.status_code == 201 and r.json()["content_type"] == "application/json"


def test_bad_json_is_refused_and_changes_nothing(corral):
    d = corral.start()
    assert put(d, "s", {"keep": True}).status_code == 201
    for bad in ['{"a": ', "nope", '{"a": 1, "a": 2}', "", '"\\u0000"']:
        r = put(d, "s", bad)
        assert r.status_code == 400, (bad, r.text)
        assert "session 's'" in r.json()["error"] and "not valid JSON" in r.json()["error"]
    assert put(d, "new", "{").status_code == 400
    assert get(d, "s").json() == {"keep": True}
    assert [s["id"] for s in listing(d)["sessions"]] == ["s"]
    # a form type is a 415 (a browser could send it cross-site)
    r = put(d, "s", "a=1", ctype="application/x-www-form-urlencoded")
    assert r.status_code == 415 and "form type" in r.json()["error"]
    assert get(d, "s").json() == {"keep": True}


def test_ttl_from_query_or_header_and_its_bounds(corral):
    d = corral.start("--session-ttl", "100", "--session-max-ttl", "500")
    assert put(d, "a", 1).json()["expires_in"] == 100
    assert put(d, "a", 1, params={"ttl": "30"}).json()["expires_in"] == 30
    assert put(d, "a", 1, headers={"Session-TTL": "40"}).json()["expires_in"] == 40
    # the query wins over the header
    assert put(d, "a", 1, params={"ttl": "50"}, headers={"Session-TTL": "40"}).json()["expires_in"] == 50
    assert put(d, "a", 1, params={"ttl": "500"}).json()["expires_in"] == 500
    for bad in ["501", "0", "-1", "1.5", "abc", "", "99999999999999999999999"]:
        r = put(d, "a", 2, params={"ttl": bad})
        assert r.status_code == 400, (bad, r.text)
        assert "--session-max-ttl 500" in r.json()["error"] or "query parameter" in r.json()["error"]
    r = put(d, "a", 2, headers={"Session-TTL": "9999"})
    assert r.status_code == 400 and "ttl '9999'" in r.json()["error"]
    r = d.http.put(d.url("/v1/sessions/a?ttl=5&color=red"), data="2", timeout=10)
    assert r.status_code == 400 and "unknown query parameter 'color'" in r.json()["error"]
    r = d.http.put(d.url("/v1/sessions/a?ttl=5&ttl=6"), data="2", timeout=10)
    assert r.status_code == 400 and "repeated" in r.json()["error"]
    r = get(d, "a", params={"ttl": "5"})
    assert r.status_code == 400 and "PUT and PATCH only" in r.json()["error"]
    assert get(d, "a").json() == 1  # none of the refused writes landed
    # reads do not extend the ttl
    put(d, "a", 1, params={"ttl": "60"})
    time.sleep(1.1)
    get(d, "a")
    assert int(get(d, "a").headers["Session-TTL"]) <= 59


def test_ttl_flags_take_durations(corral):
    d = corral.start("--session-ttl", "2m", "--session-max-ttl", "1h")
    assert put(d, "a", 1).json()["expires_in"] == 120
    assert put(d, "a", 1, params={"ttl": "3600"}).status_code == 200
    assert put(d, "a", 1, params={"ttl": "3601"}).status_code == 400


def test_expiry_by_the_timer(corral):
    d = corral.start("--log-level", "debug")
    put(d, "short", "x", ctype="text/plain", params={"ttl": "1"})
    put(d, "long", "y", ctype="text/plain", params={"ttl": "60"})
    assert metric(d, "corral_sessions") == 2
    start = time.monotonic()
    # /metrics reads the counters only: the session goes because the timer fired, not because it was looked up
    wait_for(lambda: metric(d, "corral_sessions") == 1, timeout=5, what="the 1 s session to expire")
    assert time.monotonic() - start < 4  # 1 s, and a generous bound for a loaded machine
    assert metric(d, "corral_session_expirations_total") == 1
    assert get(d, "short").status_code == 404 and get(d, "long").status_code == 200
    assert "session short expired" in d.log() and "session short created" in d.log()


def test_no_session_lines_at_info(corral):
    d = corral.start()
    put(d, "a", 1, params={"ttl": "1"})
    d.http.delete(d.url("/v1/sessions/a"), timeout=10)
    put(d, "b", 1, params={"ttl": "1"})
    wait_for(lambda: metric(d, "corral_session_expirations_total") == 1, timeout=5, what="expiry")
    assert "session a" not in d.log() and "session b" not in d.log()


def cost_of_one(d, sid: str, size: int) -> int:
    """What one session of size bytes costs against --session-memory, as the store reports it."""
    before = listing(d)["bytes"]
    assert put(d, sid, b"x" * size, ctype="application/octet-stream").status_code in (200, 201)
    after = listing(d)["bytes"]
    d.http.delete(d.url(f"/v1/sessions/{sid}"), timeout=10)
    return after - before


def test_lru_eviction_under_the_ceiling(corral):
    d = corral.start("--session-memory", "4096", "--session-max-size", "2048", "--log-level", "debug")
    cost = cost_of_one(d, "s0", 1000)
    assert 1000 < cost < 1400
    fit = 4096 // cost
    ids = [f"s{i}" for i in range(1, fit + 1)]
    for sid in ids:
        assert put(d, sid, b"x" * 1000, ctype="application/octet-stream").status_code == 201
    assert listing(d)["count"] == fit
    assert get(d, "s1").status_code == 200  # s1 is now the most recently used: s2 is the least
    r = put(d, "new", b"y" * 1000, ctype="application/octet-stream")
    assert r.status_code == 201, r.text
    left = [s["id"] for s in listing(d)["sessions"]]
    assert "s2" not in left and "s1" in left and "new" in left and len(left) == fit
    assert metric(d, "corral_session_evictions_total") == 1
    assert listing(d)["bytes"] <= 4096 and metric(d, "corral_session_bytes") <= 4096
    assert "session s2 evicted" in d.log()
    # one twice as large evicts two, the least recently used first (s3, s4)
    r = put(d, "big", b"z" * 2048, ctype="application/octet-stream")
    assert r.status_code == 201, r.text
    left = [s["id"] for s in listing(d)["sessions"]]
    assert "s3" not in left and "big" in left and "new" in left
    assert listing(d)["bytes"] <= 4096


def test_eviction_off_answers_507_and_keeps_everything(corral):
    d = corral.start("--session-memory", "4096", "--session-max-size", "2048", "--session-evict", "off")
    cost = cost_of_one(d, "s0", 1000)
    fit = 4096 // cost
    for i in range(fit):
        assert put(d, f"s{i}", b"x" * 1000, ctype="application/octet-stream").status_code == 201
    r = put(d, "more", b"x" * 1000, ctype="application/octet-stream")
    assert r.status_code == 507
    err = r.json()["error"]
    assert "the session store is full" in err and "--session-memory 4096" in err
    assert "raise --session-memory or delete sessions" in err and "--session-evict off" in err
    assert listing(d)["count"] == fit and get(d, "more").status_code == 404
    assert metric(d, "corral_session_evictions_total") == 0
    # a replacement no larger than what it replaces still fits; after a delete there is room
    assert put(d, "s0", b"y" * 1000, ctype="application/octet-stream").status_code == 200
    d.http.delete(d.url("/v1/sessions/s1"), timeout=10)
    assert put(d, "more", b"x" * 1000, ctype="application/octet-stream").status_code == 201


def test_413_over_the_size_cap(corral):
    d = corral.start("--session-max-size", "100")
    assert put(d, "s", b"x" * 100, ctype="text/plain").status_code == 201
    r = put(d, "s", b"x" * 101, ctype="text/plain")
    assert r.status_code == 413 and "--session-max-size 100 bytes" in r.json()["error"]
    r = put(d, "j", {"k": "v" * 200})
    assert r.status_code == 413
    # a merge whose result passes the cap
    assert put(d, "j", {"a": "x" * 40}).status_code == 201
    r = patch(d, "j", {"b": "y" * 70})
    assert r.status_code == 413 and "the result of the merge" in r.json()["error"]
    assert get(d, "j").json() == {"a": "x" * 40}
    assert get(d, "s").content == b"x" * 100


def test_ids_are_checked_like_model_names(corral):
    d = corral.start()
    for bad in ["a%2Fb", "-x", "a%00b", "x" * 129, "%2E%2E", "%C3%A9"]:
        r = d.http.put(d.url(f"/v1/sessions/{bad}"), data="1", timeout=10)
        assert r.status_code == 400, (bad, r.text)
        assert "invalid session id" in r.json()["error"]
        assert get(d, bad).status_code == 400
    assert put(d, "x" * 128, 1).status_code == 201
    assert put(d, "A.b_c-9", 1).status_code == 201
    assert d.get("/v1/sessions/a/b").status_code == 404  # no such endpoint
    assert listing(d)["count"] == 2


def test_patch_merges_as_rfc_7386(corral):
    d = corral.start()
    put(d, "p", {"a": {"b": 1, "c": {"d": 2}}, "keep": [1, 2], "gone": "x"})
    r = patch(d, "p", {"a": {"c": {"e": 3}, "b": None}, "gone": None, "new": {"n": None, "m": 1}})
    assert r.status_code == 200, r.text
    assert r.json()["id"] == "p" and r.json()["content_type"] == "application/json"
    assert get(d, "p").json() == {"a": {"c": {"d": 2, "e": 3}}, "keep": [1, 2], "new": {"m": 1}}
    # arrays are replaced, not merged
    patch(d, "p", {"keep": [3]})
    assert get(d, "p").json()["keep"] == [3]
    # application/json is accepted too, and so is no type
    assert patch(d, "p", {"j": 1}, ctype="application/json").status_code == 200
    assert patch(d, "p", {"k": 1}, ctype=None).status_code == 200
    # a patch that is not an object replaces the whole document
    assert patch(d, "p", [1, 2]).status_code == 200
    assert get(d, "p").json() == [1, 2]
    # an object patch on a document that is not an object starts from {}
    assert patch(d, "p", {"x": 1, "y": None}).status_code == 200
    assert get(d, "p").json() == {"x": 1}
    # ttl on a patch
    assert patch(d, "p", {"z": 1}, params={"ttl": "9"}).json()["expires_in"] == 9


def test_patch_errors_change_nothing(corral):
    d = corral.start()
    put(d, "p", {"a": 1})
    put(d, "w", b"RIFF", ctype="audio/wav")
    r = patch(d, "absent", {"a": 1})
    assert r.status_code == 404 and "no session 'absent'" in r.json()["error"]
    r = patch(d, "w", {"a": 1})
    assert r.status_code == 409 and "audio/wav" in r.json()["error"]
    r = patch(d, "p", "{bad")
    assert r.status_code == 400 and "the patch is not valid JSON" in r.json()["error"]
    r = patch(d, "p", '{"a": 1, "a": 2}')
    assert r.status_code == 400
    r = patch(d, "p", "a: 1", ctype="text/yaml")
    assert r.status_code == 415 and "application/merge-patch+json" in r.json()["error"]
    r = patch(d, "p", {"a": 2}, params={"ttl": "0"})
    assert r.status_code == 400
    assert get(d, "p").json() == {"a": 1} and get(d, "w").content == b"RIFF"
    assert listing(d)["count"] == 2


def test_list_and_methods(corral):
    d = corral.start("--session-memory", "1MiB", "--session-max-size", "4KiB")
    empty = listing(d)
    assert empty == {"sessions": [], "count": 0, "bytes": 0, "retained_bytes": 0, "memory": 1 << 20, "max_size": 4096}
    for sid in ["m", "b", "a", "Z", "a0"]:
        put(d, sid, {"id": sid}, params={"ttl": "100"})
    l = listing(d)
    assert [s["id"] for s in l["sessions"]] == ["Z", "a", "a0", "b", "m"]
    assert l["count"] == 5 and l["bytes"] > 5 * len('{"id":"m"}')
    assert metric(d, "corral_session_bytes") == l["bytes"] and metric(d, "corral_sessions") == 5
    assert metric(d, "corral_session_memory_limit_bytes") == 1 << 20
    first = l["sessions"][0]
    assert set(first) == {"id", "content_type", "size", "expires_at", "expires_in"}
    assert first["expires_in"] == 100 and first["size"] == len('{"id":"Z"}')
    r = d.post("/v1/sessions", json_body={})
    assert r.status_code == 405 and r.headers["Allow"] == "GET"
    assert d.get("/v1/sessions", params={"x": "1"}).status_code == 400
    r = d.post("/v1/sessions/a", json_body={})
    assert r.status_code == 405 and r.headers["Allow"] == "GET, PUT, PATCH, DELETE"
    # management reads count neither as hits nor as misses (those are requests that carry a session)
    get(d, "a")
    get(d, "nope")
    assert metric(d, "corral_session_hits_total") == 0 and metric(d, "corral_session_misses_total") == 0


def test_many_sessions_listed_in_order(corral):
    d = corral.start()
    s = requests.Session()
    for i in range(300):
        r = s.put(d.url(f"/v1/sessions/k{i:04d}"), data=str(i), timeout=10)
        assert r.status_code == 201
    l = listing(d)
    assert l["count"] == 300 and [x["id"] for x in l["sessions"]] == [f"k{i:04d}" for i in range(300)]
    assert get(d, "k0123").json() == 123
    s.close()


TOKEN = "s3cret-token-for-sessions"


def test_sessions_are_data_endpoints_for_access(corral, tmp_path):
    tok = tmp_path / "token"
    tok.write_text(TOKEN + "\n")
    d = corral.start("--auth-token-file", str(tok), "--auth", "management")
    assert put(d, "open", 1).status_code == 201  # open like infer under --auth management
    assert get(d, "open").status_code == 200 and listing(d)["count"] == 1
    assert d.get("/v1/models").status_code == 401  # management stays guarded
    d.stop()
    d = corral.start("--auth-token-file", str(tok))
    assert put(d, "x", 1).status_code == 401
    assert put(d, "x", 1, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 201


@pytest.mark.parametrize("args,why", [
    (["--session-evict", "fifo"], "--session-evict must be lru or off"),
    (["--session-ttl", "0"], "--session-ttl must be a whole number of seconds"),
    (["--session-ttl", "1.5s"], "--session-ttl must be a whole number of seconds"),
    (["--session-memory", "lots"], "--session-memory must be a size"),
    (["--session-max-size", "2MiB", "--session-memory", "1MiB"], "is above --session-memory"),
    (["--session-ttl", "100", "--session-max-ttl", "50"], "is above --session-max-ttl"),
])
def test_bad_flags_stop_the_daemon(tmp_path, args, why):
    (tmp_path / "models").mkdir()
    p = subprocess.run([BIN, "serve", "--models", str(tmp_path / "models"), "--port", "0", *args],
                       capture_output=True, text=True, timeout=10)
    assert p.returncode == 2 and why in p.stderr, p.stderr


def test_help_names_the_session_flags():
    out = subprocess.run([BIN, "serve", "--help"], capture_output=True, text=True, timeout=10).stdout
    for flag in ["--session-ttl", "--session-max-ttl", "--session-memory", "--session-max-size", "--session-evict"]:
        assert flag in out
