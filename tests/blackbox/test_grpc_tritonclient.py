"""Triton's gRPC client, call for call.

tritonclient (triton-inference-server/client, src/python/library/tritonclient/grpc)
cannot be installed here, so `TritonGrpc` below sends what its
InferenceServerClient sends, built as it builds it, over Debian's grpcio with
stubs of the repository's proto (the same service definition tritonclient is
generated from):
- `_get_inference_request`: inputs' bytes in `raw_input_contents` (numpy's
  `tobytes`, BYTES serialized as 4-byte little-endian lengths and bytes, BF16
  as the upper halves of float32), `priority` as a uint64 parameter, `timeout`
  as int64, custom parameters by Python type;
- `InferRequestedOutput(name, class_count)`: `classification` as int64;
- `client_timeout` as the call's deadline, `headers` as metadata,
  `compression_algorithm` as gRPC's message compression;
- `InferResult.as_numpy`: the output's index among `outputs` picks its
  `raw_output_contents`;
- `async_stream_infer(..., enable_empty_final_response=True)`:
  `triton_enable_empty_final_response`, and the callback's `(result, error)`;
- errors as `InferenceServerException(status, message)` from the RpcError.

Then the calls of Triton's own examples (simple_grpc_infer_client.py,
simple_grpc_health_metadata.py, simple_grpc_model_control.py,
simple_grpc_string_infer_client.py, simple_grpc_async_infer_client.py,
simple_grpc_custom_args_client.py) run against corral's port, with the
"simple" model they use (tests/models/simple).
"""
from __future__ import annotations

import json
import queue
import struct
import threading

import grpc
import numpy as np
import pytest

import grpc_stubs

pb, pb_grpc = grpc_stubs.load()


