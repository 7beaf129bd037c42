"""The published benchmark: tuning against TF Serving's batching guide on five workloads.

For one workload (``--workload``), runs each method as the command a user would run, one after
another, each under the machine lock (``--lock``, taken for one command at a time so others can
interleave), into ``results/published/benchmark/<workload>/``:

- ``tune``: ``harness tune --trials 30 --guide-procedure cpu``. The study measures batching off
  and follows the guide's procedure step by step beside its search, then re-measures the guide's
  choice and batching off in the same interleaved rounds as its top configs. Those three figures
  come from this one run: this machine's speed drifts by up to ~45% within an hour, and only
  figures measured interleaved in one run compare;
- ``guided``: ``harness tune --guide simulate --trials 10`` (refused for several models: the
  simulator models one model's queue);
- ``grid``: experiments/grid_search.py over a grid dense enough to bound the best (each
  workload states its grid), its top 3 re-measured 3 times;
- ``final``: every method's answer (the guide's choice, the tuned winner, the guided winner, the
  grid's best, batching off) measured again, 3 interleaved rounds, so the methods' answers are
  compared on the same minutes (experiments/head_to_head.py's rounds).

Each method's folder, the commands, their wall times (the lock's wait excluded) and the figures
go into ``benchmark.json``. ``--table`` rewrites the benchmark section of results/README.md from
every workload's files (benchmarks/guide_benchmark_table.py); no figure is typed by hand.

    python benchmarks/guide_benchmark.py --workload ranker-closed          # every method
    python benchmarks/guide_benchmark.py --workload ranker-open --methods tune,grid
    python benchmarks/guide_benchmark.py --table
    python benchmarks/guide_benchmark.py --workload ranker-closed --smoke --out /tmp/bench

``--smoke`` runs a tiny version of every method (2 trials, a 2-config grid, one round), to
check the pipeline end to end; its figures mean nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import guide_benchmark_table as table  # noqa: E402

OUT = ROOT / "results" / "published" / "benchmark"
README = ROOT / "results" / "README.md"
METHODS = ("tune", "guided", "grid", "final")
FOLDERS = {"tune": "tune-30", "guided": "guided-10", "grid": "grid", "final": "final"}
DONE_FILE = {
    "tune": "tune-30/summary.json",
    "guided": "guided-10/summary.json",
    "grid": "grid/remeasure.json",
    "final": "final/head_to_head.json",
}
ROUNDS = 3


@dataclasses.dataclass(frozen=True, kw_only=True)
class Workload:
    what: str  # one line for the table
    grid: tuple[str, ...]  # grid_search.py --values groups
    grid_note: str  # why this grid bounds the best
    guided: bool = True  # the simulator models one model's queue only

    def experiment(self, name: str) -> Path:
        return ROOT / "experiments" / "benchmark" / f"{name}.toml"


_QUEUE = "max_enqueued_batches=1000000"
WORKLOADS_RANKER_GRID = (
    f"max_batch_size=32,64,128;batch_timeout_micros=0,1000,3000;num_batch_threads=1;{_QUEUE}",
    f"max_batch_size=64,128;batch_timeout_micros=0,1000;num_batch_threads=2;{_QUEUE}",
    "max_batch_size=64,128;batch_timeout_micros=0,1000;num_batch_threads=1;max_enqueued_batches=1",
)
WORKLOADS = {
    "ranker-closed": Workload(
        what="ranker, gRPC, closed loop, 64 users, one row per request (experiments/default.toml's workload)",
        grid=WORKLOADS_RANKER_GRID,
        grid_note="the 84-config grid of results/grid/ranker-grpc had its best configs at "
        "max_batch_size 64-128, timeouts 0-3.4 ms, one thread; this grid covers that region and "
        "its edges (32, two threads, a queue of one batch)",
    ),
    "ranker-open": Workload(
        what="ranker, gRPC, open loop: Poisson arrivals at 400 requests/s (about half the "
        "measured closed-loop capacity), one row per request, p99 <= 80 ms, errors <= 0.1%",
        grid=(
            f"max_batch_size=32,64,128;batch_timeout_micros=0,5000,10000,20000;num_batch_threads=1;{_QUEUE}",
            f"max_batch_size=128;batch_timeout_micros=0,10000;num_batch_threads=2;{_QUEUE}",
            "max_batch_size=128;batch_timeout_micros=0,10000;num_batch_threads=1;max_enqueued_batches=1",
        ),
        grid_note="at a fixed rate the timeout decides how full a batch gets, so the grid "
        "spans timeouts 0-20 ms at the three largest batch sizes (the probe at 600 requests/s "
        "had the lowest p99 at 10-20 ms, and 40 ms was worse again), with two threads and the "
        "guide's queue of one batch at the largest size",
    ),
    "ranker-sizes": Workload(
        what="ranker, gRPC, closed loop, 64 users, requests of 1/8/32/128 rows (60/25/10/5%); "
        "splitting and padding searched",
        grid=(
            f"max_batch_size=128,256,512;batch_timeout_micros=0,2000;num_batch_threads=1;{_QUEUE}",
            "max_batch_size=128;enable_large_batch_splitting=true;max_execution_batch_size=16,32,64;"
            f"batch_timeout_micros=0,2000;num_batch_threads=1;{_QUEUE}",
            f"max_batch_size=128,256;allowed_batch_sizes=pow2;batch_timeout_micros=0;num_batch_threads=1;{_QUEUE}",
            "max_batch_size=128;enable_large_batch_splitting=true;max_execution_batch_size=32;"
            f"allowed_batch_sizes=pow2;batch_timeout_micros=0;num_batch_threads=1;{_QUEUE}",
            f"max_batch_size=256;batch_timeout_micros=0;num_batch_threads=2;{_QUEUE}",
            "max_batch_size=128;enable_large_batch_splitting=true;max_execution_batch_size=32;"
            f"batch_timeout_micros=0;num_batch_threads=2;{_QUEUE}",
        ),
        grid_note="every max_batch_size that admits the 128-row requests without splitting "
        "(128-512), splitting them into executed batches of 16-64, padding to powers of two, "
        "timeouts 0 and 2 ms, and two threads at the two likeliest configs; a max_batch_size "
        "below 128 without splitting refuses 5% of the requests (INVALID_ARGUMENT), over the "
        "1% error budget, so it cannot be the best",
    ),
    "mobilenet_v2": Workload(
        what="mobilenet_v2 (128x128x3), gRPC, closed loop, 32 users, one image per request: compute-bound",
        grid=(
            f"max_batch_size=2,4,8,16,32;batch_timeout_micros=0;num_batch_threads=1,2;{_QUEUE}",
            f"max_batch_size=4,8,16;batch_timeout_micros=2000,5000;num_batch_threads=1;{_QUEUE}",
        ),
        grid_note="every max_batch_size of the space (1 is batching off in all but name) with "
        "timeout 0 and one or two threads, and timeouts of 2 and 5 ms at the middle sizes",
    ),
    "two-models": Workload(
        what="ranker and mlp in one server, 70/30 traffic split, gRPC, 64 users, one batching "
        "file for both; each model held to its own SLO",
        grid=WORKLOADS_RANKER_GRID,
        grid_note="the ranker-closed grid: the ranker takes 70% of the requests",
        guided=False,
    ),
}


def harness_bin() -> str:
    here = Path(sys.executable).parent / "harness"
    return str(here) if here.exists() else "harness"


def shown(cmd: list[str]) -> str:
    """A command as a user types it from the checkout: ``harness ...``, ``python ...``."""
    names = {harness_bin(): "harness", sys.executable: "python"}
    return shlex.join(names.get(c, c) for c in cmd)


def rel(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


SMOKE_SETS = (
    "study.top_k=1", "study.repeats=1",
    "load.warmup_s=1", "load.window_s=2", "load.min_windows=2", "load.max_windows=2",
)  # fmt: skip


def smoke_grid(groups: tuple[str, ...]) -> tuple[str, ...]:
    """Two configs of the first group: its first key's first two values, the rest's first."""
    parts = [p for p in groups[0].split(";") if p.strip()]
    first = []
    for i, part in enumerate(parts):
        key, _, vals = part.partition("=")
        first.append(f"{key}={','.join(vals.split(',')[: 2 if i == 0 else 1])}")
    return (";".join(first),)


def commands(name: str, w: Workload, out: Path, smoke: bool = False) -> dict[str, list[str]]:
    """Each method's command line, as a user would type it (paths relative to the checkout)."""
    exp = rel(w.experiment(name))
    sets = [a for s in SMOKE_SETS for a in ("--set", s)] if smoke else []
    tune = [harness_bin(), "tune", "--experiment", exp, "--results-dir", rel(out)]
    grid_values = smoke_grid(w.grid) if smoke else w.grid
    out_cmds = {
        "tune": [*tune, "--study", "tune-30", "--trials", "2" if smoke else "30",
                 "--guide-procedure", "cpu", *sets],
        "grid": [sys.executable, "experiments/grid_search.py", "--experiment", exp,
                 *(a for v in grid_values for a in ("--values", v)), "--out", rel(out / "grid"),
                 "--remeasure", "1" if smoke else "3", "--repeats", "1" if smoke else "3", *sets],
        "final": [sys.executable, "benchmarks/guide_benchmark.py", "--workload", name,
                  "--out", rel(out.parent), "--final-round", "--rounds", "1" if smoke else str(ROUNDS),
                  *sets],
    }  # fmt: skip
    if w.guided:
        out_cmds["guided"] = [*tune, "--study", "guided-10", "--guide", "simulate",
                              "--trials", "2" if smoke else "10", *sets]  # fmt: skip
    return out_cmds


