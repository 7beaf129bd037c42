"""Several models in one server: one global batching file, and per-model batching_params.pbtxt.

Real SavedModels (the demo MLP, copied under three names, and the ranker) behind one
``--model_config_file``, on real gRPC and REST sockets, on each request path.
"""

import json
import os
import shutil
import time

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from harness.refserver import batch_trace
from tests.conftest import RefServer, copy_model, metric_value
from tests.refserver.test_server_batching import concurrently, params

PROC = ":tensorflow:serving:batching_session:processed_batch_size"
QUEUING = ":tensorflow:serving:batching_session:queuing_latency"
MODEL_IN = ":refserver:batching_session:input_batch_size"
MODEL_PROC = ":refserver:batching_session:processed_batch_size"
OVERSIZE = "Task size 5 is larger than maximum input batch size 4"


def rows(n: int, width: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, width), dtype=np.float32)


def rest(server, model: str, x: np.ndarray) -> requests.Response:
    return requests.post(
        f"{server.url}/v1/models/{model}:predict",
        data=json.dumps({"instances": x.tolist()}),
        timeout=30,
    )


def grpc_predict(server, model: str, x: np.ndarray, name: str = "x"):
    req = predict_pb2.PredictRequest()
    req.model_spec.name = model
    req.inputs[name].CopyFrom(tf.make_tensor_proto(x))
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        return stub.Predict(req, timeout=30)


def write_config(path, models: dict) -> str:
    entries = "".join(
        f'  config {{ name: "{name}" base_path: "{base}" model_platform: "tensorflow" }}\n'
        for name, base in models.items()
    )
    path.write_text(f"model_config_list {{\n{entries}}}\n")
    return str(path)


@pytest.fixture
def serve(tmp_path):
    """Start a server of several models: ``serve({name: base}, global_file_text, per_model=...)``."""
    servers = []
    mon = tmp_path / "monitoring.txt"
    mon.write_text('prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }\n')

    def start(models: dict, global_params: str, *, per_model: bool, poll: int = 0):
        n = len(servers)
        gfile = tmp_path / f"global{n}.txt"
        gfile.write_text(global_params)
        args = [
            f"--model_config_file={write_config(tmp_path / f'models{n}.config', models)}",
            f"--monitoring_config_file={mon}",
            "--enable_batching",
            f"--batching_parameters_file={gfile}",
            f"--file_system_poll_wait_seconds={poll}",
        ]
        if per_model:
            args.append("--enable_per_model_batching_parameters")
        server = RefServer(args, tmp_path / f"server{n}.log")
        servers.append(server)
        for name in models:
            server.wait_ready(name, timeout=120)
        return server

    yield start
    for s in servers:
        s.stop()


@pytest.fixture
def three_mlps(tmp_path, mlp_base):
    """Three copies of the MLP (each its own SavedModel directory, so each can hold a file)."""
    return {name: copy_model(mlp_base, tmp_path / name) for name in ("a", "b", "c")}


def test_one_global_file_serves_two_models_with_a_queue_each(serve, tmp_path, mlp_base, model_root):
    from harness.models.export import ensure

    ranker = ensure("ranker", model_root / "ranker").parent  # ensure gives the version directory
    s = serve(
        {"mlp": mlp_base, "ranker": ranker},
        params(max_batch_size=4, batch_timeout_micros=5_000_000, num_batch_threads=1),
        per_model=False,
    )
    calls = [(s, "mlp", rows(1, 16, i)) for i in range(4)]
    calls += [(s, "ranker", rows(1, 512, i)) for i in range(4)]
    t0 = time.monotonic()
    out = concurrently(rest, calls)
    elapsed = time.monotonic() - t0
    assert [r.status_code for r in out] == [200] * 8, [r.text for r in out]
    assert elapsed < 5, "each model's queue fills to max_batch_size=4 without the 5 s timeout"
    m = s.metrics()
    # one full batch per model: the models never share a batch
    for model in ("mlp", "ranker"):
        assert metric_value(m, MODEL_PROC + "_count", model_name=model) == 1
        assert metric_value(m, MODEL_PROC + "_sum", model_name=model) == 4
        assert metric_value(m, MODEL_IN + "_sum", model_name=model) == 4
    assert metric_value(m, PROC + "_count") == 2 and metric_value(m, PROC + "_sum") == 8
    # the global max applies to both models
    too_big = rest(s, "ranker", rows(5, 512))
    assert too_big.status_code == 400 and OVERSIZE in too_big.json()["error"]


