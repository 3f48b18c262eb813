"""
Tensor codec: the raw v2 tensor layout of the worker protocol <-> Python values.

Raw layout (docs/worker-protocol.md): row-major, little-endian; BOOL one byte;
FP16 IEEE half; BF16 the upper 16 bits of an IEEE single; BYTES every element
as a u32 length and that many bytes.

With numpy (unless CORRAL_NO_NUMPY=1), inputs decode to numpy arrays that are
views of the received frame, and numpy outputs are sent from their own memory,
so a large tensor is never copied in Python. Without numpy, tensors are
corral.Tensor objects holding flat Python lists.
"""

from __future__ import annotations

import array
import os
import struct
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ._model import BadRequest

Buffer = Any  # any object exporting the buffer protocol (bytes, memoryview, ndarray, array.array)


def _import_numpy() -> Any:
    if os.environ.get("CORRAL_NO_NUMPY", "") not in ("", "0"):
        return None
    try:
        import numpy
    except Exception:  # absent, or an install broken enough to fail on import
        return None
    return numpy


np = _import_numpy()

# Element size in bytes of every fixed-size v2 datatype; BYTES is variable.
ITEM_SIZE: Dict[str, int] = {
    "BOOL": 1,
    "UINT8": 1,
    "UINT16": 2,
    "UINT32": 4,
    "UINT64": 8,
    "INT8": 1,
    "INT16": 2,
    "INT32": 4,
    "INT64": 8,
    "FP16": 2,
    "FP32": 4,
    "FP64": 8,
    "BF16": 2,
}
DATATYPES = frozenset(ITEM_SIZE) | {"BYTES"}

# struct codes (standard sizes under "<") for decoding without numpy.
_STRUCT_CODE = {
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
}


def _array_code(candidates: str, size: int) -> str:
    for code in candidates:
        if array.array(code).itemsize == size:
            return code
    raise RuntimeError(f"no array typecode of {size} bytes among {candidates!r}")


# array.array typecodes for encoding lists without numpy (native sizes vary by platform).
_ARRAY_CODE = {
    "UINT8": "B",
    "UINT16": _array_code("HI", 2),
    "UINT32": _array_code("IHLQ", 4),
    "UINT64": _array_code("QL", 8),
    "INT8": "b",
    "INT16": _array_code("hi", 2),
    "INT32": _array_code("ihlq", 4),
    "INT64": _array_code("ql", 8),
    "FP32": "f",
    "FP64": "d",
}
_BIG_ENDIAN = sys.byteorder == "big"

if np is not None:
    _NP_DTYPE = {
        "BOOL": np.dtype(np.bool_),
        "UINT8": np.dtype("<u1"),
        "UINT16": np.dtype("<u2"),
        "UINT32": np.dtype("<u4"),
        "UINT64": np.dtype("<u8"),
        "INT8": np.dtype("<i1"),
        "INT16": np.dtype("<i2"),
        "INT32": np.dtype("<i4"),
        "INT64": np.dtype("<i8"),
        "FP16": np.dtype("<f2"),
        "FP32": np.dtype("<f4"),
        "FP64": np.dtype("<f8"),
    }
    _NP_KIND = {("b", 1): "BOOL", ("f", 2): "FP16", ("f", 4): "FP32", ("f", 8): "FP64"}
    for _size in (1, 2, 4, 8):
        _NP_KIND[("u", _size)] = f"UINT{_size * 8}"
        _NP_KIND[("i", _size)] = f"INT{_size * 8}"


