"""Triton's Python HTTP client, byte for byte.

tritonclient (triton-inference-server/client, src/python/library/tritonclient/http)
cannot be installed here, so these tests send what it sends, as it sends it:
geventhttpclient's request head (request line, `User-Agent` first, the
caller's headers, then `Host`, then `Content-Length` only for a non-empty
body) over one kept-alive connection; bodies as `rapidjson.dumps` writes them
(compact, keys in insertion order); the binary tensor layout of
`_get_inference_request` (the JSON, then every binary input's bytes, with
`Inference-Header-Content-Length` the JSON's length); and parse the answers
as it does: `_get_error` (`{"error"}` on any status but 200), `InferResult`
(the JSON header, then each output's bytes at the running sum of
`binary_data_size`), the `status_code == 200` checks of the readiness calls.
"""
from __future__ import annotations

import base64
import json
import socket
import struct
from urllib.parse import quote

import pytest

from conftest import ctl_manifest
from test_api_v2 import decode_raw, encode_raw

USER_AGENT = "python/gevent-http-client-2.3.8"


def dumps(obj) -> str:
    """rapidjson.dumps with its defaults: no spaces, ASCII only, keys as inserted."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=True)


class ServerError(Exception):
    """tritonclient's InferenceServerException, as _get_error builds it."""

    def __init__(self, msg: str, status: str):
        super().__init__(msg)
        self.msg, self.status = msg, status


class Response:
    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes):
        self.status_code, self._headers, self.body = status, headers, body
        self._offset = 0

    def get(self, name: str):
        """geventhttpclient's headers are case-insensitive."""
        for k, v in self._headers:
            if k.lower() == name.lower():
                return v
        return None

    def read(self, length: int = -1) -> bytes:
        if length == -1:
            data = self.body[self._offset:]
            self._offset = len(self.body)
        else:
            data = self.body[self._offset:self._offset + length]
            self._offset += len(data)
        return data


class GeventLikeClient:
    """One persistent HTTP/1.1 connection, requests built as geventhttpclient's _build_request builds them."""

    def __init__(self, port: int):
        self.port = port
        self.sock = None
        self.sent: list[bytes] = []
        self.connects = 0

    def close(self):
        if self.sock:
            self.sock.close()
            self.sock = None

    def _connect(self):
        if self.sock is None:
            self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=30)
            self.buf = b""
            self.connects += 1

    def request(self, method: str, uri: str, body: bytes | str = b"", headers: dict | None = None) -> Response:
        if isinstance(body, str):
            body = body.encode("utf-8")
        fields = {"User-Agent": USER_AGENT}
        fields.update(headers or {})
        fields["Host"] = f"127.0.0.1:{self.port}"
        if body:
            fields["Content-Length"] = len(body)
        head = f"{method} {uri if uri.startswith('/') else '/' + uri} HTTP/1.1\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in fields.items()) + "\r\n"
        self._connect()
        raw = head.encode() + body
        self.sent.append(raw)
        self.sock.sendall(raw)
        resp = self._read_response(method)
        if (resp.get("Connection") or "").lower() == "close":
            self.close()
        return resp

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the daemon closed the connection")
        self.buf += chunk

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def _read_response(self, method: str) -> Response:
        status_line = self._line().decode()
        assert status_line.startswith("HTTP/1.1 "), status_line
        status = int(status_line.split()[1])
        headers = []
        while True:
            line = self._line()
            if not line:
                break
            k, v = line.decode().split(":", 1)
            headers.append((k.strip(), v.strip()))
        resp = Response(status, headers, b"")
        if method == "HEAD" or status in (204, 304):
            return resp
        if (resp.get("Transfer-Encoding") or "").lower() == "chunked":
            body = b""
            while True:
                size = int(self._line().split(b";")[0], 16)
                if size == 0:
                    while self._line():
                        pass
                    break
                body += self._exactly(size)
                self._line()
            resp.body = body
        else:
            resp.body = self._exactly(int(resp.get("Content-Length") or 0))
        return resp

    # ---- tritonclient.http.InferenceServerClient, method by method ----

    @staticmethod
    def _raise_if_error(resp: Response):
        if resp.status_code != 200:
            body = resp.read().decode("utf-8")
            error = json.loads(body) if len(body) else {"error": "client received an empty response from the server."}
            raise ServerError(error["error"], str(resp.status_code))

    def is_server_live(self) -> bool:
        return self.request("GET", "v2/health/live").status_code == 200

    def is_server_ready(self) -> bool:
        return self.request("GET", "v2/health/ready").status_code == 200

    def is_model_ready(self, name: str, version: str = "") -> bool:
        uri = f"v2/models/{quote(name)}/versions/{version}/ready" if version else f"v2/models/{quote(name)}/ready"
        return self.request("GET", uri).status_code == 200

    def _get_json(self, uri: str):
        resp = self.request("GET", uri)
        self._raise_if_error(resp)
        return json.loads(resp.read())

    def get_server_metadata(self):
        return self._get_json("v2")

    def get_model_metadata(self, name: str, version: str = ""):
        return self._get_json(f"v2/models/{quote(name)}/versions/{version}" if version else f"v2/models/{quote(name)}")

    def get_model_config(self, name: str, version: str = ""):
        return self._get_json(f"v2/models/{quote(name)}/versions/{version}/config" if version
                              else f"v2/models/{quote(name)}/config")

    def get_inference_statistics(self, name: str = "", version: str = ""):
        if not name:
            return self._get_json("v2/models/stats")
        return self._get_json(f"v2/models/{quote(name)}/versions/{version}/stats" if version
                              else f"v2/models/{quote(name)}/stats")

    def get_log_settings(self):
        return self._get_json("v2/logging")

    def get_model_repository_index(self):
        resp = self.request("POST", "v2/repository/index", "")
        self._raise_if_error(resp)
        return json.loads(resp.read())

    def load_model(self, name: str, config: str | None = None, files: dict | None = None):
        load_request: dict = {}
        if config is not None:
            load_request.setdefault("parameters", {})["config"] = config
        for path, content in (files or {}).items():
            load_request.setdefault("parameters", {})[path] = base64.b64encode(content).decode()
        self._raise_if_error(self.request("POST", f"v2/repository/models/{quote(name)}/load", dumps(load_request)))

    def unload_model(self, name: str, unload_dependents: bool = False):
        body = dumps({"parameters": {"unload_dependents": unload_dependents}})
        self._raise_if_error(self.request("POST", f"v2/repository/models/{quote(name)}/unload", body))

    def infer(self, name: str, inputs: list["InferInput"], outputs: list["InferRequestedOutput"] | None = None,
              request_id: str = "", sequence_id=0, sequence_start=False, sequence_end=False, priority=0,
              timeout=None, parameters: dict | None = None, version: str = "") -> "InferResult":
        body, json_size = get_inference_request(inputs, request_id, outputs, sequence_id, sequence_start,
                                                sequence_end, priority, timeout, parameters)
        headers = {}
        if json_size is not None:
            headers["Inference-Header-Content-Length"] = json_size
        uri = f"v2/models/{quote(name)}/versions/{version}/infer" if version else f"v2/models/{quote(name)}/infer"
        resp = self.request("POST", uri, body, headers or None)
        self._raise_if_error(resp)
        return InferResult(resp)


