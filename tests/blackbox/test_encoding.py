"""Content codings: request bodies in gzip or deflate (zlib or raw) decoded for every endpoint (v2 infer as JSON
and as binary tensors, v1 and v2 generate, the repository), bounded by --max-body after decoding (a bomb is a quick
413 and the daemon's memory stays near the limit), corrupt and truncated streams 400, other codings 415; responses
compressed as Accept-Encoding asks (q-values, identity;q=0, *) above 1 KiB, streams never; Triton's client's
request_compression_algorithm and response_compression_algorithm reproduced from its source. HTTP/1.1 through
http.client (no automatic decoding), HTTP/2 through curl. Real daemon, real workers (examples/models/echo,
tests/models/streams)."""
from __future__ import annotations

import gzip
import http.client
import json
import os
import socket
import struct
import subprocess
import threading
import time
import zlib

import pytest

from conftest import tensor, wait_for

CURL_H2 = subprocess.run(["curl", "--version"], capture_output=True).stdout.find(b"HTTP2") >= 0


def raw_deflate(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


CODERS = {"gzip": gzip.compress, "deflate": zlib.compress, "raw-deflate": raw_deflate, "x-gzip": gzip.compress}


def header_of(kind: str) -> str:
    return "deflate" if kind == "raw-deflate" else kind


def post(d, path: str, body: bytes, headers: dict | None = None, method: str = "POST"):
    """One request over HTTP/1.1 without any decoding: (status, lower-cased headers, raw body)."""
    c = http.client.HTTPConnection("127.0.0.1", d.port, timeout=60)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def decode(headers: dict, body: bytes) -> bytes:
    enc = headers.get("content-encoding")
    if enc == "gzip":
        return gzip.decompress(body)
    if enc == "deflate":
        return zlib.decompress(body)  # what Triton's client does: zlib-wrapped, as RFC 9110 says
    assert enc is None, headers
    return body


def error_of(status_headers_body, status: int) -> str:
    st, h, body = status_headers_body
    assert st == status, (st, body[:300])
    assert h["content-type"] == "application/json", h
    return json.loads(body)["error"]


JSON = {"Content-Type": "application/json"}
FLOATS = [i * 0.5 for i in range(400)]  # a response of several KiB, above the 1 KiB threshold


def infer_body(data=FLOATS) -> bytes:
    return json.dumps({"id": "z", "inputs": [tensor("INPUT0", "FP32", [len(data)], data)]}).encode()


def check_echo(body: bytes, data=FLOATS):
    out = json.loads(body)
    assert out["id"] == "z" and out["outputs"][0]["name"] == "OUTPUT0", out
    assert out["outputs"][0]["data"] == data


@pytest.fixture
def echo(corral):
    corral.add("echo", "echo", manifest="runtime: python\nentrypoint: worker.py\n")
    return corral


# ---- request bodies ----

@pytest.mark.parametrize("kind", list(CODERS))
def test_a_compressed_json_infer_is_decoded(echo, kind):
    d = echo.start()
    st, h, body = post(d, "/v2/models/echo/infer", CODERS[kind](infer_body()),
                       {**JSON, "Content-Encoding": header_of(kind)})
    assert st == 200, body
    check_echo(decode(h, body))


def test_codings_are_undone_last_first_and_identity_is_none(echo):
    d = echo.start()
    twice = gzip.compress(zlib.compress(infer_body()))  # deflate applied first, then gzip
    st, _, body = post(d, "/v2/models/echo/infer", twice, {**JSON, "Content-Encoding": "deflate, gzip"})
    assert st == 200, body
    check_echo(body)
    # the same list in two fields
    st, _, body = post(d, "/v2/models/echo/infer", twice,
                       {**JSON, "Content-Encoding": "deflate", "content-encoding": "gzip"})
    assert st == 200, body
    # the wrong order is a stream that does not decode
    assert "corrupt deflate stream" in error_of(
        post(d, "/v2/models/echo/infer", twice, {**JSON, "Content-Encoding": "gzip, deflate"}), 400)
    for value in ("identity", "IDENTITY", "identity, gzip, identity"):
        payload = gzip.compress(infer_body()) if "gzip" in value else infer_body()
        st, _, body = post(d, "/v2/models/echo/infer", payload, {**JSON, "Content-Encoding": value})
        assert st == 200, (value, body)
        check_echo(body)
    # a body-less request with a coding: nothing to decode
    st, _, body = post(d, "/v2/health/ready", b"", {"Content-Encoding": "gzip"}, method="GET")
    assert st == 200, body


@pytest.mark.parametrize("alg", ["gzip", "deflate"])
def test_tritonclient_request_and_response_compression_byte_for_byte(echo, alg):
    """What tritonclient.http's InferenceServerClient.infer sends with request_compression_algorithm=alg and
    response_compression_algorithm=alg (its _get_inference_request and infer, read from its source): the JSON
    header (rapidjson, compact) and the binary tensors after it compressed together, Inference-Header-Content-Length
    the length of the uncompressed JSON, no Content-Type. Its InferResult decodes the answer by Content-Encoding
    (gzip.decompress or zlib.decompress), then splits it at the uncompressed Inference-Header-Content-Length."""
    d = echo.start()
    raw = struct.pack("<3000f", *[i / 8 for i in range(3000)])
    request = {"inputs": [{"name": "INPUT0", "shape": [1, 3000], "datatype": "FP32",
                           "parameters": {"binary_data_size": len(raw)}}],
               "parameters": {"binary_data_output": True}}
    request_json = json.dumps(request, separators=(",", ":"))
    compress = gzip.compress if alg == "gzip" else zlib.compress
    headers = {"Content-Encoding": alg, "Accept-Encoding": alg,
               "Inference-Header-Content-Length": str(len(request_json))}
    st, h, body = post(d, "/v2/models/echo/infer", compress(request_json.encode() + raw), headers)
    assert st == 200, body
    assert h["content-encoding"] == alg and h["vary"] == "Accept-Encoding", h
    assert h["content-type"] == "application/octet-stream"
    plain = decode(h, body)
    n = int(h["inference-header-content-length"])
    result = json.loads(plain[:n])
    out = result["outputs"][0]
    assert out["name"] == "OUTPUT0" and out["shape"] == [1, 3000]
    assert out["parameters"]["binary_data_size"] == len(raw)
    assert plain[n:] == raw
    # JSON inputs only: no Inference-Header-Content-Length, the whole body is JSON
    request_json = json.dumps({"inputs": [{"name": "INPUT0", "shape": [2], "datatype": "INT32", "data": [1, 2]}]},
                              separators=(",", ":"))
    st, h, body = post(d, "/v2/models/echo/infer", compress(request_json.encode()),
                       {"Content-Encoding": alg, "Accept-Encoding": alg})
    assert st == 200, body
    assert "content-encoding" not in h  # below the threshold
    assert json.loads(body)["outputs"][0]["data"] == [1, 2]


def test_generate_and_the_repository_read_the_decoded_body(echo):
    d = echo.start()
    st, _, body = post(d, "/v1/models/echo/generate", gzip.compress(b'{"say": "hello"}'),
                       {**JSON, "Content-Encoding": "gzip"})
    assert st == 200, body
    assert json.loads(body) == {"echo": {"say": "hello"}}
    st, _, body = post(d, "/v2/models/echo/generate", zlib.compress(b'{"text_input": "hi"}'),
                       {**JSON, "Content-Encoding": "deflate"})
    assert st == 200, body
    assert json.loads(body)["echo"] == {"text_input": "hi"}
    st, _, body = post(d, "/v2/repository/models/echo/unload", gzip.compress(b"{}"),
                       {**JSON, "Content-Encoding": "gzip"})
    assert st == 200, body
    st, _, body = post(d, "/v2/repository/models/echo/load", gzip.compress(b'{"parameters": {}}'),
                       {**JSON, "Content-Encoding": "gzip"})
    assert st == 200, body
    # a broken body on the repository is refused by the decoder, before the handler
    assert "truncated" in error_of(post(d, "/v2/repository/models/echo/load", gzip.compress(b"{}")[:-4],
                                        {**JSON, "Content-Encoding": "gzip"}), 400)


def test_corrupt_truncated_and_trailing_streams_are_400_naming_the_problem(echo):
    d = echo.start()
    good = gzip.compress(infer_body())
    crc = bytearray(good)
    crc[-6] ^= 0xFF
    cases = {
        bytes(crc): "model 'echo': corrupt gzip stream: incorrect data check",
        b"\x1e" + good[1:]: "model 'echo': corrupt gzip stream: incorrect header check",
        good[:len(good) // 2]: "model 'echo': the gzip stream is truncated",
        good[:-1]: "model 'echo': the gzip stream is truncated",
        good + b"junk": "model 'echo': 4 bytes follow the end of the gzip stream",
        infer_body(): "model 'echo': corrupt gzip stream: incorrect header check",
    }
    for payload, message in cases.items():
        assert message in error_of(post(d, "/v2/models/echo/infer", payload, {**JSON, "Content-Encoding": "gzip"}),
                                   400)
    assert "the deflate stream is truncated" in error_of(
        post(d, "/v2/models/echo/infer", zlib.compress(infer_body())[:-9], {**JSON, "Content-Encoding": "deflate"}),
        400)
    # nothing else changed: the same daemon answers the good stream
    st, _, body = post(d, "/v2/models/echo/infer", good, {**JSON, "Content-Encoding": "gzip"})
    assert st == 200, body


def vm(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError(key)


def gzip_of_zeros(n: int) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = bytes(1 << 20)
    return b"".join(c.compress(chunk) for _ in range(n >> 20)) + c.flush()


def test_a_compression_bomb_is_413_quickly_and_memory_stays_near_the_limit(echo):
    limit = 8 << 20
    d = echo.start("--max-body", "8MiB")
    bomb = gzip_of_zeros(1 << 30)  # 1 GiB of zeros in about 1 MiB
    assert len(bomb) < 2 << 20
    nested = gzip.compress(bomb)  # 1 GiB in a few KiB: each layer is bounded on its own
    assert len(nested) < 64 << 10
    st, _, _ = post(d, "/v2/health/live", b"", method="GET")
    rss_before = vm(d.proc.pid, "VmRSS")
    for payload, coding in ((bomb, "gzip"), (nested, "gzip, gzip"), (bomb, "gzip")):
        t0 = time.monotonic()
        msg = error_of(post(d, "/v2/models/echo/infer", payload, {**JSON, "Content-Encoding": coding}), 413)
        assert time.monotonic() - t0 < 3, "the bomb was inflated past the limit"
        assert msg == (f"model 'echo': request body is larger than the daemon's limit (--max-body {limit} bytes) "
                       "once decoded from gzip"), msg
    peak = vm(d.proc.pid, "VmHWM")
    # The decoded buffer stops at 8 MiB; with the raw body, its copy and a growth step, far below 1 GiB.
    # AddressSanitizer's quarantine keeps freed memory (up to 256 MiB), so its build is given more room.
    with open(f"/proc/{d.proc.pid}/maps") as f:
        asan = "libasan" in f.read()
    assert peak - rss_before < (160 if asan else 48) << 20, (rss_before, peak)
    # a body that decodes to exactly the limit is taken
    exact = gzip.compress(b" " * (limit - len(infer_body())) + infer_body())
    st, _, body = post(d, "/v2/models/echo/infer", exact, {**JSON, "Content-Encoding": "gzip"})
    assert st == 200, body[:300]


def test_decoded_bodies_count_against_the_inflight_budget(corral):
    """A decoded body is charged to --max-inflight-body while its request holds it: another that would pass the
    budget once decoded is a 503 with Retry-After, and is taken once the first is answered."""
    corral.add("p", "api_probe")
    d = corral.start("--max-body", "8MiB", "--max-inflight-body", "12MiB")
    raw = bytes(7 << 20)
    head = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "UINT8", "shape": [len(raw)],
                                   "parameters": {"binary_data_size": len(raw)}}],
                       "parameters": {"mode": "sleep", "seconds": 2, "binary_data_output": True}}).encode()
    payload = gzip.compress(head + raw)
    assert len(payload) < 64 << 10
    headers = {"Content-Encoding": "gzip", "Inference-Header-Content-Length": str(len(head)),
               "Content-Type": "application/octet-stream"}
    assert post(d, "/v2/models/p/infer", payload, headers)[0] == 200  # loaded, and the pages are warm
    first = {}
    t = threading.Thread(target=lambda: first.setdefault("r", post(d, "/v2/models/p/infer", payload, headers)))
    t.start()
    wait_for(lambda: d.model("p")["instances"][0]["inflight"] == 1, timeout=10, what="the first request to run")
    st, h, body = post(d, "/v2/models/p/infer", payload, headers)
    msg = error_of((st, h, body), 503)
    assert h["retry-after"] == "1"
    assert "model 'p': the daemon holds" in msg and f"decoded to {len(head) + len(raw)} bytes" in msg, msg
    assert "(--max-inflight-body 12582912 bytes); retry later" in msg, msg
    t.join(30)
    assert first["r"][0] == 200
    assert post(d, "/v2/models/p/infer", payload, headers)[0] == 200


