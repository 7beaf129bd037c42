"""Locust in master/worker mode against a real reference server on 127.0.0.1.

Local workers are real `locust --worker` processes; the "remote" worker is `harness worker`, a
separate process that reaches the harness only through Locust's message channel (its samples
are shipped to the master, never written by the worker). Bounded in time: windows of ~1 s.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from harness.batching import BatchingParameters
from harness.config import LoadConfig
from harness.load.distributed import WorkerLost
from harness.load.runner import run_load
from harness.servers import ProcessBackend, ServerSpec

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(mlp_base, tmp_path_factory):
    backend = ProcessBackend("reference")
    s = backend.start(
        ServerSpec(
            model_name="m",
            model_dir=mlp_base,
            cpus=(0,),
            batching=BatchingParameters(max_batch_size=8, num_batch_threads=1),
        ),
        tmp_path_factory.mktemp("server"),
    )
    yield s
    s.stop()
    backend.close()


FAST = dict(warmup_s=1.0, window_s=1.2, min_windows=2, max_windows=3, extra_windows=0)
LOAD_CPUS = (1,)


def _worker_files(samples_dir) -> set[str]:
    return {p.name.split("-")[1] for p in samples_dir.glob("samples-*.npz")}


def test_local_workers_ship_samples_to_the_master_and_are_merged(server, tmp_path):
    spec = LoadConfig(protocol="grpc", users=8, processes=2, request_sizes="1:80,16:20", **FAST)
    r = run_load(server.endpoint, spec, tmp_path, cpus=LOAD_CPUS, check_server=server.check_alive)
    assert _worker_files(tmp_path / "samples") == {"w0", "w1"}  # written by the master, per worker
    assert [w["worker"] for w in r.workers] == [0, 1]  # Locust's worker indexes
    assert all(w["rows"] > 50 for w in r.workers)  # both workers sent traffic
    assert all(w["cpu"] is not None and 0 < w["cpu"] < 1.5 for w in r.workers)
    m = r.measurement
    assert m.ok > 100 and m.errors.get("INVALID_ARGUMENT", 0) > 0
    assert r.oversize and r.oversize[0]["size"] == 16 and r.oversize[0]["limit"] == 8
    status = json.loads((tmp_path / "samples" / "workers.json").read_text())
    assert status["expected"] == 2 and len(status["workers"]) == 2
    assert r.summary()["workers"] == r.workers


def test_open_loop_rate_is_shared_across_workers(server, tmp_path):
    spec = LoadConfig(protocol="rest", rate=150, arrivals="constant", processes=2, **FAST)
    r = run_load(server.endpoint, spec, tmp_path, cpus=LOAD_CPUS, check_server=server.check_alive)
    # each worker sends half the rate: the total, not twice it
    assert 150 * 0.85 < r.measurement.throughput_rps < 150 * 1.15
    assert len(r.workers) == 2


def _locust_workers_under(path) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["cmdline", "cwd"]):
        try:
            if "--worker" in (p.info["cmdline"] or []) and p.info["cwd"] == str(path):
                out.append(p)
        except psutil.Error:
            pass
    return out


def test_a_worker_killed_mid_window_invalidates_the_measurement(server, tmp_path):
    spec = LoadConfig(protocol="grpc", users=4, processes=2, **{**FAST, "max_windows": 6})
    outcome = {}

    def run():
        try:
            outcome["result"] = run_load(
                server.endpoint, spec, tmp_path, cpus=LOAD_CPUS, check_server=server.check_alive
            )
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            outcome["error"] = exc

    t = threading.Thread(target=run)
    t.start()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not (tmp_path / "samples" / "workers.json").exists():
        time.sleep(0.2)
    time.sleep(2.5)  # past the warm-up: inside a measured window
    victims = _locust_workers_under(tmp_path)
    assert len(victims) == 2
    os.kill(victims[0].pid, signal.SIGKILL)
    t.join(120)
    assert not t.is_alive()
    assert "result" not in outcome, "a run that lost a worker must not produce a measurement"
    err = outcome["error"]
    assert isinstance(err, WorkerLost), repr(err)
    assert "invalid" in str(err)
    time.sleep(0.5)
    assert _locust_workers_under(tmp_path) == []  # the surviving worker was stopped too


def test_harness_run_with_a_remote_worker_started_by_harness_worker(mlp_base, tmp_path):
    port = free_port()
    worker_dir = tmp_path / "elsewhere"
    worker_dir.mkdir()
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "worker",
            "--master-host",
            "127.0.0.1",
            "--master-port",
            str(port),
            "--cpus",
            "1",
        ],
        cwd=worker_dir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "harness.cli",
                "run",
                "--model-dir",
                str(mlp_base),
                "--model-name",
                "m",
                "--users",
                "4",
                "--max-batch-size",
                "4",
                "--request-sizes",
                "1:80,6:20",
                "--warmup",
                "0.5",
                "--window",
                "1",
                "--max-windows",
                "2",
                "--processes",
                "1",
                "--remote-workers",
                "1",
                "--master-port",
                str(port),
                "--server-cpus",
                "0",
                "--load-cpus",
                "1",
                "--workdir",
                str(tmp_path / "run"),
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=180,
            cwd=ROOT,
        )
        assert out.returncode == 0, out.stderr[-3000:]
        doc = json.loads(out.stdout.strip().splitlines()[-1])
        assert len(doc["workers"]) == 2 and all(w["rows"] > 0 for w in doc["workers"])
        assert doc["ok"] > 0 and doc["errors"]["INVALID_ARGUMENT"] > 0
        assert doc["oversize"][0]["limit"] == 4
        assert list(worker_dir.iterdir()) == [] or not any(worker_dir.rglob("samples-*"))
        assert worker.poll() is None  # it waits for the next master
    finally:
        worker.send_signal(signal.SIGINT)
        text, _ = worker.communicate(timeout=30)
    assert worker.returncode == 0, text[-2000:]
    assert "connect" in text  # it said where it connects
