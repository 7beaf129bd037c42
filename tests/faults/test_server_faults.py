"""A server killed, hung or unable to start: the trial (or the study) fails with a clear reason,
the next trial gets a fresh server, and nothing is left running."""

import os
import signal
import socket
import subprocess
import threading
import time

import pytest
from faultkit import (
    ROOT,
    commands_mentioning,
    csv_rows,
    processes_of,
    run,
    tune_cmd,
    wait_for,
    write_experiment,
)

from harness.errors import ServerError
from harness.labels import EXIT_USAGE
from harness.procs import process_state
from harness.servers import ProcessBackend, ServerSpec


def _inject(trial_dir, sig, out: dict, key: str) -> None:
    """Once the trial's load runs, send ``sig`` to its server; remember the pid."""
    wait_for(lambda: (trial_dir / "load" / "locust.log").exists(), 150, f"{trial_dir.name}'s load")
    time.sleep(1.0)  # past the first samples: mid-measurement
    pid = int((trial_dir / "server" / "server.pid").read_text())
    os.kill(pid, sig)
    out[key] = pid


def test_server_killed_then_hung_mid_trial_fail_those_trials_and_the_next_gets_a_fresh_server(
    tmp_path, model
):
    cmd = tune_cmd(tmp_path, 4, "--no-report")  # the trials' fates are the point, not the report
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    trials = tmp_path / "res" / "t" / "trials"
    pids: dict = {}

    def faults():
        _inject(trials / "0001", signal.SIGKILL, pids, "killed")
        _inject(trials / "0002", signal.SIGSTOP, pids, "stopped")

    t = threading.Thread(target=faults, daemon=True)
    t.start()
    out, err = proc.communicate(timeout=300)
    t.join(5)
    assert proc.returncode == 0, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert set(pids) == {"killed", "stopped"}
    rows = {int(r["number"]): r for r in csv_rows(tmp_path)}
    assert rows[0]["state"] == "COMPLETE"

    killed = rows[1]
    assert killed["state"] == "FAIL"
    assert "server process exited with code -9" in killed["fail_reason"]
    story = (trials / "0001" / "failure.txt").read_text()
    assert "exited with code -9" in story
    assert "Running gRPC ModelServer" in story  # the server's last log lines come along
    assert "FAILED server process exited with code -9" in out

    hung = rows[2]
    assert hung["state"] == "FAIL"
    assert "is stopped" in hung["fail_reason"]
    assert process_state(pids["stopped"]) is None  # the stopped server was ended, not left

    fresh = rows[3]
    assert fresh["state"] == "COMPLETE" and float(fresh["items_per_s"]) > 0
    fresh_pid = int((trials / "0003" / "server" / "server.pid").read_text())
    assert fresh_pid not in pids.values()
    assert processes_of(proc.pid) == [] and commands_mentioning(str(tmp_path)) == []


def test_a_server_that_stops_answering_is_called_hung(tmp_path):
    """The watchdog on its own: a port that accepts connections and never answers."""
    from harness.servers.watchdog import Watchdog

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        dog = Watchdog(f"http://127.0.0.1:{s.getsockname()[1]}", "m", hang_after_s=2.0)
        t0 = time.monotonic()
        with pytest.raises(ServerError, match="server stopped answering"):
            while time.monotonic() - t0 < 30:
                dog.check()
                time.sleep(0.1)
        assert time.monotonic() - t0 < 10  # it gives up in bounded time


