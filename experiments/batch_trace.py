"""Where a served batch's time goes: the reference server's batch trace against the profile.

``validate_simulator.py measure`` runs every case with the reference server's batch trace on
(``harness/refserver/batch_trace.py``) and keeps each run's summary. This prints, per batching
case, the medians over its runs beside the profile's figures (no server, no lock):

- the model's CPU per batch inside the busy server against the profile's offline execution time
  at that size (what the simulator charges a batch);
- the model's wall time (longer than its CPU when the request path shares the core);
- the batch thread's other CPU (merging and splitting) and its wall time merging (mostly waiting
  for the GIL while request threads hold it);
- the server process's CPU share of its core, and its CPU outside the batch threads (the request
  path: gRPC, decoding, answering, refusing) per row served, against the profile's request path
  plus its per-batch cost spread over the rows (what the simulator charges outside the model).

    .venv/bin/python experiments/batch_trace.py [--out results/simulator-validation/batch-trace.md]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import validate_simulator as vs  # noqa: E402

from harness.tuning import outputs  # noqa: E402


def offline_ms(prof, size: float) -> float:
    import numpy as np

    sizes = sorted(prof.exec_us)
    return float(np.interp(size, sizes, [prof.exec_us[s]["median"] for s in sizes])) / 1e3


def case_row(case, prof) -> dict | None:
    cid, model, overrides, params = case
    traces = []
    items = []
    for f in vs.run_files(cid):
        run = json.loads(f.read_text())
        if run.get("batch_trace", {}).get("all"):
            traces.append(run["batch_trace"]["all"])
            items.append(run["items_per_s"])
    if params is None or not traces:
        return None

    def med(key):
        vals = [t[key] for t in traces if key in t]
        return statistics.median(vals) if vals else None

    rows = med("mean_rows")
    padded = med("mean_padded") or rows
    oh = prof.overhead_for(vs.experiment(model, overrides).load.protocol)
    out = {
        "case": cid,
        "config": f"mbs={params.max_batch_size} t={params.batch_timeout_micros}us "
        f"thr={params.num_batch_threads} q={params.max_enqueued_batches}",
        "runs": len(traces),
        "items_per_s": statistics.median(items),
        "rows_per_batch": rows,
        "cycle_ms": med("cycle_ms"),
        "run_cpu_ms": med("run_cpu_ms"),
        "offline_ms": offline_ms(prof, padded),
        "run_wall_ms": med("run_wall_ms"),
        "merge_wall_ms": med("merge_wall_ms"),
        "other_cpu_ms": med("batch_cpu_ms") - med("run_cpu_ms"),
        # what the profile charges outside the model per row in a saturated closed loop (two
        # wake-ups per batch)
        "profile_path_us_per_row": oh.cpu_in_us
        + oh.cpu_out_us
        + (prof.batch_overhead_us + 2 * oh.wake_us) / rows,
    }
    out["process_cpu_share"] = med("process_cpu_share")
    out["outside_cpu_us_per_row"] = med("outside_cpu_us_per_row")
    out["profile_utilisation"] = prof.utilisation()
    return out


def markdown(rows: list[dict]) -> str:
    lines = [
        "| case | config | runs | items/s | rows/batch | cycle ms | model CPU in server ms "
        "| offline ms | ratio | model wall ms | merge wall ms | other CPU ms | CPU share (profile) "
        "| CPU outside per row us | profile, closed loop, per row us |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def f(v, nd=2):
        return "-" if v is None else f"{v:.{nd}f}"

    for r in rows:
        lines.append(
            f"| {r['case']} | {r['config']} | {r['runs']} | {r['items_per_s']:.0f} "
            f"| {r['rows_per_batch']:.1f} | {f(r['cycle_ms'])} | {f(r['run_cpu_ms'])} "
            f"| {f(r['offline_ms'])} | {r['run_cpu_ms'] / r['offline_ms']:.2f} "
            f"| {f(r['run_wall_ms'])} | {f(r['merge_wall_ms'])} | {f(r['other_cpu_ms'])} "
            f"| {f(r['process_cpu_share'])} ({r['profile_utilisation']:.2f}) "
            f"| {f(r['outside_cpu_us_per_row'], 0)} | {r['profile_path_us_per_row']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="also write the table (markdown) here")
    args = ap.parse_args()
    from harness.sim import profile as profile_io
    from harness.sim.profile import profile_path_for

    profs = {}
    rows = []
    for case in vs.CASES:
        model = case[1]
        if model not in profs:
            profs[model] = profile_io.load(profile_path_for(vs.experiment(model, [])))
        row = case_row(case, profs[model])
        if row:
            rows.append(row)
    if not rows:
        raise SystemExit("no traced runs: run `validate_simulator.py measure` first")
    text = markdown(rows)
    print(text)
    if args.out:
        outputs.write_text_atomic(Path(args.out), text)


if __name__ == "__main__":
    main()
