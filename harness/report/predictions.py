"""Predicted beside measured, for a study run with ``--guide simulate``.

Every real trial of a guided study carries the simulator's prediction for its config
(``predicted_*`` columns in trials.csv) and why it was picked (``guided``). This module turns them
into a table of errors and a scatter of predicted against measured; a study without predictions
gets neither.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.report.plots import _empty, _save


def table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per measured trial that had a prediction: both figures and the relative error."""
    cols = ["number", "label", "guided", "items_per_s", "predicted_items_per_s", "p99_ms"]
    cols += ["predicted_p99_ms", "feasible"]
    if "predicted_items_per_s" not in df:
        return pd.DataFrame(columns=[*cols, "items_error", "p99_error"])
    out = df[df["complete"] & ~df["duplicate"]].copy()
    for c in ("predicted_items_per_s", "predicted_p99_ms"):
        out[c] = pd.to_numeric(out[c], errors="coerce")
    out = out[out["predicted_items_per_s"].notna()]
    if "guided" not in out:
        out["guided"] = ""
    out = out[cols].reset_index(drop=True)
    out["items_error"] = (out["predicted_items_per_s"] - out["items_per_s"]) / out["items_per_s"]
    out["p99_error"] = (out["predicted_p99_ms"] - out["p99_ms"]) / out["p99_ms"]
    return out


def summary(t: pd.DataFrame) -> str:
    """One sentence: how close the predictions came, as medians and counts within target."""
    if t.empty:
        return ""
    items = t["items_error"].abs()
    p99 = t["p99_error"].abs().dropna()
    return (
        f"Throughput predicted within 10% for {int((items <= 0.10).sum())} of {len(t)} trials "
        f"(median error {items.median():.0%}); p99 within 20% for {int((p99 <= 0.20).sum())} of "
        f"{len(p99)} (median error {p99.median():.0%})."
    )


def plot(t: pd.DataFrame, slo_ms: float | None, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    if t.empty:
        for ax in axes:
            _empty(ax, "no trial with a prediction")
        return _save(fig, path)
    for ax, meas, pred, unit in (
        (axes[0], "items_per_s", "predicted_items_per_s", "items/s"),
        (axes[1], "p99_ms", "predicted_p99_ms", "p99 ms"),
    ):
        ax.scatter(t[meas], t[pred], s=28, color="#1f77b4", zorder=3)
        for _, r in t.iterrows():
            ax.annotate(str(int(r["number"])), (r[meas], r[pred]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
        both = pd.concat([t[meas], t[pred]]).dropna()
        lo, hi = float(both.min()) * 0.9, float(both.max()) * 1.1
        ax.plot([lo, hi], [lo, hi], color="grey", lw=1, ls="--", label="prediction = measurement")
        if unit == "p99 ms" and slo_ms:
            ax.axvline(slo_ms, color="#d62728", lw=1, ls=":", label="SLO")
            ax.axhline(slo_ms, color="#d62728", lw=1, ls=":")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_xlabel(f"measured {unit}")
        ax.set_ylabel(f"predicted {unit}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    fig.suptitle("Simulator's prediction against the measurement, per real trial")
    return _save(fig, path)
