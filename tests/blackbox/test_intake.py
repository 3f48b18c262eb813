"""Connection intake: the answer to a refused upload reaches a client that is still sending
(lingering close), and request bodies held at once are bounded by --max-inflight-body.

See src/intake.h. The uploads here are raw sockets or `requests`, which writes the whole body
before it reads anything: the clients that a reset after an early answer used to break.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
import weakref

import pytest
import requests

from conftest import tensor, wait_for

MiB = 1 << 20


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def port_of(d) -> int:
    return int(d.base.rsplit(":", 1)[1])


def connect(d, timeout: float = 10) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port_of(d)), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def head(path: str, length: int | None = None, chunked: bool = False, ctype: str = "application/json") -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: localhost", f"Content-Type: {ctype}"]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


_unread: "weakref.WeakKeyDictionary[socket.socket, bytes]" = weakref.WeakKeyDictionary()
"""Bytes read past the end of a response, by socket: pipelined answers can come in one segment."""


def read_response(s: socket.socket) -> tuple[int, dict, bytes]:
    """Reads one HTTP/1.1 response with a Content-Length from s."""
    buf = _unread.pop(s, b"")
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed before a response head: {buf!r}")
        buf += chunk
    raw, rest = buf.split(b"\r\n\r\n", 1)
    lines = raw.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    n = int(headers.get("content-length", "0"))
    while len(rest) < n:
        chunk = s.recv(65536)
        if not chunk:
            break
        rest += chunk
    if len(rest) > n:
        _unread[s] = rest[n:]
    return status, headers, rest[:n]


def body_of(n: int) -> bytes:
    """A JSON v2 request of exactly n bytes: one small input, padded with trailing whitespace."""
    text = json.dumps({"inputs": [tensor("INPUT0", "INT32", [1], [7])]}).encode()
    assert len(text) <= n
    return text + b" " * (n - len(text))


def send_all_then_read(d, path: str, body: bytes) -> tuple[int, dict, bytes]:
    """What `requests` does: the whole body, then the answer. A reset fails the test."""
    s = connect(d, timeout=20)
    try:
        s.sendall(head(path, len(body)) + body)
        return read_response(s)
    finally:
        s.close()


# ---------------------------------------------------------------- lingering close

def test_oversized_body_gets_413_json_not_a_reset(corral):
    corral.add("echo", "echo")
    d = corral.start("--max-body", "1MiB")
    big = b"{" + b" " * (8 * MiB) + b"}"
    for _ in range(5):
        r = requests.post(d.url("/v2/models/echo/infer"), data=big, headers={"Content-Type": "application/json"},
                          timeout=30)
        assert r.status_code == 413, r.text
        assert "--max-body 1048576" in r.json()["error"] and "echo" in r.json()["error"]
    for _ in range(3):  # a raw socket that writes everything before it reads
        status, headers, text = send_all_then_read(d, "/v2/models/echo/infer", big)
        assert status == 413 and headers["connection"] == "close", (status, headers)
        assert "echo" in json.loads(text)["error"]
    # A keep-alive session: the refused connection is closed, the next request takes a new one.
    small = {"inputs": [tensor("INPUT0", "INT32", [2], [1, 2])]}
    assert d.post("/v2/models/echo/infer", data=big, headers={"Content-Type": "application/json"}).status_code == 413
    r = d.infer("echo", small["inputs"])
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == [1, 2]
    r = d.infer("echo", small["inputs"])  # and the connection it took stays usable
    assert r.status_code == 200, r.text


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_client_that_closes_first_is_closed_at_once(corral):
    corral.add("echo", "echo")
    d = corral.start("--max-body", "1KiB")
    assert d.get("/v2/health/ready").status_code == 200
    d.http.close()
    time.sleep(0.2)
    baseline = open_fds(d.proc.pid)
    for pause in (0, 0.3):  # closing before the daemon's close, and while it lingers
        s = connect(d)
        s.sendall(head("/v2/models/echo/infer", 100 * 1024) + b"x" * 2048)
        assert read_response(s)[0] == 413
        time.sleep(pause)
        s.close()
        wait_for(lambda: open_fds(d.proc.pid) == baseline, timeout=1, what="the daemon to close the connection")


def test_lingering_is_bounded_in_time(corral):
    corral.add("echo", "echo")
    d = corral.start("--max-body", "1KiB")
    assert d.get("/v2/health/ready").status_code == 200
    d.http.close()
    time.sleep(0.2)
    baseline = open_fds(d.proc.pid)
    s = connect(d)
    s.sendall(head("/v2/models/echo/infer", 100 * 1024) + b"x" * 2048)
    assert read_response(s)[0] == 413
    t0 = time.monotonic()
    s.settimeout(5)
    assert s.recv(1) == b""  # the daemon's FIN follows the answer; it still reads, for a while
    time.sleep(1)
    assert open_fds(d.proc.pid) == baseline + 1
    # We stay open and silent: after the idle bound (2 s) the daemon closes.
    wait_for(lambda: open_fds(d.proc.pid) == baseline, timeout=4, what="the lingering close to end")
    assert time.monotonic() - t0 > 1.5
    s.close()


# ---------------------------------------------------------------- the request-body budget

def hold_upload(d, path: str, body: bytes, sent: int) -> socket.socket:
    """An upload whose head and first `sent` bytes are in, held open: its body is charged to the budget."""
    s = connect(d)
    s.sendall(head(path, len(body)) + body[:sent])
    time.sleep(0.3)
    return s


def test_budget_refuses_with_503_then_takes_the_body(corral):
    corral.add("echo", "echo")
    d = corral.start("--max-body", "3MiB", "--max-inflight-body", "4MiB")
    path = "/v2/models/echo/infer"
    body = body_of(3 * MiB)
    slow = hold_upload(d, path, body, 5 * MiB // 2)
    status, headers, text = send_all_then_read(d, path, body)
    assert status == 503, (status, text)
    assert headers["retry-after"] == "1"
    err = json.loads(text)["error"]
    assert f"holds {len(body)} bytes" in err and "--max-inflight-body 4194304" in err and "echo" in err, err
    # requests sees the same answer (and no reset)
    r = requests.post(d.url(path), data=body, headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 503 and "--max-inflight-body" in r.json()["error"], r.text
    # a body that fits beside the held one is taken
    r = d.infer("echo", [tensor("INPUT0", "INT32", [3], [4, 5, 6])])
    assert r.status_code == 200, r.text
    # the slow upload completes and is answered; then the big one fits
    slow.sendall(body[5 * MiB // 2:])
    status, _, text = read_response(slow)
    assert status == 200, text
    slow.close()
    status, _, text = send_all_then_read(d, path, body)
    assert status == 200, text
    assert json.loads(text)["outputs"][0]["data"] == [7]


def test_budget_released_when_a_slow_upload_is_dropped(corral):
    corral.add("echo", "echo")
    d = corral.start("--max-body", "3MiB", "--max-inflight-body", "4MiB")
    path = "/v2/models/echo/infer"
    body = body_of(3 * MiB)
    slow = hold_upload(d, path, body, MiB)
    assert send_all_then_read(d, path, body)[0] == 503
    slow.close()
    wait_for(lambda: send_all_then_read(d, path, body)[0] == 200, timeout=5, what="the budget to be released")


def test_keep_alive_connection_releases_its_body_after_the_answer(corral):
    corral.add("echo", "echo")
    d = corral.start("--max-body", "3MiB", "--max-inflight-body", "4MiB")
    body = body_of(3 * MiB)
    session = requests.Session()
    for _ in range(4):  # the same connection: each answered body is released before the next
        r = session.post(d.url("/v2/models/echo/infer"), data=body, headers={"Content-Type": "application/json"},
                         timeout=30)
        assert r.status_code == 200, r.text
    # while that connection sits idle, another one takes a body that would not fit beside its last one
    r = requests.post(d.url("/v2/models/echo/infer"), data=body, headers={"Content-Type": "application/json"},
                      timeout=30)
    assert r.status_code == 200, r.text
    session.close()


def test_chunked_body_past_the_budget_is_refused(corral):
    corral.add("echo", "echo")
    d = corral.start("--max-body", "3MiB", "--max-inflight-body", "4MiB")
    path = "/v2/models/echo/infer"
    body = body_of(3 * MiB)
    slow = hold_upload(d, path, body, 5 * MiB // 2)
    # A chunked body is charged as it comes; the one that would pass the budget is stopped with 503.
    s = connect(d, timeout=20)
    s.sendall(head(path, chunked=True))
    for i in range(0, len(body), 256 * 1024):  # all of it, as a client that reads only at the end
        part = body[i:i + 256 * 1024]
        s.sendall(b"%x\r\n" % len(part) + part + b"\r\n")
    s.sendall(b"0\r\n\r\n")
    status, headers, text = read_response(s)
    s.close()
    assert status == 503, (status, text)
    assert headers["retry-after"] == "1" and "--max-inflight-body" in json.loads(text)["error"]
    slow.close()
    # Alone, a chunked body up to --max-body is taken; one past it is 413.
    def chunked(data: bytes) -> tuple[int, dict, bytes]:
        s = connect(d, timeout=20)
        s.sendall(head(path, chunked=True) + b"%x\r\n" % len(data) + data + b"\r\n0\r\n\r\n")
        try:
            return read_response(s)
        finally:
            s.close()
    small = body_of(64 * 1024)
    wait_for(lambda: chunked(small)[0] == 200, timeout=5, what="the budget to be released")
    assert chunked(b"{" + b" " * (4 * MiB) + b"}")[0] == 413


def test_rss_stays_bounded_under_concurrent_uploads(corral):
    corral.add("echo", "echo")
    # AddressSanitizer would keep freed buffers in quarantine, which is not what is measured here.
    asan = os.environ.get("ASAN_OPTIONS", "")
    d = corral.start("--max-body", "16MiB", "--max-inflight-body", "32MiB",
                     env={"ASAN_OPTIONS": (asan + ":" if asan else "") + "quarantine_size_mb=0"})
    path = "/v2/models/nosuch/infer"  # buffered whole by h2o, then a cheap 404: only the intake is measured
    body = body_of(16 * MiB)
    # warm up: one body taken and answered, so the heap has grown once
    assert send_all_then_read(d, path, body)[0] == 404
    before = rss_kib(d.proc.pid)
    results: list[int] = []

    def upload():
        try:
            results.append(send_all_then_read(d, path, body)[0])
        except OSError as e:  # a reset would be a bug too
            results.append(-1)
            raise AssertionError(e)

    threads = [threading.Thread(target=upload) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert set(results) <= {404, 503} and len(results) == 8, results
    after = rss_kib(d.proc.pid)
    # eight 16 MiB bodies buffered together would be 128 MiB more; the budget keeps it near 32 MiB
    assert after - before < 64 * 1024, (before, after)


def test_pipelined_and_100_continue_requests(corral):
    corral.add("echo", "echo")
    d = corral.start("--max-body", "3MiB", "--max-inflight-body", "4MiB")
    path = "/v2/models/echo/infer"
    small = body_of(200)
    # two requests in one write: the second head is read when h2o resumes, after the first answer
    s = connect(d)
    s.sendall((head(path, len(small)) + small) * 2)
    assert read_response(s)[0] == 200 and read_response(s)[0] == 200
    s.close()
    # Expect: 100-continue: the body is charged from its head, and a client waiting for
    # 100 Continue gets the 503 before it sends anything
    body = body_of(3 * MiB)
    waiting = connect(d)
    waiting.sendall(head(path, len(body))[:-2] + b"Expect: 100-continue\r\n\r\n")
    assert waiting.recv(100).startswith(b"HTTP/1.1 100 Continue")
    other = connect(d)
    other.sendall(head(path, len(body))[:-2] + b"Expect: 100-continue\r\n\r\n")
    status, headers, _ = read_response(other)
    assert status == 503 and headers["retry-after"] == "1"
    other.close()
    waiting.sendall(body)
    assert read_response(waiting)[0] == 200
    waiting.sendall(head(path, len(body)) + body)  # the same connection again: the last body was released
    assert read_response(waiting)[0] == 200
    waiting.close()


# ---------------------------------------------------------------- HTTP/2 still works

@pytest.mark.skipif(subprocess.run(["curl", "--version"], capture_output=True).stdout.find(b"HTTP2") < 0,
                    reason="curl without HTTP/2")
def test_http2_prior_knowledge_bodies(corral, tmp_path):
    corral.add("echo", "echo")
    d = corral.start("--max-body", "1MiB", "--max-inflight-body", "2MiB")
    small = tmp_path / "small.json"
    small.write_text(json.dumps({"inputs": [tensor("INPUT0", "INT32", [2], [3, 4])]}))
    big = tmp_path / "big.json"
    big.write_bytes(b"{" + b" " * (2 * MiB) + b"}")

    def curl(f):  # twice, one connection each: curl 7.88 sends no second POST on a reused HTTP/2 connection
        out = b""
        for _ in range(2):
            out += subprocess.run(["curl", "-s", "--http2-prior-knowledge", "-o", "-", "-w", "\n%{http_code}",
                                   "-H", "Content-Type: application/json", "--data-binary", f"@{f}",
                                   d.url("/v2/models/echo/infer")], capture_output=True, timeout=30).stdout
        return out

    out = curl(small)
    assert out.count(b"\n200") == 2, out
    near = tmp_path / "near.json"  # one stream near --max-body, within the budget
    near.write_bytes(body_of(MiB - 4096))
    out = curl(near)
    assert out.count(b"\n200") == 2, out
    out = curl(big)  # over --max-body: h2o resets the stream; the daemon goes on
    assert b"\n200" not in out, out
    out = curl(small)
    assert out.count(b"\n200") == 2, out


# A bare HTTP/2 client: enough of the protocol to hold an upload open on a stream.

def h2_int(n: int) -> bytes:
    """An HPACK integer with a 7-bit prefix (string lengths, no Huffman)."""
    if n < 127:
        return bytes([n])
    out, n = [127], n - 127
    while n >= 128:
        out.append(n % 128 + 128)
        n //= 128
    return bytes(out + [n])


def h2_frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def h2_connect(d) -> socket.socket:
    s = connect(d)
    s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + h2_frame(4, 0, 0, b""))
    return s


def h2_post(s: socket.socket, stream: int, path: str, length: int) -> None:
    block = b""
    for name, value in ((":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "localhost"),
                        ("content-type", "application/json"), ("content-length", str(length))):
        block += b"\x00" + h2_int(len(name)) + name.encode() + h2_int(len(value)) + value.encode()
    s.sendall(h2_frame(1, 0x4, stream, block))  # HEADERS, END_HEADERS


def h2_data(s: socket.socket, stream: int, data: bytes, end: bool) -> None:
    for i in range(0, len(data), 16384):
        last = end and i + 16384 >= len(data)
        s.sendall(h2_frame(0, 0x1 if last else 0, stream, data[i:i + 16384]))


def h2_outcome(s: socket.socket, stream: int) -> str:
    """'200', another status, or 'refused' (RST_STREAM REFUSED_STREAM) for stream."""
    buf = b""
    while True:
        while len(buf) < 9 or len(buf) < 9 + int.from_bytes(buf[:3], "big"):
            chunk = s.recv(65536)
            if not chunk:
                raise AssertionError("HTTP/2 connection closed")
            buf += chunk
        n = int.from_bytes(buf[:3], "big")
        kind, sid, payload, buf = buf[3], int.from_bytes(buf[5:9], "big") & 0x7fffffff, buf[9:9 + n], buf[9 + n:]
        if sid != stream:
            continue
        if kind == 3:
            return "refused" if int.from_bytes(payload, "big") == 7 else f"reset {payload.hex()}"
        if kind == 1:  # h2o sends :status first; 0x88 is the static table's ":status: 200"
            return "200" if payload[:1] == b"\x88" else f"status {payload[:4].hex()}"


@pytest.mark.skipif(subprocess.run(["curl", "--version"], capture_output=True).stdout.find(b"HTTP2") < 0,
                    reason="curl without HTTP/2")
def test_http2_head_sends_headers_and_no_body(corral):
    """h2o sent a HEAD answer's body as DATA frames over HTTP/2; curl called it a protocol error."""
    corral.add("echo", "echo")
    d = corral.start()
    for path, want in (("/v2/health/live", 200), ("/v2", 200), ("/v2/models/nosuch", 404), ("/metrics", 200)):
        p = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-I", d.url(path)], capture_output=True,
                           timeout=30)
        assert p.returncode == 0, (path, p.stderr)
        head = p.stdout.decode()
        assert head.startswith(f"HTTP/2 {want}"), (path, head)
        assert "content-length:" in head.lower(), (path, head)
        assert head.endswith("\r\n\r\n"), (path, head)  # the headers only


