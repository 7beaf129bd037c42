"""Real studies on the tiny model: baselines, a failing config, resume, Ctrl-C."""

import csv
import json
import signal
import subprocess
import sys
import time

import pytest

from harness.batching import BatchingParameters
from tests.conftest import ROOT

EXPERIMENT = """
[model]
path = "{model}"
name = "m"
[server]
binary = "reference"
cpus = "0"
# with session parallelism set, any trial that also sets intra-op threads is refused at start
extra_flags = ["--tensorflow_session_parallelism=1"]
[load]
users = 8
request_sizes = "1:90,8:10"
warmup_s = 0.5
window_s = 1.0
min_windows = 2
max_windows = 2
extra_windows = 0
cpus = "1"
[slo]
p99_ms = 200
max_error_rate = 0.5
[search]
max_batch_size = [4, 8]
batch_timeout_micros = [0, 500]
num_batch_threads = [1]
max_enqueued_batches = [100]
intra_op_parallelism = [0, 1]
[study]
name = "t"
trials = {trials}
# top_k 1, repeats 1: the winner is the search's best, nothing is re-measured (the report
# study re-measures, tests/studies.py)
top_k = 1
repeats = 1
seed = 1
"""


def write_experiment(tmp_path, trials: int, edit=lambda text: text):
    exp = tmp_path / "exp.toml"
    text = EXPERIMENT.replace("{model}", str(tmp_path / "model")).replace("{trials}", str(trials))
    exp.write_text(edit(text))
    return exp


def tune_cmd(tmp_path, trials: int, *extra, edit=lambda text: text) -> list[str]:
    exp = write_experiment(tmp_path, trials, edit)
    return [
        sys.executable,
        "-m",
        "harness.cli",
        "tune",
        "--experiment",
        str(exp),
        "--results-dir",
        str(tmp_path / "res"),
        *extra,
    ]


def tune(tmp_path, *extra, trials=5, timeout=400, edit=lambda text: text):
    return subprocess.run(
        tune_cmd(tmp_path, trials, *extra, edit=edit),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def rows(tmp_path):
    with open(tmp_path / "res" / "t" / "trials.csv") as f:
        return list(csv.DictReader(f))


def measured(tmp_path):
    """The trials that spent the budget (a copy of a repeated config does not)."""
    return [r for r in rows(tmp_path) if not r["duplicate_of"]]


@pytest.fixture
def model(tmp_path, mlp_base):
    import shutil

    shutil.copytree(mlp_base, tmp_path / "model")


def test_study_runs_records_failures_and_resumes(tmp_path, model):
    # five trials: the three baselines, then the sampler's first two (with this seed the second
    # sets intra-op threads, which the server refuses)
    r = tune(tmp_path, trials=5)
    assert r.returncode == 0, r.stderr[-3000:] + r.stdout[-3000:]
    study = tmp_path / "res" / "t"
    got = rows(tmp_path)
    assert len(measured(tmp_path)) == 5
    assert [g["baseline"] for g in got[:3]] == [
        "batching off",
        "batching guide CPU start",
        "commonly copied config",
    ]
    assert got[0]["enable_batching"] == "False"
    complete = [g for g in got if g["state"] == "COMPLETE"]
    failed = [g for g in got if g["state"] == "FAIL"]
    assert complete and all(float(g["items_per_s"]) > 0 for g in complete)
    assert failed  # with this seed the sampler tries intra-op threads, which the server refuses
    for g in failed:  # the refused configs say why, and the study went on past them
        assert g["intra_op_parallelism"] == "1"
        assert "exited with code 1" in g["fail_reason"]
        assert "Setting all three is an error" in g["fail_reason"]
    assert all(g["intra_op_parallelism"] != "1" for g in complete)
    assert (study / "study.db").exists() and (study / "experiment.toml").exists()
    assert (study / "summary.json").exists()
    best_text = (study / "best_batching_parameters.txt").read_text()
    if "batching off" not in best_text:
        assert BatchingParameters.from_text(best_text).max_batch_size in (4, 8)
    trial_dir = study / "trials" / "0001"
    assert (trial_dir / "measurement.json").exists()
    assert (trial_dir / "server" / "server.log").exists()
    for g in complete:  # 8-row requests are refused where max_batch_size is 4, and that is kept
        oversize = json.loads(g["oversize"])
        if g["max_batch_size"] == "4":
            assert oversize and oversize[0]["size"] == 8 and oversize[0]["limit"] == 4
        else:
            assert oversize == []

    # the resumed runs draw no report (the first run's report already shows these trials, and
    # the report tests check reports): the resume is what is tested here
    again = tune(tmp_path, "--no-report", trials=5)
    assert again.returncode == 0
    assert "nothing to run" in again.stdout
    assert len(measured(tmp_path)) == 5

    more = tune(tmp_path, "--no-report", trials=6)
    assert more.returncode == 0, more.stderr[-2000:]
    assert len(measured(tmp_path)) == 6


def _refservers_for(path) -> list[int]:
    out = subprocess.run(["pgrep", "-f", f"model_base_path={path}"], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def test_ctrl_c_stops_cleanly_and_the_same_command_resumes(tmp_path, model):
    trials = 3  # interrupted in the second: one finished before, one left after
    cmd = tune_cmd(tmp_path, trials)
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT
    )
    csv_path = tmp_path / "res" / "t" / "trials.csv"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if csv_path.exists() and len(rows(tmp_path)) >= 1:
            break
        time.sleep(0.3)
    time.sleep(2.0)  # now in the middle of the second trial
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "run the same command to resume" in err
    done = [r for r in rows(tmp_path) if r["state"] == "COMPLETE"]
    assert len(done) >= 1
    time.sleep(1.0)
    assert _refservers_for(tmp_path / "model") == []
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=400, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    final = rows(tmp_path)
    assert sum(1 for x in final if x["state"] in ("COMPLETE", "FAIL")) == trials
    kept = {x["number"]: x for x in final}
    for d in done:  # every trial finished before the interrupt is still there, unchanged
        assert kept[d["number"]]["items_per_s"] == d["items_per_s"]
    assert _refservers_for(tmp_path / "model") == []


def test_pareto_mode_returns_a_front(tmp_path, model):
    def pareto(text):
        text = text.replace('extra_flags = ["--tensorflow_session_parallelism=1"]', "")
        text = text.replace("intra_op_parallelism = [0, 1]", "")
        return text.replace('name = "t"', 'name = "t"\nmode = "pareto"').replace(
            "[load]", "[load]\nrate = 200"
        )

    r = tune(tmp_path, trials=4, edit=pareto)
    assert r.returncode == 0, r.stderr[-3000:]
    import optuna

    study = optuna.load_study(
        study_name="t", storage=f"sqlite:///{tmp_path / 'res' / 't' / 'study.db'}"
    )
    assert len(study.directions) == 2
    front = study.best_trials
    assert front and all(len(t.values) == 2 for t in front)
    assert (tmp_path / "res" / "t" / "best_batching_parameters.txt").exists()


def test_harness_run_from_an_experiment_file(tmp_path, model):
    exp = write_experiment(tmp_path, 1)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "run",
            "--experiment",
            str(exp),
            "--set",
            "load.users=4",
            "--max-batch-size",
            "4",
            "--workdir",
            str(tmp_path / "run"),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads(r.stdout.strip().splitlines()[-1])
    assert doc["users"] == 4
    assert doc["oversize"] and doc["oversize"][0]["limit"] == 4  # the experiment's 8-row requests
