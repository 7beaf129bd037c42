"""Requests built from the model's own signature: example rows from a payload, or random values.

No TensorFlow: the signature comes from GetModelMetadata (decoded by ``wire``), the REST
metadata JSON or the SavedModel's saved_model.pb (read by ``wire`` too), and requests are
encoded by ``wire`` (gRPC) or as JSON (REST).

``request_source`` is the one place that decides what a request carries and refuses what cannot
work, in one line naming the input: the harness calls it before Locust starts
(``preflight``), and every Locust user calls it again for its own pool. Rows are drawn with a
seeded generator that the encoder never touches, so gRPC and REST send the same rows.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import json
import math
import urllib.request
from pathlib import Path

import numpy as np

from harness import dtypes
from harness.config import parse_input_shapes
from harness.errors import ConfigError, LoadError
from harness.load import payload_files, wire

# What a failed check tells the user to do (flag names, and the experiment keys beside them).
PAYLOAD_HINT = "pass --payload FILE (load.payload) with example requests"
# Pre-built bodies per request size: at least this many, at most MAX_VARIANTS, and not more
# row data than VARIANT_BYTES per size (an image payload at size 256 is megabytes per body).
MIN_VARIANTS, MAX_VARIANTS = 4, 64
VARIANT_BYTES = 32 << 20


@dataclasses.dataclass(frozen=True)
class InputSpec:
    alias: str
    dtype: int
    shape: tuple[int, ...] | None  # with the batch dimension first (-1)


# -- the signature ---------------------------------------------------------------------------------


def signature_from_grpc(
    target: str, model_name: str, signature_name: str = "serving_default", timeout: float = 10.0
) -> list[InputSpec]:
    import grpc

    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary("/tensorflow.serving.PredictionService/GetModelMetadata")
        try:
            data = call(wire.metadata_request(model_name), timeout=timeout)
        except grpc.RpcError as exc:
            raise LoadError(
                f"GetModelMetadata for {model_name!r} at {target} failed: "
                f"{exc.code().name}: {exc.details()}"
            ) from None
    try:
        inputs = wire.signature_inputs(data, signature_name or "serving_default")
    except ValueError as exc:
        raise LoadError(f"model {model_name!r}: {exc}") from None
    return [InputSpec(a, dt, shape) for a, (dt, shape) in sorted(inputs.items())]


def signature_from_rest(
    url: str, model_name: str, signature_name: str = "serving_default", timeout: float = 10.0
) -> list[InputSpec]:
    try:
        with urllib.request.urlopen(
            f"{url.rstrip('/')}/v1/models/{model_name}/metadata", timeout=timeout
        ) as r:
            doc = json.loads(r.read())
    except (OSError, ValueError) as exc:
        raise LoadError(f"metadata for {model_name!r} at {url} failed: {exc}") from None
    sigs = doc.get("metadata", {}).get("signature_def", {}).get("signature_def", {})
    sig = sigs.get(signature_name or "serving_default")
    if sig is None:
        raise LoadError(
            f"model {model_name!r}: signature {signature_name!r} not found; it has {', '.join(sigs)}"
        )
    out = []
    for alias, info in sorted(sig.get("inputs", {}).items()):
        shape_doc = info.get("tensor_shape", {})
        shape = (
            None
            if shape_doc.get("unknown_rank")
            else tuple(int(d.get("size", 0)) for d in shape_doc.get("dim", []))
        )
        out.append(InputSpec(alias, dtypes.code(info.get("dtype")), shape))
    return out


def signature_from_saved_model(
    base: str | Path, signature_name: str = "serving_default"
) -> list[InputSpec] | None:
    """The signature of the newest version under a model base path, read from its
    saved_model.pb; None when there is none to read (the server will say why)."""
    base = Path(base)
    versions = (
        sorted((int(p.name), p) for p in base.glob("*") if p.name.isdigit() and p.is_dir())
        if base.is_dir()
        else []
    )
    pb = versions[-1][1] / "saved_model.pb" if versions else None
    if pb is None or not pb.is_file():
        return None
    try:
        inputs = wire.saved_model_inputs(pb.read_bytes(), signature_name or "serving_default")
    except ValueError as exc:
        if "signature" in str(exc):
            raise ConfigError(
                f"model at {base}: {exc}", hint="set model.signature to one the model has"
            ) from None
        return None  # not a SavedModel this reader understands: the server will say more
    return [InputSpec(a, dt, shape) for a, (dt, shape) in sorted(inputs.items())]


# -- what a request carries ------------------------------------------------------------------------


class RandomRows:
    """Random values shaped by the signature (and ``--input-shape`` for dynamic dimensions)."""

    rows = None

    def __init__(self, specs: list[InputSpec], shapes: dict[str, tuple[int, ...]]) -> None:
        self.specs = specs
        self.shapes = shapes  # alias -> the shape of one row
        self.row_bytes = sum(
            math.prod(shapes[s.alias]) * wire.DTYPES[s.dtype].itemsize for s in specs
        )

    def take(self, size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        out = {}
        for spec in self.specs:
            dt = wire.DTYPES[spec.dtype]
            shape = (size, *self.shapes[spec.alias])
            if dt.kind == "f":
                out[spec.alias] = rng.random(shape, dtype=np.float64).astype(dt)
            elif dt.kind == "b":
                out[spec.alias] = rng.random(shape) < 0.5
            else:
                out[spec.alias] = rng.integers(0, 10, size=shape).astype(dt)
        return out


class PayloadRows:
    """Rows of a payload: a request of ``size`` rows draws ``size`` of them (with replacement
    only when the payload has fewer)."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.arrays = arrays
        self.rows = next(iter(arrays.values())).shape[0]
        self.row_bytes = sum(_nbytes(a) for a in arrays.values()) / self.rows

    def take(self, size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        idx = rng.choice(self.rows, size, replace=self.rows < size)
        return {k: a[idx] for k, a in self.arrays.items()}


def _nbytes(a: np.ndarray) -> int:
    return sum(len(v) for v in a.ravel()) if a.dtype == object else a.nbytes


def request_source(
    specs: list[InputSpec],
    payload: str | Path = "",
    input_shapes=(),
    signature_name: str = "serving_default",
):
    """The rows requests are built from: ``payload``'s, fitted to ``specs``, or random values.
    Whatever cannot work is a ConfigError naming the input and what to do."""
    if payload:
        parts = _read_cached(str(Path(payload).resolve()), _stamp(Path(payload)))
        return PayloadRows(fit(parts, specs, signature_name))
    shapes = parse_input_shapes(input_shapes) if input_shapes else {}
    return RandomRows(specs, random_shapes(specs, shapes))


def preflight(specs: list[InputSpec] | None, load, signature_name: str = "serving_default"):
    """Check, in the harness process before any load, that requests can be built for this
    signature from ``load``'s payload or input shapes (None: nothing to check against yet)."""
    if specs is None:
        return None
    return request_source(specs, load.payload, load.input_shapes, signature_name)


def check_saved_model(base: str | Path, load, signature_name: str = "serving_default"):
    """``preflight`` against the SavedModel under ``base``, before any server starts."""
    return preflight(signature_from_saved_model(base, signature_name), load, signature_name)


def _stamp(path: Path) -> tuple:
    """What invalidates a cached read: the files' sizes and modification times."""
    try:
        files = sorted(path.glob("*.json")) if path.is_dir() else [path]
        return tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in files)
    except OSError:
        return ()