def test_http2_budget(corral):
    corral.add("echo", "echo")
    d = corral.start("--max-body", "3MiB", "--max-inflight-body", "4MiB")
    path = "/v2/models/echo/infer"
    body = body_of(3 * MiB)
    a = h2_connect(d)
    h2_post(a, 1, path, len(body))
    h2_data(a, 1, body[:5 * MiB // 2], end=False)  # held open
    time.sleep(0.3)
    b = h2_connect(d)
    h2_post(b, 1, path, len(body))
    h2_data(b, 1, body, end=True)
    assert h2_outcome(b, 1) == "refused"  # HTTP/2 has no answer to a refused body but the reset
    # a small body fits beside the held one, on the held connection too
    small = body_of(1024)
    h2_post(b, 3, path, len(small))
    h2_data(b, 3, small, end=True)
    assert h2_outcome(b, 3) == "200"
    h2_data(a, 1, body[5 * MiB // 2:], end=True)
    assert h2_outcome(a, 1) == "200"
    # answered: the stream's body is released, and a new stream on the same connection takes one as large
    h2_post(b, 5, path, len(body))
    h2_data(b, 5, body, end=True)
    assert h2_outcome(b, 5) == "200"
    a.close()
    b.close()


# ---------------------------------------------------------------- slow uploads


def test_an_upload_slower_than_h2o_default_request_timeout_is_answered(corral):
    """h2o's http1.req_timeout (10 s by default) covers head and body: corral raises it to 60 s."""
    corral.add("echo", "echo")
    d = corral.start()
    body = body_of(4000)
    s = connect(d, timeout=30)
    try:
        s.sendall(head("/v2/models/echo/infer", len(body)))
        t0 = time.monotonic()
        for i in range(0, len(body), 320):  # 13 pieces over about 12 s
            s.sendall(body[i:i + 320])
            time.sleep(0.95)
        status, _, answer = read_response(s)
        assert time.monotonic() - t0 > 10.5
        assert status == 200, answer
        assert json.loads(answer)["outputs"][0]["data"] == [7]
    finally:
        s.close()