@pytest.mark.parametrize("value,named", [("br", "br"), ("zstd", "zstd"), ("compress", "compress"),
                                         ("garbage", "garbage"), ("gzip, zstd", "zstd"), ('x"y\\z', 'x"y\\z')])
def test_other_codings_are_415_naming_them(echo, value, named):
    d = echo.start()
    st, h, body = post(d, "/v2/models/echo/infer", b"\x00\x01\x02", {**JSON, "Content-Encoding": value})
    assert st == 415, body
    assert h["accept-encoding"] == "gzip, deflate"  # RFC 9110 15.5.16: the codings that would have been taken
    assert json.loads(body)["error"] == (f"model 'echo': unsupported Content-Encoding '{named}': corral decodes "
                                         "gzip, deflate and identity")


def test_more_than_four_codings_are_415(echo):
    d = echo.start()
    assert "lists more than 4 codings" in error_of(
        post(d, "/v2/models/echo/infer", infer_body(), {**JSON, "Content-Encoding": "gzip, " * 4 + "gzip"}), 415)


# ---- responses ----

@pytest.mark.parametrize("accept,expected", [
    ("gzip", "gzip"), ("deflate", "deflate"), ("gzip, deflate", "gzip"), ("deflate, gzip", "gzip"),
    ("gzip;q=0.2, deflate;q=0.8", "deflate"), ("GZIP;Q=1", "gzip"), ("gzip;q=0", None), ("identity", None),
    ("identity;q=1, gzip;q=0.5", None), ("br", None), ("br, deflate;q=0.1", "deflate"), ("*", "gzip"),
    ("*, gzip;q=0", "deflate"), ("*;q=0", None), ("gzip;q=2", None), (None, None)])