@functools.lru_cache(maxsize=4)
def _read_cached(path: str, stamp: tuple) -> list[payload_files.Part]:
    return payload_files.read(path)


# -- random values ---------------------------------------------------------------------------------


def random_shapes(
    specs: list[InputSpec], given: dict[str, tuple[int, ...]]
) -> dict[str, tuple[int, ...]]:
    """alias -> the row shape random values take; refuses what random values cannot stand for."""
    known = {s.alias for s in specs}
    for name in given:
        if name not in known:
            raise ConfigError(
                f"--input-shape names input {name!r}, which the signature does not have "
                f"(its inputs: {', '.join(sorted(known))})"
            )
    out = {}
    for spec in specs:
        where = f"input {spec.alias!r}"
        if spec.dtype == dtypes.DT_STRING:
            raise ConfigError(
                f"{where} is DT_STRING: random values cannot stand for its strings (encoded "
                "images, serialized examples)",
                hint=PAYLOAD_HINT + '; binary strings as {"b64": "..."}',
            )
        if spec.dtype not in wire.DTYPES:
            raise ConfigError(
                f"{where} has dtype {dtypes.name(spec.dtype)}, which the load generator cannot send"
            )
        row = given.get(spec.alias)
        if row is not None:
            _check_row_shape(row, spec, f"--input-shape {spec.alias}")
        elif spec.shape is None:
            raise ConfigError(
                f"{where} has an unknown rank: random values need its shape",
                hint=f"{PAYLOAD_HINT}, or --input-shape {spec.alias}=D1,D2,... (load.input_shapes)",
            )
        elif any(d < 0 for d in spec.shape[1:]):
            raise _dynamic(spec)
        out[spec.alias] = tuple(row if row is not None else spec.shape[1:])
    return out


