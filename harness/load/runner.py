"""One measurement: Locust in a child process, a warm-up, then windows until the figures settle.

Locust runs as its own process (it monkey-patches the interpreter with gevent) with the same
locustfiles a user runs by hand. Every request is recorded by the workers; the harness reads the
chunks as they land, cuts them into windows by intended send time, scrapes the server's
Prometheus metrics at each window edge, and stops Locust once the last three windows agree.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import sys
import time
from pathlib import Path

import numpy as np
import psutil

from harness.errors import ConfigError, LoadError
from harness.load import distributed, promscrape, status
from harness.metrics import Measurement, agree, measure
from harness.procs import spawn, stop_group
from harness.samples import Samples
from harness.servers.base import Endpoint, is_loopback, log_tail

ROOT = Path(__file__).resolve().parents[2]


@dataclasses.dataclass(frozen=True, kw_only=True)
class LoadSpec:
    protocol: str = "grpc"  # "grpc" or "rest"
    users: int = 16  # closed loop: concurrent users, each waiting for its answer
    rate: float = 0.0  # open loop when > 0: requests/s in total
    arrivals: str = "poisson"  # open loop: "poisson" or "constant"
    request_sizes: str = "1"
    signature_name: str = "serving_default"
    warmup_s: float = 5.0
    window_s: float = 5.0
    min_windows: int = 3
    max_windows: int = 8
    tolerance: float = 0.10
    processes: int = 1  # local Locust processes; above 1 (or with remote workers): master/workers
    cpus: tuple[int, ...] | None = None  # cores for the generator
    request_timeout_s: float = 30.0
    remote_workers: int = 0  # workers on other machines that connect to our master
    master_bind_host: str = "127.0.0.1"  # where the master listens for workers
    master_port: int = 0  # 0: a free port (5557, Locust's default, once remote workers join)

    @property
    def distributed(self) -> bool:
        return self.processes > 1 or self.remote_workers > 0

    @property
    def workers(self) -> int:
        return self.processes + self.remote_workers if self.distributed else 1

    def check(self) -> None:
        if self.protocol not in ("grpc", "rest"):
            raise ConfigError(f"protocol must be grpc or rest, not {self.protocol!r}")
        if self.rate < 0 or self.users < 1:
            raise ConfigError("users must be >= 1 and rate >= 0")
        if self.arrivals not in ("poisson", "constant"):
            raise ConfigError(f"arrivals must be poisson or constant, not {self.arrivals!r}")
        if (
            self.window_s <= 0
            or self.warmup_s < 0
            or self.max_windows < self.min_windows
            or self.min_windows < 1
        ):
            raise ConfigError(
                "need window_s > 0, warmup_s >= 0 and 1 <= min_windows <= max_windows"
            )
        if (
            self.processes < 0
            or self.remote_workers < 0
            or self.processes + self.remote_workers < 1
        ):
            raise ConfigError(
                "need processes >= 0 and remote_workers >= 0, with at least one of them > 0"
            )
        if not 0 <= self.master_port < 65536:
            raise ConfigError(f"master_port {self.master_port} is not a port number")


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunResult:
    measurement: Measurement  # over every measured window
    windows: list[Measurement]
    stable: bool
    server: dict  # the server's view over the measured windows (batches formed, queueing)
    window_server: list[dict]
    generator_cpu: float  # share of the generator's cores its processes used
    generator_bound: bool  # over 90%: the generator, not the server, may be the limit
    samples_dir: Path
    warnings: list[str]
    oversize: list[dict]  # INVALID_ARGUMENT "Task size N is larger than ... M": counts by (N, M)
    workers: list[dict] = dataclasses.field(default_factory=list)  # master/worker mode only

    def summary(self) -> dict:
        m = self.measurement.to_dict()
        m.update(
            stable=self.stable,
            windows=len(self.windows),
            server=self.server,
            oversize=self.oversize,
            generator_cpu=round(self.generator_cpu, 3),
            generator_bound=self.generator_bound,
            warnings=self.warnings,
        )
        if self.workers:
            m["workers"] = self.workers
        return m


def locustfile(protocol: str) -> Path:
    path = ROOT / "locustfiles" / f"{protocol}.py"
    if path.is_file():
        return path
    raise LoadError(f"locustfile {path} is missing", hint="run from a checkout of the harness")


def locust_command(
    endpoint: Endpoint,
    spec: LoadSpec,
    record_dir: Path,
    run_time_s: int,
    master_port: int | None = None,
) -> list[str]:
    """The one Locust process of a plain run, or the master when ``master_port`` is given."""
    host = f"grpc://{endpoint.grpc_target}" if spec.protocol == "grpc" else endpoint.rest_url
    users = spec.users if spec.rate <= 0 else max(1, spec.workers)
    cmd = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(locustfile(spec.protocol)),
        "--headless",
        "--host",
        host,
        "-u",
        str(users),
        "-r",
        str(users),
        "--run-time",
        f"{run_time_s}s",
        "--model-name",
        endpoint.model_name,
        "--signature-name",
        spec.signature_name,
        "--request-sizes",
        spec.request_sizes,
        "--record-dir",
        str(record_dir),
        "--request-timeout",
        str(spec.request_timeout_s),
        "--only-summary",
        "--loglevel",
        "WARNING",
        "--stop-timeout",
        "5",
    ]
    if spec.rate > 0:
        cmd += ["--arrival-rate", str(spec.rate), "--arrivals", spec.arrivals]
    if master_port is not None:
        cmd += [
            "--master",
            "--master-bind-host",
            spec.master_bind_host,
            "--master-bind-port",
            str(master_port),
            "--expect-workers",
            str(spec.workers),
            "--expect-workers-max-wait",
            str(int(WORKER_WAIT_S)),
        ]
    return cmd


WORKER_WAIT_S = 60.0  # how long the master waits for every worker to connect


def worker_command(protocol: str, master_host: str, master_port: int) -> list[str]:
    """A Locust worker: the same command runs beside the harness or on another machine."""
    return [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(locustfile(protocol)),
        "--worker",
        "--master-host",
        master_host,
        "--master-port",
        str(master_port),
        "--loglevel",
        "WARNING",
    ]


def _master_port(spec: LoadSpec) -> int:
    if spec.master_port:
        return spec.master_port
    if spec.remote_workers:
        return 5557  # remote workers need a port known in advance: Locust's own default
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _local_master_host(bind: str) -> str:
    return "127.0.0.1" if bind in ("", "*", "0.0.0.0", "127.0.0.1", "localhost") else bind


def _cpu_seconds(proc: psutil.Process) -> float:
    total = 0.0
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


class _Procs:
    """The Locust processes of one measurement: one alone, or a master and its local workers."""

    def __init__(self, master, workers, log_path: Path) -> None:
        self.master = master
        self.workers = workers  # [(Popen, log path)]
        self.log_path = log_path

    def poll(self):
        """The master's exit code; a local worker that exited raises WorkerLost."""
        for i, (w, log) in enumerate(self.workers):
            if w.poll() is not None:
                raise distributed.WorkerLost(
                    f"local load worker {i + 1} exited with code {w.returncode} during the "
                    f"measurement: the window is invalid\n{log_tail(log.read_text(errors='replace'))}"
                )
        return self.master.poll()

    @property
    def returncode(self):
        return self.master.returncode

    def stop(self) -> None:
        stop_group(self.master, 15)  # Locust stops its users and flushes its samples on SIGTERM
        for w, _ in self.workers:
            stop_group(w, 15)


