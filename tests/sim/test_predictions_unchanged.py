"""The simulator's predictions stay bit for bit what they were when the golden file was written.

``tests/sim/data/predictions.json`` holds the predictions of the kernel before its parameters
moved into records and its event handlers into functions of their own (commit 46df441). A change
to the kernel that moves a single float fails here; a change meant to alter predictions rewrites
the file: ``python -m tests.sim.test_predictions_unchanged --write``.
"""

from __future__ import annotations

import dataclasses
import json
import random
import sys
from pathlib import Path

import numpy as np

from harness.batching import BatchingParameters
from harness.sim.model import Prepared, ServerModel, Workload, simulate

GOLDEN = Path(__file__).parent / "data" / "predictions.json"


def _server(gc: bool) -> ServerModel:
    sizes = np.arange(129)
    table = np.where(sizes > 0, 2.9e-3 + 0.25e-3 * sizes, 0.0)
    return ServerModel(
        cores=1.0,
        exec_table=table,
        noise_sigma=0.05,
        o_in=110e-6,
        o_out=80e-6,
        o_rej=60e-6,
        o_wake=40e-6,
        rtt=150e-6,
        client=300e-6,
        gc_every=4000.0 if gc else 0.0,
        gc_s=0.05 if gc else 0.0,
    )


def _configs() -> list[BatchingParameters | None]:
    rng = random.Random(7)
    out: list[BatchingParameters | None] = [None]
    for _ in range(12):
        mbs = rng.choice([1, 4, 16, 64, 128])
        split = mbs >= 16 and rng.random() < 0.5
        exe = rng.choice([4, 8, 16]) if split else None
        top = exe or mbs
        allowed = tuple(s for s in (2, 4, 8, 16, 32, 64, 128) if s < top) + (top,)
        out.append(
            BatchingParameters(
                max_batch_size=mbs,
                batch_timeout_micros=rng.choice([0, 500, 2000, 20_000]),
                num_batch_threads=rng.choice([1, 2]),
                max_enqueued_batches=rng.choice([1, 4, 1_000_000]),
                enable_large_batch_splitting=split,
                max_execution_batch_size=exe,
                allowed_batch_sizes=allowed if rng.random() < 0.5 else (),
            )
        )
    return out


def _workloads() -> list[tuple[Workload, bool]]:
    return [
        (Workload(rate=400, request_sizes="1:70,8:20,32:10", window_s=2.0, seed=1), False),
        (Workload(rate=300, arrivals="constant", request_sizes="3", window_s=2.0), False),
        (Workload(users=24, request_sizes="1:80,16:20", window_s=2.0, seed=2), True),
        (Workload(users=8, window_s=2.0, seed=3), False),
    ]


def predictions() -> list[dict]:
    out = []
    for wl, gc in _workloads():
        prep = Prepared(wl, _server(gc))
        for params in _configs():  # some refuse the larger requests: oversize counts too
            out.append(dataclasses.asdict(simulate(params, prep)))
    return out


def test_predictions_are_bit_for_bit_unchanged():
    want = json.loads(GOLDEN.read_text())
    got = json.loads(json.dumps(predictions()))  # the same float -> text -> float round trip
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert {k: g[k] for k in w} == w


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    GOLDEN.write_text(json.dumps(predictions(), indent=1) + "\n")
    print(f"wrote {GOLDEN}")
