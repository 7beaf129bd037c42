"""Does pinning a child right after it starts (harness.procs.spawn) pin it as well as pinning it
before exec would?

harness.procs pins with psutil once ``Popen`` has returned, not in ``preexec_fn`` (unsafe with
threads). Until then the child runs unpinned, and a thread it started in that window would keep
the old mask. This starts the reference server (``harness serve``, TensorFlow's thread pools)
and a Locust process against it, each through ``procs.spawn`` pinned to one core, many times,
with both cores idle and with both kept busy (so the harness may lose its core right after
``Popen``), and reports:

- the unpinned window: from ``Popen`` returning to the child and all its threads pinned;
- how many threads the child had by then (more than one would mean threads started unpinned);
- once the server answers and Locust runs: threads of each whose mask is not the requested one.

Usage: python benchmarks/pin_after_start.py [--starts 20]   (under flock /tmp/heavy.lock)
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import socket
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness import procs  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _busy(stop) -> None:
    while not stop.is_set():
        pass


def timed_spawn(cmd: list[str], log: Path, cpu: int) -> tuple:
    """procs.spawn, timed: (process, window in ms from Popen returning to pinned, threads)."""
    original = procs.pin
    seen = {}

    def pin(pid, cpus):
        seen["popen_returned"] = time.perf_counter()
        original(pid, cpus)
        seen["pinned"] = time.perf_counter()
        seen["threads"] = psutil.Process(pid).num_threads()

    procs.pin = pin
    try:
        proc = procs.spawn(cmd, log, (cpu,), cwd=ROOT)
    finally:
        procs.pin = original
    return proc, (seen["pinned"] - seen["popen_returned"]) * 1e3, seen["threads"]


def unpinned_threads(pid: int, cpu: int) -> tuple[int, int]:
    """(threads, threads whose mask is not just ``cpu``) of a running process."""
    threads = psutil.Process(pid).threads()
    bad = 0
    for t in threads:
        try:
            bad += psutil.Process(t.id).cpu_affinity() != [cpu]
        except psutil.NoSuchProcess:
            pass
    return len(threads), bad


def wait_ready(url: str, proc, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/v1/models/m", timeout=1) as r:
                if "AVAILABLE" in r.read().decode():
                    return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("server not ready")


def one_start(base: Path, tmp: Path) -> dict:
    grpc_port, rest_port = free_port(), free_port()
    server_cmd = [sys.executable, "-m", "harness.refserver", f"--port={grpc_port}"]
    server_cmd += [f"--rest_api_port={rest_port}", "--model_name=m", f"--model_base_path={base}"]
    server, s_ms, s_threads = timed_spawn(server_cmd, tmp / "server.log", 0)
    url = f"http://127.0.0.1:{rest_port}"
    try:
        wait_ready(url, server)
        locust_cmd = [sys.executable, "-m", "locust", "-f", str(ROOT / "locustfiles" / "rest.py")]
        locust_cmd += ["--headless", "--host", url, "-u", "4", "-r", "4", "--run-time", "4s"]
        locust_cmd += ["--model-name", "m", "--only-summary", "--loglevel", "WARNING"]
        locust, l_ms, l_threads = timed_spawn(locust_cmd, tmp / "locust.log", 1)
        time.sleep(3)  # Locust's users run, the server's batch and request threads are up
        out = {
            "server": (s_ms, s_threads, *unpinned_threads(server.pid, 0)),
            "locust": (l_ms, l_threads, *unpinned_threads(locust.pid, 1)),
        }
        procs.stop_group(locust, 10)
        return out
    finally:
        procs.stop_group(server, 10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--starts", type=int, default=20)
    args = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from harness.models.export import export

    rows: dict = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        base = tmp / "mlp"
        export("mlp", base, 1)
        for i in range(args.starts):
            busy = i % 2 == 1  # interleaved: idle, busy, idle, ...
            stop = multiprocessing.Event()
            hogs = [multiprocessing.Process(target=_busy, args=(stop,)) for _ in range(2)] if busy else []
            for h in hogs:
                h.start()
            try:
                for name, r in one_start(base, tmp).items():
                    rows.setdefault((name, busy), []).append(r)
            finally:
                stop.set()
                for h in hogs:
                    h.join()
    print("| child | cores | starts | window ms median (max) | threads at pin (max) | threads later (median) | unpinned later |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for (name, busy), rs in sorted(rows.items()):
        win = [r[0] for r in rs]
        print(
            f"| {name} | {'busy' if busy else 'idle'} | {len(rs)} | {statistics.median(win):.2f} "
            f"({max(win):.2f}) | {max(r[1] for r in rs)} | {statistics.median(r[2] for r in rs):.0f} "
            f"| {sum(r[3] for r in rs)} |"
        )
    print(json.dumps({f"{k[0]}-{'busy' if k[1] else 'idle'}": v for k, v in rows.items()}), file=sys.stderr)


if __name__ == "__main__":
    main()