def run_load(endpoint: Endpoint, spec: LoadSpec, workdir: Path, *, check_server=None) -> RunResult:
    """Drive ``endpoint`` with ``spec`` and measure; ``check_server()`` raises if the server died."""
    spec.check()
    workdir = Path(workdir).resolve()  # Locust runs in workdir: relative paths would land inside it
    record_dir = workdir / "samples"
    shutil.rmtree(record_dir, ignore_errors=True)
    record_dir.mkdir(parents=True)
    run_time = int(spec.warmup_s + spec.max_windows * spec.window_s + 30)
    log_path = workdir / "locust.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCUST_")}
    workers = []
    if not spec.distributed:
        cmd = locust_command(endpoint, spec, record_dir, run_time)
        proc = spawn(cmd, log_path, spec.cpus, env=env, cwd=workdir)
    else:
        port = _master_port(spec)
        cmd = locust_command(endpoint, spec, record_dir, run_time + int(WORKER_WAIT_S), port)
        proc = spawn(cmd, log_path, spec.cpus, env=env, cwd=workdir)
        wcmd = worker_command(spec.protocol, _local_master_host(spec.master_bind_host), port)
        cpus = spec.cpus or tuple(sorted(os.sched_getaffinity(0)))
        for i in range(spec.processes):  # each local worker on its own core, round robin
            log = workdir / f"locust-worker-{i + 1}.log"
            workers.append((spawn(wcmd, log, (cpus[i % len(cpus)],), env=env, cwd=workdir), log))
    procs = _Procs(proc, workers, log_path)
    try:
        return _measure_windows(procs, endpoint, spec, record_dir, log_path, check_server)
    finally:
        procs.stop()


def _wait_first_sample(
    proc, record_dir: Path, log_path: Path, check_server, timeout: float = 60.0
) -> float:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise LoadError(
                f"Locust exited with code {proc.returncode} before sending\n"
                f"{log_tail(log_path.read_text(errors='replace'))}"
            )
        if check_server:
            check_server()
        if any(record_dir.glob("samples-*.npz")):
            return Samples.read(record_dir)["t_intended"].min()
        time.sleep(0.2)
    raise LoadError(
        f"no request was recorded within {timeout:.0f}s\n{log_tail(log_path.read_text(errors='replace'))}"
    )


