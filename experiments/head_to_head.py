"""Measure the winners of several studies against each other, interleaved, on one experiment.

Each study's re-measured winner is a median over a few minutes of this machine; two studies run
an hour apart saw different minutes (run-to-run differences of 10-20% are common here). This
script measures every study's winning config --rounds times, round-robin, under the same
experiment, so "does study A's answer serve as much as study B's?" is judged on the same minutes.

    flock /tmp/heavy.lock .venv/bin/python experiments/head_to_head.py \\
        results/guided-ranker-grpc results/ranker-grpc --rounds 5

Prints a table (median, range, p99 per winner) and writes head_to_head.json into --out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    from harness import config
    from harness.errors import HarnessError
    from harness.tuning.outputs import write_json_atomic
    from harness.tuning.space import TrialConfig
    from harness.tuning.trial import TrialRunner

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("studies", nargs="+", help="study folders with a summary.json winner")
    ap.add_argument("--experiment", help="default: the first study's experiment.toml")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default="results/head-to-head")
    args = ap.parse_args()

    winners = {}
    for d in map(Path, args.studies):
        summary = json.loads((d / "summary.json").read_text())
        if not summary.get("winner"):
            sys.exit(f"{d}: no winner in summary.json ({summary.get('reason', 'not finished')})")
        winners[d.name] = TrialConfig.from_dict(summary["winner"]["config"])
    exp = config.load(args.experiment or Path(args.studies[0]) / "experiment.toml")
    out = Path(args.out)
    runner = TrialRunner(exp)
    runs: dict[str, list[dict]] = {name: [] for name in winners}
    try:
        for r in range(args.rounds):
            for name, cfg in winners.items():
                t = time.monotonic()
                try:
                    res = runner.measure(cfg, out / "runs" / f"{name}-{r}")
                except HarnessError as exc:
                    res = {"failed": str(exc).splitlines()[0]}
                runs[name].append(res)
                print(
                    f"round {r + 1}/{args.rounds}  {name:28} {cfg.describe():34} "
                    f"{res.get('items_per_s', 0):7.0f} items/s  p99 {res.get('p99_ms')}  "
                    f"({time.monotonic() - t:.0f}s)",
                    flush=True,
                )
    finally:
        runner.close()

    rows = []
    for name, rs in runs.items():
        ok = [r for r in rs if "failed" not in r]
        ips = [r["items_per_s"] for r in ok] or [0.0]
        p99 = [r["p99_ms"] for r in ok if r.get("p99_ms") is not None] or [float("inf")]
        rows.append(
            {
                "study": name,
                "config": winners[name].as_dict(),
                "items_per_s": ips,
                "items_per_s_median": statistics.median(ips),
                "p99_ms_median": statistics.median(p99),
                "failed_runs": len(rs) - len(ok),
            }
        )
    write_json_atomic(out / "head_to_head.json", {"rounds": args.rounds, "winners": rows})
    print("\n| study | winner | items/s median | range | p99 ms median |\n|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['study']} | {winners[r['study']].describe()} | {r['items_per_s_median']:,.0f} | "
            f"{min(r['items_per_s']):,.0f}-{max(r['items_per_s']):,.0f} | "
            f"{r['p99_ms_median']:.1f} |"
        )


if __name__ == "__main__":
    main()
