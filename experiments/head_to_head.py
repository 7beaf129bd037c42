"""Measure the winners of several studies against each other, interleaved, on one experiment.

Each study's re-measured winner is a median over a few minutes of this machine; two studies run
an hour apart saw different minutes (run-to-run differences of 10-20% are common here). This
script measures every study's winning config --rounds times, round-robin, under the same
experiment, so "does study A's answer serve as much as study B's?" is judged on the same minutes
(harness.tuning.remeasure: the winner step's rounds, summary and failure rule).

    flock /tmp/heavy.lock .venv/bin/python experiments/head_to_head.py \\
        results/guided-ranker-grpc results/ranker-grpc --rounds 5

Prints a table (median, range, p99 per winner) and writes head_to_head.json into --out.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def head_to_head(winners: dict, measure, slo, rounds: int, out: Path) -> list[dict]:
    """Each study's winning config (``winners``: study name -> TrialConfig) measured ``rounds``
    times, round-robin, through ``measure(config, folder)``; one summary per study (the winner
    step's, ``remeasure.summarise``), written to head_to_head.json in ``out``."""
    from harness.tuning import remeasure
    from harness.tuning.outputs import write_json_atomic

    def progress(name: str, r: int, run: dict, seconds: float) -> None:
        print(
            f"round {r + 1}/{rounds}  {name:28} {winners[name].describe():34} "
            f"{remeasure.describe_run(run)}  ({seconds:.0f}s)",
            flush=True,
        )

    runs = remeasure.run_rounds(
        winners,
        measure,
        repeats=rounds,
        folder=lambda name, r: out / "runs" / f"{name}-{r}",
        progress=progress,
    )
    rows = [
        {
            "study": name,
            "config": winners[name].as_dict(),
            **remeasure.summarise(rs, slo, repeats=rounds),
        }
        for name, rs in runs.items()
    ]
    write_json_atomic(out / "head_to_head.json", {"rounds": rounds, "winners": rows})
    return rows


def table(rows: list[dict], winners: dict) -> str:
    lines = [
        "| study | winner | items/s median | range | p99 ms median | failed runs | within SLO |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["items_per_s_median"] is None:
            figures = "- | every run failed | -"
        else:
            figures = (
                f"{r['items_per_s_median']:,.0f} | "
                f"{r['items_per_s_min']:,.0f}-{r['items_per_s_max']:,.0f} | {r['p99_ms_median']:.1f}"
            )
        lines.append(
            f"| {r['study']} | {winners[r['study']].describe()} | {figures} | "
            f"{r['failed_runs']} | {r['feasible']} |"
        )
    return "\n".join(lines)


def main() -> None:
    from harness import config
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
    runner = TrialRunner(exp)
    try:
        rows = head_to_head(winners, runner.measure, exp.slo, args.rounds, Path(args.out))
    finally:
        runner.close()
    print("\n" + table(rows, winners))


if __name__ == "__main__":
    main()
