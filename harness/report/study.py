"""``harness report results/<study>``: tables first, then plots, then report.md and report.html.

Writes into the study folder: ``report.md``, ``report.html`` (self-contained), ``plots/*.png``
and ``tables/*.csv`` (the numbers behind every plot, small enough to publish).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness import atomic
from harness.report import diagnosis, plots, predictions, tables
from harness.report.data import StudyResults, load
from harness.report.render import Doc, fmt, to_html, to_markdown

SLICE_PARAMS = ["max_batch_size", "batch_timeout_micros", "num_batch_threads", "max_enqueued_batches", "users", "max_execution_batch_size"]


def compute(res: StudyResults) -> dict:
    """Every table the report shows, as DataFrames/dicts (no drawing)."""
    df = tables.trial_table(res)
    top = tables.top_configs(res, df)
    focus = tables.focus_trials(top)
    labels = dict(zip(df["number"], df["label"]))
    cached_path = res.dir / "tables" / "latency_quantiles.csv"
    cached = pd.read_csv(cached_path) if cached_path.exists() else None
    return {
        "trials": df,
        "front": tables.pareto_front(df, res.max_error_rate),
        "top": top,
        "headline": tables.headline(res, df),
        "rejections": tables.rejections(res, df),
        "batch_sizes": tables.batch_sizes(res, focus, labels),
        "latency_quantiles": tables.latency_quantiles(res, focus, labels, cached),
        "importance": tables.importance(df[(df["kind"] == "search") & ~df["duplicate"]]),
        "history": tables.history(df),
        "environment": tables.environment(res),
        "notes": tables.notes(res),
        "predictions": predictions.table(df),
    }


def build(study_dir: str | Path) -> dict[str, Path]:
    res = load(study_dir)
    t = compute(res)
    d = res.dir
    tdir, pdir = d / "tables", d / "plots"
    for name in ("top", "front", "rejections", "batch_sizes", "latency_quantiles", "importance", "history", "notes"):
        atomic.write_text(tdir / f"{name}.csv", t[name].to_csv(index=False))
    atomic.write_json(tdir / "headline.json", t["headline"])
    winner = (t["headline"].get("winner") or {}).get("trial")
    df = t["trials"]
    search = df[(df["kind"] == "search") & ~df["duplicate"]]
    images = {
        "throughput_vs_p99": plots.throughput_vs_p99(df, t["front"], res.slo_p99_ms, winner, pdir / "throughput_vs_p99.png", f"{res.name}: throughput against p99, every trial"),
        "latency_percentiles": plots.latency_percentiles(t["top"], pdir / "latency_percentiles.png"),
        "latency_distribution": plots.latency_distribution(t["latency_quantiles"], pdir / "latency_distribution.png"),
        "rejections": plots.rejections(df, t["rejections"], pdir / "rejections.png"),
        "batch_sizes": plots.batch_sizes(t["batch_sizes"], pdir / "batch_sizes.png"),
        "importance": plots.importance(t["importance"], pdir / "importance.png"),
        "slices": plots.slices(search, SLICE_PARAMS, pdir / "slices.png"),
        "history": plots.history(t["history"], pdir / "history.png"),
    }
    if len(t["predictions"]):  # a guided study: the simulator's predictions beside the figures
        atomic.write_text(tdir / "predictions.csv", t["predictions"].to_csv(index=False))
        images["predictions"] = predictions.plot(
            t["predictions"], res.slo_p99_ms, pdir / "predictions.png"
        )
    doc = document(res, t, images)
    atomic.write_text(d / "report.md", to_markdown(doc, d))
    atomic.write_text(d / "report.html", to_html(doc))
    return {"markdown": d / "report.md", "html": d / "report.html", **images}


def headline_text(h: dict) -> list[str]:
    """The answers, in sentences: deploy what, measured on which server, gain what over each
    reference, cost what."""
    w = h.get("winner")
    server = f"**Measured on** {h['server']}." if h.get("server") else None
    if not w:
        return [f"**No config to deploy yet**: {h.get('reason', 'no winner')}.", *filter(None, [server])]
    out = [
        f"**Deploy** `{w['config']}` (trial {w['trial']}): re-measured {w.get('runs', 1)} times, "
        f"**{fmt(w['items_per_s'])} items/s** median (range {fmt(w['items_per_s_min'])}-"
        f"{fmt(w['items_per_s_max'])}), p99 {fmt(w['p99_ms'], 1)} ms"
        + (f" against an SLO of {fmt(h['slo_p99_ms'])} ms." if h.get("slo_p99_ms") else ".")
    ]
    if server:
        out.append(server)
    cost = [f"{fmt(w['items_per_core_s'])} items per core-second of the server's CPU"] if w.get("items_per_core_s") else []
    cost += [f"a peak of {fmt(w['server_peak_memory_mb'])} MiB"] if w.get("server_peak_memory_mb") else []
    if cost:
        out.append("**Resources**: " + " and ".join(cost) + " (median over the re-measured runs; the peak is the largest).")
    if h.get("gains"):
        out.append("**Gain**: " + "; ".join(_gain_text(g, w["trial"]) for g in h["gains"]) + ".")
    if h.get("p99_change_ms") is not None:
        change = h["p99_change_ms"]
        word = "more" if change > 0 else "less"
        out.append(
            f"**Tail latency cost**: p99 {fmt(w['p99_ms'], 1)} ms against "
            f"{fmt(h['batching_off_p99_ms'], 1)} ms with batching off ({fmt(abs(change), 1)} ms {word}), "
            "both at the same offered load."
        )
    if w.get("indistinguishable_from_runner_up"):
        numbers = [str(n) for n in w.get("tied_with_winner") or []]
        tied = f"trial{'s' if len(numbers) > 1 else ''} {', '.join(numbers)}" if numbers else "the runner-up"
        rule = f" Among tied configs, {w['ranking_rule'].split('; among them ')[-1]}." if w.get("ranking_rule") else ""
        out.append(
            f"The winner **cannot be told apart** from {tied} on this machine: their re-measured ranges overlap; either is a fine choice.{rule}"
        )
    return out


VERDICTS = {
    "ahead": "tuning beats it: the ranges do not overlap",
    "tied": "**{name} is as good** on this machine: the ranges overlap",
    "behind": "**{name} is better**: its range lies above the winner's",
}


def _verdict(g: dict) -> str:
    if "verdict" not in g:  # a study written before verdicts
        return ""
    if not g.get("reference_feasible", True):
        return f" ({g['name']} missed the SLO when re-measured)"
    return " (" + VERDICTS[g["verdict"]].format(name=g["name"]) + ")"


def _cost(g: dict) -> str:
    if g.get("procedure_measurements") is None:
        return ""
    return (
        f"; the procedure took {g['procedure_measurements']} measurements and "
        f"{fmt(g['procedure_wall_s'])} s, and ended on its step '{g.get('procedure_step')}'"
    )


def _gain_text(g: dict, winner_trial: int) -> str:
    """One gain: the ratio of medians, then both medians with their ranges and run counts (or,
    when the winner is that reference, that)."""
    if g.get("reference_trial") == winner_trial:
        return f"the winner is {g['name']} itself{_cost(g)}"

    def figure(who: str) -> str:
        runs = g.get(f"{who}_runs") or 1
        median = fmt(g[f"{who}_items_per_s_median"])
        if runs == 1:
            return f"{median} items/s (one run)"
        lo, hi = fmt(g[f"{who}_items_per_s_min"]), fmt(g[f"{who}_items_per_s_max"])
        return f"{median} items/s (median of {runs} runs, range {lo}-{hi})"

    return f"{g['gain']:.2f}x the throughput of {g['name']}, {figure('winner')} against {figure('reference')}{_verdict(g)}{_cost(g)}"


def _procedure(doc: Doc, res: StudyResults, t: dict, images: dict) -> None:
    """The batching guide's procedure, step by step (a study run with --guide-procedure)."""
    rec = t["headline"].get("guide_procedure")
    if not rec:
        return
    doc.h("The batching guide's procedure")
    pick = (rec.get("choice") or {}).get("step")
    doc.p(
        f"TF Serving's batching guide ({rec['device'].upper()} procedure), followed step by step as a user would: "
        f"{rec['measurements']} measurements ({rec['measured_here']} taken for it, the others shared with an "
        f"earlier trial of the same config), {fmt(rec['wall_s'])} s of measuring. "
        + (f"It ends on the step '{pick}', re-measured beside the winner." if pick else "None of its steps kept the SLO.")
    )
    doc.table(
        ["step", "trial", "items/s", "p99 ms", "within SLO", "chosen"],
        [
            [r["step"], int(r["trial"]), "failed" if r["failed"] else fmt(r["items_per_s"]), "" if r["failed"] else fmt(r["p99_ms"], 1), fmt(bool(r["feasible"])), "yes" if r["step"] == pick else ""]
            for r in rec.get("steps") or []
        ],
    )