@contextlib.contextmanager
def machine_lock(path: str | None):
    """The machine lock (``flock(1)``'s, so shell users and this driver exclude each other)."""
    if not path:
        yield
        return
    with open(path, "a") as f:
        print(f"waiting for the machine lock {path} ...", flush=True)
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def run_logged(cmd: list[str], log: Path) -> int:
    """Run ``cmd`` from the checkout, its output to the terminal and to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        f.write(f"$ {shlex.join(cmd)}\n")
        p = subprocess.Popen(
            cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for line in p.stdout:
            sys.stdout.write(line)
            f.write(line)
            f.flush()
        return p.wait()


# -- the final round: every method's answer, interleaved ----------------------------------------


def answers(folder: Path) -> dict[str, dict]:
    """Each method's answer (a config, ``TrialConfig.as_dict``) from its files, by method."""
    tune = table.read_json(folder / "tune-30" / "summary.json") or {}
    guided = table.read_json(folder / "guided-10" / "summary.json") or {}
    refs = tune.get("references") or {}
    grid = table.grid_figures(folder / "grid") or {}
    found = {
        "guide": (refs.get(table.GUIDE_PROCEDURE) or {}).get("config"),
        "tune": (tune.get("winner") or {}).get("config"),
        "guided": (guided.get("winner") or {}).get("config"),
        "grid": (grid.get("best") or {}).get("config"),
        "off": (refs.get(table.BATCHING_OFF) or {}).get("config"),
    }
    if found["guide"] is None:  # the procedure kept nothing: its first step stands for it
        found["start"] = (refs.get(table.GUIDE_CPU_START) or {}).get("config")
    out = {}
    for method, cfg in found.items():
        if cfg is None:
            continue
        if "enable_batching" not in cfg:  # a grid point: BatchingParameters fields only
            cfg = {"enable_batching": True, **cfg}
        out[method] = cfg
    return out