def _measure_windows(procs, endpoint, spec, record_dir, log_path, check_server) -> RunResult:
    ps = [psutil.Process(p.pid) for p in (procs.master, *(w for w, _ in procs.workers))]
    wait = 60.0 + (WORKER_WAIT_S if spec.distributed else 0.0)
    first = _wait_first_sample(procs, record_dir, log_path, check_server, wait)
    start = first + spec.warmup_s
    _sleep_until(start + 0.5, procs, check_server, log_path)

    def poll():
        _check(procs, check_server, log_path)

    if spec.distributed:  # every worker alive and reporting before the first window counts
        distributed.wait_window(record_dir, start, spec.workers, poll)
    status0 = distributed.read_status(record_dir)
    windows: list[Measurement] = []
    views: list[dict] = []
    scrape0 = prev = promscrape.scrape(endpoint.metrics_url)
    cpu0, wall0 = sum(map(_cpu_seconds, ps)), time.time()
    stable = False
    for i in range(spec.max_windows):
        edge = start + (i + 1) * spec.window_s
        # wait for the window's requests to be answered and flushed (chunks land every second)
        _sleep_until(edge + 1.5, procs, check_server, log_path)
        if spec.distributed:  # a worker that died makes this window invalid, not smaller
            distributed.wait_window(record_dir, edge, spec.workers, poll)
        now_scrape = promscrape.scrape(endpoint.metrics_url)
        samples = Samples.read(record_dir)
        windows.append(measure(samples, edge - spec.window_s, edge))
        views.append(promscrape.server_view(prev, now_scrape))
        prev = now_scrape
        if len(windows) >= spec.min_windows:
            last = windows[-3:]
            if agree([w.throughput_rps for w in last], spec.tolerance) and agree(
                [w.p99_ms for w in last], spec.tolerance
            ):
                stable = True
                break
    cpu1, wall1 = sum(map(_cpu_seconds, ps)), time.time()
    end = start + len(windows) * spec.window_s
    samples = Samples.read(record_dir)
    overall = measure(samples, start, end)
    n_cpus = len(spec.cpus) if spec.cpus else (os.cpu_count() or 1)
    # the local load processes (master and local workers) over the cores they may use
    gen_cpu = (cpu1 - cpu0) / max(wall1 - wall0, 1e-9) / max(min(n_cpus, max(spec.processes, 1)), 1)
    warnings = []
    workers = []
    if spec.distributed:
        workers = distributed.worker_figures(status0, distributed.read_status(record_dir))
        shares = [w["cpu"] for w in workers if w["cpu"] is not None]
        # the busiest worker (one process, one core) or the local cores, whichever is fuller
        gen_cpu = max([gen_cpu, *shares])
        for w in workers:
            if w["skew_s"] is not None and abs(w["skew_s"]) > distributed.SKEW_WARN_S:
                warnings.append(
                    f"worker {w['worker']}'s clock is {w['skew_s'] * 1000:+.0f} ms off the "
                    "master's (plus network delay): samples may land in the wrong window; "
                    "sync clocks (NTP)"
                )
    if not stable:
        warnings.append(
            f"unstable: the last windows differ by more than {spec.tolerance:.0%} "
            "in throughput or p99"
        )
    if gen_cpu > 0.9:
        warnings.append(
            f"the load generator used {gen_cpu:.0%} of its cores: it may be the bottleneck "
            "(add --processes or cores)"
        )
    if spec.rate > 0 and overall.requests and overall.late_sends > 0.01 * overall.requests:
        warnings.append(
            f"the generator fell behind: {overall.late_sends} of {overall.requests} sends "
            "were more than 1 ms late"
        )
    if overall.requests == 0:
        warnings.append("no request was due in the measured windows")
    if spec.remote_workers and is_loopback(endpoint.host):
        warnings.append(
            f"the server is reached at {endpoint.host}, a loopback address: only load workers "
            "on this machine can reach it (server.bind_host and server.advertise_host let "
            "workers on other machines in)"
        )
    return RunResult(
        measurement=overall,
        windows=windows,
        stable=stable,
        server=promscrape.server_view(scrape0, prev),
        window_server=views,
        generator_cpu=gen_cpu,
        generator_bound=gen_cpu > 0.9,
        samples_dir=record_dir,
        warnings=warnings,
        oversize=oversize_counts(samples, start, end),
        workers=workers,
    )


def oversize_counts(samples: Samples, t0: float, t1: float) -> list[dict]:
    """INVALID_ARGUMENT "Task size N is larger than maximum batch size M" in [t0, t1), by N."""
    limits = {size: limit for (size, limit) in samples.oversize}
    window = samples.between(t0, t1)
    mask = window["code"] == status.CODES["INVALID_ARGUMENT"]
    sizes, counts = np.unique(window["size"][mask], return_counts=True)
    return [
        {"size": int(s), "limit": limits[int(s)], "count": int(n)}
        for s, n in zip(sizes, counts)
        if int(s) in limits
    ]


def _check(proc, check_server, log_path: Path) -> None:
    if proc.poll() is not None:
        raise LoadError(
            f"Locust exited early with code {proc.returncode}\n"
            f"{log_tail(log_path.read_text(errors='replace'))}"
        )
    if check_server:
        check_server()


def _sleep_until(t: float, proc, check_server, log_path: Path) -> None:
    while True:
        left = t - time.time()
        if left <= 0:
            return
        _check(proc, check_server, log_path)
        time.sleep(min(left, 0.25))
