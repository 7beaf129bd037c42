"""The batch-forming policy in virtual time: no threads, no clock."""

import pytest

from harness.batching import BatchingParameters
from harness.scheduler import (
    INVALID_ARGUMENT,
    QUEUE_FULL_MESSAGE,
    UNAVAILABLE,
    BatchQueue,
    Rejection,
    Scheduler,
    Task,
)


def queue(**kw) -> BatchQueue:
    return BatchQueue(BatchingParameters(**kw).effective(cores=1))


def sizes(batch):
    return [rows for _, _, rows in batch.pieces]


def test_open_batch_waits_for_its_timeout_from_the_first_task():
    q = queue(max_batch_size=8, batch_timeout_micros=1000, max_enqueued_batches=10)
    q.schedule(Task(1), now=0.0)
    q.schedule(Task(2), now=0.0005)
    assert q.pop_ready(0.0009) is None
    assert q.due_time() == pytest.approx(0.001)
    batch = q.pop_ready(0.001)
    assert sizes(batch) == [1, 2] and batch.size == 3


def test_zero_timeout_is_ready_at_once():
    q = queue(max_batch_size=8, batch_timeout_micros=0)
    q.schedule(Task(1), now=5.0)
    assert q.pop_ready(5.0).size == 1


def test_full_batch_is_ready_before_timeout():
    q = queue(max_batch_size=4, batch_timeout_micros=10_000_000)
    for _ in range(4):
        q.schedule(Task(1), now=0.0)
    assert q.pop_ready(0.0).size == 4


def test_task_that_does_not_fit_closes_the_open_batch():
    q = queue(max_batch_size=4, batch_timeout_micros=10_000_000, max_enqueued_batches=10)
    q.schedule(Task(3), now=0.0)
    q.schedule(Task(2), now=0.1)  # 3 + 2 > 4: a new batch opens, the first is closed
    assert len(q) == 2
    first = q.pop_ready(0.1)
    assert first.size == 3
    assert q.pop_ready(0.1) is None  # the new open batch still waits


def test_task_larger_than_max_batch_size_is_invalid_argument():
    q = queue(max_batch_size=4)
    with pytest.raises(Rejection) as exc:
        q.schedule(Task(5), now=0.0)
    assert exc.value.code == INVALID_ARGUMENT
    assert exc.value.message == "Task size 5 is larger than maximum input batch size 4"


def test_full_queue_is_unavailable():
    q = queue(max_batch_size=4, batch_timeout_micros=1_000_000, max_enqueued_batches=1)
    q.schedule(Task(3), now=0.0)
    q.schedule(Task(1), now=0.0)  # still fits the open batch
    with pytest.raises(Rejection) as exc:
        q.schedule(Task(1), now=0.0)  # would need a second batch
    assert exc.value.code == UNAVAILABLE
    assert exc.value.message.startswith(QUEUE_FULL_MESSAGE)
    q.pop_ready(2.0)  # a thread takes the batch: it no longer counts
    q.schedule(Task(1), now=2.0)


def test_splitting_fills_the_open_batch_then_cuts_the_rest():
    q = queue(
        max_batch_size=32,
        enable_large_batch_splitting=True,
        max_execution_batch_size=4,
        batch_timeout_micros=1000,
        max_enqueued_batches=100,
    )
    q.schedule(Task(1), now=0.0)
    big = Task(10)
    q.schedule(big, now=0.0)
    assert big.pieces == 3  # 3 rows into the open batch, then batches of 4 and 3
    got = [q.pop_ready(1.0) for _ in range(3)]
    assert [b.size for b in got] == [4, 4, 3]
    assert [(start, rows) for _, start, rows in got[0].pieces] == [(0, 1), (0, 3)]
    assert [(start, rows) for _, start, rows in got[1].pieces] == [(3, 4)]
    assert [(start, rows) for _, start, rows in got[2].pieces] == [(7, 3)]


def test_splitting_counts_every_new_batch_against_the_queue_bound():
    q = queue(
        max_batch_size=32,
        enable_large_batch_splitting=True,
        max_execution_batch_size=4,
        max_enqueued_batches=2,
        batch_timeout_micros=1000,
    )
    with pytest.raises(Rejection) as exc:
        q.schedule(Task(9), now=0.0)  # needs 3 batches
    assert exc.value.code == UNAVAILABLE
    q.schedule(Task(8), now=0.0)  # exactly 2


def test_padding_picks_the_smallest_allowed_size():
    q = queue(max_batch_size=8, allowed_batch_sizes=(2, 4, 8))
    q.schedule(Task(3), now=0.0)
    assert q.pop_ready(0.0).padded_size((2, 4, 8)) == 4


def test_scheduler_serves_queues_round_robin():
    s = Scheduler()
    a, b = queue(max_batch_size=8), queue(max_batch_size=8)
    s.add_queue(a)
    s.add_queue(b)
    for _ in range(2):
        a.schedule(Task(8), now=0.0)
        b.schedule(Task(8), now=0.0)
    order = [s.pop_ready(0.0)[0] for _ in range(4)]
    assert order == [a, b, a, b]
    assert s.pop_ready(0.0) is None and s.next_due() is None
