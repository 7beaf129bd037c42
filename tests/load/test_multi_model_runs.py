"""Two demo models in one reference server, end to end: ``harness run`` with a traffic split
(the split kept within a few points, each model's figures apart, each request's record naming
its model), a short ``harness tune`` with shared parameters (each model judged apart), and
per-model batching (each model's batching_params.pbtxt honoured) once the reference server
supports --enable_per_model_batching_parameters. Real servers, real Locust, 127.0.0.1 only,
bounded in time: run them under the machine lock."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from harness.batching import BatchingParameters
from harness.config import LoadConfig
from harness.load.runner import run_load
from harness.samples import Samples
from harness.servers import ProcessBackend, ServerSpec
from harness.servers.staging import ServedModel
from tests.conftest import ROOT

SHORT = ["--set", "load.warmup_s=0.5", "--set", "load.window_s=1.5", "--set", "load.min_windows=2",
         "--set", "load.max_windows=2", "--set", "load.extra_windows=0", "--set", "load.users=16"]  # fmt: skip


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    from harness.models.export import export

    root = tmp_path_factory.mktemp("models")
    for name in ("ranker", "mlp"):
        export(name, root / name, 1)
    return root


def harness(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT,
    )  # fmt: skip


def test_harness_run_splits_traffic_and_reports_each_model(models_dir, tmp_path):
    r = harness(
        "run", "--experiment", "two_models", "--models-dir", str(models_dir), "--workdir",
        str(tmp_path / "run"), "--json", "--max-batch-size", "16", "--num-batch-threads", "1", *SHORT,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    models = out["models"]
    assert list(models) == ["ranker", "mlp"]
    total = sum(m["requests"] for m in models.values())
    assert total == out["requests"] and total > 300
    share = models["ranker"]["requests"] / total
    assert abs(share - 0.70) < 0.04, share  # the split, within a few points
    for m in models.values():
        assert m["ok"] > 50 and m["rejection_rate"] == 0
        assert 0 < m["p50_ms"] <= m["p99_ms"]
    assert abs(sum(m["items_per_s"] for m in models.values()) - out["items_per_s"]) < 1e-6
    # every request's record names its model: 0 the ranker, 1 the mlp, in the split's order
    samples = Samples.read(tmp_path / "run" / "load-0" / "samples")
    assert set(np.unique(samples["model"])) == {0, 1}
    config = (tmp_path / "run" / "server" / "models.config").read_text()
    assert 'name: "ranker"' in config and 'name: "mlp"' in config
    cmd = (tmp_path / "run" / "server" / "server.cmd").read_text()
    assert "--model_config_file=" in cmd and "--model_base_path" not in cmd


def test_a_short_tune_judges_each_model_with_shared_parameters(models_dir, tmp_path):
    r = harness(
        "tune", "--experiment", "two_models", "--models-dir", str(models_dir), "--results-dir",
        str(tmp_path / "res"), "--study", "t", "--trials", "2", "--no-report",
        "--set", "study.baselines=false", "--set", "study.top_k=1", "--set", "study.repeats=1",
        "--set", "search.max_batch_size=[8, 32]", "--set", "search.num_batch_threads=[1]", *SHORT,
        timeout=500,
    )  # fmt: skip
    assert r.returncode in (0, 3), r.stderr[-3000:] + r.stdout[-2000:]
    with open(tmp_path / "res" / "t" / "trials.csv") as f:
        rows = [row for row in csv.DictReader(f) if row["state"] == "COMPLETE"]
    assert len(rows) >= 1
    for row in rows:
        assert float(row["ranker.share"]) == pytest.approx(0.7, abs=0.05)
        assert float(row["mlp.items_per_s"]) > 0 and float(row["ranker.p99_ms"]) > 0
        both = row["ranker.meets_slo"] == "True" and row["mlp.meets_slo"] == "True"
        assert (row["feasible"] == "True") == both  # feasible only when every model is
        assert "ranker.max_batch_size" not in row  # one shared file
    summary = json.loads((tmp_path / "res" / "t" / "summary.json").read_text())
    best = summary["candidates"][0]
    assert set(json.loads(best["models"]) if isinstance(best["models"], str) else best["models"]) == {"ranker", "mlp"}
    from harness.report.study import build

    report = build(tmp_path / "res" / "t")["markdown"].read_text()
    section = report.split("Each model", 1)[1].split("Rejections", 1)[0]
    assert "met its SLO" in section and "ranker" in section and "mlp" in section


def test_per_model_batching_parameters_are_honoured_end_to_end(models_dir, tmp_path):
    """Two models batched by their own files: the ranker at most 2 rows a batch, the mlp up
    to 16; requests of 4 rows are refused by the ranker only (its max_batch_size is 2), so the
    server read each model's batching_params.pbtxt from the staged version directory."""
    backend = ProcessBackend("reference")
    own = {
        "ranker": BatchingParameters(max_batch_size=2, batch_timeout_micros=0, max_enqueued_batches=64),
        "mlp": BatchingParameters(max_batch_size=16, batch_timeout_micros=1000, max_enqueued_batches=64),
    }  # fmt: skip
    spec = ServerSpec(
        model_name="ranker", model_dir=models_dir / "ranker", cpus=(0,),
        batching=BatchingParameters(num_batch_threads=1, thread_pool_name="batch_threads"),
        models=tuple(ServedModel(name=n, base_path=models_dir / n, batching=b) for n, b in own.items()),
    )  # fmt: skip
    server = backend.start(spec, tmp_path / "server")
    try:
        load = LoadConfig(users=8, request_sizes="4", traffic="ranker:50,mlp:50", warmup_s=1,
                          window_s=2, min_windows=2, max_windows=2, extra_windows=0)  # fmt: skip
        run = run_load(server.endpoint, load, tmp_path / "load", cpus=(1,),
                       check_server=server.check_alive)  # fmt: skip
    finally:
        server.stop()
        backend.close()
    assert "--enable_per_model_batching_parameters" in (tmp_path / "server" / "server.cmd").read_text()
    assert run.models["ranker"].errors.get("INVALID_ARGUMENT", 0) == run.models["ranker"].requests
    assert run.models["mlp"].ok == run.models["mlp"].requests > 0


