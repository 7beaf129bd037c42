"""The process and external backends, with the reference server as a real child process."""

import json
import urllib.request

import psutil
import pytest

from harness.batching import BatchingParameters
from harness.errors import ConfigError, ServerError
from harness.servers import ExternalBackend, ProcessBackend, ServerSpec


def predict(server, rows: int):
    body = json.dumps({"instances": [[0.1] * 16] * rows}).encode()
    req = urllib.request.Request(f"{server.endpoint.rest_url}/v1/models/m:predict", data=body)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_start_predict_restart_with_other_parameters_stop(mlp_base, tmp_path):
    backend = ProcessBackend("reference")
    spec = ServerSpec(
        model_name="m", model_dir=mlp_base, batching=BatchingParameters(max_batch_size=8), cpus=(0,)
    )
    server = backend.start(spec, tmp_path / "t1")
    try:
        assert predict(server, 5)[0] == 200
        assert (
            tmp_path / "t1" / "batching_parameters.txt"
        ).read_text() == "max_batch_size { value: 8 }\n"
        assert "--enable_batching" in (tmp_path / "t1" / "server.cmd").read_text()
        assert any("Running gRPC ModelServer" in n for n in server.notes())
        threads = [psutil.Process(t.id) for t in psutil.Process(server.proc.pid).threads()]
        assert len(threads) > 1 and all(t.cpu_affinity() == [0] for t in threads)
    finally:
        server.stop()
    assert server.proc.poll() is not None
    server = backend.start(
        ServerSpec(
            model_name="m", model_dir=mlp_base, batching=BatchingParameters(max_batch_size=4)
        ),
        tmp_path / "t2",
    )
    try:
        code, body = predict(server, 5)
        assert (
            code == 400 and body["error"] == "Task size 5 is larger than maximum input batch size 4"
        )
    finally:
        server.stop()


def test_refused_parameters_give_the_exit_code_and_log_tail(mlp_base, tmp_path):
    spec = ServerSpec(
        model_name="m",
        model_dir=mlp_base,
        batching=BatchingParameters(max_batch_size=8, allowed_batch_sizes=(4,)),
    )
    with pytest.raises(ServerError) as exc:
        ProcessBackend("reference").start(spec, tmp_path)
    assert "exited with code 1" in str(exc.value)
    assert "Last entry in allowed_batch_sizes must match max_batch_size" in str(exc.value)


def test_killed_server_is_reported_with_its_exit_code(mlp_base, tmp_path):
    server = ProcessBackend("reference").start(
        ServerSpec(model_name="m", model_dir=mlp_base), tmp_path
    )
    server.check_alive()
    server.proc.kill()
    server.proc.wait()
    with pytest.raises(ServerError, match="exited with code -9"):
        server.check_alive()
    server.stop()


def test_missing_binary_and_model_directory(tmp_path):
    with pytest.raises(ServerError, match="not found"):
        ProcessBackend("/no/such/tensorflow_model_server")
    with pytest.raises(ServerError, match="does not exist"):
        ProcessBackend("reference").start(
            ServerSpec(model_name="m", model_dir=tmp_path / "nope"), tmp_path
        )


def test_external_backend_measures_but_never_restarts(mlp_base, tmp_path):
    server = ProcessBackend("reference").start(
        ServerSpec(model_name="m", model_dir=mlp_base), tmp_path / "s"
    )
    try:
        ext = ExternalBackend(server.endpoint.grpc_target, server.endpoint.rest_url)
        assert ext.can_restart is False
        handle = ext.start(ServerSpec(model_name="m", model_dir=mlp_base), tmp_path / "e")
        assert predict(handle, 1)[0] == 200
        handle.stop()  # not ours: the server keeps serving
        assert predict(server, 1)[0] == 200
        with pytest.raises(ConfigError, match="cannot be restarted"):
            ext.start(
                ServerSpec(
                    model_name="m",
                    model_dir=mlp_base,
                    batching=BatchingParameters(max_batch_size=2),
                ),
                tmp_path,
            )
        with pytest.raises(ServerError, match="is not serving other"):
            ext.start(ServerSpec(model_name="other", model_dir=mlp_base), tmp_path)
    finally:
        server.stop()
