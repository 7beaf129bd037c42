"""The report's re-measured table on the published gRPC study (results/published/ranker-grpc,
written when batching off was still labelled "batching off (TF Serving default)"): the old
label reads as today's, and failed re-measurements show as a column. Files only, no server."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from harness import labels
from harness.report import data, tables

PUBLISHED = Path(__file__).resolve().parents[2] / "results" / "published" / "ranker-grpc"


def copy_study(tmp_path) -> Path:
    d = tmp_path / "ranker-grpc"
    shutil.copytree(PUBLISHED, d, ignore=shutil.ignore_patterns("trials", "remeasure", "plots"))
    return d


def test_an_older_studys_baseline_label_reads_as_todays(tmp_path):
    assert "batching off (TF Serving default)" in (PUBLISHED / "trials.csv").read_text()
    res = data.load(copy_study(tmp_path))
    assert labels.BATCHING_OFF in set(res.trials["baseline"].dropna())
    assert not any("TF Serving default" in str(b) for b in res.trials["baseline"])
    assert res.summary["batching_off"]["label"] == labels.BATCHING_OFF
    df = tables.trial_table(res)
    head = tables.headline(res, df)
    assert head["batching_off_items_per_s"] == res.summary["batching_off"]["items_per_s_median"]
    top = tables.top_configs(res, df)
    assert (top["config"] == labels.BATCHING_OFF).sum() == 1
    assert list(top["failed_runs"]) == [0] * len(top)  # every published re-measurement ran


def test_failed_remeasurements_show_in_the_table(tmp_path):
    d = copy_study(tmp_path)
    summary = json.loads((d / "summary.json").read_text())
    runner_up = summary["candidates"][1]
    # as the winner step writes a config all of whose re-measurements failed
    runner_up.update(
        items_per_s_median=None,
        items_per_s_min=None,
        items_per_s_max=None,
        p99_ms_median=None,
        error_rate_median=None,
        runs=0,
        failed_runs=3,
        feasible=False,
    )
    summary["candidates"][0]["failed_runs"] = 1
    summary["batching_off"].update(items_per_s_median=None, runs=0, failed_runs=3, feasible=False)
    (d / "summary.json").write_text(json.dumps(summary))
    fails = {"failed": "the server exited with code 1"}
    runs = json.loads((d / "remeasure.json").read_text())
    runs[str(runner_up["trial"])] = [fails] * 3
    (d / "remeasure.json").write_text(json.dumps(runs))
    res = data.load(d)
    df = tables.trial_table(res)
    top = tables.top_configs(res, df).set_index("trial")
    row = top.loc[runner_up["trial"]]
    assert row["failed_runs"] == 3 and row["items_per_s_range"] == "every run failed"
    assert not row["feasible"]
    assert top.loc[summary["candidates"][0]["trial"], "failed_runs"] == 1
    # batching off without a successful re-measurement: the search's figure is the reference
    head = tables.headline(res, df)
    off = df[(df["baseline"] == labels.BATCHING_OFF) & df["complete"]]
    assert head["batching_off_items_per_s"] == float(off["items_per_s"].iloc[0])
    # and the page shows the column
    from harness.report import study

    study.build(d)
    md = (d / "report.md").read_text()
    assert "| failed runs |" in md and "every run failed" in md
