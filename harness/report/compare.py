"""``harness compare STUDY_A STUDY_B ...``: studies side by side.

For the questions people ask: REST against gRPC, a stock image against a CPU-optimised one, CPU
against GPU, two models. Reads the same result files as ``harness report``; writes
``compare.md``, ``compare.html``, ``plots/`` and ``tables/`` into one output folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from harness import labels
from harness.atomic import write_text as write_text_atomic
from harness.config import BackendKind
from harness.errors import ReportError
from harness.report import plots, tables
from harness.report.data import load
from harness.report.render import Doc, fmt, to_html, to_markdown


def _differences(studies) -> list[str]:
    """Which experiment values differ between the studies: what the comparison is about."""
    flat = []
    for res in studies:
        f = {}
        for section in ("model", "server", "load", "slo", "search"):
            for k, v in (res.experiment.get(section) or {}).items():
                f[f"{section}.{k}"] = json.dumps(v, sort_keys=True)
        flat.append(f)
    keys = sorted(set().union(*flat))
    return [k for k in keys if len({f.get(k) for f in flat}) > 1]


def summary_table(studies, computed) -> pd.DataFrame:
    rows = []
    for res, (df, _front) in zip(studies, computed):
        h = tables.headline(res, df)
        w = h.get("winner") or {}
        exp = res.experiment
        server = exp.get("server", {})
        env_server = (res.environment or {}).get("server") or {}
        rows.append(
            {
                "study": res.name,
                "model": exp.get("model", {}).get("demo") or exp.get("model", {}).get("path"),
                "protocol": exp.get("load", {}).get("protocol"),
                "server": server.get("image") if server.get("backend") == BackendKind.DOCKER else server.get("binary", server.get("backend")),
                "server_version": env_server.get("version") or env_server.get("image_id") or "",
                "trials": h["trials"],
                "feasible": h["feasible"],
                "winner_config": w.get("config"),
                "winner_items_per_s": w.get("items_per_s"),
                "winner_range": f"{w['items_per_s_min']:,.0f}-{w['items_per_s_max']:,.0f}" if w else "",
                "winner_p99_ms": w.get("p99_ms"),
                "batching_off_items_per_s": h.get("batching_off_items_per_s"),
                "batching_off_p99_ms": h.get("batching_off_p99_ms"),
                "gain_over_batching_off": h.get("gain_over_batching_off"),
                "slo_p99_ms": h.get("slo_p99_ms"),
            }
        )
    return pd.DataFrame(rows)


def build(study_dirs: list[str | Path], out: str | Path) -> dict[str, Path]:
    """compare.md, compare.html, the plots and tables/summary.csv for two or more studies."""
    studies = _load_studies(study_dirs)
    computed = []
    for res in studies:
        df = tables.trial_table(res)
        computed.append((df, tables.pareto_front(df, res.max_error_rate)))
    summ = summary_table(studies, computed)
    out = Path(out)
    write_text_atomic(out / "tables" / "summary.csv", summ.to_csv(index=False))
    slos = {s.slo_p99_ms for s in studies}
    slo = slos.pop() if len(slos) == 1 else None
    top_all = winners_and_batching_off(studies, computed)
    images = {
        "fronts": plots.compare_fronts([(res.name, df, front) for res, (df, front) in zip(studies, computed)], slo, out / "plots" / "fronts.png"),
        "bars": plots.compare_bars(summ, out / "plots" / "winners.png"),
        "percentiles": plots.latency_percentiles(top_all, out / "plots" / "latency_percentiles.png"),
    }
    doc = _document(studies, summ, slo, images, out)
    write_text_atomic(out / "compare.md", to_markdown(doc, out))
    write_text_atomic(out / "compare.html", to_html(doc))
    return {"markdown": out / "compare.md", "html": out / "compare.html", **images}


def _load_studies(study_dirs: list[str | Path]) -> list:
    if len(study_dirs) < 2:
        raise ReportError("compare needs at least two study folders", hint="harness compare results/A results/B")
    studies = [load(d) for d in study_dirs]
    names = [s.name for s in studies]
    if len(set(names)) != len(names):
        raise ReportError(f"two of the studies have the same name ({', '.join(names)})", hint="compare different studies")
    return studies


def winners_and_batching_off(studies, computed) -> pd.DataFrame:
    """Each study's winner and its batching-off baseline, as rows of its top table, the config
    prefixed with the study's name."""
    tops = []
    for res, (df, _) in zip(studies, computed):
        top = tables.top_configs(res, df)
        if len(top):
            top = top.assign(study=res.name)
            tops.append(top.iloc[[0]].assign(role=f"{res.name} winner"))
            off = top[top["config"] == labels.BATCHING_OFF]
            tops.append(off.assign(role=f"{res.name} batching off"))
    top_all = pd.concat(tops, ignore_index=True) if tops else pd.DataFrame()
    if len(top_all):
        top_all["config"] = top_all["study"] + ": " + top_all["config"]
    return top_all


def _document(studies, summ: pd.DataFrame, slo, images: dict[str, Path], out: Path) -> Doc:
    names = [s.name for s in studies]
    doc = Doc("Comparison: " + " / ".join(names))
    diffs = _differences(studies)
    doc.p(
        "What differs between these studies: "
        + (", ".join(f"`{k}`" for k in diffs) if diffs else "nothing in their experiment files (repeat runs)")
        + "."
    )
    best = summ.dropna(subset=["winner_items_per_s"])
    if len(best):
        top_row = best.loc[best["winner_items_per_s"].idxmax()]
        doc.p(
            f"Most throughput within each study's SLO: **{top_row['study']}** with "
            f"{fmt(top_row['winner_items_per_s'])} items/s (`{top_row['winner_config']}`)."
        )
    doc.table(
        ["study", "model", "protocol", "server", "winner", "items/s (median)", "range", "p99 ms", "batching off items/s", "batching off p99 ms", "gain", "within SLO / trials"],
        [
            [r["study"], r["model"], r["protocol"], r["server"], r["winner_config"] or "none", fmt(r["winner_items_per_s"]), r["winner_range"], fmt(r["winner_p99_ms"], 1), fmt(r["batching_off_items_per_s"]), fmt(r["batching_off_p99_ms"], 1), f"{r['gain_over_batching_off']:.2f}x" if pd.notna(r["gain_over_batching_off"]) else "", f"{r['feasible']}/{r['trials']}"]
            for _, r in summ.iterrows()
        ],
    )
    if slo is None:
        doc.p("The studies have different SLOs: each winner is the best within its own study's SLO.")
    doc.image(images["fronts"], "Every trial of every study, with each study's Pareto front and its batching-off baseline.")
    doc.image(images["bars"], "Winner (median of re-measurements) against batching off, per study.")
    doc.image(images["percentiles"], "Latency percentiles of each study's winner and batching-off baseline.")
    doc.h("Reports")
    doc.bullets(
        [f"{res.name}: `{os.path.relpath(res.dir / 'report.html', out)}`" for res in studies]
    )
    return doc
