"""Helpers for the fault-injection tests: tiny real studies, and finding what a run left behind."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# A study of a few seconds per trial: the tiny MLP on the reference server, short windows.
EXPERIMENT = """
[model]
path = "{model}"
name = "m"
[server]
binary = "reference"
cpus = "0"
[load]
users = 4
request_sizes = "1"
warmup_s = 0.5
window_s = 1.0
min_windows = 2
max_windows = 2
extra_windows = 0
cpus = "1"
[slo]
p99_ms = 500
max_error_rate = 0.5
[search]
max_batch_size = [4, 8]
batch_timeout_micros = [0, 500]
num_batch_threads = [1]
max_enqueued_batches = [100]
[study]
name = "t"
trials = {trials}
top_k = 1
repeats = 1
seed = 3
"""


def write_experiment(tmp_path: Path, trials: int, extra: str = "") -> Path:
    exp = tmp_path / "exp.toml"
    text = EXPERIMENT.format(model=tmp_path / "model", trials=trials)
    exp.write_text(text + extra)
    return exp


def tune_cmd(tmp_path: Path, trials: int, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "harness.cli",
        "tune",
        "--experiment",
        str(write_experiment(tmp_path, trials)),
        "--results-dir",
        str(tmp_path / "res"),
        *extra,
    ]


def run(cmd: list[str], timeout: float = 300, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)


def csv_rows(tmp_path: Path, study: str = "t") -> list[dict]:
    path = tmp_path / "res" / study / "trials.csv"
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def storage_trials(tmp_path: Path, study: str = "t") -> list:
    import optuna

    db = tmp_path / "res" / study / "study.db"
    if not db.exists():
        return []
    try:
        s = optuna.load_study(study_name=study, storage=f"sqlite:///{db}")
    except KeyError:  # interrupted before the study was created
        return []
    return s.get_trials(deepcopy=False)


def processes_of(owner_pid: int) -> list[tuple[int, str]]:
    """Live processes carrying the owner marker of the harness with this pid."""
    from harness.procs import marked

    return marked(lambda token: token.split(":")[0] == str(owner_pid))


def commands_mentioning(text: str) -> list[tuple[int, str]]:
    """Live processes whose command line holds ``text`` (a test's temporary path)."""
    import psutil

    out = []
    for p in psutil.process_iter(["cmdline", "status"], ad_value=None):
        cmd = " ".join(p.info["cmdline"] or ())
        if p.pid != os.getpid() and text in cmd and p.info["status"] not in (None, "zombie"):
            out.append((p.pid, cmd))
    return out


def our_containers() -> list | None:
    """Containers with the project's label, or None when no Docker engine answers."""
    try:
        import docker

        client = docker.from_env(timeout=10)
        client.ping()
    except Exception:
        return None
    from harness.servers.docker import LABEL

    return client.containers.list(all=True, filters={"label": f"{LABEL}=true"})


def wait_for(predicate, timeout: float, what: str, poll: float = 0.1):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
