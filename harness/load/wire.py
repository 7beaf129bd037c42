"""Just enough protobuf wire format to talk to TF Serving without TensorFlow.

``tensorflow_serving.apis`` imports all of TensorFlow (~600 MB, ~3 s per process). A load worker
only needs to encode a PredictRequest from numpy arrays and to read a model's input signature
from GetModelMetadata, so both are written here against the .proto field numbers:

- PredictRequest: model_spec = 1, inputs = 2 (map<string, TensorProto>), output_filter = 3
- ModelSpec: name = 1, version = 2 (Int64Value, value = 1), signature_name = 3, version_label = 4
- TensorProto: dtype = 1, tensor_shape = 2, tensor_content = 4, string_val = 8 (repeated bytes:
  DT_STRING never travels in tensor_content)
- TensorShapeProto: dim = 2 (Dim: size = 1), unknown_rank = 3
- GetModelMetadataRequest: model_spec = 1, metadata_field = 2
- GetModelMetadataResponse: model_spec = 1, metadata = 2 (map<string, Any>; Any: value = 2)
- SignatureDefMap: signature_def = 1 (map<string, SignatureDef>)
- SignatureDef: inputs = 1, outputs = 2 (map<string, TensorInfo>), method_name = 3
- TensorInfo: name = 1, dtype = 2, tensor_shape = 3
- SavedModel (saved_model.pb): meta_graphs = 2; MetaGraphDef: meta_info_def = 1 (MetaInfoDef:
  tags = 4), signature_def = 5 (map<string, SignatureDef>)
"""

from __future__ import annotations

import numpy as np

from harness import dtypes

# DataType codes and the numpy dtypes a load generator can produce for them (harness.dtypes).
DTYPES = {d.code: np.dtype(d.numpy) for d in dtypes.fixed_size()}
DTYPE_OF = {np.dtype(v): k for k, v in DTYPES.items()}


def _varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _int_field(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def model_spec(
    name: str, signature_name: str = "", version: int | None = None, label: str = ""
) -> bytes:
    out = _field(1, name.encode())
    if version is not None:
        out += _field(2, _int_field(1, version))
    if signature_name:
        out += _field(3, signature_name.encode())
    if label:
        out += _field(4, label.encode())
    return out


def tensor_proto(array: np.ndarray) -> bytes:
    """A TensorProto: numbers as tensor_content; strings (an object array of ``bytes``, or
    numpy's bytes and str arrays) as one string_val per element, in row-major order."""
    shape = b"".join(_field(2, _int_field(1, d) if d else b"") for d in array.shape)
    if array.dtype == object or array.dtype.kind in "SU":
        values = b"".join(_field(8, _as_bytes(v)) for v in array.ravel())
        return _int_field(1, dtypes.DT_STRING) + _field(2, shape) + values
    dt = DTYPE_OF.get(array.dtype)
    if dt is None:
        raise ValueError(f"no TensorProto dtype for numpy {array.dtype}")
    return _int_field(1, dt) + _field(2, shape) + _field(4, np.ascontiguousarray(array).tobytes())


def _as_bytes(v) -> bytes:
    if isinstance(v, (bytes, np.bytes_)):
        return bytes(v)
    if isinstance(v, str):
        return v.encode()
    raise ValueError(f"a DT_STRING element must be bytes or str, got {type(v).__name__}")


def predict_request(
    model_name: str,
    inputs: dict[str, np.ndarray],
    *,
    signature_name: str = "",
    version: int | None = None,
) -> bytes:
    """A serialized tensorflow.serving.PredictRequest (tensors as tensor_content, as
    ``tf.make_tensor_proto`` sends them)."""
    out = _field(1, model_spec(model_name, signature_name, version))
    for alias, array in inputs.items():
        entry = _field(1, alias.encode()) + _field(2, tensor_proto(array))
        out += _field(2, entry)
    return out


def metadata_request(model_name: str) -> bytes:
    return _field(1, model_spec(model_name)) + _field(2, b"signature_def")


# -- decoding -------------------------------------------------------------------------------------


def parse(data: bytes) -> dict[int, list]:
    """Fields of one message: {number: [int or bytes, ...]} (nested messages stay bytes)."""
    fields: dict[int, list] = {}
    i, n = 0, len(data)
    while i < n:
        key, i = _read_varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _read_varint(data, i)
        elif wire == 2:
            length, i = _read_varint(data, i)
            value = data[i : i + length]
            if len(value) != length:
                raise ValueError("truncated message")
            i += length
        elif wire == 1:
            value, i = data[i : i + 8], i + 8
        elif wire == 5:
            value, i = data[i : i + 4], i + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        fields.setdefault(number, []).append(value)
    return fields


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if i >= len(data):
            raise ValueError("truncated varint")
        b = data[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def _map(entries: list[bytes]) -> dict[bytes, bytes]:
    out = {}
    for entry in entries:
        f = parse(entry)
        out[f.get(1, [b""])[0]] = f.get(2, [b""])[0]
    return out


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def tensor_info(data: bytes) -> tuple[int, tuple[int, ...] | None]:
    """(dtype, shape or None for unknown rank) of a TensorInfo."""
    f = parse(data)
    dtype = f.get(2, [0])[0]
    shape_f = parse(f.get(3, [b""])[0])
    if shape_f.get(3, [0])[0]:
        return dtype, None
    dims = tuple(_signed(parse(d).get(1, [0])[0]) for d in shape_f.get(2, []))
    return dtype, dims


def signature_inputs(
    metadata_response: bytes, signature_name: str = "serving_default"
) -> dict[str, tuple[int, tuple[int, ...] | None]]:
    """Input aliases -> (dtype, shape) of one signature, from a GetModelMetadataResponse."""
    metadata = _map(parse(metadata_response).get(2, []))
    any_msg = metadata.get(b"signature_def")
    if any_msg is None:
        raise ValueError("GetModelMetadata response carries no signature_def")
    sig_map = _map(parse(parse(any_msg).get(2, [b""])[0]).get(1, []))
    return _inputs_of(sig_map, signature_name)


def saved_model_inputs(
    saved_model_pb: bytes, signature_name: str = "serving_default", tag: bytes = b"serve"
) -> dict[str, tuple[int, tuple[int, ...] | None]]:
    """Input aliases -> (dtype, shape) of one signature, from a saved_model.pb's meta graph
    tagged ``serve`` (the one TF Serving loads)."""
    for meta_graph in parse(saved_model_pb).get(2, []):
        f = parse(meta_graph)
        if tag in parse(f.get(1, [b""])[0]).get(4, []):
            return _inputs_of(_map(f.get(5, [])), signature_name)
    raise ValueError(f"no meta graph is tagged {tag.decode()!r}")


def _inputs_of(sig_map: dict[bytes, bytes], signature_name: str):
    sig = sig_map.get(signature_name.encode())
    if sig is None:
        names = ", ".join(k.decode() for k in sig_map)
        raise ValueError(f"signature {signature_name!r} not found; the model has: {names}")
    return {k.decode(): tensor_info(v) for k, v in _map(parse(sig).get(1, [])).items()}