def test_a_short_per_model_tune_writes_each_models_winning_file(models_dir, tmp_path):
    r = harness(
        "tune", "--experiment", "two_models", "--models-dir", str(models_dir), "--results-dir",
        str(tmp_path / "res"), "--study", "t", "--trials", "2", "--no-report",
        "--set", "search.per_model_batching=true", "--set", "study.baselines=false",
        "--set", "study.top_k=1", "--set", "study.repeats=1", "--set", "search.batch_timeout_micros=[0, 1000]",
        "--set", "search.max_batch_size=[8, 32]", "--set", "search.num_batch_threads=[1]", *SHORT,
        timeout=500,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:] + r.stdout[-2000:]
    with open(tmp_path / "res" / "t" / "trials.csv") as f:
        rows = [row for row in csv.DictReader(f) if row["state"] == "COMPLETE"]
    assert rows and all(row["ranker.max_batch_size"] in ("8", "32") for row in rows)
    trial = tmp_path / "res" / "t" / "trials" / f"{int(rows[0]['number']):04d}" / "server"
    assert "--enable_per_model_batching_parameters" in (trial / "server.cmd").read_text()
    staged = BatchingParameters.read(trial / "models" / "mlp" / "1" / "batching_params.pbtxt")
    assert staged.max_batch_size == int(rows[0]["mlp.max_batch_size"])
    assert not (models_dir / "mlp" / "1" / "batching_params.pbtxt").exists()  # the user's untouched
    out = tmp_path / "res" / "t"
    assert BatchingParameters.read(out / "best_batching_parameters.txt").num_batch_threads == 1
    for name in ("ranker", "mlp"):
        assert BatchingParameters.read(out / "best_batching_params" / name / "batching_params.pbtxt").max_batch_size in (8, 32)
