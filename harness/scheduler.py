"""TF Serving's batch-forming rules as a pure policy with an injected clock.

This module holds no threads and reads no clock: every call takes ``now`` (seconds, any epoch).
The reference server drives it with real threads and ``time.monotonic``; a simulator can drive the
same code in virtual time. The rules follow TensorFlow's shared batch scheduler:

- a queue is a deque of batches and only the last one is open; a task joins the open batch, and
  when it does not fit the open batch is closed and a new one opened;
- a closed batch at the front is ready at once; the open batch is ready when it is full, when the
  timeout has passed since its first task arrived, or at once when the timeout is 0;
- a task larger than ``max_batch_size`` is rejected with INVALID_ARGUMENT; a task that would need
  more than ``max_enqueued_batches`` waiting batches is rejected with UNAVAILABLE;
- with large-batch splitting, a task is cut into pieces: the first fills the open batch's free
  room, the rest go into new batches of at most ``max_execution_batch_size``.

Batches handed to a thread leave the queue and stop counting toward ``max_enqueued_batches``.
"""

from __future__ import annotations

from collections import deque

from harness.batching import EffectiveBatching

INVALID_ARGUMENT = "INVALID_ARGUMENT"
UNAVAILABLE = "UNAVAILABLE"
RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"

QUEUE_FULL_MESSAGE = "The batch scheduling queue to which this task was submitted is full"
QUEUE_TIMEOUT_MESSAGE = "Run() timeout exceeded while waiting in batching queue"


class Rejection(Exception):
    """A task the scheduler refuses; ``code`` is the gRPC status name."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Task:
    """One request: ``size`` rows (its 0th dimension), enqueued at ``enqueue_time``.

    ``payload`` is whatever the driver needs to run and answer it; the policy never looks at it.
    """

    __slots__ = ("size", "enqueue_time", "payload", "pieces")

    def __init__(self, size: int, payload=None) -> None:
        self.size = size
        self.payload = payload
        self.enqueue_time = 0.0
        self.pieces = 1  # how many batches this task was split across


class Batch:
    """Pieces of tasks that will run together: ``(task, start_row, rows)`` triples."""

    __slots__ = ("pieces", "size", "first_enqueue")

    def __init__(self) -> None:
        self.pieces: list[tuple[Task, int, int]] = []
        self.size = 0
        self.first_enqueue = 0.0

    def add(self, task: Task, start: int, rows: int, now: float) -> None:
        if not self.pieces:
            self.first_enqueue = now
        self.pieces.append((task, start, rows))
        self.size += rows

    def padded_size(self, allowed: tuple[int, ...]) -> int:
        """The size this batch runs at: the smallest allowed size that holds it."""
        for s in allowed:
            if s >= self.size:
                return s
        return self.size


class BatchQueue:
    """The waiting batches of one model version and signature."""

    def __init__(self, params: EffectiveBatching, name: str = "") -> None:
        self.params = params
        self.name = name
        self._batches: deque[Batch] = deque()
        self._timeout = params.batch_timeout_micros / 1e6
        self._max_exec = params.max_execution_batch_size
        self._max_input = params.max_batch_size
        self._splitting = params.enable_large_batch_splitting

    def __len__(self) -> int:
        return len(self._batches)

    def schedule(self, task: Task, now: float) -> bool:
        """Enqueue ``task`` or raise ``Rejection``.

        Returns True when the queue's readiness may have changed for a waiting thread (a new open
        batch was started or a batch became ready), False when the task only joined an open batch
        that is still waiting for its timeout.
        """
        size = task.size
        if size > self._max_input:
            raise Rejection(
                INVALID_ARGUMENT,
                f"Task size {size} is larger than maximum input batch size {self._max_input}",
            )
        batches = self._batches
        open_batch = batches[-1] if batches else None
        room = self._max_exec - open_batch.size if open_batch is not None else 0
        if size <= room:
            new_batches = 0
        elif self._splitting:
            rest = size - room
            new_batches = -(-rest // self._max_exec)
        else:
            new_batches = 1
        if len(batches) + new_batches > self.params.max_enqueued_batches:
            raise Rejection(UNAVAILABLE, QUEUE_FULL_MESSAGE)
        task.enqueue_time = now
        if new_batches == 0:
            open_batch.add(task, 0, size, now)
            return open_batch.size >= self._max_exec or self._timeout == 0
        if not self._splitting:
            batch = Batch()
            batch.add(task, 0, size, now)
            batches.append(batch)
            return True
        start = 0
        pieces = 0
        if open_batch is not None and room > 0:
            open_batch.add(task, 0, room, now)
            start = room
            pieces = 1
        while start < size:
            rows = min(self._max_exec, size - start)
            batch = Batch()
            batch.add(task, start, rows, now)
            batches.append(batch)
            start += rows
            pieces += 1
        task.pieces = pieces
        return True

    def due_time(self) -> float | None:
        """When the front batch becomes ready (``-inf``-like past times mean ready now)."""
        if not self._batches:
            return None
        front = self._batches[0]
        if len(self._batches) > 1 or front.size >= self._max_exec or self._timeout == 0:
            return front.first_enqueue
        return front.first_enqueue + self._timeout

    def pop_ready(self, now: float) -> Batch | None:
        due = self.due_time()
        if due is None or due > now:
            return None
        return self._batches.popleft()

    def drain(self) -> list[Batch]:
        """Take every waiting batch (at shutdown: their tasks must still be answered)."""
        out = list(self._batches)
        self._batches.clear()
        return out


class Scheduler:
    """Several queues sharing one pool of batch threads, served round-robin.

    Not thread-safe: the driver holds its own lock around every call.
    """

    def __init__(self) -> None:
        self.queues: list[BatchQueue] = []
        self._next = 0

    def add_queue(self, queue: BatchQueue) -> None:
        self.queues.append(queue)

    def remove_queue(self, queue: BatchQueue) -> list[Batch]:
        if queue in self.queues:
            self.queues.remove(queue)
            self._next = 0
        return queue.drain()

    def pop_ready(self, now: float) -> tuple[BatchQueue, Batch] | None:
        queues = self.queues
        n = len(queues)
        for i in range(n):
            q = queues[(self._next + i) % n]
            batch = q.pop_ready(now)
            if batch is not None:
                self._next = (self._next + i + 1) % n
                return q, batch
        return None

    def next_due(self) -> float | None:
        dues = [d for d in (q.due_time() for q in self.queues) if d is not None]
        return min(dues) if dues else None
