"""
The worker loop: runs one model in this process for the corral daemon.

Threads:
  - main: sends HELLO, waits for LOAD, runs Model.load, sends READY, then
    waits for SHUTDOWN and runs the graceful stop (drain, unload, exit 0);
  - health: when the daemon gave a health socket (CORRAL_HEALTH_FD), answers
    every PING on it and exits the process when it closes;
  - reader: reads every frame of the protocol socket, answers PING there
    (a daemon that gives no health socket sends it there), checks the frame
    (a malformed BATCH list is a protocol error here, before any model
    code) and hands requests to the executor, or in inline mode serves
    them itself;
  - executor: `concurrency` threads (from LOAD) that decode requests, run
    model code and write the replies.

Inline mode: with a health socket and a concurrency of 1 there is no
executor; the reader runs each request. A busy model cannot delay PONG (the
health thread answers it), and a request costs no hand-off between threads:
no GIL transfer and, on a virtual machine, no cross-CPU wake-up of tens of
microseconds.

Batches: a BATCH is one request in flight under its own id (CANCEL names
it), answered by exactly one frame. A model without infer_batch gets it
whole in infer; with infer_batch, one Request per entry whose inputs are
views of its rows, and the answer is the per-request "results" form.

What must stay true: model code runs on the reader thread only in inline
mode; a frame is written whole under Channel's lock; the process exits as
soon as the daemon is gone (end-of-file or a socket error), without waiting
for model code.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Mapping, NoReturn, Optional, Sequence, Set, Tuple, Type, Union

from . import _protocol as proto
from ._model import (
    BINARY_CONTENT_TYPE,
    NDJSON_CONTENT_TYPE,
    TEXT_CONTENT_TYPE,
    BadRequest,
    Context,
    Model,
    Request,
    Response,
    Sequence as SequenceInfo,
    Stream,
    dumps_json,
    iter_chunks,
    overrides,
)
from ._session import Session, session_from_meta, sessions_list, with_update
from ._tensor import check_inputs, decode_inputs, decode_tensor, encode_output, split_rows

SDK_VERSION = "0.1.0"

# Exit statuses, so the daemon's log of a worker exit says why; the same as
# the C SDK's (CORRAL_EXIT_* in sdk/c/corral_worker.h).
EXIT_OK = 0  # SHUTDOWN handled, or end-of-file: the daemon is gone
EXIT_FAILURE = 1  # load raised (ERROR id 0 was sent), not started by corral, or an SDK bug
EXIT_PROTOCOL = 2  # the daemon broke the protocol, or the socket failed


def _flush_stdio() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # the log pipe may be gone with the daemon
            pass


def _exit_now(status: int) -> NoReturn:
    """Leaves at once: threads still inside model code are not waited for."""
    _flush_stdio()
    os._exit(status)


def _log(message: str) -> None:
    try:
        print(f"corral: {message}", file=sys.stderr, flush=True)
    except Exception:
        pass


def error_body(err: BaseException) -> Dict[str, Any]:
    """The ERROR message for an exception raised by model code."""
    if isinstance(err, BadRequest):
        return {"type": "BadRequest", "message": str(err), "status": 400}
    kind = type(err).__name__
    text = str(err)
    return {"type": kind, "message": f"{kind}: {text}" if text else kind, "status": 500}


def _failed(err: BaseException) -> Dict[str, Any]:
    """One request's entry in a "results" answer for an error; a 500 leaves its traceback in the log."""
    body = error_body(err)
    if body["status"] == 500:
        traceback.print_exception(type(err), err, err.__traceback__)
    return {"error": body}


def _sequence(meta: Any) -> Optional[SequenceInfo]:
    """An INFER meta's "sequence" ({"id", "start", "end"}) as request.sequence; None when absent."""
    if meta is None:
        return None
    if not isinstance(meta, dict) or not isinstance(meta.get("id"), (int, str)) or isinstance(meta.get("id"), bool):
        raise proto.ProtocolError(f"INFER with a malformed sequence {meta!r:.200}")
    return SequenceInfo(meta["id"], meta.get("start") is True, meta.get("end") is True)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


class _Entry:
    """One request of a BATCH, from its meta's ``batch`` list (checked on the reader thread)."""

    __slots__ = ("id", "client_id", "rows", "parameters", "outputs", "session")

    def __init__(self, id: int, client_id: str, rows: int, parameters: Dict[str, Any], outputs: Optional[List[str]],
                 session: Optional[Session] = None) -> None:
        self.id = id
        self.client_id = client_id
        self.rows = rows
        self.parameters = parameters
        self.outputs = outputs
        self.session = session