class Tensor:
    """A tensor as plain Python data: the form inputs take without numpy.

    Attributes:
        datatype: a v2 datatype name (``"FP32"``, ``"BYTES"``, ...).
        shape: list of dimensions.
        data: the elements, flat, in row-major order: bools for BOOL, ints for
            the integer types, floats for FP16/FP32/FP64/BF16, bytes for BYTES.

    Returned from ``infer``, ``data`` may also be any flat sequence (or a numpy
    array) of such values, str elements for BYTES, or — for fixed-size
    datatypes — a bytes-like object holding the raw little-endian data, sent
    as is. BF16 values are floats; on output they are rounded to nearest even.
    """

    __slots__ = ("datatype", "shape", "data")

    def __init__(self, datatype: str, shape: Sequence[int], data: Any) -> None:
        if datatype not in DATATYPES:
            raise ValueError(f"unknown datatype {datatype!r}")
        self.datatype = datatype
        self.shape: List[int] = [int(dim) for dim in shape]
        self.data = data

    def tolist(self) -> Any:
        """The elements as nested lists following ``shape`` (a scalar for shape ``[]``)."""
        flat = self.data
        if isinstance(flat, (bytes, bytearray, memoryview)) and self.datatype != "BYTES":
            flat = _decode_fixed_list(self.datatype, _element_count(self.shape), memoryview(flat).cast("B"))
        else:
            flat = list(flat)
        if not self.shape:
            return flat[0]
        return _nest(flat, self.shape)

    def numpy(self) -> Any:
        """The tensor as a numpy array (BF16 becomes float32). Needs numpy."""
        if np is None:
            raise RuntimeError("numpy is not available")
        if self.datatype == "BYTES":
            return _object_array(list(self.data), self.shape)
        if self.datatype == "BF16":
            return np.asarray(self.tolist(), dtype=np.float32).reshape(self.shape)
        if isinstance(self.data, (bytes, bytearray, memoryview)):
            return np.frombuffer(self.data, dtype=_NP_DTYPE[self.datatype]).reshape(self.shape)
        return np.asarray(self.data, dtype=_NP_DTYPE[self.datatype]).reshape(self.shape)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Tensor):
            return NotImplemented
        return self.datatype == other.datatype and self.shape == other.shape and list(self.data) == list(other.data)

    def __repr__(self) -> str:
        count = _element_count(self.shape)
        preview = list(self.data)[:8] if not isinstance(self.data, (bytes, bytearray, memoryview)) else "<raw>"
        return f"Tensor({self.datatype!r}, {self.shape!r}, {preview!r}{'...' if count > 8 else ''})"


