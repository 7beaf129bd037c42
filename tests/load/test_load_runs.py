"""Real Locust processes against a real reference server on 127.0.0.1: bounded in time."""

import json
import subprocess
import sys

import pytest

from harness.batching import BatchingParameters
from harness.config import LoadConfig
from harness.load.runner import run_load
from harness.servers import ProcessBackend, ServerSpec
from tests.conftest import ROOT


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


FAST = dict(warmup_s=1.0, window_s=1.5, min_windows=3, max_windows=4, extra_windows=0)
LOAD_CPUS = (1,)


def test_closed_loop_grpc_counts_rejections_and_sees_batches(server, tmp_path):
    r = run_load(
        server.endpoint,
        LoadConfig(protocol="grpc", users=8, request_sizes="1:60,4:30,16:10", **FAST),
        tmp_path,
        cpus=LOAD_CPUS,
        check_server=server.check_alive,
    )
    m = r.measurement
    assert m.ok > 100 and m.throughput_rps > 50
    assert 0 < m.p50_ms <= m.p90_ms <= m.p99_ms <= m.p999_ms
    assert m.errors.get("INVALID_ARGUMENT", 0) > 0  # the 16-row requests exceed max_batch_size 8
    assert set(m.errors) == {"INVALID_ARGUMENT"}
    assert r.oversize and r.oversize[0]["size"] == 16 and r.oversize[0]["limit"] == 8
    assert 0.05 < m.rejection_rate < 0.2
    assert r.server["batches"] > 0 and 1 <= r.server["mean_batch_size"] <= 8
    assert len(r.windows) >= 3
    summary = r.summary()
    for key in (
        "throughput_rps",
        "items_per_s",
        "p50_ms",
        "p90_ms",
        "p99_ms",
        "p999_ms",
        "requests",
        "errors",
        "stable",
    ):
        assert key in summary


def test_open_loop_rest_holds_the_rate(server, tmp_path):
    r = run_load(
        server.endpoint,
        LoadConfig(protocol="rest", rate=150, arrivals="constant", **FAST),
        tmp_path,
        cpus=LOAD_CPUS,
        check_server=server.check_alive,
    )
    m = r.measurement
    assert m.errors == {}
    assert 150 * 0.85 < m.throughput_rps < 150 * 1.15
    assert m.items_per_s == m.throughput_rps


def test_locustfile_runs_by_hand(server, tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "locust",
            "-f",
            str(ROOT / "locustfiles" / "grpc.py"),
            "--headless",
            "--host",
            f"grpc://{server.endpoint.grpc_target}",
            "-u",
            "2",
            "-r",
            "2",
            "--run-time",
            "3s",
            "--model-name",
            "m",
            "--request-sizes",
            "2",
            "--only-summary",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Predict[2]" in out.stdout + out.stderr


def test_harness_run_json(mlp_base, tmp_path):
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
            "--protocol",
            "grpc",
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
            "--workdir",
            "run",  # relative, as users type it: must not land inside Locust's own cwd
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    assert doc["ok"] > 0 and doc["errors"]["INVALID_ARGUMENT"] > 0
    assert doc["oversize"][0] == {"size": 6, "limit": 4, "count": doc["errors"]["INVALID_ARGUMENT"]}
    assert doc["server"]["batches"] > 0


def test_two_locust_processes_are_merged(server, tmp_path):
    spec = LoadConfig(protocol="grpc", users=8, processes=2, **FAST)
    r = run_load(server.endpoint, spec, tmp_path, cpus=None, check_server=server.check_alive)
    pids = {p.name.split("-")[1] for p in (tmp_path / "samples").glob("samples-*.npz")}
    assert len(pids) == 2  # one recorder per Locust worker process, read back as one record
    assert r.measurement.ok > 100


def test_server_counts_are_read_at_the_window_edges(server, tmp_path):
    """Each window's server view covers its window: the rows the server batched in it match
    the rows its requests carried (read 1.5 s late, the first window held ~1.3x its rows)."""
    r = run_load(
        server.endpoint,
        LoadConfig(
            protocol="grpc",
            users=8,
            request_sizes="1",
            warmup_s=1.0,
            window_s=3.0,
            min_windows=3,
            max_windows=3,
            extra_windows=0,  # exactly three windows, agreeing or not
        ),
        tmp_path,
        cpus=LOAD_CPUS,
        check_server=server.check_alive,
    )
    assert len(r.windows) == len(r.window_server) == 3
    for w, view in zip(r.windows, r.window_server):
        served_rows = view["batches"] * view["mean_input_batch_size"]
        sent_rows = w.items_per_s * 3.0
        assert w.ok > 100 and not w.errors
        assert 0.9 < served_rows / sent_rows < 1.1, (served_rows, sent_rows)
