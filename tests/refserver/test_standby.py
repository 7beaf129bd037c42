"""Restarts through the fork server: on the native path a standby server, TensorFlow already
open, takes each start (harness/refserver/native/standby.py); on the Python path none is used."""

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request

import psutil
import pytest

from harness.batching import BatchingParameters
from harness.errors import ServerError
from harness.refserver.native import launch
from harness.refserver.server import build_parser
from harness.servers import ProcessBackend, ServerSpec
from tests.conftest import free_port

STANDBY_LINE = "in a standby process before this start"


def predict(url: str) -> int:
    body = json.dumps({"instances": [[0.1] * 16]}).encode()
    with urllib.request.urlopen(f"{url}/v1/models/m:predict", data=body, timeout=30) as r:
        return r.status


@pytest.fixture
def backend():
    b = ProcessBackend("reference")
    yield b
    b.close()


def standbys(serving: int = 0) -> list[psutil.Process]:
    """The waiting standby servers of this test's fork servers (a served one, ``serving``, keeps
    its command line)."""
    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            if p.cmdline()[1:] == ["--standby"] and p.pid != serving:
                out.append(p)
        except (psutil.NoSuchProcess, IndexError):
            pass
    return out


def settled(proc: psutil.Process, quiet: float = 0.5, timeout: float = 60.0) -> None:
    """Wait until ``proc`` uses no CPU for ``quiet`` seconds (a standby done loading ahead)."""
    end = time.monotonic() + timeout
    last = sum(proc.cpu_times()[:2])
    while time.monotonic() < end:
        time.sleep(quiet)
        now = sum(proc.cpu_times()[:2])
        if now == last:
            return
        last = now
    raise AssertionError(f"standby {proc.pid} still busy after {timeout} s")


def test_restarts_are_taken_by_a_standby_on_the_native_path(
    refserver_impl, backend, mlp_base, tmp_path
):
    pids = set()
    for i in range(3):
        spec = ServerSpec(
            model_name="m",
            model_dir=mlp_base,
            cpus=(0,),
            batching=BatchingParameters(max_batch_size=4 + i),
        )
        server = backend.start(spec, tmp_path / f"t{i}")
        try:
            assert predict(server.endpoint.rest_url) == 200
            log = server.logs()
            proc = psutil.Process(server.proc.pid)
            threads = [psutil.Process(t.id) for t in proc.threads()]
            assert all(t.cpu_affinity() == [0] for t in threads)
            assert os.getpgid(proc.pid) == proc.pid  # its own group: the backend stops the group
            if refserver_impl == "native":
                assert "Request path: native" in log and STANDBY_LINE in log
                assert proc.cmdline()[1:] == ["--standby"]
                assert all(t.nice() == 0 for t in threads)  # the opener's nice 19 is gone
                assert len(standbys(serving=proc.pid)) == 1  # the next one, waiting
            else:
                assert "Request path: Python" in log and STANDBY_LINE not in log
                assert standbys() == []
            pids.add(proc.pid)
        finally:
            server.stop()
        assert (
            server.proc.poll() == 0
        )  # the exit code reaches the backend (through the fork server)
    assert len(pids) == 3


def test_refusals_keep_their_message_and_exit_code(refserver_impl, backend, mlp_base, tmp_path):
    spec = ServerSpec(
        model_name="m",
        model_dir=mlp_base,
        batching=BatchingParameters(max_batch_size=8, allowed_batch_sizes=(4,)),
    )
    with pytest.raises(ServerError) as exc:
        backend.start(spec, tmp_path / "bad")
    assert "exited with code 1" in str(exc.value)
    assert "Last entry in allowed_batch_sizes must match max_batch_size" in str(exc.value)
    server = backend.start(ServerSpec(model_name="m", model_dir=mlp_base), tmp_path / "good")
    try:
        assert predict(server.endpoint.rest_url) == 200
    finally:
        server.stop()


