"""Streamed generate answers and cancellation (issue 10): server-sent events and NDJSON byte for byte,
chunked byte streams, errors before and after the first chunk, a worker killed mid-stream, the client
leaving (HTTP/1.1 and HTTP/2), stream_timeout, a slow reader holding the producer back, and many
streams at once. Real daemon, real workers (tests/models/streams)."""
from __future__ import annotations

import json
import subprocess
import threading
import time

import pytest
import requests

from conftest import raw_post, wait_for

SSE = {"Accept": "text/event-stream"}


def gen(d, body, headers=None, **kw):
    return d.http.post(d.url("/v1/models/s/generate"), json=body, headers=headers or {}, **kw)


def log_lines(path):
    try:
        return (path / "log").read_text().splitlines()
    except FileNotFoundError:
        return []


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@pytest.fixture
def streams(corral):
    path = corral.add("s", "streams")
    return corral, path


def test_events_are_server_sent_events_byte_for_byte(streams):
    corral, _ = streams
    d = corral.start()
    r = gen(d, {"stream": True, "events": 3, "tag": "a"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert r.content == (b'data: {"i":0,"tag":"a"}\n\n'
                         b'data: {"i":1,"tag":"a"}\n\n'
                         b'data: {"i":2,"tag":"a"}\n\n')
    # Accept alone asks for the stream too
    r = gen(d, {"events": 1}, headers=SSE)
    assert r.content == b'data: {"i":0,"tag":null}\n\n'


def test_events_as_ndjson(streams):
    corral, _ = streams
    d = corral.start()
    r = gen(d, {"stream": True, "events": 2}, headers={"Accept": "application/x-ndjson"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/x-ndjson"
    assert r.content == b'{"i":0,"tag":null}\n{"i":1,"tag":null}\n'


def test_a_byte_stream_is_a_chunked_body_of_the_models_type(streams):
    corral, _ = streams
    d = corral.start()
    r = gen(d, {"stream": True, "bytes": 300_000, "chunk": 70_000})
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/x-test"
    assert r.headers.get("transfer-encoding") == "chunked"
    assert r.content == b"x" * 300_000


def test_without_stream_the_chunks_are_collected_into_one_answer(streams):
    corral, _ = streams
    d = corral.start()
    r = gen(d, {"events": 2})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/x-ndjson"
    assert "transfer-encoding" not in r.headers and r.headers["content-length"] == str(len(r.content))
    assert r.content == b'{"i":0,"tag":null}\n{"i":1,"tag":null}\n'
    r = gen(d, {"stream": "yes"})
    assert r.status_code == 400 and "stream" in r.json()["error"]


def test_chunks_arrive_as_they_are_made(streams):
    """Five events 0.4 s apart: the first is read long before the last is made."""
    corral, _ = streams
    d = corral.start()
    gen(d, {"stream": True, "events": 1})  # the instance is loaded
    t0 = time.monotonic()
    r = gen(d, {"stream": True, "events": 5, "delay": 0.4}, stream=True)
    arrivals = []
    for line in r.iter_lines():
        if line.startswith(b"data: "):
            arrivals.append(time.monotonic() - t0)
    assert len(arrivals) == 5
    print(f"[stream] events arrived at {[round(a, 2) for a in arrivals]} s", flush=True)
    assert arrivals[0] < arrivals[-1] / 4, arrivals
    for a, b in zip(arrivals, arrivals[1:]):
        assert b - a > 0.2, arrivals  # each came when it was made, not in a burst


def test_an_error_before_the_first_chunk_is_an_ordinary_error_and_after_it_an_error_event(streams):
    corral, _ = streams
    d = corral.start()
    r = gen(d, {"stream": True, "fail_after": 0})
    assert r.status_code == 500 and "ValueError: failed after 0 chunks" in r.json()["error"], r.text
    r = gen(d, {"stream": True, "fail_after": 2})
    assert r.status_code == 200
    events = r.content.split(b"\n\n")
    assert events[:2] == [b'data: {"i":0,"tag":null}', b'data: {"i":1,"tag":null}'], r.content
    err = json.loads(events[2][len(b"data: "):])["error"]
    assert "s" in err and "ValueError: failed after 2 chunks" in err, err
    assert events[3:] == [b""]
    # the instance is fine
    assert gen(d, {"stream": True, "events": 1}).status_code == 200


def test_a_worker_killed_mid_stream_ends_it_with_an_error_event_naming_it(streams):
    corral, _ = streams
    d = corral.start()
    r = gen(d, {"stream": True, "exit_after": 2})
    assert r.status_code == 200
    events = r.content.split(b"\n\n")
    assert len(events) == 4 and events[3] == b"", r.content
    err = json.loads(events[2][len(b"data: "):])["error"]
    assert "instance 0" in err and "pid" in err and "exited with status 3" in err, err
    wait_for(lambda: d.model("s")["instances"][0]["state"] == "ready", timeout=20, what="the replacement")


def test_a_failed_byte_stream_is_truncated_not_ended(streams):
    """HTTP/1.1: no final zero-length chunk, so a client cannot mistake it for a whole body."""
    corral, path = streams
    # a byte stream that raises after two chunks: the model's own file, patched for this test
    worker = path / "worker.py"
    worker.write_text(worker.read_text().replace(
        "                total -= take\n",
        "                total -= take\n                if n == 2 and request.json.get('break'):\n"
        "                    raise RuntimeError('broke')\n"))
    d = corral.start()
    with raw_post(d, "/v1/models/s/generate", {"stream": True, "bytes": 100_000, "chunk": 1000, "break": True}) as s:
        raw = b""
        while True:
            got = s.recv(65536)
            if not got:
                break
            raw += got
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert b" 200 " in head.split(b"\r\n")[0] and b"chunked" in head.lower(), head
    assert b"x" * 2000 in rest.replace(b"\r\n", b"").replace(b"3e8", b"")
    assert not rest.endswith(b"0\r\n\r\n"), rest[-20:]


def disconnect_after_first_event(d, body):
    """Opens a stream over HTTP/1.1, reads until its first event, and closes the connection."""
    s = raw_post(d, "/v1/models/s/generate", body)
    raw = b""
    while b"data: " not in raw:
        got = s.recv(4096)
        assert got, raw
        raw += got
    s.close()
    return time.monotonic()


def test_a_client_leaving_a_stream_cancels_it_and_frees_the_instance_http1(streams):
    corral, path = streams
    d = corral.start()
    gen(d, {"stream": True, "events": 1})
    left = disconnect_after_first_event(d, {"stream": True, "forever": True})
    wait_for(lambda: any("cancelled=1" in line for line in log_lines(path)), timeout=5,
             what="the model to see the cancellation")
    r = gen(d, {"stream": True, "events": 1})
    took = time.monotonic() - left
    assert r.status_code == 200
    print(f"[cancel-h1] the next request was served {took:.2f} s after the client left", flush=True)
    assert took < 1.5, took
    m = d.model("s")
    assert m["instances"][0]["restarts"] == 0, m  # the worker gave the stream up; nothing was killed


@pytest.mark.skipif(subprocess.run(["curl", "--version"], capture_output=True).stdout.find(b"HTTP2") < 0,
                    reason="curl without HTTP/2")
def test_a_client_leaving_a_stream_cancels_it_http2(streams):
    corral, path = streams
    d = corral.start()
    gen(d, {"stream": True, "events": 1})
    # curl over HTTP/2 (prior knowledge) gives up after 1 s: its connection goes, and the stream with it
    p = subprocess.run(["curl", "-s", "-N", "--http2-prior-knowledge", "--max-time", "1", "-H",
                        "Content-Type: application/json", "-d", '{"stream": true, "forever": true}',
                        "-o", "-", "-w", "%{http_version}", d.url("/v1/models/s/generate")],
                       capture_output=True, timeout=20)
    left = time.monotonic()
    assert p.stdout.startswith(b"data: "), p.stdout[:200]
    wait_for(lambda: any("cancelled=1" in line for line in log_lines(path)), timeout=5,
             what="the model to see the cancellation")
    assert gen(d, {"stream": True, "events": 1}).status_code == 200
    assert time.monotonic() - left < 1.5


def test_a_non_streamed_request_whose_client_left_is_cancelled(streams):
    corral, path = streams
    d = corral.start()
    gen(d, {"events": 1})
    s = raw_post(d, "/v1/models/s/generate", {"wait": 30})
    wait_for(lambda: d.model("s")["instances"][0]["inflight"] == 1, timeout=5, what="the request to run")
    s.close()
    left = time.monotonic()
    wait_for(lambda: "wait yields=0 cancelled=1" in log_lines(path), timeout=5, what="the model to see it")
    assert gen(d, {"events": 1}).status_code == 200
    took = time.monotonic() - left
    print(f"[cancel-plain] the instance served again {took:.2f} s after the client left", flush=True)
    assert took < 1.5, took


def test_stream_timeout_ends_a_stream_that_runs_too_long(corral):
    path = corral.add("s", "streams", manifest="runtime: python\nentrypoint: worker.py\nstream_timeout: 1s\n")
    d = corral.start()
    t0 = time.monotonic()
    r = gen(d, {"stream": True, "forever": True})
    took = time.monotonic() - t0
    assert r.status_code == 200
    last = r.content.rstrip(b"\n").split(b"\n\n")[-1]
    err = json.loads(last[len(b"data: "):])["error"]
    assert "stream_timeout" in err, err
    assert 0.9 < took < 4, took
    wait_for(lambda: any("cancelled=1" in line for line in log_lines(path)), timeout=5, what="the cancellation")
    assert gen(d, {"stream": True, "events": 1}).status_code == 200


def test_a_deadline_cancels_a_request_without_replacing_an_obedient_worker(corral):
    path = corral.add("s", "streams", manifest="runtime: python\nentrypoint: worker.py\ntimeout: 700ms\n")
    d = corral.start()
    gen(d, {"events": 1})
    pid = d.model("s")["instances"][0]["pid"]
    r = gen(d, {"wait": 30})
    assert r.status_code == 504 and "cancelled" in r.json()["error"], r.text
    wait_for(lambda: "wait yields=0 cancelled=1" in log_lines(path), timeout=5, what="the model to see it")
    assert gen(d, {"events": 1}).status_code == 200
    inst = d.model("s")["instances"][0]
    assert inst["pid"] == pid and inst["restarts"] == 0, inst


def test_a_slow_reader_holds_the_producer_back(streams):
    """A 100 MiB stream read at a trickle: the model's yields stop at the window (plus socket buffers),
    and the daemon's memory does not grow with the stream."""
    corral, path = streams
    d = corral.start()
    gen(d, {"stream": True, "events": 1})
    before = rss_kib(d.proc.pid)
    s = raw_post(d, "/v1/models/s/generate", {"stream": True, "bytes": 100 << 20, "chunk": 16384}, rcvbuf=16384,
                 timeout=10)
    got = 0
    for _ in range(30):  # 3 s at 10 KiB/s
        got += len(s.recv(1024))
        time.sleep(0.1)
    during = rss_kib(d.proc.pid)
    s.close()
    line = wait_for(lambda: [x for x in log_lines(path) if x.startswith("bytes")], timeout=10,
                    what="the stream to end")[0]
    yields = int(line.split()[1].split("=")[1])
    print(f"[slow-reader] read {got} bytes; the model yielded {yields} chunks of 16 KiB "
          f"({yields * 16 / 1024:.1f} MiB); daemon RSS {before} -> {during} KiB", flush=True)
    assert "cancelled=1" in line
    assert yields * 16384 < 24 << 20, line  # the window and the socket buffers, not 100 MiB
    assert during - before < 8 * 1024, (before, during)


def test_many_concurrent_streams_each_get_their_own_chunks_in_order(corral):
    corral.add("s", "streams", manifest="runtime: python\nentrypoint: worker.py\ninstances: 4\nconcurrency: 8\n"
                                        "max_queue: 256\n")
    d = corral.start()
    gen(d, {"stream": True, "events": 1})
    results, errors = {}, []

    def one(k):
        try:
            r = requests.post(d.url("/v1/models/s/generate"), json={"stream": True, "events": 20, "tag": k,
                                                                    "delay": 0.005}, timeout=60)
            results[k] = r.content
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=one, args=(k,)) for k in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    for k in range(100):
        want = b"".join(b'data: {"i":%d,"tag":%d}\n\n' % (i, k) for i in range(20))
        assert results[k] == want, (k, results[k][:200])


# ---- the C SDK's examples through the daemon: tts-espeak streams audio, echo-c streams and is cancelled

LONG_TEXT = " ".join(["Audio that plays while it is made reaches the listener long before the whole file would."] * 12)


def test_tts_audio_streams_first_audio_long_before_the_end_and_is_a_valid_wav(corral):
    corral.add("tts-espeak", "tts-espeak")
    d = corral.start()
    whole = d.post("/v1/models/tts-espeak/generate", {"text": "Warm up."})  # the instance is loaded and ready
    assert whole.status_code == 200, whole.text
    t0 = time.monotonic()
    r = d.http.post(d.url("/v1/models/tts-espeak/generate"), json={"text": LONG_TEXT, "stream": True},
                    stream=True, timeout=60)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "audio/wav" and r.headers.get("transfer-encoding") == "chunked"
    data, first_audio = b"", None
    for piece in r.iter_content(chunk_size=None):
        data += piece
        if first_audio is None and len(data) > 44:
            first_audio = time.monotonic() - t0
    total = time.monotonic() - t0
    print(f"[tts-stream] first audio after {first_audio * 1000:.1f} ms, whole {len(data)} bytes after "
          f"{total * 1000:.1f} ms", flush=True)
    assert first_audio < total / 10, (first_audio, total)
    import io
    import wave
    with wave.open(io.BytesIO(data)) as wf:  # valid once complete: sizes say "unknown", readers read to the end
        assert (wf.getnchannels(), wf.getsampwidth()) == (1, 2)
        frames = wf.readframes(1 << 30)
    assert len(frames) == len(data) - 44 and len(frames) / 2 / wf.getframerate() > 20  # over 20 s of speech
    r = d.post("/v1/models/tts-espeak/generate", {"text": "Raw.", "format": "l16", "stream": True})
    assert r.status_code == 200 and r.headers["content-type"].startswith("audio/L16; rate=")
    assert r.content[:4] != b"RIFF" and len(r.content) % 2 == 0


def test_echo_c_chunks_stream_as_events_and_a_client_that_leaves_frees_the_c_instance(corral):
    corral.add("e", "echo-c")
    d = corral.start()
    r = d.post("/v1/models/e/generate", {"chunks": [{"a": 1}, {"b": "two"}], "stream": True})
    assert r.status_code == 200
    assert r.content == b'data: {"a":1}\n\ndata: {"b":"two"}\n\n'
    r = d.post("/v1/models/e/generate", {"chunks": [{"a": 1}, {"b": "two"}]})
    assert r.headers["content-type"] == "application/x-ndjson" and r.content == b'{"a":1}\n{"b":"two"}\n'
    # A non-streamed infer sleeping 30 s; its client leaves; the C model's cancel callback ends the sleep.
    s = raw_post(d, "/v2/models/e/infer", {"inputs": [{"name": "INPUT0", "datatype": "INT32", "shape": [1], "data": [1]}],
                                           "parameters": {"delay_ms": 30000}}, timeout=10)
    wait_for(lambda: d.model("e")["instances"][0]["inflight"] == 1, timeout=5, what="the request to run")
    pid = d.model("e")["instances"][0]["pid"]
    s.close()
    left = time.monotonic()
    r = d.infer("e", [{"name": "INPUT0", "datatype": "INT32", "shape": [1], "data": [2]}])
    took = time.monotonic() - left
    assert r.status_code == 200, r.text
    print(f"[cancel-c] the C instance served again {took:.2f} s after the client left", flush=True)
    assert took < 1.5, took
    inst = d.model("e")["instances"][0]
    assert inst["pid"] == pid and inst["restarts"] == 0, inst
