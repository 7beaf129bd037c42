"""Requests built from the model's own signature: names, dtypes and shapes, random data.

No TensorFlow: the signature comes from GetModelMetadata (decoded by ``wire``) or from the REST
metadata JSON, and requests are encoded by ``wire`` (gRPC) or as JSON (REST).
"""

from __future__ import annotations

import dataclasses
import json
import urllib.request

import numpy as np

from harness import dtypes
from harness.errors import LoadError
from harness.load import wire


@dataclasses.dataclass(frozen=True)
class InputSpec:
    alias: str
    dtype: int
    shape: tuple[int, ...] | None  # with the batch dimension first (-1)


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


def random_inputs(
    specs: list[InputSpec], rows: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Random tensors of ``rows`` rows that fit the signature (unknown dims become 1)."""
    out = {}
    for spec in specs:
        if spec.shape is None:
            raise LoadError(
                f"input {spec.alias!r} has an unknown rank: cannot invent a shape for it"
            )
        shape = (rows, *[d if d > 0 else 1 for d in spec.shape[1:]])
        if spec.dtype == dtypes.DT_STRING:
            raise LoadError(
                f"input {spec.alias!r} is DT_STRING: give the load generator example payloads"
            )
        dt = wire.DTYPES.get(spec.dtype)
        if dt is None:
            raise LoadError(
                f"input {spec.alias!r} has dtype {spec.dtype}, which the load generator cannot make"
            )
        dt = np.dtype(dt)
        if dt.kind == "f":
            arr = rng.random(shape, dtype=np.float64).astype(dt)
        elif dt.kind == "b":
            arr = rng.random(shape) < 0.5
        else:
            arr = rng.integers(0, 10, size=shape).astype(dt)
        out[spec.alias] = arr
    return out


class PayloadPool:
    """A few pre-built request bodies per request size, picked by the size mix.

    Building bodies ahead keeps serialisation off the send path; several variants per size keep
    a server-side cache from seeing one request over and over.
    """

    def __init__(
        self,
        specs: list[InputSpec],
        mix: list[tuple[int, float]],
        encode,
        *,
        variants: int = 4,
        seed: int = 0,
    ) -> None:
        rng = np.random.default_rng(seed)
        self.sizes = np.array([s for s, _ in mix])
        self.cum = np.cumsum([p for _, p in mix])
        self.bodies = {
            s: [encode(random_inputs(specs, s, rng)) for _ in range(variants)] for s, _ in mix
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


def grpc_encoder(model_name: str, signature_name: str = ""):
    return lambda inputs: wire.predict_request(model_name, inputs, signature_name=signature_name)


def rest_encoder(signature_name: str = ""):
    def encode(inputs: dict[str, np.ndarray]) -> bytes:
        doc = {"inputs": {k: v.tolist() for k, v in inputs.items()}}
        if signature_name:
            doc["signature_name"] = signature_name
        return json.dumps(doc, separators=(",", ":")).encode()

    return encode
