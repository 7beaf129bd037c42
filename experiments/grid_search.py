"""Exhaustive grid over a batching space, to judge how close Optuna's search gets.

Runs every combination of the given values with the experiment's model, server and load (the
same measurement as a trial), writes grid.csv, and prints the best config within the SLO. With
--compare, prints the share of the grid's best that each named study reached.

    python experiments/grid_search.py --experiment experiments/default.toml \
        --values "max_batch_size=8,16,32,64,128;batch_timeout_micros=0,1000,10000;num_batch_threads=1,2" \
        --compare results/ranker-grpc

With --remeasure K, the K best configs within the SLO are then measured --repeats more times,
interleaved, into remeasure.json, the way the tuner's winner step re-measures
(harness.tuning.remeasure): the grid's best by one measurement is biased upwards by noise, and a
study's winner is a re-measured median, so that is what it is set against.

A long run (minutes per dozen configs): it is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def parse_values(text: str) -> dict[str, list[int]]:
    out = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        key, _, vals = part.partition("=")
        out[key.strip()] = [int(v) for v in vals.split(",")]
    return out


def best_feasible_of_study(study_dir: Path) -> float | None:
    with open(study_dir / "trials.csv") as f:
        rows = [
            r for r in csv.DictReader(f) if r["state"] == "COMPLETE" and r["feasible"] == "True"
        ]
    return max((float(r["items_per_s"]) for r in rows), default=None)


def remeasure(runner, exp, rows: list[dict], repeats: int, out: Path) -> None:
    """Measure each of ``rows`` ``repeats`` more times, round-robin, as the tuner's winner step
    does (``harness.tuning.remeasure``: same rounds, same summary, same failure rule), and write
    the summaries to remeasure.json. Runs are cached in remeasure-runs.json: an interrupted
    re-measurement resumes."""
    from harness.batching import BatchingParameters
    from harness.tuning import remeasure as rm
    from harness.tuning.outputs import write_json_atomic
    from harness.tuning.space import TrialConfig

    configs = {
        r["config"]: TrialConfig(batching=BatchingParameters(**json.loads(r["config"])))
        for r in rows
    }

    def folder(key: str, rep: int) -> Path:
        name = "-".join(f"{k}{v}" for k, v in json.loads(key).items())
        return out / "remeasure" / f"{name}-{rep}"

    def progress(key: str, rep: int, run: dict, _seconds: float) -> None:
        print(f"re-measure {rep + 1}/{repeats}  {key}  {rm.describe_run(run)}", flush=True)

    runs = rm.run_rounds(
        configs,
        runner.measure,
        repeats=repeats,
        folder=folder,
        cache=out / "remeasure-runs.json",
        progress=progress,
    )
    summaries = [
        {"config": json.loads(key), **rm.summarise(rs, exp.slo, repeats=repeats)}
        for key, rs in runs.items()
    ]
    write_json_atomic(out / "remeasure.json", {"repeats": repeats, "configs": summaries})
    for c in summaries:
        print(f"re-measured {c['config']}: {describe_summary(c)}, feasible={c['feasible']}")


def describe_summary(c: dict) -> str:
    """A re-measured config's summary in one line."""
    failed = f", {c['failed_runs']} failed" if c["failed_runs"] else ""
    if c["items_per_s_median"] is None:
        return f"every run failed ({c['failed_runs']})"
    return (
        f"median {c['items_per_s_median']:.0f} items/s, p99 {c['p99_ms_median']:.1f} ms "
        f"({c['runs']} runs{failed})"
    )


def main() -> None:
    from harness import config
    from harness.batching import BatchingParameters
    from harness.errors import HarnessError
    from harness.tuning.loop import score
    from harness.tuning.outputs import write_csv_atomic
    from harness.tuning.space import TrialConfig
    from harness.tuning.trial import TrialRunner

    ap = argparse.ArgumentParser()
    ap.add_argument("--experiment", default=str(ROOT / "experiments" / "default.toml"))
    ap.add_argument(
        "--values", required=True, help="name=v1,v2;name=v1,v2 over BatchingParameters fields"
    )
    ap.add_argument("--out", default="results/grid")
    ap.add_argument(
        "--limit",
        type=int,
        help="measure at most this many new configs, then stop (run again to go on)",
    )
    ap.add_argument(
        "--compare", nargs="*", default=[], help="study folders to score against the grid"
    )
    ap.add_argument(
        "--remeasure",
        type=int,
        default=0,
        metavar="K",
        help="then re-measure the K best configs within the SLO --repeats times, interleaved "
        "as the tuner's winner step does, into remeasure.json",
    )
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    exp = config.load(args.experiment)
    values = parse_values(args.values)
    out = Path(args.out)
    runner = TrialRunner(exp)
    rows = []
    done = {}
    if (out / "grid.csv").exists():  # resume a grid that was interrupted
        with open(out / "grid.csv") as f:
            done = {r["config"]: r for r in csv.DictReader(f)}
    measured = 0
    try:
        for combo in itertools.product(*values.values()):
            params = dict(zip(values, combo))
            key = json.dumps(params, sort_keys=True)
            if key in done:
                rows.append(done[key])
                continue
            if args.limit is not None and measured >= args.limit:
                print(f"stopped after {measured} new configs (--limit); run again to go on")
                return
            measured += 1
            cfg = TrialConfig(batching=BatchingParameters(**params))
            try:
                r = runner.measure(
                    cfg, out / "configs" / "-".join(f"{k}{v}" for k, v in params.items())
                )
                feasible = score(r, exp.slo)[2]
                row = {
                    "config": key,
                    "items_per_s": r["items_per_s"],
                    "p99_ms": r["p99_ms"],
                    "error_rate": r["error_rate"],
                    "feasible": feasible,
                    "failed": "",
                }
            except HarnessError as exc:
                row = {
                    "config": key,
                    "items_per_s": "",
                    "p99_ms": "",
                    "error_rate": "",
                    "feasible": False,
                    "failed": str(exc).splitlines()[0],
                }
            rows.append(row)
            write_csv_atomic(out / "grid.csv", rows)
            print(
                f"{len(rows):>4}  {key}  {row['items_per_s'] or 'FAILED'}  feasible={row['feasible']}",
                flush=True,
            )
        feasible = [r for r in rows if str(r["feasible"]) == "True"]
        if not feasible:
            print("no grid config met the SLO")
            return
        feasible.sort(key=lambda r: -float(r["items_per_s"]))
        if args.remeasure:
            remeasure(runner, exp, feasible[: args.remeasure], args.repeats, out)
    finally:
        runner.close()
    best = feasible[0]
    print(
        f"\ngrid best within the SLO: {float(best['items_per_s']):.0f} items/s with {best['config']}"
    )
    print("\n| study | best within SLO | share of grid best |\n|---|---|---|")
    for study in args.compare:
        got = best_feasible_of_study(Path(study))
        share = f"{got / float(best['items_per_s']):.0%}" if got else "-"
        print(f"| {study} | {got or 0:.0f} | {share} |")


if __name__ == "__main__":
    main()