def parse_batch(meta: Dict[str, Any], batch_id: int) -> List[_Entry]:
    """A BATCH meta's ``batch`` list -> its entries; raises ProtocolError when it is not as the protocol says.

    The daemon built the list, so anything wrong in it (missing, empty,
    ill-typed, a request id twice, rows that do not add up to the inputs'
    dimension 0) is the daemon's fault, not a client's.
    """
    raw = meta.get("batch")
    if not isinstance(raw, list) or not raw:
        raise proto.ProtocolError(f"BATCH {batch_id} has no 'batch' list of requests")
    entries: List[_Entry] = []
    seen: Set[int] = set()
    for index, item in enumerate(raw):
        where = f"BATCH {batch_id} request {index}"
        if not isinstance(item, dict):
            raise proto.ProtocolError(f"{where} is not an object")
        request_id = item.get("id")
        if not _is_count(request_id) or not 0 < request_id < 1 << 64:
            raise proto.ProtocolError(f"{where}: 'id' must be a positive integer, not {request_id!r}")
        if request_id == batch_id:
            raise proto.ProtocolError(f"{where} has the batch's own id")
        if request_id in seen:
            raise proto.ProtocolError(f"{where} repeats the id {request_id}")
        seen.add(request_id)
        rows = item.get("rows")
        if not _is_count(rows):
            raise proto.ProtocolError(f"{where}: 'rows' must be a non-negative integer, not {rows!r}")
        client_id = item.get("client_id", "")
        if not isinstance(client_id, str):
            raise proto.ProtocolError(f"{where}: 'client_id' must be a string")
        parameters = item.get("parameters", {})
        if not isinstance(parameters, dict):
            raise proto.ProtocolError(f"{where}: 'parameters' must be an object")
        outputs = item.get("outputs")
        if outputs is not None and (not isinstance(outputs, list) or not all(isinstance(n, str) for n in outputs)):
            raise proto.ProtocolError(f"{where}: 'outputs' must be a list of names")
        entries.append(_Entry(request_id, client_id, rows, parameters, outputs or None,
                              session_from_meta(item.get("session"), where)))
    total = sum(entry.rows for entry in entries)
    specs = meta.get("inputs")
    for spec in specs if isinstance(specs, list) else ():
        shape = spec.get("shape") if isinstance(spec, dict) else None
        if isinstance(shape, list) and (not shape or shape[0] != total or isinstance(shape[0], bool)):
            name = spec.get("name")
            raise proto.ProtocolError(f"BATCH {batch_id} input {name!r} of shape {shape}: its requests' rows add up to {total}")
    return entries


def _union_outputs(batch: List[_Entry]) -> Optional[List[str]]:
    """Every output some request of the batch asked for, in order of first mention; None when one asked for all."""
    names: Dict[str, None] = {}
    for entry in batch:
        if entry.outputs is None:
            return None
        names.update(dict.fromkeys(entry.outputs))
    return list(names)


def _encode_outputs(result: Any, requested: Optional[List[str]], method: str = "infer") -> Tuple[List[Dict[str, Any]], List[Any]]:
    """What infer returned -> (the outputs' specs, their data), the requested ones only (all when None)."""
    if not isinstance(result, Mapping):
        raise TypeError(f"{method} must return a dict of output name to tensor, not {type(result).__name__}")
    if requested:
        missing = [name for name in requested if name not in result]
        if missing:
            raise BadRequest(f"requested output {missing[0]!r} is not produced by the model (it produces {sorted(map(str, result))})")
        selected = [(name, result[name]) for name in requested]
    else:
        selected = list(result.items())
    specs: List[Dict[str, Any]] = []
    buffers: List[Any] = []
    for name, value in selected:
        try:
            datatype, shape, raw = encode_output(value)
        except (TypeError, ValueError, OverflowError) as err:
            raise type(err)(f"output {name!r}: {err}") from err
        raw_view = proto.byte_view(raw)
        specs.append({"name": str(name), "datatype": datatype, "shape": shape, "size": raw_view.nbytes})
        buffers.append(raw_view)
    return specs, buffers


class _Flag:
    """A request's cancellation: set once by the thread that reads CANCEL, read by the model's.

    A plain attribute, not a threading.Event: every request has one, most are
    never cancelled, and nothing waits on it (a waiting producer waits on its
    stream's condition, which CANCEL notifies).
    """

    __slots__ = ("_set",)

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set


class _Active:
    """A request in flight: its cancellation, and for a stream the bytes not yet credited back.

    The condition exists only once someone needs it (a stream's flow
    control, a CANCEL or CREDIT): a plain request costs no lock.
    """

    __slots__ = ("cancel", "_cond", "unacked")
    _making = threading.Lock()

    def __init__(self) -> None:
        self.cancel = _Flag()
        self._cond: Optional[threading.Condition] = None
        self.unacked = 0

    @property
    def cond(self) -> threading.Condition:
        cond = self._cond
        if cond is None:
            with _Active._making:
                if self._cond is None:
                    self._cond = threading.Condition()
                cond = self._cond
        return cond