def document(res: StudyResults, t: dict, images: dict[str, Path]) -> Doc:
    """The report, section by section, from the computed tables and the drawn images."""
    doc = Doc(f"Batching study {res.name}")
    for section in SECTIONS:
        section(doc, res, t, images)
    return doc


def _answer(doc: Doc, res: StudyResults, t: dict, images: dict) -> None:
    h = t["headline"]
    doc.p(" ".join(headline_text(h)))
    waiting = (
        f", {h['waiting']} queued but not run (the trial budget was spent first)" if h.get("waiting") else ""
    )
    doc.p(
        f"{h['trials']} trials: {h['complete']} completed, {h['feasible']} within the SLO, {h['failed']} failed{waiting}. "
        "Throughput counts items (rows of the input batch) per second that got a correct answer."
    )
    if h.get("best_parameters_text"):
        doc.h("The file to deploy: best_batching_parameters.txt", 3)
        doc.pre(h["best_parameters_text"])
        doc.p("Start the server with `--enable_batching --batching_parameters_file=best_batching_parameters.txt`.")


def _front(doc: Doc, res: StudyResults, t: dict, images: dict) -> None:
    doc.h("Throughput against tail latency")
    doc.image(images["throughput_vs_p99"], "Every completed trial; the Pareto front, the SLO line, the baselines and the winner are marked.")
    front = t["front"]
    if len(front):
        doc.p("The Pareto front (no other trial within the error limit has both more throughput and a lower p99):")
        doc.table(
            ["trial", "config", "items/s", "p99 ms", "within SLO"],
            [[int(r["number"]), r["label"], fmt(r["items_per_s"]), fmt(r["p99_ms"], 1), fmt(bool(r["feasible"]))] for _, r in front.iterrows()],
        )


