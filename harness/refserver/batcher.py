"""Drives the scheduler policy with real threads and time, and runs the batches it forms.

One pool of ``num_batch_threads`` threads serves every model; each model version and signature
has its own queue (as in TF Serving). A request thread submits a ``Job`` and blocks on the job's
lock until its batch has run; batch threads run TensorFlow with the GIL released.
"""

from __future__ import annotations

import logging
import math
import threading
import time

import numpy as np

from harness import scheduler as policy
from harness.batching import EffectiveBatching
from harness.refserver.batch_trace import BatchTrace
from harness.refserver.metrics import ServingMetrics
from harness.refserver.status import ServingError, invalid

log = logging.getLogger("harness.refserver")
monotonic = time.monotonic
perf_counter = time.perf_counter
thread_time = time.thread_time
process_time = time.process_time


class Job:
    """One request waiting for its batch: inputs in signature order, then outputs or an error."""

    __slots__ = (
        "model",
        "model_name",
        "signature",
        "inputs",
        "deadline",
        "outputs",
        "error",
        "_done",
        "_lock",
        "_parts",
        "_pending",
        "_finished",
    )

    def __init__(
        self,
        model,
        signature,
        inputs: list[np.ndarray],
        deadline: float | None,
        model_name: str = "",
    ) -> None:
        self.model = model
        self.model_name = model_name
        self.signature = signature
        self.inputs = inputs
        self.deadline = deadline
        self.outputs: list[np.ndarray] | None = None
        self.error: ServingError | None = None
        self._done = threading.Lock()  # released once, when the job has its outputs or its error
        self._done.acquire()
        self._lock = threading.Lock()  # pieces of a split job may finish on two threads at once
        self._parts: list[tuple[int, list[np.ndarray]]] = []
        self._pending = 1
        self._finished = False

    def expect_pieces(self, n: int) -> None:
        self._pending = n

    def _finish(self, outputs: list[np.ndarray] | None, error: ServingError | None) -> None:
        with self._lock:
            if self._finished:
                return  # the first outcome wins (a late piece after a timeout, a second failure)
            self._finished = True
            self.outputs, self.error = outputs, error
        self._done.release()

    def piece_done(self, start: int, outputs: list[np.ndarray]) -> None:
        if self._pending == 1:
            self._finish(outputs, None)
            return
        with self._lock:
            self._parts.append((start, outputs))
            complete = len(self._parts) == self._pending
        if complete:
            parts = sorted(self._parts, key=lambda p: p[0])
            merged = [np.concatenate([p[1][i] for p in parts]) for i in range(len(parts[0][1]))]
            self._finish(merged, None)

    def fail(self, error: ServingError) -> None:
        self._finish(None, error)

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.acquire(timeout=-1 if timeout is None else max(timeout, 0.0))


