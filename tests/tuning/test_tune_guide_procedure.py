"""End to end: ``harness tune --guide-procedure cpu`` on the reference server with the demo mlp
model. The guide's steps are real trials in trials.csv, beside the search's budget; its choice is
re-measured beside the winner; summary.json, the terminal and the report state the gain over it,
what it cost, and whether tuning beat it on the ranges."""

from __future__ import annotations

import json

import pytest

from harness import labels
from tests.tuning.test_tune_study import model, rows, tune  # noqa: F401 - `model` is a fixture

STEPS = ["start", "timeout 1 ms", "timeout 2 ms", "timeout 5 ms", "timeout 10 ms", "max_enqueued_batches = threads"]


def _edit(text: str) -> str:
    # no refused configs here (the study test covers those), and two runs per re-measured config
    text = text.replace("intra_op_parallelism = [0, 1]", "intra_op_parallelism = [0]")
    return text.replace("top_k = 2\nrepeats = 1", "top_k = 1\nrepeats = 2")


@pytest.mark.timeout(900)
def test_tune_runs_the_guides_procedure_and_states_the_gain_over_it(tmp_path, model):  # noqa: F811
    r = tune(tmp_path, "--guide-procedure", "cpu", trials=4, timeout=850, edit=_edit)
    assert r.returncode == 0, r.stderr[-3000:] + r.stdout[-3000:]
    got = rows(tmp_path)
    steps = [g for g in got if labels.is_guide_step(g["baseline"])]
    assert [g["baseline"] for g in steps] == [labels.guide_step_label(s) for s in STEPS]
    assert all(g["state"] == "COMPLETE" for g in steps)
    # the start is the guide CPU start baseline's config: one measurement serves both
    cpu_start = next(g for g in got if g["baseline"] == labels.GUIDE_CPU_START)
    assert steps[0]["duplicate_of"] == cpu_start["number"]
    assert [g["batch_timeout_micros"] for g in steps[1:5]] == ["1000", "2000", "5000", "10000"]
    assert {g["num_batch_threads"] for g in steps} == {"1"}  # the server's one core
    assert steps[-1]["max_enqueued_batches"] == "1"  # = num_batch_threads, for online serving
    # the search's budget of 4 is its own: the procedure's steps are beside it
    search = [g for g in got if not labels.is_guide_step(g["baseline"]) and not g["duplicate_of"]]
    assert len(search) == 4

    study = tmp_path / "res" / "t"
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
    assert "the batching guide's procedure" in r.stdout
    assert "the procedure took 6 measurements" in r.stdout

    report = (study / "report.md").read_text()
    assert "## The batching guide's procedure" in report
    assert "the batching guide's procedure" in report and "the procedure took 6 measurements" in report
    for step in STEPS:
        assert step in report