def _element_count(shape: Sequence[int]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


def _nest(flat: List[Any], shape: Sequence[int]) -> List[Any]:
    if len(shape) == 1:
        return flat
    step = _element_count(shape[1:])
    return [_nest(flat[i * step : (i + 1) * step], shape[1:]) for i in range(shape[0])]


def _object_array(items: List[Any], shape: Sequence[int]) -> Any:
    arr = np.empty(len(items), dtype=object)
    arr[:] = items
    return arr.reshape(shape)


# ---------------------------------------------------------------- decoding

_U32 = struct.Struct("<I")


def _decode_fixed_list(datatype: str, count: int, raw: memoryview) -> List[Any]:
    if datatype == "BF16":
        halves = struct.unpack_from(f"<{count}H", raw)
        singles = struct.pack(f"<{count}I", *[half << 16 for half in halves])
        return list(struct.unpack(f"<{count}f", singles))
    return list(struct.unpack_from(f"<{count}{_STRUCT_CODE[datatype]}", raw))


def _decode_bytes_elements(name: str, count: int, raw: memoryview) -> List[bytes]:
    items: List[bytes] = []
    offset = 0
    end = len(raw)
    while offset < end:
        if offset + 4 > end:
            raise BadRequest(f"input {name!r}: BYTES element length runs past the tensor's data")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > end:
            raise BadRequest(f"input {name!r}: BYTES element runs past the tensor's data")
        items.append(bytes(raw[offset : offset + length]))
        offset += length
    if len(items) != count:
        raise BadRequest(f"input {name!r}: shape holds {count} elements but the data holds {len(items)}")
    return items


def decode_tensor(name: str, datatype: str, shape: List[int], raw: memoryview) -> Any:
    """One input's raw bytes -> numpy array (when available) or Tensor."""
    count = _element_count(shape)
    if datatype == "BYTES":
        items = _decode_bytes_elements(name, count, raw)
        if np is not None:
            return _object_array(items, shape)
        return Tensor("BYTES", shape, items)
    expected = count * ITEM_SIZE[datatype]
    if len(raw) != expected:
        raise BadRequest(f"input {name!r}: {datatype} {shape} needs {expected} bytes, got {len(raw)}")
    if np is not None and datatype != "BF16":
        return np.frombuffer(raw, dtype=_NP_DTYPE[datatype], count=count).reshape(shape)
    return Tensor(datatype, shape, _decode_fixed_list(datatype, count, raw))


def _check_shape(name: str, shape: Any) -> List[int]:
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise BadRequest(f"input {name!r}: shape must be a list of non-negative integers, got {shape!r}")
    return shape


def check_inputs(specs: Any, data: memoryview) -> List[Tuple[str, str, List[int], memoryview]]:
    """The INFER meta's ``inputs`` list and the data after it -> (name, datatype, shape, raw) per input.

    Checks the descriptions and that their sizes cover the data exactly; each
    tensor's own bytes are checked when it is decoded (decode_tensor). Raises
    BadRequest.
    """
    if specs is None:
        specs = []
    if not isinstance(specs, list):
        raise BadRequest("'inputs' must be a list")
    checked: List[Tuple[str, str, List[int], memoryview]] = []
    names = set()
    offset = 0
    for spec in specs:
        if not isinstance(spec, dict):
            raise BadRequest("each input must be an object")
        name = spec.get("name")
        if not isinstance(name, str) or not name:
            raise BadRequest("an input has no name")
        if name in names:
            raise BadRequest(f"input {name!r} appears twice")
        names.add(name)
        datatype = spec.get("datatype")
        if datatype not in DATATYPES:
            raise BadRequest(f"input {name!r}: unknown datatype {datatype!r}")
        shape = _check_shape(name, spec.get("shape"))
        size = spec.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise BadRequest(f"input {name!r}: 'size' must be a non-negative integer")
        if offset + size > len(data):
            raise BadRequest(f"input {name!r}: size {size} runs past the request's data")
        checked.append((name, datatype, shape, data[offset : offset + size]))
        offset += size
    if offset != len(data):
        raise BadRequest(f"the request carries {len(data) - offset} bytes of data beyond its inputs")
    return checked


def decode_inputs(specs: Any, data: memoryview) -> Dict[str, Any]:
    """The INFER meta's ``inputs`` list and the data after it -> name -> tensor.

    Raises BadRequest when the list does not describe the data exactly.
    """
    return {name: decode_tensor(name, datatype, shape, raw) for name, datatype, shape, raw in check_inputs(specs, data)}


def split_rows(name: str, datatype: str, shape: Sequence[int], raw: memoryview, rows: Sequence[int]) -> List[memoryview]:
    """A tensor's raw data cut along dimension 0 into pieces of ``rows[i]`` rows: views, no copy.

    shape[0] must be sum(rows). Fixed-size data is cut by byte counts, BYTES
    data walked element by element; either raises BadRequest when the data
    does not hold exactly its shape's elements.
    """
    assert shape and shape[0] == sum(rows), "split_rows needs rows that add up to dimension 0"
    per_row = _element_count(shape[1:])
    pieces: List[memoryview] = []
    offset = 0
    if datatype != "BYTES":
        row_bytes = per_row * ITEM_SIZE[datatype]
        if len(raw) != shape[0] * row_bytes:
            raise BadRequest(f"tensor {name!r}: {datatype} {list(shape)} needs {shape[0] * row_bytes} bytes, got {len(raw)}")
        for count in rows:
            pieces.append(raw[offset : offset + count * row_bytes])
            offset += count * row_bytes
        return pieces
    end = len(raw)
    for count in rows:
        start = offset
        for _ in range(count * per_row):
            if offset + 4 > end:
                raise BadRequest(f"tensor {name!r}: BYTES element length runs past the tensor's data")
            offset += 4 + _U32.unpack_from(raw, offset)[0]
            if offset > end:
                raise BadRequest(f"tensor {name!r}: BYTES element runs past the tensor's data")
        pieces.append(raw[start:offset])
    if offset != end:
        raise BadRequest(f"tensor {name!r}: {end - offset} bytes of BYTES data beyond its {shape} elements")
    return pieces


# ---------------------------------------------------------------- encoding


def _as_element_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"BYTES elements must be bytes or str, not {type(value).__name__}")