# ---- tritonclient.http._infer_input, _requested_output, _utils, _infer_result ----

# serialize_byte_tensor (a 4-byte little-endian length before each element) and its inverse, and the
# plain datatypes' little-endian layouts, are test_api_v2's encode_raw and decode_raw.


class InferInput:
    def __init__(self, name: str, shape: list[int], datatype: str):
        self._name, self._shape, self._datatype = name, shape, datatype
        self._parameters: dict = {}
        self._data = None
        self._raw_data = None

    def set_data(self, values: list, binary_data: bool = True):
        """set_data_from_numpy, for a flat list of values in row-major order."""
        if not binary_data:
            self._parameters.pop("binary_data_size", None)
            self._raw_data = None
            self._data = [v.decode() if isinstance(v, bytes) else v for v in values]
        else:
            self._data = None
            self._raw_data = encode_raw(self._datatype, values)
            self._parameters["binary_data_size"] = len(self._raw_data)
        return self

    def _get_binary_data(self):
        return self._raw_data

    def _get_tensor(self) -> dict:
        tensor = {"name": self._name, "shape": self._shape, "datatype": self._datatype}
        if self._parameters:
            tensor["parameters"] = self._parameters
        if self._parameters.get("shared_memory_region") is None and self._raw_data is None:
            if self._data is not None:
                tensor["data"] = self._data
        return tensor


class InferRequestedOutput:
    def __init__(self, name: str, binary_data: bool = True):
        self._name = name
        self._parameters = {"binary_data": binary_data}

    def _get_tensor(self) -> dict:
        tensor = {"name": self._name}
        if self._parameters:
            tensor["parameters"] = self._parameters
        return tensor