def _predictions(doc: Doc, res: StudyResults, t: dict, images: dict) -> None:
    pred = t["predictions"]
    if not len(pred):
        return
    doc.h("The simulator's predictions")
    doc.p(
        "This study was guided by the simulator (`--guide simulate`): its real trials went to "
        "the configs the simulator predicted best. " + predictions.summary(pred)
    )
    doc.image(images["predictions"], "Predicted against measured throughput and p99, per trial.")
    doc.table(
        ["trial", "config", "why picked", "items/s", "predicted", "error", "p99 ms", "predicted", "error"],
        [
            [int(r["number"]), r["label"], _clean(r["guided"]), fmt(r["items_per_s"]), fmt(r["predicted_items_per_s"]), f"{r['items_error']:+.0%}", fmt(r["p99_ms"], 1), fmt(r["predicted_p99_ms"], 1), "" if r["p99_error"] != r["p99_error"] else f"{r['p99_error']:+.0%}"]
            for _, r in pred.iterrows()
        ],
    )


def _top(doc: Doc, res: StudyResults, t: dict, images: dict) -> None:
    doc.h("Top configs against the baselines")
    top = t["top"]
    if len(top):
        doc.table(
            ["role", "trial", "config", "items/s", "range", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "errors", "runs", "failed runs", "within SLO"],
            [
                [r["role"], int(r["trial"]), r["config"], fmt(r["items_per_s"]), r["items_per_s_range"], fmt(r["p50_ms"], 1), fmt(r["p90_ms"], 1), fmt(r["p99_ms"], 1), fmt(r["p999_ms"], 1), _pct(r["error_rate"]), int(r["runs"]), int(r["failed_runs"]), fmt(bool(r["feasible"]))]
                for _, r in top.iterrows()
            ],
        )
        doc.p("Top configs are re-measured several times, interleaved, and ranked by the median; configs whose re-measured ranges overlap the best median's are tied, and among them the one with the highest lower bound (its slowest run) wins, then the lower p99. Batching off, the batching guide's CPU start, the guide's procedure's choice (when it ran) and your baseline (when one was given) are re-measured in the same rounds, so each gain is a median against a median; the commonly copied config is a single measurement from the search.")
    doc.image(images["latency_percentiles"], "Latency percentiles (log scale) of the top configs and the baselines.")
    doc.image(images["latency_distribution"], "Latency distribution of successful requests, from the per-request samples of each trial.")


def _models(doc: Doc, res: StudyResults, t: dict, images: dict) -> None:
    """Several models in one server: each model's figures and SLO verdict per trial, from
    trials.csv's ``<model>.<figure>`` columns (docs/multi-model.md)."""
    df = t["trials"]
    names = [c[: -len(".meets_slo")] for c in df.columns if str(c).endswith(".meets_slo")]
    if not names:
        return
    doc.h("Each model")
    doc.p(f"{len(names)} models in one server ({', '.join(names)}); a trial is within the SLO only when every model meets its own.")
    rows = []
    for _, r in df.iterrows():
        if not r["complete"] or r.get(f"{names[0]}.meets_slo") in ("", None):
            continue
        for n in names:
            met = r.get(f"{n}.meets_slo")
            rows.append([int(r["number"]), r["label"], n, _pct(r.get(f"{n}.share")), fmt(r.get(f"{n}.items_per_s")), fmt(r.get(f"{n}.p99_ms"), 1), _pct(r.get(f"{n}.error_rate")), fmt(str(met) == "True")])
    doc.table(["trial", "config", "model", "share", "items/s", "p99 ms", "errors", "met its SLO"], rows)