def test_per_model_files_set_each_queue_and_the_pool_stays_global(
    serve, tmp_path, three_mlps, monkeypatch
):
    a, b = three_mlps["a"], three_mlps["b"]
    # a's file also names a pool and a size of its own: neither is used
    (a / "1" / "batching_params.pbtxt").write_text(
        params(max_batch_size=4, batch_timeout_micros=0, num_batch_threads=6)
        + 'thread_pool_name { value: "own_pool" }\n'
    )
    (b / "1" / "batching_params.pbtxt").write_text(
        params(max_batch_size=32, batch_timeout_micros=0, allowed_batch_sizes=[8, 32])
    )
    trace = tmp_path / "trace.json"
    monkeypatch.setenv(batch_trace.ENV, str(trace))
    s = serve(
        {"a": a, "b": b},
        params(max_batch_size=2, num_batch_threads=1) + 'thread_pool_name { value: "shared" }\n',
        per_model=True,
    )
    # a: its own max of 4, over gRPC and REST, with TF Serving's message naming 4
    with pytest.raises(grpc.RpcError) as err:
        grpc_predict(s, "a", rows(5))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert OVERSIZE in err.value.details()
    r = rest(s, "a", rows(5))
    assert r.status_code == 400 and OVERSIZE in r.json()["error"]
    # the global max of 2 is not a's: 3 rows pass; b takes 5 rows under its own 32
    assert rest(s, "a", rows(3)).status_code == 200
    got = grpc_predict(s, "b", rows(5))
    assert [d.size for d in got.outputs["y"].tensor_shape.dim] == [5, 4]
    m = s.metrics()
    assert metric_value(m, MODEL_PROC + "_sum", model_name="a") == 3
    # b pads to its own allowed size 8 (the global file has none)
    assert metric_value(m, MODEL_IN + "_sum", model_name="b") == 5
    assert metric_value(m, MODEL_PROC + "_sum", model_name="b") == 8
    # the queues wait in the global file's pool, by its name, never in a's own
    assert metric_value(m, QUEUING + "_count", thread_pool_name="shared") == 2
    assert "own_pool" not in m
    # load both models at once: every batch runs on the global pool's one thread, one at a time
    calls = [(s, "a", rows(1 + i % 4, 16, i)) for i in range(40)]
    calls += [(s, "b", rows(1 + i % 8, 16, i)) for i in range(40)]
    out = concurrently(rest, calls)
    assert all(r.status_code == 200 for r in out)
    s.stop()
    records = batch_trace.load(next(tmp_path.glob("trace.json.*")))
    assert len(records) >= 10
    assert {r["thread"] for r in records} == {0}
    spans = sorted((r["taken"], r["taken"] + r["batch_wall_s"]) for r in records)
    assert all(nxt[0] >= cur[1] - 1e-4 for cur, nxt in zip(spans, spans[1:]))


def test_without_the_flag_the_files_are_not_read(serve, three_mlps):
    a = three_mlps["a"]
    (a / "1" / "batching_params.pbtxt").write_text("not a text proto {{{\n")
    s = serve({"a": a}, params(max_batch_size=4), per_model=False)
    r = rest(s, "a", rows(5))
    assert r.status_code == 400 and OVERSIZE in r.json()["error"]


