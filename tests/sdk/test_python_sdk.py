"""
Unit tests of the Python SDK (sdk/python/corral) without the daemon.

Each test starts a worker script in a subprocess on one end of a socketpair
(CORRAL_FD, as the daemon does) and plays the daemon on the other end, writing
and reading protocol frames by hand (docs/worker-protocol.md). Frames are
built here with struct, independently of the SDK's own codec.

Every test runs under three interpreters: this one with numpy, this one with
CORRAL_NO_NUMPY=1 (pure standard library), and the `python3` found on PATH
when it is a different interpreter. Every socket read has a timeout, every
wait on a process is bounded, an alarm bounds each test, and teardown kills
every process a test started.

Run: /usr/bin/python3 -m pytest -q tests/sdk
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import pytest

REPO = Path(__file__).resolve().parents[2]
SDK_DIR = REPO / "sdk" / "python"
ECHO_WORKER = REPO / "examples" / "models" / "echo" / "worker.py"

HEADER = struct.Struct("<IBBHQ")
HELLO, LOAD, READY = 0x01, 0x02, 0x03
INFER, INFER_RESULT, GENERATE, GENERATE_RESULT = 0x10, 0x11, 0x12, 0x13
CANCEL, BATCH, CREDIT, SEQUENCE_END = 0x16, 0x17, 0x18, 0x19
ERROR, PING, PONG, SHUTDOWN = 0x1F, 0x20, 0x21, 0x22
SHM = 0x30  # reserved: no version-1 peer sends it

READ_TIMEOUT_S = 10.0
TEST_DEADLINE_S = 60

STRUCT_CODE = {
    "BOOL": "?",
    "UINT8": "B",
    "UINT16": "H",
    "UINT32": "I",
    "UINT64": "Q",
    "INT8": "b",
    "INT16": "h",
    "INT32": "i",
    "INT64": "q",
    "FP16": "e",
    "FP32": "f",
    "FP64": "d",
    "BF16": "H",  # raw bit patterns
}


# ------------------------------------------------------------------ interpreters


def _has_numpy(python: str) -> bool:
    try:
        return subprocess.run([python, "-c", "import numpy"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _path_python3() -> Optional[str]:
    """The real interpreter behind `python3` on PATH, when it is not this one."""
    found = shutil.which("python3")
    if not found:
        return None
    try:
        out = subprocess.run(
            [found, "-c", "import sys; print(sys.executable)"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    real = out.stdout.strip()
    if out.returncode != 0 or not real or os.path.realpath(real) == os.path.realpath(sys.executable):
        return None
    return real


def _variants() -> List[Any]:
    variants = []
    if _has_numpy(sys.executable):
        variants.append(pytest.param((sys.executable, {}, True), id="numpy"))
    variants.append(pytest.param((sys.executable, {"CORRAL_NO_NUMPY": "1"}, False), id="stdlib"))
    other = _path_python3()
    if other:
        variants.append(pytest.param((other, {}, _has_numpy(other)), id="path-python3"))
    return variants


@pytest.fixture(params=_variants())
def variant(request: Any) -> Tuple[str, Dict[str, str], bool]:
    """(interpreter, extra environment, whether the worker will use numpy)."""
    return request.param


@pytest.fixture(autouse=True)
def _deadline() -> Any:
    """Backstop: no test may run longer than TEST_DEADLINE_S."""

    def expire(signum: int, frame: Any) -> None:
        raise TimeoutError(f"test ran past {TEST_DEADLINE_S}s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(TEST_DEADLINE_S)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


# ------------------------------------------------------------------ frames


def tensor_raw(datatype: str, values: Sequence[Any]) -> bytes:
    if datatype == "BYTES":
        return b"".join(struct.pack("<I", len(v)) + v for v in values)
    return struct.pack(f"<{len(values)}{STRUCT_CODE[datatype]}", *values)


def body_with_meta(meta: Dict[str, Any], data: bytes = b"") -> bytes:
    encoded = json.dumps(meta).encode()
    return struct.pack("<I", len(encoded)) + encoded + data


def split_meta(body: bytes) -> Tuple[Dict[str, Any], bytes]:
    (meta_len,) = struct.unpack_from("<I", body)
    return json.loads(body[4 : 4 + meta_len]), body[4 + meta_len :]


def parse_tensors(body: bytes) -> Dict[str, Tuple[str, List[int], bytes]]:
    meta, data = split_meta(body)
    out = {}
    offset = 0
    for spec in meta["outputs"]:
        out[spec["name"]] = (spec["datatype"], spec["shape"], data[offset : offset + spec["size"]])
        offset += spec["size"]
    assert offset == len(data), "sizes in the meta must add up to the data"
    return out


class FakeDaemon:
    """The daemon's side of one worker: a socket end and the worker process."""

    def __init__(self, script: Path, variant: Tuple[str, Dict[str, str], bool], log_path: Path,
                 health: bool = False, shm: bool = False) -> None:
        python, extra_env, self.numpy = variant
        self.sock, child = socket.socketpair()
        passed = [child.fileno()]
        self.health: Optional[socket.socket] = None
        self.regions: List[int] = []  # memfds: input, output
        env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_") and k != "PYTHONPATH"}
        env.update(extra_env)
        env.update(
            PYTHONPATH=str(SDK_DIR),
            CORRAL_FD=str(child.fileno()),
            CORRAL_PROTOCOL="1",
            CORRAL_MODEL="probe",
            CORRAL_INSTANCE="0",
            CORRAL_MODEL_DIR=str(script.parent),
        )
        if health:  # the health socket, as the daemon gives it
            self.health, health_child = socket.socketpair()
            self.health.settimeout(READ_TIMEOUT_S)
            self.health_fd = health_child.fileno()
            env["CORRAL_HEALTH_FD"] = str(self.health_fd)
            passed.append(health_child.fileno())
        if shm:  # the shared-memory regions
            self.regions = [os.memfd_create("test-input"), os.memfd_create("test-output")]
            env["CORRAL_SHM_FDS"] = ",".join(map(str, self.regions))
            passed.extend(self.regions)
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [python, str(script)],
            pass_fds=passed,
            env=env,
            cwd=str(script.parent),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        child.close()
        if health:
            health_child.close()
        self.sock.settimeout(READ_TIMEOUT_S)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=10)
        finally:
            self.sock.close()
            self._log.close()
            if self.health is not None:
                self.health.close()
            for fd in self.regions:
                os.close(fd)

    # -- raw frames

    def send(self, frame_type: int, frame_id: int = 0, body: bytes = b"", version: int = 1, flags: int = 0) -> None:
        self.sock.sendall(HEADER.pack(len(body), version, frame_type, flags, frame_id) + body)

    def _recv_exact(self, n: int) -> bytes:
        chunks = []
        while n:
            chunk = self.sock.recv(min(n, 1 << 20))
            if not chunk:
                raise EOFError(f"worker closed the socket; log:\n{self.log()}")
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def recv(self) -> Tuple[int, int, bytes]:
        frame_type, frame_id, body, flags = self.recv_flagged()
        assert flags == 0
        return frame_type, frame_id, body

    def recv_flagged(self) -> Tuple[int, int, bytes, int]:
        length, version, frame_type, flags, frame_id = HEADER.unpack(self._recv_exact(HEADER.size))
        assert version == 1
        return frame_type, frame_id, self._recv_exact(length), flags

    # -- the health socket and the shared-memory regions

    def health_ping(self, nonce: int) -> Tuple[int, int, bytes]:
        assert self.health is not None
        self.health.sendall(HEADER.pack(0, 1, PING, 0, nonce))
        length, _, frame_type, flags, frame_id = HEADER.unpack(self.health.recv(HEADER.size, socket.MSG_WAITALL))
        return frame_type, frame_id, b"" if not length else self.health.recv(length, socket.MSG_WAITALL)

    def region_write(self, data: bytes) -> None:
        """Puts data at offset 0 of the input region, as the daemon does."""
        fd = self.regions[0]
        if os.fstat(fd).st_size < len(data):
            os.ftruncate(fd, len(data))
        os.pwrite(fd, data, 0)

    def region_read(self, n: int) -> bytes:
        return os.pread(self.regions[1], n, 0)

    def expect(self, frame_type: int, frame_id: Optional[int] = None) -> bytes:
        got_type, got_id, body = self.recv()
        assert got_type == frame_type, f"expected 0x{frame_type:02x}, got 0x{got_type:02x} {body[:300]!r}\n{self.log()}"
        if frame_id is not None:
            assert got_id == frame_id
        return body

    def wait_exit(self, timeout: float = 5.0) -> int:
        return self.proc.wait(timeout=timeout)

    # -- conversations

    def start(self, parameters: Optional[Dict[str, Any]] = None, concurrency: int = 1) -> Dict[str, Any]:
        """HELLO, LOAD, READY; returns the READY meta."""
        hello = json.loads(self.expect(HELLO, 0))
        assert hello["protocol"] == 1 and hello["sdk"] == "python"
        assert hello["pid"] == self.proc.pid
        self.load(parameters, concurrency)
        return json.loads(self.expect(READY, 0) or b"{}")

    def load(self, parameters: Optional[Dict[str, Any]] = None, concurrency: int = 1) -> None:
        meta = {
            "model": "probe",
            "model_dir": str(self.log_path.parent),
            "instance_id": 3,
            "device": "cpu",
            "concurrency": concurrency,
            "parameters": parameters or {},
        }
        self.send(LOAD, 0, json.dumps(meta).encode())

    def send_infer(
        self,
        frame_id: int,
        inputs: Sequence[Tuple[str, str, List[int], bytes]] = (),
        parameters: Optional[Dict[str, Any]] = None,
        outputs: Optional[List[str]] = None,
    ) -> None:
        meta: Dict[str, Any] = {
            "id": f"req-{frame_id}",
            "parameters": parameters or {},
            "inputs": [{"name": n, "datatype": d, "shape": s, "size": len(raw)} for n, d, s, raw in inputs],
        }
        if outputs is not None:
            meta["outputs"] = outputs
        self.send(INFER, frame_id, body_with_meta(meta, b"".join(raw for _, _, _, raw in inputs)))

    def send_infer_meta(self, frame_id: int, **meta: Any) -> None:
        """An INFER with no tensors and meta's keys besides id and parameters (a sequence, say)."""
        self.send(INFER, frame_id, body_with_meta({"id": f"req-{frame_id}", "parameters": {}, "inputs": [], **meta}))

    def infer(self, frame_id: int, inputs: Sequence[Tuple[str, str, List[int], bytes]] = (), **kw: Any) -> Any:
        self.send_infer(frame_id, inputs, **kw)
        return parse_tensors(self.expect(INFER_RESULT, frame_id))

    def infer_error(self, frame_id: int, inputs: Sequence[Tuple[str, str, List[int], bytes]] = (), **kw: Any) -> Any:
        self.send_infer(frame_id, inputs, **kw)
        return json.loads(self.expect(ERROR, frame_id))

    def send_generate(self, frame_id: int, body: bytes, content_type: Optional[str]) -> None:
        meta: Dict[str, Any] = {"id": f"gen-{frame_id}"}
        if content_type is not None:
            meta["content_type"] = content_type
        self.send(GENERATE, frame_id, body_with_meta(meta, body))

    def generate(self, frame_id: int, body: bytes, content_type: Optional[str] = "application/json") -> Tuple[str, bytes]:
        self.send_generate(frame_id, body, content_type)
        meta, data = split_meta(self.expect(GENERATE_RESULT, frame_id))
        return meta["content_type"], data

    def generate_json(self, frame_id: int, obj: Any) -> Tuple[str, bytes]:
        return self.generate(frame_id, json.dumps(obj).encode(), "application/json")


