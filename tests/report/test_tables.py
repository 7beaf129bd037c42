"""The report's tables computed from a real published study (results/published/ranker-grpc),
checked against the study's raw files: trials.csv, summary.json, experiment.toml,
environment.json and each trial's measurement.json. Files only, no server."""

from __future__ import annotations

import csv
import json
import math
import tomllib
from pathlib import Path

import pytest

from harness import labels
from harness.report import data, tables

PUBLISHED = Path(__file__).resolve().parents[2] / "results" / "published" / "ranker-grpc"


@pytest.fixture(scope="module")
def study():
    res = data.load(PUBLISHED)
    return res, tables.trial_table(res)


@pytest.fixture(scope="module")
def raw():
    with open(PUBLISHED / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    return {
        "rows": {int(r["number"]): r for r in rows},
        "summary": json.loads((PUBLISHED / "summary.json").read_text()),
        "experiment": tomllib.loads((PUBLISHED / "experiment.toml").read_text()),
        "environment": json.loads((PUBLISHED / "environment.json").read_text()),
    }


def measurement(n: int) -> dict | None:
    path = PUBLISHED / "trials" / f"{n:04d}" / "measurement.json"
    return json.loads(path.read_text()) if path.exists() else None


def test_trial_table_has_every_trial_with_its_kind_label_and_rejections(study, raw):
    res, df = study
    assert sorted(df["number"]) == sorted(raw["rows"])
    base = df[df["kind"] == "baseline"]
    assert list(base["label"]) == [labels.BATCHING_OFF, labels.GUIDE_CPU_START, labels.COMMONLY_COPIED]
    for _, r in df.iterrows():
        row = raw["rows"][int(r["number"])]
        errors = json.loads(row["errors"] or "{}")
        for code in tables.REJECTIONS:
            assert r[code] == errors.get(code, 0)
        assert r["duplicate"] == bool(row["duplicate_of"])
        assert r["complete"] == (row["state"] == "COMPLETE")
        assert r["feasible"] == (row["feasible"] == "True")
    search = df[df["kind"] == "search"].iloc[0]
    b = raw["rows"][int(search["number"])]
    assert search["label"] == (
        f"max_batch_size={b['max_batch_size']} timeout={b['batch_timeout_micros']}us "
        f"threads={b['num_batch_threads']} queue={b['max_enqueued_batches']}"
    )


def test_pareto_front_is_every_trial_no_other_beats_on_both_axes(study):
    res, df = study
    front = tables.pareto_front(df, res.max_error_rate)
    ok = df[df["complete"] & (df["error_rate"] <= res.max_error_rate)]
    points = list(zip(ok["number"], ok["items_per_s"], ok["p99_ms"]))

    def beaten(items, p99):
        return any(i > items and p < p99 for _, i, p in points)

    undominated = {int(n) for n, i, p in points if not beaten(i, p)}
    assert set(front["number"]) == undominated == {31, 32}
    assert list(front["p99_ms"]) == sorted(front["p99_ms"])  # up the front: p99 rises ...
    assert list(front["items_per_s"]) == sorted(front["items_per_s"])  # ... and so does throughput
    # a trial rejecting more than the error limit is not on it, however low its p99
    assert all(df.loc[df["number"] == n, "error_rate"].iloc[0] <= 0.01 for n in front["number"])


def test_top_configs_are_the_remeasured_candidates_then_the_baselines(study, raw):
    res, df = study
    top = tables.top_configs(res, df)
    s = raw["summary"]
    cands = [int(c["trial"]) for c in s["candidates"]]
    assert list(top["trial"]) == cands + [0, 1, 2]
    assert list(top["role"]) == ["winner", "top config", "top config", "baseline", "baseline", "baseline"]
    for c in s["candidates"]:
        r = top[top["trial"] == int(c["trial"])].iloc[0]
        assert r["items_per_s"] == c["items_per_s_median"]
        assert r["p99_ms"] == c["p99_ms_median"]
        assert r["items_per_s_range"] == f"{c['items_per_s_min']:,.0f}-{c['items_per_s_max']:,.0f}"
        assert r["runs"] == c["runs"] == 3 and r["failed_runs"] == 0
    off = top[top["trial"] == 0].iloc[0]  # batching off: re-measured in the same rounds
    assert off["config"] == labels.BATCHING_OFF
    assert off["items_per_s"] == s["batching_off"]["items_per_s_median"] and off["runs"] == 3
    for n in (1, 2):  # the other baselines: their one measurement from the search
        r = top[top["trial"] == n].iloc[0]
        assert r["items_per_s_range"] == "single run" and r["runs"] == 1
        assert r["items_per_s"] == pytest.approx(float(raw["rows"][n]["items_per_s"]))


def test_headline_answers_deploy_what_gain_what_cost_what(study, raw):
    res, df = study
    h = tables.headline(res, df)
    s, rows = raw["summary"], raw["rows"].values()
    w = h["winner"]
    assert w["trial"] == s["winner"]["trial"] == 33
    assert w["config"] == "max_batch_size=128 timeout=3426us threads=1 queue=1"
    assert h["gain_over_batching_off"] == pytest.approx(
        s["winner"]["items_per_s_median"] / s["batching_off"]["items_per_s_median"]
    )
    assert h["p99_change_ms"] == pytest.approx(
        s["winner"]["p99_ms_median"] - s["batching_off"]["p99_ms_median"]
    )
    assert h["p99_change_ms"] < 0  # batching off queued far longer at the same load
    assert h["trials"] == len(rows) and h["failed"] == 0
    assert h["feasible"] == sum(r["state"] == "COMPLETE" and r["feasible"] == "True" for r in rows)
    assert h["best_parameters_text"] == (PUBLISHED / "best_batching_parameters.txt").read_text()
    assert "max_batch_size { value: 128 }" in h["best_parameters_text"]
    assert h["slo_p99_ms"] == raw["experiment"]["slo"]["p99_ms"]


def test_batch_sizes_are_the_servers_histograms_as_shares(study):
    res, df = study
    top = tables.top_configs(res, df)
    focus = tables.focus_trials(top)
    bs = tables.batch_sizes(res, focus, dict(zip(df["number"], df["label"])))
    for n, g in bs.groupby("trial"):
        hist = measurement(int(n))["batch_size_histogram"]
        assert dict(zip(g["batch_size_bucket"].astype(str), g["batches"])) == hist
        assert g["share"].sum() == pytest.approx(1.0)
    assert 0 not in set(bs["trial"])  # batching off forms no batches
    assert set(bs["trial"]) <= set(focus)


def test_history_is_the_best_feasible_throughput_so_far(study, raw):
    res, df = study
    h = tables.history(df)
    best, expected = -math.inf, []
    for n in sorted(raw["rows"]):
        r = raw["rows"][n]
        if r["state"] == "COMPLETE" and r["feasible"] == "True":
            best = max(best, float(r["items_per_s"]))
        expected.append(best)
    got = list(h["best_feasible_so_far"])
    assert math.isnan(got[0])  # trial 0, batching off, missed the SLO: no best yet
    assert got[1:] == pytest.approx(expected[1:])


def test_importance_ranks_the_parameters_that_varied(study):
    res, df = study
    imp = tables.importance(df[(df["kind"] == "search") & ~df["duplicate"]])
    assert list(imp["parameter"])[0] == "max_batch_size"
    assert list(imp["importance"]) == sorted(imp["importance"], reverse=True)
    assert all(0 <= v <= 1 for v in imp["importance"])
    # never varied in this study (always 0): not ranked
    assert "intra_op_parallelism" not in set(imp["parameter"])


def test_environment_rows_come_from_environment_json_and_the_experiment(study, raw):
    res, _ = study
    rows = dict(tables.environment(res))
    env, exp = raw["environment"], raw["experiment"]
    cpu = env["cpu"]
    assert rows["CPU"] == f"{cpu['model']} ({cpu['logical_cpus']} logical CPUs)"
    assert rows["CPU SIMD flags"] == ", ".join(cpu["simd_flags"])
    assert rows["tensorflow"] == env["versions"]["tensorflow"]
    assert rows["SLO"] == f"p99 <= {exp['slo']['p99_ms']} ms, errors <= {exp['slo']['max_error_rate']:.1%}"
    assert rows["load"] == f"grpc, closed loop, {exp['load']['users']} users, request sizes 1"


def test_notes_count_the_trials_that_said_each_line(study):
    res, _ = study
    notes = tables.notes(res)
    for _, r in notes.iterrows():
        said = 0
        for n in res.measurements:
            m = measurement(n)
            said += r["line"] in set(m.get(f"{r['kind']}s") or [])
        assert said == r["trials"], r["line"]
    assert notes["trials"].iloc[0] == notes["trials"].max()  # most said first