class Worker:
    """One model served over one protocol socket; see the module comment for threads."""

    def __init__(self, model: Union[Type[Model], Model], sock: socket.socket,
                 health: Optional[socket.socket] = None) -> None:
        self._model_factory = model
        self._channel = proto.Channel(sock)
        self._health = proto.Channel(health) if health is not None else None
        self._health_fd = health.fileno() if health is not None else None
        self._inline = False
        self._shm = proto.open_shared_regions(os.environ.get("CORRAL_SHM_FDS"))
        self._model: Any = None
        self._ctx: Optional[Context] = None
        self._executor: Optional[ThreadPoolExecutor] = None
        self._loaded = threading.Event()
        self._control_lock = threading.Lock()
        self._control_ready = threading.Condition(self._control_lock)
        self._load_meta: Optional[Dict[str, Any]] = None
        self._shutdown_requested = False
        self._inflight: Dict[int, _Active] = {}
        self._inflight_lock = threading.Lock()
        self._highest_id = 0  # the highest request id seen: a CANCEL above it is for a request not read yet
        self._early_cancels: Set[int] = set()
        self._window = proto.STREAM_WINDOW

    # ------------------------------------------------------------ writing

    def _send(self, frame_type: int, frame_id: int, parts: Sequence[Any] = (), flags: int = 0) -> None:
        try:
            self._channel.send(frame_type, frame_id, parts, flags)
        except proto.ConnectionLost as err:
            if self._shutdown_requested:
                return  # the daemon may close early after SHUTDOWN; finish unloading
            _log(f"daemon connection lost ({err}); exiting")
            _exit_now(EXIT_PROTOCOL)

    def _send_json(self, frame_type: int, frame_id: int, obj: Dict[str, Any]) -> None:
        self._send(frame_type, frame_id, [proto.dumps(obj)])

    # ------------------------------------------------------------ main thread

    def run(self) -> NoReturn:
        """Serves until SHUTDOWN or the daemon goes away; never returns."""
        try:
            self._run()
        except BaseException:  # a bug here must not leave a half-alive worker
            traceback.print_exc()
            _exit_now(EXIT_FAILURE)

    def _run(self) -> NoReturn:
        hello: Dict[str, Any] = {"protocol": proto.VERSION, "sdk": "python", "sdk_version": SDK_VERSION, "pid": os.getpid()}
        if self._health is not None:
            hello["health_fd"] = self._health_fd
        if self._shm is not None:
            hello["shm"] = True
        hello["stream"] = True  # streams GENERATE answers, obeys CANCEL and CREDIT
        hello["batch"] = True  # takes BATCH; the daemon sends one only to a model with batching
        hello["sequence"] = True  # takes SEQUENCE_END, handed to Model.end_sequence
        self._send_json(proto.HELLO, 0, hello)
        if self._health is not None:
            threading.Thread(target=self._health_loop, name="corral-health", daemon=True).start()
        reader = threading.Thread(target=self._read_loop, name="corral-reader", daemon=True)
        reader.start()
        with self._control_lock:
            while self._load_meta is None and not self._shutdown_requested:
                self._control_ready.wait()
            load_meta = self._load_meta
        if load_meta is not None:
            self._load(load_meta)
        with self._control_lock:
            while not self._shutdown_requested:
                self._control_ready.wait()
        self._stop()

    def _load(self, meta: Dict[str, Any]) -> None:
        env = os.environ
        parameters = meta.get("parameters")
        try:
            self._ctx = Context(
                name=str(meta.get("model") or env.get("CORRAL_MODEL", "")),
                model_dir=str(meta.get("model_dir") or env.get("CORRAL_MODEL_DIR") or os.getcwd()),
                parameters=parameters if isinstance(parameters, dict) else {},
                instance_id=int(meta.get("instance_id", env.get("CORRAL_INSTANCE", 0)) or 0),
                device=str(meta.get("device") or "cpu"),
                concurrency=self._concurrency(meta),
                samples_dir=env.get("CORRAL_SAMPLES_DIR") or None,
                external_models_dir=env.get("CORRAL_EXTERNAL_MODELS_DIR") or None,
                variant_dir=str(meta.get("variant_dir") or env.get("CORRAL_VARIANT_DIR") or "") or None,
            )
            factory = self._model_factory
            model = factory() if isinstance(factory, type) else factory
            model.load(self._ctx)
            ready: Dict[str, Any] = {}
            for key in ("inputs", "outputs"):
                value = getattr(model, key, None)
                if isinstance(value, list):
                    ready[key] = value
            ready_body = proto.dumps(ready)
        except BaseException as err:  # load failures of every kind become ERROR id 0
            traceback.print_exc()
            body = error_body(err)
            if body["status"] == 400:
                body["status"] = 500  # a load failure is never the client's fault
            self._send_json(proto.ERROR, 0, body)
            _exit_now(EXIT_FAILURE)
        self._model = model
        self._loaded.set()
        self._send(proto.READY, 0, [ready_body])

    def _stop(self) -> NoReturn:
        if self._executor is not None:
            self._executor.shutdown(wait=True)  # let requests in flight finish and reply
        if self._model is not None:
            try:
                self._model.unload()
            except BaseException:
                traceback.print_exc()
        _exit_now(EXIT_OK)

    @staticmethod
    def _concurrency(meta: Dict[str, Any]) -> int:
        value = meta.get("concurrency", 1)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            return 1
        return value

    # ------------------------------------------------------------ health thread

    def _health_loop(self) -> None:
        self._run_socket_loop(self._answer_pings, " on the health socket")

    def _answer_pings(self) -> None:
        health = self._health
        assert health is not None
        while True:
            frame = health.read_frame()
            if frame is None:
                if self._shutdown_requested:
                    return
                _exit_now(EXIT_OK)  # end-of-file: the daemon is gone
            frame_type, frame_id, body, _ = frame
            if frame_type in (proto.CANCEL, proto.CREDIT):
                self._control(frame_type, frame_id, body)
                continue
            if frame_type != proto.PING or len(body):
                raise proto.ProtocolError(f"{proto.type_name(frame_type)} frame ({len(body)}-byte body) on the health socket")
            health.send(proto.PONG, frame_id)

    def _run_socket_loop(self, loop: Any, where: str = "") -> None:
        """Runs a thread's reading loop; whatever ends it abnormally ends the process."""
        try:
            loop()
        except proto.ProtocolError as err:
            _log(f"protocol error: {err}; closing")
            _exit_now(EXIT_PROTOCOL)
        except proto.ConnectionLost as err:
            if not self._shutdown_requested:
                _log(f"daemon connection lost{where} ({err}); exiting")
                _exit_now(EXIT_PROTOCOL)
        except BaseException:
            traceback.print_exc()
            _exit_now(EXIT_FAILURE)

    # ------------------------------------------------------------ reader thread

    def _read_loop(self) -> None:
        self._run_socket_loop(self._read_frames)

    def _read_frames(self) -> None:
        while True:
            frame = self._channel.read_frame()
            if frame is None:
                if self._shutdown_requested:
                    return  # the main thread is finishing the graceful stop
                _exit_now(EXIT_OK)  # end-of-file: the daemon is gone
            frame_type, frame_id, body, flags = frame
            if frame_type in (proto.PING, proto.SHUTDOWN) and len(body):
                raise proto.ProtocolError(f"{proto.type_name(frame_type)} with a {len(body)}-byte body")
            if frame_type == proto.PING:
                self._send(proto.PONG, frame_id)
            elif frame_type in (proto.INFER, proto.BATCH, proto.GENERATE):
                self._accept_request(frame_type, frame_id, body, flags)
            elif frame_type in (proto.CANCEL, proto.CREDIT):
                self._control(frame_type, frame_id, body)
            elif frame_type == proto.SEQUENCE_END:
                self._accept_sequence_end(frame_id, body)
            elif frame_type == proto.LOAD:
                self._accept_load(body)
            elif frame_type == proto.SHUTDOWN:
                with self._control_lock:
                    self._shutdown_requested = True
                    self._control_ready.notify_all()
            else:
                raise proto.ProtocolError(f"unexpected {proto.type_name(frame_type)} frame from the daemon")

    def _control(self, frame_type: int, frame_id: int, body: memoryview) -> None:
        """CANCEL (empty body) or CREDIT (u32 bytes) for a request; either may race with its end, and is then moot."""
        if frame_id == 0 or len(body) != (4 if frame_type == proto.CREDIT else 0):
            raise proto.ProtocolError(f"{proto.type_name(frame_type)} with id {frame_id} and a {len(body)}-byte body")
        with self._inflight_lock:
            active = self._inflight.get(frame_id)
            if active is None:
                # CANCEL may overtake its request (it comes on the health socket): remember it until the request is read.
                if frame_type == proto.CANCEL and frame_id > self._highest_id:
                    self._early_cancels.add(frame_id)
                return
        with active.cond:
            if frame_type == proto.CANCEL:
                active.cancel.set()
            else:
                active.unacked = max(0, active.unacked - proto.U32.unpack_from(body)[0])
            active.cond.notify_all()

    def _accept_sequence_end(self, frame_id: int, body: memoryview) -> None:
        """SEQUENCE_END: {"sequence_id", "reason"}; after the sequence's last answer, so never beside its requests."""
        meta = proto.parse_json_object(body)
        sequence_id, reason = meta.get("sequence_id"), meta.get("reason")
        if frame_id != 0 or not isinstance(sequence_id, (int, str)) or isinstance(sequence_id, bool) \
                or not isinstance(reason, str):
            raise proto.ProtocolError("SEQUENCE_END needs id 0 and a body {\"sequence_id\": int or str, \"reason\": str}")
        if self._inline or self._executor is None:
            self._end_sequence(sequence_id, reason)
        else:
            self._executor.submit(self._end_sequence, sequence_id, reason)

    def _end_sequence(self, sequence_id: Any, reason: str) -> None:
        self._loaded.wait()
        try:
            self._model.end_sequence(sequence_id, reason)
        except Exception:  # the model's own fault: logged, the worker goes on
            traceback.print_exc()

    def _accept_load(self, body: memoryview) -> None:
        meta = proto.parse_json_object(body)
        with self._control_lock:
            if self._load_meta is not None:
                raise proto.ProtocolError("second LOAD")
            if self._shutdown_requested:
                return
            concurrency = self._concurrency(meta)
            self._inline = self._health is not None and concurrency == 1
            if not self._inline:
                self._executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="corral-request")
            window = meta.get("stream_window")
            if isinstance(window, int) and not isinstance(window, bool) and window > 0:
                self._window = window
            self._load_meta = meta
            self._control_ready.notify_all()

    def _accept_request(self, frame_type: int, frame_id: int, body: memoryview, flags: int = 0) -> None:
        name = proto.type_name(frame_type)
        if frame_id == 0:
            raise proto.ProtocolError(f"{name} with id 0")
        if self._load_meta is None:
            raise proto.ProtocolError(f"{name} before LOAD")
        meta, data = proto.split_body(body)
        batch = parse_batch(meta, frame_id) if frame_type == proto.BATCH else None
        # Checked here, on the reader, as the batch is: a malformed one is the daemon's fault (a protocol error).
        # The meta keeps the Session itself, for the request built where the model runs.
        meta["session"] = session_from_meta(meta.get("session"), f"{name} {frame_id}")
        if frame_type != proto.BATCH:
            _sequence(meta.get("sequence"))  # a malformed one is the daemon's protocol error, found here
        if flags & proto.FLAG_SHM_DATA:
            data = self._shared_input(meta, data, name)
        active = _Active()
        with self._inflight_lock:
            if frame_id in self._inflight:
                raise proto.ProtocolError(f"{name} reuses id {frame_id} of a request in flight")
            self._inflight[frame_id] = active
            # A batch's requests' ids count as seen: a CANCEL naming one of them is moot, not early.
            self._highest_id = max(self._highest_id, frame_id, *(entry.id for entry in batch or ()))
            if frame_id in self._early_cancels:
                self._early_cancels.discard(frame_id)
                active.cancel.set()
        if self._shutdown_requested:
            self._finish(frame_id, proto.ERROR, [proto.dumps({"type": "ShuttingDown", "message": "the instance is shutting down", "status": 503})])
            return
        shm_out = bool(flags & proto.FLAG_SHM_OUT) and self._shm is not None
        if self._inline:
            self._serve(frame_type, frame_id, meta, data, shm_out, active, batch)
        else:
            assert self._executor is not None
            self._executor.submit(self._serve, frame_type, frame_id, meta, data, shm_out, active, batch)

    def _shared_input(self, meta: Dict[str, Any], rest: memoryview, name: str = "INFER") -> memoryview:
        """The data of an INFER or BATCH whose tensors the daemon put in the input region."""
        if self._shm is None:
            raise proto.ProtocolError(f"{name} with its data in shared memory, which this worker was not given")
        if len(rest):
            raise proto.ProtocolError(f"{name} with its data in shared memory carries {len(rest)} bytes of data too")
        specs = meta.get("inputs")
        total = 0
        for spec in specs if isinstance(specs, list) else ():
            size = spec.get("size") if isinstance(spec, dict) else None
            if isinstance(size, int) and not isinstance(size, bool) and size > 0:
                total += size
        # Valid until the reply: the daemon reuses the region for a later request.
        return self._shm[0].view(total)[:total]

    # ------------------------------------------------------------ executor threads

    def _finish(self, frame_id: int, frame_type: int, parts: List[Any], flags: int = 0) -> None:
        with self._inflight_lock:
            self._inflight.pop(frame_id, None)
        self._send(frame_type, frame_id, parts, flags)

    def _serve(self, frame_type: int, frame_id: int, meta: Dict[str, Any], data: memoryview,
               shm_out: bool = False, active: Optional[_Active] = None, batch: Optional[List[_Entry]] = None) -> None:
        self._loaded.wait()
        active = active or _Active()
        flags = 0
        if active.cancel.is_set() and frame_type != proto.BATCH:
            # Cancelled while it waited here (a pipelined request's deadline, or its client left): never run.
            # (A batch is never pipelined; one cancelled early still gets its per-request answer.)
            self._finish(frame_id, proto.ERROR, [proto.dumps({"type": "Cancelled", "message": "cancelled before it started", "status": 503})])
            return
        try:
            if frame_type == proto.INFER:
                reply_type, parts = proto.INFER_RESULT, self._infer(meta, data, active)
            elif frame_type == proto.BATCH:
                assert batch is not None
                reply_type, parts = proto.INFER_RESULT, self._infer_batch(meta, data, batch, active)
            else:
                request, result = self._call_generate(meta, data, active)
                chunks = result if isinstance(result, Stream) else iter_chunks(result)
                if chunks is not None and meta.get("stream") is True:
                    self._stream(frame_id, chunks, active, request.session)
                    return
                content_type, body = _generate_result(result, request.session)
                reply_meta = with_update({"content_type": content_type}, request.session)
                reply_type, parts = proto.GENERATE_RESULT, proto.meta_parts(reply_meta) + [body]
            length = sum(memoryview(part).nbytes for part in parts)
            if length > proto.MAX_BODY:  # checked before shared memory, which has the same limit
                raise ValueError(f"result of {length} bytes exceeds the {proto.MAX_BODY}-byte frame limit")
            if shm_out:
                parts, flags = self._shared_output(parts)
        except BaseException as err:
            body = error_body(err)
            if body["status"] == 500:
                traceback.print_exc()
            reply_type, parts, flags = proto.ERROR, [proto.dumps(body)], 0
        self._finish(frame_id, reply_type, parts, flags)

    def _shared_output(self, parts: List[Any]) -> Tuple[List[Any], int]:
        """Moves a large result's tensor data (parts after the meta) into the output region."""
        views = [proto.byte_view(part) for part in parts[2:]]
        total = sum(view.nbytes for view in views)
        if total < proto.SHM_MIN_BYTES:
            return parts, 0
        assert self._shm is not None
        region = self._shm[1].grow(total)
        offset = 0
        for view in views:
            region[offset : offset + view.nbytes] = view
            offset += view.nbytes
        return parts[:2], proto.FLAG_SHM_DATA

    def _not_implemented(self, method: str) -> BadRequest:
        name = self._ctx.name if self._ctx is not None else "?"
        return BadRequest(f"model {name} does not implement {method}")

    def _stream(self, frame_id: int, chunks: Any, active: _Active, session: Optional[Session] = None) -> None:
        """Sends a generator's chunks as CHUNK frames as it yields them, then END (or ERROR if it raises).

        A chunk waits while the stream's window is full (the client is
        behind); once the request is cancelled the generator is closed at
        its next yield and END is sent at once.
        """
        kind: Optional[str] = None
        default_type = chunks.content_type if isinstance(chunks, Stream) else None
        try:
            for chunk in chunks:
                if active.cancel.is_set():
                    break
                if chunk is None:
                    continue
                chunk_kind, payload, content_type = _encode_chunk(chunk, default_type)
                if kind is None:
                    kind = chunk_kind
                    first = {"events": True} if kind == "events" else {"content_type": content_type}
                    parts = proto.meta_parts(first) + [payload]
                elif chunk_kind != kind:
                    raise TypeError("generate yielded chunks of mixed kinds (bytes or str, and dict)")
                else:
                    parts = [proto.U32.pack(0), payload]
                cost = proto.HEADER.size + sum(memoryview(part).nbytes for part in parts)
                if not self._take_window(active, cost):
                    break  # cancelled while the client was behind
                self._send(proto.CHUNK, frame_id, parts)
        except BaseException as err:
            _close(chunks)
            body = error_body(err)
            if body["status"] == 500:
                traceback.print_exc()
            self._finish(frame_id, proto.ERROR, [proto.dumps(body)])
            return
        _close(chunks)  # GeneratorExit at the model's yield, when it stopped early
        # An update recorded during the stream travels with END (a meta alone); a cancelled stream's is dropped
        # by the daemon, which stores only for a client that got the whole stream.
        update = with_update({}, session)
        self._finish(frame_id, proto.END, proto.meta_parts(update) if update else [])

    def _take_window(self, active: _Active, cost: int) -> bool:
        """Waits until cost more bytes fit the stream's window (a chunk alone always fits); False when cancelled."""
        with active.cond:
            while active.unacked and active.unacked + cost > self._window and not active.cancel.is_set():
                active.cond.wait()
            if active.cancel.is_set():
                return False
            active.unacked += cost
            return True

    def _infer(self, meta: Dict[str, Any], data: memoryview, active: Optional[_Active] = None) -> List[Any]:
        requested = meta.get("outputs")
        if requested is not None and (not isinstance(requested, list) or not all(isinstance(n, str) for n in requested)):
            raise BadRequest("'outputs' must be a list of names")
        parameters = meta.get("parameters")
        request = Request(
            id=str(meta.get("id") or ""),
            inputs=decode_inputs(meta.get("inputs"), data),
            parameters=parameters if isinstance(parameters, dict) else {},
            outputs=requested or None,
            session=meta.get("session"),
        )
        request._cancel = active.cancel if active is not None else None
        request.sequence = _sequence(meta.get("sequence"))
        model = self._model
        method = "infer"
        if overrides(model, "infer"):
            result = model.infer(request)
        elif overrides(model, "infer_batch"):
            method = "infer_batch"
            results = model.infer_batch([request])
            if not isinstance(results, (list, tuple)) or len(results) != 1:
                raise TypeError("infer_batch must return a list with one result per request")
            result = results[0]
            if isinstance(result, BaseException):
                raise result
        else:
            raise self._not_implemented("infer")
        specs, buffers = _encode_outputs(result, request.outputs, method)
        return proto.meta_parts(with_update({"outputs": specs}, request.session)) + buffers

    def _infer_batch(self, meta: Dict[str, Any], data: memoryview, batch: List[_Entry], active: _Active) -> List[Any]:
        """A BATCH -> the parts of its one INFER_RESULT; raises for an ERROR that fails every request of it."""
        model = self._model
        if overrides(model, "infer_batch"):
            return self._serve_per_request(meta, data, batch, active)
        if not overrides(model, "infer"):
            raise self._not_implemented("infer")
        union = _union_outputs(batch)
        request = Request(
            id=batch[0].client_id,
            inputs=decode_inputs(meta.get("inputs"), data),
            parameters=batch[0].parameters,
            outputs=union,
            batch_sizes=[entry.rows for entry in batch],
            batch_ids=[entry.client_id for entry in batch],
            batch_parameters=[entry.parameters for entry in batch],
            session=batch[0].session,
            batch_sessions=[entry.session for entry in batch],
        )
        request._cancel = active.cancel
        result = model.infer(request)
        if not isinstance(result, Mapping) or all(name in result for entry in batch for name in entry.outputs or ()):
            specs, buffers = _encode_outputs(result, union)
            reply: Dict[str, Any] = {"outputs": specs}
            updates = sessions_list(request.batch_sessions)
            if updates is not None:
                reply["sessions"] = updates
            return proto.meta_parts(reply) + buffers  # the daemon splits the rows
        # Some request asked for an output the model does not produce: that
        # request alone fails (400, as it would alone), so the rows are split here.
        return self._split_result(result, batch)

    def _serve_per_request(self, meta: Dict[str, Any], data: memoryview, batch: List[_Entry], active: _Active) -> List[Any]:
        """infer_batch over one Request per entry, its inputs views of its own rows; the "results" answer."""
        rows = [entry.rows for entry in batch]
        inputs = check_inputs(meta.get("inputs"), data)  # parse_batch made sure dimension 0 is sum(rows)
        pieces = [split_rows(name, datatype, shape, raw, rows) for name, datatype, shape, raw in inputs]
        requests: List[Request] = []
        for index, entry in enumerate(batch):
            request = Request(
                id=entry.client_id,
                inputs={name: decode_tensor(name, datatype, [entry.rows] + shape[1:], tensor_pieces[index])
                        for (name, datatype, shape, _), tensor_pieces in zip(inputs, pieces)},
                parameters=entry.parameters,
                outputs=entry.outputs,
                batch_sizes=[entry.rows],
                session=entry.session,
            )
            request._cancel = active.cancel
            requests.append(request)
        results = self._model.infer_batch(requests)
        if not isinstance(results, (list, tuple)):
            raise TypeError(f"infer_batch must return a list with one result per request, not {type(results).__name__}")
        if len(results) != len(requests):
            raise TypeError(f"infer_batch returned {len(results)} results for a batch of {len(requests)} requests")
        entries: List[Dict[str, Any]] = []
        buffers: List[Any] = []
        for request, result in zip(requests, results):
            if isinstance(result, BaseException):  # fails this request only
                entries.append(_failed(result))
                continue
            try:
                specs, data_parts = _encode_outputs(result, request.outputs, "infer_batch")
            except Exception as err:
                entries.append(_failed(err))
                continue
            entries.append(with_update({"outputs": specs}, request.session))
            buffers.extend(data_parts)
        return proto.meta_parts({"results": entries}) + buffers

    def _split_result(self, result: Mapping[str, Any], batch: List[_Entry]) -> List[Any]:
        """infer's outputs for a whole batch -> the "results" answer, each request its own rows of what it asked for."""
        rows = [entry.rows for entry in batch]
        total = sum(rows)
        encoded: Dict[str, Any] = {}  # name -> (datatype, shape, a piece per request), or an exception

        def pieces_of(name: str) -> Tuple[str, List[int], List[memoryview]]:
            if name not in encoded:
                try:
                    specs, buffers = _encode_outputs(result, [name])
                    datatype, shape = specs[0]["datatype"], specs[0]["shape"]
                    if not shape or shape[0] != total:
                        raise ValueError(f"output {name!r} of shape {shape} does not have the batch's {total} rows")
                    encoded[name] = (datatype, shape, split_rows(name, datatype, shape, buffers[0], rows))
                except Exception as err:
                    encoded[name] = err
            found = encoded[name]
            if isinstance(found, Exception):
                raise found
            return found

        entries: List[Dict[str, Any]] = []
        buffers: List[Any] = []
        for index, entry in enumerate(batch):
            try:
                names = entry.outputs if entry.outputs else [str(name) for name in result]
                missing = [name for name in names if name not in result]
                if missing:
                    raise BadRequest(f"requested output {missing[0]!r} is not produced by the model (it produces {sorted(map(str, result))})")
                specs, data_parts = [], []
                for name in names:
                    datatype, shape, pieces = pieces_of(name)
                    piece = pieces[index]
                    specs.append({"name": name, "datatype": datatype, "shape": [entry.rows] + shape[1:], "size": piece.nbytes})
                    data_parts.append(piece)
            except Exception as err:
                entries.append(_failed(err))
                continue
            entries.append(with_update({"outputs": specs}, entry.session))
            buffers.extend(data_parts)
        return proto.meta_parts({"results": entries}) + buffers

    def _call_generate(self, meta: Dict[str, Any], data: memoryview, active: _Active) -> Any:
        parameters = meta.get("parameters")
        content_type = meta.get("content_type")
        request = Request(
            id=str(meta.get("id") or ""),
            parameters=parameters if isinstance(parameters, dict) else {},
            body=bytes(data),
            content_type=str(content_type) if content_type else None,
            session=meta.get("session"),
        )
        request._cancel = active.cancel
        request.sequence = _sequence(meta.get("sequence"))
        if not overrides(self._model, "generate"):
            raise self._not_implemented("generate")
        return request, self._model.generate(request)