def _encode_bytes_elements(items: Sequence[Any]) -> bytes:
    pack = struct.Struct("<I").pack
    pieces: List[bytes] = []
    for item in items:
        data = _as_element_bytes(item)
        pieces.append(pack(len(data)))
        pieces.append(data)
    return b"".join(pieces)


def _round_to_bf16(singles: bytes, count: int) -> bytes:
    words = struct.unpack(f"<{count}I", singles)
    halves = []
    for word in words:
        if (word & 0x7F800000) == 0x7F800000 and (word & 0x007FFFFF):
            halves.append((word >> 16) | 0x0040)  # NaN stays a (quiet) NaN
        else:
            halves.append(((word + 0x7FFF + ((word >> 16) & 1)) >> 16) & 0xFFFF)
    return struct.pack(f"<{count}H", *halves)


def _encode_flat(datatype: str, flat: Sequence[Any]) -> Buffer:
    """A flat sequence of Python values -> raw little-endian bytes of datatype."""
    count = len(flat)
    if datatype == "BYTES":
        return _encode_bytes_elements(flat)
    if datatype == "BOOL":
        return bytes(1 if value else 0 for value in flat)
    if datatype == "FP16":
        return struct.pack(f"<{count}e", *flat)
    if datatype == "BF16":
        return _round_to_bf16(struct.pack(f"<{count}f", *flat), count)
    packed = array.array(_ARRAY_CODE[datatype], flat)
    if _BIG_ENDIAN:
        packed.byteswap()
    return packed


def _ndarray_datatype(arr: Any) -> str:
    kind = arr.dtype.kind
    if kind in "OSU":
        return "BYTES"
    datatype = _NP_KIND.get((kind, arr.dtype.itemsize))
    if datatype is None:
        raise TypeError(f"numpy dtype {arr.dtype} has no v2 datatype")
    return datatype


def _encode_ndarray(arr: Any, datatype: Optional[str] = None) -> Tuple[str, List[int], Buffer]:
    shape = list(arr.shape)
    if datatype is None:
        datatype = _ndarray_datatype(arr)
    if datatype == "BYTES":
        return datatype, shape, _encode_bytes_elements(arr.ravel().tolist())
    if datatype == "BF16":
        singles = np.ascontiguousarray(arr, dtype="<f4").reshape(-1)
        return datatype, shape, _round_to_bf16(singles.tobytes(), singles.size)
    wanted = _NP_DTYPE[datatype]
    if arr.dtype != wanted:  # big-endian input, or a Tensor whose data needs converting
        arr = arr.astype(wanted)
    # A C-contiguous array is sent straight from its own memory: no copy here.
    flat = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)
    return datatype, shape, flat


def _encode_tensor(tensor: Tensor) -> Tuple[str, List[int], Buffer]:
    datatype, shape, data = tensor.datatype, tensor.shape, tensor.data
    count = _element_count(shape)
    if isinstance(data, (bytes, bytearray, memoryview)) and datatype != "BYTES":
        raw = memoryview(data).cast("B")
        if len(raw) != count * ITEM_SIZE[datatype]:
            raise ValueError(f"{datatype} {shape} needs {count * ITEM_SIZE[datatype]} bytes of raw data, got {len(raw)}")
        return datatype, shape, raw
    if np is not None and isinstance(data, np.ndarray):
        if data.size != count:
            raise ValueError(f"shape {shape} holds {count} elements but data holds {data.size}")
        _, _, raw = _encode_ndarray(data.reshape(-1), datatype)
        return datatype, shape, raw
    flat = data if isinstance(data, list) else list(data)
    if len(flat) != count:
        raise ValueError(f"shape {shape} holds {count} elements but data holds {len(flat)}")
    return datatype, shape, _encode_flat(datatype, flat)


