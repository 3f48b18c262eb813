"""
The objects a model author sees: Model, Context, Request, Response, BadRequest.

None of these touch the socket; the worker loop (_worker.py) builds Context and
Request from protocol messages and turns what the model returns into replies.
"""

from __future__ import annotations

import json as _json
from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, Iterable, List, Mapping, Optional, Union

from ._session import Session, update_of

JSON_CONTENT_TYPE = "application/json"
TEXT_CONTENT_TYPE = "text/plain; charset=utf-8"
BINARY_CONTENT_TYPE = "application/octet-stream"
NDJSON_CONTENT_TYPE = "application/x-ndjson"


class BadRequest(Exception):
    """Raise to reject a request's input: the client gets HTTP 400 with this text.

    Any other exception raised by model code becomes a 500 whose message holds
    the exception's type and text. Either way the instance keeps serving.
    """


def _rows(inputs: Mapping[str, Any]) -> int:
    """A single request's rows: its first input's dimension 0, or 1 without one."""
    for tensor in inputs.values():
        shape = getattr(tensor, "shape", None)
        return int(shape[0]) if shape else 1
    return 1


def is_json_content_type(content_type: Optional[str]) -> bool:
    """Whether a content type is JSON (``application/json`` or any ``+json`` type)."""
    if not content_type:
        return False
    mime = content_type.split(";", 1)[0].strip().lower()
    return mime == JSON_CONTENT_TYPE or mime.endswith("+json")


@dataclass
class Context:
    """What ``Model.load`` learns about the instance it is loading into.

    Attributes:
        name: the model's name.
        model_dir: absolute path of the model directory (also the working directory).
        parameters: the manifest's free-form ``parameters`` map (empty when none).
        instance_id: this instance's number (0, 1, ...).
        device: the device the daemon assigned, e.g. ``"cpu"``.
        concurrency: how many requests this instance may be handed at once.
        samples_dir: absolute path of the daemon's samples directory (``--samples``:
            speaker samples and other shared inputs; read it, do not write it), or
            ``None`` when the daemon has none.
        external_models_dir: absolute path of the daemon's external models directory
            (``--external-models``), or ``None``. A model that fetches its own weights
            writes them to a directory of its own there (see docs/sdk.md); the next
            rescan links it into the repository.
        variant_dir: absolute path of the variant's own directory when the model is a
            variant of another (``from:`` in its model.yaml; docs/repository.md,
            "Variants"): ``model_dir`` is then the base's directory, where the code
            runs, and this one holds the variant's model.yaml and extra files.
            ``None`` for a model that is not a variant, and for a variant created at
            run time from a model that is not one.
    """

    name: str
    model_dir: str
    parameters: Dict[str, Any] = field(default_factory=dict)
    instance_id: int = 0
    device: str = "cpu"
    concurrency: int = 1
    samples_dir: Optional[str] = None
    external_models_dir: Optional[str] = None
    variant_dir: Optional[str] = None


class Sequence:
    """The sequence a request belongs to (Triton's ``sequence_id``, ``sequence_start``, ``sequence_end``).

    Every request of one sequence comes to the same instance, one at a time
    and in order, so a model may keep per-sequence state keyed by ``id``:
    create it when ``start`` is true, free it when ``end`` is true (or when
    the daemon calls ``Model.end_sequence`` for a sequence it released).

    Attributes:
        id: the sequence id, an int or a str.
        start: this request starts the sequence (state kept for the id is stale).
        end: this request is the sequence's last.
    """

    __slots__ = ("id", "start", "end")

    def __init__(self, id: Any, start: bool = False, end: bool = False) -> None:
        self.id = id
        self.start = start
        self.end = end

    def __repr__(self) -> str:
        return f"Sequence(id={self.id!r}, start={self.start!r}, end={self.end!r})"