class Batcher:
    """The shared batch thread pool plus per-(model, version, signature) queues."""

    def __init__(
        self, params: EffectiveBatching, metrics: ServingMetrics, thread_pool_name: str = ""
    ) -> None:
        self.params = params
        self.metrics = metrics
        self.thread_pool_name = thread_pool_name or "shared_batch_scheduler"
        self._sched = policy.Scheduler()
        self._queues: dict[tuple, policy.BatchQueue] = {}
        self._cond = threading.Condition(threading.Lock())
        self._idle = 0
        self._stopping = False
        self.trace = BatchTrace.from_env()
        self._threads = [
            threading.Thread(target=self._loop, args=(i,), name=f"batch-{i}", daemon=True)
            for i in range(params.num_batch_threads)
        ]
        for t in self._threads:
            t.start()

    # -- request side ---------------------------------------------------------------------------

    def submit(self, key: tuple, job: Job, size: int) -> None:
        """Enqueue a job of ``size`` rows; raises ServingError on a rejection."""
        task = policy.Task(size, job)
        cond = self._cond
        with cond:
            if self._stopping:
                raise ServingError("UNAVAILABLE", "Server is shutting down")
            queue = self._queues.get(key)
            if queue is None:  # the version's own options (the global file's, or its own file's)
                options = job.model.batching or self.params
                queue = self._queues[key] = policy.BatchQueue(options, name=str(key))
                self._sched.add_queue(queue)
            try:
                changed = queue.schedule(task, monotonic())
            except policy.Rejection as rej:
                raise ServingError(rej.code, rej.message) from None
            job.expect_pieces(task.pieces)
            if changed and self._idle:
                cond.notify()

    def retire(self, key_prefix: tuple) -> None:
        """Forget the queues of an unloaded model version once their batches have run."""
        while True:
            with self._cond:
                keys = [k for k in self._queues if k[: len(key_prefix)] == key_prefix]
                if all(len(self._queues[k]) == 0 for k in keys):
                    for k in keys:
                        self._sched.remove_queue(self._queues.pop(k))
                    return
            time.sleep(0.01)

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            leftovers = [b for q in self._sched.queues for b in q.drain()]
            self._cond.notify_all()
        for batch in leftovers:
            for task, _, _ in batch.pieces:
                task.payload.fail(ServingError("UNAVAILABLE", "Server is shutting down"))
        for t in self._threads:
            t.join(timeout=5)
        if self.trace is not None:
            log.info("Wrote the batch trace to %s", self.trace.write())

    # -- batch threads --------------------------------------------------------------------------

    def _loop(self, index: int) -> None:
        cond = self._cond
        sched = self._sched
        take_at = policy.take_at
        while True:
            with cond:
                while True:
                    if self._stopping:
                        return
                    now = monotonic()
                    got = sched.pop_ready(now)
                    if got is not None:
                        if take_at(self._idle, sched.ready_at(), now) == now:
                            cond.notify()  # more work is ready: wake a colleague
                        break
                    wake = take_at(1, sched.ready_at(), now)  # this thread is idle
                    self._idle += 1
                    cond.wait(None if wake == math.inf else max(wake - now, 0.0))
                    self._idle -= 1
            try:
                if self.trace is None:
                    self._run(got[1], now)
                else:
                    self._run_traced(got[1], now, index)
            except Exception as exc:  # never let a batch thread die
                log.exception("batch failed")
                for task, _, _ in got[1].pieces:
                    task.payload.fail(ServingError("INTERNAL", f"batch failed: {exc}"))

    def _run_traced(self, batch: policy.Batch, started: float, index: int) -> None:
        times = [0.0, 0.0, 0.0]  # merge done, run done (wall), run's CPU
        wall, cpu, process = perf_counter(), thread_time(), process_time()
        self._run(batch, started, times)
        if times[1]:  # the model ran (not a batch refused or failed before it)
            self.trace.add(
                (
                    index,
                    started,
                    process,
                    batch.size,
                    batch.padded_size(self._options(batch).allowed_batch_sizes),
                    times[0] - wall,
                    times[1] - times[0],
                    times[2],
                    perf_counter() - wall,
                    thread_time() - cpu,
                )
            )

    def _run(self, batch: policy.Batch, started: float, times: list | None = None) -> None:
        pieces = batch.pieces
        jobs = [task.payload for task, _, _ in pieces]
        metrics = self.metrics
        latest = max(math.inf if j.deadline is None else j.deadline for j in jobs)
        if policy.batch_expired(latest, started):
            err = ServingError("RESOURCE_EXHAUSTED", policy.QUEUE_TIMEOUT_MESSAGE)
            for j in jobs:
                j.fail(err)
            return
        pool = self.thread_pool_name
        for task, _, _ in pieces:
            metrics.queuing_latency.observe((started - task.enqueue_time) * 1e6, pool)
        first = jobs[0]
        options = first.model.batching or self.params
        n_inputs = len(first.inputs)
        size = batch.size
        padded = batch.padded_size(options.allowed_batch_sizes)
        try:
            feeds = [
                self._merge(pieces, i, padded, options.pad_variable_length_inputs)
                for i in range(n_inputs)
            ]
        except ServingError as err:
            for j in jobs:
                j.fail(err)
            return
        if times is not None:
            times[0], cpu = perf_counter(), thread_time()
        try:
            outputs = first.model.run(first.signature, feeds)
        except ServingError as err:
            for j in jobs:
                j.fail(err)
            return
        if times is not None:
            times[1], times[2] = perf_counter(), thread_time() - cpu
        metrics.wrapped_run_count.inc()
        metrics.input_batch_size.observe(size)
        metrics.processed_batch_size.observe(padded)
        metrics.padding_size.observe(padded - size, str(padded))
        name = first.model_name
        metrics.model_input_batch_size.observe(size, name)
        metrics.model_processed_batch_size.observe(padded, name)
        for out in outputs:
            if out.ndim == 0 or out.shape[0] != padded:
                err = invalid(
                    "Batched output tensor's 0th dimension does not equal the sum of the 0th "
                    "dimension sizes of the input tensors"
                )
                for j in jobs:
                    j.fail(err)
                return
        offset = 0
        for (_task, start, rows), job in zip(pieces, jobs):
            job.piece_done(start, [out[offset : offset + rows] for out in outputs])
            offset += rows

    def _options(self, batch: policy.Batch) -> EffectiveBatching:
        """The queue options of the version a batch belongs to (all its jobs share one)."""
        return batch.pieces[0][0].payload.model.batching or self.params

    def _merge(self, pieces, i: int, padded: int, pad_variable: bool) -> np.ndarray:
        parts = []
        for task, start, rows in pieces:
            arr = task.payload.inputs[i]
            parts.append(arr if start == 0 and rows == arr.shape[0] else arr[start : start + rows])
        shapes = {p.shape[1:] for p in parts}
        if len(shapes) > 1:
            if not pad_variable:
                raise invalid(
                    "Tensors with the same name from different tasks have different shapes and "
                    "padding is turned off. Set pad_variable_length_inputs to true, or ensure that "
                    "all tensors with the same name have equal dimensions starting with the first dim."
                )
            parts = _pad_to_common_shape(parts)
        merged = parts[0] if len(parts) == 1 else np.concatenate(parts)
        extra = padded - merged.shape[0]
        if extra > 0:  # pad to an allowed batch size by repeating the first row
            merged = np.concatenate([merged, np.repeat(merged[:1], extra, axis=0)])
        return merged


def _pad_to_common_shape(parts: list[np.ndarray]) -> list[np.ndarray]:
    """Pad dims 1.. of each part to the largest, with the part's first element (as TF does)."""
    target = tuple(max(dims) for dims in zip(*(p.shape[1:] for p in parts)))
    out = []
    for p in parts:
        if p.shape[1:] == target:
            out.append(p)
            continue
        widths = [(0, 0)] + [(0, t - d) for t, d in zip(target, p.shape[1:])]
        fill = p.flat[0] if p.size else 0
        out.append(np.pad(p, widths, constant_values=fill))
    return out