def distinct(found: dict[str, dict]) -> dict[str, dict]:
    """One entry per distinct config, named by the methods that chose it (``tune+guide``)."""
    by_key: dict[str, list[str]] = {}
    for method, cfg in found.items():
        by_key.setdefault(json.dumps(cfg, sort_keys=True), []).append(method)
    return {"+".join(methods): found[methods[0]] for methods in by_key.values()}


def final_round(name: str, out_root: Path, rounds: int, sets: list[str]) -> None:
    from experiments.head_to_head import head_to_head
    from experiments.head_to_head import table as h2h_table
    from harness import config
    from harness.tuning.space import TrialConfig
    from harness.tuning.trial import TrialRunner

    folder = out_root / name
    winners = {k: TrialConfig.from_dict(v) for k, v in distinct(answers(folder)).items()}
    if not winners:
        sys.exit(
            f"error: {folder}: no method has an answer yet (run --methods tune,guided,grid first)"
        )
    exp = config.load(WORKLOADS[name].experiment(name), sets)
    runner = TrialRunner(exp)
    try:
        rows = head_to_head(winners, runner.measure, exp.slo, rounds, folder / "final")
    finally:
        runner.close()
    print("\n" + h2h_table(rows, winners))


# -- running a workload -------------------------------------------------------------------------


