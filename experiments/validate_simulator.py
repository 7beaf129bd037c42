"""Predicted against measured: the simulator's error per config on the reference server.

Each case is measured exactly as a tuning trial is (``TrialRunner.measure``: a fresh server with
the config, the experiment's Locust load, warm-up then windows until stable), several times in
interleaved rounds, and predicted by the simulator from the model's profile (``harness
profile``). The reference server's batch trace is on during the runs, and each run keeps its
summary (``experiments/batch_trace.py`` reads them). Resumable: every run is kept in
``results/simulator-validation/measured/<case>/run<k>.json`` and a case with enough runs is
skipped, so the heavy part can run in chunks under the lock:

    flock /tmp/heavy.lock .venv/bin/python experiments/validate_simulator.py profiles [--set S]
    flock /tmp/heavy.lock .venv/bin/python experiments/validate_simulator.py measure [--set S]
    .venv/bin/python experiments/validate_simulator.py fit
    .venv/bin/python experiments/validate_simulator.py report

Two fixed sets (``--set``): ``calibration`` (``CALIBRATION``, kept in ``calibration/``) and
``validation`` (``CASES``), each predicted from the profiles kept beside its runs. ``fit`` (no
server) fits the model's constants on the calibration set only and writes them to
``harness/sim/fitted.py``; ``report`` (no server) writes ``validation.csv`` and
``validation.md`` with the validation set's errors, out of sample. Targets: throughput within
10%, p99 within 20%, rejections within 20% where non-zero.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.batching import BatchingParameters  # noqa: E402
from harness.config import load_experiment  # noqa: E402
from harness.tuning import outputs  # noqa: E402
from harness.tuning.profiling import ensure_profile  # noqa: E402
from harness.tuning.space import TrialConfig  # noqa: E402

OUT = ROOT / "results" / "simulator-validation"
EXPERIMENTS = {
    "ranker": "experiments/default.toml",
    "mobilenet_v2": "experiments/mobilenet_v2.toml",
}


def B(mbs, t, thr, q, **kw):
    return BatchingParameters(
        max_batch_size=mbs,
        batch_timeout_micros=t,
        num_batch_threads=thr,
        max_enqueued_batches=q,
        **kw,
    )


# (case id, model, experiment overrides, config); closed loop unless load.rate is set
BIG = 1_000_000
CASES = [
    ("r-c64-off", "ranker", [], None),
    ("r-c64-b1", "ranker", [], B(1, 0, 1, BIG)),
    ("r-c64-b8", "ranker", [], B(8, 0, 1, BIG)),
    ("r-c64-b32-t0", "ranker", [], B(32, 0, 1, BIG)),
    ("r-c64-b64-t0", "ranker", [], B(64, 0, 1, BIG)),
    ("r-c64-b64-t10ms", "ranker", [], B(64, 10_000, 1, BIG)),
    ("r-c64-b128-t1ms-2thr", "ranker", [], B(128, 1000, 2, BIG)),
    ("r-c64-b16-t0-2thr", "ranker", [], B(16, 0, 2, BIG)),
    ("r-c64-b4-q1", "ranker", [], B(4, 0, 1, 1)),
    ("r-c64-b16-t100ms-q1", "ranker", [], B(16, 100_000, 1, 1)),
    (
        "r-c16-mix-b8",
        "ranker",
        ["load.users=16", 'load.request_sizes="1:60,4:30,16:10"'],
        B(8, 1000, 1, BIG),
    ),
    ("r-o800-b32-t2ms", "ranker", ["load.rate=800"], B(32, 2000, 1, BIG)),
    ("r-o800-b8-t0", "ranker", ["load.rate=800"], B(8, 0, 1, BIG)),
    ("r-o1200-b64-t5ms", "ranker", ["load.rate=1200"], B(64, 5000, 1, BIG)),
    ("r-o1200-b16-q4", "ranker", ["load.rate=1200"], B(16, 0, 1, 4)),
    ("m-c32-off", "mobilenet_v2", [], None),
    ("m-c32-b8-t0", "mobilenet_v2", [], B(8, 0, 1, BIG)),
    ("m-c32-b32-t10ms", "mobilenet_v2", [], B(32, 10_000, 1, BIG)),
    ("m-c32-b4-t0-2thr", "mobilenet_v2", [], B(4, 0, 2, BIG)),
    ("m-c32-b2-q1", "mobilenet_v2", [], B(2, 0, 1, 1)),
    ("m-o150-b16-t20ms", "mobilenet_v2", ["load.rate=150"], B(16, 20_000, 1, BIG)),
    ("m-o200-b8-t0", "mobilenet_v2", ["load.rate=200"], B(8, 0, 1, BIG)),
    ("m-o200-b32-t5ms-q4", "mobilenet_v2", ["load.rate=200"], B(32, 5000, 1, 4)),
]

# The calibration set: other configs of the same families (closed loops with one and two
# threads, queues of one, batching off, open loops; both models), measured on another day
# with profiles of their own. Every constant the simulator fits is fitted on these only.
CALIBRATION = [
    ("r-c64-b16-t0", "ranker", [], B(16, 0, 1, BIG)),
    ("r-c32-b64-t2ms", "ranker", ["load.users=32"], B(64, 2000, 1, BIG)),
    ("r-c64-b32-t0-2thr", "ranker", [], B(32, 0, 2, BIG)),
    ("r-c64-b8-q1", "ranker", [], B(8, 0, 1, 1)),
    ("r-c32-off", "ranker", ["load.users=32"], None),
    ("r-o450-b32-t2ms", "ranker", ["load.rate=450"], B(32, 2000, 1, BIG)),
    ("r-o300-b16-t1ms", "ranker", ["load.rate=300"], B(16, 1000, 1, BIG)),
    ("m-c32-b16-t0", "mobilenet_v2", [], B(16, 0, 1, BIG)),
    ("m-c32-b4-q1", "mobilenet_v2", [], B(4, 0, 1, 1)),
    ("m-o60-b8-t10ms", "mobilenet_v2", ["load.rate=60"], B(8, 10_000, 1, BIG)),
    ("m-o80-b16-t5ms", "mobilenet_v2", ["load.rate=80"], B(16, 5000, 1, BIG)),
]
# where each set's runs and profiles are kept
SETS = {"validation": (CASES, OUT), "calibration": (CALIBRATION, OUT / "calibration")}


def experiment(model: str, overrides: list[str]):
    return load_experiment(EXPERIMENTS[model], overrides)


def profile_file(which: str, model: str) -> Path:
    """The profile a set's runs are predicted from, kept beside them."""
    return SETS[which][1] / "profiles" / f"{model}-process-cpus0.json"


