"""The request path shared by gRPC and REST: find the model, check inputs, batch or run."""

from __future__ import annotations

import time

import numpy as np

from harness.refserver.batcher import Batcher, Job
from harness.refserver.manager import ModelManager
from harness.refserver.metrics import ServingMetrics
from harness.refserver.model import LoadedModel, Signature
from harness.refserver.status import ServingError, invalid

monotonic = time.monotonic


class Predictor:
    def __init__(
        self, manager: ModelManager, metrics: ServingMetrics, batcher: Batcher | None = None
    ) -> None:
        self.manager = manager
        self.metrics = metrics
        self.batcher = batcher

    def resolve(
        self, name: str, version: int | None, label: str | None, signature_name: str
    ) -> tuple[LoadedModel, Signature]:
        if not name:
            raise invalid("Missing ModelSpec")
        model = self.manager.resolve(name, version, label)
        return model, model.signature(signature_name)

    def run(
        self,
        model_name: str,
        model: LoadedModel,
        sig: Signature,
        given: dict[str, np.ndarray],
        deadline: float | None,
    ) -> list[np.ndarray]:
        """Outputs in signature order, or ServingError. Blocks until the batch has run."""
        # a version without queue options (no batching_params.pbtxt under per-model batching)
        # runs alone, as TF Serving runs a session it did not wrap for batching
        batcher = self.batcher if model.batching is not None else None
        feeds, size = sig.check_inputs(given, batching=batcher is not None)
        if batcher is None or size == 0:
            t0 = monotonic()
            outputs = model.run(sig, feeds)
            self.metrics.runtime_latency.observe(
                (monotonic() - t0) * 1e6, model_name, "Predict", "TF1"
            )
            return outputs
        job = Job(model, sig, feeds, deadline, model_name)
        batcher.submit((model_name, model.version, sig.name), job, size)
        if not job.wait(None if deadline is None else deadline - monotonic() + 1.0):
            job.fail(
                ServingError(
                    "DEADLINE_EXCEEDED", "Deadline exceeded while waiting for the batch to run"
                )
            )
        if job.error is not None:
            raise job.error
        return job.outputs

    def record(self, model_name: str, code: str, started: float, entrypoint: str) -> None:
        m = self.metrics
        m.request_count.inc(model_name, code)
        m.request_latency.observe((monotonic() - started) * 1e6, model_name, "predict", entrypoint)


def select_outputs(sig: Signature, output_filter) -> list[str]:
    """Aliases to return: all outputs, or those named by ``output_filter``."""
    aliases = list(sig.outputs)
    if not output_filter:
        return aliases
    for alias in output_filter:
        if alias not in sig.outputs:
            raise invalid(
                f"output tensor alias not found in signature: {alias} Outputs expected to be in the set "
                f"{{{','.join(aliases)}}}."
            )
    return [a for a in aliases if a in set(output_filter)]