def get_inference_request(inputs, request_id, outputs, sequence_id, sequence_start, sequence_end, priority, timeout,
                          custom_parameters):
    """_utils._get_inference_request, key for key."""
    infer_request: dict = {}
    parameters: dict = {}
    if request_id != "":
        infer_request["id"] = request_id
    if sequence_id != 0 and sequence_id != "":
        parameters["sequence_id"] = sequence_id
        parameters["sequence_start"] = sequence_start
        parameters["sequence_end"] = sequence_end
    if priority != 0:
        parameters["priority"] = priority
    if timeout is not None:
        parameters["timeout"] = timeout
    infer_request["inputs"] = [i._get_tensor() for i in inputs]
    if outputs:
        infer_request["outputs"] = [o._get_tensor() for o in outputs]
    else:
        parameters["binary_data_output"] = True
    for key, value in (custom_parameters or {}).items():
        parameters[key] = value
    if parameters:
        infer_request["parameters"] = parameters
    request_json = dumps(infer_request)
    json_size = len(request_json)
    body = [request_json.encode()]
    for i in inputs:
        if i._get_binary_data() is not None:
            body.append(i._get_binary_data())
    if len(body) == 1:
        return body[0], None
    return b"".join(body), json_size


class InferResult:
    def __init__(self, response: Response):
        header_length = response.get("Inference-Header-Content-Length")
        if header_length is None:
            self._result = json.loads(response.read())
            self._buffer = b""
            self._map = {}
        else:
            self._result = json.loads(response.read(length=int(header_length)))
            self._buffer = response.read()
            self._map = {}
            index = 0
            for output in self._result["outputs"]:
                size = (output.get("parameters") or {}).get("binary_data_size")
                if size is not None:
                    self._map[output["name"]] = (index, size)
                    index += size

    def as_list(self, name: str):
        """as_numpy, flattened: binary data by the output's datatype, else its JSON data."""
        for output in self._result.get("outputs") or []:
            if output["name"] != name:
                continue
            if name in self._map:
                start, size = self._map[name]
                return decode_raw(output["datatype"], self._buffer[start:start + size])
            return output["data"]
        return None

    def get_output(self, name: str):
        for output in self._result["outputs"]:
            if output["name"] == name:
                return output
        return None

    def get_response(self):
        return self._result


# ---------------------------------------------------------------- the tests


@pytest.fixture
def client_and_daemon(corral):
    corral.add("echo", "echo")
    corral.add("ctl", "steerable", manifest=ctl_manifest(parameters={"tag": "file"}))
    d = corral.start()
    c = GeventLikeClient(d.port)
    yield c, d
    c.close()


def test_health_metadata_config_and_statistics_as_the_client_sees_them(client_and_daemon):
    c, d = client_and_daemon
    assert c.is_server_live() and c.is_server_ready()
    meta = c.get_server_metadata()
    assert meta["name"] == "corral" and "model_configuration" in meta["extensions"]
    # A lazily loaded model is ready: a health check or readiness probe on it passes.
    assert c.is_model_ready("echo") and c.is_model_ready("echo", "1")
    assert not c.is_model_ready("echo", "2") and not c.is_model_ready("nosuch")
    m = c.get_model_metadata("echo")
    assert m["name"] == "echo" and m["versions"] == ["1"]
    assert c.get_model_metadata("echo", "1") == m
    cfg = c.get_model_config("echo")
    assert cfg["name"] == "echo" and cfg["max_batch_size"] == 0 and cfg["instance_group"][0]["count"] == 2
    assert c.get_model_config("echo", "1") == cfg
    with pytest.raises(ServerError) as e:
        c.get_model_config("nosuch")
    assert e.value.status == "404" and "nosuch" in e.value.msg
    stats = c.get_inference_statistics("echo")
    assert stats["model_stats"][0]["name"] == "echo"
    assert {s["name"] for s in c.get_inference_statistics()["model_stats"]} >= {"echo", "ctl"}
    assert "log_verbose_level" in c.get_log_settings()
    index = {e["name"]: e for e in c.get_model_repository_index()}
    assert set(index) == {"echo", "ctl"}
    # Every one of these went over the same connection, as the client's pool of one does.
    assert c.connects == 1 and len(c.sent) > 15
    # The empty-bodied POST carried no Content-Length at all, as geventhttpclient sends it.
    assert b"Content-Length" not in [raw for raw in c.sent if raw.startswith(b"POST /v2/repository/index")][0]


