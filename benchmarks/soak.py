"""Soak: the reference server under sustained Locust load for minutes. Does its memory stay flat
and its latency steady?

Starts the reference server the way a trial does (process backend, batching on, pinned to core
0), drives it with Locust for ``--minutes`` one-minute windows (after a warm-up), samples the
server's resident memory every few seconds, and prints one row per window (throughput, p50, p99,
errors, RSS) and the growth from the first window to the last.

Usage: python benchmarks/soak.py [--model mlp|ranker] [--minutes 5] [--window 60] [--users 16]
                                 [--protocol grpc|rest] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class RssSampler(threading.Thread):
    """(seconds since start, RSS bytes, threads) of one process, every ``every`` seconds."""

    def __init__(self, pid: int, every: float = 5.0) -> None:
        super().__init__(daemon=True)
        import psutil

        self.proc = psutil.Process(pid)
        self.every = every
        self.t0 = time.time()
        self.samples: list[tuple[float, int, int]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                self.samples.append(
                    (time.time() - self.t0, self.proc.memory_info().rss, self.proc.num_threads())
                )
            except Exception:  # the server is gone: the run will report why
                return
            self._halt.wait(self.every)

    def stop(self) -> None:
        self._halt.set()
        self.join(10)

    def at(self, t: float) -> tuple[int, int]:
        """RSS and threads of the sample nearest to ``t`` seconds since start."""
        _, rss, threads = min(self.samples, key=lambda s: abs(s[0] - t))
        return rss, threads


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mlp", choices=["mlp", "ranker"])
    ap.add_argument("--minutes", type=int, default=5, help="measured windows (one minute each)")
    ap.add_argument("--window", type=float, default=60.0, help="seconds per window")
    ap.add_argument("--warmup", type=float, default=10.0)
    ap.add_argument("--users", type=int, default=16)
    ap.add_argument("--protocol", default="grpc", choices=["grpc", "rest"])
    ap.add_argument("--request-sizes", default="1:70,4:20,16:10")
    ap.add_argument("--max-batch-size", type=int, default=32)
    ap.add_argument("--batch-timeout-micros", type=int, default=1000)
    ap.add_argument("--model-dir", default=str(ROOT / "models"))
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()

    from harness.batching import BatchingParameters
    from harness.config import LoadConfig
    from harness.cpus import default_cpus
    from harness.load.runner import run_load
    from harness.models.export import ensure
    from harness.servers import ProcessBackend, ServerSpec

    base = Path(args.model_dir) / args.model
    ensure(args.model, base)
    server_cpus, load_cpus = default_cpus(None, None)
    batching = BatchingParameters(
        max_batch_size=args.max_batch_size,
        batch_timeout_micros=args.batch_timeout_micros,
        num_batch_threads=1,
        max_enqueued_batches=1_000_000,
    )
    spec = ServerSpec(model_name=args.model, model_dir=base, batching=batching, cpus=server_cpus)
    load = LoadConfig(
        protocol=args.protocol,
        users=args.users,
        request_sizes=args.request_sizes,
        warmup_s=args.warmup,
        window_s=args.window,
        min_windows=args.minutes,
        max_windows=args.minutes,
        tolerance=0.0,  # never stop early: every window is measured
    )
    work = Path(tempfile.mkdtemp(prefix="soak-"))
    backend = ProcessBackend("reference")
    server = backend.start(spec, work / "server")
    sampler = RssSampler(server.proc.pid)
    sampler.start()
    started = time.time()
    print(
        f"soak: {args.model} over {args.protocol}, {args.users} users, sizes {args.request_sizes}, "
        f"{args.minutes} x {args.window:.0f}s after {args.warmup:.0f}s warm-up; server pid "
        f"{server.proc.pid} on CPUs {server_cpus}, Locust on {load_cpus}; work dir {work}",
        flush=True,
    )
    try:
        run = run_load(
            server.endpoint, load, work / "load", cpus=load_cpus, check_server=server.check_alive
        )
    finally:
        sampler.stop()
        server.stop()
        backend.close()
    # Windows start at the first sample plus the warm-up; the first sample comes within a
    # second or two of starting Locust, close enough to line RSS samples up with windows.
    offset = started - sampler.t0 + args.warmup + 2.0
    rows = []
    for i, w in enumerate(run.windows):
        rss, threads = sampler.at(offset + (i + 1) * args.window)
        rows.append(
            {
                "window": i + 1,
                "requests": w.requests,
                "rps": round(w.throughput_rps, 1),
                "p50_ms": round(w.p50_ms, 2),
                "p99_ms": round(w.p99_ms, 2),
                "errors": sum(w.errors.values()),
                "rss_mb": round(rss / 2**20, 1),
                "threads": threads,
            }
        )
    rss0, _ = sampler.at(offset)
    rss_end = sampler.samples[-1][1]
    growth = rss_end - rss0
    print()
    print(
        f"{'min':>3} {'requests':>9} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} {'RSS MB':>7} {'threads':>7}"
    )
    for r in rows:
        print(
            f"{r['window']:>3} {r['requests']:>9} {r['rps']:>8.1f} {r['p50_ms']:>7.2f} "
            f"{r['p99_ms']:>7.2f} {r['errors']:>6} {r['rss_mb']:>7.1f} {r['threads']:>7}"
        )
    p99s = [r["p99_ms"] for r in rows]
    summary = {
        "rss_start_mb": round(rss0 / 2**20, 1),
        "rss_end_mb": round(rss_end / 2**20, 1),
        "rss_growth_mb": round(growth / 2**20, 1),
        "rss_growth_pct": round(100 * growth / rss0, 1),
        "rss_max_mb": round(max(s[1] for s in sampler.samples) / 2**20, 1),
        "p99_first_ms": p99s[0],
        "p99_last_ms": p99s[-1],
        "p99_spread_pct": round(100 * (max(p99s) - min(p99s)) / statistics.median(p99s), 1),
        "requests": run.measurement.requests,
        "errors": sum(run.measurement.errors.values()),
        "rss_samples": len(sampler.samples),
    }
    print()
    print(
        f"RSS after warm-up {summary['rss_start_mb']} MB, at the end {summary['rss_end_mb']} MB: "
        f"growth {summary['rss_growth_mb']} MB ({summary['rss_growth_pct']}%), peak "
        f"{summary['rss_max_mb']} MB over {summary['rss_samples']} samples"
    )
    print(
        f"p99 first window {summary['p99_first_ms']} ms, last {summary['p99_last_ms']} ms, spread "
        f"across windows {summary['p99_spread_pct']}% of the median; {summary['requests']} "
        f"requests, {summary['errors']} errors"
    )
    if args.json:
        Path(args.json).write_text(json.dumps({"windows": rows, "summary": summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
