"""``harness profile``: measure what the simulator needs, on the experiment's own server and cores.

The measuring side of the simulator: it drives real servers and real load through the trial
runner, so it lives with the tuner; the profile it writes (``harness.sim.profile``) is all the
simulator reads. Three parts, because they need different instruments:

1. Execution time per batch size, timed offline in a child process holding the model
   (``harness.tuning.offline_timing``).
2. The request path, per protocol, through a real server started by the experiment's backend
   with batches of one (``max_batch_size`` 1: every request runs alone) and the experiment's load
   generator on its own cores:
   - 8 users, requests of 1 row: the server core is saturated; its CPU per request (from the
     server process's CPU time when the backend has a process here, else 1 / throughput) minus
     the batch-of-1 execution time is the request path's CPU;
   - 8 users, requests of 2 rows: every one is refused (INVALID_ARGUMENT) after it was decoded:
     the CPU of a rejected request;
   - 1 user: the latency floor; what is left after server CPU and client CPU is the round trip.
   The load generator's CPU per request comes from its measured CPU share.
   With our reference server run by the process backend, the busy run instead has the
   experiment's users on a server with its batch trace on (``harness.tuning.batch_traces``), and
   so has the busy batching run of part 3; ``harness.sim.calibrate.from_traces`` splits the
   served CPU from the two traces.
3. Pauses: a Python server holding TensorFlow pauses for a full garbage collection (~0.2 s
   here) every few thousand requests. The collection's cost is timed offline; how often a busy
   server pauses is counted from the gaps in its answers under a batching config at full speed.
   Splitting the request path's CPU into the part before the queue and the part after it cannot
   be measured from outside; half and half is assumed (stated in the profile).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path

from harness.batching import BatchingParameters
from harness.config import Experiment
from harness.errors import ServerError
from harness.procs import tree_cpu_seconds
from harness.sim import calibrate
from harness.sim import profile as profiles
from harness.sim.calibrate import SPLIT_IN
from harness.sim.profile import Overhead, Profile, environment
from harness.tuning.batch_traces import Tracer, traceable
from harness.tuning.offline_timing import offline_exec
from harness.tuning.space import TrialConfig, largest_batch_size


def ensure_profile(
    exp: Experiment,
    *,
    path: Path | None = None,
    protocols: list[str] | None = None,
    max_size: int | None = None,
    workdir: Path | None = None,
    force: bool = False,
    echo=print,
) -> Profile:
    """The experiment's profile: loaded when one covering it exists, else measured and saved."""
    path = Path(path) if path else profiles.profile_path_for(exp)
    protocols = protocols or [exp.load.protocol]
    need = max_size or largest_batch_size(exp.search)
    if path.exists() and not force:
        prof = profiles.load(path)
        same_cpu = prof.environment.get("cpu_model") == environment(None)["cpu_model"]
        if prof.max_size() >= need and all(p in prof.overhead for p in protocols) and same_cpu:
            echo(f"profile: {path} (measured {prof.environment.get('measured_at', '?')})")
            return prof
        echo(f"profile {path} does not cover this study (sizes, protocols or CPU): measuring again")
    prof = measure(
        exp,
        protocols=protocols,
        max_size=need,
        workdir=workdir or path.parent / f".work-{path.stem}",
        echo=echo,
    )
    profiles.save(prof, path)
    prof = dataclasses.replace(prof, path=str(path))
    echo(f"profile saved: {path}")
    return prof


def _cpu_seconds(server) -> float | None:
    """The server's process tree's CPU seconds; None where the backend runs no process here."""
    proc = getattr(server, "proc", None)
    return None if proc is None else tree_cpu_seconds(proc.pid)


def _no_wait(max_batch_size: int) -> TrialConfig:
    """One batch thread that runs whatever is queued at once, with a queue that never refuses:
    the configs the profile's served runs use."""
    return TrialConfig(
        batching=BatchingParameters(
            max_batch_size=max_batch_size,
            batch_timeout_micros=0,
            num_batch_threads=1,
            max_enqueued_batches=1_000_000,
        )
    )


@contextlib.contextmanager
def _serving(runner, cfg: TrialConfig, workdir: Path):
    """A server started by the experiment's backend with ``cfg``, stopped on the way out."""
    server = runner.backend.start(runner.server_spec(cfg), workdir)
    try:
        yield server
    finally:
        server.stop()


