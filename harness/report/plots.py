"""Draw the report's tables as PNG files (matplotlib, no display needed).

Each function takes tables from ``tables.py`` and a path, always writes a real image (a plot
with nothing to show says so inside the picture), and returns the path.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from harness import atomic  # noqa: E402
from harness.labels import BATCHING_OFF  # noqa: E402

COLORS = plt.rcParams["axes.prop_cycle"].by_key()["color"]
BASELINE_MARKERS = ("s", "D", "^", "v", "P")
DPI = 110


def _save(fig, path: Path) -> Path:
    """The figure as a PNG, renamed into place (a reader never sees half an image)."""
    try:
        with atomic.replacing(path) as tmp:
            fig.savefig(tmp, dpi=DPI, bbox_inches="tight", format="png")
    finally:
        plt.close(fig)
    return path


def _plain_log_ticks(axis) -> None:
    fmt = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
    axis.set_major_formatter(fmt)
    axis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=11, color="#555")
    ax.set_xticks([])
    ax.set_yticks([])


def throughput_vs_p99(
    df: pd.DataFrame, front: pd.DataFrame, slo_ms, winner: int | None, path: Path, title: str = ""
) -> Path:
    fig, ax = plt.subplots(figsize=(8, 5))
    ok = df[df["complete"] & df["p99_ms"].notna()]
    if ok.empty:
        _empty(ax, "no completed trial to plot")
        return _save(fig, path)
    search = ok[ok["kind"] == "search"]
    feas = search[search["feasible"]]
    infeas = search[~search["feasible"]]
    ax.scatter(feas["p99_ms"], feas["items_per_s"], s=28, color=COLORS[0], label="trial within SLO", zorder=3)
    ax.scatter(infeas["p99_ms"], infeas["items_per_s"], s=28, facecolors="none", edgecolors="#888", label="trial missing SLO", zorder=3)
    if len(front) > 1:
        ax.step(front["p99_ms"], front["items_per_s"], where="post", color=COLORS[1], lw=1.5, label="Pareto front", zorder=2)
    elif len(front) == 1:
        ax.scatter(front["p99_ms"], front["items_per_s"], s=80, facecolors="none", edgecolors=COLORS[1], label="Pareto front")
    for i, (_, b) in enumerate(ok[ok["kind"] == "baseline"].iterrows()):
        ax.scatter(b["p99_ms"], b["items_per_s"], s=70, marker=BASELINE_MARKERS[i % 5], color=COLORS[(i + 2) % len(COLORS)], edgecolors="black", zorder=4, label=f"baseline: {b['label']}")
    if winner is not None and (ok["number"] == winner).any():
        w = ok[ok["number"] == winner].iloc[0]
        ax.scatter(w["p99_ms"], w["items_per_s"], s=260, marker="*", color="gold", edgecolors="black", zorder=5, label=f"winner (trial {winner})")
    if slo_ms:
        ax.axvline(slo_ms, color="crimson", ls="--", lw=1.2, label=f"SLO p99 {slo_ms:g} ms")
    if ok["p99_ms"].max() / max(ok["p99_ms"].min(), 1e-3) > 20:
        ax.set_xscale("log")
        _plain_log_ticks(ax.xaxis)
    ax.set_xlabel("p99 latency (ms)")
    ax.set_ylabel("throughput (items/s)")
    ax.set_title(title or "Throughput against tail latency, every trial")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return _save(fig, path)


def latency_percentiles(top: pd.DataFrame, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    names = ["p50", "p90", "p99", "p99.9"]
    keys = ["p50_ms", "p90_ms", "p99_ms", "p999_ms"]
    if top.empty:
        _empty(ax, "no top configs or baselines measured")
        return _save(fig, path)
    x = np.arange(len(names))
    width = 0.8 / len(top)
    for i, (_, r) in enumerate(top.iterrows()):
        vals = [r.get(k) for k in keys]
        vals = [v if v is not None and not (isinstance(v, float) and math.isnan(v)) else 0 for v in vals]
        ax.bar(x + i * width, vals, width, label=f"{r['role']}: {r['config']}"[:70], color=COLORS[i % len(COLORS)])
    ax.set_xticks(x + width * (len(top) - 1) / 2, names)
    ax.set_yscale("log")
    _plain_log_ticks(ax.yaxis)
    ax.set_ylabel("latency (ms, log scale)")
    ax.set_title("Latency percentiles: top configs against the baselines")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    return _save(fig, path)


def latency_distribution(q: pd.DataFrame, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    if q.empty:
        _empty(ax, "no per-request samples kept for these trials")
        return _save(fig, path)
    for i, (n, g) in enumerate(q.groupby("trial", sort=False)):
        g = g.sort_values("quantile")
        ax.plot(g["latency_ms"], g["quantile"] * 100, marker="o", ms=3, color=COLORS[i % len(COLORS)], label=f"#{n} {g['config'].iloc[0]}"[:70])
    ax.set_xscale("log")
    _plain_log_ticks(ax.xaxis)
    ax.set_xlabel("latency (ms, log scale)")
    ax.set_ylabel("share of requests answered within (%)")
    ax.set_title("Latency distribution (successful requests)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def rejections(df: pd.DataFrame, rej: pd.DataFrame, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    if rej.empty:
        _empty(ax, "no request was rejected in any trial")
        return _save(fig, path)
    r = rej.copy()
    r["mbs"] = r["max_batch_size"].fillna(0).astype(int)
    g = r.groupby("mbs")[["INVALID_ARGUMENT", "UNAVAILABLE", "RESOURCE_EXHAUSTED"]].sum()
    x = np.arange(len(g))
    bottom = np.zeros(len(g))
    for code, color in (("INVALID_ARGUMENT", COLORS[3]), ("UNAVAILABLE", COLORS[1]), ("RESOURCE_EXHAUSTED", COLORS[4])):
        if g[code].sum():
            ax.bar(x, g[code], bottom=bottom, color=color, label=code)
            bottom += g[code].to_numpy()
    ax.set_xticks(x, [str(m) if m else "off" for m in g.index])
    ax.set_xlabel("max_batch_size of the trial")
    ax.set_ylabel("rejected requests (all trials)")
    largest = rej["largest_request"].dropna()
    if len(largest):
        ax.set_title(f"Rejections by max_batch_size (largest request: {int(largest.iloc[0])} items)")
    else:
        ax.set_title("Rejections by max_batch_size")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def batch_sizes(bs: pd.DataFrame, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    if bs.empty:
        _empty(ax, "the server reported no batches (batching off, or no metrics)")
        return _save(fig, path)
    buckets = sorted(bs["batch_size_bucket"].unique())
    x = np.arange(len(buckets))
    groups = list(bs.groupby("trial", sort=False))
    width = 0.8 / len(groups)
    for i, (n, g) in enumerate(groups):
        share = g.set_index("batch_size_bucket")["share"].reindex(buckets, fill_value=0)
        ax.bar(x + i * width, share * 100, width, color=COLORS[i % len(COLORS)], label=f"#{n} {g['config'].iloc[0]}"[:70])
    ax.set_xticks(x + width * (len(groups) - 1) / 2, [f"<={b}" for b in buckets])
    ax.set_xlabel("batch size the server ran (histogram bucket)")
    ax.set_ylabel("share of batches (%)")
    ax.set_title("Batches really formed (server's processed_batch_size)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def importance(imp: pd.DataFrame, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 3.5))
    if imp.empty:
        _empty(ax, "too few completed trials to rank parameters")
        return _save(fig, path)
    imp = imp.iloc[::-1]
    ax.barh(imp["parameter"], imp["importance"] * 100, color=COLORS[0])
    ax.set_xlabel("share of throughput variance explained (%)")
    ax.set_title("Parameter importance (one parameter at a time)")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def slices(df: pd.DataFrame, params: list[str], path: Path) -> Path:
    ok = df[df["complete"] & df["items_per_s"].notna()]
    params = [p for p in params if p in ok and pd.to_numeric(ok[p], errors="coerce").nunique() >= 2]
    n = max(1, len(params))
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.3 * rows), squeeze=False)
    if not params:
        _empty(axes[0][0], "no parameter varied across completed trials")
        return _save(fig, path)
    for ax, p in zip(axes.flat, params):
        v = pd.to_numeric(ok[p], errors="coerce")
        feas = ok["feasible"]
        ax.scatter(v[feas], ok["items_per_s"][feas], s=18, color=COLORS[0], label="within SLO")
        ax.scatter(v[~feas], ok["items_per_s"][~feas], s=18, facecolors="none", edgecolors="#888", label="missing SLO")
        if v.min() > 0 and v.max() / v.min() >= 50:
            ax.set_xscale("log")
        ax.set_xlabel(p)
        ax.set_ylabel("items/s")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(params):]:
        ax.axis("off")
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Throughput against each parameter (batching-off trials left out)")
    return _save(fig, path)


def history(h: pd.DataFrame, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(8, 4))
    if h.empty:
        _empty(ax, "no trials")
        return _save(fig, path)
    c = h[h["complete"]]
    ax.scatter(c["number"][c["feasible"]], c["items_per_s"][c["feasible"]], s=22, color=COLORS[0], label="within SLO")
    ax.scatter(c["number"][~c["feasible"]], c["items_per_s"][~c["feasible"]], s=22, facecolors="none", edgecolors="#888", label="missing SLO")
    failed = h[h["state"] == "FAIL"]
    if len(failed):
        ax.scatter(failed["number"], np.zeros(len(failed)), marker="x", color="crimson", label="failed")
    ax.step(h["number"], h["best_feasible_so_far"], where="post", color=COLORS[1], label="best within SLO so far")
    base = c[c["kind"] == "baseline"]
    if len(base):
        ax.axvspan(base["number"].min() - 0.5, base["number"].max() + 0.5, color="#eee", zorder=0, label="baselines")
    ax.set_xlabel("trial")
    ax.set_ylabel("throughput (items/s)")
    ax.set_title("Optimisation history")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def compare_fronts(studies: list[tuple[str, pd.DataFrame, pd.DataFrame]], slo_ms, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(8, 5))
    lows, highs = [], []
    for i, (name, df, front) in enumerate(studies):
        ok = df[df["complete"] & df["p99_ms"].notna()]
        color = COLORS[i % len(COLORS)]
        ax.scatter(ok["p99_ms"], ok["items_per_s"], s=16, color=color, alpha=0.45)
        if len(front):
            ax.step(front["p99_ms"], front["items_per_s"], where="post", color=color, lw=2)
            ax.scatter(front["p99_ms"], front["items_per_s"], s=70, color=color, edgecolors="black", zorder=4, label=f"{name}: Pareto front")
        lows.append(ok["p99_ms"].min())
        highs.append(ok["p99_ms"].max())
        off = ok[ok.get("baseline") == BATCHING_OFF]
        if len(off):
            ax.scatter(off["p99_ms"], off["items_per_s"], marker="s", s=60, color=color, edgecolors="black", label=f"{name}: batching off")
    if slo_ms:
        ax.axvline(slo_ms, color="crimson", ls="--", lw=1.2, label=f"SLO p99 {slo_ms:g} ms")
    log = bool(lows) and max(highs) / max(min(lows), 1e-3) > 20
    if log:
        ax.set_xscale("log")
        _plain_log_ticks(ax.xaxis)
    ax.set_xlabel("p99 latency (ms" + (", log scale)" if log else ")"))
    ax.set_ylabel("throughput (items/s)")
    ax.set_title("Throughput against tail latency, studies side by side")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def compare_bars(summary: pd.DataFrame, path: Path) -> Path:
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    x = np.arange(len(summary))
    a1.bar(x - 0.2, summary["batching_off_items_per_s"].fillna(0), 0.4, color="#999", label="batching off")
    a1.bar(x + 0.2, summary["winner_items_per_s"].fillna(0), 0.4, color=COLORS[0], label="tuned winner (median)")
    a1.set_xticks(x, summary["study"], rotation=15, ha="right")
    a1.set_ylabel("items/s")
    a1.set_title("Throughput")
    a1.legend(fontsize=8)
    a2.bar(x - 0.2, summary["batching_off_p99_ms"].fillna(0), 0.4, color="#999", label="batching off")
    a2.bar(x + 0.2, summary["winner_p99_ms"].fillna(0), 0.4, color=COLORS[1], label="tuned winner")
    a2.set_xticks(x, summary["study"], rotation=15, ha="right")
    a2.set_ylabel("p99 (ms)")
    a2.set_title("Tail latency")
    a2.legend(fontsize=8)
    for a in (a1, a2):
        a.grid(axis="y", alpha=0.3)
    return _save(fig, path)
