"""The arithmetic that splits a served request's CPU into the parts the simulator charges."""

import pytest

from harness.sim import calibrate
from harness.sim import profile as profiles
from tests.sim.test_guide_plan import ranker_like


def served(rows, outside, batch_cpu_ms, run_cpu_ms, share=1.0):
    return {
        "mean_rows": rows,
        "mean_padded": rows,
        "outside_cpu_us_per_row": outside,
        "batch_cpu_ms": batch_cpu_ms,
        "run_cpu_ms": run_cpu_ms,
        "process_cpu_share": share,
    }


def with_measured_runs(prof):
    runs = {
        "reject": {"server_cpu_per_request_us": 300.0, "requests_per_s": 3000.0},
        "one_user": {"p50_ms": 4.0},
    }
    oh = {p: profiles.Overhead(**{**vars(o), "measured": runs}) for p, o in prof.overhead.items()}
    return profiles.Profile(**{**vars(prof), "overhead": oh})


def test_traces_split_served_cpu_into_per_request_and_per_batch_parts():
    prof = with_measured_runs(ranker_like())
    # built from path 250 us/request, two wake-ups of 200 us per batch outside the batch thread,
    # merging 50 us per batch plus 10 us per row: outside(b) = 250 + 400 / b
    one = served(1, 250 + 400, (2900 + 60) / 1e3, 2.9, share=0.99)
    big = served(32, 250 + 400 / 32, (10500 + 50 + 320) / 1e3, 10.5, share=1.0)
    out = calibrate.from_traces(prof, {"grpc": one}, big)
    oh = out.overhead["grpc"]
    assert oh.cpu_in_us + oh.cpu_out_us == pytest.approx(250 + 10)
    assert oh.wake_us == pytest.approx(200) and out.batch_overhead_us == pytest.approx(50)
    assert out.served["cpu_share"] == pytest.approx(0.995)
    assert out.utilisation() == pytest.approx(0.995)
    assert out.served["exec_ratio"] == {"1": pytest.approx(1.0), "32": pytest.approx(1.0)}
    back = profiles.Profile.from_json(out.to_json())
    assert back.served["path_us"] == pytest.approx(250) and back.utilisation() == out.utilisation()
    with pytest.raises(ValueError, match="no batches larger"):
        calibrate.from_traces(prof, {"grpc": one}, served(1, 600, 3, 2.9))