def _load_run(
    runner,
    server,
    protocol: str,
    users: int,
    sizes: str,
    workdir: Path,
    seconds: float,
    min_gap_s: float = 0.08,
) -> dict:
    """One load run against ``server``: its rates, CPU per request on both sides and pauses."""
    base = runner.load_for(TrialConfig(batching=None, users=users))
    spec = dataclasses.replace(
        base,
        protocol=protocol,
        rate=0.0,
        request_sizes=sizes,
        warmup_s=2.0,
        window_s=seconds,
        min_windows=2,
        max_windows=3,
    )
    cpu0, t0 = _cpu_seconds(server), time.monotonic()
    run = runner.run_load(server, spec, workdir)
    cpu1, t1 = _cpu_seconds(server), time.monotonic()
    m = run.measurement
    rate = m.requests / m.seconds if m.seconds else 0.0
    gaps = _stalls(run.samples_dir, min_gap_s)
    share = (cpu1 - cpu0) / (t1 - t0) if cpu0 is not None and cpu1 is not None else None
    load_cores = len(runner.load_cpus) if runner.load_cpus else 1
    return {
        "users": users,
        "request_sizes": sizes,
        "requests_per_s": rate,
        "ok_per_s": m.throughput_rps,
        "p50_ms": m.p50_ms,
        "errors": m.errors,
        "server_cpu_share": share,
        "server_cpu_per_request_us": share / rate * 1e6 if share and rate else None,
        "client_cpu_per_request_us": run.generator_cpu * load_cores / rate * 1e6 if rate else None,
        "answered": gaps[0],
        "stalls_ms": gaps[1],
        "mean_batch_size": run.server.get("mean_batch_size"),
    }


def _stalls(samples_dir, min_gap_s: float = 0.08) -> tuple[int, list[float]]:
    """Answered requests, and the gaps (ms) in which a busy server answered nothing: its pauses."""
    import numpy as np

    from harness.samples import Samples

    s = Samples.read(samples_dir)
    if not len(s):
        return 0, []
    done = np.sort(s["t_intended"] + s["latency_us"] / 1e6)
    gaps = np.diff(done)
    return len(done), [round(float(g) * 1e3, 1) for g in gaps[gaps > min_gap_s]]