class Request:
    """One request handed to ``Model.infer``, ``Model.infer_batch`` or ``Model.generate``.

    Attributes:
        id: the client's request id (``""`` when it gave none).
        inputs: input name -> tensor, in the order the client sent them. With
            numpy, each is a ``numpy.ndarray`` of the exact dtype and shape
            (a read-write view of the received bytes, or for 1 MiB and more
            of the shared memory the daemon filled: valid until ``infer``
            returns, so copy an input to keep it; BYTES tensors are object
            arrays of ``bytes``). Without numpy, each is a ``corral.Tensor``.
            BF16 tensors are always ``corral.Tensor`` (numpy has no bfloat16).
            Empty for ``generate``.
        parameters: the request's ``parameters`` object (empty when none).
        outputs: output names the client asked for, or None for all (infer only).
        body: the raw request body (``generate`` only; ``b""`` for infer).
        content_type: the body's content type (``generate`` only; None for infer).
        json: the parsed body when ``content_type`` is JSON, else None (read on
            first access; a body that is not valid JSON raises BadRequest).
        cancelled: true once the client has gone or the deadline has passed.
        batch_sizes: the rows (dimension 0) of each request this one holds.
            ``[rows]`` for a single request; for a batch handed whole to
            ``infer`` (a model with ``batching`` and no ``infer_batch``) one
            entry per request in the order of the rows, ``inputs`` being
            their tensors concatenated along dimension 0.
        batch_ids: the client's request id of each request, as ``batch_sizes``.
        batch_parameters: the ``parameters`` of each request, as ``batch_sizes``.
        session: the ``corral.Session`` the request names (``parameters.session``
            on infer, ``"session"`` in a generate body or its ``Session-Id``
            header), or None when it names none. Read it; record an update
            with ``request.session.update(value)`` (docs/sessions.md).
        batch_sessions: the session of each request, as ``batch_sizes``.
        sequence: the ``corral.Sequence`` the request belongs to, or None
            (infer, and Triton's generate; a sequence's request never
            travels in a batch).

    For a batch handed whole to ``infer``, ``id`` and ``parameters`` are the
    first request's (each request keeps its own: read ``batch_parameters``
    and ``batch_sessions`` when they may differ; ``session`` is the first
    request's too) and ``outputs`` is the union of every request's
    selection (None when any of them asked for all).
    """

    __slots__ = ("id", "inputs", "parameters", "outputs", "body", "content_type", "_json", "_json_parsed", "_cancel",
                 "_batch_sizes", "_batch_ids", "_batch_parameters", "session", "_batch_sessions", "sequence")

    def __init__(
        self,
        id: str = "",
        inputs: Optional[Dict[str, Any]] = None,
        parameters: Optional[Dict[str, Any]] = None,
        outputs: Optional[List[str]] = None,
        body: bytes = b"",
        content_type: Optional[str] = None,
        batch_sizes: Optional[List[int]] = None,
        batch_ids: Optional[List[str]] = None,
        batch_parameters: Optional[List[Dict[str, Any]]] = None,
        session: Optional[Session] = None,
        batch_sessions: Optional[List[Optional[Session]]] = None,
    ) -> None:
        self.id = id
        self.inputs: Dict[str, Any] = inputs if inputs is not None else {}
        self.parameters: Dict[str, Any] = parameters if parameters is not None else {}
        self.outputs = outputs
        self.body = body
        self.content_type = content_type
        self._json: Any = None
        self._json_parsed = False
        self._cancel: Optional[Any] = None  # set (is_set()) when the daemon sends CANCEL
        self._batch_sizes = batch_sizes
        self._batch_ids = batch_ids
        self._batch_parameters = batch_parameters
        self.session = session
        self._batch_sessions = batch_sessions
        self.sequence: Optional[Sequence] = None

    @property
    def batch_sizes(self) -> List[int]:
        """The rows of each request held: ``[rows]`` for one request, one entry per request for a batch.

        For one request, rows is its first input's dimension 0 (1 when it
        has no input, or the first is a scalar).
        """
        if self._batch_sizes is None:
            self._batch_sizes = [_rows(self.inputs)]
        return self._batch_sizes

    @property
    def batch_ids(self) -> List[str]:
        """The client's request id of each request held (``[id]`` for one request)."""
        if self._batch_ids is None:
            self._batch_ids = [self.id]
        return self._batch_ids

    @property
    def batch_parameters(self) -> List[Dict[str, Any]]:
        """The ``parameters`` of each request held (``[parameters]`` for one request)."""
        if self._batch_parameters is None:
            self._batch_parameters = [self.parameters]
        return self._batch_parameters

    @property
    def batch_sessions(self) -> List[Optional[Session]]:
        """The session of each request held (``[session]`` for one request; None for one that names none)."""
        if self._batch_sessions is None:
            self._batch_sessions = [self.session]
        return self._batch_sessions

    @property
    def cancelled(self) -> bool:
        """True once the client has gone or the deadline has passed: the answer will be dropped.

        A long computation may check it and return early; a streaming
        generator is also closed at its next ``yield``.
        """
        return self._cancel is not None and self._cancel.is_set()

    @property
    def json(self) -> Any:
        """The parsed JSON body, or None when the content type is not JSON or the body is empty."""
        if not self._json_parsed:
            if is_json_content_type(self.content_type) and self.body.strip():
                try:
                    self._json = _json.loads(self.body)
                except ValueError as err:
                    raise BadRequest(f"request body is not valid JSON: {err}") from None
            self._json_parsed = True
        return self._json

    def __repr__(self) -> str:
        return (
            f"Request(id={self.id!r}, inputs={list(self.inputs)!r}, parameters={self.parameters!r}, "
            f"content_type={self.content_type!r}, body={len(self.body)} bytes)"
        )


