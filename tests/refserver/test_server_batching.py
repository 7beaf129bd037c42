"""Batches form as TF Serving forms them: seen in the server's own metrics and in the answers."""

import json
import threading
import time

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from tests.conftest import metric_value

IN = ":tensorflow:serving:batching_session:input_batch_size"
PROC = ":tensorflow:serving:batching_session:processed_batch_size"
PAD = ":tensorflow:serving:batching_session:padding_size"
RUNS = ":tensorflow:serving:batching_session:wrapped_run_count"


def params(**kw) -> str:
    lines = []
    for k, v in kw.items():
        if k == "allowed_batch_sizes":
            lines += [f"allowed_batch_sizes: {s}" for s in v]
        else:
            lines.append(f"{k} {{ value: {str(v).lower()} }}")
    return "\n".join(lines) + "\n"


def rows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 16), dtype=np.float32)


def rest_predict(server, x: np.ndarray) -> requests.Response:
    return requests.post(
        f"{server.url}/v1/models/m:predict", data=json.dumps({"instances": x.tolist()}), timeout=30
    )


def concurrently(fn, args_list):
    results = [None] * len(args_list)

    def run(i, a):
        results[i] = fn(*a)

    threads = [threading.Thread(target=run, args=(i, a)) for i, a in enumerate(args_list)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_full_batches_form_before_the_timeout(start_server, mlp_base):
    s = start_server(
        mlp_base,
        batching=params(max_batch_size=4, batch_timeout_micros=5_000_000, num_batch_threads=1),
    )
    t0 = time.monotonic()
    out = concurrently(rest_predict, [(s, rows(1, i)) for i in range(8)])
    elapsed = time.monotonic() - t0
    assert all(r.status_code == 200 for r in out)
    m = s.metrics()
    assert metric_value(m, IN + "_count") == 2 and metric_value(m, IN + "_sum") == 8
    assert elapsed < 5, "full batches must not wait for the 5 s timeout"


def test_timeout_closes_a_partial_batch(start_server, mlp_base):
    s = start_server(
        mlp_base,
        batching=params(max_batch_size=64, batch_timeout_micros=400_000, num_batch_threads=1),
    )
    t0 = time.monotonic()
    out = concurrently(rest_predict, [(s, rows(1, i)) for i in range(3)])
    elapsed = time.monotonic() - t0
    assert all(r.status_code == 200 for r in out)
    m = s.metrics()
    assert metric_value(m, IN + "_count") == 1 and metric_value(m, IN + "_sum") == 3
    assert elapsed >= 0.4
    # the wait in the queue is recorded: all three waited about the timeout (in microseconds)
    q = ":tensorflow:serving:batching_session:queuing_latency"
    assert metric_value(m, q + "_count", thread_pool_name="shared_batch_scheduler") == 3
    assert metric_value(m, q + "_sum", thread_pool_name="shared_batch_scheduler") > 3 * 300_000


def test_batched_answers_equal_unbatched_ones_with_padding(start_server, mlp_base):
    plain = start_server(mlp_base)
    xs = [rows(1, i) for i in range(3)]
    expected = [rest_predict(plain, x).json()["predictions"] for x in xs]
    s = start_server(
        mlp_base,
        batching=params(
            max_batch_size=8,
            batch_timeout_micros=400_000,
            num_batch_threads=1,
            allowed_batch_sizes=[2, 4, 8],
        ),
    )
    got = [r.json()["predictions"] for r in concurrently(rest_predict, [(s, x) for x in xs])]
    np.testing.assert_allclose(np.array(got), np.array(expected), rtol=1e-5)
    m = s.metrics()
    assert metric_value(m, IN + "_sum") == 3
    assert metric_value(m, PROC + "_sum") == 4  # padded from 3 to the allowed size 4
    assert metric_value(m, PAD + "_sum", execution_batch_size="4") == 1


def test_large_batch_splitting(start_server, mlp_base):
    plain = start_server(mlp_base)
    x = rows(10, 42)
    expected = rest_predict(plain, x).json()["predictions"]
    s = start_server(
        mlp_base,
        batching=params(
            max_batch_size=16,
            enable_large_batch_splitting=True,
            max_execution_batch_size=4,
            num_batch_threads=2,
            max_enqueued_batches=100,
        ),
    )
    r = rest_predict(s, x)
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(np.array(r.json()["predictions"]), np.array(expected), rtol=1e-5)
    m = s.metrics()
    assert metric_value(m, RUNS) == 3  # 4 + 4 + 2
    assert metric_value(m, PROC + "_sum") == 10
    too_big = rest_predict(s, rows(17))
    assert too_big.status_code == 400
    assert "Task size 17 is larger than maximum input batch size 16" in too_big.json()["error"]


def test_rejections_invalid_argument_and_unavailable(start_server, mlp_base):
    s = start_server(
        mlp_base,
        batching=params(
            max_batch_size=4,
            batch_timeout_micros=1_500_000,
            num_batch_threads=1,
            max_enqueued_batches=1,
        ),
    )
    channel = grpc.insecure_channel(s.grpc_target)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

    def req(n):
        r = predict_pb2.PredictRequest()
        r.model_spec.name = "m"
        r.inputs["x"].CopyFrom(tf.make_tensor_proto(rows(n)))
        return r

    with __import__("pytest").raises(grpc.RpcError) as exc:
        stub.Predict(req(5), timeout=10)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert exc.value.details() == "Task size 5 is larger than maximum input batch size 4"

    first = stub.Predict.future(req(3), timeout=10)  # opens the only batch, waits 1.5 s
    time.sleep(0.2)
    with __import__("pytest").raises(grpc.RpcError) as exc:
        stub.Predict(req(3), timeout=10)  # does not fit: would need a second batch
    assert exc.value.code() == grpc.StatusCode.UNAVAILABLE
    assert exc.value.details().startswith(
        "The batch scheduling queue to which this task was submitted is full"
    )
    assert len(first.result().outputs["y"].float_val) == 12
    r = rest_predict(s, rows(3))  # the same over REST once the queue has room: fine
    assert r.status_code == 200
    first2 = stub.Predict.future(req(3), timeout=10)
    time.sleep(0.2)
    r = rest_predict(s, rows(2))
    assert (
        r.status_code == 503
        and "queue to which this task was submitted is full" in r.json()["error"]
    )
    first2.result()
    m = s.metrics()
    assert (
        metric_value(m, ":tensorflow:serving:request_count", model_name="m", status="UNAVAILABLE")
        == 2
    )
    channel.close()


def test_deadline_passed_in_queue_is_resource_exhausted(start_server, mlp_base):
    s = start_server(
        mlp_base,
        batching=params(max_batch_size=64, batch_timeout_micros=1_000_000, num_batch_threads=1),
        extra=["--rest_api_timeout_in_ms=300"],
    )
    r = rest_predict(s, rows(1))  # waits 1 s in the queue with a 0.3 s deadline
    assert r.status_code == 429
    assert r.json()["error"] == "Run() timeout exceeded while waiting in batching queue"
    # over gRPC the client's own deadline fires first; the server still counts the rejection
    channel = grpc.insecure_channel(s.grpc_target)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "m"
    req.inputs["x"].CopyFrom(tf.make_tensor_proto(rows(1)))
    try:
        stub.Predict(req, timeout=0.3)
    except grpc.RpcError as exc:
        assert exc.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED)
    time.sleep(1.2)
    m = s.metrics()
    assert (
        metric_value(
            m, ":tensorflow:serving:request_count", model_name="m", status="RESOURCE_EXHAUSTED"
        )
        == 2
    )
    channel.close()


