"""End to end: ``harness tune --guide-procedure cpu`` on the reference server with the demo mlp
model. The guide's steps are real trials in trials.csv, beside the search's budget; its choice is
re-measured beside the winner; summary.json, the terminal and the report state the gain over it,
what it cost, and whether tuning beat it on the ranges."""

from __future__ import annotations

import csv
import json

import pytest

from harness import labels
from tests.studies import TRIALS

STEPS = ["start", "timeout 1 ms", "timeout 2 ms", "timeout 5 ms", "timeout 10 ms", "max_enqueued_batches = threads"]


def test_tune_runs_the_guides_procedure_and_states_the_gain_over_it(report_studies):
    # the session's gRPC study ran with --guide-procedure cpu (tests/studies.py; the report
    # tests read the same study); two runs per re-measured config
    study = report_studies["grpc"]
    stdout = report_studies["tune_stdout"]
    with open(study / "trials.csv") as f:
        got = list(csv.DictReader(f))
    steps = [g for g in got if labels.is_guide_step(g["baseline"])]
    assert [g["baseline"] for g in steps] == [labels.guide_step_label(s) for s in STEPS]
    assert all(g["state"] == "COMPLETE" for g in steps)
    # the start is the guide CPU start baseline's config: one measurement serves both
    cpu_start = next(g for g in got if g["baseline"] == labels.GUIDE_CPU_START)
    assert steps[0]["duplicate_of"] == cpu_start["number"]
    assert [g["batch_timeout_micros"] for g in steps[1:5]] == ["1000", "2000", "5000", "10000"]
    assert {g["num_batch_threads"] for g in steps} == {"1"}  # the server's one core
    assert steps[-1]["max_enqueued_batches"] == "1"  # = num_batch_threads, for online serving
    # the search's budget is its own: the procedure's steps are beside it
    search = [g for g in got if not labels.is_guide_step(g["baseline"]) and not g["duplicate_of"]]
    assert len(search) == TRIALS

    s = json.loads((study / "summary.json").read_text())
    rec = s["guide_procedure"]
    assert rec["device"] == "cpu" and rec["measurements"] == 6 and rec["measured_here"] == 5
    assert rec["wall_s"] > 0 and rec["choice"]["step"] in STEPS
    ref = s["references"][labels.GUIDE_PROCEDURE]
    assert ref["runs"] == 2 and ref["config"] == rec["choice"]["config"]
    g = s["gains"][labels.GUIDE_PROCEDURE]
    assert g["gain"] == pytest.approx(s["winner"]["items_per_s_median"] / ref["items_per_s_median"])
    assert g["verdict"] in ("ahead", "tied", "behind") and g["procedure_measurements"] == 6
    assert "ranking_rule" in s
    assert "the batching guide's procedure" in stdout
    assert "the procedure took 6 measurements" in stdout

    report = (study / "report.md").read_text()
    assert "## The batching guide's procedure" in report
    assert "the batching guide's procedure" in report and "the procedure took 6 measurements" in report
    for step in STEPS:
        assert step in report
