"""The report's explanations: why requests were rejected and what to change, and why a trial's
row reads as it does. The sentences alone, then as the report computes them from a small
hand-built study folder (trials.csv, experiment.toml, measurement.json). Files only."""

from __future__ import annotations

import csv
import json

from harness.report import data, diagnosis, tables
from harness.report.study import _reason

EXPERIMENT = """
[load]
protocol = "grpc"
users = 16
request_sizes = "1:80,16:20"
[slo]
p99_ms = 50.0
max_error_rate = 0.01
"""

FIELDS = [
    "number", "state", "baseline", "enable_batching", "max_batch_size", "batch_timeout_micros",
    "num_batch_threads", "max_enqueued_batches", "items_per_s", "p99_ms", "error_rate",
    "requests", "feasible", "errors", "oversize", "fail_reason", "duplicate_of", "neighbour_of",
]  # fmt: skip


def trial(number, *, mbs=8, queue=4, errors=None, requests=1000, state="COMPLETE", **extra):
    errors = errors or {}
    return {
        "number": number, "state": state, "baseline": "", "enable_batching": True,
        "max_batch_size": mbs, "batch_timeout_micros": 0, "num_batch_threads": 1,
        "max_enqueued_batches": queue, "items_per_s": 500.0, "p99_ms": 20.0,
        "error_rate": sum(errors.values()) / requests, "requests": requests,
        "feasible": not errors, "errors": json.dumps(errors), "oversize": "[]",
        "fail_reason": "", "duplicate_of": "", "neighbour_of": "", **extra,
    }  # fmt: skip


def study_folder(tmp_path, rows, measurements=None):
    (tmp_path / "experiment.toml").write_text(EXPERIMENT)
    with open(tmp_path / "trials.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)
    for n, m in (measurements or {}).items():
        d = tmp_path / "trials" / f"{n:04d}"
        d.mkdir(parents=True)
        (d / "measurement.json").write_text(json.dumps(m))
    res = data.load(tmp_path)
    return res, tables.trial_table(res)


# -- the sentences ----------------------------------------------------------------------------


def causes(**kw):
    args = dict(
        invalid=0, unavailable=0, exhausted=0, oversize_sizes=[], max_batch_size=8,
        max_enqueued_batches=4, largest_request=16,
    )  # fmt: skip
    return diagnosis.rejection_causes(**{**args, **kw})


def test_too_large_requests_name_their_sizes_and_the_size_to_raise_to():
    c, f = causes(invalid=30, oversize_sizes=[12, 16])
    assert c == ["30 INVALID_ARGUMENT: requests of 12, 16 items are larger than max_batch_size=8"]
    assert f == [
        "raise max_batch_size to at least 16, or set enable_large_batch_splitting with "
        "max_execution_batch_size=8"
    ]
    # no record of the sizes: the experiment's largest request is the target
    c, f = causes(invalid=3, largest_request=32)
    assert c == ["3 INVALID_ARGUMENT: requests of some items are larger than max_batch_size=8"]
    assert f[0].startswith("raise max_batch_size to at least 32,")
    # neither: the fix says what to do without a number
    _, f = causes(invalid=3, largest_request=None)
    assert f == ["raise max_batch_size above the largest request, or enable large batch splitting"]


def test_a_full_queue_and_late_requests_each_get_their_cause_and_fix():
    c, f = causes(unavailable=644, exhausted=5, max_enqueued_batches=1)
    assert c == [
        "644 UNAVAILABLE: the batch queue (max_enqueued_batches=1) was full",
        "5 RESOURCE_EXHAUSTED: requests were past their deadline when batched",
    ]
    assert f == [
        "raise max_enqueued_batches, or max_batch_size / num_batch_threads so batches drain faster",
        "lower batch_timeout_micros, or give the server more CPU",
    ]
    assert causes() == ([], [])  # nothing rejected: nothing to explain


def test_a_trials_reason_says_why_its_row_has_no_figures_of_its_own():
    reason = diagnosis.trial_reason
    assert reason(duplicate_of=7, neighbour_of=None, fail_reason="") == (
        "same config as trial 7: not measured again, figures copied"
    )
    assert reason(duplicate_of=None, neighbour_of=4, fail_reason="") == (
        "a neighbour of trial 4, measured instead of a repeated proposal"
    )
    assert reason(duplicate_of=None, neighbour_of=4, fail_reason="server exited with code 1") == (
        "a neighbour of trial 4, measured instead of a repeated proposal; server exited with code 1"
    )
    assert reason(duplicate_of=None, neighbour_of=None, fail_reason="") == ""


# -- as the report computes them from a study folder ------------------------------------------


def test_rejections_table_from_a_hand_built_study(tmp_path):
    rows = [
        trial(0, errors={}),  # nothing rejected: not in the table
        trial(1, mbs=8, errors={"INVALID_ARGUMENT": 200}),
        trial(2, mbs=32, queue=1, errors={"UNAVAILABLE": 90, "RESOURCE_EXHAUSTED": 10}),
        trial(3, state="FAIL", errors={"UNAVAILABLE": 5}),  # failed trials have no figures
        trial(4, mbs=4, errors={"INVALID_ARGUMENT": 7, "DEADLINE_EXCEEDED": 3}),
    ]
    oversize = [{"size": 16, "limit": 8, "count": 200}]
    res, df = study_folder(tmp_path, rows, {1: {"oversize": oversize}})
    rej = tables.rejections(res, df)
    assert list(rej.columns) == tables.REJECTION_COLUMNS
    assert list(rej["trial"]) == [1, 2, 4]
    by = rej.set_index("trial")
    assert by.loc[1, "cause"] == (
        "200 INVALID_ARGUMENT: requests of 16 items are larger than max_batch_size=8"
    )
    assert by.loc[1, "fix"].startswith("raise max_batch_size to at least 16,")
    assert by.loc[2, "cause"] == (
        "90 UNAVAILABLE: the batch queue (max_enqueued_batches=1) was full; "
        "10 RESOURCE_EXHAUSTED: requests were past their deadline when batched"
    )
    assert by.loc[2, "fix"].count("; ") == 1
    # trial 4 has no oversize record: the mix's largest request (16) is the fix's target
    assert by.loc[4, "cause"] == "7 INVALID_ARGUMENT: requests of some items are larger than max_batch_size=4"
    assert by.loc[4, "fix"].startswith("raise max_batch_size to at least 16,")
    assert list(rej["largest_request"]) == [16, 16, 16]
    assert by.loc[2, "rejected_share"] == 0.1 and by.loc[2, "requests"] == 1000


def test_every_trial_reasons_from_a_hand_built_study(tmp_path):
    rows = [
        trial(0),
        trial(1, duplicate_of=0),
        trial(2, neighbour_of=0),
        trial(3, state="FAIL", fail_reason="the server exited with code 1"),
    ]
    _, df = study_folder(tmp_path, rows)
    reasons = [_reason(r) for _, r in df.iterrows()]
    assert reasons == [
        "",
        "same config as trial 0: not measured again, figures copied",
        "a neighbour of trial 0, measured instead of a repeated proposal",
        "the server exited with code 1",
    ]
    assert list(df["duplicate"]) == [False, True, False, False]
