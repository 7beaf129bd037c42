"""One measurement: Locust in a child process, a warm-up, then windows until the figures settle.

Locust runs as its own process (it monkey-patches the interpreter with gevent) with the same
locustfiles a user runs by hand. Every request is recorded by the workers; the harness reads the
chunks as they land, cuts them into windows by intended send time, scrapes the server's
Prometheus metrics at each window edge, and stops Locust once the last three windows agree.

What to send and how long to measure is the experiment's ``LoadConfig`` as it is; what is known
only at run time (the cores the generator was given, the model's signature) comes beside it.
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

from harness.config import LOCUST_MASTER_PORT, LoadConfig, Protocol, parse_traffic
from harness.endpoint import Endpoint, is_loopback, log_tail
from harness.errors import LoadError
from harness.load import distributed, payloads, promscrape, status
from harness.metrics import Measurement, agree, measure
from harness.procs import spawn, stop_group, tree_cpu_seconds
from harness.samples import Samples

# The locustfiles ship inside the package (the checkout's top-level locustfiles/ is a link to
# them), so an installed harness measures with the files a user can run by hand.
LOCUSTFILES = Path(__file__).resolve().parents[1] / "locustfiles"


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
    span: tuple[float, float] = (0.0, 0.0)  # wall-clock start and end of the measured windows
    # several models (load.traffic): each model's figures over the measured windows, by name
    models: dict[str, Measurement] = dataclasses.field(default_factory=dict)

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
        if self.models:
            m["models"] = {name: mm.to_dict() for name, mm in self.models.items()}
        return m


def traffic_models(load: LoadConfig, model_name: str) -> list[str]:
    """The models a load sends to, in the order the request records number them."""
    return [name for name, _ in parse_traffic(load.traffic)] if load.traffic else [model_name]


def per_model(samples: Samples, models: list[str], t0: float, t1: float) -> dict[str, Measurement]:
    """Each model's figures over [t0, t1); empty for a load to one model."""
    if len(models) < 2:
        return {}
    return {name: measure(samples.of_model(i), t0, t1) for i, name in enumerate(models)}


def locustfile(protocol: str) -> Path:
    path = LOCUSTFILES / f"{protocol}.py"
    if path.is_file():
        return path
    raise LoadError(
        f"locustfile {path} is missing", hint="reinstall tfs-harness (the package ships it)"
    )