def test_defaults_when_batching_enabled_without_a_file(start_server, mlp_base):
    s = start_server(mlp_base, extra=["--enable_batching"])
    assert rest_predict(s, rows(2)).status_code == 200
    assert metric_value(s.metrics(), IN + "_sum") == 2


def test_batch_trace_times_every_batch_the_model_ran(start_server, mlp_base, tmp_path, monkeypatch):
    from harness.refserver import batch_trace

    prefix = tmp_path / "trace"
    monkeypatch.setenv(batch_trace.ENV, str(prefix))
    s = start_server(
        mlp_base,
        batching=params(
            max_batch_size=4,
            batch_timeout_micros=5_000_000,
            num_batch_threads=1,
            allowed_batch_sizes=[2, 4],
        ),
    )
    out = concurrently(rest_predict, [(s, rows(1, i)) for i in range(8)])
    assert all(r.status_code == 200 for r in out)
    assert rest_predict(s, rows(5)).status_code == 400  # refused: never ran, never traced
    s.stop()
    (path,) = tmp_path.glob("trace.*")
    records = batch_trace.load(path)
    assert [(r["thread"], r["rows"], r["padded"]) for r in records] == [(0, 4, 4), (0, 4, 4)]
    for r in records:
        assert 0 < r["run_cpu_s"] <= r["batch_cpu_s"]
        assert r["merge_wall_s"] + r["run_wall_s"] <= r["batch_wall_s"]
    summary = batch_trace.summarize(records)
    assert summary["sizes"][4]["batches"] == 2 and summary["all"]["threads"] == 1
    assert summary["all"]["cycle_ms"] == pytest.approx(
        (records[1]["taken"] - records[0]["taken"]) * 1e3
    )


def test_no_batch_trace_unless_asked(start_server, mlp_base, tmp_path):
    s = start_server(mlp_base, batching=params(max_batch_size=4, num_batch_threads=1))
    assert rest_predict(s, rows(2)).status_code == 200
    s.stop()
    assert not list(tmp_path.glob("trace*"))