def random_inputs(
    specs: list[InputSpec], rows: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Random tensors of ``rows`` rows that fit the signature (fixed dimensions only)."""
    return RandomRows(specs, random_shapes(specs, {})).take(rows, rng)


def _dynamic(spec: InputSpec) -> ConfigError:
    dims = [i for i, d in enumerate(spec.shape) if d < 0 and i > 0]
    example = ",".join(f"D{i}" if d < 0 else str(d) for i, d in enumerate(spec.shape) if i > 0)
    return ConfigError(
        f"input {spec.alias!r} has shape {list(spec.shape)}: dimension"
        f"{'s' if len(dims) > 1 else ''} {', '.join(map(str, dims))} "
        f"{'have' if len(dims) > 1 else 'has'} no fixed size, and random values would guess it",
        hint=f"{PAYLOAD_HINT}, or --input-shape {spec.alias}={example} (load.input_shapes)",
    )


def _check_row_shape(row: tuple[int, ...], spec: InputSpec, where: str) -> None:
    """A row's shape against the signature's (its batch dimension left out)."""
    if spec.shape is None:
        return
    if not spec.shape:
        raise ConfigError(
            f"{where}: the signature's input {spec.alias!r} is a scalar (shape []), with no "
            "batch dimension to put rows along",
            hint="the load generator sends batches; export the model with a batch dimension",
        )
    want = spec.shape[1:]
    if len(row) != len(want):
        raise ConfigError(
            f"{where}: a row has shape {list(row)}, but the signature's shape "
            f"{list(spec.shape)} takes rows of {len(want)} dimension{'s' * (len(want) != 1)}",
            hint="the first dimension of the signature is the batch; -1 is any size",
        )
    for i, (w, d) in enumerate(zip(want, row), start=1):
        if w >= 0 and w != d:
            raise ConfigError(
                f"{where}: dimension {i} is {d}, but the signature's shape {list(spec.shape)} "
                f"fixes it at {w}",
                hint="rows must fit the signature; -1 is any size",
            )


# -- a payload fitted to the signature -------------------------------------------------------------


def fit(
    parts: list[payload_files.Part], specs: list[InputSpec], signature_name: str = ""
) -> dict[str, np.ndarray]:
    """Every part's inputs named, typed and shaped as the signature says, the parts' rows put
    together: alias -> array with the rows first, in signature order."""
    want_sig = signature_name or "serving_default"
    columns: dict[str, list[tuple[str, np.ndarray]]] = {s.alias: [] for s in specs}
    for part in parts:
        if part.signature_name and part.signature_name != want_sig:
            raise ConfigError(
                f"payload {part.source} is for signature {part.signature_name!r}, but the model "
                f"is measured through {want_sig!r}",
                hint=f"set model.signature = {part.signature_name!r} (--set model.signature=...)",
            )
        for alias, arr in _named(part, specs).items():
            spec = next(s for s in specs if s.alias == alias)
            typed = _typed(arr, spec, part.source)
            _check_row_shape(typed.shape[1:], spec, f"payload {part.source}: input {alias!r}")
            columns[alias].append((part.source, typed))
    return {alias: _join(alias, pieces) for alias, pieces in columns.items()}


def _named(part: payload_files.Part, specs: list[InputSpec]) -> dict[str, np.ndarray]:
    inputs = dict(part.inputs)
    aliases = [s.alias for s in specs]
    if payload_files.UNNAMED in inputs:
        if len(specs) != 1:
            raise ConfigError(
                f"payload {part.source} gives values without input names, but the signature has "
                f"{len(specs)} inputs ({', '.join(aliases)})",
                hint='name them: rows as {"instances": [{"a": ..., "b": ...}]} or columns as '
                '{"inputs": {"a": [...], "b": [...]}}',
            )
        inputs[aliases[0]] = inputs.pop(payload_files.UNNAMED)
    for name in inputs:
        if name not in aliases:
            raise ConfigError(
                f"payload {part.source} has input {name!r}, which the signature does not have "
                f"(its inputs: {', '.join(aliases)})",
                hint="name the inputs as the model's signature does (harness reads it from the model)",
            )
    for alias in aliases:
        if alias not in inputs:
            raise ConfigError(
                f"payload {part.source} has no values for input {alias!r} (the signature's "
                f"inputs: {', '.join(aliases)})",
                hint="every row needs a value for every input",
            )
    return inputs


def _typed(arr: np.ndarray, spec: InputSpec, src: str) -> np.ndarray:
    name = dtypes.name(spec.dtype)
    where = f"payload {src}: input {spec.alias!r} is {name}"
    if spec.dtype == dtypes.DT_STRING:
        if arr.dtype != object:
            raise ConfigError(
                f"{where} but the payload gives numbers",
                hint='give strings, or {"b64": "..."} objects for binary data such as encoded images',
            )
        return arr
    if arr.dtype == object:
        raise ConfigError(f"{where} but the payload gives strings", hint="give numbers")
    npdt = wire.DTYPES.get(spec.dtype)
    if npdt is None:
        raise ConfigError(
            f"payload {src}: input {spec.alias!r} has dtype {name}, which the load generator "
            "cannot send"
        )
    kind = arr.dtype.kind
    if npdt.kind == "b" and kind != "b":
        raise ConfigError(f"{where} but the payload gives numbers", hint="give true or false")
    if npdt.kind != "b" and kind == "b":
        raise ConfigError(f"{where} but the payload gives true/false values", hint="give numbers")
    if npdt.kind in "iu" and arr.size:
        if kind == "f" and not (np.all(np.isfinite(arr)) and np.all(np.mod(arr, 1) == 0)):
            raise ConfigError(f"{where} but the payload gives fractions", hint="give whole numbers")
        info = np.iinfo(npdt)
        if arr.min() < info.min or arr.max() > info.max:
            raise ConfigError(
                f"{where} but the payload has values outside [{info.min}, {info.max}]"
            )
    return arr.astype(npdt)


def _join(alias: str, pieces: list[tuple[str, np.ndarray]]) -> np.ndarray:
    (src0, first), *rest = pieces
    for src, arr in rest:
        if arr.shape[1:] != first.shape[1:]:
            raise ConfigError(
                f"payload: input {alias!r} has rows of shape {list(first.shape[1:])} in {src0} "
                f"but {list(arr.shape[1:])} in {src}",
                hint="rows drawn into one request must have one shape; keep files of one shape "
                "together, or pad them",
            )
    return np.concatenate([a for _, a in pieces]) if rest else first


# -- pre-built requests ----------------------------------------------------------------------------


class PayloadPool:
    """Pre-built request bodies per request size, picked by the size mix.

    Building bodies ahead keeps serialisation off the send path; several variants per size
    (enough to use a payload's rows, within a memory budget) keep a server-side cache from seeing
    one request over and over. ``source`` is a RandomRows or PayloadRows (a list of InputSpec
    means random rows). The draws depend only on ``seed``, the mix and the rows, never on the
    encoder: a gRPC and a REST pool of the same seed carry the same rows.
    """

    def __init__(self, source, mix: list[tuple[int, float]], encode, *, seed: int = 0) -> None:
        if isinstance(source, list):
            source = RandomRows(source, random_shapes(source, {}))
        rng = np.random.default_rng(seed)
        self.sizes = np.array([s for s, _ in mix])
        self.cum = np.cumsum([p for _, p in mix])
        self.bodies = {
            s: [encode(source.take(s, rng)) for _ in range(variants(source, s))] for s, _ in mix
        }
        self._rng = rng
        self._i = 0

    def pick(self) -> tuple[int, bytes]:
        u = self._rng.random()
        size = int(
            self.sizes[min(int(np.searchsorted(self.cum, u, side="right")), len(self.sizes) - 1)]
        )
        bodies = self.bodies[size]
        self._i += 1
        return size, bodies[self._i % len(bodies)]


def variants(source, size: int) -> int:
    """How many bodies of ``size`` rows to build: enough to use every row of a payload once."""
    n = MIN_VARIANTS if source.rows is None else math.ceil(source.rows / size)
    n = min(max(n, MIN_VARIANTS), MAX_VARIANTS)
    budget = int(VARIANT_BYTES // max(size * source.row_bytes, 1))
    return max(1, min(n, budget))


def grpc_encoder(model_name: str, signature_name: str = ""):
    return lambda inputs: wire.predict_request(model_name, inputs, signature_name=signature_name)


def rest_encoder(signature_name: str = ""):
    """Columnar REST bodies; strings as ``{"b64": ...}`` objects (TF Serving decodes these for
    any DT_STRING input)."""

    def encode(inputs: dict[str, np.ndarray]) -> bytes:
        doc = {"inputs": {k: json_value(v) for k, v in inputs.items()}}
        if signature_name:
            doc["signature_name"] = signature_name
        return json.dumps(doc, separators=(",", ":")).encode()

    return encode


def json_value(arr: np.ndarray):
    """An array as TF Serving's REST API writes a tensor: nested lists, bytes as b64 objects."""
    if arr.dtype != object:
        return arr.tolist()

    def conv(v):
        if isinstance(v, list):
            return [conv(x) for x in v]
        return {"b64": base64.b64encode(v.encode() if isinstance(v, str) else v).decode()}

    return conv(arr.tolist())
