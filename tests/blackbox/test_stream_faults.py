"""A worker that breaks the stream rules of the worker protocol (docs/worker-protocol.md, "Streams" and
"Cancellation") cannot hurt the daemon: each violation gets its client a precise error (an error response
naming the model before the first chunk; an error event, or a truncated byte stream, after it), the worker
is replaced, and the daemon serves on, a stream of another model in flight meanwhile included. Also what
the rules allow (a chunk larger than the window when nothing is outstanding, exactly a window uncredited,
chunks that cross a CANCEL), a worker that ignores CANCEL, and the keep-alive comments of a silent event
stream. Fixture: tests/models/raw_protocol in its script modes, a worker that sends the frames each
request's script lists."""
from __future__ import annotations

import json
import re
import threading
import time

import pytest
import requests

from conftest import alive, wait_for
from conftest import raw_post as conftest_raw_post

WINDOW = 1 << 20  # stream_window (src/proto.h PROTO_STREAM_WINDOW)


def first_event(text):
    return {"chunk": text, "meta": {"events": True}}


def first_bytes(text):
    return {"chunk": text, "meta": {"content_type": "text/x-test"}}


END = {"end": True}
GOOD = [first_event('{"ok":1}'), END]


def add_raw(corral, name, mode="script", extra=""):
    corral.add(name, "raw_protocol",
               manifest=f"runtime: exec\nentrypoint: worker.py\nargs: [{mode}]\nload: eager\n{extra}")


def start(corral, mode="script", extra=""):
    """A daemon with model 'raw' (the worker under test, replaced within 10 ms of a crash) and 'other' (a
    well-behaved one), both loading."""
    add_raw(corral, "raw", mode, "restart: {backoff_min: 10ms}\n" + extra)
    add_raw(corral, "other")
    return corral.start()


def generate(d, model, script, stream=True):
    body = {"script": script, **({"stream": True} if stream else {})}
    return d.http.post(d.url(f"/v1/models/{model}/generate"), json=body, timeout=30)


def infer(d, model, script):
    body = {"inputs": [{"name": "X", "datatype": "INT32", "shape": [1], "data": [0]}], "parameters": {"script": script}}
    return d.post(f"/v2/models/{model}/infer", body)


