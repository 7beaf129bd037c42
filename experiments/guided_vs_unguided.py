"""Guided (simulator first) against unguided Optuna search, scored on a measured exhaustive grid.

The grid (experiments/grid_search.py) measured every config of a small space on the reference
server; here both searches run over that same space and every "trial" reads the grid's measured
figures instead of measuring again (a tabular benchmark: same budget, same noise for both, and
cheap enough to repeat over many seeds). The score is the best feasible throughput found divided
by the grid's best feasible throughput.

- unguided: ``harness tune``'s own trial loop and sampler (TPE, seeded, 8 random start-up
  trials, constraints p99 <= SLO and error rate <= limit, the baselines first, a repeated config's
  neighbours next), replayed on the grid as experiments/tuning_efficiency.py does;
- guided: ``harness tune --guide simulate``'s picks (harness.tuning.guided) from the model's
  profile, the simulator (harness.sim.guide.Predictor) searched with Optuna under each seed.

Usage (no server, no lock needed):
    .venv/bin/python experiments/guided_vs_unguided.py [--grid results/grid/ranker-grpc/grid.csv]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from experiments.tuning_efficiency import read_grid, replay, server_cores  # noqa: E402
from harness.config import Range, load_experiment  # noqa: E402
from harness.sim.profile import profile_path_for  # noqa: E402

KEYS = ("max_batch_size", "batch_timeout_micros", "num_batch_threads", "max_enqueued_batches")
MISSING = {"items_per_s": 0.0, "p99_ms": None, "error_rate": 1.0, "feasible": False}


def key_of(cfg) -> tuple:
    """A config's key in the grid table (``tuning_efficiency.read_grid``)."""
    b = cfg.batching
    return tuple(sorted((k, int(getattr(b, k))) for k in KEYS))


def unguided(
    values, table, exp, trials: int, seed: int, sampler: str = "tpe", baselines: bool = True
) -> list[float]:
    """Best feasible throughput after each measured trial of the tuner's own loop and sampler
    replayed on the grid (see experiments/tuning_efficiency.py)."""
    return replay(values, table, exp.slo, trials, seed, sampler, server_cores(exp), baselines)


def guided(exp, table, profile, trials: int, seed: int) -> tuple[list[float], list]:
    from harness.sim.guide import Predictor
    from harness.tuning.guided import GuidedSearch

    g = GuidedSearch(exp, Predictor(exp, profile, cores=1), cores=1, echo=lambda *a: None)
    picks = g.candidates(trials, seed=seed)
    best, curve, rows = 0.0, [], []
    for cfg, pred, why in picks:
        r = table.get(key_of(cfg), MISSING)
        if r["feasible"]:
            best = max(best, r["items_per_s"])
        curve.append(best)
        rows.append((cfg.describe(), pred, r, why))
    while len(curve) < trials:
        curve.append(best)
    return curve, rows


def main() -> None:
    from harness.sim import profile as profiles

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", default=str(ROOT / "results/grid/ranker-grpc/grid.csv"))
    ap.add_argument("--experiment", default="experiments/default.toml")
    ap.add_argument("--profile", help="default: the experiment's saved profile")
    ap.add_argument("--seeds", type=int, default=20)
    args = ap.parse_args()
    values, table = read_grid(Path(args.grid))
    exp = load_experiment(args.experiment, [])
    space = dataclasses.replace(
        exp.search, **{k: Range(choices=tuple(v)) for k, v in values.items()}
    )
    exp = dataclasses.replace(exp, search=space)
    prof = profiles.load(args.profile or profile_path_for(exp))
    feasible = [r["items_per_s"] for r in table.values() if r["feasible"]]
    best = max(feasible)
    print(
        f"grid: {len(table)} configs measured, {len(feasible)} feasible "
        f"(p99 <= {exp.slo.p99_ms:g} ms, errors <= {exp.slo.max_error_rate:.0%}); best {best:.0f} items/s"
    )
    seeds = range(args.seeds)
    runs = {
        "unguided TPE, baselines first (harness tune)": [
            unguided(values, table, exp, 30, s) for s in seeds
        ],
        "unguided TPE, search alone": [
            unguided(values, table, exp, 30, s, baselines=False) for s in seeds
        ],
        "unguided random, search alone": [
            unguided(values, table, exp, 30, s, "random", baselines=False) for s in seeds
        ],
    }
    g_runs = [guided(exp, table, prof, 30, s) for s in seeds]
    runs["guided (simulator first)"] = [c for c, _ in g_runs]
    print()
    print("| search | share of grid best after 5 | 10 | 20 | 30 trials (median over seeds, min) |")
    print("|---|---|---|---|---|")
    for name, curves in runs.items():
        cells = []
        for n in (5, 10, 20, 30):
            shares = [c[n - 1] / best for c in curves]
            cells.append(f"{statistics.median(shares):.0%} (min {min(shares):.0%})")
        print(f"| {name} | " + " | ".join(cells) + " |")
    for name, curves in runs.items():
        need = []
        for c in curves:
            hit = next((i + 1 for i, v in enumerate(c) if v >= 0.95 * best), None)
            need.append(hit if hit else 31)
        print(
            f"{name}: trials to reach 95% of the grid best: median {statistics.median(need):g} "
            f"(31 = not within 30)"
        )
    print("\nguided picks (seed 0): config | predicted | measured in the grid")
    for desc, pred, r, why in g_runs[0][1][:10]:
        print(
            f"  {desc:40} pred {pred['predicted_items_per_s']:6.0f}/s p99 {pred['predicted_p99_ms']}"
            f" | grid {r['items_per_s']:6.0f}/s p99 {r['p99_ms'] or 0:.1f} {'ok' if r['feasible'] else 'SLO'}  [{why}]"
        )


if __name__ == "__main__":
    main()