def test_accept_encoding_picks_the_response_coding(echo, accept, expected):
    d = echo.start()
    headers = {**JSON, "Accept-Encoding": accept} if accept else JSON
    st, h, body = post(d, "/v2/models/echo/infer", infer_body(), headers)
    assert st == 200, body
    assert h.get("content-encoding") == expected, (accept, h)
    assert h["vary"] == "Accept-Encoding"
    if expected:
        assert int(h["content-length"]) == len(body) < len(infer_body())
    check_echo(decode(h, body))


def test_small_responses_are_sent_as_they_are_unless_identity_is_refused(echo):
    d = echo.start()
    st, h, body = post(d, "/v2", b"", {"Accept-Encoding": "gzip"}, method="GET")
    assert st == 200 and len(body) < 1024, body
    assert "content-encoding" not in h and h["vary"] == "Accept-Encoding"
    for accept in ("gzip, identity;q=0", "deflate, *;q=0"):
        st, h, body = post(d, "/v2", b"", {"Accept-Encoding": accept}, method="GET")
        assert st == 200 and h["content-encoding"] == accept.split(",")[0], h
        assert json.loads(decode(h, body))["name"] == "corral"
    # errors are never compressed: Triton's client reads them as they are
    st, h, body = post(d, "/v2/models/nope/infer", infer_body(), {**JSON, "Accept-Encoding": "gzip, identity;q=0"})
    assert st == 404 and "content-encoding" not in h and json.loads(body)["error"]