def _rejections(doc: Doc, res: StudyResults, t: dict, images: dict) -> None:
    doc.h("Rejections")
    rej = t["rejections"]
    if len(rej):
        inv, una = int(rej["INVALID_ARGUMENT"].sum()), int(rej["UNAVAILABLE"].sum())
        doc.p(
            f"{len(rej)} trials had requests rejected: {fmt(inv)} INVALID_ARGUMENT (a request larger than "
            f"max_batch_size) and {fmt(una)} UNAVAILABLE (the batch queue was full). "
            f"The request-size mix was `{res.load.get('request_sizes', '1')}`."
        )
        doc.table(
            ["trial", "config", "INVALID_ARGUMENT", "UNAVAILABLE", "rejected", "why", "fix"],
            [[int(r["trial"]), r["config"], fmt(int(r["INVALID_ARGUMENT"])), fmt(int(r["UNAVAILABLE"])), _pct(r["rejected_share"]), r["cause"], r["fix"]] for _, r in rej.iterrows()],
        )
    else:
        doc.p("No request was rejected in any trial.")
    doc.image(images["rejections"], "Rejected requests by the trial's max_batch_size, by status code.")


def _batches(doc: Doc, res: StudyResults, t: dict, images: dict) -> None:
    doc.h("Batches the server really formed")
    doc.p("From the server's own `:tensorflow:serving:batching_session:processed_batch_size` histogram during the measured windows. A config only helps if real traffic fills its batches.")
    doc.image(images["batch_sizes"], "Share of batches per batch-size bucket, top configs and baselines.")
    bs = t["batch_sizes"]
    if len(bs):
        mean = {
            n: (g["batch_size_bucket"] * g["batches"]).sum() / max(g["batches"].sum(), 1)
            for n, g in bs.groupby("trial", sort=False)
        }
        doc.table(
            ["trial", "config", "batches", "mean bucket size"],
            [[n, bs[bs["trial"] == n]["config"].iloc[0], fmt(int(bs[bs["trial"] == n]["batches"].sum())), fmt(m, 1)] for n, m in mean.items()],
        )


def _importance(doc: Doc, res: StudyResults, t: dict, images: dict) -> None:
    doc.h("What mattered")
    imp = t["importance"]
    if len(imp):
        doc.p("Share of the throughput variance across search trials explained by each parameter alone (a screening figure: it does not capture interactions).")
        doc.table(["parameter", "importance", "distinct values tried"], [[r["parameter"], _pct(r["importance"]), int(r["distinct_values"])] for _, r in imp.iterrows()])
    doc.image(images["importance"], "Parameter importance.")
    doc.image(images["slices"], "Throughput against each parameter.")
    doc.image(images["history"], "Optimisation history: every trial and the best within the SLO so far.")


def _every_trial(doc: Doc, res: StudyResults, t: dict, images: dict) -> None:
    doc.h("Every trial")
    df = t["trials"]
    doc.table(
        ["trial", "state", "config", "items/s", "p50 ms", "p99 ms", "errors", "within SLO", "server cores", "items/core-s", "peak MiB", "reason"],
        [
            [int(r["number"]), r["state"], r["label"], fmt(r["items_per_s"]), fmt(r.get("p50_ms"), 1), fmt(r["p99_ms"], 1), _pct(r.get("error_rate")), fmt(bool(r["feasible"])) if r["complete"] else "", fmt(r.get("server_cores"), 2), fmt(r.get("items_per_core_s")), fmt(r.get("server_peak_memory_mb")), _reason(r)]
            for _, r in df.iterrows()
        ],
    )


def _environment_and_notes(doc: Doc, res: StudyResults, t: dict, images: dict) -> None:
    doc.h("Environment")
    doc.table(["", ""], [[k, v] for k, v in t["environment"]])
    notes = t["notes"]
    doc.h("Notes")
    if len(notes):
        doc.table(["kind", "line", "trials"], [[r["kind"], r["line"], int(r["trials"]) or ""] for _, r in notes.iterrows()])
    else:
        doc.p("Nothing notable in the server logs.")
    doc.p("Tables behind every plot are in `tables/`; the raw data is `trials.csv`, `trials/<n>/measurement.json` and `summary.json`.")


# The report's sections in order; each writes its heading, prose, tables and images into the Doc.
SECTIONS = (
    _answer,
    _front,
    _predictions,
    _top,
    _procedure,
    _models,
    _rejections,
    _batches,
    _importance,
    _every_trial,
    _environment_and_notes,
)


def _pct(v) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return ""
    return "" if f != f else f"{f:.1%}"


def _reason(r) -> str:
    return diagnosis.trial_reason(
        duplicate_of=tables._int(r.get("duplicate_of")),
        neighbour_of=tables._int(r.get("neighbour_of")),
        fail_reason=_clean(r.get("fail_reason")),
    )


def _clean(v) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return ""
    return str(v)
