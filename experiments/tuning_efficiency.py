"""How close does a 30-trial Optuna search get to the exhaustive grid's best?

Two views, printed as tables:

1. Replayed studies (many seeds, no servers): the tuner's own trial loop
   (``harness.tuning.loop.run_trials``: baselines first, copies of repeated configs, their
   unexplored neighbours next, the budget counting measured configs) and its own sampler run
   against the measured grid as a lookup table, over the grid's values. The share of the grid's
   best feasible throughput reached after N measured trials, over seeds; random search for
   reference.
2. Real studies (optional, --studies): each study folder's best feasible trial and re-measured
   winner against the grid's top configs re-measured the same way (``grid_search.py
   --remeasure``, remeasure.json beside grid.csv): a single grid measurement's maximum is biased
   upwards by noise.

    python experiments/tuning_efficiency.py --grid results/grid/ranker-grpc/grid.csv \
        --trials 10 20 30 --seeds 20 --studies results/ranker-grpc
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def read_grid(path: Path) -> tuple[dict[str, list], dict[tuple, dict]]:
    table, values = {}, {}
    with open(path) as f:
        for r in csv.DictReader(f):
            cfg = json.loads(r["config"])
            key = tuple(sorted(cfg.items()))
            for k, v in cfg.items():
                values.setdefault(k, set()).add(v)
            ok = r["items_per_s"] not in ("", None)
            table[key] = {
                "items_per_s": float(r["items_per_s"]) if ok else 0.0,
                "p99_ms": float(r["p99_ms"]) if ok and r["p99_ms"] else None,
                "error_rate": float(r["error_rate"]) if ok else 1.0,
                "feasible": r["feasible"] == "True",
                "failed": r.get("failed", ""),
            }
    return {k: sorted(v) for k, v in values.items()}, table


def server_cores(exp) -> int:
    """How many cores the experiment's server gets (what the tuner's baselines are sized by)."""
    from harness.cpus import default_cpus, parse_cpus

    server, _ = default_cpus(parse_cpus(exp.server.cpus), parse_cpus(exp.load.cpus))
    return len(server) if server else 1


VALUES_OF = ("max_batch_size", "batch_timeout_micros", "num_batch_threads", "max_enqueued_batches")


def grid_objective(lookup, slo):
    """The objective of a replayed study: the grid's figures for the trial's config, judged by
    the study's SLO rule (``loop.record``); a config the grid could not measure fails."""
    from harness.errors import HarnessError
    from harness.tuning import loop

    def objective(trial):
        got = lookup(trial.user_attrs["config"])
        if got is None:
            raise SystemExit(f"the grid has no measurement for {trial.user_attrs['config']}")
        if got["failed"]:
            trial.set_user_attr("fail_reason", got["failed"])
            raise HarnessError(got["failed"])
        return loop.record(trial, {k: got[k] for k in ("items_per_s", "p99_ms", "error_rate")}, slo)

    return objective


