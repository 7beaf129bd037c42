"""`harness profile` for real on the tiny model, and the parts of its measuring that need no server."""

import os

EXPERIMENT = """
[model]
path = "{model}"
name = "m"
[server]
binary = "reference"
cpus = "0"
[load]
users = 16
request_sizes = "1"
cpus = "1"
[search]
max_batch_size = [1, 4, 8]
"""


def test_profile_of_the_tiny_model_is_split_from_traced_served_runs(
    tmp_path, mlp_base, monkeypatch
):
    monkeypatch.setenv("HARNESS_REFSERVER_IMPL", "python")  # the simulator models the Python server
    import dataclasses

    from harness.config import load_experiment
    from harness.refserver.batch_trace import ENV
    from harness.tuning.profiling import measure
    from harness.tuning.trial import TrialRunner

    # The profile's five load runs, shorter: `harness profile` warms up 2 s and measures two or
    # three windows of 2-5 s each (more when they disagree); a warm-up of 1 s and two windows
    # of at most 1.5 s still give thousands of answers per run and a busy trace beyond its
    # first two seconds (what the assertions read). Each run is still real Locust against a
    # real server.
    real_run_load = TrialRunner.run_load

    def shorter_run_load(self, server, load, workdir):
        short = dataclasses.replace(
            load,
            warmup_s=1.0,
            window_s=min(load.window_s, 1.5),
            min_windows=2,
            max_windows=2,
            extra_windows=0,
        )
        return real_run_load(self, server, short, workdir)

    monkeypatch.setattr(TrialRunner, "run_load", shorter_run_load)

    exp_file = tmp_path / "exp.toml"
    exp_file.write_text(EXPERIMENT.replace("{model}", str(mlp_base)))
    exp = load_experiment(str(exp_file), [])
    lines = []
    prof = measure(
        exp, protocols=["grpc"], max_size=8, workdir=tmp_path, budget_s=0.2, echo=lines.append
    )
    assert sorted(prof.exec_us) == [1, 2, 3, 4, 6, 8]
    assert prof.served, "\n".join(lines)
    assert 0.5 <= prof.served["cpu_share"] <= 1.0
    assert all(r > 0 for r in prof.served["exec_ratio"].values()), prof.served
    runs = prof.served["runs"]
    assert runs["ones"]["grpc"]["mean_rows"] == 1.0 and runs["big"]["mean_rows"] > 1.5
    oh = prof.overhead["grpc"]
    assert oh.cpu_in_us + oh.cpu_out_us > 1.0 and prof.batch_overhead_us >= 0.0
    assert ENV not in os.environ  # the tracer is put away: later servers trace nothing


def test_profile_batch_sizes_and_pause_detection(tmp_path):
    import numpy as np

    from harness.samples import write_chunk
    from harness.tuning.offline_timing import batch_sizes
    from harness.tuning.profiling import _stalls

    assert batch_sizes(32) == [1, 2, 3, 4, 6, 8, 12, 16, 24, 32]
    assert batch_sizes(100)[-1] == 100
    # a server answering every 2 ms, silent for 200 ms twice
    t = np.arange(3000) * 0.002
    t[1000:] += 0.2
    t[2000:] += 0.2
    cols = {
        "t_intended": t,
        "latency_us": np.full(3000, 1000.0),
        "code": np.zeros(3000, np.int16),
        "size": np.ones(3000, np.int32),
        "late_us": np.zeros(3000, np.float32),
    }
    write_chunk(tmp_path, "x", cols, [])
    n, gaps = _stalls(tmp_path)
    assert n == 3000 and len(gaps) == 2 and all(200 <= g <= 203 for g in gaps)
