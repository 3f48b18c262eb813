"""Sessions on requests: what a request carries (``request.session``) and the update a model answers with.

The worker protocol's "Sessions" section (docs/worker-protocol.md) is the
wire form: a request's meta holds ``"session": {"id", "exists",
"content_type", "json" | "base64"}``, and an answer's meta may hold
``"session": {"json": value} | {"base64", "content_type"} | {"delete": true}``
with an optional ``"ttl"``.
"""

import base64 as _base64
from typing import Any, Dict, List, Optional

from . import _protocol as proto

JSON_CONTENT_TYPE = "application/json"
BINARY_CONTENT_TYPE = "application/octet-stream"


class _Delete:
    """The value that deletes a session: ``request.session.update(corral.DELETE)`` or ``Response(..., session=corral.DELETE)``."""

    _instance: Optional["_Delete"] = None

    def __new__(cls) -> "_Delete":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "corral.DELETE"


DELETE = _Delete()


class Session:
    """The session a request names, as the daemon had it when it accepted the request.

    Attributes (read-only):
        id: the session's id.
        exists: whether the session existed; a session that does not is no
            error: ``content`` is None, and an update creates it.
        content_type: ``"application/json"`` for a JSON session, the type it
            was stored with for bytes; None when it does not exist.
        content: the parsed JSON value (dict, list, str, number, bool, None)
            of a JSON session, the bytes of any other; None when it does not
            exist. It is this request's own copy: changing it changes
            nothing in the store. Call ``update`` to store a new value.
        body: the content as bytes (compact JSON text for a JSON session);
            ``b""`` when it does not exist.

    ``update(value, content_type=None, ttl=None)`` and ``delete()`` record
    what the daemon stores once this request has succeeded (the whole
    answer sent): a request that fails, or whose client has left, changes
    nothing. The last call wins.
    """

    __slots__ = ("_id", "_exists", "_content_type", "_content", "_update")

    def __init__(self, id: str, exists: bool = False, content_type: Optional[str] = None, content: Any = None) -> None:
        self._id = id
        self._exists = exists
        self._content_type = content_type if exists else None
        self._content = content if exists else None
        self._update: Optional[Dict[str, Any]] = None

    @property
    def id(self) -> str:
        return self._id

    @property
    def exists(self) -> bool:
        return self._exists

    @property
    def content_type(self) -> Optional[str]:
        return self._content_type

    @property
    def content(self) -> Any:
        return self._content

    @property
    def body(self) -> bytes:
        if not self._exists:
            return b""
        if isinstance(self._content, bytes):
            return self._content
        return proto.dumps(self._content)

    def update(self, value: Any, content_type: Optional[str] = None, ttl: Optional[int] = None) -> None:
        """Stores value as the session's content when the request succeeds.

        value: a JSON value (dict, list, str, int, float, bool, None) stored
        as JSON; bytes-like, stored as bytes of content_type (default
        ``application/octet-stream``); or ``corral.DELETE``. ttl: seconds
        from now (default: the daemon's ``--session-ttl``).
        """
        self._update = update_of(value, content_type, ttl)

    def delete(self) -> None:
        """Deletes the session when the request succeeds."""
        self._update = {"delete": True}

    @property
    def pending_update(self) -> Optional[Dict[str, Any]]:
        """The update recorded so far, in its wire form (None: none)."""
        return self._update

    def __repr__(self) -> str:
        if not self._exists:
            return f"Session({self._id!r}, exists=False)"
        return f"Session({self._id!r}, content_type={self._content_type!r}, {len(self.body)} bytes)"


def update_of(value: Any, content_type: Optional[str] = None, ttl: Optional[int] = None) -> Dict[str, Any]:
    """A session update's wire form."""
    if ttl is not None and (not isinstance(ttl, int) or isinstance(ttl, bool) or ttl <= 0):
        raise ValueError(f"a session's ttl must be a positive number of seconds, not {ttl!r}")
    if value is DELETE:
        return {"delete": True}
    if isinstance(value, (bytes, bytearray, memoryview)):
        ct = content_type or BINARY_CONTENT_TYPE
        if not isinstance(ct, str) or "/" not in ct or ct.startswith(JSON_CONTENT_TYPE):
            raise ValueError(f"a bytes session needs a content type of the form type/subtype other than JSON, not {ct!r}")
        update: Dict[str, Any] = {"base64": _base64.b64encode(bytes(value)).decode("ascii"), "content_type": ct}
    else:
        if content_type is not None and not content_type.startswith(JSON_CONTENT_TYPE):
            raise ValueError("a JSON session takes no content type but application/json; pass bytes for another type")
        proto.dumps(value)  # raises now, in the model's code, for a value JSON cannot hold
        update = {"json": value}
    if ttl is not None:
        update["ttl"] = ttl
    return update


def session_from_meta(raw: Any, where: str) -> Optional[Session]:
    """A request meta's "session" -> a Session (None when absent); ProtocolError when malformed."""
    if raw is None:
        return None
    if not isinstance(raw, dict) or not isinstance(raw.get("id"), str) or not isinstance(raw.get("exists"), bool):
        raise proto.ProtocolError(f"{where}: 'session' must be an object with a string 'id' and a boolean 'exists'")
    if not raw["exists"]:
        return Session(raw["id"])
    content_type = raw.get("content_type")
    if not isinstance(content_type, str):
        raise proto.ProtocolError(f"{where}: a session that exists needs a string 'content_type'")
    if "json" in raw:
        return Session(raw["id"], True, content_type, raw["json"])
    encoded = raw.get("base64")
    if not isinstance(encoded, str):
        raise proto.ProtocolError(f"{where}: a session that exists needs 'json' or 'base64'")
    try:
        content = _base64.b64decode(encoded, validate=True)
    except ValueError:
        raise proto.ProtocolError(f"{where}: the session's base64 is malformed") from None
    return Session(raw["id"], True, content_type, content)


def with_update(meta: Dict[str, Any], session: Optional[Session]) -> Dict[str, Any]:
    """meta with the session's recorded update added (as is when there is none)."""
    if session is not None and session.pending_update is not None:
        meta["session"] = session.pending_update
    return meta


def sessions_list(sessions: List[Optional[Session]]) -> Optional[List[Optional[Dict[str, Any]]]]:
    """A whole batch answer's "sessions": one update (or None) per request; None when no request has one."""
    updates = [s.pending_update if s is not None else None for s in sessions]
    return updates if any(u is not None for u in updates) else None
