"""The guided study's predicted-against-measured table and plot (pure: a table in, files out)."""

import pandas as pd
import pytest

from harness.report import predictions


def trials(**extra):
    base = {
        "number": [0, 1, 2, 3],
        "label": ["a", "b", "b", "c"],
        "complete": [True, True, True, False],
        "duplicate": [False, False, True, False],
        "items_per_s": [1000.0, 500.0, 500.0, float("nan")],
        "p99_ms": [100.0, 50.0, 50.0, float("nan")],
        "feasible": [True, True, True, False],
    }
    base.update(extra)
    return pd.DataFrame(base)


def test_errors_per_measured_trial_copies_and_failures_left_out():
    df = trials(
        predicted_items_per_s=["1100", "400", "400", "900"],
        predicted_p99_ms=["50", "", "", "10"],
        guided=["predicted best #1", "neighbour", "neighbour", "predicted best #2"],
    )
    t = predictions.table(df)
    assert list(t["number"]) == [0, 1]
    assert t["items_error"].tolist() == pytest.approx([0.10, -0.20])
    assert t["p99_error"].iloc[0] == pytest.approx(-0.5)
    assert pd.isna(t["p99_error"].iloc[1])  # no p99 predicted: no error claimed
    text = predictions.summary(t)
    assert "within 10% for 1 of 2" in text and "p99 within 20% for 0 of 1" in text


def test_unguided_study_has_no_predictions(tmp_path):
    t = predictions.table(trials())
    assert t.empty and predictions.summary(t) == ""
    png = predictions.plot(t, 150, tmp_path / "p.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_is_drawn(tmp_path):
    df = trials(predicted_items_per_s=[1100, 400, 400, 900], predicted_p99_ms=[50, 60, 60, 10])
    png = predictions.plot(predictions.table(df), 150, tmp_path / "p.png")
    assert png.stat().st_size > 10_000