@pytest.mark.native_only
def test_a_standby_that_died_is_replaced_by_a_cold_start(backend, mlp_base, tmp_path):
    first = backend.start(ServerSpec(model_name="m", model_dir=mlp_base), tmp_path / "a")
    first.stop()
    (waiting,) = standbys()
    waiting.kill()
    deadline = time.monotonic() + 10
    while (
        psutil.pid_exists(waiting.pid) and time.monotonic() < deadline
    ):  # reaped by the fork server
        time.sleep(0.05)
    server = backend.start(ServerSpec(model_name="m", model_dir=mlp_base), tmp_path / "b")
    try:
        assert predict(server.endpoint.rest_url) == 200
        log = server.logs()
        assert "Opened TensorFlow's C API in" in log and STANDBY_LINE not in log
        assert len(standbys(serving=server.proc.pid)) == 1
    finally:
        server.stop()


def _native_command(mlp_base, rest_port: int) -> tuple[list[str], dict]:
    args = build_parser().parse_args(
        [
            f"--port={free_port()}",
            f"--rest_api_port={rest_port}",
            "--model_name=m",
            f"--model_base_path={mlp_base}",
        ]
    )
    return launch.command(args)


@pytest.mark.native_only
@pytest.mark.parametrize("same_env", [True, False])
def test_a_standby_serves_its_request_or_starts_cold_when_the_environment_differs(
    mlp_base, tmp_path, same_env
):
    rest = free_port()
    argv, env = _native_command(mlp_base, rest)
    proc = subprocess.Popen(
        [argv[0], "--standby"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        log = tmp_path / "server.log"
        level = (
            env["TF_CPP_MIN_LOG_LEVEL"]
            if same_env
            else ("1" if env["TF_CPP_MIN_LOG_LEVEL"] == "3" else "3")
        )
        request_env = {**env, "TF_CPP_MIN_LOG_LEVEL": level}
        request = {"argv": argv, "env": request_env, "log": str(log), "cpus": []}
        proc.stdin.write(json.dumps(request).encode() + b"\n")
        proc.stdin.close()
        deadline = time.monotonic() + 30
        while True:
            try:
                assert predict(f"http://127.0.0.1:{rest}") == 200
                break
            except OSError:
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
        text = log.read_text()
        assert "Opened TensorFlow's C API in" in text
        assert (STANDBY_LINE in text) == same_env
        # exec'd again with the request's environment, or serving in the one it started with
        assert psutil.Process(proc.pid).environ()["TF_CPP_MIN_LOG_LEVEL"] == level
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.native_only
def test_a_standby_exits_when_nobody_asks(mlp_base):
    argv, env = _native_command(mlp_base, free_port())
    proc = subprocess.Popen([argv[0], "--standby"], stdin=subprocess.PIPE, env=env)
    proc.stdin.close()
    assert proc.wait(30) == 0


@pytest.mark.native_only
def test_the_next_start_takes_the_models_the_standby_loaded_ahead(backend, mlp_base, tmp_path):
    taken = "loaded by the standby before this start"
    other = tmp_path / "other"
    shutil.copytree(mlp_base, other)

    def start(base, name):
        server = backend.start(
            ServerSpec(model_name="m", model_dir=base, cpus=(0,)), tmp_path / name
        )
        assert predict(server.endpoint.rest_url) == 200
        log = server.logs()
        server.stop()
        return log

    start(mlp_base, "first")
    assert taken in start(mlp_base, "same model")  # loaded while the previous one served
    assert taken not in start(other, "other model")  # prepared for mlp_base: a cold start
    (waiting,) = standbys()
    settled(waiting)  # it has loaded `other` ahead; now its files change
    saved = other / "1" / "saved_model.pb"
    os.utime(saved, ns=(saved.stat().st_atime_ns, saved.stat().st_mtime_ns + 10**9))
    log = start(other, "rewritten")  # prepared for this directory, but its files changed since
    assert taken not in log and "SavedModel load for tags" in log