# ------------------------------------------------------------------ models

PROBE = '''
import json, os, threading, time
import corral

def renamed(name):
    return "OUTPUT" + name[5:] if name.startswith("INPUT") else name

class Probe(corral.Model):
    inputs = [{"name": "INPUT0", "datatype": "FP32", "shape": [-1]}]
    outputs = [{"name": "OUTPUT0", "datatype": "FP32", "shape": [-1]}]

    def load(self, ctx):
        self.ctx = ctx
        if ctx.parameters.get("load_sleep"):
            time.sleep(ctx.parameters["load_sleep"])
        if ctx.parameters.get("fail"):
            raise ValueError("bad weights")
        self.barrier = threading.Barrier(2, timeout=5)
        self.unload_marker = ctx.parameters.get("unload_marker")

    def unload(self):
        if self.unload_marker:
            with open(self.unload_marker, "w") as f:
                f.write("unloaded")

    def infer(self, request):
        mode = request.parameters.get("mode", "echo")
        if mode == "sleep":
            time.sleep(request.parameters["seconds"])
        elif mode == "barrier":
            self.barrier.wait()  # raises BrokenBarrierError unless two requests overlap
        elif mode == "bad":
            raise corral.BadRequest("text is empty")
        elif mode == "boom":
            raise ValueError("kaboom")
        elif mode == "types":
            return {"types": json.dumps({n: type(v).__name__ for n, v in request.inputs.items()})}
        elif mode == "python":
            return {
                "f": [[1.0, 2.5], [3.0, 4.0]],
                "i": [1, 2, 3],
                "mixed": [1, 2.5],
                "b": [True, False, True],
                "s": "h\\u00e9",
                "y": [b"a", b"", "bc"],
                "n": 7,
                "x": 1.5,
                "flag": True,
                "t": corral.Tensor("INT16", [2], [-1, 2]),
                "raw": corral.Tensor("UINT8", [3], b"\\x01\\x02\\x03"),
                "bf": corral.Tensor("BF16", [2], [1.0, -2.0]),
            }
        elif mode == "numpy":
            import numpy as np
            return {
                "f32": np.arange(6, dtype=np.float32).reshape(2, 3),
                "f16": np.array([1.5, -2.0], dtype=np.float16),
                "u16": np.array([65535, 1], dtype=np.uint16),
                "i8": np.array([-128, 127], dtype=np.int8),
                "be": np.array([1, 2], dtype=">i4"),
                "t": np.arange(6, dtype=np.int32).reshape(2, 3).T,
                "u": np.array(["a", "h\\u00e9"]),
                "obj": np.array([b"x", b"yz"], dtype=object),
                "scalar": np.float64(2.5),
                "b": np.array([True, False]),
            }
        elif mode == "badvalue":
            return {"OUTPUT0": {"not": "a tensor"}}
        elif mode == "ctx":
            c = self.ctx
            inp = next(iter(request.inputs.values()), None)
            return {"ctx": json.dumps({
                "name": c.name, "model_dir": c.model_dir, "parameters": c.parameters,
                "instance_id": c.instance_id, "device": c.device, "concurrency": c.concurrency,
                "have_numpy": corral.HAVE_NUMPY, "request_id": request.id,
                "input_type": type(inp).__name__, "cwd": os.getcwd(),
            })}
        elif mode == "inplace":
            x = request.inputs["INPUT0"]
            if corral.HAVE_NUMPY:
                x *= 2  # inputs are writable views of the received frame
            else:
                x.data = [v * 2 for v in x.data]
            return {"OUTPUT0": x}
        return {renamed(n): v for n, v in request.inputs.items()}

    def generate(self, request):
        if request.content_type != "application/json":
            return corral.Response(request.body, content_type=request.content_type or "application/octet-stream")
        mode = request.json.get("mode")
        if mode == "text":
            return "h\\u00e9llo"
        if mode == "bytes":
            return b"\\x00\\x01"
        if mode == "gen-bytes":
            return (bytes([i]) for i in range(3))
        if mode == "gen-text":
            def gen():
                yield "ab"
                yield "cd"
            return gen()
        if mode == "gen-dicts":
            def gen():
                for i in range(3):
                    yield {"i": i}
            return gen()
        if mode == "gen-mixed":
            return iter([b"a", {"b": 1}])
        if mode == "none":
            return None
        if mode == "bad":
            raise corral.BadRequest("no voice")
        if mode == "boom":
            raise KeyError("voice")
        return {"echo": request.json, "id": request.id}

if __name__ == "__main__":
    corral.run(Probe)
'''

INFER_ONLY = '''
import corral

class InferOnly(corral.Model):
    def infer(self, request):
        return {"OUTPUT0": [1]}

corral.run(InferOnly)
'''

GENERATE_ONLY = '''
import corral

class GenerateOnly(corral.Model):
    def generate(self, request):
        return "ok"

corral.run(GenerateOnly)
'''

BATCH_ONLY = '''
import corral

class BatchOnly(corral.Model):
    def infer_batch(self, requests):
        return [{"count": [len(requests)], "id": r.id} for r in requests]

corral.run(BatchOnly)
'''


@pytest.fixture
def spawn(tmp_path: Path, variant: Tuple[str, Dict[str, str], bool]) -> Any:
    """spawn(source or path) -> FakeDaemon; every worker is killed at teardown."""
    started: List[FakeDaemon] = []

    def start(source: Any = PROBE, **options: bool) -> FakeDaemon:
        if isinstance(source, Path):
            script = source
        else:
            script = tmp_path / f"model{len(started)}.py"
            script.write_text(textwrap.dedent(source))
        daemon = FakeDaemon(script, variant, tmp_path / f"worker{len(started)}.log", **options)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.close()


# ------------------------------------------------------------------ tests


def test_hello_load_ready_and_context(spawn: Any, tmp_path: Path) -> None:
    d = spawn()
    ready = d.start(parameters={"prefix": "x"})
    assert ready["inputs"] == [{"name": "INPUT0", "datatype": "FP32", "shape": [-1]}]
    assert ready["outputs"][0]["name"] == "OUTPUT0"
    out = d.infer(1, [("INPUT0", "FP32", [1], tensor_raw("FP32", [1.0]))], parameters={"mode": "ctx"})
    ctx = json.loads(out["ctx"][2][4:])
    assert ctx["name"] == "probe"
    assert ctx["model_dir"] == str(tmp_path)
    assert ctx["parameters"] == {"prefix": "x"}
    assert ctx["instance_id"] == 3
    assert ctx["device"] == "cpu"
    assert ctx["concurrency"] == 1
    assert ctx["request_id"] == "req-1"
    assert ctx["have_numpy"] is d.numpy
    assert ctx["input_type"] == ("ndarray" if d.numpy else "Tensor")