def symbols(n: int) -> bytes:
    """n random bytes of 16 values: inflate and deflate must decode and code every symbol (not stored blocks)."""
    return os.urandom(n).translate(bytes(b"ABCDEFGHIJKLMNOP"[i % 16] for i in range(256)))


def test_a_large_response_is_compressed_off_the_loop_and_others_are_answered_meanwhile(echo):
    d = echo.start()
    raw = symbols(48 << 20)
    head = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "UINT8", "shape": [len(raw)],
                                   "parameters": {"binary_data_size": len(raw)}}],
                       "parameters": {"binary_data_output": True}}).encode()
    headers = {"Accept-Encoding": "gzip", "Inference-Header-Content-Length": str(len(head)),
               "Content-Type": "application/octet-stream"}
    result = {}

    def big():
        t0 = time.monotonic()
        result["answer"] = post(d, "/v2/models/echo/infer", head + raw, headers)
        result["took"] = time.monotonic() - t0

    t = threading.Thread(target=big)
    t.start()
    small = []
    while t.is_alive():
        t0 = time.monotonic()
        st, _, _ = post(d, "/v2/health/live", b"", method="GET")
        small.append((st, time.monotonic() - t0))
        time.sleep(0.005)
    t.join(60)
    st, h, body = result["answer"]
    assert st == 200, body[:300]
    assert h["content-encoding"] == "gzip" and len(body) < len(raw) * 0.6
    plain = gzip.decompress(body)
    n = int(h["inference-header-content-length"])
    assert json.loads(plain[:n])["outputs"][0]["parameters"]["binary_data_size"] == len(raw)
    assert plain[n:] == raw
    assert all(s == 200 for s, _ in small)
    # compressing 48 MiB takes most of a second here: on the loop, one health check would wait that long
    assert len(small) > 5 and max(t for _, t in small) < 0.4, (result["took"], sorted(t for _, t in small)[-5:])


