"""Tests of the C SDK (sdk/c) through its two example models and a fixture.

Each test starts a built worker binary (examples/models/echo-c/echo-c,
examples/models/tts-espeak/tts-espeak, tests/models/infer_batch_c/infer_batch_c)
with one end of a socketpair as fd 3
and plays the daemon's part of docs/worker-protocol.md by hand: frames are
written and read here, byte by byte, so the tests check the wire format and
not just a client library. Every test bounds its time and kills the processes
it started.

Run: /usr/bin/python3 -m pytest -q tests/sdk/test_c_sdk.py
"""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import signal
import socket
import struct
import subprocess
import tempfile
import time
import wave
from pathlib import Path
from typing import Iterator, Optional

import pytest

ROOT = Path(__file__).resolve().parents[2]
ECHO_DIR = ROOT / "examples" / "models" / "echo-c"
TTS_DIR = ROOT / "examples" / "models" / "tts-espeak"
BATCH_DIR = ROOT / "tests" / "models" / "infer_batch_c"
# Overridable to test other builds (sanitized, valgrind) without touching the tree's binaries.
ECHO_BIN = Path(os.environ.get("CORRAL_ECHO_C_BIN", ECHO_DIR / "echo-c"))
TTS_BIN = Path(os.environ.get("CORRAL_TTS_ESPEAK_BIN", TTS_DIR / "tts-espeak"))
BATCH_BIN = Path(os.environ.get("CORRAL_INFER_BATCH_C_BIN", BATCH_DIR / "infer_batch_c"))
SEQ_DIR = ROOT / "tests" / "models" / "sequences_c"
SEQ_BIN = Path(os.environ.get("CORRAL_SEQUENCES_C_BIN", SEQ_DIR / "sequences_c"))

HEADER = struct.Struct("<IBBHQ")
HELLO, LOAD, READY = 0x01, 0x02, 0x03
INFER, INFER_RESULT, GENERATE, GENERATE_RESULT = 0x10, 0x11, 0x12, 0x13
CHUNK, END, CANCEL, BATCH, CREDIT, SEQUENCE_END = 0x14, 0x15, 0x16, 0x17, 0x18, 0x19
ERROR, PING, PONG, SHUTDOWN = 0x1F, 0x20, 0x21, 0x22
SHM = 0x30  # reserved

TIMEOUT = 10.0  # seconds any single frame may take to arrive


def _need(binary: Path) -> None:
    if not binary.exists():
        pytest.skip(f"{binary} is not built (build the project with CMake first)")


def tensor_body(meta: dict, data: bytes = b"") -> bytes:
    m = json.dumps(meta).encode()
    return struct.pack("<I", len(m)) + m + data


def split_body(body: bytes) -> tuple[Optional[dict], bytes]:
    """(meta, data); meta None when its length is 0 (a later CHUNK of a stream)."""
    (mlen,) = struct.unpack_from("<I", body)
    return (json.loads(body[4 : 4 + mlen]) if mlen else None), body[4 + mlen :]


def encode_bytes(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(x)) + x for x in items)


def decode_bytes(data: bytes) -> list[bytes]:
    out, off = [], 0
    while off < len(data):
        (n,) = struct.unpack_from("<I", data, off)
        out.append(data[off + 4 : off + 4 + n])
        off += 4 + n
    return out


class Worker:
    """One worker process and the daemon's end of its protocol socket."""

    def __init__(self, binary: Path, model_dir: Path, env: Optional[dict] = None, fd_env: Optional[str] = "3",
                 health: bool = False, shm: bool = False):
        _need(binary)
        self.model_dir = model_dir
        self.sock, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        # Extra descriptors the worker gets, as the daemon gives them: target fd -> ours.
        extra: dict[int, int] = {}
        self.health: Optional[socket.socket] = None
        self.regions: list[int] = []
        if health:
            self.health, health_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            self.health.settimeout(TIMEOUT)
            extra[4] = health_child.detach()
        if shm:
            self.regions = [os.memfd_create("test-input"), os.memfd_create("test-output")]
            extra[5], extra[6] = self.regions
        self.sock.settimeout(TIMEOUT)
        self.stderr = tempfile.TemporaryFile()
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
        full_env.update(CORRAL_PROTOCOL="1", CORRAL_MODEL=model_dir.name, CORRAL_INSTANCE="0",
                        CORRAL_MODEL_DIR=str(model_dir))
        if fd_env is not None:
            full_env["CORRAL_FD"] = fd_env
        if health:
            full_env["CORRAL_HEALTH_FD"] = "4"
        if shm:
            full_env["CORRAL_SHM_FDS"] = "5,6"
        full_env.update(env or {})
        child_fd = child.fileno()

        def put_socket_on_fd3() -> None:
            # Python's descriptors are close-on-exec; only fd 3 (and the extra ones) survive exec.
            # Each goes through a fresh high descriptor first, so no dup2 overwrites a source.
            moved = {target: os.dup(fd) for target, fd in [(3, child_fd), *extra.items()]}
            for target, fd in moved.items():
                os.dup2(fd, target, inheritable=True)

        # e.g. CORRAL_SDK_TEST_WRAPPER="valgrind -q --leak-check=full --errors-for-leak-kinds=definite"
        wrapper = shlex.split(os.environ.get("CORRAL_SDK_TEST_WRAPPER", ""))
        self.proc = subprocess.Popen(wrapper + [str(binary)], cwd=model_dir, env=full_env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=self.stderr, close_fds=False,
                                     preexec_fn=put_socket_on_fd3, start_new_session=True)
        child.close()
        if health:
            os.close(extra[4])
        self.next_id = 1

    # -- frames --
    def send(self, type_: int, id_: int = 0, body: bytes = b"", version: int = 1, flags: int = 0,
             length: Optional[int] = None) -> None:
        n = len(body) if length is None else length
        self.sock.sendall(HEADER.pack(n, version, type_, flags, id_) + body)

    def _recv_exact(self, n: int) -> bytes:
        chunks, left = [], n
        while left:
            chunk = self.sock.recv(min(left, 1 << 20))
            if not chunk:
                raise EOFError("worker closed the socket")
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def recv(self) -> tuple[int, int, bytes]:
        type_, id_, body, flags = self.recv_flagged()
        assert flags == 0, flags
        return type_, id_, body

    def recv_flagged(self) -> tuple[int, int, bytes, int]:
        length, version, type_, flags, id_ = HEADER.unpack(self._recv_exact(HEADER.size))
        assert version == 1, version
        return type_, id_, self._recv_exact(length), flags

    def expect(self, want_type: int, want_id: Optional[int] = None) -> bytes:
        type_, id_, body = self.recv()
        assert type_ == want_type, f"expected 0x{want_type:02x}, got 0x{type_:02x}: {body[:300]!r}"
        if want_id is not None:
            assert id_ == want_id
        return body

    # -- start-up --
    def hello(self) -> dict:
        return json.loads(self.expect(HELLO, 0))

    def start(self, concurrency: int = 1, parameters: Optional[dict] = None, stream_window: int = 1 << 20) -> dict:
        """HELLO, LOAD, READY: returns READY's metadata."""
        hello = self.hello()
        assert hello["protocol"] == 1 and hello["sdk"] == "c" and hello["pid"] == self.proc.pid
        self.load(concurrency, parameters, stream_window)
        return json.loads(self.expect(READY, 0))

    def load(self, concurrency: int = 1, parameters: Optional[dict] = None, stream_window: int = 1 << 20) -> None:
        msg = {"model": "test", "model_dir": str(self.model_dir), "instance_id": 0, "device": "cpu",
               "concurrency": concurrency, "stream_window": stream_window, "parameters": parameters or {}}
        self.send(LOAD, 0, json.dumps(msg).encode())

    # -- requests --
    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def send_infer(self, inputs: list[tuple[str, str, list[int], bytes]], outputs: Optional[list[str]] = None,
                   parameters: Optional[dict] = None, id_: Optional[int] = None, **extra) -> int:
        id_ = id_ or self.new_id()
        meta: dict = {"id": f"req-{id_}", "parameters": parameters or {},
                      "inputs": [{"name": n, "datatype": d, "shape": s, "size": len(b)} for n, d, s, b in inputs],
                      **extra}
        if outputs is not None:
            meta["outputs"] = outputs
        self.send(INFER, id_, tensor_body(meta, b"".join(b for *_, b in inputs)))
        return id_

    def send_generate(self, body: bytes, content_type: str = "application/json", id_: Optional[int] = None,
                      stream: bool = False) -> int:
        id_ = id_ or self.new_id()
        meta = {"id": "", "content_type": content_type}
        if stream:
            meta["stream"] = True
        self.send(GENERATE, id_, tensor_body(meta, body))
        return id_

    def send_batch(self, parts: list[list[tuple[str, str, list[int], bytes]]], extras: Optional[list[dict]] = None,
                   id_: Optional[int] = None, flags: int = 0, in_region: bool = False) -> tuple[int, list[int]]:
        """A BATCH of one request per part (its inputs, all with the same names and datatypes, in the same
        order): each input concatenated along dimension 0; extras[i] updates request i's entry (parameters,
        outputs, ...). in_region puts the data in the input region. Returns (batch id, request ids)."""
        ids = [self.new_id() for _ in parts]
        entries = [{"id": rid, "client_id": f"client-{i}", "rows": part[0][2][0], "parameters": {}}
                   for i, (rid, part) in enumerate(zip(ids, parts))]
        for entry, extra in zip(entries, extras or []):
            entry.update(extra)
        inputs, data = [], b""
        for k, (name, dtype, shape, _) in enumerate(parts[0]):
            blob = b"".join(part[k][3] for part in parts)
            inputs.append({"name": name, "datatype": dtype, "shape": [sum(part[k][2][0] for part in parts), *shape[1:]],
                           "size": len(blob)})
            data += blob
        id_ = id_ or self.new_id()
        meta = {"batch": entries, "inputs": inputs}
        if in_region:
            fd = self.regions[0]
            if os.fstat(fd).st_size < len(data):
                os.ftruncate(fd, len(data))
            os.pwrite(fd, data, 0)
            data = b""
        self.send(BATCH, id_, tensor_body(meta, data), flags=flags)
        return id_, ids

    def control(self, type_: int, id_: int, body: bytes = b"") -> None:
        """CANCEL or CREDIT, on the health socket when there is one (as the daemon sends them)."""
        frame = HEADER.pack(len(body), 1, type_, 0, id_) + body
        (self.health or self.sock).sendall(frame)

    def stream(self, id_: int, credit: bool = True) -> tuple[list[tuple[dict, bytes]], int, bytes]:
        """Reads CHUNKs of id_ until END or ERROR: ([(meta, data)], final type, final body), crediting each."""
        chunks = []
        while True:
            type_, rid, body = self.recv()
            assert rid == id_
            if type_ != CHUNK:
                return chunks, type_, body
            chunks.append(split_body(body))
            if credit:
                self.control(CREDIT, id_, struct.pack("<I", HEADER.size + len(body)))

    def infer(self, *args, **kwargs) -> dict[str, tuple[str, list[int], bytes]]:
        id_ = self.send_infer(*args, **kwargs)
        meta, data = split_body(self.expect(INFER_RESULT, id_))
        out, off = {}, 0
        for t in meta["outputs"]:
            out[t["name"]] = (t["datatype"], t["shape"], data[off : off + t["size"]])
            off += t["size"]
        assert off == len(data)
        return out

    def error(self, id_: int) -> dict:
        err = json.loads(self.expect(ERROR, id_))
        assert set(err) >= {"type", "message", "status"}
        return err

    # -- ending --
    def wait(self, timeout: float = TIMEOUT) -> int:
        return self.proc.wait(timeout=timeout)

    def stderr_text(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=TIMEOUT)
        self.sock.close()
        if self.health is not None:
            self.health.close()
        for fd in self.regions:
            os.close(fd)


