"""The server's policy and the simulator's kernel form the same batches from the same arrivals.

One side is ``harness.scheduler``'s ``Scheduler`` and ``BatchQueue``, the classes the reference
server's batcher drives, here driven by a plain event loop in virtual time that does what the
batcher's threads do (``take_at``, ``batch_expired``). The other is the compiled kernel with its
trace on. Front-end, client and network costs are zero, execution times a fixed table, and there
are more cores than threads, so both see one timeline; every batch (when it starts, its size,
its padded size, its first and last request, whether it expired) and every verdict must agree.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import math

import numpy as np
import pytest

from harness import scheduler as policy
from harness.batching import BatchingParameters
from harness.sim import kernel
from harness.sim.model import Prepared, ServerModel, Workload, simulate_trace

MIX = "1:40,8:30,32:20,128:10"  # 128 > max_batch_size: INVALID_ARGUMENT
VERDICT = {
    policy.INVALID_ARGUMENT: policy.ADMIT_OVERSIZE,
    policy.UNAVAILABLE: policy.ADMIT_QUEUE_FULL,
}


def exec_table(top: int = 128) -> np.ndarray:
    b = np.arange(top + 1)
    return np.where(b > 0, 0.4e-3 + 0.06e-3 * b, 0.0)


def params(splitting: bool, timeout_us: int, bound: int, threads: int) -> BatchingParameters:
    return BatchingParameters(
        max_batch_size=64,
        max_execution_batch_size=16,
        enable_large_batch_splitting=splitting,
        allowed_batch_sizes=(4, 8, 16) if splitting else (4, 8, 16, 64),
        batch_timeout_micros=timeout_us,
        max_enqueued_batches=bound,
        num_batch_threads=threads,
    )


@dataclasses.dataclass
class Trace:
    batches: list[tuple]  # (start, size, padded, first, last, expired)
    verdicts: list[int]


def server_trace(cfg: BatchingParameters, prep: Prepared) -> Trace:
    """The server's queue classes driven as the batcher's threads drive them, in virtual time."""
    eff = cfg.effective(cores=1)
    sched = policy.Scheduler()
    sched.add_queue(policy.BatchQueue(eff))
    table = prep.server.exec_table
    arrivals, sizes = prep.arrivals, prep.sizes
    running: list[float] = []  # when each busy thread finishes
    out = Trace([], [])
    now, i = 0.0, 0
    while True:
        # idle threads take ready batches (the batcher's _loop, one thread after another)
        while policy.take_at(eff.num_batch_threads - len(running), sched.ready_at(), now) == now:
            _, batch = sched.pop_ready(now)
            deadlines = [t.payload[1] for t, _, _ in batch.pieces]
            expired = policy.batch_expired(max(deadlines), now)
            tasks = [t.payload[0] for t, _, _ in batch.pieces]
            padded = batch.padded_size(eff.allowed_batch_sizes)
            out.batches.append((now, batch.size, padded, tasks[0], tasks[-1], expired))
            if expired:
                for t in tasks:
                    out.verdicts[t] = kernel.V_EXPIRED
            else:
                running.append(now + table[padded])
        # the next event; at equal times an arrival comes first, then a thread finishing
        t_arr = arrivals[i] if i < len(arrivals) else math.inf
        t_fin = min(running, default=math.inf)
        t_due = policy.take_at(eff.num_batch_threads - len(running), sched.ready_at(), now)
        t = min(t_arr, t_fin, t_due)
        if t == math.inf or t > prep.t_end:
            return out
        now = t
        if t == t_arr:
            task = policy.Task(int(sizes[i % len(sizes)]), (i, t_arr + prep.deadline_s))
            try:
                sched.queues[0].schedule(task, now)
                out.verdicts.append(policy.ADMIT_OK)
            except policy.Rejection as rej:
                out.verdicts.append(VERDICT[rej.code])
            i += 1
        elif t == t_fin:
            running.remove(t_fin)


def kernel_trace(cfg: BatchingParameters, prep: Prepared) -> Trace:
    _, tr = simulate_trace(cfg, prep)
    batches = [
        (float(tr.batch_start[k]), *map(int, (tr.batch_size[k], tr.batch_padded[k])))
        + (int(tr.batch_first[k]), int(tr.batch_last[k]), bool(tr.batch_expired[k]))
        for k in range(len(tr.batch_start))
    ]
    return Trace(batches, [int(v) for v in tr.task_verdict])


def prepared(threads: int, deadline_s: float, rate: float = 1500, seed: int = 5) -> Prepared:
    srv = ServerModel(
        cores=threads + 1.0,  # more cores than threads: nothing stretches
        exec_table=exec_table(),
        noise_sigma=0.0,
        o_in=0.0,
        o_out=0.0,
        o_rej=0.0,
        rtt=0.0,
        client=0.0,
    )
    wl = Workload(rate=rate, request_sizes=MIX, warmup_s=0.0, window_s=1.0, tail_s=0.5, seed=seed)
    return Prepared(wl, srv, deadline_s=deadline_s)


def compare(cfg: BatchingParameters, prep: Prepared) -> Trace:
    want, got = server_trace(cfg, prep), kernel_trace(cfg, prep)
    assert len(got.verdicts) == len(want.verdicts)
    bad = [k for k, (g, w) in enumerate(zip(got.verdicts, want.verdicts)) if g != w]
    assert not bad, (
        f"request {bad[0]}: kernel {got.verdicts[bad[0]]}, server {want.verdicts[bad[0]]}"
    )
    assert len(got.batches) == len(want.batches)
    for k, (g, w) in enumerate(zip(got.batches, want.batches)):
        assert g[1:] == w[1:], f"batch {k}: kernel {g}, server {w}"
        assert g[0] == pytest.approx(w[0], abs=1e-9), f"batch {k} starts at {g[0]}, not {w[0]}"
    return want


CASES = list(
    itertools.product(
        (False, True),  # enable_large_batch_splitting
        (0, 2000),  # batch_timeout_micros
        (1, 4, 1_000_000),  # max_enqueued_batches
        (1, 2),  # num_batch_threads
        (math.inf, 0.004),  # the requests' deadline
    )
)


@pytest.mark.parametrize("splitting,timeout_us,bound,threads,deadline_s", CASES)
def test_server_policy_and_kernel_form_the_same_batches(
    splitting, timeout_us, bound, threads, deadline_s
):
    want = compare(params(splitting, timeout_us, bound, threads), prepared(threads, deadline_s))
    assert len(want.batches) > 200


def test_the_mixes_exercise_every_rule():
    """The cases above are not vacuous: splitting, padding, both refusals and expiry occur."""
    split = compare(params(True, 2000, 1_000_000, 1), prepared(1, 0.004))
    assert any(first != last for _, _, _, first, last, _ in split.batches)  # a task's pieces
    assert any(padded > size for _, size, padded, *_ in split.batches)
    assert policy.ADMIT_OVERSIZE in split.verdicts
    assert kernel.V_EXPIRED in split.verdicts and any(b[5] for b in split.batches)
    ends = collections.Counter(b[4] for b in split.batches)  # batches ending with each task
    assert max(ends.values()) >= 3  # a 32-row task cut into pieces of 16 (and a share)
    bounded = compare(params(False, 2000, 1, 2), prepared(2, math.inf))
    assert policy.ADMIT_QUEUE_FULL in bounded.verdicts
    assert {size for _, size, *_ in bounded.batches} - {1, 8, 32}  # tasks batched together
