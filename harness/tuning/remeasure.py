"""Re-measurement: a few configs measured again in interleaved rounds, and one summary each.

One measurement on a busy machine can be lucky, and a search's best is the luckiest of many.
The winner step (``winner``), the exhaustive grid (experiments/grid_search.py) and the
head-to-head of studies (experiments/head_to_head.py) all re-measure the same way:

- **Interleaved rounds**: round r measures every config once before round r + 1 starts, so a
  slow minute of the machine hits every config alike.
- **A resumable cache**: every run is written to a JSON file (``{key: [run, ...]}``) the moment
  it ends; an interrupted re-measurement starts where it stopped.
- **One failure rule**: a run that fails (the server refused the config, crashed, the load
  broke) is kept as ``{"failed": reason}`` and counted in ``failed_runs``; it is never a figure
  (not 0 items/s, not the search's figure). A config needs ``MIN_SUCCESSES`` successful runs (or
  all of them, when fewer were asked for) to be feasible, and only a feasible config can win.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from harness.config import SloConfig
from harness.errors import HarnessError
from harness.tuning import outputs
from harness.tuning.loop import score
from harness.tuning.space import TrialConfig

MIN_SUCCESSES = 2


def needed(repeats: int) -> int:
    """Successful runs a config needs to be feasible when it was re-measured ``repeats`` times:
    two (a median of one run is one run), or every run when only one was asked for."""
    return min(MIN_SUCCESSES, repeats)


def read_cache(path: Path | None) -> dict[str, list[dict]]:
    if path is None or not Path(path).exists():
        return {}
    return json.loads(Path(path).read_text())


def run_rounds(
    configs: dict[str, TrialConfig],
    measure: Callable[[TrialConfig, Path], dict],
    *,
    repeats: int,
    folder: Callable[[str, int], Path],
    cache: Path | None = None,
    progress: Callable[[str, int, dict, float], None] | None = None,
) -> dict[str, list[dict]]:
    """Measure each of ``configs`` (by key) until it has ``repeats`` runs, round-robin; runs
    already in ``cache`` count (and are kept, more of them than ``repeats`` included). Round r
    of config ``key`` measures into ``folder(key, r)``. A ``HarnessError`` is a failed run.
    ``progress(key, round, run, seconds)`` after each run. Returns ``{key: [run, ...]}``."""
    done = read_cache(cache)
    runs = {key: list(done.get(key, [])) for key in configs}
    for r in range(repeats):
        for key, cfg in configs.items():
            if len(runs[key]) > r:
                continue
            t0 = time.monotonic()
            try:
                run = measure(cfg, folder(key, r))
            except HarnessError as exc:
                run = {"failed": str(exc).splitlines()[0] if str(exc) else type(exc).__name__}
            runs[key].append(run)
            if cache is not None:  # other keys in the cache (an earlier group's) stay
                done[key] = runs[key]
                outputs.write_json_atomic(cache, done)
            if progress is not None:
                progress(key, r, run, time.monotonic() - t0)
    return runs


def summarise(runs: list[dict], slo: SloConfig, *, repeats: int) -> dict:
    """One config's runs in one summary: median, min and max throughput, median p99 and error
    rate over the successful runs (None without any), ``runs`` (successful) and
    ``failed_runs``, and ``feasible``: enough successful runs (``needed(repeats)``) whose
    medians keep the SLO (``loop.score``). A run without a p99 (nothing answered) counts as an
    infinite p99."""
    ok = [r for r in runs if "failed" not in r]
    out = {
        "items_per_s_median": None,
        "items_per_s_min": None,
        "items_per_s_max": None,
        "p99_ms_median": None,
        "error_rate_median": None,
        # throughput per core the server used (its CPU-seconds over the windows), and its peak
        # memory: what the config costs to run, where the backend measured them
        "items_per_core_s_median": None,
        "server_peak_memory_mb_max": None,
        "runs": len(ok),
        "failed_runs": len(runs) - len(ok),
        "feasible": False,
    }
    if not ok:
        return out
    ips = [r["items_per_s"] for r in ok]
    p99 = [r["p99_ms"] if r.get("p99_ms") is not None else float("inf") for r in ok]
    out.update(
        items_per_s_median=statistics.median(ips),
        items_per_s_min=min(ips),
        items_per_s_max=max(ips),
        p99_ms_median=statistics.median(p99),
        error_rate_median=statistics.median(r.get("error_rate", 0.0) for r in ok),
    )
    per_core = [r["items_per_s"] / r["server_cores"] for r in ok if r.get("server_cores")]
    if per_core:
        out["items_per_core_s_median"] = statistics.median(per_core)
    memory = [r["server_peak_memory_mb"] for r in ok if r.get("server_peak_memory_mb")]
    if memory:
        out["server_peak_memory_mb_max"] = max(memory)
    medians = {
        "items_per_s": out["items_per_s_median"],
        "p99_ms": out["p99_ms_median"],
        "error_rate": out["error_rate_median"],
    }
    if any(r.get("models") for r in ok):  # several models: each model's medians, own SLO
        out["models"] = medians["models"] = model_medians(ok)
    out["feasible"] = len(ok) >= needed(repeats) and score(medians, slo)[2]
    return out


def model_medians(ok: list[dict]) -> dict[str, dict]:
    """Each model's median figures over successful runs, judged against its own SLO (as each
    run recorded it) the way ``loop.score`` reads them."""
    out = {}
    for name in dict.fromkeys(n for r in ok for n in r.get("models") or {}):
        runs = [r["models"][name] for r in ok if name in (r.get("models") or {})]
        inf = float("inf")
        p99 = statistics.median(m["p99_ms"] if m.get("p99_ms") is not None else inf for m in runs)
        err = statistics.median(m["error_rate"] for m in runs)
        constraints = [p99 - runs[0]["slo_p99_ms"], err - runs[0]["slo_max_error_rate"]]
        out[name] = {
            "items_per_s_median": statistics.median(m["items_per_s"] for m in runs),
            "p99_ms_median": p99,
            "error_rate_median": err,
            "slo_p99_ms": runs[0]["slo_p99_ms"],
            "constraints": constraints,
            "meets_slo": constraints[0] <= 0 and constraints[1] <= 0,
        }
    return out


def describe_run(run: dict) -> str:
    """One run in a progress line."""
    if "failed" in run:
        return f"FAILED {run['failed']}"
    p99 = run.get("p99_ms")
    return f"{run['items_per_s']:.0f} items/s, p99 {'-' if p99 is None else f'{p99:.1f}'} ms"


def rank(rows: list[dict]) -> list[dict]:
    """Summaries best first: feasible ones, then by median throughput (none: last)."""
    return sorted(rows, key=lambda r: (not r["feasible"], -(r["items_per_s_median"] or 0.0)))


def overlap(a: dict, b: dict) -> bool:
    """Whether two summaries' re-measured throughput ranges overlap (neither is told apart from
    the other on this machine). A summary without figures overlaps nothing."""
    if a["items_per_s_min"] is None or b["items_per_s_min"] is None:
        return False
    return a["items_per_s_min"] <= b["items_per_s_max"] and b["items_per_s_min"] <= a["items_per_s_max"]


# The rule that picks the winner among tied configs, as summary.json states it.
TIE_RULE = (
    "configs whose re-measured throughput range overlaps that of the best median are tied; "
    "among them the highest lower bound (slowest run) wins, then the lower median p99"
)


def rank_by_spread(rows: list[dict]) -> list[dict]:
    """:func:`rank`, then the spread: each feasible summary whose range overlaps the best
    median's is marked ``tied_with_best``, and among those the one whose slowest run is fastest
    comes first, then the lower median p99 (``TIE_RULE``): when the medians cannot be told
    apart, the throughput a config delivers on a bad minute decides (a median a lucky run
    lifted does not; a p99 difference within noise, as on the first study measured with this
    rule, 125.5 against 125.6 ms, is no reason either). The others keep :func:`rank`'s order."""
    ranked = rank(rows)
    feasible = [r for r in ranked if r["feasible"]]
    if not feasible:
        return [{**r, "tied_with_best": False} for r in ranked]
    best = feasible[0]
    tied = [r for r in feasible if r is best or overlap(r, best)]
    tied.sort(key=lambda r: (-r["items_per_s_min"], r["p99_ms_median"]))
    ids = {id(r) for r in tied}
    rest = [r for r in ranked if id(r) not in ids]
    return [{**r, "tied_with_best": True} for r in tied] + [
        {**r, "tied_with_best": False} for r in rest
    ]
