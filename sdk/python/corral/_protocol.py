"""
Framing of the corral worker protocol, version 1 (docs/worker-protocol.md).

A frame is a 16-byte little-endian header (length u32, version u8, type u8,
flags u16, id u64) and `length` bytes of body. Channel reads frames on one
thread and writes them from any thread under a lock, so frames never
interleave. Large frames are written with sendmsg straight from the callers'
buffers: the header, the meta and each tensor's memory, without joining them.
"""

from __future__ import annotations

import json
import mmap
import os
import socket
import struct
import threading
from typing import Any, Dict, Iterable, List, Optional, Tuple

VERSION = 1
MAX_BODY = 1 << 30
HEADER = struct.Struct("<IBBHQ")
U32 = struct.Struct("<I")

HELLO = 0x01
LOAD = 0x02
READY = 0x03
INFER = 0x10
INFER_RESULT = 0x11
GENERATE = 0x12
GENERATE_RESULT = 0x13
CHUNK = 0x14
END = 0x15
CANCEL = 0x16
BATCH = 0x17
ERROR = 0x1F
PING = 0x20
PONG = 0x21
SHUTDOWN = 0x22
SHM = 0x30
CREDIT = 0x18
SEQUENCE_END = 0x19  # the daemon released a sequence (idle); sent only to a worker whose HELLO says "sequence"

# A stream's window (the daemon's PROTO_STREAM_WINDOW, also sent in LOAD as
# stream_window): the most bytes of CHUNK frames, headers included, sent and
# not yet credited back.
STREAM_WINDOW = 1 << 20

# Header flags (docs/worker-protocol.md, "Shared memory").
FLAG_SHM_DATA = 0x0001  # INFER / BATCH / INFER_RESULT: the tensor data is at offset 0 of the sender's region
FLAG_SHM_OUT = 0x0002  # INFER / BATCH: the worker may answer with FLAG_SHM_DATA
# Tensor data at least this large goes through shared memory (the daemon's SHM_MIN_BYTES).
SHM_MIN_BYTES = 1 << 20
_FLAGS_FROM_DAEMON = {INFER: FLAG_SHM_DATA | FLAG_SHM_OUT, BATCH: FLAG_SHM_DATA | FLAG_SHM_OUT}

TYPE_NAMES = {
    HELLO: "HELLO",
    LOAD: "LOAD",
    READY: "READY",
    INFER: "INFER",
    INFER_RESULT: "INFER_RESULT",
    GENERATE: "GENERATE",
    GENERATE_RESULT: "GENERATE_RESULT",
    CHUNK: "CHUNK",
    END: "END",
    CANCEL: "CANCEL",
    BATCH: "BATCH",
    CREDIT: "CREDIT",
    SEQUENCE_END: "SEQUENCE_END",
    ERROR: "ERROR",
    PING: "PING",
    PONG: "PONG",
    SHUTDOWN: "SHUTDOWN",
    SHM: "SHM",
}

# Below this size a frame is joined and sent with one sendall; above it, the
# pieces go to sendmsg as they are, so large tensors are not copied.
_JOIN_LIMIT = 64 * 1024
# The read buffer: frames up to about this size arrive with one recv.
_READ_BUFFER = 64 * 1024
# sendmsg takes at most IOV_MAX (1024 on Linux) buffers per call.
_IOV_BATCH = 512


class ProtocolError(Exception):
    """The daemon sent something version 1 does not allow; the connection is unusable."""


class ConnectionLost(Exception):
    """The socket reached end-of-file or failed: the daemon is gone."""


def type_name(frame_type: int) -> str:
    """Upper-case name of a message type, for messages and logs."""
    return TYPE_NAMES.get(frame_type, f"0x{frame_type:02x}")


# One encoder and one decoder for every frame: json.dumps with options builds
# a new encoder per call, and json.loads on bytes first sniffs the encoding.
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
_DECODER = json.JSONDecoder()


def dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON for protocol metadata."""
    return _ENCODER.encode(obj).encode("utf-8")


def split_body(body: memoryview) -> Tuple[Dict[str, Any], memoryview]:
    """A tensor or free-form body -> (meta object, the data after it)."""
    if len(body) < 4:
        raise ProtocolError(f"body of {len(body)} bytes is too short for its meta length")
    (meta_len,) = U32.unpack_from(body)
    if meta_len > len(body) - 4:
        raise ProtocolError(f"meta length {meta_len} runs past a body of {len(body)} bytes")
    meta = parse_json_object(body[4 : 4 + meta_len])
    return meta, body[4 + meta_len :]


def parse_json_object(raw: Any) -> Dict[str, Any]:
    """Raw JSON bytes that must hold an object (empty means {})."""
    try:
        text = str(raw, "utf-8")
    except UnicodeDecodeError as err:
        raise ProtocolError(f"meta is not UTF-8: {err}") from None
    if not text.strip():
        return {}
    try:
        obj = _DECODER.decode(text)
    except ValueError as err:
        raise ProtocolError(f"meta is not valid JSON: {err}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("meta is not a JSON object")
    return obj


def meta_parts(meta: Dict[str, Any]) -> List[bytes]:
    """The leading parts of a tensor or free-form body: u32 meta length, meta."""
    encoded = dumps(meta)
    return [U32.pack(len(encoded)), encoded]


def byte_view(part: Any) -> memoryview:
    view = part if isinstance(part, memoryview) else memoryview(part)
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return view


class Channel:
    """The worker's end of the protocol socket.

    read_frame is called by one thread only (the reader); send may be called
    from any thread and writes each frame whole.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._write_lock = threading.Lock()
        # Reads go through one buffer, so a small frame costs one recv.
        self._buf = bytearray(_READ_BUFFER)
        self._view = memoryview(self._buf)
        self._start = 0
        self._end = 0

    def _recv(self, buf: memoryview) -> int:
        """One recv into buf: the byte count, 0 at end-of-file. Raises ConnectionLost."""
        while True:
            try:
                return self._sock.recv_into(buf)
            except InterruptedError:
                continue
            except OSError as err:
                raise ConnectionLost(f"read failed: {err}") from None

    def _fill(self, n: int) -> bool:
        """Buffers at least n bytes; False on end-of-file before the first byte of a frame."""
        if self._end - self._start >= n:
            return True
        if self._start:
            self._buf[: self._end - self._start] = self._buf[self._start : self._end]
            self._end -= self._start
            self._start = 0
        while self._end < n:
            got = self._recv(self._view[self._end :])
            if got == 0:
                if self._end == 0:
                    return False
                raise ConnectionLost("end-of-file inside a frame")
            self._end += got
        return True

    def read_frame(self) -> Optional[Tuple[int, int, memoryview, int]]:
        """The next frame as (type, id, body, flags), or None at end-of-file.

        The body is a view of a fresh bytearray, so views into it stay valid
        and writable after the next read.
        """
        if not self._fill(HEADER.size):
            return None
        length, version, frame_type, flags, frame_id = HEADER.unpack_from(self._buf, self._start)
        self._start += HEADER.size
        if version != VERSION:
            raise ProtocolError(f"frame of version {version}, this worker speaks {VERSION}")
        if frame_type not in TYPE_NAMES:
            raise ProtocolError(f"frame of unknown type 0x{frame_type:02x}")
        if flags & ~_FLAGS_FROM_DAEMON.get(frame_type, 0):
            raise ProtocolError(f"{type_name(frame_type)} frame with flags 0x{flags:04x}")
        if length > MAX_BODY:
            raise ProtocolError(f"frame body of {length} bytes exceeds the {MAX_BODY}-byte limit")
        body = memoryview(bytearray(length))
        have = min(length, self._end - self._start)
        if have:
            body[:have] = self._view[self._start : self._start + have]
            self._start += have
        if self._start == self._end:
            self._start = self._end = 0
        while have < length:  # the rest of a large body goes straight into place
            got = self._recv(body[have:])
            if got == 0:
                raise ConnectionLost("end-of-file inside a frame")
            have += got
        return frame_type, frame_id, body, flags

    def send(self, frame_type: int, frame_id: int, parts: Iterable[Any] = (), flags: int = 0) -> None:
        """Writes one frame whose body is the concatenation of parts (bytes-like objects).

        Raises ValueError when the body exceeds the frame limit (nothing is
        written) and ConnectionLost when the socket fails.
        """
        views = [byte_view(part) for part in parts]
        length = sum(view.nbytes for view in views)
        if length > MAX_BODY:
            raise ValueError(f"message of {length} bytes exceeds the {MAX_BODY}-byte frame limit")
        header = HEADER.pack(length, VERSION, frame_type, flags, frame_id)
        try:
            with self._write_lock:
                if length <= _JOIN_LIMIT:
                    self._sock.sendall(header + b"".join(views))
                else:
                    self._sendmsg_all([memoryview(header)] + [view for view in views if view.nbytes])
        except OSError as err:
            raise ConnectionLost(f"write failed: {err}") from None

    def _sendmsg_all(self, views: List[memoryview]) -> None:
        first = 0
        while first < len(views):
            try:
                sent = self._sock.sendmsg(views[first : first + _IOV_BATCH])
            except InterruptedError:
                continue
            while sent:
                size = views[first].nbytes
                if sent >= size:
                    sent -= size
                    first += 1
                else:
                    views[first] = views[first][sent:]
                    sent = 0


class SharedRegion:
    """One of the memfds the daemon shares for large tensors (CORRAL_SHM_FDS),
    mapped read-write and shared. The input region is filled by the daemon, the
    output region by this worker, which grows it as needed."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._map: Optional[mmap.mmap] = None
        self._size = 0

    def view(self, need: int) -> memoryview:
        """A view of the whole region, mapping (again) when fewer than need bytes are mapped."""
        if self._map is None or self._size < need:
            size = os.fstat(self.fd).st_size
            if size < need or size == 0:
                raise ProtocolError(f"shared-memory region of {size} bytes is shorter than the {need} bytes it should hold")
            # The old map stays valid while arrays made from it are alive.
            self._map = mmap.mmap(self.fd, size)
            self._size = size
        return memoryview(self._map)

    def grow(self, need: int) -> memoryview:
        """A view of at least need bytes, growing the file (to a power of two) first when shorter."""
        size = os.fstat(self.fd).st_size
        if size < need:
            os.ftruncate(self.fd, max(SHM_MIN_BYTES, 1 << (need - 1).bit_length()))
        return self.view(need)


def open_shared_regions(raw: Optional[str]) -> Optional[Tuple[SharedRegion, SharedRegion]]:
    """CORRAL_SHM_FDS ("IN,OUT") -> the two regions, or None when absent or unusable."""
    if not raw:
        return None
    try:
        fds = [int(part) for part in raw.split(",")]
        if len(fds) != 2:
            return None
        for fd in fds:
            os.fstat(fd)
            os.set_inheritable(fd, False)  # not for the model's own children
    except (ValueError, OSError):
        return None
    return SharedRegion(fds[0]), SharedRegion(fds[1])