_NO_UPDATE: Any = object()


class Response:
    """A ``generate`` result with an explicit content type.

    ``body`` may be bytes-like, ``str`` (sent as UTF-8) or a dict/list (sent as
    JSON). Without ``content_type`` the type follows the body: bytes ->
    ``application/octet-stream``, str -> ``text/plain; charset=utf-8``,
    dict/list -> ``application/json``.

    ``session``, when given, is the update of the request's session, as
    ``request.session.update(session)`` would record it (a JSON value, bytes
    of ``session_content_type``, or ``corral.DELETE``; ``session_ttl`` in
    seconds). A request that names no session has nothing to update: it is
    dropped.
    """

    __slots__ = ("body", "content_type", "session_update")

    def __init__(self, body: Union[bytes, bytearray, memoryview, str, dict, list], content_type: Optional[str] = None,
                 *, session: Any = _NO_UPDATE, session_content_type: Optional[str] = None,
                 session_ttl: Optional[int] = None) -> None:
        if isinstance(body, str):
            data: bytes = body.encode("utf-8")
            default_type = TEXT_CONTENT_TYPE
        elif isinstance(body, (dict, list)):
            data = dumps_json(body).encode("utf-8")
            default_type = JSON_CONTENT_TYPE
        elif isinstance(body, (bytes, bytearray, memoryview)):
            data = bytes(body)
            default_type = BINARY_CONTENT_TYPE
        else:
            raise TypeError(f"Response body must be bytes, str, dict or list, not {type(body).__name__}")
        self.body: bytes = data
        self.content_type: str = content_type or default_type
        self.session_update: Optional[Dict[str, Any]] = (
            None if session is _NO_UPDATE else update_of(session, session_content_type, session_ttl))

    def __repr__(self) -> str:
        return f"Response({len(self.body)} bytes, content_type={self.content_type!r})"


class Stream:
    """A streamed ``generate`` result: ``chunks`` (an iterable of bytes) sent with ``content_type``.

    Returning a generator of bytes streams ``application/octet-stream``;
    wrap it to name the type (``corral.Stream(pcm(), content_type="audio/L16")``).
    A generator of dicts streams events (server-sent events or NDJSON).
    """

    __slots__ = ("chunks", "content_type")

    def __init__(self, chunks: Iterable[Any], content_type: str = BINARY_CONTENT_TYPE) -> None:
        self.chunks = iter(chunks)
        self.content_type = content_type

    def __iter__(self) -> Any:
        return self.chunks

    def __next__(self) -> Any:
        return next(self.chunks)

    def close(self) -> None:
        close = getattr(self.chunks, "close", None)
        if close is not None:
            close()


