"""Triton's generate extension: POST /v2/models/{name}[/versions/1]/generate (one JSON object) and
.../generate_stream (server-sent events), byte for byte, over HTTP/1.1 and HTTP/2. A model that answers
/generate more than once gets a 400 and its work is cancelled; answers that are not JSON objects are refused
by name. Real daemon, real workers (tests/models/streams, examples/models/tokens)."""
from __future__ import annotations

import json
import socket
import subprocess

import pytest

from conftest import post_bytes, wait_for

TAG = b'"model_name":"s","model_version":"1"'


def post(d, path, body, **kw):
    kw.setdefault("timeout", 30)
    if isinstance(body, (bytes, str)):
        headers = {"Content-Type": "application/json", **kw.pop("headers", {})}
        return d.http.post(d.url(path), data=body, headers=headers, **kw)
    return d.http.post(d.url(path), json=body, **kw)


def generate(d, body, model="s", **kw):
    return post(d, f"/v2/models/{model}/generate", body, **kw)


def generate_stream(d, body, model="s", **kw):
    return post(d, f"/v2/models/{model}/generate_stream", body, **kw)


def log_lines(path):
    try:
        return (path / "log").read_text().splitlines()
    except FileNotFoundError:
        return []


def error_of(r):
    assert r.headers["content-type"] == "application/json", r.headers
    return r.json()["error"]