def gc_stalls(
    runner,
    protocol: str,
    exec_us: dict[int, dict],
    workdir: Path,
    echo,
    tracer=None,
    offline_pause_ms: float = 0.0,
) -> dict:
    """How often a busy server pauses: a batching config at full speed for ~12 s (the largest
    batch that runs in 20 ms, so answers flow steadily), and the gaps in its answers longer than
    80 ms (or four batches, or three quarters of a collection's offline time) counted."""
    quick = [s for s in sorted(exec_us) if exec_us[s]["median"] <= 20_000] or [1]
    mbs = quick[-1]
    # a gap shorter than three quarters of a full collection's offline time is not one (a
    # single 81 ms gap in 23,000 answers of a server that freezes its objects was noise)
    min_gap_s = max(0.08, 4 * exec_us[mbs]["median"] / 1e6, 0.75 * offline_pause_ms / 1e3)
    with _serving(runner, _no_wait(mbs), workdir / "server-stalls") as server:
        run = _load_run(
            runner, server, protocol, 2 * mbs + 4, "1", workdir / "stalls", 5.0, min_gap_s
        )
    if tracer is not None:
        run["trace"] = tracer.collect(skip_s=2.0)
    n, gaps = run["answered"], run["stalls_ms"]
    echo(
        f"  busy batching server: {run['ok_per_s']:.0f} req/s, mean batch "
        f"{run['mean_batch_size']}, {n} answers, {len(gaps)} pauses {gaps[:6]} ms"
    )
    return {
        "every_requests": n / len(gaps) if gaps else 0.0,
        "pause_ms_seen": sorted(gaps)[len(gaps) // 2] if gaps else None,
        "answered": n,
        "pauses": len(gaps),
        "busy_run": run,
    }


def request_path(
    runner, protocol: str, exec1_us: float, workdir: Path, echo, tracer: Tracer | None = None
) -> Overhead:
    """The three runs of the module's docstring. With a tracer, the busy run has the
    experiment's users on a server of its own, traced: its summary is kept in the result's
    ``measured["busy_trace"]``."""
    cfg = _no_wait(1)
    traced = None
    if tracer is not None:
        users = max(runner.exp.load.users or 0, 8)
        with _serving(runner, cfg, workdir / f"server-{protocol}-busy") as server:
            busy = _load_run(
                runner, server, protocol, users, "1", workdir / f"{protocol}-busy", 3.0
            )
        traced = tracer.collect(skip_s=2.0)
        echo(f"  {protocol} {users} users, traced: {busy['ok_per_s']:.0f} req/s")
    with _serving(runner, cfg, workdir / f"server-{protocol}") as server:
        if tracer is None:
            busy = _load_run(runner, server, protocol, 8, "1", workdir / f"{protocol}-busy", 3.0)
            echo(f"  {protocol} 8 users: {busy['ok_per_s']:.0f} req/s")
        rej = _load_run(runner, server, protocol, 8, "2", workdir / f"{protocol}-reject", 2.0)
        echo(f"  {protocol} 8 users, all refused: {rej['requests_per_s']:.0f} req/s")
        one = _load_run(runner, server, protocol, 1, "1", workdir / f"{protocol}-one", 2.0)
        echo(f"  {protocol} 1 user: p50 {one['p50_ms']:.2f} ms")
    if tracer is not None:
        tracer.collect(skip_s=0.0)  # the refusal and one-user runs' batches: not a busy server
    if not busy["ok_per_s"] or not rej["requests_per_s"] or one["p50_ms"] is None:
        raise ServerError(f"profiling the {protocol} path got no answers: {busy} {rej} {one}")
    oh = derive(busy, rej, one, exec1_us)
    if traced:
        oh.measured["busy_trace"] = traced
    return oh


def derive(busy: dict, rej: dict, one: dict, exec1_us: float) -> Overhead:
    """The request path's costs from the three runs (see the module's docstring)."""
    per_ok = busy["server_cpu_per_request_us"] or 1e6 / busy["ok_per_s"]
    path_us = max(per_ok - exec1_us, 1.0)
    per_rej = rej["server_cpu_per_request_us"] or 1e6 / rej["requests_per_s"]
    cpu_in = SPLIT_IN * path_us
    # the client's CPU per request at its busiest (the refusal run): at low rates a gevent loop's
    # fixed costs inflate the per-request figure
    seen = [r["client_cpu_per_request_us"] for r in (busy, rej) if r["client_cpu_per_request_us"]]
    client = min(seen) if seen else 0.0
    rtt = max(one["p50_ms"] * 1e3 - exec1_us - path_us - client, 0.0)
    return Overhead(
        cpu_in_us=cpu_in,
        cpu_out_us=path_us - cpu_in,
        reject_us=max(per_rej - cpu_in, 1.0),
        rtt_us=rtt,
        client_us=client,
        measured={
            "busy": busy,
            "reject": rej,
            "one_user": one,
            "assumed": f"{SPLIT_IN:.0%} of the request path's CPU is spent before the queue",
        },
    )


def measure(
    exp: Experiment,
    *,
    protocols: list[str],
    max_size: int,
    workdir: Path,
    budget_s: float = 0.5,
    echo=print,
) -> Profile:
    """Measure the experiment's profile (the three parts of the module's docstring)."""
    from harness.tuning.trial import TrialRunner

    tracer = Tracer() if traceable(exp) else None
    try:
        runner = TrialRunner(exp)
        try:
            exec_us, gc = offline_exec(
                runner.model_dir, runner.server_cpus, max_size, exp.model.signature, budget_s, echo
            )
            overhead = {}
            for proto in protocols:
                echo(f"measuring the {proto} request path through a {exp.server.backend} server")
                overhead[proto] = request_path(
                    runner, proto, exec_us[1]["median"], workdir, echo, tracer
                )
            gc.update(
                gc_stalls(
                    runner, protocols[0], exec_us, workdir, echo, tracer, gc["offline_pause_ms"]
                )
            )
        finally:
            runner.close()
    finally:
        if tracer is not None:
            tracer.close()
    prof = _assemble(exp, runner, exec_us, overhead, _pauses(gc))
    ones = {p: o.measured.get("busy_trace") for p, o in overhead.items()}
    big = (gc.get("busy_run") or {}).get("trace")
    prof = calibrate.split(prof, ones, big, echo)
    echo(f"  per-batch server cost beyond the model: {prof.batch_overhead_us:.0f} us")
    return prof


def _pauses(gc: dict) -> dict:
    """The pause the simulator models: a collection's CPU is what it costs offline (the gaps a
    busy server shows are longer because batches share the core meanwhile, which the simulator
    models itself), and none when no pause was seen."""
    gc["pause_ms"] = gc["offline_pause_ms"] if gc["every_requests"] else 0.0
    return gc


def _assemble(exp: Experiment, runner, exec_us: dict, overhead: dict, gc: dict) -> Profile:
    """The profile of the measured parts, with where it was measured."""
    cpus = runner.server_cpus
    env = environment(cpus)
    env.update(
        backend=exp.server.backend,
        binary=exp.server.binary,
        model_dir=str(runner.model_dir),
        load_cpus=list(runner.load_cpus or []),
        measured_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    return Profile(
        model=runner.model_name,
        backend=exp.server.backend,
        cores=len(cpus) if cpus else (env.get("machine_cores") or 1),
        exec_us=exec_us,
        overhead=overhead,
        environment=env,
        gc=gc,
    )