@pytest.fixture
def spawn() -> Iterator:
    started: list[Worker] = []

    def make(binary: Path = ECHO_BIN, **kwargs) -> Worker:
        w = Worker(binary, {ECHO_BIN: ECHO_DIR, BATCH_BIN: BATCH_DIR, SEQ_BIN: SEQ_DIR}.get(binary, TTS_DIR), **kwargs)
        started.append(w)
        return w

    yield make
    reports = []
    for w in started:
        w.close()
        text = w.stderr_text()
        # A build with CORRAL_SANITIZE=ON, or CORRAL_SDK_TEST_WRAPPER="valgrind -q ...", reports here.
        if re.search(r"AddressSanitizer|LeakSanitizer|runtime error:|^==\d+== ", text, re.M):
            reports.append(text)
        w.stderr.close()
    assert not reports, "\n".join(reports)


@pytest.fixture(autouse=True)
def _bounded_time():
    """Every test gets at most 60 s, whatever it waits on."""
    def expired(signum, frame):
        raise TimeoutError("test ran past 60 s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


# ---------------------------------------------------------------- echo-c


def test_hello_load_ready(spawn):
    w = spawn()
    hello = w.hello()
    assert hello == {"protocol": 1, "sdk": "c", "sdk_version": hello["sdk_version"], "pid": w.proc.pid,
                     "stream": True, "batch": True}
    w.load()
    assert json.loads(w.expect(READY, 0)) == {}


def test_infer_fp32_int64_bytes_round_trip(spawn):
    w = spawn()
    w.start()
    fp32 = struct.pack("<6f", 1.5, -2.0, 3.25, 0.0, 1e30, -7.5)
    int64 = struct.pack("<2q", -(2**62), 2**40 + 3)
    strings = [b"hello", "w\u00f6rld".encode(), b"", b"\x00\xffbinary"]
    odd = b"\x01\x02\x03"  # 3 bytes first: the FP32 after it is misaligned in the frame
    out = w.infer([("EXTRA", "UINT8", [3], odd), ("INPUT0", "FP32", [2, 3], fp32), ("INPUT1", "INT64", [2], int64),
                   ("INPUT2", "BYTES", [2, 2], encode_bytes(strings))])
    assert list(out) == ["EXTRA", "OUTPUT0", "OUTPUT1", "OUTPUT2"]
    assert out["EXTRA"] == ("UINT8", [3], odd)
    assert out["OUTPUT0"] == ("FP32", [2, 3], fp32)
    assert out["OUTPUT1"] == ("INT64", [2], int64)
    assert out["OUTPUT2"][:2] == ("BYTES", [2, 2])
    assert decode_bytes(out["OUTPUT2"][2]) == strings


def test_infer_large_tensor_and_scalar(spawn):
    w = spawn()
    w.start()
    big = os.urandom(8 << 20)  # 8 MiB: many partial reads and writes on the socket
    out = w.infer([("INPUT0", "FP64", [len(big) // 8], big), ("INPUT1", "BOOL", [], b"\x01")])
    assert out["OUTPUT0"] == ("FP64", [len(big) // 8], big)
    assert out["OUTPUT1"] == ("BOOL", [], b"\x01")


def test_infer_only_requested_outputs(spawn):
    w = spawn()
    w.start()
    a, b = struct.pack("<2i", 1, 2), struct.pack("<2i", 3, 4)
    out = w.infer([("INPUT0", "INT32", [2], a), ("INPUT1", "INT32", [2], b)], outputs=["OUTPUT1"])
    assert out == {"OUTPUT1": ("INT32", [2], b)}


def test_generate_echoes_body_and_content_type(spawn):
    w = spawn()
    w.start()
    for body, ctype in [(b'{"text": "hi"}', "application/json"), (os.urandom(3 << 20), "application/x-thing"),
                        (b"", "text/plain")]:
        id_ = w.send_generate(body, ctype)
        meta, data = split_body(w.expect(GENERATE_RESULT, id_))
        assert meta == {"content_type": ctype}
        assert data == body


def test_bad_input_is_400_and_worker_survives(spawn):
    w = spawn()
    w.start()
    cases = [
        ([], {}),  # nothing to echo
        ([("INPUT0", "FP32", [2, 3], b"\x00" * 20)], {}),  # 20 bytes for 6 FP32
        ([("INPUT0", "FP33", [1], b"\x00" * 4)], {}),  # unknown datatype
        ([("INPUT0", "BYTES", [2], encode_bytes([b"one"]))], {}),  # 1 element for shape [2]
        ([("INPUT0", "BYTES", [1], b"\x09\x00\x00\x00abc")], {}),  # element runs past the tensor
        ([("INPUT0", "INT8", [-1], b"")], {}),  # negative dimension
        ([("INPUT0", "INT8", [1], b"\x01"), ("INPUT0", "INT8", [1], b"\x02")], {}),  # duplicate name
        ([("INPUT0", "INT8", [1], b"\x01")], {"delay_ms": -5}),  # the model rejects the parameter
    ]
    for inputs, params in cases:
        id_ = w.send_infer(inputs, parameters=params)
        err = w.error(id_)
        assert err["status"] == 400 and err["type"] == "BadRequest", (inputs, err)
        assert err["message"]
    id_ = w.send_generate(b"x", "text/plain")
    assert w.expect(GENERATE_RESULT, id_)
    assert w.proc.poll() is None


def test_ping_answered_while_model_is_busy(spawn):
    w = spawn()
    w.start()
    id_ = w.send_infer([("INPUT0", "INT8", [1], b"\x07")], parameters={"delay_ms": 1500})
    time.sleep(0.2)  # the model is now sleeping inside infer
    t0 = time.monotonic()
    w.send(PING, 0xDEADBEEF12345678)
    type_, nonce, body = w.recv()
    assert (type_, nonce, body) == (PONG, 0xDEADBEEF12345678, b"")
    assert time.monotonic() - t0 < 0.5
    meta, data = split_body(w.expect(INFER_RESULT, id_))
    assert data == b"\x07"


SHM_DATA, SHM_OUT = 0x0001, 0x0002


def test_inline_mode_health_socket_answers_ping_while_busy(spawn):
    w = spawn(health=True)
    hello = w.hello()
    assert hello["health_fd"] == 4
    w.load()  # concurrency 1 with a health socket: the reader runs requests itself
    w.expect(READY, 0)
    id_ = w.send_infer([("INPUT0", "INT8", [1], b"\x07")], parameters={"delay_ms": 1500})
    time.sleep(0.2)
    t0 = time.monotonic()
    w.health.sendall(HEADER.pack(0, 1, PING, 0, 0xABC))
    length, _, type_, flags, nonce = HEADER.unpack(w.health.recv(HEADER.size, socket.MSG_WAITALL))
    assert (length, type_, flags, nonce) == (0, PONG, 0, 0xABC)
    assert time.monotonic() - t0 < 0.5
    assert split_body(w.expect(INFER_RESULT, id_))[1] == b"\x07"
    ids = [w.send_infer([("INPUT0", "INT8", [1], bytes([i]))]) for i in range(20)]
    assert [w.recv()[1] for _ in ids] == ids  # in order, one at a time


def test_inline_mode_exits_when_the_health_socket_closes(spawn):
    w = spawn(health=True)
    w.start()
    w.send_infer([("INPUT0", "INT8", [1], b"\x07")], parameters={"delay_ms": 30000})
    time.sleep(0.2)
    t0 = time.monotonic()
    w.health.shutdown(socket.SHUT_RDWR)
    assert w.wait() == 0
    assert time.monotonic() - t0 < 2.0


def test_health_socket_carries_only_ping(spawn):
    w = spawn(health=True)
    w.start()
    w.health.sendall(HEADER.pack(0, 1, SHUTDOWN, 0, 0))
    assert w.wait() == 2
    assert "health socket" in w.stderr_text()


def test_shared_memory_both_ways(spawn):
    w = spawn(health=True, shm=True)
    assert w.hello()["shm"] is True
    w.load()
    w.expect(READY, 0)
    for round_ in range(2):  # the regions are reused
        raw = bytes((i * 7 + round_) % 251 for i in range(4096)) * 512  # 2 MiB
        meta = {"id": "", "parameters": {},
                "inputs": [{"name": "INPUT0", "datatype": "UINT8", "shape": [len(raw)], "size": len(raw)}]}
        fd = w.regions[0]
        if os.fstat(fd).st_size < len(raw):
            os.ftruncate(fd, len(raw))
        os.pwrite(fd, raw, 0)
        id_ = w.new_id()
        w.send(INFER, id_, tensor_body(meta, b""), flags=SHM_DATA | SHM_OUT)
        type_, got, body, flags = w.recv_flagged()
        assert (type_, got, flags) == (INFER_RESULT, id_, SHM_DATA), body[:200]
        out, rest = split_body(body)
        assert rest == b""
        assert out["outputs"][0]["size"] == len(raw)
        assert os.pread(w.regions[1], len(raw), 0) == raw


def test_shared_memory_result_only_with_the_grant(spawn):
    w = spawn(health=True, shm=True)
    w.start()
    raw = b"\x01" * (2 << 20)
    out = w.infer([("INPUT0", "UINT8", [len(raw)], raw)])  # no SHM_OUT: the socket
    assert out["OUTPUT0"][2] == raw


@pytest.mark.parametrize("shm", [False, True], ids=["no-regions", "data-in-frame-too"])
def test_shared_memory_misuse_is_a_protocol_error(spawn, shm):
    w = spawn(shm=shm)
    w.start()
    meta = {"id": "", "parameters": {}, "inputs": [{"name": "INPUT0", "datatype": "INT8", "shape": [1], "size": 1}]}
    w.send(INFER, w.new_id(), tensor_body(meta, b"\x01"), flags=SHM_DATA)
    assert w.wait() == 2
    assert "protocol error" in w.stderr_text()


def test_ping_while_a_large_result_is_stuck_in_the_socket(spawn):
    # The daemon is not reading: the worker blocks writing a 16 MiB result.
    # Its reader must still take PINGs off the socket (no deadlock) and the
    # PONGs follow the result, never inside it.
    w = spawn()
    w.start()
    big = os.urandom(16 << 20)
    big_id = w.send_infer([("INPUT0", "UINT8", [len(big)], big)])
    time.sleep(0.3)
    w.send(PING, 1001)
    w.send(PING, 1002)
    small_id = w.send_infer([("INPUT0", "UINT8", [1], b"\x09")])
    order = []
    for _ in range(4):
        type_, id_, body = w.recv()
        order.append((type_, id_))
        if type_ == INFER_RESULT and id_ == big_id:
            assert split_body(body)[1] == big
    assert order == [(INFER_RESULT, big_id), (PONG, 1001), (PONG, 1002), (INFER_RESULT, small_id)]


def test_concurrency_runs_requests_in_parallel(spawn):
    w = spawn()
    w.start(concurrency=3)
    t0 = time.monotonic()
    ids = [w.send_infer([("INPUT0", "INT32", [1], struct.pack("<i", i))], parameters={"delay_ms": 800})
           for i in range(3)]
    seen = {}
    for _ in ids:
        type_, id_, body = w.recv()
        assert type_ == INFER_RESULT
        seen[id_] = split_body(body)[1]
    elapsed = time.monotonic() - t0
    assert seen == {id_: struct.pack("<i", i) for i, id_ in enumerate(ids)}
    assert elapsed < 2.0, f"3 x 800 ms at concurrency 3 took {elapsed:.2f}s"


# ---- streams and cancellation (docs/worker-protocol.md, Streams and Cancellation)

def chunks_body(chunks: list) -> bytes:
    return json.dumps({"chunks": chunks}).encode()


@pytest.mark.parametrize("health", [False, True])
def test_stream_of_events(spawn, health):
    w = spawn(health=health)
    w.start()
    events = [{"token": "Hello"}, {"token": " world", "n": 2}, [1, 2], {"text": "line\nbreak \u00e9"}]
    id_ = w.send_generate(chunks_body(events), stream=True)
    chunks, final, body = w.stream(id_)
    assert (final, body) == (END, b"")
    assert chunks[0][0] == {"events": True}
    assert all(meta is None for meta, _ in chunks[1:])  # meta length 0 on every later chunk
    for (_, data), want in zip(chunks, events):
        assert b"\n" not in data and json.loads(data) == want
    assert len(chunks) == len(events)


def test_stream_of_bytes_names_its_content_type_once(spawn):
    w = spawn()
    w.start()
    id_ = w.send_generate(chunks_body(["one ", "two ", "three"]), stream=True)
    chunks, final, _ = w.stream(id_)
    assert final == END
    assert chunks[0] == ({"content_type": "text/plain; charset=utf-8"}, b"one ")
    assert [c[1] for c in chunks[1:]] == [b"two ", b"three"] and all(c[0] is None for c in chunks[1:])


def test_chunks_without_a_stream_are_collected_into_one_answer(spawn):
    w = spawn()
    w.start()
    meta, data = split_body(w.expect(GENERATE_RESULT, w.send_generate(chunks_body([{"a": 1}, {"b": [2]}]))))
    assert meta == {"content_type": "application/x-ndjson"}
    assert data == b'{"a":1}\n{"b":[2]}\n'
    meta, data = split_body(w.expect(GENERATE_RESULT, w.send_generate(chunks_body(["ab", "cd"]))))
    assert (meta, data) == ({"content_type": "text/plain; charset=utf-8"}, b"abcd")


def test_mixed_chunk_kinds_end_the_stream_with_an_error(spawn):
    w = spawn()
    w.start()
    id_ = w.send_generate(chunks_body([{"a": 1}, "text"]), stream=True)
    chunks, final, body = w.stream(id_)
    assert len(chunks) == 1 and final == ERROR
    err = json.loads(body)
    assert err["status"] == 400 and "cannot mix" in err["message"]
    assert w.error(w.send_generate(chunks_body(["text", {"a": 1}]))) ["status"] == 400  # collected: same rule
    id_ = w.send_generate(chunks_body([{"still": "serving"}]), stream=True)
    assert w.stream(id_)[1] == END


def _frame_cost(meta: Optional[dict], data: bytes) -> int:
    return HEADER.size + 4 + (len(json.dumps(meta, separators=(",", ":"))) if meta else 0) + len(data)


@pytest.mark.parametrize("health", [False, True])
def test_stream_waits_for_credit_when_its_window_is_full(spawn, health):
    w = spawn(health=health)
    window = 200
    w.start(stream_window=window)
    events = [{"n": i, "pad": "x" * 40} for i in range(12)]  # about 70 bytes a frame: 2 fit the window
    id_ = w.send_generate(chunks_body(events), stream=True)
    got, outstanding, credits = [], 0, 0
    while len(got) < len(events):
        w.sock.settimeout(0.3)
        try:
            type_, rid, body = w.recv()
        except socket.timeout:
            # Blocked when the frames sent and not credited fill the window (else merely slow: wait on).
            if outstanding + _frame_cost(None, json.dumps(events[len(got)], separators=(",", ":")).encode()) > window:
                w.control(CREDIT, id_, struct.pack("<I", outstanding))
                outstanding, credits = 0, credits + 1
            continue
        finally:
            w.sock.settimeout(TIMEOUT)
        assert (type_, rid) == (CHUNK, id_)
        outstanding += HEADER.size + len(body)
        assert outstanding <= window  # never past the window
        got.append(json.loads(split_body(body)[1]))
    assert got == events and credits >= 4  # 12 chunks, 2 to a window
    assert w.recv()[0] == END


def test_one_chunk_larger_than_the_window_goes_when_nothing_is_outstanding(spawn):
    w = spawn()
    w.start(stream_window=64)
    big = "y" * 500
    id_ = w.send_generate(chunks_body([big, big]), stream=True)
    chunks, final, _ = w.stream(id_)  # credits each chunk as it comes
    assert final == END and [c[1] for c in chunks] == [big.encode()] * 2


@pytest.mark.parametrize("health", [False, True])
def test_cancel_unblocks_a_stream_waiting_for_credit(spawn, health):
    w = spawn(health=health)
    w.start(stream_window=100)
    id_ = w.send_generate(chunks_body([{"i": i} for i in range(1000)]), stream=True)
    sent = 0
    w.sock.settimeout(0.5)
    with pytest.raises(socket.timeout):
        while True:
            type_, _, _ = w.recv()
            assert type_ == CHUNK
            sent += 1
    w.sock.settimeout(TIMEOUT)
    assert 1 <= sent < 10
    w.control(CANCEL, id_)
    type_, rid, _ = w.recv()
    assert (type_, rid) == (END, id_)  # the model returned: the slot is free
    assert w.stream(w.send_generate(chunks_body([{"next": 1}]), stream=True))[1] == END


@pytest.mark.parametrize("health", [False, True])
def test_cancel_cuts_a_running_infer_short_in_corral_request_sleep(spawn, health):
    w = spawn(health=health)
    w.start()
    id_ = w.send_infer([("INPUT0", "INT32", [1], struct.pack("<i", 7))], parameters={"delay_ms": 30000})
    time.sleep(0.2)
    started = time.monotonic()
    w.control(CANCEL, id_)
    err = w.error(id_)
    assert err["type"] == "Cancelled" and time.monotonic() - started < 5
    out = w.infer([("INPUT0", "INT32", [1], struct.pack("<i", 8))])
    assert out["OUTPUT0"][2] == struct.pack("<i", 8)


def test_cancel_that_overtakes_its_request_is_kept(spawn):
    w = spawn(health=True)
    w.start()
    id_ = w.new_id()
    w.control(CANCEL, id_)  # on the health socket, before the request exists
    time.sleep(0.2)
    w.send_infer([("INPUT0", "INT32", [1], struct.pack("<i", 1))], parameters={"delay_ms": 30000}, id_=id_)
    assert w.error(id_)["type"] == "Cancelled"


@pytest.mark.parametrize("health", [False, True])
def test_a_pipelined_request_cancelled_before_it_starts_never_runs(spawn, health):
    """Request 2 waits behind request 1 (pipelined) and is cancelled first: once request 1 ends, request 2
    is answered Cancelled by the SDK itself, without reaching the model."""
    w = spawn(health=health)
    w.start()
    x = [("INPUT0", "INT32", [1], struct.pack("<i", 3))]
    first = w.send_infer(x, parameters={"delay_ms": 30000})
    time.sleep(0.2)
    second = w.send_infer(x, parameters={"delay_ms": 30000})
    w.control(CANCEL, second)
    time.sleep(0.1)
    w.control(CANCEL, first)
    assert w.error(first)["type"] == "Cancelled"
    err = w.error(second)
    assert err["type"] == "Cancelled" and "before it started" in err["message"], err
    assert w.infer(x)["OUTPUT0"][2] == struct.pack("<i", 3)


def test_cancel_and_credit_for_answered_requests_are_moot(spawn):
    w = spawn(health=True)
    w.start()
    id_ = w.send_generate(chunks_body([{"a": 1}]), stream=True)
    assert w.stream(id_, credit=False)[1] == END
    w.control(CREDIT, id_, struct.pack("<I", 100))
    w.control(CANCEL, id_)
    w.control(CANCEL, 1)  # below every id seen: dropped
    assert w.stream(w.send_generate(chunks_body([{"b": 2}]), stream=True))[1] == END


@pytest.mark.parametrize("frame", [(CANCEL, 5, b"x"), (CREDIT, 5, b"\x01\x00"), (CREDIT, 0, b"\x01\x00\x00\x00")])
@pytest.mark.parametrize("health", [False, True])
def test_malformed_cancel_or_credit_is_a_protocol_error(spawn, frame, health):
    w = spawn(health=health)
    w.start()
    w.control(*frame)
    assert w.wait() == 2
    assert "protocol error" in w.stderr_text()


# ---------------------------------------------------------------- sequences_c


def test_request_sequence_and_end_sequence(spawn):
    w = spawn(SEQ_BIN)
    assert w.hello()["sequence"] is True  # the model has end_sequence: the daemon may send SEQUENCE_END
    w.load()
    w.expect(READY, 0)

    def answer(**extra):
        out = w.infer([], **extra)
        return decode_bytes(out["SEQ"][2])[0].decode(), decode_bytes(out["RELEASED"][2])[0].decode()

    assert answer() == ("null", "")
    assert answer(sequence={"id": 7, "start": True, "end": False})[0] == '{"end":false,"id":7,"start":true}'
    assert answer(sequence={"id": "conv", "start": False, "end": True})[0] == '{"end":true,"id":"conv","start":false}'
    w.send(SEQUENCE_END, 0, json.dumps({"sequence_id": 7, "reason": "idle"}).encode())
    w.send(SEQUENCE_END, 0, json.dumps({"sequence_id": "conv", "reason": "idle"}).encode())
    assert answer()[1] == '7 idle\n"conv" idle\n'


def test_echo_c_never_asks_for_sequence_end(spawn):
    w = spawn()
    assert "sequence" not in w.hello()  # no end_sequence: no SEQUENCE_END
    w.load()
    w.expect(READY, 0)
    w.send(SEQUENCE_END, 0, json.dumps({"sequence_id": 7, "reason": "idle"}).encode())
    assert w.wait() == 2
    assert "SEQUENCE_END" in w.stderr_text() and "was not asked for" in w.stderr_text()


@pytest.mark.parametrize("frame", [(SEQUENCE_END, 3, b'{"sequence_id": 7, "reason": "idle"}'),
                                   (SEQUENCE_END, 0, b'{"sequence_id": -1, "reason": "idle"}'),
                                   (SEQUENCE_END, 0, b'{"sequence_id": 7}'),
                                   (SEQUENCE_END, 0, b'not json')])
def test_malformed_sequence_end_is_a_protocol_error(spawn, frame):
    w = spawn(SEQ_BIN)
    w.start()
    w.send(*frame)
    assert w.wait() == 2
    assert "protocol error" in w.stderr_text()


def test_malformed_sequence_meta_is_a_protocol_error(spawn):
    w = spawn(SEQ_BIN)
    w.start()
    w.send_infer([], sequence={"id": True})
    assert w.wait() == 2
    assert "meta 'sequence'" in w.stderr_text()


def test_shutdown_finishes_work_then_unloads_and_exits_0(spawn):
    w = spawn()
    w.start()
    id_ = w.send_infer([("INPUT0", "INT8", [1], b"\x01")], parameters={"delay_ms": 300})
    w.send(SHUTDOWN)
    late = w.send_infer([("INPUT0", "INT8", [1], b"\x02")])
    replies = {}
    for _ in range(2):
        type_, rid, body = w.recv()
        replies[rid] = (type_, body)
    assert replies[late][0] == ERROR and json.loads(replies[late][1])["status"] == 503
    assert replies[id_][0] == INFER_RESULT
    assert w.wait() == 0
    assert "echo-c: unloaded" in w.stderr_text()


def test_shutdown_before_load_exits_0(spawn):
    w = spawn()
    w.hello()
    w.send(SHUTDOWN)
    assert w.wait() == 0
    assert "unloaded" not in w.stderr_text()


def test_eof_exits_promptly_even_when_busy(spawn):
    w = spawn()
    w.start()
    w.send_infer([("INPUT0", "INT8", [1], b"\x01")], parameters={"delay_ms": 30000})
    time.sleep(0.2)
    t0 = time.monotonic()
    w.sock.close()
    w.wait(timeout=5)
    assert time.monotonic() - t0 < 2.0


def test_eof_before_load_exits(spawn):
    w = spawn()
    w.hello()
    w.sock.shutdown(socket.SHUT_WR)
    w.wait(timeout=5)


@pytest.mark.parametrize("frame, why", [
    (dict(type_=PING, version=2), "bad frame header"),
    (dict(type_=PING, flags=1), "bad frame header"),
    (dict(type_=0x7E), "bad frame header"),
    (dict(type_=INFER, id_=5, length=(1 << 30) + 1), "exceeds"),
    (dict(type_=SHM), "reserved"),
    (dict(type_=CHUNK, id_=5), "unexpected CHUNK"),
    (dict(type_=READY), "unexpected READY"),
    (dict(type_=INFER, id_=5, body=b"\x01\x00"), "shorter"),
    (dict(type_=INFER, id_=5, body=tensor_body({"inputs": 3})), "not a list"),
    (dict(type_=INFER, id_=5, body=struct.pack("<I", 3) + b"{x}"), "not a JSON object"),
    (dict(type_=INFER, id_=5, body=tensor_body({"inputs": []}, b"junk")), "add up to 0 bytes"),
    (dict(type_=INFER, id_=0, body=tensor_body({"inputs": []})), "id 0"),
    (dict(type_=PING, body=b"x"), "body"),
])
def test_protocol_errors_exit_2_with_a_message(spawn, frame, why):
    w = spawn()
    w.start()
    w.send(**frame)
    assert w.wait() == 2
    err = w.stderr_text()
    assert "protocol error" in err and why in err, err


def test_duplicate_request_id_in_flight_is_a_protocol_error(spawn):
    w = spawn()
    w.start()
    w.send_infer([("INPUT0", "INT8", [1], b"\x01")], parameters={"delay_ms": 2000}, id_=77)
    w.send_infer([("INPUT0", "INT8", [1], b"\x01")], id_=77)
    assert w.wait() == 2
    assert "already in flight" in w.stderr_text()


def test_request_id_may_be_reused_once_answered(spawn):
    w = spawn()
    w.start()
    for _ in range(50):
        out = w.infer([("INPUT0", "INT8", [1], b"\x05")], id_=9)
        assert out["OUTPUT0"][2] == b"\x05"


def test_missing_corral_fd_fails_with_a_message(spawn):
    w = spawn(fd_env=None)
    assert w.wait() == 1
    assert "CORRAL_FD" in w.stderr_text()


def test_unsupported_protocol_version_fails(spawn):
    w = spawn(env={"CORRAL_PROTOCOL": "2"})
    assert w.wait() == 1
    assert "protocol 2" in w.stderr_text()


# ---- batches (docs/worker-protocol.md, Batches)

def tensors(meta_list: list[dict], data: bytes) -> tuple[dict[str, tuple[str, list[int], bytes]], bytes]:
    """{name: (datatype, shape, data)} of a list of tensor descriptions at the start of data, and the rest."""
    out, off = {}, 0
    for t in meta_list:
        out[t["name"]] = (t["datatype"], t["shape"], data[off : off + t["size"]])
        off += t["size"]
    return out, data[off:]


def batch_results(body: bytes) -> list:
    """The {"results": [...]} form: per request, its {name: tensor} or its error object."""
    meta, data = split_body(body)
    assert set(meta) == {"results"}, meta
    results = []
    for entry in meta["results"]:
        if "error" in entry:
            assert set(entry) == {"error"} and set(entry["error"]) == {"type", "message", "status"}, entry
            results.append(entry["error"])
        else:
            assert set(entry) == {"outputs"}, entry
            out, data = tensors(entry["outputs"], data)
            results.append(out)
    assert data == b""
    return results


ROWS = [2, 1, 3]


def batch_parts(rows: list[int] = ROWS) -> list[list[tuple[str, str, list[int], bytes]]]:
    """Per request: a 3-byte-a-row UINT8 input first (so the FP32 after it is misaligned in the frame),
    FP32 rows of 3, and BYTES rows of 2 strings of varied lengths; every value tells its request and row."""
    parts = []
    for r, n in enumerate(rows):
        odd = bytes(range(10 * r, 10 * r + 3 * n))
        fp32 = struct.pack(f"<{3 * n}f", *(100 * r + i + 0.5 for i in range(3 * n)))
        strings = encode_bytes([f"r{r}e{i}".encode() * (i + 1) for i in range(2 * n)])
        parts.append([("EXTRA", "UINT8", [n, 3], odd), ("INPUT0", "FP32", [n, 3], fp32),
                      ("INPUT1", "BYTES", [n, 2], strings)])
    return parts


@pytest.mark.parametrize("health, concurrency", [(False, 1), (True, 1), (True, 2)],
                         ids=["threads", "inline", "concurrent"])
def test_batch_to_echo_c_is_answered_whole(spawn, health, concurrency):
    w = spawn(health=health)
    w.start(concurrency=concurrency)
    parts = batch_parts()
    batch_id, _ = w.send_batch(parts)
    meta, data = split_body(w.expect(INFER_RESULT, batch_id))
    out, rest = tensors(meta["outputs"], data)
    assert rest == b"" and list(out) == ["EXTRA", "OUTPUT0", "OUTPUT1"]
    total = sum(ROWS)
    assert out["EXTRA"] == ("UINT8", [total, 3], b"".join(p[0][3] for p in parts))
    assert out["OUTPUT0"] == ("FP32", [total, 3], b"".join(p[1][3] for p in parts))
    assert out["OUTPUT1"] == ("BYTES", [total, 2], b"".join(p[2][3] for p in parts))
    assert w.infer([("INPUT0", "INT8", [1], b"\x05")])["OUTPUT0"][2] == b"\x05"  # and serves on


@pytest.mark.parametrize("dtype", ["FP32", "BYTES"])
def test_batch_of_one_input_type(spawn, dtype):
    w = spawn()
    w.start()
    parts = [[p[1 if dtype == "FP32" else 2]] for p in batch_parts()]
    batch_id, _ = w.send_batch(parts)
    meta, data = split_body(w.expect(INFER_RESULT, batch_id))
    out, _ = tensors(meta["outputs"], data)
    shape = [6, 3] if dtype == "FP32" else [6, 2]
    assert out == {"OUTPUT0" if dtype == "FP32" else "OUTPUT1": (dtype, shape, b"".join(p[0][3] for p in parts))}


def test_batch_outputs_are_the_union_of_the_requests_selections(spawn):
    w = spawn()
    w.start()
    parts = batch_parts([1, 2])
    batch_id, _ = w.send_batch(parts, [{"outputs": ["OUTPUT1"]}, {"outputs": ["EXTRA", "OUTPUT1"]}])
    meta, _ = split_body(w.expect(INFER_RESULT, batch_id))
    assert [t["name"] for t in meta["outputs"]] == ["EXTRA", "OUTPUT1"]
    batch_id, _ = w.send_batch(parts, [{"outputs": ["OUTPUT1"]}, {}])  # one that names none wants all
    meta, _ = split_body(w.expect(INFER_RESULT, batch_id))
    assert [t["name"] for t in meta["outputs"]] == ["EXTRA", "OUTPUT0", "OUTPUT1"]


def test_batch_with_a_bad_tensor_fails_whole_and_the_worker_survives(spawn):
    w = spawn()
    w.start()
    batch_id, _ = w.send_batch([[("INPUT0", "FP33", [1], b"\x00" * 4)], [("INPUT0", "FP33", [1], b"\x00" * 4)]])
    err = w.error(batch_id)
    assert err["status"] == 400 and "FP33" in err["message"]
    batch_id, _ = w.send_batch([[("INPUT0", "INT8", [1], b"\x01")]] * 2, [{"parameters": {"delay_ms": -1}}])
    assert w.error(batch_id)["status"] == 400  # form 1: the first request's parameters are the batch's
    assert w.infer([("INPUT0", "INT8", [1], b"\x05")])["OUTPUT0"][2] == b"\x05"


@pytest.mark.parametrize("health", [False, True])
def test_infer_batch_one_bad_request_fails_alone(spawn, health):
    w = spawn(BATCH_BIN, health=health)
    w.start()
    parts = batch_parts()
    batch_id, _ = w.send_batch(parts, [{"outputs": ["OUTPUT0"]}, {"parameters": {"fail": True}}, {}])
    results = batch_results(w.expect(INFER_RESULT, batch_id))
    assert len(results) == 3
    assert results[0] == {"OUTPUT0": ("FP32", [2, 3], parts[0][1][3])}  # its own rows, its own selection
    assert results[1]["status"] == 400 and results[1]["type"] == "BadRequest"
    assert "client-1" in results[1]["message"]
    assert results[2] == {"EXTRA": ("UINT8", [3, 3], parts[2][0][3]), "OUTPUT0": ("FP32", [3, 3], parts[2][1][3]),
                          "OUTPUT1": ("BYTES", [3, 2], parts[2][2][3])}
    assert "infer_batch_c: 3 requests, 6 rows" in w.stderr_text()


def test_infer_batch_views_of_every_request(spawn):
    w = spawn(BATCH_BIN)
    w.start()
    rows = [1, 4, 2, 1, 3]
    parts = batch_parts(rows)
    batch_id, _ = w.send_batch(parts)
    results = batch_results(w.expect(INFER_RESULT, batch_id))
    for part, result, n in zip(parts, results, rows):
        assert result == {"EXTRA": ("UINT8", [n, 3], part[0][3]), "OUTPUT0": ("FP32", [n, 3], part[1][3]),
                          "OUTPUT1": ("BYTES", [n, 2], part[2][3])}


def test_infer_batch_zero_rows_and_a_lone_request(spawn):
    w = spawn(BATCH_BIN)
    w.start()
    parts = [[("INPUT0", "INT16", [n, 2], struct.pack(f"<{2 * n}h", *range(2 * n)))] for n in (0, 2, 0)]
    results = batch_results(w.expect(INFER_RESULT, w.send_batch(parts)[0]))
    assert [r["OUTPUT0"][1] for r in results] == [[0, 2], [2, 2], [0, 2]]
    assert results[1]["OUTPUT0"][2] == parts[1][0][3]
    # Without infer, an ordinary INFER goes to infer_batch alone, and is answered as ever.
    assert w.infer([("INPUT0", "INT8", [2], b"\x01\x02")])["OUTPUT0"] == ("INT8", [2], b"\x01\x02")
    err = w.error(w.send_infer([("INPUT0", "INT8", [1], b"\x01")], parameters={"fail": True}))
    assert err["status"] == 400 and "asked to fail" in err["message"]
    err = w.error(w.send_infer([("INPUT0", "INT8", [1], b"\x01")], parameters={"return": -22}))
    assert err["status"] == 500 and "infer_batch returned -22" in err["message"]


def test_infer_batch_nonzero_return_fails_the_requests_without_an_error(spawn):
    w = spawn(BATCH_BIN)
    w.start()
    parts = batch_parts()
    batch_id, _ = w.send_batch(parts, [{}, {"parameters": {"return": 7}}, {}])
    err = w.error(batch_id)  # nobody's fault in particular: the whole batch
    assert err["status"] == 500 and "infer_batch returned 7" in err["message"]
    batch_id, _ = w.send_batch(parts, [{}, {"parameters": {"fail": True, "return": 7}}, {}])
    results = batch_results(w.expect(INFER_RESULT, batch_id))
    assert [r["status"] for r in results] == [500, 400, 500]
    assert "infer_batch returned 7" in results[0]["message"]


@pytest.mark.parametrize("health", [False, True])
def test_cancel_of_a_batch_reaches_the_model(spawn, health):
    w = spawn(health=health)
    w.start()
    batch_id, _ = w.send_batch(batch_parts(), [{"parameters": {"delay_ms": 30000}}])
    time.sleep(0.2)
    started = time.monotonic()
    w.control(CANCEL, batch_id)
    err = w.error(batch_id)
    assert err["type"] == "Cancelled" and time.monotonic() - started < 5
    assert w.infer([("INPUT0", "INT8", [1], b"\x05")])["OUTPUT0"][2] == b"\x05"


@pytest.mark.parametrize("health", [False, True])
def test_cancel_of_a_batch_cancels_every_request_of_infer_batch(spawn, health):
    w = spawn(BATCH_BIN, health=health)
    w.start()
    sleepy = [{"parameters": {"delay_ms": 30000}}] * 3
    batch_id, _ = w.send_batch(batch_parts(), sleepy)
    time.sleep(0.2)
    started = time.monotonic()
    w.control(CANCEL, batch_id)
    # Request 0 is woken by its on_cancel; 1 and 2 find themselves cancelled before they sleep.
    results = batch_results(w.expect(INFER_RESULT, batch_id))
    assert [r["type"] for r in results] == ["Cancelled"] * 3
    assert time.monotonic() - started < 5


def test_cancel_that_overtakes_its_batch_is_kept(spawn):
    w = spawn(BATCH_BIN, health=True)
    w.start()
    batch_id = w.new_id() + 10
    w.control(CANCEL, batch_id)
    time.sleep(0.2)
    w.send_batch(batch_parts([1, 1]), [{"parameters": {"delay_ms": 30000}}] * 2, id_=batch_id)
    assert [r["type"] for r in batch_results(w.expect(INFER_RESULT, batch_id))] == ["Cancelled"] * 2


@pytest.mark.parametrize("binary", ["echo-c", "infer_batch_c"])
def test_batch_in_shared_memory_both_ways(spawn, binary):
    w = spawn(ECHO_BIN if binary == "echo-c" else BATCH_BIN, health=True, shm=True)
    w.start()
    rows = [3, 1, 4]
    row = 256 * 1024  # bytes a row: 2 MiB in all
    parts = [[("INPUT0", "UINT8", [n, row], bytes([r + 1]) * (n * row))] for r, n in enumerate(rows)]
    batch_id, _ = w.send_batch(parts, flags=SHM_DATA | SHM_OUT, in_region=True)
    type_, got, body, flags = w.recv_flagged()
    assert (type_, got, flags) == (INFER_RESULT, batch_id, SHM_DATA), body[:200]
    meta, rest = split_body(body)
    assert rest == b""
    whole = b"".join(p[0][3] for p in parts)
    if binary == "echo-c":
        assert meta["outputs"] == [{"name": "OUTPUT0", "datatype": "UINT8", "shape": [8, row], "size": len(whole)}]
    else:
        assert [r["outputs"][0]["shape"] for r in meta["results"]] == [[n, row] for n in rows]
    assert os.pread(w.regions[1], len(whole), 0) == whole


@pytest.mark.parametrize("binary", ["echo-c", "infer_batch_c"])
def test_batches_then_shutdown_exits_0(spawn, binary):
    # A graceful exit: a leak checker (CORRAL_ECHO_C_BIN=an ASan build) sees everything a batch allocated.
    w = spawn(ECHO_BIN if binary == "echo-c" else BATCH_BIN)
    w.start(concurrency=2)
    ids = [w.send_batch(batch_parts(), [{"parameters": {"fail": i == 1}}])[0] for i in range(3)]
    ids.append(w.send_batch([[("INPUT0", "FP33", [1], b"\x00" * 4)]] * 2)[0])
    replies = {}
    for _ in ids:
        type_, rid, body = w.recv()
        replies[rid] = type_
    assert [replies[i] for i in ids] == [INFER_RESULT] * 3 + [ERROR]
    w.send(SHUTDOWN)
    assert w.wait() == 0


def _batch(entries, inputs=None, data=None) -> bytes:
    inputs = [{"name": "INPUT0", "datatype": "INT8", "shape": [3], "size": 3}] if inputs is None else inputs
    return tensor_body({"batch": entries, "inputs": inputs}, b"\x01\x02\x03" if data is None else data)


def _entry(rows: int = 1, **kw) -> dict:
    return {"id": 9, "client_id": "", "rows": rows, "parameters": {}, **kw}


@pytest.mark.parametrize("body, why", [
    (tensor_body({"inputs": [{"name": "INPUT0", "datatype": "INT8", "shape": [1], "size": 1}]}, b"\x01"), "missing"),
    (_batch([]), "not a non-empty list"),
    (_batch({"id": 1}), "not a non-empty list"),
    (_batch([_entry(1), 5]), "entry 1 is not an object"),
    (_batch([_entry(1), _entry(1)]), "add up to 2, but input 'INPUT0' has 3"),
    (_batch([_entry(2), _entry(2)]), "add up to 4"),
    (_batch([_entry(1), _entry(2)], [{"name": "INPUT0", "datatype": "INT8", "shape": [3], "size": 3},
                                     {"name": "INPUT1", "datatype": "INT8", "shape": [2], "size": 2}],
            b"\x01\x02\x03\x04\x05"), "input 'INPUT1' has 2"),
    (_batch([_entry(1)], [{"name": "INPUT0", "datatype": "INT8", "shape": [], "size": 1}], b"\x01"), "scalar"),
    (_batch([_entry(3, id="9")]), "'id' is not a positive integer"),
    (_batch([_entry(3, id=0)]), "'id' is not a positive integer"),
    (_batch([_entry(3, id=1.5)]), "'id' is not a positive integer"),
    (_batch([_entry(3, client_id=5)]), "'client_id' is not a string"),
    (_batch([_entry("3")]), "'rows' is not a count"),
    (_batch([_entry(-1), _entry(4)]), "'rows' is not a count"),
    (_batch([_entry(3, parameters=[1])]), "'parameters' is not an object"),
    (_batch([_entry(3, outputs="OUTPUT0")]), "'outputs' is not a list"),
    (_batch([_entry(3, outputs=[1])]), "'outputs' holds a non-string"),
    (_batch([_entry(3)], data=b"\x01\x02"), "input 'INPUT0' has a size beyond the frame's data"),
])
@pytest.mark.parametrize("binary", ["echo-c", "infer_batch_c"])
def test_malformed_batch_is_a_protocol_error(spawn, body, why, binary):
    w = spawn(ECHO_BIN if binary == "echo-c" else BATCH_BIN)
    w.start()
    w.send(BATCH, 5, body)
    assert w.wait() == 2
    err = w.stderr_text()
    assert "protocol error: BATCH 5" in err and why in err, err


def test_batch_with_id_0_is_a_protocol_error(spawn):
    w = spawn()
    w.start()
    w.send(BATCH, 0, _batch([_entry(3)]))
    assert w.wait() == 2
    assert "BATCH with id 0" in w.stderr_text()


# ---------------------------------------------------------------- tts-espeak


def tts_generate(w: Worker, request: dict | bytes, content_type: str = "application/json") -> tuple[int, dict, bytes]:
    body = request if isinstance(request, bytes) else json.dumps(request).encode()
    id_ = w.send_generate(body, content_type)
    type_, rid, reply = w.recv()
    assert rid == id_
    if type_ == ERROR:
        return type_, json.loads(reply), b""
    assert type_ == GENERATE_RESULT
    meta, data = split_body(reply)
    return type_, meta, data


def wav_info(data: bytes) -> tuple[int, int, int, float]:
    with wave.open(io.BytesIO(data)) as wf:
        return wf.getnchannels(), wf.getsampwidth(), wf.getframerate(), wf.getnframes() / wf.getframerate()


@pytest.fixture
def tts(spawn) -> Worker:
    w = spawn(TTS_BIN)
    ready = w.start()
    assert {t["name"] for t in ready["inputs"]} == {"TEXT", "VOICE"}
    assert {(t["name"], t["datatype"]) for t in ready["outputs"]} == {("AUDIO", "INT16"), ("SAMPLE_RATE", "INT32")}
    return w


def test_tts_generate_returns_a_wav(tts):
    type_, meta, data = tts_generate(tts, {"text": "Hello from corral."})
    assert meta == {"content_type": "audio/wav"}
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    channels, width, rate, seconds = wav_info(data)
    assert (channels, width) == (1, 2)
    assert rate == 22050
    assert 0.3 < seconds < 10


def test_tts_duration_grows_with_text(tts):
    short = wav_info(tts_generate(tts, {"text": "Hi."})[2])[3]
    long = wav_info(tts_generate(tts, {"text": "This sentence is a good deal longer than the first one was, "
                                               "and it keeps going for a while."})[2])[3]
    assert long > 2 * short, (short, long)


def test_tts_rate_changes_duration(tts):
    text = "The quick brown fox jumps over the lazy dog."
    slow = wav_info(tts_generate(tts, {"text": text, "rate": 90})[2])[3]
    fast = wav_info(tts_generate(tts, {"text": text, "rate": 400})[2])[3]
    assert slow > 1.8 * fast, (slow, fast)


@pytest.mark.parametrize("voice, text", [("en", "Good morning"), ("en-us", "Good morning"), ("fr", "Bonjour"),
                                         ("de", "Guten Morgen"), ("es", "Buenos d\u00edas"), ("it", "Buongiorno"),
                                         ("pt", "Bom dia")])
def test_tts_voices_across_languages(tts, voice, text):
    type_, meta, data = tts_generate(tts, {"text": text, "voice": voice})
    assert type_ == GENERATE_RESULT, meta
    assert wav_info(data)[3] > 0.2


def test_tts_plain_text_body(tts):
    type_, meta, data = tts_generate(tts, "Plain text works too.".encode(), "text/plain; charset=utf-8")
    assert type_ == GENERATE_RESULT and wav_info(data)[3] > 0.5


@pytest.mark.parametrize("request_body, fragment", [
    ({"text": "hi", "voice": "klingon"}, "unknown voice 'klingon'"),
    ({"text": "hi", "voice": "../../etc/passwd"}, "unknown voice"),
    ({"text": ""}, "text is empty"),
    ({"text": "   \n"}, "text is empty"),
    ({"voice": "en"}, "text is required"),
    ({"text": 5}, "text must be a string"),
    ({"text": "hi", "rate": 79}, "rate must be between 80 and 450"),
    ({"text": "hi", "rate": 451}, "rate must be between 80 and 450"),
    ({"text": "hi", "rate": "fast"}, "rate must be an integer"),
    ({"text": "x" * 20001}, "at most"),
    (b"not json", "expected a JSON object"),
    (b"[1, 2]", "expected a JSON object"),
])
def test_tts_bad_requests_are_400(tts, request_body, fragment):
    type_, err, _ = tts_generate(tts, request_body)
    assert type_ == ERROR and err["status"] == 400 and err["type"] == "BadRequest", err
    assert fragment in err["message"], err
    if "unknown voice 'klingon'" in fragment:
        for voice in ("en", "fr", "de"):
            assert voice in err["message"]
    assert tts_generate(tts, {"text": "still alive"})[0] == GENERATE_RESULT


def test_tts_infer_tensors(tts):
    id_ = tts.send_infer([("TEXT", "BYTES", [1], encode_bytes(["Hello tensors".encode()])),
                          ("VOICE", "BYTES", [1], encode_bytes([b"en-us"]))])
    meta, data = split_body(tts.expect(INFER_RESULT, id_))
    audio, rate = meta["outputs"]
    assert audio["name"] == "AUDIO" and audio["datatype"] == "INT16"
    assert audio["size"] == 2 * audio["shape"][0] and audio["shape"][0] > 22050 * 0.3
    assert rate == {"name": "SAMPLE_RATE", "datatype": "INT32", "shape": [1], "size": 4}
    assert struct.unpack_from("<i", data, audio["size"])[0] == 22050
    samples = struct.unpack_from(f"<{audio['shape'][0]}h", data)
    assert max(abs(s) for s in samples) > 1000  # speech, not silence


def test_tts_infer_rejects_bad_voice_and_missing_text(tts):
    id_ = tts.send_infer([("TEXT", "BYTES", [1], encode_bytes([b"hi"])), ("VOICE", "BYTES", [1], encode_bytes([b"xx-yy"]))])
    assert tts.error(id_)["status"] == 400
    id_ = tts.send_infer([("VOICE", "BYTES", [1], encode_bytes([b"en"]))])
    assert tts.error(id_)["status"] == 400
    id_ = tts.send_infer([("TEXT", "FP32", [1], b"\x00" * 4)])
    assert tts.error(id_)["status"] == 400


def test_tts_ping_while_synthesising(tts):
    id_ = tts.send_generate(json.dumps({"text": "word " * 3000, "rate": 80}).encode())
    time.sleep(0.05)
    t0 = time.monotonic()
    tts.send(PING, 42)
    type_, nonce, _ = tts.recv()
    assert (type_, nonce) == (PONG, 42)
    assert time.monotonic() - t0 < 0.5
    type_, rid, body = tts.recv()
    assert (type_, rid) == (GENERATE_RESULT, id_)


LONG_TEXT = ("Streaming speech starts playing while the rest is still being made. " * 6).strip()


def test_tts_stream_is_a_wav_of_the_same_audio(tts):
    whole_type, meta, whole = tts_generate(tts, {"text": LONG_TEXT})
    assert whole_type == GENERATE_RESULT
    id_ = tts.send_generate(json.dumps({"text": LONG_TEXT}).encode(), stream=True)
    chunks, final, _ = tts.stream(id_)
    assert final == END
    assert chunks[0][0] == {"content_type": "audio/wav"} and all(c[0] is None for c in chunks[1:])
    assert len(chunks) > 10  # piece by piece, not the whole at the end
    data = b"".join(c[1] for c in chunks)
    header = data[:44]
    assert header[:4] == b"RIFF" and header[8:16] == b"WAVEfmt " and header[36:40] == b"data"
    assert struct.unpack_from("<I", header, 4)[0] == 0xFFFFFFFF  # length unknown when it starts
    assert struct.unpack_from("<I", header, 40)[0] == 0xFFFFFFFF
    assert header[16:36] == whole[16:36]  # same format: PCM 16-bit mono, same rate
    # The same speech (espeak's filters keep a little state between calls: a few samples may differ).
    assert abs(len(data) - len(whole)) < len(whole) // 100
    with wave.open(io.BytesIO(data)) as wf:  # a WAV reader takes it as it is
        assert (wf.getnchannels(), wf.getsampwidth(), wf.getframerate()) == wav_info(whole)[:3]
        assert wf.readframes(1 << 30) == data[44:]


def test_tts_l16_is_big_endian_raw_pcm(tts):
    _, _, wav = tts_generate(tts, {"text": "Raw samples"})
    _, meta, raw = tts_generate(tts, {"text": "Raw samples", "format": "l16"})
    rate = struct.unpack_from("<I", wav, 24)[0]
    assert meta == {"content_type": f"audio/L16; rate={rate}; channels=1"}
    little = struct.unpack(f"<{(len(wav) - 44) // 2}h", wav[44:])
    big = struct.unpack(f">{len(raw) // 2}h", raw)
    assert abs(len(big) - len(little)) < len(little) // 100
    # The same speech, read big-endian: the loudest sample is of the same size (little-endian it would not be).
    assert abs(max(map(abs, big)) - max(map(abs, little))) < max(map(abs, little)) // 10
    id_ = tts.send_generate(json.dumps({"text": "Raw samples", "format": "l16"}).encode(), stream=True)
    chunks, final, _ = tts.stream(id_)
    assert final == END and chunks[0][0]["content_type"].startswith("audio/L16")
    streamed = b"".join(c[1] for c in chunks)
    assert abs(len(streamed) - len(raw)) < len(raw) // 100 and streamed[:4] != b"RIFF"  # no header on raw PCM
    assert tts_generate(tts, {"text": "x", "format": "mp3"})[1]["status"] == 400


def test_tts_stream_cancelled_mid_synthesis_ends_at_once(spawn):
    w = spawn(TTS_BIN)
    w.start(stream_window=8192)
    id_ = w.send_generate(json.dumps({"text": LONG_TEXT * 3}).encode(), stream=True)
    first = w.recv()
    assert first[0] == CHUNK  # the header, then audio until the window is full
    w.sock.settimeout(1.0)
    with pytest.raises(socket.timeout):
        while True:
            assert w.recv()[0] == CHUNK
    w.sock.settimeout(TIMEOUT)
    w.control(CANCEL, id_)
    assert w.recv()[:2] == (END, id_)
    assert tts_generate(w, {"text": "Next"})[0] == GENERATE_RESULT


def test_tts_shutdown_exits_0(tts):
    assert tts_generate(tts, {"text": "bye"})[0] == GENERATE_RESULT
    tts.send(SHUTDOWN)
    assert tts.wait() == 0


def test_tts_bad_default_voice_fails_load(spawn):
    w = spawn(TTS_BIN)
    w.hello()
    w.load(parameters={"default_voice": "nope"})
    err = w.error(0)
    assert err["status"] == 500 and "default_voice" in err["message"] and "nope" in err["message"]
    assert w.wait() == 1


def test_tts_missing_espeak_data_fails_load(spawn, tmp_path):
    (tmp_path / "espeak-ng-data").mkdir()
    w = spawn(TTS_BIN)
    w.hello()
    w.load(parameters={"espeak_data": str(tmp_path)})
    err = w.error(0)
    assert err["type"] == "EspeakError", err
    assert w.wait() == 1