def profile_exists(name: str) -> bool:
    from harness import config
    from harness.sim.profile import profile_path_for

    exp = config.load(WORKLOADS[name].experiment(name))
    return (ROOT / profile_path_for(exp)).exists()


def record(name: str, out: Path, cmds: dict, runs: dict) -> None:
    from harness.atomic import write_json

    w = WORKLOADS[name]
    fig = table.figures(out, runs)
    write_json(
        out / "benchmark.json",
        {
            "workload": name,
            "what": w.what,
            "experiment": rel(w.experiment(name)),
            "grid": {"values": list(w.grid), "why_it_bounds_the_best": w.grid_note},
            "commands": {m: shown(c) for m, c in cmds.items()},
            "runs": runs,
            "figures": fig,
        },
    )


def run_workload(
    name: str, methods: list[str], out_root: Path, lock: str | None, smoke: bool, force: bool
) -> None:
    out = out_root / name
    cmds = commands(name, WORKLOADS[name], out, smoke)
    runs = (table.read_json(out / "benchmark.json") or {}).get("runs") or {}
    for m in methods:
        if m not in cmds:
            print(f"{name}: {m} does not apply (several models: no simulator guide)")
            continue
        if (out / DONE_FILE[m]).exists() and not force:
            print(f"{name}: {m} is done ({rel(out / DONE_FILE[m])}); --force runs it again")
            continue
        with machine_lock(lock):
            had_profile = m == "guided" and profile_exists(name)
            started = time.time()
            print(f"\n{name}: {m}: {shlex.join(cmds[m])}", flush=True)
            rc = run_logged(cmds[m], out / f"{FOLDERS[m]}.log")
            wall = time.time() - started
        runs[m] = {
            "command": shown(cmds[m]),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "wall_s": round(wall, 1),
            "returncode": rc,
            **({"profile_made": not had_profile and profile_exists(name)} if m == "guided" else {}),
        }
        record(name, out, cmds, runs)
        print(f"{name}: {m} ended with exit code {rc} after {wall / 60:.1f} min", flush=True)
    record(name, out, cmds, runs)


def write_table(out_root: Path, readme: Path) -> None:
    rows = []
    for name, w in WORKLOADS.items():
        if (out_root / name).is_dir():
            rows.append((name, w.what, table.figures(out_root / name)))
    section = table.readme_section(rows)
    text = readme.read_text() if readme.exists() else ""
    readme.write_text(table.replace_section(text, section))
    print(section)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", choices=sorted(WORKLOADS))
    ap.add_argument(
        "--methods", default=",".join(METHODS), help=f"comma-separated, of {', '.join(METHODS)}"
    )
    ap.add_argument(
        "--out", default=str(OUT), help="the benchmark folder (one folder per workload in it)"
    )
    ap.add_argument(
        "--lock",
        default="/tmp/heavy.lock",
        help="the machine lock, taken per command ('' for none)",
    )
    ap.add_argument(
        "--smoke", action="store_true", help="a tiny run of every method, to check the pipeline"
    )
    ap.add_argument(
        "--force", action="store_true", help="run a method again though its files exist"
    )
    ap.add_argument(
        "--table", action="store_true", help="rewrite results/README.md's benchmark table"
    )
    ap.add_argument("--readme", default=str(README))
    ap.add_argument("--final-round", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--rounds", type=int, default=ROUNDS, help=argparse.SUPPRESS)
    ap.add_argument("--set", action="append", default=[], help=argparse.SUPPRESS)
    args = ap.parse_args()
    out_root = Path(args.out)
    if args.table:
        write_table(out_root, Path(args.readme))
        return
    if not args.workload:
        ap.error("--workload is needed (or --table)")
    if args.final_round:
        final_round(args.workload, out_root, args.rounds, args.set)
        return
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        ap.error(f"unknown methods {', '.join(unknown)} (of {', '.join(METHODS)})")
    run_workload(args.workload, methods, out_root, args.lock or None, args.smoke, args.force)


if __name__ == "__main__":
    main()
