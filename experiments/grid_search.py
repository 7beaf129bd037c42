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

A grid need not be one product: give --values several times and the grid is the union of
each group's combinations (e.g. large-batch splitting's max_execution_batch_size only where
splitting is on). Besides integers, values may be true/false, and allowed_batch_sizes takes
``none`` or ``pow2`` (powers of two up to the executed batch, as the search space pads).
Combinations TF Serving refuses at start-up are left out. environment.json records the server
measured (for the reference server, its request path).

A long run (minutes per dozen configs): it is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


# Values that are not integers: the two booleans, and allowed_batch_sizes as a rule (its list
# depends on the config's own batch size, as the search space's pad_to_powers_of_two does).
BOOLS = {"true": True, "false": False}
POW2 = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


def _value(key: str, text: str):
    text = text.strip()
    if key == "allowed_batch_sizes":
        if text not in ("none", "pow2"):
            raise ValueError(f"allowed_batch_sizes takes none or pow2, not {text!r}")
        return text
    if text.lower() in BOOLS:
        return BOOLS[text.lower()]
    return int(text)


def parse_values(text: str) -> dict[str, list]:
    """``name=v1,v2;name=v1,v2`` -> {name: [v1, v2]}: integers, true/false, and for
    allowed_batch_sizes ``none`` (no padding) or ``pow2`` (powers of two up to the batch the
    server executes, that size last, as ``harness.tuning.space.suggest`` pads)."""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        key, _, vals = part.partition("=")
        out[key.strip()] = [_value(key.strip(), v) for v in vals.split(",")]
    return out


def expand(params: dict) -> dict | None:
    """One grid point as BatchingParameters fields: ``allowed_batch_sizes`` made concrete;
    None when TF Serving would refuse the combination at start-up (a max_execution_batch_size
    without splitting, or above max_batch_size), which is no config to measure."""
    out = dict(params)
    mbs = out.get("max_batch_size")
    splitting = bool(out.get("enable_large_batch_splitting"))
    max_exec = out.get("max_execution_batch_size")
    if max_exec is not None and (not splitting or (mbs is not None and max_exec > mbs)):
        return None
    rule = out.pop("allowed_batch_sizes", "none")
    if rule == "pow2":
        top = max_exec or mbs
        out["allowed_batch_sizes"] = [s for s in POW2 if s < top] + [top]
    return out


def grid_points(groups: list[dict[str, list]]) -> list[dict]:
    """Every combination of each ``--values`` group, the groups joined in order, each point
    once (``expand``ed; refused combinations left out)."""
    seen, points = set(), []
    for values in groups:
        for combo in itertools.product(*values.values()):
            params = expand(dict(zip(values, combo)))
            key = None if params is None else json.dumps(params, sort_keys=True)
            if key is not None and key not in seen:
                seen.add(key)
                points.append(params)
    return points


def folder_name(params: dict) -> str:
    """A grid point's folder: ``max_batch_size64-batch_timeout_micros0-...`` (lists joined by _)."""

    def text(v):
        return "_".join(map(str, v)) if isinstance(v, list | tuple) else str(v).lower()

    return "-".join(f"{k}{text(v)}" for k, v in params.items())


def trial_config(params: dict):
    """The TrialConfig of a grid point (lists as the tuples BatchingParameters keeps)."""
    from harness.tuning.space import TrialConfig

    return TrialConfig.from_dict({"enable_batching": True, **params})


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
    from harness.tuning import remeasure as rm
    from harness.tuning.outputs import write_json_atomic

    configs = {r["config"]: trial_config(json.loads(r["config"])) for r in rows}

    def folder(key: str, rep: int) -> Path:
        return out / "remeasure" / f"{folder_name(json.loads(key))}-{rep}"

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


def measure_point(runner, exp, params: dict, out: Path) -> dict:
    """One grid point measured as a trial is: its grid.csv row (a refused or failed config is a
    row with its reason, never a figure)."""
    from harness.errors import HarnessError
    from harness.tuning.loop import score

    key = json.dumps(params, sort_keys=True)
    t0 = time.monotonic()
    try:
        r = runner.measure(trial_config(params), out / "configs" / folder_name(params))
    except HarnessError as exc:
        return {
            "config": key,
            "items_per_s": "",
            "p99_ms": "",
            "error_rate": "",
            "feasible": False,
            "failed": str(exc).splitlines()[0],
            "duration_s": round(time.monotonic() - t0, 1),
        }
    return {
        "config": key,
        "items_per_s": r["items_per_s"],
        "p99_ms": r["p99_ms"],
        "error_rate": r["error_rate"],
        "feasible": score(r, exp.slo)[2],
        "failed": "",
        "duration_s": round(time.monotonic() - t0, 1),
    }


def write_environment(exp, runner, out: Path) -> None:
    """environment.json as a study writes it: the machine, the software, and the server measured
    (for the reference server, which request path: native or Python)."""
    from harness import envinfo
    from harness.tuning.outputs import write_json_atomic
    from harness.tuning.study import server_name

    env = envinfo.collect(exp, runner.backend)
    name = server_name(exp, runner.backend)
    if name and isinstance(env.get("server"), dict):
        env["server"].setdefault("name", name)
    write_json_atomic(out / "environment.json", env)


def arguments() -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--experiment", default=str(ROOT / "experiments" / "default.toml"))
    ap.add_argument(
        "--values",
        required=True,
        action="append",
        help="name=v1,v2;name=v1,v2 over BatchingParameters fields (integers, true/false, "
        "allowed_batch_sizes=none,pow2); given several times, the grid is the union of the "
        "groups' products",
    )
    ap.add_argument(
        "--set", action="append", default=[], help="section.key=value over the experiment"
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
    return ap.parse_args()


def main() -> None:
    from harness import config
    from harness.tuning.outputs import write_csv_atomic
    from harness.tuning.trial import TrialRunner

    args = arguments()
    exp = config.load(config.resolve_experiment(args.experiment), args.set)
    points = grid_points([parse_values(v) for v in args.values])
    out = Path(args.out)
    runner = TrialRunner(exp)
    rows = []
    done = {}
    if (out / "grid.csv").exists():  # resume a grid that was interrupted
        with open(out / "grid.csv") as f:
            done = {r["config"]: r for r in csv.DictReader(f)}
    measured = 0
    try:
        write_environment(exp, runner, out)
        for params in points:
            key = json.dumps(params, sort_keys=True)
            if key in done:
                rows.append(done[key])
                continue
            if args.limit is not None and measured >= args.limit:
                print(f"stopped after {measured} new configs (--limit); run again to go on")
                return
            measured += 1
            row = measure_point(runner, exp, params, out)
            rows.append(row)
            write_csv_atomic(out / "grid.csv", rows)
            print(
                f"{len(rows):>4}/{len(points)}  {key}  {row['items_per_s'] or 'FAILED'}  "
                f"feasible={row['feasible']}",
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
    report(feasible[0], args.compare)


def report(best: dict, studies: list[str]) -> None:
    print(
        f"\ngrid best within the SLO: {float(best['items_per_s']):.0f} items/s with {best['config']}"
    )
    print("\n| study | best within SLO | share of grid best |\n|---|---|---|")
    for study in studies:
        got = best_feasible_of_study(Path(study))
        share = f"{got / float(best['items_per_s']):.0%}" if got else "-"
        print(f"| {study} | {got or 0:.0f} | {share} |")


if __name__ == "__main__":
    main()