def test_every_trial_refused_the_study_still_ends_and_no_flag_reaches_a_shell(tmp_path, model):
    marker = tmp_path / "pwned"
    exp = write_experiment(tmp_path, 2).read_text()
    # TF Serving's flag names (others are refused when the experiment is read), shell in the values
    evil = f'extra_flags = ["--ssl_config_file=; touch {marker}", "--platform_config_file=$(touch {marker})", "--saved_model_tags=`touch {marker}`"]'
    exp = exp.replace('binary = "reference"', f'binary = "reference"\n{evil}')
    exp = exp.replace("[study]", "[study]\nbaselines = false")
    (tmp_path / "evil.toml").write_text(exp)
    r = run(
        [
            *tune_cmd(tmp_path, 2)[:4],
            "--experiment",
            str(tmp_path / "evil.toml"),
            "--results-dir",
            str(tmp_path / "res"),
            "--no-report",  # the trials' failures and the exit code are the point
        ],
        timeout=200,
    )
    # the study ends and says so; with every trial failed the exit code is the start-up one
    assert r.returncode == EXIT_USAGE, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    rows = csv_rows(tmp_path)
    measured = [x for x in rows if not x["duplicate_of"]]  # a repeated config is a free copy
    assert len(measured) == 2 and all(x["state"] == "FAIL" for x in rows)
    assert all("exited with code 2" in x["fail_reason"] for x in rows)  # argparse refused them
    assert "every trial failed: nothing was measured" in r.stdout
    assert not marker.exists()  # each value went to the server as one argument, never a shell


def test_port_taken_is_retried_on_fresh_ports_then_reported(tmp_path, mlp_base, monkeypatch):
    import harness.servers.process as process

    real = process.free_port
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen(1)
        taken = held.getsockname()[1]
        calls = []

        def first_taken(host="127.0.0.1"):
            calls.append(1)
            return taken if len(calls) == 1 else real(host)

        monkeypatch.setattr(process, "free_port", first_taken)
        backend = ProcessBackend("reference")
        try:
            server = backend.start(ServerSpec(model_name="m", model_dir=mlp_base), tmp_path / "a")
            try:
                assert not server.endpoint.grpc_target.endswith(f":{taken}")
                assert (
                    "cannot listen" in (tmp_path / "a" / "server.log").read_text() or len(calls) > 2
                )
            finally:
                server.stop()
            monkeypatch.setattr(process, "free_port", lambda host="127.0.0.1": taken)
            with pytest.raises(ServerError) as exc:
                backend.start(ServerSpec(model_name="m", model_dir=mlp_base), tmp_path / "b")
            assert "port is in use" in str(exc.value)
            assert "exited with code 1" in str(exc.value)
        finally:
            backend.close()


def test_missing_model_directory_refuses_the_study(tmp_path):
    r = run(tune_cmd(tmp_path, 2), timeout=120)  # no model fixture: tmp_path/model is missing
    assert r.returncode == EXIT_USAGE
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "model.path" in lines[0] and "is not a directory" in lines[0]
    assert not (tmp_path / "res" / "t" / "trials").exists()


def _docker_experiment(tmp_path, image: str) -> str:
    exp = write_experiment(tmp_path, 2).read_text()
    return exp.replace('binary = "reference"', f'backend = "docker"\nimage = "{image}"')


def test_docker_engine_unreachable_refuses_the_study(tmp_path, model):
    dead = tmp_path / "dead.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(dead))
    s.close()  # the socket file stays, nobody listens: connection refused
    (tmp_path / "d.toml").write_text(_docker_experiment(tmp_path, "tfs-harness/reference:latest"))
    env = dict(os.environ, DOCKER_HOST=f"unix://{dead}")
    cmd = [*tune_cmd(tmp_path, 2)[:4], "--experiment", str(tmp_path / "d.toml")]
    r = run([*cmd, "--results-dir", str(tmp_path / "res")], timeout=120, env=env)
    assert r.returncode == EXIT_USAGE
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach the Docker engine"), (
        r.stderr
    )
    assert f"unix://{dead}" in lines[0]


def test_missing_image_refuses_the_study(tmp_path, model):
    from faultkit import our_containers

    if our_containers() is None:
        pytest.skip("no Docker engine answers here")
    image = "tensorflow/serving:0.0.0-not-here"
    (tmp_path / "d.toml").write_text(_docker_experiment(tmp_path, image))
    cmd = [*tune_cmd(tmp_path, 2)[:4], "--experiment", str(tmp_path / "d.toml")]
    r = run([*cmd, "--results-dir", str(tmp_path / "res")], timeout=120)
    assert r.returncode == EXIT_USAGE
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert f"image {image} is not present locally" in lines[0]
    assert f"docker pull {image}" in lines[0]
