"""The native server's batch policy equals harness/scheduler.py, batch by batch.

The same arrivals (sizes, times, queues) go into scheduler.py's Scheduler and into the C++
port through its C entry point (libharness_policy.so, built with the server). A driver polls
both at the same virtual times, as free batch threads would; every verdict, every "changed"
answer, every batch (queue, pieces, padded size) and every next-due time must agree. Configs
cover size mixes, splitting, padding to allowed_batch_sizes, zero and long timeouts, tight queue
bounds and several queues served round-robin.
"""

from __future__ import annotations

import ctypes
import random

import pytest

from harness.batching import BatchingParameters
from harness.refserver.native import launch
from harness.scheduler import BatchQueue, Rejection, Scheduler, Task

LIB = launch.HERE / "build" / "libharness_policy.so"
pytestmark = pytest.mark.skipif(not LIB.exists(), reason="the native server is not built")

CONFIGS = [
    dict(max_batch_size=8, batch_timeout_micros=1000, max_enqueued_batches=4),
    dict(max_batch_size=8, batch_timeout_micros=0, max_enqueued_batches=2),
    dict(max_batch_size=32, batch_timeout_micros=5000, max_enqueued_batches=3,
         allowed_batch_sizes=(4, 8, 16, 32)),
    dict(max_batch_size=64, batch_timeout_micros=2000, max_enqueued_batches=20,
         enable_large_batch_splitting=True, max_execution_batch_size=8),
    dict(max_batch_size=16, batch_timeout_micros=500, max_enqueued_batches=1,
         enable_large_batch_splitting=True, max_execution_batch_size=4,
         allowed_batch_sizes=(2, 4)),
    dict(max_batch_size=4, batch_timeout_micros=10_000_000, max_enqueued_batches=100),
]


def _lib():
    lib = ctypes.CDLL(str(LIB))
    lib.policy_new.restype = ctypes.c_void_p
    lib.policy_free.argtypes = [ctypes.c_void_p]
    lib.policy_add_queue.argtypes = [ctypes.c_void_p, ctypes.c_long, ctypes.c_long, ctypes.c_long,
                                     ctypes.c_long, ctypes.c_int, ctypes.POINTER(ctypes.c_long),
                                     ctypes.c_int]
    lib.policy_schedule.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_long,
                                    ctypes.c_double, ctypes.POINTER(ctypes.c_int),
                                    ctypes.POINTER(ctypes.c_int)]
    lib.policy_pop_ready.argtypes = [ctypes.c_void_p, ctypes.c_double, ctypes.POINTER(ctypes.c_int),
                                     ctypes.POINTER(ctypes.c_long), ctypes.POINTER(ctypes.c_long),
                                     ctypes.c_int]
    lib.policy_next_due.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_double)]
    return lib


class Native:
    def __init__(self, lib, effs) -> None:
        self.lib = lib
        self.h = lib.policy_new()
        for e in effs:
            allowed = (ctypes.c_long * max(1, len(e.allowed_batch_sizes)))(*e.allowed_batch_sizes)
            lib.policy_add_queue(self.h, e.max_batch_size, e.batch_timeout_micros,
                                 e.max_enqueued_batches, e.max_execution_batch_size,
                                 int(e.enable_large_batch_splitting), allowed,
                                 len(e.allowed_batch_sizes))

    def schedule(self, q, task_id, size, now):
        changed, pieces = ctypes.c_int(), ctypes.c_int()
        v = self.lib.policy_schedule(self.h, q, task_id, size, now, ctypes.byref(changed),
                                     ctypes.byref(pieces))
        return v, bool(changed.value), pieces.value if v == 0 else None

    def pop(self, now):
        q, padded = ctypes.c_int(), ctypes.c_long()
        buf = (ctypes.c_long * 3000)()
        n = self.lib.policy_pop_ready(self.h, now, ctypes.byref(q), ctypes.byref(padded), buf, 1000)
        if n < 0:
            return None
        return q.value, padded.value, [tuple(buf[3 * i: 3 * i + 3]) for i in range(n)]

    def next_due(self):
        due = ctypes.c_double()
        return due.value if self.lib.policy_next_due(self.h, ctypes.byref(due)) else None


class Python:
    VERDICT = {"INVALID_ARGUMENT": 1, "UNAVAILABLE": 2}

    def __init__(self, effs) -> None:
        self.sched = Scheduler()
        self.queues = [BatchQueue(e, name=str(i)) for i, e in enumerate(effs)]
        for q in self.queues:
            self.sched.add_queue(q)
        self.allowed = [e.allowed_batch_sizes for e in effs]

    def schedule(self, q, task_id, size, now):
        task = Task(size, task_id)
        try:
            changed = self.queues[q].schedule(task, now)
        except Rejection as rej:
            return self.VERDICT[rej.code], False, None
        return 0, bool(changed), task.pieces

    def pop(self, now):
        got = self.sched.pop_ready(now)
        if got is None:
            return None
        queue, batch = got
        i = self.queues.index(queue)
        pieces = [(t.payload, start, rows) for t, start, rows in batch.pieces]
        return i, batch.padded_size(self.allowed[i]), pieces

    def next_due(self):
        return self.sched.next_due()


def _run(effs, seed: int, n: int = 400) -> int:
    """Feeds ``n`` random arrivals into both; returns how many batches they formed alike."""
    rng = random.Random(seed)
    native, python = Native(_lib(), effs), Python(effs)
    now, batches = 0.0, 0
    max_size = max(e.max_batch_size for e in effs)
    for task_id in range(n):
        now += rng.choice([0.0, 0.0, 1e-4, 3e-4, 1e-3, 4e-3])
        q = rng.randrange(len(effs))
        size = rng.choice([1, 1, 2, 3, 5, 8, rng.randint(1, max_size + 4)])
        assert native.schedule(q, task_id, size, now) == python.schedule(q, task_id, size, now), (
            seed, task_id)
        # a free batch thread takes what is ready now (sometimes none is free)
        while rng.random() < 0.6:
            a, b = native.pop(now), python.pop(now)
            assert a == b, (seed, task_id, now)
            if a is None:
                break
            batches += 1
        assert native.next_due() == pytest.approx(python.next_due()), (seed, task_id)
    for _ in range(10 * n):  # drain, moving time to each next due
        due = python.next_due()
        assert native.next_due() == pytest.approx(due)
        if due is None:
            break
        now = max(now, due)
        a, b = native.pop(now), python.pop(now)
        assert a == b
        batches += a is not None
    return batches


@pytest.mark.parametrize("config", range(len(CONFIGS)))
def test_one_queue_forms_the_same_batches(config):
    eff = BatchingParameters(**CONFIGS[config]).effective(cores=1)
    total = sum(_run([eff], seed) for seed in range(5))
    assert total > 100  # the arrivals really formed batches


def test_several_queues_round_robin_the_same_way():
    effs = [BatchingParameters(**CONFIGS[i]).effective(cores=1) for i in (0, 2, 3)]
    assert sum(_run(effs, seed) for seed in range(5)) > 100