def test_a_client_that_leaves_while_its_body_is_decoded(echo):
    d = echo.start()
    payload = gzip.compress(b'{"inputs": [], "pad": "' + symbols(32 << 20) + b'"}', compresslevel=1)
    for _ in range(3):
        s = socket.create_connection(("127.0.0.1", d.port))
        s.sendall(b"POST /v2/models/echo/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(payload) + payload)
        s.close()
    st, _, body = post(d, "/v2/models/echo/infer", gzip.compress(infer_body()), {**JSON, "Content-Encoding": "gzip"})
    assert st == 200, body
    assert d.proc.poll() is None


@pytest.mark.skipif(not CURL_H2, reason="curl without HTTP/2")
def test_an_http2_client_that_resets_while_its_body_is_decoded_or_its_answer_compressed(echo, tmp_path):
    """h2o frees a reset stream's request at once: the work on the thread pool must not touch it after."""
    d = echo.start()
    body = tmp_path / "body.gz"
    body.write_bytes(gzip.compress(b'{"inputs": [], "pad": "' + symbols(64 << 20) + b'"}', compresslevel=1))
    for max_time in ("0.3", "0.6", "1"):
        subprocess.run(["curl", "-s", "--http2-prior-knowledge", "--max-time", max_time, "-o", "/dev/null",
                        "-H", "Content-Type: application/json", "-H", "Content-Encoding: gzip",
                        "--data-binary", f"@{body}", d.url("/v2/models/echo/infer")], timeout=30)
    raw = symbols(32 << 20)
    head = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "UINT8", "shape": [len(raw)],
                                   "parameters": {"binary_data_size": len(raw)}}],
                       "parameters": {"binary_data_output": True}}).encode()
    (tmp_path / "bin").write_bytes(head + raw)
    for max_time in ("0.3", "0.6", "1"):
        subprocess.run(["curl", "-s", "--http2-prior-knowledge", "--max-time", max_time, "-o", "/dev/null",
                        "-H", "Content-Type: application/octet-stream", "-H", "Accept-Encoding: gzip",
                        "-H", f"Inference-Header-Content-Length: {len(head)}",
                        "--data-binary", f"@{tmp_path / 'bin'}", d.url("/v2/models/echo/infer")], timeout=30)
    time.sleep(1.5)  # whatever was still on the thread pool ends
    st, h, body = post(d, "/v2/models/echo/infer", gzip.compress(infer_body()),
                       {**JSON, "Content-Encoding": "gzip", "Accept-Encoding": "gzip"})
    assert st == 200 and h["content-encoding"] == "gzip", body
    check_echo(gzip.decompress(body))
    assert d.proc.poll() is None