def test_a_version_without_a_file_is_served_unbatched(serve, three_mlps):
    """TF Serving does not fall back to the global file: no file, no batching for that model."""
    a, c = three_mlps["a"], three_mlps["c"]
    (a / "1" / "batching_params.pbtxt").write_text(params(max_batch_size=4))
    s = serve({"a": a, "c": c}, params(max_batch_size=2), per_model=True)
    assert rest(s, "a", rows(5)).status_code == 400
    # c has no file: no size limit (neither the global 2 nor a's 4), no queue, no batch metrics
    big = rest(s, "c", rows(40))
    assert big.status_code == 200 and len(big.json()["predictions"]) == 40
    assert grpc_predict(s, "c", rows(7)).outputs["y"].tensor_shape.dim[0].size == 7
    assert rest(s, "a", rows(2)).status_code == 200
    m = s.metrics()
    assert metric_value(m, MODEL_PROC + "_count", model_name="c") == 0
    assert metric_value(m, MODEL_PROC + "_count", model_name="a") == 1
    assert metric_value(m, PROC + "_count") == 1


def run_server(*args, timeout=120):
    import subprocess
    import sys

    from tests.conftest import ROOT

    return subprocess.run(
        [sys.executable, "-m", "harness.refserver", "--port=0", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=dict(os.environ),
    )


@pytest.mark.parametrize(
    "text, fragments",
    [
        ("max_batch_size { value: 4 \n", ["Invalid protobuf file: '{file}'", "fix the file"]),
        ("max_batch { value: 4 }\n", ["Invalid protobuf file: '{file}'", "did you mean"]),
        (
            "max_batch_size { value: 8 }\nallowed_batch_sizes: 2\nallowed_batch_sizes: 4\n",
            [
                "{file}: Last entry in allowed_batch_sizes must match max_batch_size; "
                "last entry was 4; expected 8"
            ],
        ),
    ],
)
def test_a_bad_file_stops_start_up_in_one_line(tmp_path, three_mlps, text, fragments):
    a, b = three_mlps["a"], three_mlps["b"]
    bad = b / "1" / "batching_params.pbtxt"
    bad.write_text(text)
    (tmp_path / "global.txt").write_text(params(max_batch_size=64))
    r = run_server(
        f"--model_config_file={write_config(tmp_path / 'models.config', {'a': a, 'b': b})}",
        "--enable_batching",
        f"--batching_parameters_file={tmp_path / 'global.txt'}",
        "--enable_per_model_batching_parameters",
    )
    assert r.returncode != 0
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, r.stderr[-2000:]
    for fragment in fragments:
        assert fragment.format(file=bad) in errors[0], errors[0]


def test_a_new_version_with_a_bad_file_leaves_the_old_one_serving(tmp_path, three_mlps, serve):
    a = three_mlps["a"]
    (a / "1" / "batching_params.pbtxt").write_text(params(max_batch_size=4))
    s = serve({"a": a}, params(max_batch_size=2), per_model=True, poll=1)
    # a new version whose file does not parse: its load fails, version 1 keeps serving
    staging = tmp_path / "staging"
    shutil.copytree(a / "1", staging)
    (staging / "batching_params.pbtxt").write_text("max_batch_size: {\n")
    staging.rename(a / "2")
    status = {}
    end = time.monotonic() + 30
    while time.monotonic() < end:
        status = requests.get(f"{s.url}/v1/models/a", timeout=5).json()
        two = [v for v in status["model_version_status"] if v["version"] == "2"]
        if two and two[0]["state"] == "END":
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"version 2 never ended: {status}\n{s.log()[-2000:]}")
    assert "Invalid protobuf file" in two[0]["status"].get("error_message", ""), two
    r = rest(s, "a", rows(5))
    assert r.status_code == 400 and OVERSIZE in r.json()["error"]
    assert rest(s, "a", rows(3)).status_code == 200
