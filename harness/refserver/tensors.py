"""Tensors between the wire and numpy: TensorProto (gRPC) and JSON (REST).

Responses use the typed value fields (``float_val``, ...), as TF Serving does by default, because
clients read ``outputs[name].float_val`` directly.
"""

from __future__ import annotations

import base64
import math

import numpy as np

from harness import dtypes
from harness.dtypes import (
    DT_BOOL,
    DT_DOUBLE,
    DT_FLOAT,
    DT_HALF,
    DT_INT8,
    DT_INT16,
    DT_INT32,
    DT_INT64,
    DT_STRING,
    DT_UINT8,
    DT_UINT16,
    DT_UINT32,
    DT_UINT64,
)
from harness.refserver.status import invalid

# DataType codes from the one table (harness.dtypes); the numpy dtypes built here, where numpy is
# used. BFLOAT16 has no numpy dtype: it is named in errors but never decoded.
NUMPY_DTYPE = {d.code: np.dtype(d.numpy) for d in dtypes.TABLE if d.numpy is not None}
# Which repeated field of TensorProto carries each dtype.
VALUE_FIELD = {
    DT_FLOAT: "float_val",
    DT_DOUBLE: "double_val",
    DT_INT32: "int_val",
    DT_UINT8: "int_val",
    DT_INT16: "int_val",
    DT_INT8: "int_val",
    DT_UINT16: "int_val",
    DT_INT64: "int64_val",
    DT_BOOL: "bool_val",
    DT_STRING: "string_val",
    DT_HALF: "half_val",
    DT_UINT32: "uint32_val",
    DT_UINT64: "uint64_val",
}
_ALL_VALUE_FIELDS = sorted(set(VALUE_FIELD.values()))

MAX_ELEMENTS = 1 << 31  # refuse tensors that claim more elements than any request can carry
# A single value is expanded over the whole shape (as TF does); a tiny message must not make
# the server allocate gigabytes, so the expansion is bounded.
MAX_BROADCAST_ELEMENTS = 1 << 24


def dtype_name(dt: int) -> str:
    return dtypes.name(dt)


def proto_to_numpy(tp, alias: str) -> np.ndarray:
    """Decode one TensorProto; errors name the input alias and say what is wrong."""
    dt = tp.dtype
    npdt = NUMPY_DTYPE.get(dt)
    if npdt is None:
        raise invalid(f"input {alias!r}: unsupported dtype {dtype_name(dt)}")
    if tp.tensor_shape.unknown_rank:
        raise invalid(f"input {alias!r}: tensor_shape must have a known rank")
    shape = tuple(d.size for d in tp.tensor_shape.dim)
    if any(d < 0 for d in shape):
        raise invalid(f"input {alias!r}: tensor_shape has a negative dimension {list(shape)}")
    count = math.prod(shape)
    if count > MAX_ELEMENTS:
        raise invalid(f"input {alias!r}: shape {list(shape)} has too many elements")
    if tp.tensor_content:
        if dt == DT_STRING:
            raise invalid(f"input {alias!r}: DT_STRING tensors cannot use tensor_content")
        content = tp.tensor_content
        if len(content) != count * npdt.itemsize:
            raise invalid(
                f"input {alias!r}: tensor_content has {len(content)} bytes but shape "
                f"{list(shape)} of {dtype_name(dt)} needs {count * npdt.itemsize}"
            )
        return np.frombuffer(content, dtype=npdt).reshape(shape)
    field = VALUE_FIELD[dt]
    values = getattr(tp, field)
    n = len(values)
    for other in _ALL_VALUE_FIELDS:
        if other != field and len(getattr(tp, other)):
            raise invalid(
                f"input {alias!r}: dtype is {dtype_name(dt)} but values were sent in {other}"
            )
    if dt == DT_STRING:
        arr = np.empty(n, dtype=object)
        arr[:] = list(values)
    elif dt == DT_HALF:  # half_val carries the raw 16-bit patterns in int32 slots
        arr = np.array(values, dtype=np.int64).astype(np.uint16).view(np.float16)
    elif field == "int_val" and npdt.itemsize < 4:
        # int8/uint8/int16/uint16 travel in int32 slots; TF keeps the low bits, as a cast does
        arr = np.array(values, dtype=np.int64).astype(npdt)
    else:
        arr = np.array(values, dtype=npdt)
    if n == count:
        return arr.reshape(shape)
    if n == 1 and count > 0:  # TF broadcasts a single value over the whole shape
        if count > MAX_BROADCAST_ELEMENTS:
            raise invalid(
                f"input {alias!r}: one value for shape {list(shape)} would expand to {count} "
                f"elements; the reference server expands at most {MAX_BROADCAST_ELEMENTS}"
            )
        return np.full(shape, arr[0], dtype=arr.dtype)
    if n == 0 and count == 0:
        return arr.reshape(shape)
    raise invalid(
        f"input {alias!r}: {n} values were sent for shape {list(shape)}, which holds {count}"
    )