def _json_default(value: Any) -> Any:
    """Lets numpy values and corral.Tensor appear in JSON results."""
    tolist = getattr(value, "tolist", None)
    if callable(tolist):  # numpy arrays and scalars, corral.Tensor
        return tolist()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps_json(value: Any) -> str:
    """JSON for results: compact, strictly valid (no NaN), numpy-aware."""
    return _json.dumps(value, separators=(",", ":"), allow_nan=False, default=_json_default)


class Model:
    """Base class of a Python model; subclass it and pass the class to ``corral.run``.

    The worker creates one instance per process, calls ``load`` once, then
    ``infer`` / ``generate`` for each request (on worker threads, at most
    ``ctx.concurrency`` at a time), and ``unload`` on a graceful stop.

    Optional class attributes ``inputs`` and ``outputs`` (lists of
    ``{"name", "datatype", "shape"}`` dicts) are reported to the daemon as the
    model's tensor metadata when the manifest declares none.
    """

    inputs: ClassVar[Optional[List[Dict[str, Any]]]] = None
    outputs: ClassVar[Optional[List[Dict[str, Any]]]] = None

    def load(self, ctx: Context) -> None:
        """Loads weights and prepares state; runs once per instance and may take minutes."""

    def infer(self, request: Request) -> Mapping[str, Any]:
        """Answers a KServe v2 tensor request: returns output name -> tensor.

        A tensor may be a numpy array (datatype from its dtype), a
        ``corral.Tensor``, a nested list of bool/int/float (BOOL, INT64, FP64),
        of bytes/str (BYTES), or a single such value (shape ``[1]``).
        Models that only define ``infer_batch`` get it called with one request.

        With ``batching`` in the manifest and no ``infer_batch``, a batch
        comes here whole: ``request.inputs`` are every request's tensors
        concatenated along dimension 0, ``request.batch_sizes`` the rows of
        each, and the outputs must have the batch's total rows (the daemon
        gives each request its own).
        """
        raise BadRequest("model does not implement infer")

    def infer_batch(self, requests: List[Request]) -> List[Union[Mapping[str, Any], BaseException]]:
        """Answers several tensor requests at once: returns one result per request, in order.

        Defined, it takes every batch of a model with ``batching`` (and any
        single request too, as a list of one, when ``infer`` is not
        defined). Each request's inputs are views of its own rows of the
        batch. A result is an output dict, as ``infer`` returns, or an
        exception instance, which fails only its own request (400 for
        ``corral.BadRequest``, else 500). Raising fails every request of
        the batch; so does a list of the wrong length.
        """
        return [self.infer(request) for request in requests]

    def generate(self, request: Request) -> Any:
        """Answers a free-form request (``request.json`` / ``request.body``).

        Return a ``corral.Response``, bytes (``application/octet-stream``), str
        (``text/plain; charset=utf-8``) or a dict/list (``application/json``);
        or yield chunks: bytes are concatenated, str concatenated as text, and
        dicts/lists sent as newline-delimited JSON (``application/x-ndjson``).
        """
        raise BadRequest("model does not implement generate")

    def unload(self) -> None:
        """Releases resources on a graceful stop; the process exits right after."""

    def end_sequence(self, sequence_id: Any, reason: str) -> None:
        """The daemon released a sequence without a request ending it; free what is kept for it.

        ``reason`` is ``"idle"`` (no request of it for the model's
        ``max_sequence_idle``). Called after the sequence's last request has
        been answered; an exception is logged and ignored.
        """


def overrides(model: Any, method: str) -> bool:
    """Whether model's class defines method itself rather than inheriting Model's default."""
    impl = getattr(type(model), method, None)
    if impl is None:
        return False
    return impl is not getattr(Model, method, None)


def iter_chunks(result: Any) -> Optional[Iterable[Any]]:
    """result as an iterable of chunks when it is a generator or iterator, else None."""
    if isinstance(result, (bytes, bytearray, memoryview, str, dict, list, Response)) or result is None:
        return None
    if hasattr(result, "__next__") and hasattr(result, "__iter__"):
        return result
    return None
