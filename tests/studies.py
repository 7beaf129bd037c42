"""The real studies that several test files only read, run once per session (the
``report_studies`` fixture in tests/conftest.py).

One gRPC study on the tiny model, with the batching guide's procedure beside the search
(``--guide-procedure cpu``): the report tests (tests/report/test_report.py) check its files and
report, and the guide-procedure test (tests/tuning/test_tune_guide_procedure.py) checks its
trials, summary.json and terminal output. A second, smaller REST study exists only for
``harness compare``. Each study is a few minutes of the machine, so it runs once for all of them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, copy_model

# 16-row requests: the commonly copied config (max_batch_size 8) and max_batch_size 1 refuse
# them, which the rejection tables explain. The search's budget is TRIALS; the guide's
# procedure measures beside it.
EXPERIMENT = """
[model]
path = "{model}"
name = "m"
[server]
binary = "reference"
cpus = "0"
[load]
protocol = "{protocol}"
users = 8
request_sizes = "1:80,16:20"
warmup_s = 0.5
window_s = 1.0
min_windows = 2
max_windows = 2
extra_windows = 0
cpus = "1"
[slo]
p99_ms = 250
max_error_rate = 0.5
[search]
max_batch_size = [1, 32]
batch_timeout_micros = [0]
num_batch_threads = [1]
max_enqueued_batches = [1, 100]
[study]
name = "{name}"
trials = {trials}
top_k = 1
repeats = 2
seed = 3
"""

TRIALS = 5  # the gRPC study's search budget (the three baselines and two sampled configs)


def run_study(tmp: Path, model: Path, protocol: str, name: str, *extra: str, edit=lambda t: t):
    """``harness tune`` on ``model``; returns (the study folder, the finished process)."""
    exp = tmp / f"{name}.toml"
    text = EXPERIMENT.format(model=model, protocol=protocol, name=name, trials=TRIALS)
    exp.write_text(edit(text))
    r = subprocess.run(
        [
            sys.executable, "-m", "harness.cli", "tune", "--experiment", str(exp),
            "--results-dir", str(tmp / "res"), *extra,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:] + r.stdout[-3000:]
    return tmp / "res" / name, r


def _rest_only_for_compare(text: str) -> str:
    # two trials, no baselines, not re-measured: compare needs a second study, not its figures
    text = text.replace(f"trials = {TRIALS}", "trials = 2\nbaselines = false")
    return text.replace("repeats = 2", "repeats = 1")


def report_studies(tmp: Path, mlp_base: Path) -> dict:
    """The gRPC study (with the guide's procedure) and the REST study; their folders, and the
    gRPC run's terminal output."""
    model = copy_model(mlp_base, tmp / "model")
    grpc_dir, out = run_study(tmp, model, "grpc", "rep-grpc", "--guide-procedure", "cpu")
    rest_dir, _ = run_study(tmp, model, "rest", "rep-rest", edit=_rest_only_for_compare)
    return {"grpc": grpc_dir, "rest": rest_dir, "tune_stdout": out.stdout, "tmp": tmp}
