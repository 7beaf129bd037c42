"""How many batching configs per second the simulator predicts (target: >= 1,000 per second for a
10-second simulated window at 2,000 requests/s).

Configs are drawn at random from the default experiment's search space. The server model comes
from a saved profile when one is given (``--profile``), else from a ranker-like model whose costs
are written below (the speed depends on the traffic and the batches formed, not on where the
costs came from). Run under the heavy lock: ``flock /tmp/heavy.lock .venv/bin/python
benchmarks/simulator_speed.py``.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.batching import BatchingParameters  # noqa: E402
from harness.sim import profile as profiles  # noqa: E402
from harness.sim.model import Prepared, ServerModel, Workload, simulate_many  # noqa: E402


def ranker_like() -> profiles.Profile:
    # about what `harness profile` measures for ranker on one core here (us per batch)
    ex = {1: 2900, 2: 3200, 4: 3800, 8: 5000, 16: 7000, 32: 10500, 64: 18000, 128: 35000}
    return profiles.Profile(
        model="ranker-like",
        backend="synthetic",
        cores=1,
        exec_us={k: {"median": v, "p10": 0.95 * v, "p90": 1.08 * v} for k, v in ex.items()},
        overhead={
            "grpc": profiles.Overhead(
                cpu_in_us=110, cpu_out_us=80, reject_us=60, rtt_us=150, client_us=300
            )
        },
        environment={},
    )


def random_configs(n: int, seed: int) -> list[BatchingParameters]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        t = 0 if rng.random() < 0.2 else int(10 ** rng.uniform(2, 5))
        out.append(
            BatchingParameters(
                max_batch_size=rng.choice([1, 2, 4, 8, 16, 32, 64, 128]),
                batch_timeout_micros=t,
                num_batch_threads=rng.choice([1, 2]),
                max_enqueued_batches=rng.choice([1, 4, 16, 64, 1_000_000]),
            )
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", help="a profile JSON (default: a ranker-like model)")
    ap.add_argument("--configs", type=int, default=2000)
    ap.add_argument("--window", type=float, default=10.0)
    args = ap.parse_args()
    prof = profiles.load(args.profile) if args.profile else ranker_like()
    server = ServerModel.from_profile(prof, "grpc", max_size=128)
    configs = random_configs(args.configs, 1)
    workloads = [
        (
            "open loop, 2,000 req/s Poisson",
            Workload(rate=2000, window_s=args.window, warmup_s=1.0, tail_s=0.5),
        ),
        (
            "closed loop, 64 users",
            Workload(users=64, window_s=args.window, warmup_s=1.0, tail_s=0.5),
        ),
    ]
    cores = len(os.sched_getaffinity(0))
    print(
        f"model: {prof.model}; {len(configs)} random configs from the default space; "
        f"{args.window:g} s window (+1.5 s warm-up and tail) per config; {cores} cores\n"
    )
    print("| workload | threads | configs | seconds | configs/s | requests simulated/s |")
    print("|---|---|---|---|---|---|")
    for label, wl in workloads:
        prep = Prepared(wl, server)
        simulate_many(configs[:4], prep)  # compile outside the clock
        for workers in sorted({1, cores}):
            t = time.perf_counter()
            preds = simulate_many(configs, prep, workers=workers)
            dt = time.perf_counter() - t
            reqs = (
                sum(p.requests for p in preds)
                * (wl.warmup_s + wl.window_s + wl.tail_s)
                / wl.window_s
            )
            print(
                f"| {label} | {workers} | {len(configs)} | {dt:.2f} | {len(configs) / dt:,.0f} | {reqs / dt:,.0f} |"
            )


if __name__ == "__main__":
    main()