def read_response(sock, buf=b""):
    """Reads one HTTP/1.1 response with a Content-Length from sock; returns (head, body, bytes left over)."""
    while b"\r\n\r\n" not in buf:
        got = sock.recv(65536)
        assert got, buf
        buf += got
    head, _, rest = buf.partition(b"\r\n\r\n")
    length = [int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
    assert length, head
    while len(rest) < length[0]:
        got = sock.recv(65536)
        assert got, rest
        rest += got
    return head, rest[:length[0]], rest[length[0]:]


@pytest.fixture
def streams(corral):
    path = corral.add("s", "streams")
    return corral, path


# ---- /generate ----

def test_generate_answers_the_one_event_as_one_object_naming_the_model(streams):
    corral, _ = streams
    d = corral.start()
    r = generate(d, {"events": 1, "tag": "a"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.content == b'{' + TAG + b',"i":0,"tag":"a"}'
    # the versioned form, and "stream" in the body changes nothing: the endpoint decides
    r = post(d, "/v2/models/s/versions/1/generate", {"events": 1, "tag": "b", "stream": True})
    assert r.status_code == 200 and r.content == b'{' + TAG + b',"i":0,"tag":"b"}', r.content
    # what the model says of itself stays; only what it left out is added, first
    r = generate(d, {"yield": [{"model_name": "other", "text_output": "x"}]})
    assert r.content == b'{"model_version":"1","model_name":"other","text_output":"x"}', r.content
    r = generate(d, {"yield": [{"model_version": "7", "model_name": "other"}]})
    assert r.content == b'{"model_version":"7","model_name":"other"}', r.content
    r = generate(d, {"yield": [{}]})
    assert r.content == b'{' + TAG + b'}', r.content


def test_generate_passes_a_whole_json_answer_with_its_bytes_kept(streams):
    corral, _ = streams
    d = corral.start()
    r = generate(d, {"wait": 0})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.content == b'{' + TAG + b',"waited":true,"cancelled":false}', r.content
    # not re-serialised: the model's spacing, number spelling and key order survive
    r = generate(d, {"reply": '  {\n "z": 1.10,\n "a": 1e3\n}\n', "content_type": "application/json; charset=utf-8"})
    assert r.status_code == 200, r.text
    assert r.content == b'  {' + TAG + b',\n "z": 1.10,\n "a": 1e3\n}\n', r.content
    assert r.json() == {"model_name": "s", "model_version": "1", "z": 1.1, "a": 1000.0}


def test_generate_with_more_than_one_response_is_400_and_the_rest_is_cancelled(streams):
    corral, path = streams
    d = corral.start()
    generate(d, {"events": 1})
    r = generate(d, {"forever": True})
    assert r.status_code == 400, r.text
    err = error_of(r)
    assert "'s'" in err and "more than one response" in err and "/v2/models/s/generate_stream" in err, err
    # the model's generator was closed at its next yield: nothing was killed, and the instance is free
    wait_for(lambda: any(line.startswith("events") and "cancelled=1" in line for line in log_lines(path)),
             timeout=5, what="the model to see the cancellation")
    r = generate(d, {"events": 1, "tag": "next"})
    assert r.status_code == 200 and r.json()["tag"] == "next", r.text
    inst = d.model("s")["instances"][0]
    assert inst["restarts"] == 0 and inst["state"] == "ready", inst
    # a model that made exactly two responses and ended is refused the same way
    r = generate(d, {"events": 2})
    assert r.status_code == 400 and "more than one response" in error_of(r)


def test_after_the_400_nothing_more_is_written_to_the_connection(streams):
    """HTTP/1.1 keep-alive: the second request on the connection gets its own answer, not a late one."""
    corral, path = streams
    d = corral.start()
    port = int(d.base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(post_bytes("/v2/models/s/generate", {"forever": True}))
        head, body, left = read_response(sock)
        assert head.startswith(b"HTTP/1.1 400 "), head
        assert b"more than one response" in body and left == b"", (body, left)
        wait_for(lambda: any("cancelled=1" in line for line in log_lines(path)), timeout=5,
                 what="the model to see the cancellation")
        sock.sendall(post_bytes("/v2/models/s/generate", {"events": 1, "tag": "second"}))
        head, body, left = read_response(sock, left)
        assert head.startswith(b"HTTP/1.1 200 "), head
        assert body == b'{' + TAG + b',"i":0,"tag":"second"}' and left == b"", (body, left)


def test_generate_with_the_tokens_example(corral):
    corral.add("tokens", "tokens")
    d = corral.start()
    r = generate(d, {"text": "hello", "delay": 0}, model="tokens")
    assert r.status_code == 200, r.text
    assert r.content == b'{"model_name":"tokens","model_version":"1","index":0,"token":"hello"}'
    r = generate(d, {"text": "hello big world", "delay": 0}, model="tokens")
    assert r.status_code == 400 and "generate_stream" in error_of(r)
    # the model's own refusal is an ordinary error with its status
    r = generate(d, {"text": ""}, model="tokens")
    assert r.status_code == 400 and "'text' is empty" in error_of(r)
    assert generate(d, {"text": "again", "delay": 0}, model="tokens").json()["token"] == "again"


def test_generate_errors_before_its_answer_are_ordinary_errors(streams):
    corral, _ = streams
    d = corral.start()
    r = generate(d, {"fail_after": 1})  # one event, then the model raised: nothing had been sent yet
    assert r.status_code == 500 and "ValueError: failed after 1 chunks" in error_of(r), r.text
    r = generate(d, {"events": 0})
    assert r.status_code == 500 and "model 's' ended its stream without a response" in error_of(r), r.text


# ---- /generate_stream ----

def test_generate_stream_is_server_sent_events_byte_for_byte(streams):
    corral, _ = streams
    d = corral.start()
    # no "stream" in the body, and even "stream": false: the endpoint streams
    for body in ({"events": 3, "tag": "a"}, {"events": 3, "tag": "a", "stream": False}):
        r = generate_stream(d, body)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert r.content == (b'data: {' + TAG + b',"i":0,"tag":"a"}\n\n'
                             b'data: {' + TAG + b',"i":1,"tag":"a"}\n\n'
                             b'data: {' + TAG + b',"i":2,"tag":"a"}\n\n'), r.content
    # SSE whatever Accept asks for
    r = post(d, "/v2/models/s/versions/1/generate_stream", {"events": 1}, headers={"Accept": "application/x-ndjson"})
    assert r.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert r.content == b'data: {' + TAG + b',"i":0,"tag":null}\n\n'
    # a stream of no events is an empty one
    r = generate_stream(d, {"events": 0})
    assert r.status_code == 200 and r.content == b""


def test_generate_stream_with_the_tokens_example(corral):
    corral.add("tokens", "tokens")
    d = corral.start()
    r = generate_stream(d, {"text": "one two three", "delay": 0.05}, model="tokens", stream=True)
    assert r.status_code == 200
    lines = [line for line in r.iter_lines() if line]
    assert lines[0] == b'data: {"model_name":"tokens","model_version":"1","index":0,"token":"one"}', lines
    assert [json.loads(line[6:])["token"] for line in lines] == ["one", "two", "three"], lines


def test_generate_stream_sends_a_whole_json_answer_as_one_event(streams):
    corral, _ = streams
    d = corral.start()
    r = generate_stream(d, {"wait": 0})
    assert r.status_code == 200 and r.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert r.content == b'data: {' + TAG + b',"waited":true,"cancelled":false}\n\n', r.content
    # an event is one line: the line breaks of a pretty-printed answer become spaces
    r = generate_stream(d, {"reply": '{\n "a": [1,\r\n 2]\n}\n', "content_type": "application/json"})
    assert r.content == b'data: {' + TAG + b',  "a": [1,   2] } \n\n', r.content
    assert json.loads(r.content[6:]) == {"model_name": "s", "model_version": "1", "a": [1, 2]}


def test_generate_stream_ends_with_an_error_event_after_its_first_event(streams):
    corral, _ = streams
    d = corral.start()
    r = generate_stream(d, {"fail_after": 2})
    assert r.status_code == 200
    events = r.content.split(b"\n\n")
    assert events[:2] == [b'data: {' + TAG + b',"i":0,"tag":null}', b'data: {' + TAG + b',"i":1,"tag":null}']
    assert events[2].startswith(b'data: {"error":'), r.content
    err = json.loads(events[2][len(b"data: "):])
    assert list(err) == ["error"] and "ValueError: failed after 2 chunks" in err["error"], err
    assert events[3:] == [b""], r.content
    # before the first event, an error is an ordinary error response with its status
    r = generate_stream(d, {"fail_after": 0})
    assert r.status_code == 500 and "ValueError: failed after 0 chunks" in error_of(r)
    assert generate_stream(d, {"events": 1}).status_code == 200


# ---- errors ----

@pytest.mark.parametrize("endpoint", ["generate", "generate_stream"])
def test_unknown_models_versions_and_methods(streams, endpoint):
    corral, _ = streams
    d = corral.start()
    r = post(d, f"/v2/models/nope/{endpoint}", {"text_input": "x"})
    assert r.status_code == 404 and "unknown model 'nope'" in error_of(r)
    r = post(d, f"/v2/models/s/versions/2/{endpoint}", {"events": 1})
    assert r.status_code == 404 and "version" in error_of(r)
    r = d.get(f"/v2/models/s/{endpoint}")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    assert post(d, f"/v2/models/s/{endpoint}/more", {}).status_code == 404


@pytest.mark.parametrize("endpoint", ["generate", "generate_stream"])
def test_a_body_that_is_not_a_json_object_is_400(streams, endpoint):
    corral, _ = streams
    d = corral.start()
    url = f"/v2/models/s/{endpoint}"
    r = post(d, url, b"{not json")
    assert r.status_code == 400 and "malformed JSON body for model 's'" in error_of(r)
    for body in (b"[1, 2]", b'"text"', b"", b"42"):
        r = post(d, url, body)
        assert r.status_code == 400, (body, r.text)
        assert "JSON" in error_of(r), r.text
    r = post(d, url, b'{"events": 1}', headers={"Content-Type": "text/plain"})
    assert r.status_code == 415, r.text  # a JSON endpoint, as infer is
    r = post(d, url, {"events": 1, "parameters": {"priority": "high"}})
    assert r.status_code == 400 and "priority" in error_of(r)
    # without a Content-Type the body still reaches the model as JSON
    r = d.http.post(d.url(url), data=b'{"events": 1}', timeout=30)
    assert r.status_code == 200 and b'"i":0' in r.content, r.content


@pytest.mark.parametrize("endpoint", ["generate", "generate_stream"])
def test_answers_that_are_not_json_objects_are_refused_by_name(streams, endpoint):
    corral, path = streams
    d = corral.start()
    url = f"/v2/models/s/{endpoint}"
    r = post(d, url, {"reply": "plain words", "content_type": "text/plain; charset=utf-8"})
    assert r.status_code == 500, r.text
    err = error_of(r)
    assert "model 's'" in err and "'text/plain; charset=utf-8'" in err, err
    # a list, and text that is not JSON at all (a raw line break inside a string) under a JSON type
    for reply in ("[1, 2]", '{"a": "x\ny"}'):
        r = post(d, url, {"reply": reply, "content_type": "application/json"})
        assert r.status_code == 500 and "not a JSON object" in error_of(r), (reply, r.text)
    # a byte stream is refused at its first chunk, and cancelled: the instance is free again
    r = post(d, url, {"bytes": 200 << 20, "chunk": 4096})
    assert r.status_code == 500, r.text
    err = error_of(r)
    assert "model 's'" in err and "'text/x-test'" in err, err
    wait_for(lambda: any(line.startswith("bytes") and "cancelled=1" in line for line in log_lines(path)),
             timeout=5, what="the model to see the cancellation")
    assert post(d, url, {"events": 1}).status_code == 200
    assert d.model("s")["instances"][0]["restarts"] == 0


def test_an_event_that_is_not_an_object_ends_the_stream(streams):
    corral, path = streams
    d = corral.start()
    r = generate_stream(d, {"yield": [{"a": 1}, [2]], "forever": True})
    assert r.status_code == 200
    events = r.content.split(b"\n\n")
    assert events[0] == b'data: {' + TAG + b',"a":1}', r.content
    err = json.loads(events[1][len(b"data: "):])["error"]
    assert "model 's'" in err and "not a JSON object" in err, err
    assert events[2:] == [b""], r.content
    wait_for(lambda: any("cancelled=1" in line for line in log_lines(path)), timeout=5,
             what="the model to see the cancellation")
    r = generate(d, {"yield": [[1]]})
    assert r.status_code == 500 and "not a JSON object" in error_of(r), r.text


def test_the_server_metadata_names_the_extension(streams):
    corral, _ = streams
    d = corral.start()
    assert "generate" in d.get("/v2").json()["extensions"]


# ---- HTTP/2 ----

def curl_h2(url, body, *extra):
    p = subprocess.run(["curl", "-s", "--http2-prior-knowledge", "--max-time", "20", "-H",
                        "Content-Type: application/json", "-d", json.dumps(body), "-o", "-",
                        "-w", "\n%{http_version} %{http_code}", *extra, url], capture_output=True, timeout=30)
    out, _, tail = p.stdout.rpartition(b"\n")
    return out, tail.decode()


@pytest.mark.skipif(subprocess.run(["curl", "--version"], capture_output=True).stdout.find(b"HTTP2") < 0,
                    reason="curl without HTTP/2")
def test_both_endpoints_over_http2(streams):
    corral, path = streams
    d = corral.start()
    out, tail = curl_h2(d.url("/v2/models/s/generate_stream"), {"events": 2, "tag": "h2"})
    assert tail == "2 200", tail
    assert out == b'data: {' + TAG + b',"i":0,"tag":"h2"}\n\ndata: {' + TAG + b',"i":1,"tag":"h2"}\n\n', out
    out, tail = curl_h2(d.url("/v2/models/s/generate"), {"events": 1, "tag": "h2"})
    assert tail == "2 200" and out == b'{' + TAG + b',"i":0,"tag":"h2"}', (tail, out)
    out, tail = curl_h2(d.url("/v2/models/s/generate"), {"forever": True})
    assert tail == "2 400" and b"more than one response" in out, (tail, out)
    wait_for(lambda: any("cancelled=1" in line for line in log_lines(path)), timeout=5,
             what="the model to see the cancellation")
    out, tail = curl_h2(d.url("/v2/models/s/generate"), {"events": 1})
    assert tail == "2 200", (tail, out)