ALL_INPUTS = [
    ("INPUT0", "FP32", [2, 3], tensor_raw("FP32", [0.5, -1.0, 2.0, 3.25, 1e30, -0.0])),
    ("INPUT1", "INT64", [3], tensor_raw("INT64", [-(2**63), 0, 2**63 - 1])),
    ("INPUT2", "BOOL", [2, 2], tensor_raw("BOOL", [True, False, False, True])),
    ("INPUT3", "BYTES", [3], tensor_raw("BYTES", [b"hello", b"", "h\u00e9".encode()])),
    ("INPUT4", "FP16", [2], tensor_raw("FP16", [1.5, -65504.0])),
    ("INPUT5", "UINT8", [2], tensor_raw("UINT8", [0, 255])),
    ("INPUT6", "UINT16", [2], tensor_raw("UINT16", [0, 65535])),
    ("INPUT7", "UINT32", [2], tensor_raw("UINT32", [0, 2**32 - 1])),
    ("INPUT8", "UINT64", [2], tensor_raw("UINT64", [0, 2**64 - 1])),
    ("INPUT9", "INT8", [2], tensor_raw("INT8", [-128, 127])),
    ("INPUT10", "INT16", [2], tensor_raw("INT16", [-32768, 32767])),
    ("INPUT11", "INT32", [1, 2], tensor_raw("INT32", [-(2**31), 2**31 - 1])),
    ("INPUT12", "FP64", [2], tensor_raw("FP64", [3.141592653589793, -1e300])),
    ("INPUT13", "BF16", [2], tensor_raw("BF16", [0x3F80, 0xC000])),  # 1.0, -2.0
    ("INPUT14", "FP32", [0, 3], b""),
    ("INPUT15", "BYTES", [1, 0], b""),
    ("scores", "FP32", [], tensor_raw("FP32", [7.0])),
]


def test_infer_round_trips_every_datatype(spawn: Any) -> None:
    d = spawn()
    d.start()
    out = d.infer(7, ALL_INPUTS)
    expected_names = [("OUTPUT" + n[5:]) if n.startswith("INPUT") else n for n, _, _, _ in ALL_INPUTS]
    assert list(out) == expected_names
    for (name, datatype, shape, raw), out_name in zip(ALL_INPUTS, expected_names):
        assert out[out_name] == (datatype, shape, raw), name


def test_infer_input_types(spawn: Any) -> None:
    d = spawn()
    d.start()
    out = d.infer(1, ALL_INPUTS[:5] + [ALL_INPUTS[13]], parameters={"mode": "types"})
    types = json.loads(out["types"][2][4:])
    plain = "ndarray" if d.numpy else "Tensor"
    assert types == {
        "INPUT0": plain,
        "INPUT1": plain,
        "INPUT2": plain,
        "INPUT3": plain,
        "INPUT4": plain,
        "INPUT13": "Tensor",  # BF16 is always a corral.Tensor
    }


def test_inputs_are_usable_in_place(spawn: Any) -> None:
    d = spawn()
    d.start()
    out = d.infer(1, [("INPUT0", "FP32", [3], tensor_raw("FP32", [1.0, 2.0, 3.0]))], parameters={"mode": "inplace"})
    assert out["OUTPUT0"] == ("FP32", [3], tensor_raw("FP32", [2.0, 4.0, 6.0]))


def test_infer_python_return_values(spawn: Any) -> None:
    d = spawn()
    d.start()
    out = d.infer(1, parameters={"mode": "python"})
    assert out["f"] == ("FP64", [2, 2], tensor_raw("FP64", [1.0, 2.5, 3.0, 4.0]))
    assert out["i"] == ("INT64", [3], tensor_raw("INT64", [1, 2, 3]))
    assert out["mixed"] == ("FP64", [2], tensor_raw("FP64", [1.0, 2.5]))
    assert out["b"] == ("BOOL", [3], b"\x01\x00\x01")
    assert out["s"] == ("BYTES", [1], tensor_raw("BYTES", ["h\u00e9".encode()]))
    assert out["y"] == ("BYTES", [3], tensor_raw("BYTES", [b"a", b"", b"bc"]))
    assert out["n"] == ("INT64", [1], tensor_raw("INT64", [7]))
    assert out["x"] == ("FP64", [1], tensor_raw("FP64", [1.5]))
    assert out["flag"] == ("BOOL", [1], b"\x01")
    assert out["t"] == ("INT16", [2], tensor_raw("INT16", [-1, 2]))
    assert out["raw"] == ("UINT8", [3], b"\x01\x02\x03")
    assert out["bf"] == ("BF16", [2], tensor_raw("BF16", [0x3F80, 0xC000]))


def test_infer_numpy_return_values(spawn: Any) -> None:
    d = spawn()
    if not d.numpy:
        pytest.skip("worker runs without numpy")
    d.start()
    out = d.infer(1, parameters={"mode": "numpy"})
    assert out["f32"] == ("FP32", [2, 3], tensor_raw("FP32", [0, 1, 2, 3, 4, 5]))
    assert out["f16"] == ("FP16", [2], tensor_raw("FP16", [1.5, -2.0]))
    assert out["u16"] == ("UINT16", [2], tensor_raw("UINT16", [65535, 1]))
    assert out["i8"] == ("INT8", [2], tensor_raw("INT8", [-128, 127]))
    assert out["be"] == ("INT32", [2], tensor_raw("INT32", [1, 2]))  # sent little-endian
    assert out["t"] == ("INT32", [3, 2], tensor_raw("INT32", [0, 3, 1, 4, 2, 5]))  # row-major of the transpose
    assert out["u"] == ("BYTES", [2], tensor_raw("BYTES", [b"a", "h\u00e9".encode()]))
    assert out["obj"] == ("BYTES", [2], tensor_raw("BYTES", [b"x", b"yz"]))
    assert out["scalar"] == ("FP64", [1], tensor_raw("FP64", [2.5]))
    assert out["b"] == ("BOOL", [2], b"\x01\x00")


def test_requested_outputs(spawn: Any) -> None:
    d = spawn()
    d.start()
    inputs = [ALL_INPUTS[0], ALL_INPUTS[1], ALL_INPUTS[2]]
    out = d.infer(1, inputs, outputs=["OUTPUT2", "OUTPUT0"])
    assert list(out) == ["OUTPUT2", "OUTPUT0"]
    assert out["OUTPUT0"][2] == ALL_INPUTS[0][3]
    err = d.infer_error(2, inputs, outputs=["OUTPUT0", "NOPE"])
    assert err["status"] == 400 and err["type"] == "BadRequest"
    assert "NOPE" in err["message"]


def test_generate_round_trips(spawn: Any) -> None:
    d = spawn()
    d.start()
    content_type, body = d.generate_json(1, {"text": "hi", "n": [1, 2]})
    assert content_type == "application/json"
    assert json.loads(body) == {"echo": {"text": "hi", "n": [1, 2]}, "id": "gen-1"}

    audio = bytes(range(256)) * 64
    assert d.generate(2, audio, "audio/wav") == ("audio/wav", audio)
    assert d.generate(3, b"", None) == ("application/octet-stream", b"")
    assert d.generate_json(4, {"mode": "text"}) == ("text/plain; charset=utf-8", "h\u00e9llo".encode())
    assert d.generate_json(5, {"mode": "bytes"}) == ("application/octet-stream", b"\x00\x01")
    assert d.generate_json(6, {"mode": "gen-bytes"}) == ("application/octet-stream", b"\x00\x01\x02")
    assert d.generate_json(7, {"mode": "gen-text"}) == ("text/plain; charset=utf-8", b"abcd")
    content_type, body = d.generate_json(8, {"mode": "gen-dicts"})
    assert content_type == "application/x-ndjson"
    assert [json.loads(line) for line in body.splitlines()] == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert body.endswith(b"\n")
    assert d.generate_json(9, {"mode": "none"}) == ("application/octet-stream", b"")


def test_generate_errors(spawn: Any) -> None:
    d = spawn()
    d.start()
    d.send_generate(1, b"{not json", "application/json")
    err = json.loads(d.expect(ERROR, 1))
    assert err["status"] == 400 and err["type"] == "BadRequest" and "JSON" in err["message"]
    d.send_generate(2, b'{"mode": "bad"}', "application/json")
    assert json.loads(d.expect(ERROR, 2)) == {"type": "BadRequest", "message": "no voice", "status": 400}
    d.send_generate(3, b'{"mode": "boom"}', "application/json")
    assert json.loads(d.expect(ERROR, 3)) == {"type": "KeyError", "message": "KeyError: 'voice'", "status": 500}
    d.send_generate(4, b'{"mode": "gen-mixed"}', "application/json")
    err = json.loads(d.expect(ERROR, 4))
    assert err["status"] == 500 and err["type"] == "TypeError"
    assert d.generate_json(5, {"still": "alive"})[0] == "application/json"


