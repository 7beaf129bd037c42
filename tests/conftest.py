"""Shared fixtures: demo models exported once per session, reference servers on 127.0.0.1.

Also the suite's skip policy, in one place: with ``CI=true`` (.ci/run sets it) a test that would
skip (no Docker engine, no PostgreSQL, no Chromium, no sshd, the native server not built, a
package missing) fails instead, with the reason it would have skipped. CI cannot pass by
skipping what it was meant to run. Outside CI a missing service still skips, and says which.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def in_ci() -> bool:
    """Whether this run is CI's: ``CI`` set to anything but empty, 0, false or no."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _skip_fails_in_ci(report) -> None:
    """Turn a skipped test or module into a failure under CI (an expected failure stays one)."""
    if not (report.skipped and in_ci()) or hasattr(report, "wasxfail"):
        return
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    report.outcome = "failed"
    report.longrepr = (
        f"CI=true: this would have skipped ({reason}); CI must run it: install or start what it "
        "needs (scripts/test.sh does), or run outside CI to let it skip"
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _skip_fails_in_ci(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield  # a module-level importorskip skips its whole module here
    _skip_fails_in_ci(outcome.get_result())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def model_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def mlp_base(model_root) -> Path:
    """The tiny MLP exported as version 1 (read-only: copy it before changing versions)."""
    from harness.models.export import export

    base = model_root / "mlp"
    export("mlp", base, 1)
    return base


@pytest.fixture(scope="session")
def report_studies(tmp_path_factory, mlp_base) -> dict:
    """The gRPC study with the guide's procedure and the REST study of tests/studies.py, run
    once for every test that reads them (the report tests, the guide-procedure test)."""
    from tests.studies import report_studies as run

    return run(tmp_path_factory.mktemp("report"), mlp_base)


def refserver_impls() -> list[str]:
    """The request paths the reference-server tests run against: native (when it is built:
    scripts/bootstrap.sh builds it; under CI always, so that a missing build fails) and Python."""
    from harness.refserver.native import launch

    return ["native", "python"] if launch.binary() is not None or in_ci() else ["python"]


@pytest.fixture(scope="module", params=refserver_impls())
def refserver_impl(request):
    """Which request path ``harness serve`` takes in this module's servers (both, in turn)."""
    from harness.refserver.native import launch
    from harness.refserver.native.launch import ENV

    if request.param == "native" and launch.binary() is None:
        pytest.skip("the native server is not built (bash scripts/build-native.sh)")
    old = os.environ.get(ENV)
    os.environ[ENV] = request.param
    yield request.param
    if old is None:
        os.environ.pop(ENV, None)
    else:
        os.environ[ENV] = old


class RefServer:
    """A reference server subprocess on free loopback ports (the request path from
    $HARNESS_REFSERVER_IMPL, which the ``refserver_impl`` fixture sets)."""

    def __init__(self, args: list[str], log_path: Path) -> None:
        self.grpc_port = free_port()
        self.rest_port = free_port()
        self.log_path = log_path
        cmd = [
            sys.executable,
            "-m",
            "harness.refserver",
            f"--port={self.grpc_port}",
            f"--rest_api_port={self.rest_port}",
            *args,
        ]
        self.impl = os.environ.get("HARNESS_REFSERVER_IMPL", "auto")
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_ready(self, model: str, timeout: float = 90) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"server exited with {self.proc.returncode}:\n{self.log()[-3000:]}"
                )
            try:
                r = requests.get(f"{self.url}/v1/models/{model}", timeout=1)
                if r.ok and any(
                    s["state"] == "AVAILABLE" for s in r.json()["model_version_status"]
                ):
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise AssertionError(f"server not ready after {timeout}s:\n{self.log()[-3000:]}")

    def metrics(self) -> str:
        return requests.get(f"{self.url}/monitoring/prometheus/metrics", timeout=5).text

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@pytest.fixture
def start_server(tmp_path):
    """Start reference servers; ``batching`` is a parameters-file body (enables batching)."""
    servers = []
    mon = tmp_path / "monitoring.txt"
    mon.write_text('prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }\n')

    def start(
        base: Path, *, name: str = "m", batching: str | None = None, extra=(), wait=True
    ) -> RefServer:
        args = [
            f"--model_name={name}",
            f"--model_base_path={base}",
            f"--monitoring_config_file={mon}",
        ]
        if batching is not None:
            params = tmp_path / f"batching{len(servers)}.txt"
            params.write_text(batching)
            args += ["--enable_batching", f"--batching_parameters_file={params}"]
        args += list(extra)
        server = RefServer(args, tmp_path / f"server{len(servers)}.log")
        servers.append(server)
        if wait:
            server.wait_ready(name)
        return server

    yield start
    for s in servers:
        s.stop()


def copy_model(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def metric_value(text: str, name: str, **labels) -> float:
    """The value of the sample ``name`` with exactly these labels in Prometheus text (read by
    prometheus_client's parser, as the harness reads it); 0 if absent."""
    from harness.load.promscrape import parse

    want = tuple(sorted((k, str(v)) for k, v in labels.items()))
    return parse(text).get((name, want), 0.0)


@pytest.fixture
def compose_cli():
    """Debian's docker-compose (scripts/test.sh installs it); skipped without it (failed under CI)."""
    path = shutil.which("docker-compose")
    if path is None:
        pytest.skip("docker-compose is not installed (scripts/test.sh installs Debian's package)")
    return path
