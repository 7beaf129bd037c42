"""Start-up checks, version pick-up, and parallel batch threads."""

import shutil
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import requests

from tests.conftest import ROOT, copy_model


def run_server(*args, timeout=90):
    return subprocess.run(
        [sys.executable, "-m", "harness.refserver", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def test_bad_parameters_file_stops_start_up(tmp_path, mlp_base):
    params = tmp_path / "params.txt"
    params.write_text(
        "max_batch_size { value: 8 }\nallowed_batch_sizes: 2\nallowed_batch_sizes: 4\n"
    )
    r = run_server(
        f"--model_base_path={mlp_base}",
        "--port=0",
        "--enable_batching",
        f"--batching_parameters_file={params}",
    )
    assert r.returncode != 0
    assert str(params) in r.stderr
    assert (
        "Last entry in allowed_batch_sizes must match max_batch_size; last entry was 4; expected 8"
        in r.stderr
    )


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--model_base_path=/nonexistent/model"], "Could not find base path /nonexistent/model"),
        (["--model_base_path={empty}"], "No versions of servable default found under base path"),
        (
            ["--model_base_path={mlp}", "--batching_parameters_file={params}"],
            "without --enable_batching",
        ),
        ([], "no model to serve"),
        (
            [
                "--model_base_path={mlp}",
                "--tensorflow_session_parallelism=2",
                "--tensorflow_intra_op_parallelism=1",
            ],
            "Setting all three is an error",
        ),
        (
            ["--model_base_path={mlp}", "--enable_batching", "--batching_parameters_file={bogus}"],
            "has no field named 'max_batch'",
        ),
    ],
)
def test_start_up_errors_name_the_problem(tmp_path, mlp_base, args, fragment):
    (tmp_path / "empty").mkdir()
    (tmp_path / "params.txt").write_text("max_batch_size { value: 8 }\n")
    (tmp_path / "bogus.txt").write_text("max_batch { value: 8 }\n")
    args = [
        a.format(
            empty=tmp_path / "empty",
            mlp=mlp_base,
            params=tmp_path / "params.txt",
            bogus=tmp_path / "bogus.txt",
        )
        for a in args
    ]
    r = run_server(*args)
    assert r.returncode != 0
    assert fragment in r.stderr


def test_port_in_use_stops_start_up(mlp_base):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = run_server(f"--model_base_path={mlp_base}", f"--port={port}")
    assert r.returncode != 0
    assert f"cannot listen for gRPC on 127.0.0.1:{port}" in r.stderr


def test_newer_version_is_picked_up_while_running(start_server, mlp_base, tmp_path):
    base = copy_model(mlp_base, tmp_path / "model")
    s = start_server(base, extra=["--file_system_poll_wait_seconds=1"])
    row = {"instances": [[0.5] * 16]}
    before = requests.post(f"{s.url}/v1/models/m:predict", json=row, timeout=10).json()
    # publish version 2 atomically: copy beside, then rename into place
    shutil.copytree(base / "1", tmp_path / "staging")
    (tmp_path / "staging").rename(base / "2")
    deadline = time.monotonic() + 30
    states = {}
    while time.monotonic() < deadline:
        states = {
            v["version"]: v["state"]
            for v in requests.get(f"{s.url}/v1/models/m", timeout=5).json()["model_version_status"]
        }
        if states.get("2") == "AVAILABLE" and states.get("1") == "END":
            break
        time.sleep(0.2)
    assert states == {"2": "AVAILABLE", "1": "END"}
    after = requests.post(f"{s.url}/v1/models/m:predict", json=row, timeout=10)
    assert after.status_code == 200 and after.json() == before
    gone = requests.post(f"{s.url}/v1/models/m/versions/1:predict", json=row, timeout=10)
    assert gone.status_code == 404
    meta = requests.get(f"{s.url}/v1/models/m/metadata", timeout=10).json()
    assert meta["model_spec"]["version"] == "2"


def test_model_config_file_serves_several_models_with_labels(start_server, mlp_base, tmp_path):
    second = copy_model(mlp_base, tmp_path / "second")
    (second / "1").rename(second / "5")
    cfg = tmp_path / "models.config"
    cfg.write_text(
        f"""model_config_list {{
          config {{ name: "a" base_path: "{mlp_base}" model_platform: "tensorflow" }}
          config {{ name: "b" base_path: "{second}" model_platform: "tensorflow"
                   version_labels {{ key: "stable" value: 5 }} }}
        }}"""
    )
    from tests.conftest import RefServer

    s = RefServer([f"--model_config_file={cfg}"], tmp_path / "log.txt")
    try:
        s.wait_ready("a")
        row = {"instances": [[0.5] * 16]}
        assert (
            requests.post(f"{s.url}/v1/models/a:predict", json=row, timeout=10).status_code == 200
        )
        assert (
            requests.post(
                f"{s.url}/v1/models/b/labels/stable:predict", json=row, timeout=10
            ).status_code
            == 200
        )
        bad = requests.post(f"{s.url}/v1/models/b/labels/canary:predict", json=row, timeout=10)
        assert (
            bad.status_code == 400
            and "Unrecognized servable version label: canary" in bad.json()["error"]
        )
    finally:
        s.stop()


def test_batches_run_in_parallel_with_the_gil_released(mlp_base, model_root):
    """Two threads running the session overlap in time: TensorFlow releases the GIL."""
    from harness.models.export import ensure
    from harness.refserver.model import LoadedModel

    base = ensure("ranker", model_root / "ranker")
    model = LoadedModel(base, 1, intra_op=1, inter_op=2)
    sig = model.signature("serving_default")
    x = np.random.default_rng(0).random((128, 512), dtype=np.float32)
    model.run(sig, [x])
    spans = []

    def work():
        for _ in range(3):
            t0 = time.perf_counter()
            model.run(sig, [x])
            spans.append((t0, time.perf_counter()))

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    spans.sort()
    overlaps = sum(1 for a, b in zip(spans, spans[1:]) if b[0] < a[1])
    assert overlaps >= 1, spans
    model.close()


def _write_warmup(version_dir, inputs: dict, n: int) -> None:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    (version_dir / "assets.extra").mkdir()
    with tf.io.TFRecordWriter(
        str(version_dir / "assets.extra" / "tf_serving_warmup_requests")
    ) as w:
        for _ in range(n):
            req = predict_pb2.PredictRequest()
            req.model_spec.name = "m"
            for name, value in inputs.items():
                req.inputs[name].CopyFrom(tf.make_tensor_proto(value))
            w.write(
                prediction_log_pb2.PredictionLog(
                    predict_log=prediction_log_pb2.PredictLog(request=req)
                ).SerializeToString()
            )


def test_warmup_records_are_replayed_at_load(start_server, mlp_base, tmp_path):
    base = copy_model(mlp_base, tmp_path / "model")
    _write_warmup(base / "1", {"x": np.zeros((2, 16), np.float32)}, 3)
    s = start_server(base)
    assert "Number of warmup records read: 3." in s.log()


def test_bad_warmup_record_stops_start_up(mlp_base, tmp_path):
    base = copy_model(mlp_base, tmp_path / "model")
    _write_warmup(base / "1", {"nope": np.zeros((2, 16), np.float32)}, 1)
    r = run_server(f"--model_base_path={base}")
    assert r.returncode != 0
    assert (
        "warm-up of" in r.stderr and "input tensor alias not found in signature: nope" in r.stderr
    )
