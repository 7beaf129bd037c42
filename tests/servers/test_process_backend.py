"""The process and external backends, with the reference server as a real child process."""

import json
import os
import shlex
import stat
import sys
import urllib.request

import psutil
import pytest

from harness import tfs_flags
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


@pytest.fixture
def reference():
    """A reference-server backend whose fork server is closed after the test."""
    backend = ProcessBackend("reference")
    yield backend
    backend.close()


def test_start_predict_restart_with_other_parameters_stop(reference, mlp_base, tmp_path):
    backend = reference
    spec = ServerSpec(
        model_name="m", model_dir=mlp_base, batching=BatchingParameters(max_batch_size=8), cpus=(0,)
    )
    server = backend.start(spec, tmp_path / "t1")
    try:
        assert predict(server, 5)[0] == 200
        assert (
            tmp_path / "t1" / "batching_parameters.txt"
        ).read_text() == "max_batch_size { value: 8 }\n"
        cmd = shlex.split((tmp_path / "t1" / "server.cmd").read_text())
        assert "--enable_batching" in cmd
        # the address goes through $HARNESS_REFSERVER_BIND_ADDRESS, not a flag
        assert cmd[0] == "HARNESS_REFSERVER_BIND_ADDRESS=127.0.0.1"
        assert cmd[2:4] == ["-m", "harness.refserver"] and tfs_flags.unknown(cmd[4:]) == []
        assert any("Running gRPC ModelServer at 127.0.0.1:" in n for n in server.notes())
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


def test_refused_parameters_give_the_exit_code_and_log_tail(reference, mlp_base, tmp_path):
    spec = ServerSpec(
        model_name="m",
        model_dir=mlp_base,
        batching=BatchingParameters(max_batch_size=8, allowed_batch_sizes=(4,)),
    )
    with pytest.raises(ServerError) as exc:
        reference.start(spec, tmp_path)
    assert "exited with code 1" in str(exc.value)
    assert "Last entry in allowed_batch_sizes must match max_batch_size" in str(exc.value)


def test_killed_server_is_reported_with_its_exit_code(reference, mlp_base, tmp_path):
    server = reference.start(
        ServerSpec(model_name="m", model_dir=mlp_base), tmp_path
    )
    server.check_alive()
    server.proc.kill()
    server.proc.wait()
    with pytest.raises(ServerError, match="exited with code -9"):
        server.check_alive()
    server.stop()


def test_missing_binary_and_model_directory(reference, tmp_path):
    with pytest.raises(ServerError, match="not found"):
        ProcessBackend("/no/such/tensorflow_model_server")
    with pytest.raises(ServerError, match="does not exist"):
        reference.start(
            ServerSpec(model_name="m", model_dir=tmp_path / "nope"), tmp_path
        )


def test_external_backend_measures_but_never_restarts(reference, mlp_base, tmp_path):
    server = reference.start(
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


@pytest.fixture
def model_server_on_path(tmp_path, monkeypatch):
    """A ``tensorflow_model_server`` first on PATH that records its arguments (one per line,
    each start ending in ``--``) and runs the reference server in TF Serving's binary's place."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    argv_log = tmp_path / "argv.log"
    script = bin_dir / "tensorflow_model_server"
    script.write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n" "$@" -- >> {shlex.quote(str(argv_log))}\n'
        f'exec {shlex.quote(sys.executable)} -m harness.servers.tfs_binary "$@"\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return script, argv_log


def test_auto_finds_tensorflow_model_server_on_path_and_passes_only_its_flags(
    model_server_on_path, mlp_base, tmp_path
):
    script, argv_log = model_server_on_path
    backend = ProcessBackend("auto")
    assert backend.command == [str(script)] and not backend.is_reference
    spec = ServerSpec(
        model_name="m",
        model_dir=mlp_base,
        batching=BatchingParameters(max_batch_size=4, num_batch_threads=1),
        intra_op_parallelism=1,
        extra_flags=("--file_system_poll_wait_seconds=2",),
        cpus=(0,),
    )
    server = backend.start(spec, tmp_path / "t")
    try:
        assert predict(server, 4)[0] == 200
        code, body = predict(server, 5)
        assert code == 400
        assert body["error"] == "Task size 5 is larger than maximum input batch size 4"
        argv = argv_log.read_text().splitlines()
        assert argv[-1] == "--" and argv.count("--") == 1
        assert tfs_flags.unknown(argv[:-1]) == []
        assert {tfs_flags.flag_name(a) for a in argv[:-1]} == {
            "port",
            "rest_api_port",
            "model_name",
            "model_base_path",
            "monitoring_config_file",
            "enable_batching",
            "batching_parameters_file",
            "tensorflow_intra_op_parallelism",
            "file_system_poll_wait_seconds",
        }
        # the backend's address reached it without a flag (the real binary would ignore it)
        assert "Running gRPC ModelServer at 127.0.0.1:" in server.logs()
        usage = server.usage()  # psutil: the server and its children
        assert usage.cpu_s > 0 and usage.memory_bytes > 10 * 2**20
        assert usage.peak_bytes >= usage.memory_bytes
    finally:
        server.stop()
    name = backend.describe()  # runs the binary with --version
    assert name.startswith(f"{script} (TensorFlow ModelServer: tfs-harness ")
    assert argv_log.read_text().splitlines()[-2:] == ["--version", "--"]


def test_the_stand_in_binary_refuses_flags_tf_serving_lacks(capsys):
    from harness.servers import tfs_binary

    assert tfs_binary.main(["--port=8500", "--bind_address=0.0.0.0"]) == 1
    err = capsys.readouterr().err
    assert "unknown argument: --bind_address=0.0.0.0" in err
    assert tfs_binary.main(["--version"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("TensorFlow ModelServer: tfs-harness ")
    assert out[1].startswith("TensorFlow Library: ")