def test_infer_errors_keep_the_instance_alive(spawn: Any) -> None:
    d = spawn()
    d.start()
    x = [("INPUT0", "FP32", [1], tensor_raw("FP32", [1.0]))]
    assert d.infer_error(1, x, parameters={"mode": "bad"}) == {
        "type": "BadRequest",
        "message": "text is empty",
        "status": 400,
    }
    assert d.infer_error(2, x, parameters={"mode": "boom"}) == {
        "type": "ValueError",
        "message": "ValueError: kaboom",
        "status": 500,
    }
    err = d.infer_error(3, parameters={"mode": "badvalue"})
    assert err["status"] == 500 and err["type"] == "TypeError" and "OUTPUT0" in err["message"]
    # Inputs that do not match their data are the request's fault: 400.
    err = d.infer_error(4, [("INPUT0", "FP32", [2], tensor_raw("FP32", [1.0]))])
    assert err["status"] == 400 and "INPUT0" in err["message"]
    err = d.infer_error(5, [("INPUT0", "COMPLEX64", [1], b"12345678")])
    assert err["status"] == 400 and "datatype" in err["message"]
    err = d.infer_error(6, [("INPUT0", "BYTES", [2], tensor_raw("BYTES", [b"one"]))])
    assert err["status"] == 400
    assert d.infer(7, x)["OUTPUT0"] == ("FP32", [1], x[0][3])
    assert "ValueError: kaboom" in d.log()  # 500s leave a traceback in the instance log


def test_missing_methods_are_400(spawn: Any) -> None:
    d = spawn(INFER_ONLY)
    d.start()
    d.send_generate(1, b"{}", "application/json")
    assert json.loads(d.expect(ERROR, 1)) == {
        "type": "BadRequest",
        "message": "model probe does not implement generate",
        "status": 400,
    }
    assert d.infer(2)["OUTPUT0"] == ("INT64", [1], tensor_raw("INT64", [1]))

    g = spawn(GENERATE_ONLY)
    g.start()
    err = g.infer_error(1)
    assert err == {"type": "BadRequest", "message": "model probe does not implement infer", "status": 400}
    assert g.generate(2, b"", None) == ("text/plain; charset=utf-8", b"ok")


def test_infer_batch_only_model(spawn: Any) -> None:
    d = spawn(BATCH_ONLY)
    d.start()
    out = d.infer(5)
    assert out["count"] == ("INT64", [1], tensor_raw("INT64", [1]))
    assert out["id"] == ("BYTES", [1], tensor_raw("BYTES", [b"req-5"]))


def test_load_failure_sends_error_id_0_and_exits_1(spawn: Any) -> None:
    d = spawn()
    d.expect(HELLO, 0)
    d.load({"fail": True})
    err = json.loads(d.expect(ERROR, 0))
    assert err == {"type": "ValueError", "message": "ValueError: bad weights", "status": 500}
    assert d.wait_exit() == 1
    assert "bad weights" in d.log()


def test_ping_answered_while_infer_is_busy(spawn: Any) -> None:
    d = spawn()
    d.start()
    d.send_infer(1, parameters={"mode": "sleep", "seconds": 2.0})
    time.sleep(0.2)  # the request is inside model code now
    sent = time.monotonic()
    d.send(PING, 0xDEADBEEF12345678)
    frame_type, frame_id, body = d.recv()
    assert (frame_type, frame_id, body) == (PONG, 0xDEADBEEF12345678, b"")
    assert time.monotonic() - sent < 1.0, "PONG waited for the busy model"
    d.expect(INFER_RESULT, 1)


def test_ping_answered_during_load(spawn: Any) -> None:
    d = spawn()
    d.expect(HELLO, 0)
    d.load({"load_sleep": 1.5})
    time.sleep(0.2)
    d.send(PING, 42)
    assert d.recv() == (PONG, 42, b"")
    d.expect(READY, 0)


def test_shutdown_calls_unload_and_exits_0(spawn: Any, tmp_path: Path) -> None:
    marker = tmp_path / "unloaded"
    d = spawn()
    d.start(parameters={"unload_marker": str(marker)})
    d.send(SHUTDOWN)
    assert d.wait_exit() == 0
    assert marker.read_text() == "unloaded"


def test_shutdown_lets_requests_in_flight_finish(spawn: Any, tmp_path: Path) -> None:
    marker = tmp_path / "unloaded"
    d = spawn()
    d.start(parameters={"unload_marker": str(marker)})
    d.send_infer(1, [ALL_INPUTS[0]], parameters={"mode": "sleep", "seconds": 0.5})
    time.sleep(0.1)
    d.send(SHUTDOWN)
    assert d.expect(INFER_RESULT, 1)
    assert d.wait_exit() == 0
    assert marker.exists()


def test_eof_exits_promptly(spawn: Any) -> None:
    d = spawn()
    d.start()
    start = time.monotonic()
    d.sock.shutdown(socket.SHUT_RDWR)
    d.sock.close()
    assert d.wait_exit(timeout=5) == 0
    assert time.monotonic() - start < 2.0


def test_eof_exits_promptly_while_model_is_busy(spawn: Any) -> None:
    d = spawn()
    d.start()
    d.send_infer(1, parameters={"mode": "sleep", "seconds": 30})
    time.sleep(0.2)
    start = time.monotonic()
    d.sock.shutdown(socket.SHUT_RDWR)
    assert d.wait_exit(timeout=5) == 0
    assert time.monotonic() - start < 2.0


def test_eof_before_load_exits(spawn: Any) -> None:
    d = spawn()
    d.expect(HELLO, 0)
    d.sock.shutdown(socket.SHUT_RDWR)
    assert d.wait_exit(timeout=5) == 0


def test_concurrency_2_overlaps_requests(spawn: Any) -> None:
    d = spawn()
    d.start(concurrency=2)
    # Each request waits on a two-party barrier (5 s timeout): both succeed only if they run at once.
    d.send_infer(1, parameters={"mode": "barrier"})
    d.send_infer(2, parameters={"mode": "barrier"})
    replies = {}
    for _ in range(2):
        frame_type, frame_id, body = d.recv()
        replies[frame_id] = frame_type
    assert replies == {1: INFER_RESULT, 2: INFER_RESULT}, d.log()


def test_concurrency_1_serialises_requests(spawn: Any) -> None:
    d = spawn()
    d.start()
    start = time.monotonic()
    d.send_infer(1, parameters={"mode": "sleep", "seconds": 0.3})
    d.send_infer(2, parameters={"mode": "sleep", "seconds": 0.3})
    assert [d.recv()[1], d.recv()[1]] == [1, 2]
    assert time.monotonic() - start >= 0.55


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(dict(frame_type=0x7F), id="unknown-type"),
        pytest.param(dict(frame_type=SHM), id="reserved-type"),
        pytest.param(dict(frame_type=CANCEL, frame_id=1, body=b"x"), id="cancel-with-body"),
        pytest.param(dict(frame_type=CREDIT, frame_id=1, body=b"\x01\x00"), id="credit-of-2-bytes"),
        pytest.param(dict(frame_type=CANCEL, frame_id=0), id="cancel-id-0"),
        pytest.param(dict(frame_type=PING, version=2), id="bad-version"),
        pytest.param(dict(frame_type=PING, flags=1), id="nonzero-flags"),
        pytest.param(dict(frame_type=INFER, frame_id=1, body=b"\xff\x00\x00\x00{}"), id="meta-overrun"),
        pytest.param(dict(frame_type=INFER, frame_id=0, body=body_with_meta({})), id="request-id-0"),
        pytest.param(dict(frame_type=READY), id="wrong-direction"),
        pytest.param(dict(frame_type=PING, frame_id=1, body=b"x"), id="ping-with-body"),
        pytest.param(dict(frame_type=LOAD, body=b"{}"), id="second-load"),
    ],
)
def test_protocol_errors_close_the_connection(spawn: Any, frame: Dict[str, Any]) -> None:
    d = spawn()
    d.start()
    d.send(**frame)
    assert d.wait_exit() == 2
    assert "protocol error" in d.log()


SEQUENCES = '''
import corral

class Sequences(corral.Model):
    def load(self, ctx):
        self.released = []
    def infer(self, request):
        seq = request.sequence
        if seq is None:
            return {"seq": ["none"], "released": [repr(self.released)]}
        return {"seq": [repr((seq.id, seq.start, seq.end))], "released": [repr(self.released)]}
    def end_sequence(self, sequence_id, reason):
        self.released.append((sequence_id, reason))
        if sequence_id == "boom":
            raise RuntimeError("end_sequence failed")

corral.run(Sequences)
'''


def test_request_sequence_and_end_sequence(spawn: Any) -> None:
    d = spawn(SEQUENCES)
    hello = json.loads(d.expect(HELLO, 0))
    assert hello["sequence"] is True  # the daemon sends SEQUENCE_END only to a worker that says so
    d.load()
    d.expect(READY, 0)

    def answer(frame_id: int, **meta: Any) -> Tuple[str, str]:
        d.send_infer_meta(frame_id, **meta)
        out = parse_tensors(d.expect(INFER_RESULT, frame_id))
        return out["seq"][2][4:].decode(), out["released"][2][4:].decode()

    assert answer(1) == ("none", "[]")
    assert answer(2, sequence={"id": 7, "start": True, "end": False})[0] == "(7, True, False)"
    assert answer(3, sequence={"id": "conv", "start": False, "end": True})[0] == "('conv', False, True)"
    d.send(SEQUENCE_END, 0, json.dumps({"sequence_id": 7, "reason": "idle"}).encode())
    d.send(SEQUENCE_END, 0, json.dumps({"sequence_id": "boom", "reason": "idle"}).encode())
    assert answer(4)[1] == "[(7, 'idle'), ('boom', 'idle')]"  # in order, and its exception did not end the worker
    assert "end_sequence failed" in d.log()


