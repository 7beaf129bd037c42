"""Coordinated omission, end to end: a server stopped for one second mid-run.

An open-loop client keeps sending on schedule while the server is stopped, and counts each
request's latency from when it was due: the stall shows in its p99 and p99.9. A closed-loop
client stops sending while its few requests wait, so the stall touches only those few and its
p99 hides it (the effect wrk2's README shows for wrk). Real Locust, a real reference server on
127.0.0.1, SIGSTOP then SIGCONT; bounded to ~15 s per run.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from harness.config import LoadConfig
from harness.load.runner import run_load
from harness.samples import Samples
from harness.servers import ProcessBackend, ServerSpec

STALL_S = 1.0
WINDOWS = dict(warmup_s=1.0, window_s=4.0, min_windows=2, max_windows=2, extra_windows=0)


@pytest.fixture(scope="module")
def server(mlp_base, tmp_path_factory):
    backend = ProcessBackend("reference")
    s = backend.start(
        ServerSpec(model_name="m", model_dir=mlp_base, cpus=(0,)), tmp_path_factory.mktemp("s")
    )
    yield s
    s.stop()
    backend.close()


def _stall_once(pid: int, record_dir, warmup_s: float, stop: threading.Event) -> None:
    """Stop the server for STALL_S, 1.5 s into the first measured window."""
    while not stop.is_set() and not any(record_dir.glob("samples-*.npz")):
        time.sleep(0.05)
    if stop.is_set():
        return
    start = Samples.read(record_dir)["t_intended"].min() + warmup_s
    stop.wait(max(0.0, start + 1.5 - time.time()))
    if stop.is_set():
        return
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(STALL_S)
    finally:
        os.kill(pid, signal.SIGCONT)


def _measure_with_a_stall(server, load: LoadConfig, workdir):
    stop = threading.Event()
    t = threading.Thread(
        target=_stall_once,
        args=(server.proc.pid, workdir / "samples", load.warmup_s, stop),
        daemon=True,
    )
    t.start()
    try:
        # no liveness check: a stopped server is what this test is about
        return run_load(server.endpoint, load, workdir, cpus=(1,), check_server=None)
    finally:
        stop.set()
        t.join(STALL_S + 5)
        os.kill(server.proc.pid, signal.SIGCONT)  # whatever happened, never leave it stopped


def test_open_loop_shows_a_one_second_stall_that_closed_loop_hides(server, tmp_path):
    opened = _measure_with_a_stall(
        server,
        LoadConfig(protocol="grpc", rate=200, arrivals="constant", **WINDOWS),
        tmp_path / "open",
    ).measurement
    closed = _measure_with_a_stall(
        server, LoadConfig(protocol="grpc", users=4, **WINDOWS), tmp_path / "closed"
    ).measurement
    # open loop: ~200 of ~1,600 requests were due during the stall and waited up to 1 s
    assert opened.errors == {} and opened.ok > 1000
    assert opened.p99_ms > 0.5 * STALL_S * 1000, opened
    assert opened.p999_ms > 0.8 * STALL_S * 1000, opened
    # closed loop: 4 requests waited through it, out of thousands; p99 stays at service time
    assert closed.errors == {} and closed.ok > 2000
    assert closed.p99_ms < 0.1 * STALL_S * 1000, closed
    assert closed.p99_ms < opened.p99_ms / 10
