"""How close does a 30-trial Optuna search get to the exhaustive grid's best?

Two views, printed as tables:

1. Replayed search (many seeds, no servers): Optuna runs against the measured grid as a lookup
   table. Each trial picks one value per parameter from the grid's values and gets that grid
   point's measured throughput and feasibility (p99 and error limits), with the Tuner's sampler
   settings (TPE, 8 start-up trials, constraints). The share of the grid's best feasible
   throughput reached after N trials, over seeds; random search for reference.
2. Real studies (optional, --studies): each study folder's best feasible trial and re-measured
   winner against the grid's best, with the grid's top configs re-measured when the grid folder
   has remeasure.json (a single grid measurement's maximum is biased upwards by noise).

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


def read_grid(path: Path) -> tuple[dict[str, list], dict[tuple, tuple[float, bool]]]:
    table, values = {}, {}
    with open(path) as f:
        for r in csv.DictReader(f):
            cfg = json.loads(r["config"])
            key = tuple(sorted(cfg.items()))
            for k, v in cfg.items():
                values.setdefault(k, set()).add(v)
            ok = r["items_per_s"] not in ("", None)
            table[key] = (float(r["items_per_s"]) if ok else 0.0, r["feasible"] == "True")
    return {k: sorted(v) for k, v in values.items()}, table


def replay(values, table, n_trials: int, seed: int, sampler: str) -> list[float]:
    """Best feasible throughput after each trial of one replayed search."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    if sampler == "tpe":
        s = optuna.samplers.TPESampler(seed=seed, n_startup_trials=8)
    else:
        s = optuna.samplers.RandomSampler(seed=seed)
    study = optuna.create_study(direction="maximize", sampler=s)
    best, curve = 0.0, []

    def objective(trial):
        nonlocal best
        cfg = {k: trial.suggest_categorical(k, v) for k, v in values.items()}
        key = tuple(sorted(cfg.items()))
        if key not in table:
            raise SystemExit(f"the grid has no measurement for {cfg}: finish the grid first")
        got, feasible = table[key]
        trial.set_constraint("slo", -1.0 if feasible else 1.0)
        if feasible:
            best = max(best, got)
        curve.append(best)
        return got

    study.optimize(objective, n_trials=n_trials)
    return curve


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--grid", default="results/grid/ranker-grpc/grid.csv")
    ap.add_argument("--trials", type=int, nargs="+", default=[10, 20, 30])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--target", type=float, default=0.95)
    ap.add_argument("--studies", nargs="*", default=[])
    args = ap.parse_args()
    from experiments.grid_search import best_feasible_of_study

    values, table = read_grid(Path(args.grid))
    feasible = {k: v for k, (v, ok) in table.items() if ok}
    if not feasible:
        sys.exit("no grid config met the SLO")
    grid_best_key = max(feasible, key=feasible.get)
    grid_best = feasible[grid_best_key]
    n = max(args.trials)
    print(f"grid: {len(table)} configs, {len(feasible)} within the SLO; best {grid_best:.0f} items/s at {dict(grid_best_key)}")
    print(f"space replayed: {json.dumps(values)}\n")
    print(f"| sampler | trials | mean share of grid best | worst seed | seeds reaching {args.target:.0%} |")
    print("|---|---|---|---|---|")
    for sampler in ("tpe", "random"):
        curves = [replay(values, table, n, seed, sampler) for seed in range(args.seeds)]
        for t in args.trials:
            shares = [c[t - 1] / grid_best for c in curves]
            hit = sum(s >= args.target for s in shares)
            print(f"| {sampler} | {t} | {statistics.mean(shares):.1%} | {min(shares):.1%} | {hit}/{args.seeds} |")
    if args.studies:
        print("\n| real study | best feasible trial | share of grid best | re-measured winner (median) | share |")
        print("|---|---|---|---|---|")
        for d in map(Path, args.studies):
            got = best_feasible_of_study(d)
            summ = json.loads((d / "summary.json").read_text()) if (d / "summary.json").exists() else {}
            w = (summ.get("winner") or {}).get("items_per_s_median")
            print(
                f"| {d.name} | {got or 0:.0f} | {(got or 0) / grid_best:.1%} | "
                f"{w or 0:.0f} | {(w or 0) / grid_best:.1%} |"
            )


if __name__ == "__main__":
    main()