def test_binary_infer_both_ways_as_the_client_builds_and_parses_it(client_and_daemon):
    c, d = client_and_daemon
    a = InferInput("INPUT0", [2, 3], "FP32").set_data([0.5, 1.5, -2.0, 3.25, 1e-3, 7.0])
    b = InferInput("INPUT1", [3], "BYTES").set_data([b"corral", b"", b"\x00\xffbin"])
    i = InferInput("INPUT2", [2], "INT64").set_data([2**40, -3], binary_data=False)
    r = c.infer("echo", [a, b, i], request_id="req-1")
    assert r.get_response()["id"] == "req-1"
    # outputs=None: the client asked binary_data_output, so every output comes back binary
    assert all("binary_data_size" in o["parameters"] for o in r.get_response()["outputs"])
    assert r.as_list("OUTPUT0") == [0.5, 1.5, -2.0, 3.25, struct.unpack("<f", struct.pack("<f", 1e-3))[0], 7.0]
    assert r.get_output("OUTPUT0")["shape"] == [2, 3] and r.get_output("OUTPUT0")["datatype"] == "FP32"
    assert r.as_list("OUTPUT1") == [b"corral", b"", b"\x00\xffbin"]
    assert r.as_list("OUTPUT2") == [2**40, -3]
    sent = c.sent[-1]
    head, body = sent.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    # geventhttpclient's order: User-Agent, the caller's header, Host, Content-Length
    assert [ln.split(b":")[0] for ln in lines[1:]] == [b"User-Agent", b"Inference-Header-Content-Length", b"Host",
                                                       b"Content-Length"]
    json_len = int(dict(ln.split(b": ", 1) for ln in lines[1:])[b"Inference-Header-Content-Length"])
    assert body[:json_len].startswith(b'{"id":"req-1","inputs":[{"name":"INPUT0","shape":[2,3],"datatype":"FP32",'
                                      b'"parameters":{"binary_data_size":24}}')
    assert body[:json_len].endswith(b'"parameters":{"binary_data_output":true}}')


def test_requested_outputs_json_and_binary_and_request_parameters(client_and_daemon):
    c, d = client_and_daemon
    a = InferInput("INPUT0", [4], "INT32").set_data([1, -2, 3, 2**31 - 1])
    b = InferInput("INPUT1", [2], "UINT8").set_data([0, 255])
    r = c.infer("echo", [a, b], outputs=[InferRequestedOutput("OUTPUT0", binary_data=False),
                                         InferRequestedOutput("OUTPUT1")],
                priority=1, timeout=5_000_000, parameters={"my_key": "my value"})
    assert r.get_output("OUTPUT0")["data"] == [1, -2, 3, 2**31 - 1]
    assert "parameters" not in r.get_output("OUTPUT0") or "binary_data_size" not in r.get_output("OUTPUT0")["parameters"]
    assert r.as_list("OUTPUT1") == [0, 255]
    # JSON only: no binary section, no header length
    r = c.infer("echo", [InferInput("INPUT0", [1], "FP64").set_data([2.5], binary_data=False)],
                outputs=[InferRequestedOutput("OUTPUT0", binary_data=False)])
    assert r.as_list("OUTPUT0") == [2.5]
    # The model is handed custom parameters: steerable prints "say" to its log.
    r = c.infer("ctl", [InferInput("X", [1], "INT32").set_data([0])], parameters={"say": "tritonclient says hi"})
    assert r.as_list("TAG") == [b"file"]


def test_errors_reach_the_client_as_its_exception(client_and_daemon):
    c, d = client_and_daemon
    with pytest.raises(ServerError) as e:
        c.infer("ctl", [InferInput("X", [1], "INT32").set_data([0])], sequence_id=42)
    assert e.value.status == "400" and "must specify the START flag" in e.value.msg and "'ctl'" in e.value.msg
    with pytest.raises(ServerError) as e:
        c.infer("nosuch", [InferInput("X", [1], "INT32").set_data([0])])
    assert e.value.status == "404"
    with pytest.raises(ServerError) as e:
        c.infer("ctl", [InferInput("X", [1], "INT32").set_data([0])], priority=99)
    assert e.value.status == "400" and "priority" in e.value.msg


def test_load_with_config_reload_and_unload_as_the_client_sends_them(client_and_daemon):
    c, d = client_and_daemon
    c.load_model("ctl", config=json.dumps({"instances": 2, "parameters": {"tag": "from-client"}}))
    assert c.get_model_config("ctl")["instance_group"][0]["count"] == 2
    assert len(d.model("ctl")["instances"]) == 2
    r = c.infer("ctl", [InferInput("X", [1], "INT32").set_data([0])])
    assert r.as_list("TAG") == [b"from-client"]
    # A Triton-shaped config is refused by name, nothing changes
    with pytest.raises(ServerError) as e:
        c.load_model("ctl", config=json.dumps({"instance_group": [{"count": 3}]}))
    assert e.value.status == "400" and "instance_group" in e.value.msg
    assert len(d.model("ctl")["instances"]) == 2
    with pytest.raises(ServerError) as e:
        c.load_model("ctl", config="{}", files={"file:1/model.py": b"print('hi')\n"})
    assert e.value.status == "400" and "file:1/model.py" in e.value.msg
    # load without a config: model.yaml again (a reload)
    c.load_model("ctl")
    assert c.infer("ctl", [InferInput("X", [1], "INT32").set_data([0])]).as_list("TAG") == [b"file"]
    c.unload_model("ctl")
    assert d.model("ctl")["state"] == "unloaded"
    assert c.is_model_ready("ctl")  # it would load on demand
    c.unload_model("echo", unload_dependents=True)
