"""The batch-forming policy in virtual time: no threads, no clock."""

import math

import pytest

from harness.batching import BatchingParameters
from harness.scheduler import (
    ADMIT_OK,
    INVALID_ARGUMENT,
    QUEUE_FULL_MESSAGE,
    UNAVAILABLE,
    BatchQueue,
    Rejection,
    Scheduler,
    Task,
    admit,
    batch_expired,
    next_piece,
    open_share,
    pick_queue,
    take_at,
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


# -- the pure rules themselves (what the simulator's kernel and a native server also run) ------


def test_open_share_and_next_piece_place_every_row_in_as_many_pieces_as_admit_counts():
    for max_exec in (1, 3, 4, 16):
        for open_size in range(-1, max_exec + 1):  # -1: no open batch
            has_open = open_size >= 0
            for size in range(1, 3 * max_exec + 2):
                for splitting in (False, True):
                    verdict, new, room = admit(
                        size, max(open_size, 0), has_open, 1, 10**6, max_exec, 10**6, splitting
                    )
                    if verdict != ADMIT_OK:
                        continue
                    share = open_share(size, room, splitting)
                    pieces, start = [], share
                    while start < size:
                        pieces.append(next_piece(size - start, max_exec, splitting))
                        start += pieces[-1]
                    assert share + sum(pieces) == size
                    assert len(pieces) == new
                    assert share <= room
                    if splitting:
                        assert all(0 < rows <= max_exec for rows in pieces)


def test_without_splitting_a_task_that_does_not_fit_opens_one_batch_whole():
    assert open_share(5, 3, False) == 0
    assert next_piece(5, 4, False) == 5
    assert open_share(5, 3, True) == 3 and next_piece(2, 4, True) == 2


def test_an_idle_thread_takes_the_front_batch_when_it_is_ready():
    assert take_at(1, 2.0, now=3.0) == 3.0  # ready since 2.0: now
    assert take_at(2, 5.0, now=3.0) == 5.0  # not yet: sleep until 5.0
    assert take_at(0, 2.0, now=3.0) == math.inf  # no idle thread
    assert take_at(1, math.inf, now=3.0) == math.inf  # nothing waits


def test_pick_queue_goes_round_robin_from_the_cursor():
    ready = [0.0, math.inf, 1.0, 0.5]
    assert pick_queue(ready, 0, now=1.0) == 0
    assert pick_queue(ready, 1, now=1.0) == 2
    assert pick_queue(ready, 3, now=1.0) == 3
    assert pick_queue(ready, 3, now=0.2) == 0  # wraps round
    assert pick_queue(ready, 0, now=-1.0) == -1
    assert pick_queue([], 0, now=1.0) == -1


def test_a_batch_expires_only_when_its_latest_deadline_has_passed():
    assert batch_expired(2.0, now=2.0)
    assert not batch_expired(2.5, now=2.0)
    assert not batch_expired(math.inf, now=1e9)  # a task without a deadline


def test_scheduler_reports_when_the_next_batch_is_due():
    s = Scheduler()
    a = queue(max_batch_size=8, batch_timeout_micros=1000)
    s.add_queue(a)
    assert s.ready_at() == math.inf and s.next_due() is None
    a.schedule(Task(1), now=2.0)
    assert s.next_due() == pytest.approx(2.001) and a.due_time() == pytest.approx(2.001)
    assert s.pop_ready(2.0) is None
    assert s.pop_ready(2.001)[1].size == 1
