"""One loaded SavedModel version: a TensorFlow session, its signatures, and input checks.

We load with TF1-style sessions, as TF Serving does, and call the graph through session callables:
the lowest per-call overhead TensorFlow offers from Python, and ``Session.run`` releases the GIL,
so batches from different threads really run in parallel.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from pathlib import Path

import numpy as np

from harness.codes import CODE_NAMES
from harness.errors import ModelError
from harness.refserver.status import ServingError, invalid
from harness.refserver.tensors import NUMPY_DTYPE, dtype_name

log = logging.getLogger("harness.refserver")

WARMUP_FILE = "tf_serving_warmup_requests"


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    alias: str
    name: str  # graph tensor name, e.g. "serving_default_x:0"
    dtype: int
    shape: tuple[int, ...] | None  # None: unknown rank; -1: unknown dimension


@dataclasses.dataclass(frozen=True)
class Signature:
    name: str
    method_name: str
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]

    def check_inputs(
        self, given: dict[str, np.ndarray], *, batching: bool
    ) -> tuple[list[np.ndarray], int]:
        """Validate a request's tensors against this signature.

        Returns the arrays in signature order and the request's size (its 0th dimension).
        """
        for alias in given:
            if alias not in self.inputs:
                raise invalid(
                    f"input tensor alias not found in signature: {alias}. "
                    f"Inputs expected to be in the set {{{','.join(sorted(self.inputs))}}}."
                )
        missing = [a for a in self.inputs if a not in given]
        if missing:
            raise invalid(
                f"input size does not match signature: {len(given)}!={len(self.inputs)} for inputs "
                f"{{{','.join(sorted(given))}}}; missing {{{','.join(sorted(missing))}}}"
            )
        ordered = []
        size = None
        for alias, spec in self.inputs.items():
            arr = given[alias]
            want = NUMPY_DTYPE.get(spec.dtype)
            if want is not None and arr.dtype != want:
                raise invalid(
                    f"Expected tensor of type {dtype_name(spec.dtype)} but got type "
                    f"{_np_dtype_name(arr.dtype)} for input {alias!r}"
                )
            if spec.shape is not None:
                if arr.ndim != len(spec.shape) or any(
                    w != -1 and w != d for w, d in zip(spec.shape, arr.shape)
                ):
                    raise invalid(
                        f"input {alias!r} has shape {list(arr.shape)}, which does not match the "
                        f"signature's {list(spec.shape)} (-1 is any size)"
                    )
            if batching:
                if arr.ndim == 0:
                    raise invalid("Batching input tensors must have at least one dimension")
                if size is None:
                    size = arr.shape[0]
                elif arr.shape[0] != size:
                    raise invalid("Batching Run() input tensors must have equal 0th-dimension size")
            ordered.append(arr)
        if size is None:
            size = ordered[0].shape[0] if ordered and ordered[0].ndim else 1
        return ordered, size


def _np_dtype_name(dt: np.dtype) -> str:
    for k, v in NUMPY_DTYPE.items():
        if v == dt:
            return dtype_name(k)
    return str(dt)


class LoadedModel:
    """A SavedModel version held in a session, ready to run."""

    def __init__(self, path: Path, version: int, *, intra_op: int = 0, inter_op: int = 0) -> None:
        import tensorflow as tf

        self.path = Path(path)
        self.version = version
        # the queue options this version batches with; None: unbatched (the manager sets it)
        self.batching = None
        config = tf.compat.v1.ConfigProto(
            intra_op_parallelism_threads=intra_op, inter_op_parallelism_threads=inter_op
        )
        # Spinning pool threads steal the core from the request path when the server is pinned.
        config.experimental.disable_thread_spinning = True
        self._graph = tf.Graph()
        self._session = tf.compat.v1.Session(graph=self._graph, config=config)
        try:
            with self._graph.as_default():
                meta = tf.compat.v1.saved_model.loader.load(
                    self._session, ["serve"], str(self.path)
                )
        except Exception as exc:  # TensorFlow raises many kinds here
            self._session.close()
            raise ModelError(f"cannot load SavedModel from {self.path}: {exc}") from None
        self.signature_defs = meta.signature_def
        self.signatures = {name: _signature(name, sd) for name, sd in meta.signature_def.items()}
        # One inter-op thread would only hand work from the caller to itself: run in the caller.
        effective_inter = inter_op or _cores()
        self._caller_thread = effective_inter == 1
        self._callables: dict[str, object] = {}
        self._lock = threading.Lock()

    def signature(self, name: str) -> Signature:
        sig = self.signatures.get(name or "serving_default")
        if sig is None:
            raise ServingError(
                "INVALID_ARGUMENT" if name else "FAILED_PRECONDITION",
                f'Serving signature name: "{name or "serving_default"}" not found in signature def',
            )
        return sig

    def _callable(self, sig: Signature):
        fn = self._callables.get(sig.name)
        if fn is None:
            with self._lock:
                fn = self._callables.get(sig.name)
                if fn is None:
                    fn = self._callables[sig.name] = self._make_callable(sig)
        return fn

    def _make_callable(self, sig: Signature):
        """A callable over TF_SessionRunCallable: ~15 us per call, where ``Session.run`` and the
        public ``make_callable`` with feeds cost ~100 us on this kind of machine."""
        from tensorflow.core.protobuf import config_pb2

        opts = config_pb2.CallableOptions()
        opts.feed.extend(s.name for s in sig.inputs.values())
        opts.fetch.extend(s.name for s in sig.outputs.values())
        if self._caller_thread:
            opts.run_options.inter_op_thread_pool = -1
        make = getattr(self._session, "_make_callable_from_options", None)
        if make is not None:
            return make(opts)
        fetches = list(opts.fetch)
        feeds = list(opts.feed)
        return self._session.make_callable(fetches, feeds)

    def run(self, sig: Signature, feeds: list[np.ndarray]) -> list[np.ndarray]:
        """Run the signature on arrays in signature input order; outputs in signature order."""
        fn = self._callable(sig)
        try:
            return fn(*feeds)
        except Exception as exc:
            code = _tf_error_code(exc)
            raise ServingError(code, getattr(exc, "message", None) or str(exc)) from None

    def warm_up(self) -> int:
        """Replay ``assets.extra/tf_serving_warmup_requests`` as TF Serving does (PredictionLog
        records in a TFRecord file); returns how many ran. Without the file there is no warm-up
        and, as with TF Serving, the first request pays for graph optimisation."""
        path = self.path / "assets.extra" / WARMUP_FILE
        if not path.is_file():
            return 0
        import tensorflow as tf
        from tensorflow_serving.apis import prediction_log_pb2

        from harness.refserver.tensors import proto_to_numpy

        count = 0
        for record in tf.compat.v1.io.tf_record_iterator(str(path)):
            log_entry = prediction_log_pb2.PredictionLog.FromString(record)
            if log_entry.WhichOneof("log_type") != "predict_log":
                raise ModelError(f"{path}: only predict_log warm-up records are supported")
            request = log_entry.predict_log.request
            sig = self.signature(request.model_spec.signature_name)
            given = {alias: proto_to_numpy(tp, alias) for alias, tp in request.inputs.items()}
            feeds, _ = sig.check_inputs(given, batching=False)
            self.run(sig, feeds)
            count += 1
        log.info(
            "Finished reading warmup data for model at %s. Number of warmup records read: %d.",
            self.path,
            count,
        )
        return count

    def close(self) -> None:
        self._session.close()


def _signature(name: str, sd) -> Signature:
    def spec(alias, info):
        shape = (
            None if info.tensor_shape.unknown_rank else tuple(d.size for d in info.tensor_shape.dim)
        )
        return TensorSpec(alias, info.name, info.dtype, shape)

    return Signature(
        name=name,
        method_name=sd.method_name,
        inputs={a: spec(a, i) for a, i in sorted(sd.inputs.items())},
        outputs={a: spec(a, i) for a, i in sorted(sd.outputs.items())},
    )


def _cores() -> int:
    from harness.batching import schedulable_cores

    return schedulable_cores()


def _tf_error_code(exc: Exception) -> str:
    code = getattr(exc, "error_code", None)
    return CODE_NAMES.get(code, "INTERNAL") if code else "INTERNAL"
