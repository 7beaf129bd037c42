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

The rules themselves are the scalar functions below: plain numbers in, plain numbers out, no
classes, no allocation, and none calls another, so that numba can compile each one alone.
``BatchQueue`` and ``Scheduler`` apply them to real tasks for the reference server
(``refserver/batcher.py`` adds threads and ``time.monotonic``); the simulator
(``harness.sim.kernel``) compiles the very same functions and applies them to arrays in virtual
time. There is no second copy. Their docstrings are the specification another implementation of
the policy (a native server) must meet:

=====================  ======================================================================
``admit``              may a task join the queue, and how many new batches it opens
``open_share``         how many of its rows join the open batch
``next_piece``         how many rows go into each new batch after that
``ready_time``         when the front batch becomes ready
``take_at``            when an idle batch thread takes it
``pick_queue``         which queue a free thread serves next (round-robin)
``batch_expired``      whether a batch is answered RESOURCE_EXHAUSTED instead of run
``padded_size``        the size a batch runs at
=====================  ======================================================================

Times are seconds on one clock; ``math.inf`` stands for "never" (an empty queue's ready time, a
task without a deadline).
"""

from __future__ import annotations

import math
from collections import deque

from harness.batching import EffectiveBatching
from harness.codes import StatusError

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

    ``open_size`` is the size of the open (last) batch when ``has_open``; ``queued`` counts the
    batches waiting, the open one included (batches a thread took no longer count). Returns
    ``(verdict, new_batches, room)``, checked in this order:

    - ``ADMIT_OVERSIZE`` when ``size > max_input`` (INVALID_ARGUMENT, "Task size N is larger
      than maximum input batch size M");
    - else ``new_batches``: 0 when the task fits the open batch (``size <= room``), else
      ``ceil((size - room) / max_exec)`` with splitting and 1 without;
    - ``ADMIT_QUEUE_FULL`` when ``queued + new_batches > max_enqueued`` (UNAVAILABLE,
      ``QUEUE_FULL_MESSAGE``);
    - else ``ADMIT_OK``.

    ``room`` is the open batch's free rows (``max_exec - open_size``; 0 without an open batch);
    ``open_share`` and ``next_piece`` say where the rows of an admitted task go.
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


def open_share(size: int, room: int, splitting: bool) -> int:
    """How many of a task's ``size`` rows join the open batch, which has ``room`` free rows.

    ``room`` is the third value ``admit`` returns (0 when there is no open batch). All of them
    when the task fits (``size <= room``); else ``room`` with large-batch splitting (the first
    piece fills the open batch, which may be 0 rows) and 0 without it (the task opens a new
    batch and the open one is closed as it is). Call it only for a task ``admit`` let in.
    """
    if size <= room:
        return size
    if splitting:
        return room
    return 0


def next_piece(rest: int, max_exec: int, splitting: bool) -> int:
    """How many rows go into the next new batch when ``rest`` rows of a task are still to place.

    After ``open_share``, a task's remaining rows are cut into new batches, each appended to the
    queue in order: ``max_exec`` rows each (the last one the remainder) with splitting, or the
    whole rest in one batch without it. So a task yields ``(open_share > 0) + new_batches``
    pieces, where ``new_batches`` is what ``admit`` counted, and its rows stay in order.
    """
    if splitting and rest > max_exec:
        return max_exec
    return rest


def open_batch_ready(open_size: int, max_exec: int, timeout: float) -> bool:
    """Whether the open batch is ready as soon as it is formed (full, or a zero timeout)."""
    return ready_time(1, open_size, 0.0, max_exec, timeout) == 0.0


def ready_time(
    queued: int, front_size: int, front_first: float, max_exec: int, timeout: float
) -> float:
    """When the front batch of a non-empty queue becomes ready (a past time: ready now).

    ``queued`` batches wait (>= 1); the front one holds ``front_size`` rows and its first task
    arrived at ``front_first``. A closed batch (one with another behind it) is ready at once;
    the open one (the only one) when full (``front_size >= max_exec``) or when ``timeout`` is 0,
    else ``timeout`` seconds after its first task arrived.
    """
    if queued > 1 or front_size >= max_exec or timeout == 0:
        return front_first
    return front_first + timeout


def take_at(idle: int, ready_at: float, now: float) -> float:
    """When one of ``idle`` batch threads takes the front batch, seen at ``now``.

    ``ready_at`` is the front batch's ``ready_time`` (``math.inf`` for an empty queue). A thread
    takes a batch as soon as both exist: ``now`` when a thread is idle and the batch is ready,
    ``ready_at`` when a thread is idle and the batch is not ready yet (that thread sleeps until
    then, or until a new task changes the front batch), and ``math.inf`` when no thread is idle or
    nothing waits (the next thread to finish asks again). One thread takes one batch; the driver
    asks again, with one thread fewer, for the next.
    """
    if idle <= 0 or ready_at == math.inf:
        return math.inf
    if ready_at <= now:
        return now
    return ready_at


def pick_queue(ready_at, cursor: int, now: float) -> int:
    """Which queue a free batch thread serves at ``now``: round-robin across the queues.

    ``ready_at[i]`` is queue i's ``ready_time`` (``math.inf`` when empty), ``cursor`` the queue
    to try first. Returns the first index from ``cursor`` on, wrapping round, whose front batch is
    ready (``ready_at[i] <= now``), or -1 when none is. The caller then moves ``cursor`` to one
    past the queue it served, so that a busy queue cannot starve the others.
    """
    n = len(ready_at)
    for k in range(n):
        i = (cursor + k) % n
        if ready_at[i] <= now:
            return i
    return -1


def batch_expired(latest_deadline: float, now: float) -> bool:
    """Whether a batch a thread takes at ``now`` is answered instead of run.

    ``latest_deadline`` is the latest deadline among the batch's tasks (``math.inf`` if any task
    has none). When every task's deadline has passed (``latest_deadline <= now``) running the
    batch helps no one: each of its tasks is answered RESOURCE_EXHAUSTED with
    ``QUEUE_TIMEOUT_MESSAGE`` and the batch is not run (nor counted in the batch metrics). A
    batch with one task still in time runs whole.
    """
    return latest_deadline <= now


def padded_size(size: int, allowed) -> int:
    """The size a batch runs at: the smallest allowed size that holds it (``allowed`` ascending;
    empty: no padding)."""
    for s in allowed:
        if s >= size:
            return s
    return size


class Rejection(StatusError):
    """A task the scheduler refuses; ``code`` is the gRPC status name."""


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
        share = open_share(size, room, self._splitting)
        if share == size:
            open_batch.add(task, 0, size, now)
            return open_batch_ready(open_batch.size, self._max_exec, self._timeout)
        pieces = 0
        if share > 0:
            open_batch.add(task, 0, share, now)
            pieces = 1
        start = share
        while start < size:
            rows = next_piece(size - start, self._max_exec, self._splitting)
            batch = Batch()
            batch.add(task, start, rows, now)
            batches.append(batch)
            start += rows
            pieces += 1
        task.pieces = pieces
        return True

    def ready_at(self) -> float:
        """When the front batch becomes ready (a past time: ready now; ``math.inf``: empty)."""
        if not self._batches:
            return math.inf
        front = self._batches[0]
        return ready_time(
            len(self._batches), front.size, front.first_enqueue, self._max_exec, self._timeout
        )

    def due_time(self) -> float | None:
        """``ready_at``, or None when the queue is empty."""
        due = self.ready_at()
        return None if due == math.inf else due

    def pop_ready(self, now: float) -> Batch | None:
        """The front batch if a free thread takes it at ``now`` (``take_at``), else None."""
        if take_at(1, self.ready_at(), now) != now:
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
        """The batch a free thread takes at ``now``, from the queue ``pick_queue`` chooses."""
        i = pick_queue([q.ready_at() for q in self.queues], self._next, now)
        if i < 0:
            return None
        self._next = (i + 1) % len(self.queues)
        q = self.queues[i]
        return q, q.pop_ready(now)

    def ready_at(self) -> float:
        """When the earliest front batch becomes ready (``math.inf``: nothing waits)."""
        return min((q.ready_at() for q in self.queues), default=math.inf)

    def next_due(self) -> float | None:
        """``ready_at``, or None when nothing waits."""
        due = self.ready_at()
        return None if due == math.inf else due