def numpy_to_proto(arr: np.ndarray, tp, dt: int) -> None:
    """Fill TensorProto ``tp`` from ``arr`` with TF Serving's default (typed fields) layout."""
    tp.dtype = dt
    dims = tp.tensor_shape.dim
    for d in arr.shape:
        dims.add().size = d
    field = VALUE_FIELD.get(dt)
    if field is None:
        raise invalid(f"output dtype {dtype_name(dt)} cannot be serialized")
    if dt == DT_HALF:  # half_val carries the raw 16-bit patterns
        arr = arr.astype(np.float16).view(np.uint16)
    getattr(tp, field).extend(arr.ravel().tolist())


# ---------------------------------------------------------------------------------------------
# JSON (REST API)


def _decode_b64(value):
    if isinstance(value, dict):
        if len(value) == 1 and "b64" in value:
            try:
                return base64.b64decode(value["b64"], validate=True)
            except (ValueError, TypeError):
                raise invalid("Unable to base64 decode") from None
        raise invalid(
            f'JSON object {value!r} is not a tensor value (only {{"b64": ...}} objects are)'
        )
    if isinstance(value, list):
        return [_decode_b64(v) for v in value]
    if isinstance(value, str):
        return value.encode()
    return value


def json_to_numpy(value, alias: str, dt: int) -> np.ndarray:
    """Turn a JSON value (nested lists) into an array of the signature's dtype."""
    npdt = NUMPY_DTYPE.get(dt)
    if npdt is None:
        raise invalid(f"input {alias!r}: unsupported dtype {dtype_name(dt)}")
    if dt == DT_STRING:
        value = _decode_b64(value)
        try:
            arr = np.array(value, dtype=object)
        except ValueError as exc:
            raise invalid(f"input {alias!r}: ragged list: {exc}") from None
        if arr.dtype == object and any(isinstance(v, list) for v in arr.ravel()):
            # numpy keeps lists of different lengths as elements of an object array
            raise invalid(
                f"input {alias!r}: ragged list: setting an array element with a sequence."
            )
        if arr.dtype != object or any(not isinstance(v, bytes) for v in arr.ravel()):
            raise invalid(f"input {alias!r}: expected strings for DT_STRING")
        return arr
    try:
        arr = np.array(value)
    except ValueError:
        raise invalid(f"input {alias!r}: lists of different lengths cannot form a tensor") from None
    if arr.dtype == object or arr.dtype.kind in "US":
        raise invalid(
            f"input {alias!r}: expected numbers for {dtype_name(dt)}, got {type(value).__name__} "
            "with non-numeric or ragged values"
        )
    if dt == DT_BOOL:
        if arr.size and arr.dtype != np.bool_:
            raise invalid(f"input {alias!r}: expected true/false values for DT_BOOL")
        return arr.astype(np.bool_)
    if arr.dtype == np.bool_ and arr.size:
        raise invalid(f"input {alias!r}: expected numbers for {dtype_name(dt)}, got booleans")
    if npdt.kind in "iu" and arr.dtype.kind == "f":
        if arr.size and not np.all(np.equal(np.mod(arr, 1), 0)):
            raise invalid(f"input {alias!r}: expected integers for {dtype_name(dt)}, got fractions")
    if npdt.kind in "iu" and arr.dtype == np.bool_:
        raise invalid(f"input {alias!r}: expected integers for {dtype_name(dt)}, got booleans")
    if arr.size and npdt.kind in "iu":
        info = np.iinfo(npdt)
        if arr.min() < info.min or arr.max() > info.max:
            raise invalid(f"input {alias!r}: value out of range for {dtype_name(dt)}")
    return arr.astype(npdt, copy=False)


def binary_output(alias: str) -> bool:
    """TF Serving's REST rule: an output whose name ends in ``_bytes`` holds binary strings,
    written as ``{"b64": ...}`` objects."""
    return alias.endswith("_bytes")


def numpy_to_json(arr: np.ndarray, binary: bool = False):
    """Plain Python values. Strings of a ``binary`` output (``binary_output``) are
    ``{"b64": ...}`` objects; others are JSON strings, except those that are not UTF-8, which
    JSON cannot carry (TF Serving would write invalid JSON): those become b64 objects too."""
    if arr.dtype == object:

        def conv(v):
            if isinstance(v, bytes):
                if binary:
                    return {"b64": base64.b64encode(v).decode()}
                try:
                    return v.decode()
                except UnicodeDecodeError:
                    return {"b64": base64.b64encode(v).decode()}
            return v

        return np.vectorize(conv, otypes=[object])(arr).tolist() if arr.size else arr.tolist()
    # NaN and Infinity come out as those bare tokens, as TF Serving writes them (not strict JSON).
    return arr.tolist()