def replay(
    values, table, slo, n_trials: int, seed: int, sampler: str, cores: int, baselines: bool = True
) -> list[float]:
    """Best feasible throughput after each measured trial of one replayed study: the tuner's
    own trial loop (``loop.run_trials``: baselines, copies of repeated configs, their
    neighbours, the budget) and sampler, with the grid's measurements as the objective."""
    import optuna

    from harness.config import Range, SearchConfig, StudyConfig
    from harness.tuning import loop
    from harness.tuning.space import params_for
    from harness.tuning.study import make_sampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = SearchConfig(**{k: Range(choices=tuple(v)) for k, v in values.items()})
    study = optuna.create_study(
        direction="maximize", sampler=make_sampler(StudyConfig(seed=seed, sampler=sampler))
    )

    def lookup(cfg: dict):
        return table.get(tuple(sorted((k, v) for k, v in cfg.items() if k in VALUES_OF)))

    def measured(cfg) -> bool:
        return params_for(cfg, space, cores) is not None and lookup(cfg.as_dict()) is not None

    # the baselines the grid did not measure (batching off, 8 threads on two cores) cost a
    # trial each in a real study and find nothing: the replayed budget shrinks by their number
    skipped = len(loop.enqueue_baselines(study, space, cores, keep=measured)) if baselines else 0
    curve = []

    def after_trial(_study, trial) -> None:
        if loop.is_copy(trial):
            return  # a copy spends no budget
        best = curve[-1] if curve else 0.0
        feasible = trial.user_attrs.get("feasible")
        curve.append(max(best, trial.user_attrs["items_per_s"]) if feasible else best)

    loop.run_trials(
        study,
        objective=grid_objective(lookup, slo),
        enqueue_first=lambda _n: None,  # enqueued above
        after_trial=after_trial,
        n_trials=n_trials - skipped,
        space=space,
        cores=cores,
        seed=seed,
        echo=lambda *_a: None,
    )
    # the unmeasured baselines come first in a real study and find nothing
    curve = [0.0] * skipped + curve
    return curve + [curve[-1]] * (n_trials - len(curve))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--grid", default="results/grid/ranker-grpc/grid.csv")
    ap.add_argument(
        "--experiment",
        default=str(ROOT / "experiments" / "default.toml"),
        help="the experiment the grid was measured with (its SLO decides feasibility)",
    )
    ap.add_argument("--trials", type=int, nargs="+", default=[10, 20, 30])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--target", type=float, default=0.95)
    ap.add_argument("--studies", nargs="*", default=[])
    args = ap.parse_args()
    from experiments.grid_search import best_feasible_of_study
    from harness import config

    exp = config.load(args.experiment)
    slo, cores = exp.slo, server_cores(exp)
    grid = Path(args.grid)
    values, table = read_grid(grid)
    feasible = {k: v["items_per_s"] for k, v in table.items() if v["feasible"]}
    if not feasible:
        sys.exit("no grid config met the SLO")
    grid_best_key = max(feasible, key=feasible.get)
    grid_best = feasible[grid_best_key]
    n = max(args.trials)
    print(
        f"grid: {len(table)} configs, {len(feasible)} within the SLO; "
        f"best {grid_best:.0f} items/s at {dict(grid_best_key)}"
    )
    print(f"space replayed: {json.dumps(values)}\n")
    print(
        f"| search | trials | mean share of grid best | worst seed | "
        f"seeds reaching {args.target:.0%} | trials to reach {args.target:.0%} (median) |"
    )
    print("|---|---|---|---|---|---|")
    for sampler, with_baselines in (("tpe", True), ("tpe", False), ("random", False)):
        name = f"{sampler}, " + (
            "baselines first (as harness tune)" if with_baselines else "search alone"
        )
        curves = [
            replay(values, table, slo, n, seed, sampler, cores, with_baselines)
            for seed in range(args.seeds)
        ]
        need = [
            next((i + 1 for i, v in enumerate(c) if v >= args.target * grid_best), n + 1)
            for c in curves
        ]
        for t in args.trials:
            shares = [c[t - 1] / grid_best for c in curves]
            hit = sum(s >= args.target for s in shares)
            print(
                f"| {name} | {t} | {statistics.mean(shares):.1%} | {min(shares):.1%} | "
                f"{hit}/{args.seeds} | {statistics.median(need):g} |"
            )
    print(f"\n({n + 1} trials to reach = not reached within {n})")
    if not args.studies:
        return
    # A single grid measurement's maximum is biased upwards by noise: real studies' re-measured
    # winners are set against the grid's top configs re-measured the same way, when available.
    remeasured = grid.parent / "remeasure.json"
    ref, ref_text = grid_best, "grid best (one measurement)"
    if remeasured.exists():
        rows = json.loads(remeasured.read_text())["configs"]
        ok = [r for r in rows if r["feasible"]]
        if ok:
            top = max(ok, key=lambda r: r["items_per_s_median"])
            ref = top["items_per_s_median"]
            ref_text = f"grid's top configs re-measured, best median ({top['config']})"
    print(f"\nreference: {ref:.0f} items/s, {ref_text}\n")
    print("| real study | best feasible trial | share | re-measured winner (median) | share |")
    print("|---|---|---|---|---|")
    for d in map(Path, args.studies):
        got = best_feasible_of_study(d)
        summ = json.loads((d / "summary.json").read_text()) if (d / "summary.json").exists() else {}
        w = (summ.get("winner") or {}).get("items_per_s_median")
        print(
            f"| {d.name} | {got or 0:.0f} | {(got or 0) / ref:.1%} | "
            f"{w or 0:.0f} | {(w or 0) / ref:.1%} |"
        )


if __name__ == "__main__":
    main()
