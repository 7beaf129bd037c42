"""The report's numbers, computed before anything is drawn: plain DataFrames and dicts.

Plots and pages only lay these out, so tests check the figures here and a page can never show
a number that is not in a table.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from harness import labels
from harness.labels import BATCHING_OFF, PARAMS
from harness.report import diagnosis
from harness.report.data import StudyResults

REJECTIONS = ("INVALID_ARGUMENT", "UNAVAILABLE", "RESOURCE_EXHAUSTED")
PERCENTILES = (("p50", "p50_ms"), ("p90", "p90_ms"), ("p99", "p99_ms"), ("p99.9", "p999_ms"))


def _blank(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or v == ""


def _int(v):
    return None if _blank(v) else int(float(v))


def _bool(v) -> bool:
    return str(v).strip().lower() in ("true", "1")


def describe(row) -> str:
    """A config in one line, as a serving engineer would say it."""
    if not _blank(row.get("baseline")):
        return str(row["baseline"])
    if not _bool(row.get("enable_batching", True)):
        return "batching off"
    parts = [
        f"max_batch_size={_int(row.get('max_batch_size'))}",
        f"timeout={_int(row.get('batch_timeout_micros'))}us",
        f"threads={_int(row.get('num_batch_threads'))}",
        f"queue={_int(row.get('max_enqueued_batches'))}",
    ]
    if not _blank(row.get("allowed_batch_sizes")) and row.get("allowed_batch_sizes") != "[]":
        parts.append(f"allowed={row['allowed_batch_sizes']}")
    if _bool(row.get("enable_large_batch_splitting")):
        parts.append(f"split@{_int(row.get('max_execution_batch_size'))}")
    for k, short in (("intra_op_parallelism", "intra"), ("inter_op_parallelism", "inter")):
        if _int(row.get(k)):
            parts.append(f"{short}={_int(row.get(k))}")
    if _int(row.get("users")):
        parts.append(f"users={_int(row.get('users'))}")
    return " ".join(parts)


def _json(text, kind: type):
    """A JSON cell of trials.csv (errors by code, oversize records), or an empty ``kind``."""
    if _blank(text):
        return kind()
    try:
        out = json.loads(text)
    except (TypeError, ValueError):
        return kind()
    return out if isinstance(out, kind) else kind()


def trial_table(res: StudyResults) -> pd.DataFrame:
    """Every trial with its label, kind, rejection counts and feasibility as plain columns."""
    df = res.trials.copy()
    df["number"] = df["number"].astype(int)
    df["label"] = [describe(r) for r in df.to_dict("records")]
    df["kind"] = ["baseline" if not _blank(b) else "search" for b in df.get("baseline", [])]
    df["feasible"] = [_bool(v) for v in df.get("feasible", [False] * len(df))]
    df["complete"] = df["state"] == "COMPLETE"
    # a config proposed again is not measured again (its figures are copied): counted once
    dup = (
        df["duplicate_of"] if "duplicate_of" in df else pd.Series([None] * len(df), index=df.index)
    )
    df["duplicate"] = dup.notna() & (dup.astype(str) != "")
    errs = [_json(t, dict) for t in df.get("errors", [""] * len(df))]
    for code in REJECTIONS:
        df[code] = [int(e.get(code, 0)) for e in errs]
    df["other_errors"] = [int(sum(v for k, v in e.items() if k not in REJECTIONS)) for e in errs]
    numeric = ("items_per_s", "p50_ms", "p90_ms", "p99_ms", "p999_ms", "error_rate", "requests")
    for col in (*numeric, "server_cores", "server_peak_memory_mb"):
        if col in df:
            df[col] = pd.to_numeric(df[col], errors="coerce")
    # what each config cost the server: items per core-second of its CPU (blank where the backend
    # measured no CPU, e.g. an external server)
    if "server_cores" in df:
        cores = df["server_cores"].where(df["server_cores"] > 0)
        df["items_per_core_s"] = df["items_per_s"] / cores
    return df


def pareto_front(df: pd.DataFrame, max_error_rate: float | None = None) -> pd.DataFrame:
    """Completed trials that no other trial beats on both throughput (up) and p99 (down).

    Trials that rejected more than the error limit are left out: their p99 is low only because
    the requests that would have waited were turned away.
    """
    ok = df[df["complete"] & df["p99_ms"].notna() & df["items_per_s"].notna()]
    if max_error_rate is not None:
        ok = ok[ok["error_rate"].fillna(0) <= max_error_rate]
    ok = ok.sort_values(["p99_ms", "items_per_s"], ascending=[True, False])
    front, best = [], -math.inf
    for _, r in ok.iterrows():
        if r["items_per_s"] > best:
            front.append(r)
            best = r["items_per_s"]
    return pd.DataFrame(front, columns=ok.columns)


def _median_runs(runs: list[dict], key: str):
    vals = [r[key] for r in runs if "failed" not in r and r.get(key) is not None]
    return float(np.median(vals)) if vals else None


def _remeasured_row(c: dict, runs: list[dict], base: dict, role: str) -> dict:
    """A config re-measured by the winner step (``c``: its summary entry): median and range over
    its successful runs, the search trial's own figures where it has no runs, and how many of
    its runs failed."""
    row = {"trial": int(c["trial"]), "role": role}
    row["config"] = base.get("label") or json.dumps(c.get("config"))
    row["items_per_s"] = c["items_per_s_median"]
    if c["items_per_s_min"] is None:  # every re-measurement failed
        row["items_per_s_range"] = "every run failed"
    else:
        row["items_per_s_range"] = f"{c['items_per_s_min']:,.0f}-{c['items_per_s_max']:,.0f}"
    for _name, key in PERCENTILES:
        row[key] = _median_runs(runs, key) if runs else base.get(key)
    row["p99_ms"] = c.get("p99_ms_median", row["p99_ms"])
    row["error_rate"] = _median_runs(runs, "error_rate") if runs else base.get("error_rate")
    row["runs"] = c.get("runs", 1)
    row["failed_runs"] = c.get("failed_runs", 0)
    row["feasible"] = bool(c.get("feasible"))
    for p in PARAMS:
        row[p] = (c.get("config") or {}).get(p, base.get(p))
    return row


def top_configs(res: StudyResults, df: pd.DataFrame) -> pd.DataFrame:
    """The re-measured top configs (median and range over runs), then the baselines: batching off
    as re-measured beside them, the others as measured in the search."""
    summary = res.summary or {}
    winner = (summary.get("winner") or {}).get("trial")
    by_number = df.set_index("number")

    def base(n: int) -> dict:
        return by_number.loc[n].to_dict() if n in by_number.index else {}

    rows = []
    for c in summary.get("candidates") or []:
        n = int(c["trial"])
        role = "winner" if n == winner else "top config"
        rows.append(_remeasured_row(c, res.remeasure.get(n, []), base(n), role))
    seen = {r["trial"] for r in rows}
    # the references re-measured beside the top configs (older studies: batching off alone)
    refs = [summary.get("batching_off") or {}, *(summary.get("references") or {}).values()]
    by_trial = {int(r["trial"]): r for r in refs if r.get("trial") is not None}
    for _, b in df[(df["kind"] == "baseline") & df["complete"]].iterrows():
        n = int(b["number"])
        if n in seen:
            continue
        ref = by_trial.get(n, {})
        if labels.is_guide_step(b.get("baseline")) and not ref:
            continue  # the guide's procedure's steps have a section of their own; its choice stays
        runs = res.remeasure.get(n, []) if ref else []
        if runs:
            rows.append(_remeasured_row(ref, runs, base(n), "baseline"))
            continue
        row = {"trial": n, "role": "baseline", "config": b["label"]}
        row["items_per_s"] = b["items_per_s"]
        row["items_per_s_range"] = "single run"
        for _name, key in PERCENTILES:
            row[key] = b.get(key)
        row["error_rate"] = b.get("error_rate")
        row["runs"] = 1
        row["failed_runs"] = 0
        row["feasible"] = bool(b["feasible"])
        for p in PARAMS:
            row[p] = b.get(p)
        rows.append(row)
    return pd.DataFrame(rows)


def headline(res: StudyResults, df: pd.DataFrame) -> dict:
    """The answers a reader wants first: what to deploy, on which server, what it gains over
    each reference (batching off, the batching guide's CPU start, the user's baseline: each a
    median against a median, with ranges), what it costs."""
    s = res.summary or {}
    w = s.get("winner")
    out = {
        "study": res.name,
        "server": labels.server_label((res.environment or {}).get("server")),
        "trials": int(len(df)),
        "complete": int(df["complete"].sum()),
        "failed": int((df["state"] == "FAIL").sum()),
        "waiting": int((df["state"] == "WAITING").sum()),
        "feasible": int((df["complete"] & df["feasible"]).sum()),
        "slo_p99_ms": res.slo_p99_ms,
        "max_error_rate": res.max_error_rate,
        "winner": None,
    }
    off = df[(df.get("baseline") == BATCHING_OFF) & df["complete"]]
    ref = s.get("batching_off")  # re-measured beside the top configs
    if ref and ref.get("items_per_s_median") is not None:  # not when every run of it failed
        out["batching_off_items_per_s"] = float(ref["items_per_s_median"])
        out["batching_off_p99_ms"] = float(ref["p99_ms_median"])
        out["batching_off_runs"] = int(ref.get("runs", 1))
    elif len(off):
        out["batching_off_items_per_s"] = float(off["items_per_s"].iloc[0])
        out["batching_off_p99_ms"] = float(off["p99_ms"].iloc[0])
        out["batching_off_runs"] = 1
    if not w:
        out["reason"] = s.get("reason") or "the study has no re-measured winner yet"
        return out
    row = df[df["number"] == int(w["trial"])]
    out["winner"] = {
        "trial": int(w["trial"]),
        "config": row["label"].iloc[0] if len(row) else json.dumps(w.get("config")),
        "items_per_s": w["items_per_s_median"],
        "items_per_s_min": w["items_per_s_min"],
        "items_per_s_max": w["items_per_s_max"],
        "p99_ms": w["p99_ms_median"],
        "items_per_core_s": w.get("items_per_core_s_median"),
        "server_peak_memory_mb": w.get("server_peak_memory_mb_max"),
        "runs": w.get("runs"),
        "feasible": w.get("feasible"),
        "indistinguishable_from_runner_up": bool(s.get("indistinguishable_from_runner_up")),
        "tied_with_winner": list(s.get("tied_with_winner") or []),
        "ranking_rule": s.get("ranking_rule"),
    }
    if s.get("gain_over_batching_off"):
        out["gain_over_batching_off"] = s["gain_over_batching_off"]
    out["gains"] = _gains(s, out)
    if s.get("guide_procedure"):
        out["guide_procedure"] = s["guide_procedure"]
    if "batching_off_p99_ms" in out:
        out["p99_change_ms"] = w["p99_ms_median"] - out["batching_off_p99_ms"]
    best_file = res.dir / "best_batching_parameters.txt"
    out["best_parameters_text"] = best_file.read_text() if best_file.exists() else None
    return out


REJECTION_COLUMNS = [
    "trial",
    "config",
    "max_batch_size",
    "largest_request",
    "requests",
    *REJECTIONS,
    "rejected_share",
    "cause",
    "fix",
]


def _gains(s: dict, out: dict) -> list[dict]:
    """The winner's gain over each reference, in the headline's order: from summary.json's
    ``gains``, or for a study written before them, over batching off from its own fields."""
    recorded = s.get("gains")
    if recorded is None and out.get("gain_over_batching_off") and out.get("batching_off_items_per_s"):
        w = s["winner"]
        ref = s.get("batching_off") or {}
        recorded = {
            BATCHING_OFF: {
                "gain": out["gain_over_batching_off"],
                "winner_items_per_s_median": w["items_per_s_median"],
                "winner_items_per_s_min": w["items_per_s_min"],
                "winner_items_per_s_max": w["items_per_s_max"],
                "winner_runs": w.get("runs", 1),
                "reference_items_per_s_median": out["batching_off_items_per_s"],
                "reference_items_per_s_min": ref.get("items_per_s_min", out["batching_off_items_per_s"]),
                "reference_items_per_s_max": ref.get("items_per_s_max", out["batching_off_items_per_s"]),
                "reference_runs": out.get("batching_off_runs", 1),
            }
        }
    rows = []
    for label, g in (recorded or {}).items():
        label = labels.baseline_label(label)
        rows.append({"reference": label, "name": labels.REFERENCE_NAMES.get(label, label), **g})
    order = {label: i for i, label in enumerate(labels.REFERENCES)}
    return sorted(rows, key=lambda r: order.get(r["reference"], len(order)))


def rejections(res: StudyResults, df: pd.DataFrame) -> pd.DataFrame:
    """Trials that had requests rejected, with the cause and the fix spelled out
    (``harness.report.diagnosis`` writes the sentences)."""
    from harness.config import parse_size_mix

    try:
        mix = parse_size_mix(str(res.load.get("request_sizes", "1")))
    except Exception:  # a mix the report cannot read: leave the size columns out
        mix = []
    largest = max((s for s, _ in mix), default=None)
    rows = []
    for _, r in df[df["complete"]].iterrows():
        inv, una, exh = (int(r[c]) for c in REJECTIONS)
        if not (inv or una or exh):
            continue
        mbs = _int(r.get("max_batch_size"))
        m = res.measurements.get(int(r["number"]), {})
        over = m.get("oversize") or _json(r.get("oversize"), list)
        causes, fixes = diagnosis.rejection_causes(
            invalid=inv,
            unavailable=una,
            exhausted=exh,
            oversize_sizes=sorted({o["size"] for o in over}) if over else [],
            max_batch_size=mbs,
            max_enqueued_batches=_int(r.get("max_enqueued_batches")),
            largest_request=largest,
        )
        total = r.get("requests")
        rows.append(
            {
                "trial": int(r["number"]),
                "config": r["label"],
                "max_batch_size": mbs,
                "largest_request": largest,
                "requests": int(total) if not _blank(total) else None,
                "INVALID_ARGUMENT": inv,
                "UNAVAILABLE": una,
                "RESOURCE_EXHAUSTED": exh,
                "rejected_share": r.get("error_rate"),
                "cause": "; ".join(causes),
                "fix": "; ".join(fixes),
            }
        )
    return pd.DataFrame(rows, columns=REJECTION_COLUMNS)


def focus_trials(top: pd.DataFrame) -> list[int]:
    """The trials whose distributions the report draws: top configs first, then baselines."""
    return [int(t) for t in top["trial"]] if len(top) else []


def batch_sizes(res: StudyResults, trials: list[int], labels: dict[int, str]) -> pd.DataFrame:
    """Batches the server really formed (its processed_batch_size histogram), per trial."""
    rows = []
    for n in trials:
        hist = (res.measurements.get(n) or {}).get("batch_size_histogram") or {}
        total = sum(hist.values())
        for size, count in sorted(hist.items(), key=lambda kv: int(kv[0])):
            rows.append(
                {
                    "trial": n,
                    "config": labels.get(n, str(n)),
                    "batch_size_bucket": int(size),
                    "batches": int(count),
                    "share": count / total if total else 0.0,
                }
            )
    return pd.DataFrame(rows, columns=["trial", "config", "batch_size_bucket", "batches", "share"])


QUANTILES = np.array([0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9999])


def latency_quantiles(
    res: StudyResults, trials: list[int], labels: dict[int, str], cached: pd.DataFrame | None
) -> pd.DataFrame:
    """Latency quantiles of successful requests per trial, from the raw samples when present.

    Without samples (a published copy) the quantiles saved by an earlier report are used, so the
    distributions survive the raw data being left out.
    """
    from harness.samples import Samples

    rows = []
    for n in trials:
        d = res.samples_dir(n)
        got = False
        if d.is_dir() and any(d.glob("samples-*.npz")):
            try:
                s = Samples.read(d)
            except (OSError, ValueError, KeyError):
                s = None
            if s is not None and len(s):
                lat = s["latency_us"][s["code"] == 0] / 1000.0
                if len(lat):
                    for q, v in zip(QUANTILES, np.quantile(lat, QUANTILES)):
                        rows.append(
                            {
                                "trial": n,
                                "config": labels.get(n, str(n)),
                                "quantile": float(q),
                                "latency_ms": float(v),
                            }
                        )
                    got = True
        if not got and cached is not None and len(cached):
            for _, c in cached[cached["trial"] == n].iterrows():
                rows.append(
                    {
                        "trial": n,
                        "config": labels.get(n, str(n)),
                        "quantile": c["quantile"],
                        "latency_ms": c["latency_ms"],
                    }
                )
    return pd.DataFrame(rows, columns=["trial", "config", "quantile", "latency_ms"])


def _numeric_param(series: pd.Series) -> pd.Series | None:
    vals = pd.to_numeric(series, errors="coerce")
    return vals if vals.notna().sum() >= 2 else None


def importance(df: pd.DataFrame) -> pd.DataFrame:
    """Each parameter's share of the throughput variance among completed search trials (eta
    squared, one parameter at a time: between-group over total sum of squares). Values that vary
    continuously are grouped into up to four quantile bins first. A screening figure, not a model
    of interactions."""
    ok = df[df["complete"] & df["items_per_s"].notna()]
    y = ok["items_per_s"].to_numpy(float)
    rows = []
    if len(ok) < 3 or np.var(y) == 0:
        return pd.DataFrame(rows, columns=["parameter", "importance", "distinct_values"])
    total = ((y - y.mean()) ** 2).sum()
    for p in PARAMS:
        if p not in ok:
            continue
        vals = _numeric_param(ok[p])
        if vals is None:
            continue
        # batching off leaves the parameters blank: a group of its own
        keys = vals.fillna(-1.0)
        distinct = keys.nunique()
        if distinct < 2:
            continue
        if distinct > 6:
            keys = pd.qcut(keys.rank(method="first"), q=4, labels=False)
        between = sum(
            len(g) * (g.mean() - y.mean()) ** 2
            for _, g in pd.Series(y, index=ok.index).groupby(keys.to_numpy())
        )
        rows.append(
            {"parameter": p, "importance": between / total, "distinct_values": int(distinct)}
        )
    out = pd.DataFrame(rows, columns=["parameter", "importance", "distinct_values"])
    return out.sort_values("importance", ascending=False).reset_index(drop=True)


def history(df: pd.DataFrame) -> pd.DataFrame:
    """Throughput per trial in order, and the best feasible figure so far."""
    h = df[
        ["number", "state", "label", "kind", "items_per_s", "p99_ms", "feasible", "complete"]
    ].copy()
    h = h.sort_values("number")
    best, out = -math.inf, []
    for _, r in h.iterrows():
        if r["complete"] and r["feasible"] and r["items_per_s"] > best:
            best = r["items_per_s"]
        out.append(best if best > -math.inf else np.nan)
    h["best_feasible_so_far"] = out
    return h.reset_index(drop=True)


def environment(res: StudyResults) -> list[tuple[str, str]]:
    """Key/value rows: the machine, the software, the server, the model, the load."""
    env = res.environment or {}
    exp = res.experiment
    rows: list[tuple[str, str]] = []
    cpu = env.get("cpu") or {}
    if cpu:
        rows.append(("CPU", f"{cpu.get('model')} ({cpu.get('logical_cpus')} logical CPUs)"))
        rows.append(("CPU SIMD flags", ", ".join(cpu.get("simd_flags") or []) or "none of note"))
    if env.get("memory_gib"):
        rows.append(("memory", f"{env['memory_gib']} GiB"))
    if env.get("os"):
        rows.append(("OS", env["os"]))
    srv = env.get("server") or {}
    server = exp.get("server", {})
    rows.append(("server backend", str(srv.get("backend") or server.get("backend", "?"))))
    for key in ("version", "binary", "image", "image_id"):
        if srv.get(key):
            rows.append((f"server {key.replace('_', ' ')}", str(srv[key])))
    if srv.get("image_digests"):
        rows.append(("server image digest", ", ".join(srv["image_digests"])))
    rows.append(("server CPUs", str(server.get("cpus") or "default")))
    model = exp.get("model", {})
    rows.append(("model", str(model.get("demo") or model.get("path") or "?")))
    for name, v in (env.get("versions") or {}).items():
        if v:
            rows.append((name, str(v)))
    if env.get("harness_commit"):
        rows.append(("harness commit", env["harness_commit"]))
    if env.get("date"):
        rows.append(("date", env["date"]))
    load = exp.get("load", {})
    if load:
        if load.get("rate"):
            shape = f"open loop, {load.get('rate')} requests/s ({load.get('arrivals', 'poisson')})"
        else:
            shape = f"closed loop, {load.get('users')} users"
        rows.append(
            (
                "load",
                f"{load.get('protocol', 'grpc')}, {shape}, request sizes {load.get('request_sizes', '1')}",
            )
        )
        rows.append(
            (
                "measurement",
                f"warm-up {load.get('warmup_s')} s, windows of {load.get('window_s')} s "
                f"({load.get('min_windows')}-{load.get('max_windows')}), load CPUs {load.get('cpus') or 'default'}",
            )
        )
    slo = exp.get("slo", {})
    if slo:
        rows.append(
            ("SLO", f"p99 <= {slo.get('p99_ms')} ms, errors <= {slo.get('max_error_rate', 0):.1%}")
        )
    if not env:
        rows.append(("environment", "not recorded (environment.json is missing)"))
    return rows


def notes(res: StudyResults) -> pd.DataFrame:
    """Lines worth reading from server logs and measurement warnings, with how many trials said them."""
    count: dict[tuple[str, str], int] = {}
    for m in res.measurements.values():
        for kind in ("notes", "warnings"):
            for line in set(m.get(kind) or []):
                if kind == "notes" and _routine(line):
                    continue
                count[(kind[:-1], line)] = count.get((kind[:-1], line), 0) + 1
    rows = [{"kind": k, "line": line, "trials": n} for (k, line), n in count.items()]
    rows += [{"kind": "report", "line": p, "trials": 0} for p in res.problems]
    out = pd.DataFrame(rows, columns=["kind", "line", "trials"])
    return out.sort_values(["kind", "trials"], ascending=[True, False]).reset_index(drop=True)


def _routine(line: str) -> bool:
    """Start-up chatter every server prints; kept out of the notes."""
    return any(s in line for s in ("Running gRPC ModelServer at", "Exporting HTTP/REST API at"))
