"""Study results on disk, always written atomically (a reader never sees half a file)."""

from __future__ import annotations

import json
from pathlib import Path

from harness import labels

# The one atomic-write helper (harness.atomic), under the names the tuning code calls.
from harness.atomic import write_csv as write_csv_atomic
from harness.atomic import write_json as write_json_atomic  # noqa: F401
from harness.atomic import write_text as write_text_atomic  # noqa: F401
from harness.labels import PARAMS

FIGURES = (
    "items_per_s",
    "throughput_rps",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "p999_ms",
    "error_rate",
    "requests",
    "mean_batch_size",
    "mean_queuing_ms",
    "stable",
    "feasible",
    "generator_cpu",
    # the server's CPU-seconds and mean cores over the measured windows, its peak memory
    "server_cpu_s",
    "server_cores",
    "server_peak_memory_mb",
    # tune --guide simulate: the simulator's prediction beside each measured trial
    "predicted_items_per_s",
    "predicted_p99_ms",
    "predicted_error_rate",
    "guided",
)


def trial_rows(study) -> list[dict]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        cfg = a.get("config", {})
        baseline = labels.baseline_label(a.get("baseline", ""))  # an older study's label: today's
        row = {"number": t.number, "state": t.state.name, "baseline": baseline}
        for p in PARAMS:
            v = cfg.get(p, "")
            row[p] = json.dumps(v) if isinstance(v, list) else v
        for f in FIGURES:
            row[f] = a.get(f, "")
        row.update(model_columns(cfg, a.get("models") or {}))
        row["errors"] = json.dumps(a.get("errors", {}))
        row["oversize"] = json.dumps(a.get("oversize", []))
        row["fail_reason"] = a.get("fail_reason", "") or (
            "interrupted (Ctrl-C, or the harness running it was killed)"
            if t.state.name == "FAIL"
            else ""
        )
        row["duration_s"] = round(t.duration.total_seconds(), 1) if t.duration else ""
        # parallel tuning: the tuner that ran it; a repeated config takes the earlier figures
        row["tuner"] = a.get("tuner", "")
        row["duplicate_of"] = a.get("duplicate_of", "")
        # measured because a repeated proposal pointed here: one step from this trial's config
        row["neighbour_of"] = a.get("neighbour_of", "")
        rows.append(row)
    return rows


MODEL_FIGURES = ("share", "items_per_s", "throughput_rps", "p99_ms", "error_rate", "meets_slo")


def model_columns(cfg: dict, models: dict) -> dict:
    """Several models in one server: each model's figures and SLO verdict as ``<model>.<figure>``
    columns, and its own batching parameters (per-model batching) as ``<model>.<parameter>``."""
    out = {}
    for name, values in (cfg.get("per_model") or {}).items():
        for k, v in values.items():
            out[f"{name}.{k}"] = v
    for name, figures in models.items():
        for f in MODEL_FIGURES:
            out[f"{name}.{f}"] = figures.get(f, "")
    return out


def write_trials_csv(study, path: Path) -> None:
    write_csv_atomic(path, trial_rows(study))


def summary_table(rows: list[dict], slo_ms: float, tie: bool, gain: float | None) -> str:
    from harness.tuning.space import TrialConfig

    lines = ["", f"top configs, re-measured (median, range; SLO p99 <= {slo_ms:g} ms)", ""]
    lines.append(f"{'trial':>5}  {'items/s median':>14}  {'range':>15}  {'p99 ms':>7}  config")
    for r in rows:
        desc = r["label"] or TrialConfig.from_dict(r["config"]).describe()
        if r["items_per_s_median"] is None:  # every re-measurement failed
            median, rng, p99 = "-", "-", "-"
        else:
            median = f"{r['items_per_s_median']:.0f}"
            rng = f"{r['items_per_s_min']:.0f}-{r['items_per_s_max']:.0f}"
            p99 = f"{r['p99_ms_median']:.1f}"
        flag = "" if r["feasible"] else "  (misses the SLO on re-measure)"
        if r.get("failed_runs"):
            flag += f"  ({r['failed_runs']} of {r['failed_runs'] + r['runs']} runs failed)"
        lines.append(f"{r['trial']:>5}  {median:>14}  {rng:>15}  {p99:>7}  {desc}{flag}")
    if tie:
        lines.append("\nthe top two cannot be told apart: their re-measured ranges overlap")
    if gain:
        lines.append(f"\n{gain:.2f}x the throughput of batching off")
    return "\n".join(lines)
