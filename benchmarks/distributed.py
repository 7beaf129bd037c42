"""Distributed load and parallel tuning on this machine (2 cores: expect ceilings, not scaling).

1. load capacity: requests/s against the reference server serving `mlp` without batching
   (server on core 0), closed loop, with 1, 2 and 4 local Locust worker processes (a master and
   N workers); once with the workers on core 1 only, once spread over cores 0-1 (sharing the
   server's core). The busiest worker's CPU share says whether the generator was the limit.
2. parallel tuning: wall time of one 12-trial study (`mlp`, the default experiment's search
   space) run by one tuner (server core 0, load core 1) and by two tuners sharing a journal
   storage, each with one core for its server and its load (so they contend for nothing but
   memory and the other core's noise, and each has half the machine).

Usage: python benchmarks/distributed.py [--part load|tune|tune-one|tune-two|all] [--seconds 3]
       [--trials 12]   (each part alone stays under 10 minutes here)
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def load_part(seconds: float, workdir: Path) -> list[tuple]:
    from harness.config import LoadConfig
    from harness.load.runner import run_load
    from harness.models.export import ensure
    from harness.servers import ProcessBackend, ServerSpec

    base = workdir / "mlp"
    ensure("mlp", base)
    backend = ProcessBackend("reference")
    server = backend.start(ServerSpec(model_name="mlp", model_dir=base, cpus=(0,)), workdir / "s")
    rows = []
    try:
        for cpus in ((1,), (0, 1)):
            for n in (1, 2, 4):
                spec = LoadConfig(
                    protocol="grpc",
                    users=64,
                    processes=n,
                    warmup_s=2,
                    window_s=seconds,
                    min_windows=3,
                    max_windows=4,
                )
                r = run_load(server.endpoint, spec, workdir / f"load-{len(rows)}", cpus=cpus)
                per = ", ".join(f"{w['cpu']:.0%}" for w in r.workers if w["cpu"] is not None)
                rows.append(
                    (
                        ",".join(map(str, cpus)),
                        n,
                        r.measurement.throughput_rps,
                        r.measurement.p50_ms,
                        r.generator_cpu,
                        per or "(one process)",
                    )
                )
                print(f"  load cores {rows[-1][0]}, {n} process(es): {rows[-1][2]:.0f} req/s")
    finally:
        server.stop()
        backend.close()
    return rows


def _tune(exp: Path, results: Path, storage: str | None, core_sets, trials: int):
    procs = []
    t0 = time.monotonic()
    for server_cpus, load_cpus in core_sets:
        cmd = [
            sys.executable,
            "-m",
            "harness.cli",
            "tune",
            "--experiment",
            str(exp),
            "--results-dir",
            str(results),
            "--trials",
            str(trials),
            "--set",
            "model.demo=mlp",
            "--set",
            f'server.cpus="{server_cpus}"',
            "--set",
            f'load.cpus="{load_cpus}"',
            "--set",
            "study.name=bench",
            "--set",
            "study.top_k=2",
            "--set",
            "study.repeats=1",
        ]
        if storage:
            cmd += ["--storage", storage]
        procs.append(subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True))
    search_done = []
    for p in procs:
        out, _ = p.communicate(timeout=1800)
        if p.returncode != 0:
            raise SystemExit(f"tuner failed ({p.returncode}):\n{out[-3000:]}")
        search_done += [ln for ln in out.splitlines() if ln.startswith("search done")]
    wall = time.monotonic() - t0
    with open(results / "bench" / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    measured = [r for r in rows if not r.get("duplicate_of")]
    best = max((float(r["items_per_s"]) for r in rows if r["state"] == "COMPLETE"), default=0)
    return wall, len(rows), len(measured), best, search_done


def tune_part(trials: int, workdir: Path, which: str) -> list[tuple]:
    exp = ROOT / "experiments" / "default.toml"
    out = []
    if which in ("tune", "tune-one"):
        one = _tune(exp, workdir / "one", None, [("0", "1")], trials)
        out.append(("1 tuner (server core 0, load core 1)", *one))
    if which in ("tune", "tune-two"):
        journal = f"journal:{workdir / 'two' / 'bench.journal'}"
        two = _tune(exp, workdir / "two", journal, [("0", "0"), ("1", "1")], trials)
        out.append(("2 tuners (one core each), journal storage", *two))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--part", choices=["load", "tune", "tune-one", "tune-two", "all"], default="all"
    )
    ap.add_argument("--seconds", type=float, default=3.0, help="window length of the load part")
    ap.add_argument("--trials", type=int, default=12)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-distributed-") as tmp:
        work = Path(tmp)
        if args.part in ("load", "all"):
            rows = load_part(args.seconds, work)
            print("\nload capacity, mlp without batching, server on core 0, 64 users, gRPC")
            print(
                f"{'load cores':>10} {'processes':>9} {'req/s':>8} {'p50 ms':>7} "
                f"{'busiest':>8}  per worker CPU"
            )
            for cores, n, rps, p50, cpu, per in rows:
                print(f"{cores:>10} {n:>9} {rps:>8.0f} {p50:>7.2f} {cpu:>8.0%}  {per}")
        if args.part != "load":
            rows = tune_part(args.trials, work, "tune" if args.part == "all" else args.part)
            print(f"\n{args.trials}-trial study, mlp, default search space, top 2 re-measured once")
            print(f"{'setup':<44} {'wall s':>7} {'trials':>6} {'measured':>8} {'best items/s':>12}")
            for name, wall, n, measured, best, done in rows:
                print(f"{name:<44} {wall:>7.0f} {n:>6} {measured:>8} {best:>12.0f}")
                for line in done:
                    print(f"    {line}")


if __name__ == "__main__":
    main()