class _NeedsNumpy(Exception):
    """A nested list holds numpy arrays: let numpy assemble it."""


def _flatten(value: Sequence[Any]) -> Tuple[List[int], List[Any]]:
    """A nested list -> (shape, flat row-major elements); ValueError when ragged."""
    shape: List[int] = []
    level: Any = value
    while isinstance(level, (list, tuple)):
        shape.append(len(level))
        if not level:
            break
        level = level[0]
    depth = len(shape)
    flat: List[Any] = []

    def walk(node: Any, dim: int) -> None:
        if not isinstance(node, (list, tuple)) or len(node) != shape[dim]:
            if np is not None and isinstance(node, np.ndarray):
                raise _NeedsNumpy()
            raise ValueError("nested lists are ragged")
        if dim == depth - 1:
            flat.extend(node)
        else:
            for child in node:
                walk(child, dim + 1)

    walk(value, 0)
    return shape, flat


def _infer_datatype(flat: List[Any]) -> str:
    """The datatype of flat Python values: BOOL, INT64, FP64 or BYTES."""
    kinds = set()
    for kind in set(map(type, flat)):
        if issubclass(kind, bool) or (np is not None and issubclass(kind, np.bool_)):
            kinds.add("b")
        elif issubclass(kind, int) or (np is not None and issubclass(kind, np.integer)):
            kinds.add("i")
        elif issubclass(kind, float) or (np is not None and issubclass(kind, np.floating)):
            kinds.add("f")
        elif issubclass(kind, (bytes, bytearray, memoryview, str)):
            kinds.add("s")
        elif issubclass(kind, (list, tuple)):
            raise ValueError("nested lists are ragged")
        elif np is not None and issubclass(kind, np.ndarray):
            raise _NeedsNumpy()
        else:
            raise TypeError(f"cannot put a {kind.__name__} in a tensor")
    if not kinds or kinds <= {"b", "i", "f"}:
        if kinds == {"b"}:
            return "BOOL"
        if kinds and kinds <= {"b", "i"}:
            return "INT64"
        return "FP64"
    if kinds == {"s"}:
        return "BYTES"
    raise TypeError("a tensor cannot mix strings and numbers")


def encode_output(value: Any) -> Tuple[str, List[int], Buffer]:
    """An ``infer`` result value -> (datatype, shape, raw data buffer).

    numpy arrays keep their dtype and shape; corral.Tensor its datatype; nested
    lists and scalars are inferred (bool BOOL, int INT64, float FP64, bytes/str
    BYTES); a scalar, Python or numpy, becomes shape [1].
    """
    if isinstance(value, Tensor):
        return _encode_tensor(value)
    if np is not None:
        if isinstance(value, np.ndarray):
            return _encode_ndarray(value)
        if isinstance(value, np.generic):
            return _encode_ndarray(np.asarray(value).reshape(1))
    if isinstance(value, (bytes, bytearray, memoryview, str)):
        return "BYTES", [1], _encode_bytes_elements([value])
    if isinstance(value, (bool, int, float)):
        datatype = _infer_datatype([value])
        return datatype, [1], _encode_flat(datatype, [value])
    if isinstance(value, (list, tuple)):
        try:
            shape, flat = _flatten(value)
            datatype = _infer_datatype(flat)
        except _NeedsNumpy:
            return _encode_ndarray(np.asarray(value))
        return datatype, shape, _encode_flat(datatype, flat)
    raise TypeError(f"cannot send a {type(value).__name__} as a tensor")