def serving_pid(d, model):
    """Asks the model for its worker's pid (a GENERATE without a script is answered whole with it)."""
    r = d.http.post(d.url(f"/v1/models/{model}/generate"), json={}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["pid"]


def sse_events(content):
    """The data of each event of an SSE body, as bytes; asserts the framing."""
    assert content.endswith(b"\n\n"), content[-200:]
    events = content[:-2].split(b"\n\n")
    for e in events:
        assert e.startswith(b"data: "), (e[:100], content[:300])
    return [e[len(b"data: "):] for e in events]


def raw_post(d, path, body, headers=b"", rcvbuf=None):
    """A request over a raw HTTP/1.1 socket that asks the daemon to close after the response."""
    return conftest_raw_post(d, path, body, headers=headers, close=True, rcvbuf=rcvbuf)


def read_to_eof(s):
    raw = b""
    while True:
        got = s.recv(1 << 16)
        if not got:
            return raw
        raw += got


def dechunk(raw):
    """A chunked HTTP/1.1 response: (status line, data, whether it ended with the zero-length chunk).
    A response cut short, or broken on purpose (h2o ends a failed one with a chunk it never sends), did not."""
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower(), head
    data = b""
    while True:
        size_line, sep, rest = rest.partition(b"\r\n")
        if not sep or not re.fullmatch(rb"[0-9a-f]+", size_line):
            return head.split(b"\r\n")[0], data, False
        size = int(size_line, 16)
        if size == 0:
            return head.split(b"\r\n")[0], data, rest == b"\r\n"
        data += rest[:size]
        if rest[size:size + 2] != b"\r\n":
            return head.split(b"\r\n")[0], data, False
        rest = rest[size + 2:]


class OtherStream:
    """A stream of model 'other' that runs across a fault of 'raw': it must arrive whole."""

    SCRIPT = [first_event("1"), {"sleep": 0.3}, {"chunk": "2"}, END]

    def __init__(self, d):
        self.d, self.result, self.error = d, None, None
        self.thread = threading.Thread(target=self._run)
        self.thread.start()
        wait_for(lambda: [i for i in self.d.model("other")["instances"] if i["inflight"] == 1], timeout=10,
                 what="the other model's stream to run")

    def _run(self):
        try:
            self.result = requests.post(self.d.url("/v1/models/other/generate"),
                                        json={"stream": True, "script": self.SCRIPT}, timeout=30)
        except Exception as e:  # noqa: BLE001 - reported in check()
            self.error = e

    def check(self):
        self.thread.join(30)
        assert self.error is None and not self.thread.is_alive(), self.error
        assert self.result.status_code == 200 and self.result.content == b"data: 1\n\ndata: 2\n\n", \
            self.result.content[:300]


def reason(text, why):
    """The violation as text tells it: why, with {id} standing for the request's id."""
    m = re.search(re.escape(why).replace(re.escape("{id}"), r"\d+"), text)
    assert m, (why, text[-2000:])
    return m.group(0)


def assert_replaced(d, old_pid, why, streams=True):
    """The worker that broke the rules was killed for it, and a new one serves 'raw' (streams too, if it may)."""
    wait_for(lambda: not alive(old_pid), timeout=10, what=f"pid {old_pid} to be killed")
    killed = f"(pid {old_pid}): broke the protocol: "
    assert [line for line in d.log().splitlines() if killed in line and why in line], (why, d.log()[-3000:])
    inst = wait_for(lambda: (lambda i: i if i["state"] == "ready" and i["pid"] not in (0, old_pid) else None)(
        d.model("raw")["instances"][0]), timeout=15, what="the replacement")
    assert inst["restarts"] == 1, inst
    if streams:
        r = generate(d, "raw", GOOD)
        assert r.status_code == 200 and r.content == b'data: {"ok":1}\n\n', r.content[:300]
    assert serving_pid(d, "raw") == inst["pid"]


# Violations caught before the first chunk reached the client, which gets an ordinary error response:
# (worker mode, request: a streamed or whole GENERATE or an INFER, the worker's script, the reason logged).
BEFORE = {
    "chunk-for-a-whole-generate": (
        "script", "whole", [first_event("1"), END], "sent a CHUNK for request {id}, which is not streamed"),
    "end-for-a-whole-generate": ("script", "whole", [END], "sent END for request {id}, which is not streamed"),
    "chunk-for-an-infer": (
        "script", "infer", [first_event("1"), END], "sent a CHUNK for request {id}, which is not streamed"),
    "end-for-an-infer": ("script", "infer", [END], "sent END for request {id}, which is not streamed"),
    "first-chunk-without-meta": (
        "script", "stream", [{"chunk": "1"}, END],
        "began the stream of request {id} with a CHUNK whose meta names neither events nor a content type"),
    "first-chunk-meta-empty-object": (
        "script", "stream", [{"chunk": "1", "meta": {}}, END], "whose meta names neither events nor a content type"),
    "first-chunk-events-false": (
        "script", "stream", [{"chunk": "1", "meta": {"events": False}}, END], "whose meta names neither events"),
    "first-chunk-empty-content-type": (
        "script", "stream", [{"chunk": "1", "meta": {"content_type": ""}}, END], "whose meta names neither events"),
    "first-chunk-content-type-with-crlf": (
        "script", "stream", [{"chunk": "1", "meta": {"content_type": "text/plain\r\nX-Injected: 1"}}, END],
        "whose meta names neither events"),
    "first-chunk-meta-not-json": (
        "script", "stream", [{"chunk": "1", "meta_raw": "events"}, END], "whose meta names neither events"),
    "first-event-not-json": ("script", "stream", [first_event("{nope"), END], "that is not one line of JSON"),
    "chunk-from-a-worker-that-does-not-stream": (
        "script-nostream", "stream", [first_event("1"), END],
        'sent a CHUNK for request {id}, though its HELLO did not say "stream": true'),
    "end-from-a-worker-that-does-not-stream": (
        "script-nostream", "stream", [END], 'sent END for request {id}, though its HELLO did not say "stream": true'),
}


@pytest.mark.parametrize("case", list(BEFORE))
def test_a_violation_before_the_first_chunk_is_an_error_response(corral, case):
    mode, request, script, why = BEFORE[case]
    d = start(corral, mode)
    pid = serving_pid(d, "raw")
    other = OtherStream(d)
    r = infer(d, "raw", script) if request == "infer" else generate(d, "raw", script, stream=request == "stream")
    assert r.status_code == 502, (r.status_code, r.content[:300])
    err = r.json()["error"]
    assert err.startswith(f"model 'raw' instance 0 (pid {pid}) "), err
    assert_replaced(d, pid, reason(err, why), streams=mode == "script")
    other.check()


# Violations after the first chunk went out: an event stream ends with an error event, a byte stream truncated.
AFTER = {
    "meta-on-a-later-event": ([first_event("1"), {"chunk": "2", "meta": {"events": True}}, END],
                              "sent a CHUNK with meta after the first of request {id}"),
    "meta-on-a-later-byte-chunk": ([first_bytes("ab"), {"chunk": "cd", "meta": {"content_type": "text/x-test"}}, END],
                                   "sent a CHUNK with meta after the first of request {id}"),
    "event-with-a-newline": ([first_event("1"), {"chunk": '{"a":\n1}'}, END], "that is not one line of JSON"),
    "event-with-a-carriage-return": ([first_event("1"), {"chunk": '{"a":\r1}'}, END], "that is not one line of JSON"),
    "event-not-json": ([first_event("1"), {"chunk": '{"a":1'}, END], "that is not one line of JSON"),
    "event-of-two-json-values": ([first_event("1"), {"chunk": "1 2"}, END], "that is not one line of JSON"),
    "event-empty": ([first_event("1"), {"chunk": ""}, END], "that is not one line of JSON"),
    "event-not-utf8": ([first_event("1"), {"hex": "22ff22"}, END], "that is not one line of JSON"),
    "generate-result-after-an-event": ([first_event("1"), {"result": "whole"}],
                                       "sent a GENERATE_RESULT for request {id} after its stream began"),
    "generate-result-after-a-byte-chunk": ([first_bytes("ab"), {"result": "whole"}],
                                           "sent a GENERATE_RESULT for request {id} after its stream began"),
}


@pytest.mark.parametrize("case", list(AFTER))
def test_a_violation_after_the_first_chunk_ends_the_stream_with_an_error(corral, case):
    script, why = AFTER[case]
    d = start(corral)
    pid = serving_pid(d, "raw")
    other = OtherStream(d)
    if script[0]["meta"].get("events"):
        r = generate(d, "raw", script)
        assert r.status_code == 200, r.text
        events = sse_events(r.content)
        assert events[0] == b"1" and len(events) == 2, r.content
        err = json.loads(events[1])["error"]
        assert err.startswith(f"model 'raw' instance 0 (pid {pid}) "), err
        want = reason(err, why)
    else:
        with raw_post(d, "/v1/models/raw/generate", {"stream": True, "script": script}) as s:
            status, data, ended = dechunk(read_to_eof(s))
        assert b" 200 " in status and data == b"ab" and not ended, (status, data, ended)
        want = reason(d.log(), why)  # a byte stream cannot say why: the daemon's log does
    assert_replaced(d, pid, want)
    other.check()


def test_what_a_worker_sends_behind_its_violation_does_not_count(corral):
    """An END in the same write as the frame that breaks the rules: a large frame is read to its last byte,
    so the END is read on its own, after the worker was killed. It must not end the broken stream cleanly,
    nor answer a request whose stream never began."""
    d = start(corral)
    pid = serving_pid(d, "raw")
    r = generate(d, "raw", [first_event("1"), {"size": 200_000, "meta": {"events": True}, "and_end": True}])
    assert r.status_code == 200
    events = sse_events(r.content)
    assert events[0] == b"1" and len(events) == 2, r.content[:300]
    err = json.loads(events[1])["error"]
    assert_replaced(d, pid, reason(err, "sent a CHUNK with meta after the first of request {id}"))
    pid = serving_pid(d, "raw")
    r = generate(d, "raw", [{"size": 200_000, "meta": {}, "and_end": True}])
    assert r.status_code == 502, (r.status_code, r.content[:300])
    wait_for(lambda: not alive(pid), timeout=10, what=f"pid {pid} to be killed")
    assert "whose meta names neither events nor a content type" in r.json()["error"], r.text


# ---------------------------------------------------------------- the window


def window_filled(d, times):
    """Waits until the worker said, times times, that it holds exactly a window uncredited."""
    wait_for(lambda: d.get("/v1/models/raw/logs").text.count(f"raw_protocol: {WINDOW} bytes sent and not credited")
             >= times, timeout=10, what="the worker to fill the window")
    time.sleep(0.2)  # and the daemon has read what it sent next


def test_exactly_a_window_uncredited_is_allowed_and_one_chunk_more_is_not(corral):
    """A client that reads nothing yet: the worker sends, obeying the window, until credit stops (the socket
    buffers are full), tops up to exactly stream_window uncredited, and then waits for credit (allowed)
    or sends one more chunk (an overrun). Then the client reads it all."""
    d = start(corral)
    pid = serving_pid(d, "raw")
    fill = [first_event("0"), {"size": 65536, "repeat": 1024, "obey": 0.3}, {"fill": True}]
    s = raw_post(d, "/v1/models/raw/generate", {"stream": True, "script": fill + [{"credit": True}, END]},
                 rcvbuf=4096)
    window_filled(d, 1)
    with s:
        status, data, ended = dechunk(read_to_eof(s))
    assert b" 200 " in status and ended, (status, data[-300:])
    events = sse_events(data)
    assert events[0] == b"0" and len(events) > 1 and all(e.startswith(b'"xxx') for e in events[1:]), events[-1][:300]
    assert d.model("raw")["instances"][0]["pid"] == pid
    # the same, with one more chunk, as small as an event can be
    s = raw_post(d, "/v1/models/raw/generate", {"stream": True, "script": fill + [{"size": 2}, END]}, rcvbuf=4096)
    window_filled(d, 2)
    # Read only once the daemon has taken the chunk past the window (it kills the worker for it): a client
    # reading sooner would let the daemon credit the window back first, and the chunk would be within it.
    wait_for(lambda: not alive(pid), timeout=10, what=f"pid {pid} to be killed for the overrun")
    with s:
        status, data, ended = dechunk(read_to_eof(s))
    assert b" 200 " in status and ended, status
    events = sse_events(data)
    assert events[-1].startswith(b'{"error":'), events[-1][:300]
    err = json.loads(events[-1])["error"]
    assert err.startswith(f"model 'raw' instance 0 (pid {pid}) "), err
    assert_replaced(d, pid, reason(err, f"overran the {WINDOW}-byte window of request {{id}}'s stream"))


def test_one_chunk_larger_than_the_window_is_allowed_when_nothing_is_outstanding(corral):
    d = start(corral)
    pid = serving_pid(d, "raw")
    big = 3 * WINDOW
    script = [{"size": big, "meta": {"content_type": "text/x-test"}}, {"credit": True}, {"size": big}, END]
    r = generate(d, "raw", script)
    assert r.status_code == 200 and r.headers["content-type"] == "text/x-test"
    chunk = b'"' + b"x" * (big - 2) + b'"'
    assert r.content == chunk + chunk, len(r.content)
    inst = d.model("raw")["instances"][0]
    assert inst["pid"] == pid and inst["restarts"] == 0, inst


# ---------------------------------------------------------------- cancellation


def cancels_logged(d):
    return d.get("/v1/models/raw/logs").text.count("raw_protocol: CANCEL of request ")


def test_chunks_that_cross_a_cancel_are_dropped_and_the_worker_kept(corral):
    d = start(corral, extra="stream_timeout: 300ms\n")
    pid = serving_pid(d, "raw")
    script = [first_event("1"), {"cancel": True}, {"chunk": "2", "repeat": 50}, {"size": 65536, "repeat": 40}, END]
    r = generate(d, "raw", script)
    assert r.status_code == 200
    events = sse_events(r.content)
    assert events[0] == b"1" and len(events) == 2 and "stream_timeout" in json.loads(events[1])["error"], events
    wait_for(lambda: cancels_logged(d) == 1, timeout=5, what="the worker to get the CANCEL")
    # the worker sent 2.6 MiB after the CANCEL without waiting for credit, and its END: the slot is free at once
    t0 = time.monotonic()
    assert serving_pid(d, "raw") == pid
    assert time.monotonic() - t0 < 1
    assert d.model("raw")["instances"][0]["restarts"] == 0
    assert "broke the protocol" not in d.log()


def test_a_worker_that_ignores_cancel_is_killed_after_the_grace_and_replaced(corral):
    """INST_CANCEL_GRACE_MS (5 s, a compile-time constant) after the CANCEL; meanwhile the model's next
    request waits for the slot, and other models are served."""
    d = start(corral, extra="stream_timeout: 300ms\n")
    pid = serving_pid(d, "raw")
    r = generate(d, "raw", [first_event("1"), {"sleep": 30}])
    assert r.status_code == 200
    events = sse_events(r.content)
    assert events[0] == b"1" and len(events) == 2 and "stream_timeout" in json.loads(events[1])["error"], events
    cancelled = time.monotonic()
    wait_for(lambda: cancels_logged(d) == 1, timeout=5, what="the worker to get the CANCEL")
    queued = {}
    waiter = threading.Thread(target=lambda: queued.setdefault("pid", serving_pid(d, "raw")))
    waiter.start()
    t0 = time.monotonic()
    r = generate(d, "other", GOOD)
    assert r.status_code == 200 and r.content == b'data: {"ok":1}\n\n' and time.monotonic() - t0 < 1
    assert alive(pid) and "pid" not in queued
    wait_for(lambda: not alive(pid), timeout=10, what="the worker to be killed")
    took = time.monotonic() - cancelled
    print(f"[cancel-grace] killed {took:.2f} s after the CANCEL", flush=True)
    assert 4.5 < took < 7, took
    assert reason(d.log(), f"(pid {pid}): ignored CANCEL of request {{id}} for 5000 ms; killing it")
    waiter.join(15)
    inst = d.model("raw")["instances"][0]
    assert queued.get("pid") == inst["pid"] != pid and inst["restarts"] == 1, (queued, inst)
    assert generate(d, "raw", GOOD).content == b'data: {"ok":1}\n\n'


# ---------------------------------------------------------------- keep-alive


def read_timed(s, until):
    """Reads a raw response until until(bytes so far) holds or EOF: [(seconds since the call, bytes)]."""
    t0, got, raw = time.monotonic(), [], b""
    while not until(raw):
        data = s.recv(1 << 16)
        if not data:
            break
        raw += data
        got.append((time.monotonic() - t0, data))
    return got


def test_a_silent_event_stream_gets_keep_alive_comments(corral):
    """SSE: a comment after 5 s (generate.h GENERATE_HEARTBEAT_MS) of silence, on the wire between the events;
    NDJSON, which has no comments, gets none."""
    d = start(corral)
    serving_pid(d, "raw")
    serving_pid(d, "other")
    script = [first_event("1"), {"sleep": 7}, {"chunk": "2"}, END]
    sse = raw_post(d, "/v1/models/raw/generate", {"stream": True, "script": script})
    nd = raw_post(d, "/v1/models/other/generate", {"stream": True, "script": script},
                  headers=b"Accept: application/x-ndjson\r\n")
    results = {}
    readers = [threading.Thread(target=lambda k=k, s=s: results.setdefault(k, read_timed(s, lambda b: b.endswith(
        b"0\r\n\r\n")))) for k, s in (("sse", sse), ("nd", nd))]
    for t in readers:
        t.start()
    for t in readers:
        t.join(20)
    sse.close()
    nd.close()
    got = results["sse"]
    first = next(t for t, b in got if b"data: 1" in b)
    beat = [t for t, b in got if b": keep-alive" in b]
    second = next(t for t, b in got if b"data: 2" in b)
    print(f"[keep-alive] first event at {first:.2f} s, keep-alive at {beat}, second event at {second:.2f} s",
          flush=True)
    # the heartbeat ticks every second: the first tick 5 s or more after the first event sends it
    assert len(beat) == 1 and first + 4.9 < beat[0] < first + 6.9 and beat[0] < second, (first, beat, second)
    status, data, ended = dechunk(b"".join(b for _, b in got))
    assert b" 200 " in status and ended
    assert data == b"data: 1\n\n: keep-alive\n\ndata: 2\n\n", data
    status, data, ended = dechunk(b"".join(b for _, b in results["nd"]))
    assert ended and data == b"1\n2\n", data