@pytest.mark.parametrize("frame", [
    pytest.param(dict(frame_type=SEQUENCE_END, frame_id=3, body=b'{"sequence_id": 1, "reason": "idle"}'), id="id"),
    pytest.param(dict(frame_type=SEQUENCE_END, body=b'{"sequence_id": true, "reason": "idle"}'), id="bool-id"),
    pytest.param(dict(frame_type=SEQUENCE_END, body=b'{"sequence_id": 1}'), id="no-reason"),
    pytest.param(dict(frame_type=INFER, frame_id=1,
                      body=body_with_meta({"id": "", "parameters": {}, "inputs": [], "sequence": {"id": [1]}})),
                 id="infer-bad-sequence"),
])
def test_malformed_sequence_frames_are_protocol_errors(spawn: Any, frame: Dict[str, Any]) -> None:
    d = spawn(SEQUENCES)
    d.start()
    d.send(**frame)
    assert d.wait_exit() == 2
    assert "protocol error" in d.log()


def test_without_corral_fd_exits_1(variant: Tuple[str, Dict[str, str], bool], tmp_path: Path) -> None:
    script = tmp_path / "model.py"
    script.write_text(textwrap.dedent(PROBE))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    env.update(variant[1], PYTHONPATH=str(SDK_DIR))
    done = subprocess.run([variant[0], str(script)], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert "CORRAL_FD" in done.stderr


def test_large_tensor_round_trip(spawn: Any) -> None:
    d = spawn()
    d.start()
    # 64 MiB with numpy (views, no per-element work); 4 MiB as Python lists.
    count = (64 << 20) // 4 if d.numpy else (4 << 20) // 4
    raw = struct.pack("<4f", 1.0, -2.5, 3.25, 0.0) * (count // 4)
    start = time.monotonic()
    d.send_infer(1, [("INPUT0", "FP32", [count], raw)])
    out = parse_tensors(d.expect(INFER_RESULT, 1))
    elapsed = time.monotonic() - start
    assert out["OUTPUT0"][0:2] == ("FP32", [count])
    assert out["OUTPUT0"][2] == raw
    assert elapsed < 10.0


# ---- the health socket (inline mode) and shared memory


def test_health_socket_answers_ping_while_an_inline_request_runs(spawn: Any) -> None:
    d = spawn(health=True)
    hello = json.loads(d.expect(HELLO, 0))
    assert hello["health_fd"] == d.health_fd  # PINGs go there from now on
    d.load()  # concurrency 1: requests run on the reader thread itself
    d.expect(READY, 0)
    d.send_infer(1, parameters={"mode": "sleep", "seconds": 2.0})
    time.sleep(0.2)
    sent = time.monotonic()
    assert d.health_ping(0xFEED) == (PONG, 0xFEED, b"")
    assert time.monotonic() - sent < 1.0, "PONG waited for the busy model"
    d.expect(INFER_RESULT, 1)


def test_inline_mode_serialises_and_keeps_order(spawn: Any) -> None:
    d = spawn(health=True)
    d.start()
    for i in range(1, 21):
        d.send_infer(i, [ALL_INPUTS[0]])
    assert [d.recv()[1] for _ in range(20)] == list(range(1, 21))


def test_health_socket_eof_exits_promptly_while_busy(spawn: Any) -> None:
    d = spawn(health=True)
    d.start()
    d.send_infer(1, parameters={"mode": "sleep", "seconds": 30})
    time.sleep(0.2)
    start = time.monotonic()
    assert d.health is not None
    d.health.shutdown(socket.SHUT_RDWR)
    assert d.wait_exit(timeout=5) == 0
    assert time.monotonic() - start < 2.0


def test_health_socket_carries_only_ping(spawn: Any) -> None:
    d = spawn(health=True)
    d.start()
    assert d.health is not None
    d.health.sendall(HEADER.pack(0, 1, SHUTDOWN, 0, 0))
    assert d.wait_exit() == 2
    assert "health socket" in d.log()


def _shm_infer(d: FakeDaemon, frame_id: int, raw: bytes, flags: int) -> None:
    meta = {"id": "", "parameters": {}, "inputs": [{"name": "INPUT0", "datatype": "FP32",
                                                     "shape": [len(raw) // 4], "size": len(raw)}]}
    if flags & SHM_DATA:
        d.region_write(raw)
        d.send(INFER, frame_id, body_with_meta(meta), flags=flags)
    else:
        d.send(INFER, frame_id, body_with_meta(meta, raw), flags=flags)


SHM_DATA, SHM_OUT = 0x0001, 0x0002


def test_shared_memory_both_ways(spawn: Any) -> None:
    d = spawn(health=True, shm=True)
    hello = json.loads(d.expect(HELLO, 0))
    assert hello["shm"] is True
    d.load()
    d.expect(READY, 0)
    raw = struct.pack("<4f", 1.0, -2.5, 3.25, 0.0) * ((4 << 20) // 16)  # 4 MiB
    for frame_id in (1, 2):  # the regions are reused
        _shm_infer(d, frame_id, raw, SHM_DATA | SHM_OUT)
        frame_type, got_id, body, flags = d.recv_flagged()
        assert (frame_type, got_id, flags) == (INFER_RESULT, frame_id, SHM_DATA), body[:200]
        meta, rest = split_meta(body)
        assert rest == b"", "the data is in the output region, not the frame"
        assert meta["outputs"] == [{"name": "OUTPUT0", "datatype": "FP32", "shape": [len(raw) // 4], "size": len(raw)}]
        assert d.region_read(len(raw)) == raw
        raw = raw[::-1]  # other bytes the second time


def test_shared_memory_output_needs_the_grant_and_a_large_result(spawn: Any) -> None:
    d = spawn(health=True, shm=True)
    d.start()
    raw = bytes(range(256)) * ((2 << 20) // 256)
    _shm_infer(d, 1, raw, SHM_DATA)  # large, but not allowed to answer in shared memory
    frame_type, _, body, flags = d.recv_flagged()
    assert (frame_type, flags) == (INFER_RESULT, 0)
    assert split_meta(body)[1] == raw
    _shm_infer(d, 2, raw[:64], SHM_OUT)  # allowed, but small: the socket
    frame_type, _, body, flags = d.recv_flagged()
    assert (frame_type, flags) == (INFER_RESULT, 0)
    assert split_meta(body)[1] == raw[:64]


@pytest.mark.parametrize("shm", [False, True], ids=["no-regions", "data-in-frame-too"])
def test_shared_memory_misuse_is_a_protocol_error(spawn: Any, shm: bool) -> None:
    d = spawn(shm=shm)
    d.start()
    meta = {"id": "", "parameters": {}, "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1], "size": 4}]}
    d.send(INFER, 1, body_with_meta(meta, b"\0\0\0\0"), flags=SHM_DATA)
    assert d.wait_exit() == 2
    assert "protocol error" in d.log()


def test_echo_example(spawn: Any) -> None:
    d = spawn(ECHO_WORKER)
    d.start()
    out = d.infer(1, [ALL_INPUTS[0], ALL_INPUTS[3], ("scores", "INT32", [1], tensor_raw("INT32", [5]))])
    assert out == {
        "OUTPUT0": ALL_INPUTS[0][1:],
        "OUTPUT3": ALL_INPUTS[3][1:],
        "scores": ("INT32", [1], tensor_raw("INT32", [5])),
    }
    content_type, body = d.generate_json(2, {"text": "hi"})
    assert content_type == "application/json" and json.loads(body) == {"echo": {"text": "hi"}}
    assert d.generate(3, b"RIFF....", "audio/wav") == ("audio/wav", b"RIFF....")
    d.send(SHUTDOWN)
    assert d.wait_exit() == 0


# ------------------------------------------------------------------ in-process API checks


def _import_corral() -> Any:
    if str(SDK_DIR) not in sys.path:
        sys.path.insert(0, str(SDK_DIR))
    import corral

    return corral


def test_public_objects() -> None:
    corral = _import_corral()
    t = corral.Tensor("INT32", [2, 3], list(range(6)))
    assert t.tolist() == [[0, 1, 2], [3, 4, 5]]
    assert corral.Tensor("FP32", [], [1.5]).tolist() == 1.5
    assert corral.Tensor("UINT8", [2], b"\x01\x02").tolist() == [1, 2]
    with pytest.raises(ValueError):
        corral.Tensor("COMPLEX64", [1], [1])

    assert corral.Response(b"x").content_type == "application/octet-stream"
    assert corral.Response("x").content_type == "text/plain; charset=utf-8"
    assert corral.Response({"a": 1}).body == b'{"a":1}'
    assert corral.Response(b"RIFF", content_type="audio/wav").content_type == "audio/wav"

    req = corral.Request(body=b'{"a": 1}', content_type="application/json; charset=utf-8")
    assert req.json == {"a": 1}
    assert corral.Request(body=b"abc", content_type="text/plain").json is None
    with pytest.raises(corral.BadRequest):
        corral.Request(body=b"{", content_type="application/json").json

    assert issubclass(corral.BadRequest, Exception)
    assert {"BOOL", "BF16", "BYTES", "FP16", "UINT64"} <= set(corral.DATATYPES)


# ------------------------------------------------------------------ streams (CHUNK, END, CANCEL, CREDIT)

CHUNK, END = 0x14, 0x15

STREAMER = '''
import os
import time

import corral

class Streamer(corral.Model):
    def load(self, ctx):
        self.dir = ctx.model_dir

    def generate(self, request):
        body = request.json
        if body.get("bytes"):
            return corral.Stream((b"x" * body["chunk"] for _ in range(body["bytes"] // body["chunk"])),
                                 content_type="audio/L16")
        def events():
            try:
                for i in range(body.get("n", 1000000)):
                    yield {"i": i}
                    if body.get("fail") == i:
                        raise ValueError("broke")
            finally:
                with open(os.path.join(self.dir, "closed"), "w") as f:
                    f.write(str(request.cancelled))
        return events()

if __name__ == "__main__":
    corral.run(Streamer)
'''


def chunk_parts(body: bytes) -> Tuple[Optional[Dict[str, Any]], bytes]:
    """A CHUNK's meta (None when it has none: every chunk after the first) and payload."""
    (n,) = struct.unpack_from("<I", body)
    return (json.loads(body[4 : 4 + n]) if n else None), body[4 + n :]


def send_stream(d: FakeDaemon, frame_id: int, obj: Any) -> None:
    meta = {"id": "", "content_type": "application/json", "stream": True}
    d.send(GENERATE, frame_id, body_with_meta(meta, json.dumps(obj).encode()))


def test_hello_says_the_sdk_streams(spawn: Any) -> None:
    d = spawn(STREAMER)
    hello = json.loads(d.expect(HELLO, 0))
    assert hello["stream"] is True


def test_a_generator_streams_chunks_then_end(spawn: Any) -> None:
    d = spawn(STREAMER)
    d.start()
    send_stream(d, 1, {"n": 3})
    metas, datas = [], []
    for _ in range(3):
        meta, data = chunk_parts(d.expect(CHUNK, 1))
        metas.append(meta)
        datas.append(json.loads(data))
    assert d.expect(END, 1) == b""
    assert metas == [{"events": True}, None, None]  # only the first chunk says what the stream is
    assert datas == [{"i": 0}, {"i": 1}, {"i": 2}]
    # without "stream" in the meta the same generator is collected into one answer
    content_type, body = d.generate_json(2, {"n": 2})
    assert content_type == "application/x-ndjson" and body == b'{"i":0}\n{"i":1}\n'


def test_a_byte_stream_names_its_content_type_and_waits_for_credit(spawn: Any) -> None:
    """The window is 1 MiB of CHUNK frames: past it the producer waits until CREDIT comes."""
    d = spawn(STREAMER)
    d.start()
    send_stream(d, 1, {"bytes": 4 << 20, "chunk": 65536})
    meta, data = chunk_parts(d.expect(CHUNK, 1))
    assert meta == {"content_type": "audio/L16"} and data == b"x" * 65536
    sent = HEADER.size + 4 + len(json.dumps(meta, separators=(",", ":"))) + 65536
    while sent + HEADER.size + 4 + 65536 <= 1 << 20:
        d.expect(CHUNK, 1)
        sent += HEADER.size + 4 + 65536
    d.sock.settimeout(0.5)
    with pytest.raises(socket.timeout):  # the window is full: nothing more until credit
        d.recv()
    d.sock.settimeout(READ_TIMEOUT_S)
    d.send(CREDIT, 1, struct.pack("<I", sent))
    total = sent
    while True:
        frame_type, _, body = d.recv()
        if frame_type == END:
            break
        assert frame_type == CHUNK
        total += HEADER.size + len(body)
        d.send(CREDIT, 1, struct.pack("<I", HEADER.size + len(body)))
    assert total == 64 * (HEADER.size + 4 + 65536) + len(json.dumps(meta, separators=(",", ":")))


def test_cancel_closes_the_generator_at_its_next_yield_and_ends_the_stream(spawn: Any, tmp_path: Path) -> None:
    d = spawn(STREAMER, health=True)  # inline mode: CANCEL comes on the health socket
    d.start()
    send_stream(d, 1, {})
    d.expect(CHUNK, 1)
    assert d.health is not None
    d.health.sendall(HEADER.pack(0, 1, CANCEL, 0, 1))
    while True:
        frame_type, frame_id, _ = d.recv()
        assert frame_id == 1
        if frame_type == END:
            break
        assert frame_type == CHUNK  # those already on their way
    assert (tmp_path / "closed").read_text() == "True"
    send_stream(d, 2, {"n": 1})  # the instance serves the next request
    d.expect(CHUNK, 2)
    d.expect(END, 2)


def test_an_exception_mid_stream_is_an_error_after_the_chunks(spawn: Any) -> None:
    d = spawn(STREAMER)
    d.start()
    send_stream(d, 1, {"fail": 1})
    d.expect(CHUNK, 1)
    d.expect(CHUNK, 1)
    err = json.loads(d.expect(ERROR, 1))
    assert err["status"] == 500 and err["message"] == "ValueError: broke"



# ------------------------------------------------------------------ batches (BATCH)

CONCAT = """
import json, os, time
import corral

def renamed(name):
    return "OUTPUT" + name[5:] if name.startswith("INPUT") else name

class Concat(corral.Model):
    def load(self, ctx):
        self.calls = os.path.join(ctx.model_dir, "calls.jsonl")

    def infer(self, request):
        if request.parameters.get("wait"):  # until CANCEL, at most 5 s
            deadline = time.monotonic() + 5
            while not request.cancelled and time.monotonic() < deadline:
                time.sleep(0.01)
        with open(self.calls, "a") as f:
            f.write(json.dumps({
                "batch_sizes": request.batch_sizes, "batch_ids": request.batch_ids,
                "batch_parameters": request.batch_parameters, "id": request.id,
                "parameters": request.parameters, "outputs": request.outputs,
                "cancelled": request.cancelled,
                "shapes": {n: list(v.shape) for n, v in request.inputs.items()},
            }) + "\\n")
        out = {renamed(n): v for n, v in request.inputs.items()}
        out["EXTRA"] = list(range(sum(request.batch_sizes)))
        return out

if __name__ == "__main__":
    corral.run(Concat)
"""

PER_REQUEST = """
import json, os, time
import corral

def renamed(name):
    return "OUTPUT" + name[5:] if name.startswith("INPUT") else name

class Classifier(corral.Model):
    def load(self, ctx):
        self.calls = os.path.join(ctx.model_dir, "calls.jsonl")

    def infer_batch(self, requests):
        first = requests[0].parameters
        if first.get("raise") == "bad":
            raise corral.BadRequest("the whole batch is bad")
        if first.get("raise") == "boom":
            raise ValueError("batch kaboom")
        if first.get("short"):
            return [{} for _ in requests[1:]]
        if first.get("not_list"):
            return {"OUTPUT0": [1]}
        if first.get("wait"):  # until CANCEL, at most 5 s
            deadline = time.monotonic() + 5
            while not all(r.cancelled for r in requests) and time.monotonic() < deadline:
                time.sleep(0.01)
        seen, results = [], []
        for r in requests:
            x = r.inputs.get("INPUT0")
            seen.append({
                "id": r.id, "parameters": r.parameters, "outputs": r.outputs,
                "batch_sizes": r.batch_sizes, "cancelled": r.cancelled,
                "shapes": {n: list(v.shape) for n, v in r.inputs.items()},
                "types": {n: type(v).__name__ for n, v in r.inputs.items()},
                "view": (not x.flags.owndata) if hasattr(x, "flags") else None,
            })
            if r.parameters.get("bad"):
                results.append(corral.BadRequest(f"request {r.id}: bad input"))
            elif r.parameters.get("boom"):
                results.append(ValueError("kaboom"))
            elif r.parameters.get("not_dict"):
                results.append([1, 2])
            else:
                results.append({renamed(n): v for n, v in r.inputs.items()})
        with open(self.calls, "a") as f:
            f.write(json.dumps(seen) + "\\n")
        return results

if __name__ == "__main__":
    corral.run(Classifier)
"""

# Three requests of 2, 1 and 3 rows, concatenated: INPUT0 FP32 [6, 2], INPUT1 BYTES [6].
BATCH_ROWS = [2, 1, 3]
X_VALUES = [float(v) for v in range(12)]
Y_VALUES = [b"a", b"bb", b"", b"dddd", "\u00e9".encode(), b"f"]
BATCH_INPUTS = [
    ("INPUT0", "FP32", [6, 2], tensor_raw("FP32", X_VALUES)),
    ("INPUT1", "BYTES", [6], tensor_raw("BYTES", Y_VALUES)),
]


def x_rows(start: int, count: int) -> bytes:
    return tensor_raw("FP32", X_VALUES[2 * start : 2 * (start + count)])


def y_rows(start: int, count: int) -> bytes:
    return tensor_raw("BYTES", Y_VALUES[start : start + count])


def batch_entry(request_id: int, rows: int, **fields: Any) -> Dict[str, Any]:
    return {"id": request_id, "client_id": f"client-{request_id}", "rows": rows, "parameters": {}, **fields}


def batch_meta(entries: Any, inputs: Sequence[Tuple[str, str, List[int], bytes]] = BATCH_INPUTS) -> Dict[str, Any]:
    meta: Dict[str, Any] = {"inputs": [{"name": n, "datatype": t, "shape": s, "size": len(raw)} for n, t, s, raw in inputs]}
    if entries is not None:
        meta["batch"] = entries
    return meta


def send_batch(d: FakeDaemon, frame_id: int, entries: Any,
               inputs: Sequence[Tuple[str, str, List[int], bytes]] = BATCH_INPUTS, flags: int = 0) -> None:
    data = b"".join(raw for _, _, _, raw in inputs)
    if flags & SHM_DATA:
        d.region_write(data)
        d.send(BATCH, frame_id, body_with_meta(batch_meta(entries, inputs)), flags=flags)
    else:
        d.send(BATCH, frame_id, body_with_meta(batch_meta(entries, inputs), data), flags=flags)


def parse_results(body: bytes) -> List[Dict[str, Any]]:
    """A {"results": [...]} INFER_RESULT -> per request, its tensors by name or {"error": body}."""
    meta, data = split_meta(body)
    assert list(meta) == ["results"]
    results: List[Dict[str, Any]] = []
    offset = 0
    for entry in meta["results"]:
        if "error" in entry:
            assert list(entry) == ["error"]
            results.append(entry)
            continue
        tensors = {}
        for spec in entry["outputs"]:
            tensors[spec["name"]] = (spec["datatype"], spec["shape"], data[offset : offset + spec["size"]])
            offset += spec["size"]
        results.append(tensors)
    assert offset == len(data), "the results' sizes must add up to the data"
    return results


def calls(tmp_path: Path) -> List[Any]:
    return [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]


def test_hello_says_the_sdk_batches(spawn: Any) -> None:
    d = spawn()
    assert json.loads(d.expect(HELLO, 0))["batch"] is True


def test_a_batch_comes_whole_to_infer(spawn: Any, tmp_path: Path) -> None:
    d = spawn(CONCAT)
    d.start()
    entries = [batch_entry(11, 2, parameters={"k": 1}, outputs=["OUTPUT1"]),
               batch_entry(12, 1),
               batch_entry(13, 3, parameters={"k": 3})]
    send_batch(d, 100, entries)
    out = parse_tensors(d.expect(INFER_RESULT, 100))  # one answer, all rows: the daemon splits them
    assert out == {
        "OUTPUT0": ("FP32", [6, 2], BATCH_INPUTS[0][3]),
        "OUTPUT1": ("BYTES", [6], BATCH_INPUTS[1][3]),
        "EXTRA": ("INT64", [6], tensor_raw("INT64", list(range(6)))),
    }
    seen = calls(tmp_path)[0]
    assert seen == {
        "batch_sizes": BATCH_ROWS,
        "batch_ids": ["client-11", "client-12", "client-13"],
        "batch_parameters": [{"k": 1}, {}, {"k": 3}],
        "id": "client-11",  # the first request's
        "parameters": {"k": 1},
        "outputs": None,  # request 12 asked for all
        "cancelled": False,
        "shapes": {"INPUT0": [6, 2], "INPUT1": [6]},
    }
    # Every request names its outputs: the union, in order of first mention, and only it.
    send_batch(d, 101, [batch_entry(14, 2, outputs=["OUTPUT1"]), batch_entry(15, 4, outputs=["EXTRA", "OUTPUT1"])])
    out = parse_tensors(d.expect(INFER_RESULT, 101))
    assert list(out) == ["OUTPUT1", "EXTRA"]
    assert calls(tmp_path)[1]["outputs"] == ["OUTPUT1", "EXTRA"]


def test_a_single_infer_has_batch_sizes_too(spawn: Any, tmp_path: Path) -> None:
    d = spawn(CONCAT)
    d.start()
    d.infer(1, [ALL_INPUTS[0]], parameters={"k": 1})  # FP32 [2, 3]
    d.infer(2)  # no inputs: one request of one row
    d.infer(3, [ALL_INPUTS[-1]])  # a scalar
    first, second, third = calls(tmp_path)
    assert first["batch_sizes"] == [2]
    assert first["batch_ids"] == ["req-1"] and first["batch_parameters"] == [{"k": 1}]
    assert second["batch_sizes"] == [1] and third["batch_sizes"] == [1]


def test_a_batch_request_asking_for_a_missing_output_fails_alone(spawn: Any) -> None:
    d = spawn(CONCAT)
    d.start()
    send_batch(d, 100, [batch_entry(11, 2, outputs=["OUTPUT0"]),
                        batch_entry(12, 1, outputs=["NOPE"]),
                        batch_entry(13, 3)])
    first, second, third = parse_results(d.expect(INFER_RESULT, 100))
    assert first == {"OUTPUT0": ("FP32", [2, 2], x_rows(0, 2))}
    assert second["error"]["status"] == 400 and "NOPE" in second["error"]["message"]
    assert third == {
        "OUTPUT0": ("FP32", [3, 2], x_rows(3, 3)),
        "OUTPUT1": ("BYTES", [3], y_rows(3, 3)),
        "EXTRA": ("INT64", [3], tensor_raw("INT64", [3, 4, 5])),
    }


def test_infer_batch_gets_each_request_and_one_error_fails_only_it(spawn: Any, tmp_path: Path) -> None:
    d = spawn(PER_REQUEST)
    d.start()
    x = ("INPUT0", "FP32", [7, 2], tensor_raw("FP32", X_VALUES + [12.0, 13.0]))
    y = ("INPUT1", "BYTES", [7], tensor_raw("BYTES", Y_VALUES + [b"g"]))
    entries = [batch_entry(11, 2, parameters={"k": 1}),
               batch_entry(12, 1, parameters={"bad": True}),
               batch_entry(13, 3, outputs=["OUTPUT1"]),
               batch_entry(14, 1, parameters={"boom": True})]
    send_batch(d, 100, entries, [x, y])
    results = parse_results(d.expect(INFER_RESULT, 100))
    assert results == [
        {"OUTPUT0": ("FP32", [2, 2], x_rows(0, 2)), "OUTPUT1": ("BYTES", [2], y_rows(0, 2))},
        {"error": {"type": "BadRequest", "message": "request client-12: bad input", "status": 400}},
        {"OUTPUT1": ("BYTES", [3], y_rows(3, 3))},
        {"error": {"type": "ValueError", "message": "ValueError: kaboom", "status": 500}},
    ]
    seen = calls(tmp_path)[0]
    assert [r["id"] for r in seen] == ["client-11", "client-12", "client-13", "client-14"]
    assert [r["batch_sizes"] for r in seen] == [[2], [1], [3], [1]]
    assert [r["shapes"] for r in seen] == [{"INPUT0": [n, 2], "INPUT1": [n]} for n in (2, 1, 3, 1)]
    assert [r["parameters"] for r in seen] == [{"k": 1}, {"bad": True}, {}, {"boom": True}]
    assert [r["outputs"] for r in seen] == [None, None, ["OUTPUT1"], None]
    plain = "ndarray" if d.numpy else "Tensor"
    assert all(r["types"] == {"INPUT0": plain, "INPUT1": plain} for r in seen)
    if d.numpy:
        assert all(r["view"] for r in seen), "each request's inputs are views of the batch's data"
    assert "ValueError: kaboom" in d.log()  # a 500 leaves its traceback in the log
    # a result that is not a dict fails its own request too
    send_batch(d, 101, [batch_entry(15, 2, parameters={"not_dict": True}), batch_entry(16, 4)])
    first, second = parse_results(d.expect(INFER_RESULT, 101))
    assert first["error"]["status"] == 500 and first["error"]["type"] == "TypeError"
    assert second == {"OUTPUT0": ("FP32", [4, 2], x_rows(2, 4)), "OUTPUT1": ("BYTES", [4], y_rows(2, 4))}


def test_infer_batch_failures_that_fail_the_whole_batch(spawn: Any) -> None:
    d = spawn(PER_REQUEST)
    d.start()
    cases = [
        ({"raise": "bad"}, {"type": "BadRequest", "message": "the whole batch is bad", "status": 400}),
        ({"raise": "boom"}, {"type": "ValueError", "message": "ValueError: batch kaboom", "status": 500}),
    ]
    for frame_id, (parameters, error) in enumerate(cases, start=100):
        send_batch(d, frame_id, [batch_entry(frame_id * 10, 2, parameters=parameters), batch_entry(frame_id * 10 + 1, 4)])
        assert json.loads(d.expect(ERROR, frame_id)) == error
    send_batch(d, 200, [batch_entry(1, 2, parameters={"short": True}), batch_entry(2, 1), batch_entry(3, 3)])
    err = json.loads(d.expect(ERROR, 200))
    assert err["status"] == 500 and "2 results for a batch of 3 requests" in err["message"]
    send_batch(d, 201, [batch_entry(4, 2, parameters={"not_list": True}), batch_entry(5, 4)])
    err = json.loads(d.expect(ERROR, 201))
    assert err["status"] == 500 and "list" in err["message"]
    # Inputs whose description is wrong fail the batch with 400, as they fail an INFER.
    bad = [("INPUT0", "COMPLEX64", [6], b"\0" * 48)]
    send_batch(d, 202, [batch_entry(6, 2), batch_entry(7, 4)], bad)
    assert json.loads(d.expect(ERROR, 202))["status"] == 400
    short = [("INPUT1", "BYTES", [6], tensor_raw("BYTES", Y_VALUES[:5]))]
    send_batch(d, 203, [batch_entry(8, 2), batch_entry(9, 4)], short)
    assert json.loads(d.expect(ERROR, 203))["status"] == 400
    send_batch(d, 204, [batch_entry(10, 6)])  # and the instance still serves
    assert parse_results(d.expect(INFER_RESULT, 204))[0]["OUTPUT0"] == ("FP32", [6, 2], BATCH_INPUTS[0][3])


def test_a_batch_for_a_model_without_infer(spawn: Any) -> None:
    d = spawn(GENERATE_ONLY)
    d.start()
    send_batch(d, 100, [batch_entry(1, 2), batch_entry(2, 4)])
    assert json.loads(d.expect(ERROR, 100)) == {
        "type": "BadRequest", "message": "model probe does not implement infer", "status": 400}


@pytest.mark.parametrize("health", [False, True], ids=["executor", "inline"])
@pytest.mark.parametrize("model", ["concat", "per-request"])
def test_cancel_of_a_batch_reaches_every_request(spawn: Any, tmp_path: Path, health: bool, model: str) -> None:
    d = spawn(CONCAT if model == "concat" else PER_REQUEST, health=health)
    d.start()
    send_batch(d, 100, [batch_entry(11, 2, parameters={"wait": True}), batch_entry(12, 1), batch_entry(13, 3)])
    time.sleep(0.2)
    started = time.monotonic()
    if health:  # inline mode: the reader is busy with the batch, CANCEL comes on the health socket
        assert d.health is not None
        d.health.sendall(HEADER.pack(0, 1, CANCEL, 0, 100))
    else:
        d.send(CANCEL, 100)
    d.expect(INFER_RESULT, 100)  # one final frame, as for any request
    assert time.monotonic() - started < 3.0, "the model did not see the cancel"
    seen = calls(tmp_path)[0]
    if model == "concat":
        assert seen["cancelled"] is True
    else:
        assert [r["cancelled"] for r in seen] == [True, True, True]


def test_a_batch_through_shared_memory(spawn: Any) -> None:
    d = spawn(CONCAT, health=True, shm=True)
    d.start()
    values = [float(i % 251) for i in range(4 * 65536)]  # 4 rows of 256 KiB: 1 MiB
    raw = tensor_raw("FP32", values)
    inputs = [("INPUT0", "FP32", [4, 65536], raw)]
    send_batch(d, 100, [batch_entry(1, 1, outputs=["OUTPUT0"]), batch_entry(2, 3, outputs=["OUTPUT0"])],
               inputs, flags=SHM_DATA | SHM_OUT)
    frame_type, frame_id, body, flags = d.recv_flagged()
    assert (frame_type, frame_id, flags) == (INFER_RESULT, 100, SHM_DATA), body[:200]
    meta, rest = split_meta(body)
    assert rest == b"" and meta["outputs"] == [{"name": "OUTPUT0", "datatype": "FP32", "shape": [4, 65536], "size": len(raw)}]
    assert d.region_read(len(raw)) == raw


def test_per_request_results_through_shared_memory(spawn: Any) -> None:
    d = spawn(PER_REQUEST, health=True, shm=True)
    d.start()
    raw = bytes(range(256)) * (4 * 4096)  # UINT8 [4, 1 MiB]: the first request's MiB goes to the output region
    inputs = [("INPUT0", "UINT8", [4, len(raw) // 4], raw)]
    send_batch(d, 100, [batch_entry(1, 1), batch_entry(2, 3, parameters={"bad": True})], inputs, flags=SHM_DATA | SHM_OUT)
    frame_type, frame_id, body, flags = d.recv_flagged()
    assert (frame_type, frame_id, flags) == (INFER_RESULT, 100, SHM_DATA)
    meta, rest = split_meta(body)
    assert rest == b""
    assert meta["results"][0] == {"outputs": [{"name": "OUTPUT0", "datatype": "UINT8", "shape": [1, len(raw) // 4], "size": len(raw) // 4}]}
    assert meta["results"][1]["error"]["status"] == 400
    assert d.region_read(len(raw) // 4) == raw[: len(raw) // 4]


def test_echo_example_takes_a_batch(spawn: Any) -> None:
    d = spawn(ECHO_WORKER)
    d.start()
    send_batch(d, 100, [batch_entry(1, 2), batch_entry(2, 1), batch_entry(3, 3)])
    out = parse_tensors(d.expect(INFER_RESULT, 100))
    assert out == {"OUTPUT0": ("FP32", [6, 2], BATCH_INPUTS[0][3]), "OUTPUT1": ("BYTES", [6], BATCH_INPUTS[1][3])}


def _meta_with(**changes: Any) -> bytes:
    meta = batch_meta([batch_entry(11, 2), batch_entry(12, 1), batch_entry(13, 3)])
    meta.update(changes)
    return body_with_meta(meta, b"".join(raw for _, _, _, raw in BATCH_INPUTS))


def _entries_with(index: int, **changes: Any) -> bytes:
    entries = [batch_entry(11, 2), batch_entry(12, 1), batch_entry(13, 3)]
    entries[index].update(changes)
    return _meta_with(batch=entries)


@pytest.mark.parametrize(
    "frame_id,body,reason",
    [
        pytest.param(0, _meta_with(), "BATCH with id 0", id="id-0"),
        pytest.param(100, body_with_meta({"inputs": []}), "no 'batch' list", id="no-batch-list"),
        pytest.param(100, _meta_with(batch=[]), "no 'batch' list", id="empty-batch-list"),
        pytest.param(100, _meta_with(batch={"id": 11, "rows": 6}), "no 'batch' list", id="batch-not-a-list"),
        pytest.param(100, _meta_with(batch=[batch_entry(11, 2), 7, batch_entry(13, 4)]), "request 1 is not an object",
                     id="entry-not-an-object"),
        pytest.param(100, _entries_with(1, id="12"), "'id' must be", id="id-not-an-integer"),
        pytest.param(100, _entries_with(1, rows=-1), "'rows' must be", id="negative-rows"),
        pytest.param(100, _entries_with(0, parameters=[1]), "'parameters' must be", id="parameters-not-an-object"),
        pytest.param(100, _entries_with(2, outputs="OUTPUT0"), "'outputs' must be", id="outputs-not-a-list"),
        pytest.param(100, _entries_with(2, id=11), "repeats the id 11", id="duplicate-request-id"),
        pytest.param(100, _entries_with(2, id=100), "the batch's own id", id="request-id-is-the-batch-id"),
        pytest.param(100, _entries_with(2, rows=2), "rows add up to 5", id="rows-do-not-add-up"),
        pytest.param(100, body_with_meta(batch_meta([batch_entry(11, 1)], [("INPUT0", "FP32", [], b"\0" * 4)]), b"\0" * 4),
                     "rows add up to 1", id="input-without-dimension-0"),
    ],
)
def test_malformed_batches_are_protocol_errors(spawn: Any, frame_id: int, body: bytes, reason: str) -> None:
    d = spawn(CONCAT)
    d.start()
    d.send(BATCH, frame_id, body)
    assert d.wait_exit() == 2
    assert "protocol error" in d.log() and reason in d.log()


@pytest.mark.parametrize("health", [False, True], ids=["executor", "inline"])
def test_a_pipelined_request_cancelled_before_it_starts_never_runs(spawn: Any, tmp_path: Path, health: bool) -> None:
    """The daemon pipelined request 2 behind request 1 and then cancelled it (its deadline, or its client
    left): the worker answers it ERROR Cancelled once request 1 is done, without calling the model."""
    d = spawn(CONCAT, health=health)
    d.start()
    x = [("INPUT0", "INT32", [1], struct.pack("<i", 5))]
    d.send_infer(1, x, parameters={"wait": True})  # runs until its own CANCEL, at most 5 s
    time.sleep(0.2)
    d.send_infer(2, x)  # pipelined: waits in the socket (inline) or the executor's queue
    control = d.health if health else None
    for frame_id in (2, 1):
        if control is not None:
            control.sendall(HEADER.pack(0, 1, CANCEL, 0, frame_id))
        else:
            d.send(CANCEL, frame_id)
        time.sleep(0.1)
    d.expect(INFER_RESULT, 1)
    err = json.loads(d.expect(ERROR, 2))
    assert err["type"] == "Cancelled", err
    assert [c["id"] for c in calls(tmp_path)] == ["req-1"], "the cancelled request reached the model"
    d.send_infer(3, x)  # and it serves the next
    assert "OUTPUT0" in parse_tensors(d.expect(INFER_RESULT, 3))
