"""The wheel, as CI ships it: built from the sources, installed into fresh virtual environments
(wheelenv.py says how the dependencies get there in bounded time), run from an empty directory.

Without the server extra the package runs load without TensorFlow (its help, the worker, the
locustfiles); with it, ``harness tune --trials 2`` runs the default study end to end from the
files the wheel carries (the bundled experiment, the locustfiles, the reference server).
"""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import pytest

from tests.packaging.wheelenv import build_wheel, clean_env, harness_file, make_venv

SHORT = [
    "--set", "load.warmup_s=0.5", "--set", "load.window_s=1", "--set", "load.min_windows=2",
    "--set", "load.max_windows=2", "--set", "study.top_k=1", "--set", "study.repeats=1",
]  # fmt: skip


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    return build_wheel(tmp_path_factory.getbasetemp() / "wheel")


def harness(venv_python: Path, cwd: Path, *argv: str, timeout: float = 120):
    return subprocess.run(
        [str(venv_python.parent / "harness"), *argv],
        capture_output=True, text=True, timeout=timeout, cwd=cwd, env=clean_env(),
    )  # fmt: skip


def test_the_wheel_carries_the_experiments_locustfiles_and_native_sources(wheel):
    import zipfile

    names = set(zipfile.ZipFile(wheel).namelist())
    assert "harness/experiments/default.toml" in names
    assert "harness/experiments/batching/cpu_start.txt" in names
    assert "harness/locustfiles/grpc.py" in names and "harness/locustfiles/rest.py" in names
    assert "harness/refserver/native/build.sh" in names
    assert not any(n.startswith("tests/") or "/native/build/" in n for n in names)


def test_without_the_server_extra_load_runs_without_tensorflow(wheel, tmp_path):
    python = make_venv(tmp_path / "venv", wheel, server=False)
    assert harness_file(python).is_relative_to(tmp_path / "venv")  # the wheel's, not the checkout's
    no_tf = subprocess.run(
        [str(python), "-c", "import tensorflow"], capture_output=True, text=True, env=clean_env()
    )
    assert no_tf.returncode == 1 and "No module named 'tensorflow'" in no_tf.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    for argv in (["run", "--help"], ["worker", "--help"], ["tune", "--help"]):
        r = harness(python, empty, *argv)
        assert r.returncode == 0, (argv, r.stderr[-2000:])
        assert "usage: harness" in r.stdout
    r = harness(python, empty, "locustfile", "grpc")
    assert r.returncode == 0, r.stderr
    locustfile = Path(r.stdout.strip().splitlines()[-1])
    assert locustfile.is_file() and locustfile.is_relative_to(tmp_path / "venv")
    # the path it prints is one `locust -f` takes: the file imports without TensorFlow
    imported = subprocess.run(
        [str(python), "-c", f"import runpy, sys; runpy.run_path({str(locustfile)!r}); "
         "print('tensorflow' in sys.modules)"],
        capture_output=True, text=True, env=clean_env(), cwd=empty, timeout=120,
    )  # fmt: skip
    assert imported.returncode == 0, imported.stderr[-2000:]
    assert imported.stdout.strip().splitlines()[-1] == "False"
    assert list(empty.iterdir()) == []  # help and the locustfile path write nothing


def test_tune_two_trials_from_an_empty_directory(wheel, tmp_path):
    python = make_venv(tmp_path / "venv", wheel, server=True)
    assert harness_file(python).is_relative_to(tmp_path / "venv")
    work = tmp_path / "work"
    work.mkdir()
    # an SLO that the guide's start meets even on a slow machine, so that the gain over batching
    # off is always stated (with nothing feasible the tune ends with exit code 3 and no gain line)
    r = harness(python, work, "tune", "--trials", "2", "--slo-p99-ms", "5000", *SHORT, timeout=400)
    assert r.returncode in (0, 3), r.stderr[-3000:]  # 3: ran, no config met the SLO
    study = work / "results" / "ranker-grpc"
    summary = json.loads((study / "summary.json").read_text())
    assert summary["exit_code"] == r.returncode
    with open(study / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    done = [row for row in rows if row["state"] == "COMPLETE"]  # the rest queued, not run
    assert [row["baseline"] for row in done] == ["batching off", "batching guide CPU start"]
    assert all(row["state"] == "WAITING" for row in rows if row not in done)
    assert summary["server"].startswith("the reference server (")
    assert f"measured on {summary['server']}" in r.stdout
    assert "the throughput of batching off" in r.stdout or "winner is batching off" in r.stdout
    for name in ("experiment.toml", "environment.json", "report.html", "deploy/docker-compose.yml"):
        assert (study / name).is_file(), name
    assert (work / "models" / "ranker" / "1" / "saved_model.pb").is_file()  # exported here
    assert "Traceback" not in r.stderr and "oneDNN" not in r.stdout + r.stderr


@pytest.mark.parametrize("protocol", ["grpc", "rest"])
def test_without_the_server_extra_harness_run_loads_an_external_server(
    wheel, tmp_path, start_server, protocol
):
    """The load machine's install: no TensorFlow, the signature from the server itself, the
    user's string-input model and REST-body payload (tests/e2e/usermodel.py)."""
    from tests.e2e import usermodel

    python = make_venv(tmp_path / "venv", wheel, server=False)
    model = usermodel.export(tmp_path / "query_scorer")
    payload = usermodel.write_payload(tmp_path / "request.json")
    server = start_server(model, name="query_scorer")  # the suite's reference server
    work = tmp_path / "work"
    work.mkdir()
    r = harness(
        python, work, "run", "--backend", "external", "--grpc-target", server.grpc_target,
        "--rest-url", server.url, "--model-name", "query_scorer", "--protocol", protocol,
        "--payload", str(payload), "--users", "2", "--request-sizes", "1:50,3:50",
        "--warmup", "0.5", "--window", "1", "--max-windows", "2", "--load-cpus", "1",
        "--workdir", str(work / "run"), "--json",
        timeout=180,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["ok"] > 0 and result["errors"] == {} and result["items_per_s"] > 0, result