def _close(chunks: Any) -> None:
    close = getattr(chunks, "close", None)
    if close is None:
        return
    try:
        close()
    except Exception:  # a generator that yields in its finally block: nothing more is sent anyway
        traceback.print_exc()


def _encode_chunk(chunk: Any, default_type: Optional[str]) -> Tuple[str, bytes, str]:
    """One yielded chunk -> (kind "bytes" or "events", payload, content type of a byte stream)."""
    if isinstance(chunk, Response):
        return "bytes", chunk.body, chunk.content_type
    if isinstance(chunk, (bytes, bytearray, memoryview)):
        return "bytes", bytes(chunk), default_type or BINARY_CONTENT_TYPE
    if isinstance(chunk, str):
        return "bytes", chunk.encode("utf-8"), default_type or TEXT_CONTENT_TYPE
    if isinstance(chunk, (dict, list)):
        return "events", dumps_json(chunk).encode("utf-8"), NDJSON_CONTENT_TYPE
    raise TypeError(f"generate yielded a {type(chunk).__name__}; chunks must be bytes, str or dict")


def _generate_result(result: Any, session: Optional[Session] = None) -> Tuple[str, Any]:
    """What generate returned -> (content type, body bytes); a Response's session update is recorded on session."""
    chunks = result if isinstance(result, Stream) else iter_chunks(result)
    if chunks is None:
        if result is None:
            return BINARY_CONTENT_TYPE, b""
        response = result if isinstance(result, Response) else Response(result)
        if response.session_update is not None and session is not None:
            session._update = response.session_update
        return response.content_type, response.body
    # The client did not ask for a stream: the chunks are collected into one answer.
    pieces: List[bytes] = []
    kinds: Set[str] = set()
    content_type: Optional[str] = chunks.content_type if isinstance(chunks, Stream) else None
    for chunk in chunks:
        if isinstance(chunk, Response):
            kinds.add("bytes")
            content_type = content_type or chunk.content_type
            pieces.append(chunk.body)
        elif isinstance(chunk, (bytes, bytearray, memoryview)):
            kinds.add("bytes")
            pieces.append(bytes(chunk))
        elif isinstance(chunk, str):
            kinds.add("text")
            pieces.append(chunk.encode("utf-8"))
        elif isinstance(chunk, (dict, list)):
            kinds.add("json")
            pieces.append(dumps_json(chunk).encode("utf-8") + b"\n")
        elif chunk is None:
            continue
        else:
            raise TypeError(f"generate yielded a {type(chunk).__name__}; chunks must be bytes, str or dict")
        if len(kinds) > 1:
            raise TypeError("generate yielded chunks of mixed kinds (bytes, str, dict)")
    kind = kinds.pop() if kinds else "bytes"
    if kind == "json":
        content_type = NDJSON_CONTENT_TYPE
    elif kind == "text":
        content_type = TEXT_CONTENT_TYPE
    return content_type or BINARY_CONTENT_TYPE, b"".join(pieces)