# ---- streams ----

def test_a_stream_is_never_compressed_and_still_streams(corral):
    corral.add("s", "streams")
    d = corral.start()
    c = http.client.HTTPConnection("127.0.0.1", d.port, timeout=30)
    c.request("POST", "/v1/models/s/generate", body=gzip.compress(b'{"stream": true, "events": 3, "delay": 0.5}'),
              headers={**JSON, "Content-Encoding": "gzip", "Accept-Encoding": "gzip, identity;q=0"})
    t0 = time.monotonic()
    r = c.getresponse()
    assert r.status == 200
    assert r.getheader("content-encoding") is None and r.getheader("content-type").startswith("text/event-stream")
    first = r.read1()
    t_first = time.monotonic() - t0
    rest = r.read()
    total = time.monotonic() - t0
    c.close()
    assert first.startswith(b'data: {"i":0'), first
    assert (first + rest).count(b"data: ") == 3
    assert t_first < 0.8 < total, (t_first, total)


# ---- HTTP/2 ----

@pytest.mark.skipif(not CURL_H2, reason="curl without HTTP/2")
def test_http2_compressed_request_and_response(echo, tmp_path):
    d = echo.start()
    body = tmp_path / "body.gz"
    body.write_bytes(gzip.compress(infer_body()))
    heads, out = tmp_path / "heads", tmp_path / "out"

    def curl(*args):
        p = subprocess.run(["curl", "-s", "--http2-prior-knowledge", "-D", str(heads), "-o", str(out),
                            "-w", "%{http_version} %{http_code}", *args], capture_output=True, timeout=30)
        h = {}
        for line in heads.read_text().splitlines()[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                h[k.strip().lower()] = v.strip()
        return p.stdout.decode(), h, out.read_bytes()

    code, h, raw = curl("-H", "Content-Type: application/json", "-H", "Content-Encoding: gzip",
                        "-H", "Accept-Encoding: gzip", "--data-binary", f"@{body}", d.url("/v2/models/echo/infer"))
    assert code == "2 200", (code, raw[:200])
    assert h["content-encoding"] == "gzip" and h["vary"] == "Accept-Encoding"
    check_echo(gzip.decompress(raw))
    code, h, raw = curl("-H", "Content-Type: application/json", "-H", "Content-Encoding: br",
                        "--data-binary", f"@{body}", d.url("/v2/models/echo/infer"))
    assert code == "2 415" and h["accept-encoding"] == "gzip, deflate"
    assert "unsupported Content-Encoding 'br'" in json.loads(raw)["error"]
    body.write_bytes(gzip_of_zeros(256 << 20))
    d2 = echo.start("--max-body", "4MiB")
    code, h, raw = curl("-H", "Content-Type: application/json", "-H", "Content-Encoding: gzip",
                        "--data-binary", f"@{body}", d2.url("/v2/models/echo/infer"))
    assert code == "2 413" and "--max-body 4194304 bytes" in json.loads(raw)["error"]
