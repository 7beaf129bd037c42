"""The report of a study that ran the batching guide's procedure (summary.json as the winner
step writes it, laid over the published gRPC study's files): the gain over the procedure with
its cost, a plain verdict, and the procedure's steps. Files only, no server."""

from __future__ import annotations

import json

from harness import labels
from harness.report import data, study, tables
from tests.report.test_remeasured_table import copy_study


def _with_procedure(d, verdict: str) -> dict:
    summary = json.loads((d / "summary.json").read_text())
    w, ref = summary["candidates"][0], summary["candidates"][1]
    steps = [
        {"step": "start", "phase": 0, "trial": 1, "measured_by": 1, "config": ref["config"], "items_per_s": 1600.0, "p99_ms": 80.0, "feasible": True, "failed": False},
        {"step": "timeout 1 ms", "phase": 1, "trial": 31, "measured_by": 31, "config": ref["config"], "items_per_s": 1620.0, "p99_ms": 82.0, "feasible": True, "failed": False},
        {"step": "timeout 2 ms", "phase": 1, "trial": 40, "measured_by": 40, "config": ref["config"], "items_per_s": None, "p99_ms": None, "feasible": False, "failed": True},
    ]  # fmt: skip
    summary["guide_procedure"] = {
        "device": "cpu", "steps": steps, "measurements": 3, "measured_here": 3, "wall_s": 75.0,
        "choice": {"step": "timeout 1 ms", "trial": ref["trial"], "config": ref["config"]},
    }  # fmt: skip
    summary["gains"] = {
        labels.GUIDE_PROCEDURE: {
            "gain": w["items_per_s_median"] / ref["items_per_s_median"],
            "winner_items_per_s_median": w["items_per_s_median"], "winner_items_per_s_min": w["items_per_s_min"],
            "winner_items_per_s_max": w["items_per_s_max"], "winner_runs": w["runs"],
            "reference_trial": ref["trial"], "reference_items_per_s_median": ref["items_per_s_median"],
            "reference_items_per_s_min": ref["items_per_s_min"], "reference_items_per_s_max": ref["items_per_s_max"],
            "reference_p99_ms_median": ref["p99_ms_median"], "reference_runs": ref["runs"],
            "reference_feasible": True, "verdict": verdict, "procedure_step": "timeout 1 ms",
            "procedure_measurements": 3, "procedure_wall_s": 75.0,
        }
    }  # fmt: skip
    summary["tied_with_winner"] = [ref["trial"]] if verdict == "tied" else []
    summary["ranking_rule"] = "configs ... are tied; among them the highest lower bound (slowest run) wins, then the lower median p99"
    (d / "summary.json").write_text(json.dumps(summary))
    return summary


def test_the_report_states_the_gain_over_the_guides_procedure_and_its_steps(tmp_path):
    d = copy_study(tmp_path)
    summary = _with_procedure(d, "tied")
    res = data.load(d)
    head = tables.headline(res, tables.trial_table(res))
    assert head["guide_procedure"]["measurements"] == 3
    [g] = head["gains"]
    assert g["name"] == "the batching guide's procedure" and g["verdict"] == "tied"
    text = " ".join(study.headline_text(head))
    assert f"{g['gain']:.2f}x the throughput of the batching guide's procedure" in text
    assert "**the batching guide's procedure is as good** on this machine: the ranges overlap" in text
    assert "the procedure took 3 measurements and 75 s" in text
    study.build(d)
    md = (d / "report.md").read_text()
    assert "## The batching guide's procedure" in md
    assert "| timeout 1 ms |" in md and "failed" in md
    assert "It ends on the step 'timeout 1 ms'" in md
    assert "the highest lower bound (slowest run) wins" in md  # the tie and its rule
    assert str(summary["tied_with_winner"][0]) in md


def test_a_beaten_guide_is_said_to_be_beaten(tmp_path):
    d = copy_study(tmp_path)
    _with_procedure(d, "ahead")
    res = data.load(d)
    text = " ".join(study.headline_text(tables.headline(res, tables.trial_table(res))))
    assert "tuning beats it: the ranges do not overlap" in text
    assert "cannot be told apart** from the runner-up" in text  # the published tie flag stays
