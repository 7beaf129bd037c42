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

The rules themselves are the scalar functions below (``admit``, ``ready_time``,
``padded_size``): plain numbers in, plain numbers out. ``BatchQueue`` applies them
to real tasks for the reference server; the simulator (``harness.sim``) compiles the very same
functions with numba and applies them to arrays in virtual time. There is no second copy.
"""

from __future__ import annotations

from collections import deque

from harness.batching import EffectiveBatching

INVALID_ARGUMENT = "INVALID_ARGUMENT"
UNAVAILABLE = "UNAVAILABLE"
RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"

QUEUE_FULL_MESSAGE = "The batch scheduling queue to which this task was submitted is full"
QUEUE_TIMEOUT_MESSAGE = "Run() timeout exceeded while waiting in batching queue"


# admit() verdicts
ADMIT_OK = 0
ADMIT_OVERSIZE = 1  # INVALID_ARGUMENT: the task is larger than max_batch_size
ADMIT_QUEUE_FULL = 2  # UNAVAILABLE: it would need more than max_enqueued_batches batches


def admit(
    size: int,
    open_size: int,
    has_open: bool,
    queued: int,
    max_input: int,
    max_exec: int,
    max_enqueued: int,
    splitting: bool,
) -> tuple[int, int, int]:
    """Whether a task of ``size`` rows may join a queue, and how many new batches it opens.

    ``open_size`` is the size of the open (last) batch when ``has_open``; ``queued`` the batches
    waiting. Returns ``(verdict, new_batches, room)``: new_batches 0 means it joins the open
    batch; with splitting, the first piece fills ``room`` rows of the open batch and the rest go
    into the new batches, ``max_exec`` rows each. (Self-contained, like every rule here, so that
    numba can compile it for the simulator.)
    """
    room = max_exec - open_size if has_open else 0
    if size > max_input:
        return ADMIT_OVERSIZE, 0, room
    if size <= room:
        new_batches = 0
    elif splitting:
        new_batches = (size - room + max_exec - 1) // max_exec
    else:
        new_batches = 1
    if queued + new_batches > max_enqueued:
        return ADMIT_QUEUE_FULL, 0, room
    return ADMIT_OK, new_batches, room


def open_batch_ready(open_size: int, max_exec: int, timeout: float) -> bool:
    """Whether the open batch is ready as soon as it is formed (full, or a zero timeout)."""
    return ready_time(1, open_size, 0.0, max_exec, timeout) == 0.0


def ready_time(
    queued: int, front_size: int, front_first: float, max_exec: int, timeout: float
) -> float:
    """When the front batch of a non-empty queue becomes ready (a past time: ready now).

    A closed batch (one with another behind it) is ready at once; the open one when
    ``open_batch_ready`` says so, else ``timeout`` seconds after its first task arrived.
    """
    if queued > 1 or front_size >= max_exec or timeout == 0:
        return front_first
    return front_first + timeout


def padded_size(size: int, allowed) -> int:
    """The size a batch runs at: the smallest allowed size that holds it (``allowed`` ascending;
    empty: no padding)."""
    for s in allowed:
        if s >= size:
            return s
    return size


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
        return padded_size(self.size, allowed)


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
        batches = self._batches
        open_batch = batches[-1] if batches else None
        verdict, new_batches, room = admit(
            size,
            open_batch.size if open_batch is not None else 0,
            open_batch is not None,
            len(batches),
            self._max_input,
            self._max_exec,
            self.params.max_enqueued_batches,
            self._splitting,
        )
        if verdict == ADMIT_OVERSIZE:
            raise Rejection(
                INVALID_ARGUMENT,
                f"Task size {size} is larger than maximum input batch size {self._max_input}",
            )
        if verdict == ADMIT_QUEUE_FULL:
            raise Rejection(UNAVAILABLE, QUEUE_FULL_MESSAGE)
        task.enqueue_time = now
        if new_batches == 0:
            open_batch.add(task, 0, size, now)
            return open_batch_ready(open_batch.size, self._max_exec, self._timeout)
        if not self._splitting:
            batch = Batch()
            batch.add(task, 0, size, now)
            batches.append(batch)
            return True
        start = 0
        pieces = 0
        if room > 0:
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
        return ready_time(
            len(self._batches), front.size, front.first_enqueue, self._max_exec, self._timeout
        )

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
