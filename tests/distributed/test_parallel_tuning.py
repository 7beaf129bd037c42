"""Two `harness tune` processes share one study in PostgreSQL: each owns its reference server
and its Locust master with two local workers, on its own core (core 0 and core 1: server and load
share that core, so this measures contention, not capacity). Tiny windows, four trials: the
three baselines and one the sampler picks.
"""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.errors import ConfigError
from harness.tuning import storage

ROOT = Path(__file__).resolve().parents[2]

EXPERIMENT = """
[model]
path = "{model}"
name = "m"
[server]
binary = "reference"
[load]
users = 8
request_sizes = "1:90,8:10"
warmup_s = 0.5
window_s = 1.0
min_windows = 2
max_windows = 2
extra_windows = 0
processes = 2
[slo]
p99_ms = 200
max_error_rate = 0.5
[search]
max_batch_size = [4, 8]
batch_timeout_micros = [0, 500]
num_batch_threads = [1]
max_enqueued_batches = [100]
[study]
name = "shared"
trials = 4
# top_k 1, repeats 1: the winner is the search's best, nothing is re-measured (the report
# study re-measures, tests/studies.py)
top_k = 1
repeats = 1
seed = 3
"""


@pytest.fixture
def experiment(tmp_path, mlp_base):
    import shutil

    shutil.copytree(mlp_base, tmp_path / "model")
    path = tmp_path / "exp.toml"
    path.write_text(EXPERIMENT.replace("{model}", str(tmp_path / "model")))
    return path


def _tuner(exp, results, url, core: int) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "tune",
            "--experiment",
            str(exp),
            "--results-dir",
            str(results),
            "--storage",
            url,
            "--set",
            f'server.cpus="{core}"',
            "--set",
            f'load.cpus="{core}"',
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
    )


def test_two_tuners_share_one_postgresql_study(experiment, tmp_path, postgres_url):
    results = tmp_path / "res"
    tuners = [_tuner(experiment, results, postgres_url, core) for core in (0, 1)]
    outs = []
    for t in tuners:
        out, _ = t.communicate(timeout=400)
        outs.append(out)
        assert t.returncode == 0, out[-3000:]

    with open(results / "shared" / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    measured = [r for r in rows if not r["duplicate_of"]]
    assert len(measured) == 4  # the study's budget, not four per tuner (copies spend none)
    assert all(r["state"] == "COMPLETE" for r in rows), [r["fail_reason"] for r in rows]
    assert len({r["tuner"] for r in rows}) == 2  # both tuners measured, into one storage
    labels = [r["baseline"] for r in rows if r["baseline"]]
    assert sorted(labels) == sorted(set(labels)) and len(labels) == 3  # baselines enqueued once

    # the whole config: the batching guide's baseline (queue 1,000,000) and a searched config
    # (queue 100) may share the other three
    keys = (
        "enable_batching",
        "max_batch_size",
        "batch_timeout_micros",
        "num_batch_threads",
        "max_enqueued_batches",
    )
    configs = [tuple(r[k] for k in keys) for r in measured]
    assert len(configs) == len(set(configs))  # no config measured twice
    for r in rows:
        folder = results / "shared" / "trials" / f"{int(r['number']):04d}"
        if r["duplicate_of"]:  # a repeat takes the figures of the trial it repeats
            twin = rows[int(r["duplicate_of"])]
            assert r["items_per_s"] == twin["items_per_s"] and not folder.exists()
            continue
        doc = json.loads((folder / "measurement.json").read_text())
        assert doc["items_per_s"] > 0
        workers = json.loads((folder / "load" / "samples" / "workers.json").read_text())
        assert len(workers["workers"]) == 2  # distributed load: two Locust workers per trial

    # one report holds every tuner's trials
    md = (results / "shared" / "report.md").read_text()
    for r in rows:
        assert f"\n| {r['number']} | {r['state']} |" in md, f"trial {r['number']} not in report.md"

    # the winner step ran once, in one tuner
    assert sum("best parameters:" in out for out in outs) == 1, outs
    assert (results / "shared" / "summary.json").exists()

    import optuna

    study = optuna.load_study(study_name="shared", storage=storage.open_storage(postgres_url))
    assert len(study.trials) == len(rows)
    assert len(study.user_attrs["tuners"]) == 2


def test_storage_urls_are_checked_and_locks_exclude(tmp_path):
    assert storage.kind("sqlite:///x.db") == "sqlite"
    assert storage.kind("postgresql://u:p@h/db") == "postgresql"
    assert storage.kind(f"journal:{tmp_path}/s.journal") == "journal"
    assert storage.redact("postgresql://u:secret@h:5432/db") == "postgresql://u:***@h:5432/db"
    with pytest.raises(ConfigError, match="not a storage URL"):
        storage.kind("/tmp/study.db")
    with pytest.raises(ConfigError, match="cannot open the study storage"):
        storage.open_storage("sqlite:////nonexistent-dir/x/study.db")

    url = f"journal:{tmp_path}/s.journal"
    import optuna

    s = optuna.create_study(study_name="j", storage=storage.open_storage(url))
    s.enqueue_trial({"x": 1})
    assert len(optuna.load_study(study_name="j", storage=storage.open_storage(url)).trials) == 1
    a, b = storage.StudyLock(url, "j"), storage.StudyLock(url, "j")
    with a.hold("winner", wait=False) as got_a:
        with b.hold("winner", wait=False) as got_b:
            assert got_a and not got_b
    with b.hold("winner", wait=False) as got_b:
        assert got_b


def test_postgresql_locks_exclude_across_connections(postgres_url):
    a, b = storage.StudyLock(postgres_url, "x"), storage.StudyLock(postgres_url, "x")
    try:
        with a.hold("winner", wait=False) as got_a:
            with b.hold("winner", wait=False) as got_b:
                assert got_a and not got_b
            with b.hold("ask", wait=False) as got_ask:
                assert got_ask  # another lock of the same study is free
        with b.hold("winner", wait=False) as got_b:
            assert got_b
    finally:
        a.close()
        b.close()