def _open_health_socket(fd: int) -> Optional[socket.socket]:
    """The health socket named by CORRAL_HEALTH_FD, or None (PING then comes on the protocol socket)."""
    raw = os.environ.get("CORRAL_HEALTH_FD")
    if not raw:
        return None
    try:
        health_fd = int(raw)
        if health_fd == fd:
            raise ValueError("the protocol socket's own descriptor")
        sock = socket.socket(fileno=health_fd)
    except (ValueError, OSError) as err:
        _log(f"CORRAL_HEALTH_FD={raw!r} is not usable ({err}); health checks come on the protocol socket")
        return None
    sock.setblocking(True)
    return sock


def _open_socket(fd: Optional[int]) -> socket.socket:
    if fd is None:
        raw = os.environ.get("CORRAL_FD")
        if raw is None:
            _log("CORRAL_FD is not set: this program is a corral worker and must be started by the corral daemon")
            _exit_now(EXIT_FAILURE)
        try:
            fd = int(raw)
        except ValueError:
            _log(f"CORRAL_FD={raw!r} is not a file descriptor number")
            _exit_now(EXIT_FAILURE)
    protocol = os.environ.get("CORRAL_PROTOCOL")
    if protocol not in (None, "", str(proto.VERSION)):
        _log(f"the daemon speaks protocol {protocol}, this SDK speaks {proto.VERSION}")
    try:
        return socket.socket(fileno=fd)
    except OSError as err:
        _log(f"CORRAL_FD={fd} is not a usable socket: {err}")
        _exit_now(EXIT_FAILURE)


def run(model: Union[Type[Model], Model], *, fd: Optional[int] = None) -> NoReturn:
    """Serves model (a Model subclass, or an instance) as a corral worker; never returns.

    The protocol socket is the inherited descriptor named by ``CORRAL_FD``
    (or ``fd``). The class is instantiated when LOAD arrives. The process exits
    0 after SHUTDOWN or at end-of-file (the daemon is gone); 1 when ``load``
    raised or the process was not started by corral; 2 when the daemon broke
    the protocol or the socket failed.
    """
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            try:
                reconfigure(line_buffering=True)  # logs reach the daemon as they are written
            except Exception:
                pass
    sock = _open_socket(fd)
    Worker(model, sock, _open_health_socket(sock.fileno())).run()
