"""Servers other machines can reach: ``server.bind_host`` (where the server listens) and
``server.advertise_host`` (where the harness and the load workers are sent).

The real part runs a reference server on 127.0.0.2, a Locust master on 127.0.0.3 and a
``harness worker`` process as the remote worker; every address is on this machine's loopback
(the whole 127.0.0.0/8 is), and nothing of that server may listen on 127.0.0.1.
"""

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from harness import config
from harness.errors import ConfigError
from harness.servers.base import Endpoint, advertised_host, is_loopback

ROOT = Path(__file__).resolve().parents[2]


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


# -- the settings ---------------------------------------------------------------------------------


BASE = {"model": {"demo": "mlp"}}


def test_defaults_stay_on_loopback():
    s = config.from_dict(BASE).server
    assert (s.bind_host, s.advertise_host, s.model_transfer) == ("127.0.0.1", "", "auto")
    assert advertised_host(s.bind_host, s.advertise_host) == "127.0.0.1"


@pytest.mark.parametrize(
    "server, fragment",
    [
        ({"bind_host": "gpu-box"}, "exp.toml: server.bind_host = 'gpu-box' is not an IP address"),
        ({"bind_host": 8500}, "exp.toml: server.bind_host must be a string"),
        ({"advertise_host": "0.0.0.0"}, "server.advertise_host = '0.0.0.0' is not an address"),
        (
            {"advertise_host": "http://10.0.0.5:8500"},
            "server.advertise_host = 'http://10.0.0.5:8500' is not a host name",
        ),
        ({"model_transfer": "rsync"}, "server.model_transfer = 'rsync' is not one of auto, bind"),
        ({"bind_hots": "0.0.0.0"}, "unknown key server.bind_hots"),
    ],
)
def test_bad_values_name_the_key_and_the_file(server, fragment):
    with pytest.raises(ConfigError) as exc:
        config.from_dict({**BASE, "server": server}, "exp.toml")
    assert fragment in str(exc.value)


def test_good_values_and_overrides():
    data = {**BASE, "server": {}}
    config.apply_override(data, "server.bind_host=0.0.0.0", "--set")
    config.apply_override(data, 'server.advertise_host="gpu-box-1.internal"', "--set")
    config.apply_override(data, "server.model_transfer=copy", "--set")
    s = config.from_dict(data).server
    assert (s.bind_host, s.advertise_host, s.model_transfer) == (
        "0.0.0.0",
        "gpu-box-1.internal",
        "copy",
    )
    assert config.from_dict({**BASE, "server": {"bind_host": "::1"}}).server.bind_host == "::1"


def test_advertised_host_rules():
    assert advertised_host("127.0.0.2") == "127.0.0.2"  # one address: reached there
    assert advertised_host("10.0.0.5", "tuner.internal") == "tuner.internal"  # explicit wins
    assert advertised_host("0.0.0.0", engine_host="gpu-box-1") == "gpu-box-1"  # DOCKER_HOST's
    assert advertised_host("10.0.0.7", engine_host="gpu-box-1") == "10.0.0.7"
    assert advertised_host("0.0.0.0") == "127.0.0.1"  # everywhere, no name: this machine
    assert advertised_host("::") == "::1"
    e = Endpoint.at("::1", 8500, 8501, "m")
    assert (e.grpc_target, e.rest_url, e.host) == ("[::1]:8500", "http://[::1]:8501", "::1")
    assert Endpoint.at("gpu-box-1", 1, 2, "m").metrics_url.startswith("http://gpu-box-1:2/")
    assert is_loopback("127.0.0.2") and is_loopback("localhost") and not is_loopback("10.0.0.5")


def test_a_wildcard_server_with_remote_workers_needs_an_advertised_host(mlp_base):
    from harness.tuning.trial import TrialRunner

    exp = config.from_dict(
        {
            "model": {"path": str(mlp_base), "name": "m"},
            "server": {"binary": "reference", "bind_host": "0.0.0.0"},
            "load": {"remote_workers": 1},
        },
        "exp.toml",
    )
    with pytest.raises(ConfigError) as exc:
        TrialRunner(exp)
    assert "exp.toml: server.bind_host = '0.0.0.0' listens on every interface" in str(exc.value)
    assert "server.advertise_host" in str(exc.value)


# -- a real run ------------------------------------------------------------------------------------


def _ip(address: str) -> str:
    """An IPv4 address as such, also when gRPC's dual-stack socket shows it IPv4-mapped."""
    return address.removeprefix("::ffff:")


def _listening(pid: int) -> set[tuple[str, int]]:
    return {
        (_ip(c.laddr.ip), c.laddr.port)
        for c in psutil.Process(pid).net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    }


def _wait(predicate, timeout: float, what: str, proc) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"harness run exited with {proc.returncode} before {what}")
        time.sleep(0.1)
    raise AssertionError(f"no {what} within {timeout:.0f}s")


def test_run_on_another_address_with_a_remote_worker(mlp_base, tmp_path):
    master_port = free_port("127.0.0.3")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "worker",
            "--master-host",
            "127.0.0.3",
            "--master-port",
            str(master_port),
            "--cpus",
            "1",
        ],
        cwd=elsewhere,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    workdir = tmp_path / "run"
    run = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "run",
            "--model-dir",
            str(mlp_base),
            "--model-name",
            "m",
            "--binary",
            "reference",
            "--bind-host",
            "127.0.0.2",
            "--set",
            'server.advertise_host="127.0.0.2"',
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
            "--master-bind-host",
            "127.0.0.3",
            "--master-port",
            str(master_port),
            "--server-cpus",
            "0",
            "--load-cpus",
            "1",
            "--workdir",
            str(workdir),
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        # the load has started: the server is up and serving
        _wait(lambda: (workdir / "load-0" / "locust.log").exists(), 120, "load", run)
        pid = int((workdir / "server" / "server.pid").read_text())
        cmd = (workdir / "server" / "server.cmd").read_text()
        assert cmd.startswith("HARNESS_REFSERVER_BIND_ADDRESS=127.0.0.2 ") and "--bind_address" not in cmd
        grpc_port = int(cmd.split("--port=")[1].split()[0])
        rest_port = int(cmd.split("--rest_api_port=")[1].split()[0])
        assert _listening(pid) == {("127.0.0.2", grpc_port), ("127.0.0.2", rest_port)}
        # nothing else on this machine listens on those ports on 127.0.0.1 (or anywhere else)
        others = [
            (_ip(c.laddr.ip), c.laddr.port, c.pid)
            for c in psutil.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN and c.laddr.port in (grpc_port, rest_port)
        ]
        assert {(ip, port) for ip, port, _ in others} == _listening(pid), others
        for port in (grpc_port, rest_port):
            with socket.socket() as s:
                s.settimeout(2)
                assert s.connect_ex(("127.0.0.1", port)) != 0  # refused: not listening there
        out, err = run.communicate(timeout=180)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
        worker.send_signal(signal.SIGINT)
        text, _ = worker.communicate(timeout=30)
    assert run.returncode == 0, err[-3000:]
    doc = json.loads(out.strip().splitlines()[-1])
    # both workers (the local one and `harness worker`) sent requests that the server answered
    assert len(doc["workers"]) == 2 and all(w["rows"] > 0 for w in doc["workers"])
    assert doc["ok"] > 0 and doc["errors"]["INVALID_ARGUMENT"] > 0
    assert doc["server"]["batches"] > 0  # the harness scraped metrics at 127.0.0.2
    assert any("127.0.0.2, a loopback address" in w for w in doc["warnings"])
    assert worker.returncode == 0, text[-2000:]
    assert "127.0.0.3" in text