def locust_command(
    endpoint: Endpoint,
    load: LoadConfig,
    record_dir: Path,
    run_time_s: int,
    signature: str = "serving_default",
    master_port: int | None = None,
) -> list[str]:
    """The one Locust process of a plain run, or the master when ``master_port`` is given."""
    host = f"grpc://{endpoint.grpc_target}" if load.protocol == Protocol.GRPC else endpoint.rest_url
    users = load.users if load.rate <= 0 else max(1, load.workers)
    cmd = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(locustfile(load.protocol)),
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
        signature,
        "--request-sizes",
        load.request_sizes,
        "--record-dir",
        str(record_dir),
        "--request-timeout",
        str(load.request_timeout_s),
        "--only-summary",
        "--loglevel",
        "WARNING",
        "--stop-timeout",
        "5",
    ]
    if load.rate > 0:
        cmd += ["--arrival-rate", str(load.rate), "--arrivals", str(load.arrivals)]
    if load.traffic:
        cmd += ["--traffic", load.traffic]
    if load.payload:  # absolute: Locust runs in the measurement's folder
        cmd += ["--payload", str(Path(load.payload).resolve())]
    if load.input_shapes:
        cmd += ["--input-shapes", ";".join(load.input_shapes)]
    if master_port is not None:
        cmd += [
            "--master",
            "--master-bind-host",
            load.master_bind_host,
            "--master-bind-port",
            str(master_port),
            "--expect-workers",
            str(load.workers),
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


def _master_port(load: LoadConfig) -> int:
    if load.master_port:
        return load.master_port
    if load.remote_workers:
        return LOCUST_MASTER_PORT  # remote workers need a port known in advance
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _local_master_host(bind: str) -> str:
    return "127.0.0.1" if bind in ("", "*", "0.0.0.0", "127.0.0.1", "localhost") else bind


class _Procs:
    """The Locust processes of one measurement (one alone, or a master and its local workers),
    watched together with the server they load: ``check`` raises when either has gone."""

    def __init__(self, master, workers, log_path: Path, check_server=None) -> None:
        self.master = master
        self.workers = workers  # [(Popen, log path)]
        self.log_path = log_path
        self.check_server = check_server

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

    def log(self) -> str:
        return log_tail(self.log_path.read_text(errors="replace"))

    def check(self) -> None:
        """Raise if Locust exited early or the server died."""
        if self.poll() is not None:
            raise LoadError(f"Locust exited early with code {self.returncode}\n{self.log()}")
        if self.check_server:
            self.check_server()

    def sleep_until(self, t: float) -> None:
        while True:
            left = t - time.time()
            if left <= 0:
                return
            self.check()
            time.sleep(min(left, 0.25))

    def cpu_seconds(self) -> float:
        """CPU time of the local load processes and their children so far."""
        return sum(tree_cpu_seconds(p) or 0.0 for p in self._ps)

    def watch_cpu(self) -> None:
        self._ps = [psutil.Process(p.pid) for p in (self.master, *(w for w, _ in self.workers))]

    def stop(self) -> None:
        stop_group(self.master, 15)  # Locust stops its users and flushes its samples on SIGTERM
        for w, _ in self.workers:
            stop_group(w, 15)


def run_load(
    endpoint: Endpoint,
    load: LoadConfig,
    workdir: Path,
    *,
    cpus: tuple[int, ...] | None = None,
    signature: str = "serving_default",
    check_server=None,
) -> RunResult:
    """Drive ``endpoint`` with ``load`` and measure; ``cpus``: the cores the generator may use
    (None: any); ``signature``: the model's; ``check_server()`` raises if the server died."""
    load.check()
    for model in traffic_models(load, endpoint.model_name):
        payloads.preflight(_server_signature(endpoint, load, signature, model), load, signature)
    workdir = Path(workdir).resolve()  # Locust runs in workdir: relative paths would land inside it
    record_dir = workdir / "samples"
    shutil.rmtree(record_dir, ignore_errors=True)
    record_dir.mkdir(parents=True)
    run_time = int(load.warmup_s + (load.max_windows + load.extra_windows) * load.window_s + 30)
    log_path = workdir / "locust.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCUST_")}
    workers = []
    if not load.distributed:
        cmd = locust_command(endpoint, load, record_dir, run_time, signature)
        proc = spawn(cmd, log_path, cpus, env=env, cwd=workdir)
    else:
        port = _master_port(load)
        cmd = locust_command(
            endpoint, load, record_dir, run_time + int(WORKER_WAIT_S), signature, port
        )
        proc = spawn(cmd, log_path, cpus, env=env, cwd=workdir)
        wcmd = worker_command(load.protocol, _local_master_host(load.master_bind_host), port)
        cores = cpus or tuple(sorted(os.sched_getaffinity(0)))
        for i in range(load.processes):  # each local worker on its own core, round robin
            log = workdir / f"locust-worker-{i + 1}.log"
            workers.append((spawn(wcmd, log, (cores[i % len(cores)],), env=env, cwd=workdir), log))
    procs = _Procs(proc, workers, log_path, check_server)
    try:
        return _measure_windows(procs, endpoint, load, cpus, record_dir)
    finally:
        procs.stop()


def _server_signature(endpoint: Endpoint, load: LoadConfig, signature: str, model: str):
    """The model's inputs as the server describes them, through the protocol under test."""
    if load.protocol == Protocol.GRPC:
        return payloads.signature_from_grpc(endpoint.grpc_target, model, signature)
    return payloads.signature_from_rest(endpoint.rest_url, model, signature)


def _reported_error(log: str) -> str | None:
    """The ``error: ...`` line a Locust user printed before stopping the run, if any."""
    lines = [line for line in log.splitlines() if line.startswith("error: ")]
    return lines[-1][len("error: ") :] if lines else None


def _wait_first_sample(procs: _Procs, record_dir: Path, timeout: float = 60.0) -> float:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if procs.poll() is not None:
            reported = _reported_error(procs.log())
            if reported:
                raise LoadError(f"the load generator stopped: {reported}")
            raise LoadError(
                f"Locust exited with code {procs.returncode} before sending\n{procs.log()}"
            )
        if procs.check_server:
            procs.check_server()
        if any(record_dir.glob("samples-*.npz")):
            return Samples.read(record_dir)["t_intended"].min()
        time.sleep(0.2)
    raise LoadError(f"no request was recorded within {timeout:.0f}s\n{procs.log()}")