class InferenceServerException(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


def raise_error(e: grpc.RpcError):
    raise InferenceServerException(str(e.code()), e.details()) from None


def serialize_byte_tensor(a: np.ndarray) -> bytes:
    out = b""
    for item in a.flatten(order="C"):
        b = item if isinstance(item, bytes) else str(item).encode()
        out += struct.pack("<I", len(b)) + b
    return out


def deserialize_bytes_tensor(raw: bytes) -> np.ndarray:
    items, at = [], 0
    while at < len(raw):
        (n,) = struct.unpack_from("<I", raw, at)
        items.append(raw[at + 4:at + 4 + n])
        at += 4 + n
    return np.array(items, dtype=np.object_)


def serialize_bf16_tensor(a: np.ndarray) -> bytes:
    return (a.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16).tobytes()


NP = {"BOOL": np.bool_, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
      "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
      "FP16": np.float16, "FP32": np.float32, "FP64": np.float64}


class InferInput:
    def __init__(self, name, shape, datatype):
        self._input = pb.ModelInferRequest().InferInputTensor()
        self._input.name = name
        self._input.ClearField("shape")
        self._input.shape.extend(shape)
        self._input.datatype = datatype
        self._raw = None

    def set_data_from_numpy(self, a):
        if self._input.datatype == "BYTES":
            self._raw = serialize_byte_tensor(a)
        elif self._input.datatype == "BF16":
            self._raw = serialize_bf16_tensor(a)
        else:
            self._raw = a.tobytes()
        return self


class InferRequestedOutput:
    def __init__(self, name, class_count=0):
        self._output = pb.ModelInferRequest().InferRequestedOutputTensor()
        self._output.name = name
        if class_count != 0:
            self._output.parameters["classification"].int64_param = class_count


class InferResult:
    def __init__(self, result):
        self._result = result

    def as_numpy(self, name):
        for index, output in enumerate(self._result.outputs):
            if output.name != name:
                continue
            shape = list(output.shape)
            if index >= len(self._result.raw_output_contents):
                return None
            raw = self._result.raw_output_contents[index]
            if output.datatype == "BYTES":
                a = deserialize_bytes_tensor(raw)
            else:
                a = np.frombuffer(raw, dtype=NP[output.datatype])
            return a.reshape(shape)
        return None

    def get_response(self):
        return self._result


class TritonGrpc:
    """The calls of tritonclient.grpc.InferenceServerClient used below, made as it makes them."""

    def __init__(self, url):
        self._channel = grpc.insecure_channel(url, options=[("grpc.max_send_message_length", 2**31 - 1),
                                                            ("grpc.max_receive_message_length", 2**31 - 1)])
        self._stub = pb_grpc.GRPCInferenceServiceStub(self._channel)
        self._stream = None

    def close(self):
        self.stop_stream()
        self._channel.close()

    @staticmethod
    def _md(headers):
        return tuple(headers.items()) if headers else ()

    def is_server_live(self, headers=None):
        try:
            return self._stub.ServerLive(pb.ServerLiveRequest(), metadata=self._md(headers)).live
        except grpc.RpcError as e:
            raise_error(e)

    def is_server_ready(self, headers=None):
        try:
            return self._stub.ServerReady(pb.ServerReadyRequest(), metadata=self._md(headers)).ready
        except grpc.RpcError as e:
            raise_error(e)

    def is_model_ready(self, model_name, model_version="", headers=None):
        try:
            return self._stub.ModelReady(pb.ModelReadyRequest(name=model_name, version=model_version),
                                         metadata=self._md(headers)).ready
        except grpc.RpcError as e:
            raise_error(e)

    def get_server_metadata(self, headers=None):
        try:
            return self._stub.ServerMetadata(pb.ServerMetadataRequest(), metadata=self._md(headers))
        except grpc.RpcError as e:
            raise_error(e)

    def get_model_metadata(self, model_name, model_version="", headers=None):
        try:
            return self._stub.ModelMetadata(pb.ModelMetadataRequest(name=model_name, version=model_version),
                                            metadata=self._md(headers))
        except grpc.RpcError as e:
            raise_error(e)

    def get_model_config(self, model_name, model_version="", headers=None):
        try:
            return self._stub.ModelConfig(pb.ModelConfigRequest(name=model_name, version=model_version),
                                          metadata=self._md(headers))
        except grpc.RpcError as e:
            raise_error(e)

    def get_model_repository_index(self, headers=None):
        try:
            return self._stub.RepositoryIndex(pb.RepositoryIndexRequest(), metadata=self._md(headers))
        except grpc.RpcError as e:
            raise_error(e)

    def load_model(self, model_name, headers=None, config=None):
        request = pb.RepositoryModelLoadRequest(model_name=model_name)
        if config is not None:
            request.parameters["config"].string_param = config
        try:
            self._stub.RepositoryModelLoad(request, metadata=self._md(headers))
        except grpc.RpcError as e:
            raise_error(e)

    def unload_model(self, model_name, headers=None, unload_dependents=False):
        request = pb.RepositoryModelUnloadRequest(model_name=model_name)
        request.parameters["unload_dependents"].bool_param = unload_dependents
        try:
            self._stub.RepositoryModelUnload(request, metadata=self._md(headers))
        except grpc.RpcError as e:
            raise_error(e)

    def get_inference_statistics(self, model_name="", model_version="", headers=None):
        try:
            return self._stub.ModelStatistics(pb.ModelStatisticsRequest(name=model_name, version=model_version),
                                              metadata=self._md(headers))
        except grpc.RpcError as e:
            raise_error(e)

    @staticmethod
    def _request(model_name, inputs, model_version="", request_id="", outputs=None, priority=0, timeout=None,
                 parameters=None):
        request = pb.ModelInferRequest(model_name=model_name, model_version=model_version)
        if request_id != "":
            request.id = request_id
        for i in inputs:
            request.inputs.extend([i._input])
            if i._raw is not None:
                request.raw_input_contents.extend([i._raw])
        for o in outputs or ():
            request.outputs.extend([o._output])
        if priority != 0:
            request.parameters["priority"].uint64_param = priority
        if timeout is not None:
            request.parameters["timeout"].int64_param = timeout
        for key, value in (parameters or {}).items():
            if isinstance(value, str):
                request.parameters[key].string_param = value
            elif isinstance(value, bool):
                request.parameters[key].bool_param = value
            elif isinstance(value, int):
                request.parameters[key].int64_param = value
            elif isinstance(value, float):
                request.parameters[key].double_param = value
        return request

    @staticmethod
    def _compression(algorithm):
        return {None: None, "gzip": grpc.Compression.Gzip, "deflate": grpc.Compression.Deflate}[algorithm]

    def infer(self, model_name, inputs, model_version="", outputs=None, request_id="", priority=0, timeout=None,
              client_timeout=None, headers=None, compression_algorithm=None, parameters=None):
        request = self._request(model_name, inputs, model_version, request_id, outputs, priority, timeout, parameters)
        try:
            response = self._stub.ModelInfer(request, metadata=self._md(headers), timeout=client_timeout,
                                             compression=self._compression(compression_algorithm))
        except grpc.RpcError as e:
            raise_error(e)
        return InferResult(response)

    def async_infer(self, model_name, inputs, callback, **kw):
        request = self._request(model_name, inputs, kw.get("model_version", ""), kw.get("request_id", ""),
                                kw.get("outputs"))

        def done(future):
            try:
                callback(result=InferResult(future.result()), error=None)
            except grpc.RpcError as e:
                callback(result=None, error=InferenceServerException(str(e.code()), e.details()))

        future = self._stub.ModelInfer.future(request, timeout=kw.get("client_timeout"))
        future.add_done_callback(done)
        return future

    def start_stream(self, callback, stream_timeout=None, headers=None):
        requests: queue.Queue = queue.Queue()

        def gen():
            while True:
                r = requests.get()
                if r is None:
                    return
                yield r

        responses = self._stub.ModelStreamInfer(gen(), metadata=self._md(headers), timeout=stream_timeout)

        def pump():
            try:
                for response in responses:
                    if response.error_message != "":
                        callback(result=None, error=InferenceServerException("", response.error_message))
                    else:
                        callback(result=InferResult(response.infer_response), error=None)
            except grpc.RpcError as e:
                callback(result=None, error=InferenceServerException(str(e.code()), e.details()))

        thread = threading.Thread(target=pump, daemon=True)
        thread.start()
        self._stream = (requests, thread)

    def async_stream_infer(self, model_name, inputs, model_version="", outputs=None, request_id="",
                           enable_empty_final_response=False, parameters=None):
        request = self._request(model_name, inputs, model_version, request_id, outputs, parameters=parameters)
        if enable_empty_final_response:
            request.parameters["triton_enable_empty_final_response"].bool_param = True
        self._stream[0].put(request)

    def stop_stream(self):
        if self._stream:
            self._stream[0].put(None)
            self._stream[1].join(timeout=30)
            self._stream = None


@pytest.fixture
def triton(corral):
    corral.add("simple", "simple")
    corral.add("echo", "echo")
    corral.add("tokens", "tokens")
    d = corral.start()
    client = TritonGrpc(f"127.0.0.1:{d.grpc_port}")
    yield client, d
    client.close()


def simple_inputs(a, b):
    inputs = [InferInput("INPUT0", [1, 16], "INT32"), InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    return inputs


def test_simple_grpc_infer_client(triton):
    """simple_grpc_infer_client.py: two INT32 [1, 16] in, their sum and difference out, then statistics."""
    client, _ = triton
    a = np.expand_dims(np.arange(start=0, stop=16, dtype=np.int32), axis=0)
    b = np.ones(shape=(1, 16), dtype=np.int32)
    outputs = [InferRequestedOutput("OUTPUT0"), InferRequestedOutput("OUTPUT1")]
    results = client.infer(model_name="simple", inputs=simple_inputs(a, b), outputs=outputs, client_timeout=30,
                           headers={"test": "1"})
    assert (results.as_numpy("OUTPUT0") == a + b).all()
    assert (results.as_numpy("OUTPUT1") == a - b).all()
    statistics = client.get_inference_statistics(model_name="simple")
    assert len(statistics.model_stats) == 1
    assert statistics.model_stats[0].inference_stats.success.count == 1


def test_simple_grpc_infer_client_compressed(triton):
    """The same with -C gzip and -C deflate: gRPC's message compression of the request."""
    client, _ = triton
    a = np.full((1, 16), 7, dtype=np.int32)
    b = np.arange(16, dtype=np.int32).reshape(1, 16)
    for algorithm in ("gzip", "deflate"):
        results = client.infer("simple", simple_inputs(a, b), compression_algorithm=algorithm)
        assert (results.as_numpy("OUTPUT0") == a + b).all(), algorithm


def test_simple_grpc_health_metadata(triton):
    """simple_grpc_health_metadata.py: liveness, readiness, server and model metadata."""
    client, _ = triton
    assert client.is_server_live(headers={"test": "1"})
    assert client.is_server_ready()
    assert client.is_model_ready("simple")
    meta = client.get_server_metadata()
    assert meta.name == "corral" and "model_repository" in meta.extensions
    model = client.get_model_metadata("simple")
    assert model.name == "simple" and list(model.versions) == ["1"]
    assert [(i.name, i.datatype, list(i.shape)) for i in model.inputs] == [("INPUT0", "INT32", [-1, 16]),
                                                                          ("INPUT1", "INT32", [-1, 16])]
    assert [o.name for o in model.outputs] == ["OUTPUT0", "OUTPUT1"]
    with pytest.raises(InferenceServerException) as e:
        client.get_model_metadata("wrong_model_name")
    assert e.value.status == "StatusCode.NOT_FOUND" and "wrong_model_name" in e.value.message


def test_simple_grpc_model_control(triton):
    """simple_grpc_model_control.py: load (with a config), the index, unload, readiness after."""
    client, d = triton
    client.load_model("simple")
    assert client.is_model_ready("simple")
    index = {m.name: m for m in client.get_model_repository_index().models}
    assert index["simple"].state == "READY"
    client.load_model("simple", config=json.dumps({"instances": 2}))
    assert len(d.model("simple")["instances"]) == 2
    config = client.get_model_config("simple").config
    assert config.name == "simple" and config.instance_group[0].count == 2
    client.unload_model("simple")
    assert d.model("simple")["state"] == "unloaded"
    index = {m.name: m for m in client.get_model_repository_index().models}
    assert index["simple"].state == "UNAVAILABLE"
    with pytest.raises(InferenceServerException) as e:
        client.load_model("simple", config=json.dumps({"instances": 0}))
    assert e.value.status == "StatusCode.INVALID_ARGUMENT" and "instances" in e.value.message


def test_simple_grpc_string_infer_client(triton):
    """simple_grpc_string_infer_client.py, on the echo model: BYTES in and out, byte for byte."""
    client, _ = triton
    data = np.array([str(x).encode() for x in range(16)] + [b"", "caf\u00e9".encode(), b"\xff\x00"],
                    dtype=np.object_).reshape(1, 19)
    inp = InferInput("INPUT0", [1, 19], "BYTES").set_data_from_numpy(data)
    out = client.infer("echo", [inp], outputs=[InferRequestedOutput("OUTPUT0")]).as_numpy("OUTPUT0")
    assert out.shape == (1, 19) and list(out.flatten()) == list(data.flatten())


@pytest.mark.parametrize("datatype", sorted(NP) + ["BF16"])
def test_every_datatype_round_trips(triton, datatype):
    """What set_data_from_numpy sends for each datatype comes back from the echo model as as_numpy reads it."""
    client, _ = triton
    if datatype == "BF16":
        a = np.array([[1.0, -2.5, 3.0e38]], dtype=np.float32)
        inp = InferInput("INPUT0", [1, 3], "BF16").set_data_from_numpy(a)
        result = client.infer("echo", [inp]).get_response()
        assert result.outputs[0].datatype == "BF16"
        assert result.raw_output_contents[0] == serialize_bf16_tensor(a)
        return
    rng = np.random.default_rng(7)
    if datatype == "BOOL":
        a = rng.integers(0, 2, (2, 3)).astype(np.bool_)
    elif datatype.startswith(("FP",)):
        a = rng.standard_normal((2, 3)).astype(NP[datatype])
    else:
        info = np.iinfo(NP[datatype])
        a = rng.integers(info.min, info.max, (2, 3), dtype=NP[datatype], endpoint=True)
    inp = InferInput("INPUT0", [2, 3], datatype).set_data_from_numpy(a)
    out = client.infer("echo", [inp]).as_numpy("OUTPUT0")
    assert out.dtype == a.dtype and (out == a).all()


def test_simple_grpc_async_infer_client(triton):
    """simple_grpc_async_infer_client.py: async_infer with a callback, many at once."""
    client, _ = triton
    done: queue.Queue = queue.Queue()
    for k in range(8):
        a = np.full((1, 16), k, dtype=np.int32)
        b = np.ones((1, 16), dtype=np.int32)
        client.async_infer("simple", simple_inputs(a, b), partial_done(done, k), request_id=str(k))
    seen = {}
    for _ in range(8):
        k, result, error = done.get(timeout=30)
        assert error is None
        seen[k] = result
    for k, result in seen.items():
        assert (result.as_numpy("OUTPUT0") == k + 1).all() and result.get_response().id == str(k)


def partial_done(q, k):
    return lambda result, error: q.put((k, result, error))


def test_simple_grpc_custom_args_client(triton):
    """simple_grpc_custom_args_client.py's keyword arguments: priority (sent as uint64), timeout, parameters."""
    client, _ = triton
    a = np.zeros((1, 16), dtype=np.int32)
    results = client.infer("simple", simple_inputs(a, a), priority=1, timeout=10_000_000, request_id="custom")
    assert results.get_response().id == "custom"
    with pytest.raises(InferenceServerException) as e:
        client.infer("simple", simple_inputs(a, a), priority=99)
    assert e.value.status == "StatusCode.INVALID_ARGUMENT" and "priority" in e.value.message


def test_infer_errors_as_tritonclient_raises_them(triton):
    """The statuses and messages tritonclient's InferenceServerException carries."""
    client, _ = triton
    a = np.zeros((1, 8), dtype=np.int32)  # the model declares [-1, 16]
    with pytest.raises(InferenceServerException) as e:
        client.infer("simple", simple_inputs(a, a))
    assert e.value.status == "StatusCode.INVALID_ARGUMENT" and "INPUT0" in e.value.message
    with pytest.raises(InferenceServerException) as e:
        client.infer("nonexistent", simple_inputs(a, a))
    assert e.value.status == "StatusCode.NOT_FOUND"
    with pytest.raises(InferenceServerException) as e:
        client.infer("simple", simple_inputs(np.zeros((1, 16), np.int32), np.zeros((1, 16), np.int32)),
                     model_version="3")
    assert e.value.status == "StatusCode.NOT_FOUND"


def test_async_stream_infer_decoupled(triton):
    """start_stream + async_stream_infer on a decoupled model (Triton's repeat/LLM pattern): a response per
    token with triton_final_response false, then the empty final one, asked for with
    enable_empty_final_response; a second request on the same stream, and an error that does not end it."""
    client, _ = triton
    got: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: got.put((result, error)))
    text = InferInput("text", [1], "BYTES").set_data_from_numpy(np.array([b"one two three"], dtype=np.object_))
    client.async_stream_infer("tokens", [text], request_id="a", enable_empty_final_response=True,
                              parameters={"delay": 0.0})
    tokens, final = [], None
    while final is None:
        result, error = got.get(timeout=30)
        assert error is None
        response = result.get_response()
        assert response.id == "a"
        if response.parameters["triton_final_response"].bool_param:
            final = response
        else:
            tokens.append(result.as_numpy("token")[0])
    assert tokens == [b"one", b"two", b"three"] and len(final.outputs) == 0
    client.async_stream_infer("nonexistent", [text], request_id="bad")
    result, error = got.get(timeout=30)
    assert result is None and "nonexistent" in error.message
    a = np.ones((1, 16), dtype=np.int32)
    client.async_stream_infer("simple", simple_inputs(a, a), request_id="s")
    result, error = got.get(timeout=30)
    assert error is None and (result.as_numpy("OUTPUT0") == 2).all()
    assert result.get_response().parameters["triton_final_response"].bool_param