def cmd_profiles(args) -> None:
    for model, path in EXPERIMENTS.items():
        exp = load_experiment(path, [])
        ensure_profile(
            exp,
            path=profile_file(args.set, model),
            protocols=["grpc"],
            max_size=128 if model == "ranker" else 32,
            workdir=Path("/tmp/sim-validation") / f"profile-{args.set}-{model}",
            force=args.force,
        )


def run_files(cid: str, which: str = "validation") -> list[Path]:
    return sorted((SETS[which][1] / "measured" / cid).glob("run*.json"))


def cmd_measure(args) -> None:
    """Round r measures every case that has fewer than r + 1 runs, so repeats are interleaved:
    a slow spell of the machine lands on several cases once rather than on one case thrice."""
    import tempfile

    from harness.refserver import batch_trace
    from harness.tuning.trial import TrialRunner

    cases = [c for c in SETS[args.set][0] if not args.only or c[0] in args.only.split(",")]
    todo = []
    for rnd in range(args.repeats):
        todo += [(rnd, c) for c in cases if len(run_files(c[0], args.set)) <= rnd]
    todo = todo[: args.limit]
    print(f"{len(todo)} runs to measure ({len(cases)} cases x {args.repeats} runs)")
    trace_dir = Path(tempfile.mkdtemp(prefix="batch-trace-"))
    # set before any server starts: the fork server copies our environment once
    os.environ[batch_trace.ENV] = str(trace_dir / "trace")
    for _round, (cid, model, overrides, params) in todo:
        exp = experiment(model, overrides)
        runner = TrialRunner(exp)
        try:
            t = time.monotonic()
            work = Path("/tmp/sim-validation") / cid
            for old in trace_dir.iterdir():
                old.unlink()
            try:
                res = runner.measure(TrialConfig(batching=params), work)
            except Exception as exc:  # noqa: BLE001 - a failed case is recorded, the rest go on
                res = {"failed": str(exc).splitlines()[0]}
            else:
                meas = json.loads((work / "measurement.json").read_text())
                res["seconds"] = sum(w["seconds"] for w in meas["windows"])
        finally:
            runner.close()  # stops the server: its trace is written now
        traces = list(trace_dir.iterdir())
        if params is not None and len(traces) == 1 and "failed" not in res:
            res["batch_trace"] = batch_trace.summarize(
                batch_trace.load(traces[0]), skip_s=exp.load.warmup_s
            )
        res["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        taken = {int(f.stem[3:]) for f in run_files(cid, args.set)}
        n = next(k for k in range(len(taken) + 1) if k not in taken)
        outputs.write_json_atomic(SETS[args.set][1] / "measured" / cid / f"run{n}.json", res)
        print(
            f"{cid} run {n}: {res.get('items_per_s', 0):.0f} items/s, p99 {res.get('p99_ms')}, "
            f"errors {res.get('errors')} ({time.monotonic() - t:.0f}s)",
            flush=True,
        )


def predict(model: str, overrides: list[str], params, profile, speed: float = 1.0, **fitted):
    """The simulator's figures for a case; ``speed`` > 1 runs every server CPU cost that much
    slower (the machine was slower during the run than when the profile was measured);
    ``fitted``: the model's fitted constants to use instead of ``harness/sim/fitted.json``'s
    (``fit`` tries candidates this way)."""
    from harness.sim.model import Prepared, ServerModel, Workload, simulate

    exp = experiment(model, overrides)
    load = exp.load
    wl = Workload.from_load(
        load,
        warmup_s=2.0,
        window_s=20.0,
        tail_s=10.0,  # overloaded configs: late answers still count, as the harness waits for them
    )
    srv = ServerModel.from_profile(
        profile, load.protocol, cores=profile.cores / speed, max_size=128, fitted=fitted or None
    )
    return simulate(params, Prepared(wl, srv)), exp


def bound(pred, case, profile, fitted: dict):
    """The p99 the guide holds a config to (``harness.sim.guide.bound_terms``): an open loop's
    is the model's at a higher arrival rate, a closed loop's the model's times a factor."""
    from harness.sim.guide import bound_terms

    _, model, overrides, params = case
    terms = bound_terms(fitted.get("p99_bound"))
    rate = experiment(model, overrides).load.rate
    if rate and terms["open_rate"] > 0:
        faster = [*overrides, f"load.rate={rate * (1 + terms['open_rate']):g}"]
        rest = {k: v for k, v in fitted.items() if k != "p99_bound"}
        return predict(model, faster, params, profile, **rest)[0].p99_ms
    return None if pred.p99_ms is None else pred.p99_ms * terms["closed"]


def _err(pred, meas):
    if pred is None or meas is None:
        return None
    if meas == 0:
        return 0.0 if pred == 0 else None
    return (pred - meas) / meas


def _median_runs(runs: list[dict]) -> dict:
    """The runs of one case as one measurement: medians, and the range of throughput and p99."""

    def per_s(r, code):
        return r["errors"].get(code, 0) / r["seconds"]

    def med(vals):
        vals = [v for v in vals if v is not None]
        return statistics.median(vals) if vals else None

    items = [r["items_per_s"] for r in runs]
    p99 = [r["p99_ms"] for r in runs if r["p99_ms"] is not None]
    return {
        "runs": len(runs),
        "items_per_s": med(items),
        "items_range": (min(items), max(items)),
        "p50_ms": med(r["p50_ms"] for r in runs),
        "p99_ms": med(p99),
        "p99_range": (min(p99), max(p99)) if p99 else None,
        "unavailable_per_s": med(per_s(r, "UNAVAILABLE") for r in runs),
        "invalid_per_s": med(per_s(r, "INVALID_ARGUMENT") for r in runs),
        "mean_batch_size": med(r.get("mean_batch_size") for r in runs),
        "stable": sum(bool(r.get("stable")) for r in runs),
    }


def speed_of(runs: list[dict], profile) -> float | None:
    """How much slower than the profile's offline timing the model ran in these runs: the median
    over runs of the batch trace's in-server model CPU per batch / offline time at that size.
    Taken over all of a model's runs (one figure per model): a single case's batches can be
    bimodal, and mobilenet_v2 runs part of its convolutions off the batch thread."""
    import numpy as np

    sizes = sorted(profile.exec_us)
    med = [profile.exec_us[s]["median"] for s in sizes]
    ratios = []
    for r in runs:
        t = (r.get("batch_trace") or {}).get("all") or {}
        if t.get("run_cpu_ms") and t.get("mean_padded"):
            ratios.append(t["run_cpu_ms"] * 1e3 / float(np.interp(t["mean_padded"], sizes, med)))
    return statistics.median(ratios) if ratios else None


def _inside(pred, rng) -> bool | None:
    if pred is None or rng is None:
        return None
    return rng[0] <= pred <= rng[1]


def case_rows(which: str, at_speed: bool = True, **fitted) -> list[dict]:
    """Predicted against measured for every case of a set (``SETS``), each predicted from the
    set's own profiles; ``at_speed``: also at the machine's speed during the runs."""
    from harness.sim import profile as profiles

    cases = SETS[which][0]
    rows = []
    by_model: dict[str, list] = {}
    for cid, model, _, _ in cases:
        by_model.setdefault(model, []).extend(
            json.loads(f.read_text()) for f in run_files(cid, which)
        )
    profs = {m: profiles.load(profile_file(which, m)) for m in by_model}
    speeds = {m: speed_of(runs, profs[m]) for m, runs in by_model.items()}
    for cid, model, overrides, params in cases:
        runs = [json.loads(f.read_text()) for f in run_files(cid, which)]
        failed = [r["failed"] for r in runs if "failed" in r]
        runs = [r for r in runs if "failed" not in r]
        if not runs:
            if failed:
                rows.append({"case": cid, "model": model, "failed": failed[0]})
            continue
        meas = _median_runs(runs)
        pred, exp = predict(model, overrides, params, profs[model], **fitted)
        speed = speeds[model] if at_speed else None
        adj = predict(model, overrides, params, profs[model], speed, **fitted)[0] if speed else None
        p99_bound = bound(pred, (cid, model, overrides, params), profs[model], fitted)
        m_unav, m_inv = meas["unavailable_per_s"], meas["invalid_per_s"]
        p_unav = pred.queue_full / 20.0
        p_inv = pred.oversize / 20.0
        load = exp.load
        rows.append(
            {
                "case": cid,
                "model": model,
                "workload": f"open {load.rate:g}/s" if load.rate else f"closed {load.users} users",
                "sizes": load.request_sizes,
                "config": TrialConfig(batching=params).describe(),
                "runs": meas["runs"],
                "failed_runs": len(failed),
                "measured_items_per_s": round(meas["items_per_s"], 1),
                "measured_items_min": round(meas["items_range"][0], 1),
                "measured_items_max": round(meas["items_range"][1], 1),
                "predicted_items_per_s": round(pred.items_per_s, 1),
                "items_err": _err(pred.items_per_s, meas["items_per_s"]),
                "items_inside_range": _inside(pred.items_per_s, meas["items_range"]),
                "speed": speed,
                "adjusted_items_per_s": adj and round(adj.items_per_s, 1),
                "adjusted_items_err": adj and _err(adj.items_per_s, meas["items_per_s"]),
                "measured_p50_ms": meas["p50_ms"],
                "predicted_p50_ms": pred.p50_ms,
                "measured_p99_ms": meas["p99_ms"],
                "measured_p99_min": meas["p99_range"] and meas["p99_range"][0],
                "measured_p99_max": meas["p99_range"] and meas["p99_range"][1],
                "predicted_p99_ms": pred.p99_ms,
                "p99_err": _err(pred.p99_ms, meas["p99_ms"]),
                "p99_inside_range": _inside(pred.p99_ms, meas["p99_range"]),
                "kind": "open" if load.rate else "closed",
                "overloaded": bool(load.rate) and meas["items_per_s"] < 0.9 * load.rate,
                "p99_bound_ms": p99_bound,
                "p99_bound_err": _err(p99_bound, meas["p99_ms"]),
                "adjusted_p99_ms": adj and adj.p99_ms,
                "adjusted_p99_err": adj and _err(adj.p99_ms, meas["p99_ms"]),
                "measured_unavailable_per_s": round(m_unav, 1),
                "predicted_unavailable_per_s": round(p_unav, 1),
                "unavailable_err": _err(p_unav, m_unav) if m_unav or p_unav else None,
                "measured_invalid_per_s": round(m_inv, 1),
                "predicted_invalid_per_s": round(p_inv, 1),
                "invalid_err": _err(p_inv, m_inv) if m_inv or p_inv else None,
                "measured_mean_batch": meas["mean_batch_size"],
                "predicted_mean_batch": pred.mean_batch_size,
                "stable_runs": meas["stable"],
            }
        )
    return rows


def cmd_report(args) -> None:
    """A set's errors, with the constants fitted on the calibration set: the validation set's
    (``validation.md``, out of sample) or the calibration set's own (``calibration.md``, the
    errors the fit saw)."""
    rows = case_rows(args.set)
    name = "validation" if args.set == "validation" else "calibration/calibration"
    outputs.write_csv_atomic(OUT / f"{name}.csv", rows)
    text = markdown(rows)
    if args.set == "calibration":
        text = text.replace("# Simulator validation", "# Simulator calibration set", 1).replace(
            "these cases were not used", "these are the cases they were fitted on"
        )
    outputs.write_text_atomic(OUT / f"{name}.md", text)
    print(text)


def _pct(v):
    return "" if v is None else f"{v:+.0%}"


def _f(v, nd=1):
    return "-" if v is None else f"{v:.{nd}f}"


def _range(lo, hi, nd=0):
    return "-" if lo is None else f"{lo:.{nd}f}-{hi:.{nd}f}"


def markdown(rows) -> str:
    from harness.sim.fitted import FITTED

    ok = [r for r in rows if "failed" not in r]
    runs = sorted({r["runs"] for r in ok})
    lines = [
        "# Simulator validation: predicted against measured",
        "",
        "Reference server on core 0, Locust on core 1, each run measured as a tuning trial is "
        "(`TrialRunner.measure`). Each case was measured "
        + (f"{runs[0]}" if len(runs) == 1 else f"{runs[0]}-{runs[-1]}")
        + " times, in interleaved rounds over all cases; the measured figures are the runs' "
        "medians, with their range. Errors are (predicted - median) / median. Targets: "
        "throughput within 10%, p99 within 20%, rejections (per second) within 20% where "
        "non-zero. Out of sample: the model's fitted constants (`harness/sim/fitted.py`: "
        + ", ".join(f"{k} {v}" for k, v in FITTED.items())
        + ") were fitted on the calibration set (`calibration/`, other configs measured on "
        "another day) by `validate_simulator.py fit`; these cases were not used.",
        "",
        "| case | workload | config | items/s meas | range | pred | err | p99 ms meas | range "
        "| pred | err | bound | UNAVAILABLE/s meas | pred | err | INVALID/s meas | pred | err "
        "| mean batch meas | pred |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in ok:
        lines.append(
            f"| {r['case']} | {r['workload']}, sizes {r['sizes']} | {r['config']} "
            f"| {r['measured_items_per_s']:.0f} "
            f"| {_range(r['measured_items_min'], r['measured_items_max'])} "
            f"| {r['predicted_items_per_s']:.0f} | {_pct(r['items_err'])} "
            f"| {_f(r['measured_p99_ms'])} | {_range(r['measured_p99_min'], r['measured_p99_max'])} "
            f"| {_f(r['predicted_p99_ms'])} | {_pct(r['p99_err'])} | {_f(r['p99_bound_ms'])} "
            f"| {r['measured_unavailable_per_s']:.0f} | {r['predicted_unavailable_per_s']:.0f} "
            f"| {_pct(r['unavailable_err'])} "
            f"| {r['measured_invalid_per_s']:.0f} | {r['predicted_invalid_per_s']:.0f} "
            f"| {_pct(r['invalid_err'])} "
            f"| {_f(r['measured_mean_batch'])} | {_f(r['predicted_mean_batch'])} |"
        )
    for r in rows:
        if "failed" in r:
            lines.append(f"| {r['case']} | failed: {r['failed']} |")

    def share(key, limit):
        vals = [abs(r[key]) for r in ok if r[key] is not None]
        if not vals:
            return "none"
        within = sum(v <= limit for v in vals)
        return (
            f"{within}/{len(vals)} within {limit:.0%} (median |err| {statistics.median(vals):.0%}, "
            f"max {max(vals):.0%})"
        )

    def inside(key):
        vals = [r[key] for r in ok if r[key] is not None]
        return f"{sum(vals)}/{len(vals)}"

    def spread(lo, hi, mid):
        vals = [(r[hi] - r[lo]) / r[mid] for r in ok if r[lo] is not None and r[mid]]
        if not vals:
            return "none"
        return f"median {statistics.median(vals):.0%}, max {max(vals):.0%}"

    bounded = [r for r in ok if r["p99_bound_ms"] and r["measured_p99_ms"]]
    lines += [
        "",
        f"- throughput: {share('items_err', 0.10)}; the prediction inside the measured range: "
        f"{inside('items_inside_range')}",
        f"- p99: {share('p99_err', 0.20)}; inside the measured range: {inside('p99_inside_range')}",
        f"- p99 bound (what the guide holds to the SLO: a closed loop's p99 times the fitted "
        f"factor, an open loop's p99 at the fitted higher rate): measured p99 at or under it in "
        f"{sum(r['measured_p99_ms'] <= r['p99_bound_ms'] for r in bounded)}/{len(bounded)}; "
        f"{share('p99_bound_err', 0.20)}",
        f"- UNAVAILABLE (queue full): {share('unavailable_err', 0.20)}",
        f"- INVALID_ARGUMENT (oversize): {share('invalid_err', 0.20)}",
        "- run-to-run spread of the same config ((max - min) / median): throughput "
        + spread("measured_items_min", "measured_items_max", "measured_items_per_s")
        + "; p99 "
        + spread("measured_p99_min", "measured_p99_max", "measured_p99_ms"),
        "",
    ]
    adj = [r for r in ok if r.get("speed")]
    if adj:
        lines += [
            "## At the machine's speed during the runs",
            "",
            "The server's batch trace times the model's CPU per batch inside the busy server. "
            "Divided by the profile's offline time at that size, it says how much slower (or "
            "faster) the machine ran during the runs than when the profile was measured "
            "(`speed`: the median over all of a model's runs). Predicted again with every server "
            "CPU cost scaled by it, what is left is closer to the simulator's own error.",
            "",
            "| case | speed | items/s meas | pred at speed | err | p99 ms meas | pred at speed "
            "| err |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in adj:
            lines.append(
                f"| {r['case']} | {r['speed']:.2f} | {r['measured_items_per_s']:.0f} "
                f"| {r['adjusted_items_per_s']:.0f} | {_pct(r['adjusted_items_err'])} "
                f"| {_f(r['measured_p99_ms'])} | {_f(r['adjusted_p99_ms'])} "
                f"| {_pct(r['adjusted_p99_err'])} |"
            )
        lines += [
            "",
            f"- throughput at the runs' speed: {share('adjusted_items_err', 0.10)}",
            f"- p99 at the runs' speed: {share('adjusted_p99_err', 0.20)}",
            "",
        ]
    return "\n".join(lines)


# the candidates ``fit`` tries for each fitted constant of the model (harness/sim/fitted.py)
FIT_GRID = {
    "fe_weight": [1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0],
}


def fit_score(rows: list[dict], keys=("adjusted_items_err", "adjusted_p99_err")) -> tuple:
    """How well a candidate predicts a set: the cases within the targets (throughput 10%, p99
    20%), then the median |log(predicted / measured)| of both, smaller is better. By default on
    the predictions at the machine's speed during the runs: how much the machine drifted
    between the profile and the runs is not the model's to fit."""
    import math

    items, p99 = keys
    ok = [r for r in rows if "failed" not in r]
    within = sum(
        (r[items] is not None and abs(r[items]) <= 0.10)
        + (r[p99] is not None and abs(r[p99]) <= 0.20)
        for r in ok
    )
    logs = [abs(math.log1p(r[k])) for r in ok for k in keys if r.get(k) is not None and r[k] > -1]
    return within, -statistics.median(logs) if logs else 0.0


BOUND_FACTORS = [1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.8, 2.0, 2.5, 3.0]  # closed: p99 x this
BOUND_RATES = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.5, 2.0]  # open: rate x (1 + this)
BOUND_COVER = 0.75  # the share of a kind's calibration cases the bound must cover


def fit_bound(best: dict, kind: str, name: str, grid: list[float]) -> float:
    """The smallest candidate whose bound is at or over the measured p99 of at least
    ``BOUND_COVER`` of the calibration cases of this kind that were not overloaded (the one
    covering the most, if none does)."""
    best_cover, pick = -1, grid[0]
    for value in grid:
        rows = case_rows("calibration", at_speed=False, **best, p99_bound={name: value})
        mine = [
            r
            for r in rows
            if "failed" not in r
            and r["kind"] == kind
            and not r["overloaded"]
            and r["measured_p99_ms"]
        ]
        cover = sum(
            r["p99_bound_ms"] is not None and r["measured_p99_ms"] <= r["p99_bound_ms"]
            for r in mine
        )
        print(f"p99 bound, {kind} loops, {name} {value}: covers {cover}/{len(mine)}")
        if cover > best_cover:
            best_cover, pick = cover, value
        if cover >= BOUND_COVER * len(mine):
            break
    return pick


def cmd_fit(args) -> None:
    """Every combination of ``FIT_GRID`` predicts the calibration set; the best by
    ``fit_score`` is kept. Then, with it, the p99 bound's terms per workload kind (``fit_bound``:
    over the calibration cases of that kind that were not overloaded, as a search rejects those
    anyway), from the predictions of the profile itself (a bound the guide uses must cover the
    machine's drift since its profile too). Written to harness/sim/fitted.py; the
    validation set is not read."""
    import itertools

    names = sorted(FIT_GRID)
    scored = []
    for values in itertools.product(*(FIT_GRID[n] for n in names)):
        cand = dict(zip(names, values))
        score = fit_score(case_rows("calibration", **cand))
        scored.append((score, cand))
        print(f"{cand}: {score[0]} of the targets met, median |log err| {-score[1]:.3f}")
    best_score, best = max(scored, key=lambda x: x[0])
    terms = {}
    for kind, name, grid in (
        ("closed", "closed", BOUND_FACTORS),
        ("open", "open_rate", BOUND_RATES),
    ):
        terms[name] = fit_bound(best, kind, name, grid)
    best = {**best, "p99_bound": terms}
    n = sum(bool(run_files(c[0], "calibration")) for c in CALIBRATION)
    print(f"fitted on {n} calibration cases: {best} ({best_score[0]} of {2 * n} targets met)")
    outputs.write_text_atomic(FITTED_PY, fitted_source(best, best_score, n))


FITTED_PY = ROOT / "harness" / "sim" / "fitted.py"


def fitted_source(best: dict, score: tuple, n: int) -> str:
    """harness/sim/fitted.py with ``best`` (its docstring kept), formatted as ruff would."""
    head = FITTED_PY.read_text().split("\nFITTED = ")[0]
    return (
        f"{head}\nFITTED = {json.dumps(best)}\n"
        f"# on the calibration set ({n} cases, at the runs' speed): {score[0]} of {2 * n} targets\n"
        f"# met (throughput 10%, p99 20%), median |log error| {-score[1]:.3f}\n"
    )


def _late_share(runs: list[dict]) -> str:
    """The open loop's sends more than 1 ms behind schedule (the run's warning), median share."""
    import re

    shares = []
    for r in runs:
        for w in r.get("warnings", []):
            m = re.search(r"fell behind: (\d+) of (\d+) sends", w)
            if m:
                shares.append(int(m[1]) / int(m[2]))
    return f"{statistics.median(shares):.0%}" if shares else "-"


def cmd_explain(args) -> None:
    """Per case of a set: the server's CPU outside the batch threads per row served, measured
    (the batch trace) and charged by the model, and the spread of latencies (p99 / p50),
    measured and predicted. No server: it reads the stored runs."""
    from harness.sim import profile as profiles
    from harness.sim.model import ServerModel

    print(
        "| case | rows/batch meas | pred | outside CPU us/row meas | model | model wake-ups/row "
        "| p50 ms meas | pred | p99/p50 meas | pred | p99 err | sends > 1 ms late |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for cid, model, overrides, params in SETS[args.set][0]:
        runs = [json.loads(f.read_text()) for f in run_files(cid, args.set)]
        runs = [r for r in runs if "failed" not in r]
        traces = [r["batch_trace"]["all"] for r in runs if r.get("batch_trace")]
        if not traces:
            continue
        prof = profiles.load(profile_file(args.set, model))
        pred, exp = predict(model, overrides, params, prof)
        srv = ServerModel.from_profile(prof, exp.load.protocol, max_size=128)
        rows = pred.items_per_s * 20.0  # the simulated window
        refused = pred.queue_full + pred.oversize
        charged = (
            pred.ok * (srv.o_in + srv.o_out)
            + refused * (srv.o_in + srv.o_rej)
            + pred.front_end_wakes * srv.o_wake
        )
        meas = _median_runs(runs)
        outside = statistics.median(t["outside_cpu_us_per_row"] for t in traces)
        m_rows = statistics.median(t["mean_rows"] for t in traces)
        print(
            f"| {cid} | {m_rows:.1f} | {_f(pred.mean_batch_size)} | {outside:.0f} "
            f"| {charged / rows * 1e6:.0f} | {pred.front_end_wakes / rows:.2f} "
            f"| {meas['p50_ms']:.1f} | {pred.p50_ms:.1f} | {meas['p99_ms'] / meas['p50_ms']:.2f} "
            f"| {pred.p99_ms / pred.p50_ms:.2f} | {_pct(_err(pred.p99_ms, meas['p99_ms']))} "
            f"| {_late_share(runs)} |"
        )


def cmd_study(args) -> None:
    """Predict every measured trial of an existing study (no server): a second, free check."""
    from harness.sim import profile as profiles
    from harness.sim.guide import workload_for
    from harness.sim.model import Prepared, ServerModel, simulate
    from harness.sim.profile import profile_path_for

    study = Path(args.dir)
    exp = load_experiment(str(study / "experiment.toml"), [])
    prof = profiles.load(args.profile or profile_path_for(exp))
    srv = ServerModel.from_profile(prof, exp.load.protocol, max_size=1024)
    preps = {}
    rows = []
    for f in sorted(study.glob("trials/*/measurement.json")):
        m = json.loads(f.read_text())
        cfg = TrialConfig.from_dict(m["config"])
        users = m.get("users") or exp.load.users
        if users not in preps:
            preps[users] = Prepared(workload_for(exp, users), srv)
        p = simulate(cfg.batching, preps[users])
        rows.append(
            {
                "trial": f.parent.name,
                "config": cfg.describe(),
                "measured_items_per_s": round(m["items_per_s"], 1),
                "predicted_items_per_s": round(p.items_per_s, 1),
                "items_err": _err(p.items_per_s, m["items_per_s"]),
                "measured_p99_ms": m["p99_ms"],
                "predicted_p99_ms": p.p99_ms,
                "p99_err": _err(p.p99_ms, m["p99_ms"]),
                "measured_error_rate": round(m["error_rate"], 4),
                "predicted_error_rate": round(p.error_rate, 4),
                "measured_mean_batch": m.get("mean_batch_size"),
                "predicted_mean_batch": p.mean_batch_size,
            }
        )
    for r in rows:
        print(
            f"{r['trial']} {r['config']:42} items {r['measured_items_per_s']:7.0f} {r['predicted_items_per_s']:7.0f} "
            f"{_pct(r['items_err']):>6} | p99 {_f(r['measured_p99_ms'])} {_f(r['predicted_p99_ms'])} {_pct(r['p99_err']):>6}"
            f" | err {r['measured_error_rate']:.2f} {r['predicted_error_rate']:.2f}"
            f" | batch {_f(r['measured_mean_batch'])} {_f(r['predicted_mean_batch'])}"
        )
    if args.out:
        outputs.write_csv_atomic(Path(args.out), rows)
    vals = [abs(r["items_err"]) for r in rows if r["items_err"] is not None]
    p99s = [abs(r["p99_err"]) for r in rows if r["p99_err"] is not None]
    print(
        f"{len(rows)} trials: throughput within 10%: {sum(v <= 0.1 for v in vals)}/{len(vals)} "
        f"(median {statistics.median(vals):.0%}); p99 within 20%: {sum(v <= 0.2 for v in p99s)}/{len(p99s)} "
        f"(median {statistics.median(p99s):.0%})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    pr = sub.add_parser("profiles")
    pr.add_argument("--set", choices=sorted(SETS), default="validation")
    pr.add_argument("--force", action="store_true", help="measure again even if one exists")
    pr.set_defaults(func=cmd_profiles)
    m = sub.add_parser("measure")
    m.add_argument("--set", choices=sorted(SETS), default="validation")
    m.add_argument("--limit", type=int, default=100, help="runs in this call at most")
    m.add_argument("--repeats", type=int, default=3, help="runs per case, in interleaved rounds")
    m.add_argument("--only", help="comma-separated case ids")
    m.set_defaults(func=cmd_measure)
    rp = sub.add_parser("report")
    rp.add_argument("--set", choices=sorted(SETS), default="validation")
    rp.set_defaults(func=cmd_report)
    ex = sub.add_parser("explain", help="where the model's CPU and latency spread differ")
    ex.add_argument("--set", choices=sorted(SETS), default="validation")
    ex.set_defaults(func=cmd_explain)
    sub.add_parser("fit", help="fit the model's constants on the calibration set").set_defaults(
        func=cmd_fit
    )
    st = sub.add_parser("study", help="predict the measured trials of an existing study folder")
    st.add_argument("dir")
    st.add_argument("--profile")
    st.add_argument("--out", help="write the comparison as CSV")
    st.set_defaults(func=cmd_study)
    args = ap.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