def _measure_windows(procs: _Procs, endpoint, load: LoadConfig, cpus, record_dir) -> RunResult:
    procs.watch_cpu()
    wait = 60.0 + (WORKER_WAIT_S if load.distributed else 0.0)
    first = _wait_first_sample(procs, record_dir, wait)
    start = first + load.warmup_s
    # The server's counters are read at the windows' edges, so that each window's server view
    # covers the same seconds as its requests (read late, the first window's view held a third
    # more rows than its requests: the warm-up's tail and the next window's head).
    procs.sleep_until(start)
    scrape0 = promscrape.scrape(endpoint.metrics_url)
    procs.sleep_until(start + 0.5)
    if load.distributed:  # every worker alive and reporting before the first window counts
        distributed.wait_window(record_dir, start, load.workers, procs.check)
    status0 = distributed.read_status(record_dir)
    cpu0, wall0 = procs.cpu_seconds(), time.time()
    windows, views, last_scrape, stable = _windows(
        procs, endpoint, load, record_dir, start, scrape0
    )
    cpu1, wall1 = procs.cpu_seconds(), time.time()
    end = start + len(windows) * load.window_s
    samples = Samples.read(record_dir)
    overall = measure(samples, start, end)
    n_cpus = len(cpus) if cpus else (os.cpu_count() or 1)
    # the local load processes (master and local workers) over the cores they may use
    gen_cpu = (cpu1 - cpu0) / max(wall1 - wall0, 1e-9) / max(min(n_cpus, max(load.processes, 1)), 1)
    warnings = []
    workers = []
    if load.distributed:
        workers = distributed.worker_figures(status0, distributed.read_status(record_dir))
        gen_cpu = _busiest(gen_cpu, workers)
        warnings += _skew_warnings(workers)
    warnings += _warnings(load, endpoint, overall, stable, gen_cpu)
    return RunResult(
        measurement=overall,
        windows=windows,
        stable=stable,
        server=promscrape.server_view(scrape0, last_scrape),
        window_server=views,
        generator_cpu=gen_cpu,
        generator_bound=gen_cpu > 0.9,
        samples_dir=record_dir,
        warnings=warnings,
        oversize=oversize_counts(samples, start, end),
        workers=workers,
        span=(start, end),
        models=per_model(samples, traffic_models(load, endpoint.model_name), start, end),
    )


def _windows(procs: _Procs, endpoint, load: LoadConfig, record_dir, start: float, scrape0):
    """Windows from ``start`` until the last three agree, or ``max_windows`` plus up to
    ``extra_windows`` more when they still do not: (windows, the server's view of each, the last
    scrape, stable)."""
    windows: list[Measurement] = []
    views: list[dict] = []
    prev = scrape0
    for i in range(load.max_windows + load.extra_windows):
        edge = start + (i + 1) * load.window_s
        procs.sleep_until(edge)
        now_scrape = promscrape.scrape(endpoint.metrics_url)  # at the edge (see above)
        # then wait for the window's requests to be answered and flushed (chunks land every
        # second)
        procs.sleep_until(edge + 1.5)
        if load.distributed:  # a worker that died makes this window invalid, not smaller
            distributed.wait_window(record_dir, edge, load.workers, procs.check)
        samples = Samples.read(record_dir)
        windows.append(measure(samples, edge - load.window_s, edge))
        views.append(promscrape.server_view(prev, now_scrape))
        prev = now_scrape
        if len(windows) >= load.min_windows:
            last = windows[-3:]
            if agree([w.throughput_rps for w in last], load.tolerance) and agree(
                [w.p99_ms for w in last], load.tolerance
            ):
                return windows, views, prev, True
    return windows, views, prev, False


def _busiest(local_cpu: float, workers: list[dict]) -> float:
    """The busiest worker (one process, one core) or the local cores, whichever is fuller."""
    shares = [w["cpu"] for w in workers if w["cpu"] is not None]
    return max([local_cpu, *shares])


def _skew_warnings(workers: list[dict]) -> list[str]:
    return [
        f"worker {w['worker']}'s clock is {w['skew_s'] * 1000:+.0f} ms off the "
        "master's (plus network delay): samples may land in the wrong window; "
        "sync clocks (NTP)"
        for w in workers
        if w["skew_s"] is not None and abs(w["skew_s"]) > distributed.SKEW_WARN_S
    ]


def _warnings(load: LoadConfig, endpoint, overall: Measurement, stable, gen_cpu) -> list[str]:
    warnings = []
    if not stable:
        warnings.append(
            f"unstable: the last windows differ by more than {load.tolerance:.0%} "
            "in throughput or p99"
        )
    if gen_cpu > 0.9:
        warnings.append(
            f"the load generator used {gen_cpu:.0%} of its cores: it may be the bottleneck "
            "(add --processes or cores)"
        )
    if load.rate > 0 and overall.requests and overall.late_sends > 0.01 * overall.requests:
        warnings.append(
            f"the generator fell behind: {overall.late_sends} of {overall.requests} sends "
            "were more than 1 ms late"
        )
    if overall.requests == 0:
        warnings.append("no request was due in the measured windows")
    if load.remote_workers and is_loopback(endpoint.host):
        warnings.append(
            f"the server is reached at {endpoint.host}, a loopback address: only load workers "
            "on this machine can reach it (server.bind_host and server.advertise_host let "
            "workers on other machines in)"
        )
    return warnings


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
