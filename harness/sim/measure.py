"""``harness profile``: measure what the simulator needs, on the experiment's own server and cores.

Two parts, because they need different instruments:

1. Execution time per batch size: the model is loaded with the reference server's own runner
   (``LoadedModel``, the callable the batch threads call) in a child process pinned to the
   server's cores, and each batch size is timed many times (median and the 10th/90th
   percentiles). Offline, so nothing but the model is timed.
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
   experiment's users on a server with its batch trace on, and so has the busy batching run of
   part 3; ``harness.sim.calibrate.from_traces`` splits the served CPU from the two traces.
3. Pauses: a Python server holding TensorFlow pauses for a full garbage collection (~0.2 s
   here) every few thousand requests. The collection's cost is timed offline; how often a busy
   server pauses is counted from the gaps in its answers under a batching config at full speed.
   Splitting the request path's CPU into the part before the queue and the part after it cannot
   be measured from outside; half and half is assumed (stated in the profile).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

from harness.batching import BatchingParameters
from harness.config import Experiment
from harness.errors import HarnessError, ServerError
from harness.sim import calibrate
from harness.sim.calibrate import SPLIT_IN
from harness.sim.profile import Overhead, Profile, environment
from harness.sim.tracing import Tracer, traceable

ROOT = Path(__file__).resolve().parents[2]


def space_max_size(exp: Experiment) -> int:
    """The largest batch the experiment's search space can run."""
    r = exp.search.max_batch_size
    top = max(r.choices) if r.choices else int(r.high or r.low or 1)
    return int(top)


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
    from harness.sim import profile as profiles

    path = Path(path) if path else profiles.profile_path_for(exp)
    protocols = protocols or [exp.load.protocol]
    need = max_size or space_max_size(exp)
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


def batch_sizes(max_size: int) -> list[int]:
    """1, 2, 3, 4, 6, 8, 12, 16, ...: powers of two and the midpoints, up to ``max_size``."""
    out = {max_size}
    p = 1
    while p <= max_size:
        out.add(p)
        if p >= 2 and p + p // 2 <= max_size:
            out.add(p + p // 2)
        p *= 2
    return sorted(out)


_OFFLINE = r"""
import json, os, sys, time
import numpy as np
cpus, path, version, sizes, budget = json.loads(sys.argv[1])
if cpus:
    os.sched_setaffinity(0, set(cpus))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, %(root)r)
from harness.refserver.model import LoadedModel
from harness.refserver.tensors import NUMPY_DTYPE
m = LoadedModel(path, version)
sig = m.signature(%(signature)r)
rng = np.random.default_rng(0)
def feed(b):
    out = []
    for spec in sig.inputs.values():
        shape = [b] + [d if d and d > 0 else 1 for d in spec.shape[1:]]
        out.append(rng.random(shape).astype(NUMPY_DTYPE[spec.dtype]))
    return out
# one size at a time, as a server runs one config: alternating sizes between calls (tried:
# three interleaved rounds) read the small sizes 15 to 17 percent slower than the batch
# thread's own clock in the busy server, against 2 to 3 percent one size at a time
res = {}
for b in sizes:
    x = feed(b)
    m.run(sig, x); m.run(sig, x)
    times = []
    t_end = time.perf_counter() + budget
    while len(times) < 5 or (time.perf_counter() < t_end and len(times) < 400):
        t = time.perf_counter(); m.run(sig, x); times.append(time.perf_counter() - t)
    times = np.array(times) * 1e6
    res[b] = {"median": float(np.median(times)), "p10": float(np.percentile(times, 10)),
              "p90": float(np.percentile(times, 90)), "n": len(times)}
    print(json.dumps({"size": b, **res[b]}), file=sys.stderr, flush=True)
import gc
pauses = []
for _ in range(3):
    t = time.perf_counter(); gc.collect(); pauses.append((time.perf_counter() - t) * 1e3)
print(json.dumps({"exec": res, "gc_ms": sorted(pauses)[1], "objects": len(gc.get_objects())}))
"""


def offline_exec(
    model_dir: Path, cpus, max_size: int, signature: str, budget_s: float, echo
) -> tuple[dict[int, dict], dict]:
    """Execution time per batch size, and how long a full garbage collection takes in a Python
    process holding the model (what the reference server's collections cost)."""
    versions = sorted(int(p.name) for p in Path(model_dir).iterdir() if p.name.isdigit())
    if not versions:
        raise HarnessError(f"no version directory under {model_dir}")
    v = versions[-1]
    sizes = batch_sizes(max_size)
    arg = json.dumps([list(cpus or []), str(Path(model_dir) / str(v)), v, sizes, budget_s])
    code = _OFFLINE % {"root": str(ROOT), "signature": signature}
    echo(f"timing {len(sizes)} batch sizes offline on cpus {list(cpus or [])}: {sizes}")
    proc = subprocess.Popen(
        [sys.executable, "-c", code, arg],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = []
    for line in proc.stderr:
        if line.startswith("{"):
            d = json.loads(line)
            echo(f"  batch {d['size']:>4}: {d['median'] / 1e3:8.2f} ms (n={d['n']})")
        else:
            lines.append(line)
    out = proc.stdout.read()
    if proc.wait() != 0:
        raise HarnessError("offline timing failed: " + "".join(lines[-5:]).strip())
    data = json.loads(out.strip().splitlines()[-1])
    exec_us = {int(k): v for k, v in data["exec"].items()}
    return exec_us, {"offline_pause_ms": data["gc_ms"], "offline_objects": data["objects"]}


def _cpu_seconds(server) -> float | None:
    proc = getattr(server, "proc", None)
    if proc is None:
        return None
    try:
        import psutil

        p = psutil.Process(proc.pid)
        total = sum(p.cpu_times()[:2])
        for c in p.children(recursive=True):
            total += sum(c.cpu_times()[:2])
        return total
    except Exception:  # noqa: BLE001 - gone or not ours: fall back to throughput
        return None


def _load_run(
    runner,
    server,
    protocol: str,
    users: int,
    sizes: str,
    workdir: Path,
    seconds: float,
    min_gap_s: float = 0.08,
):

    from harness.tuning.space import TrialConfig

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
    from harness.tuning.space import TrialConfig

    quick = [s for s in sorted(exec_us) if exec_us[s]["median"] <= 20_000] or [1]
    mbs = quick[-1]
    # a gap shorter than three quarters of a full collection's offline time is not one (a
    # single 81 ms gap in 23,000 answers of a server that freezes its objects was noise)
    min_gap_s = max(0.08, 4 * exec_us[mbs]["median"] / 1e6, 0.75 * offline_pause_ms / 1e3)
    cfg = TrialConfig(
        batching=BatchingParameters(
            max_batch_size=mbs,
            batch_timeout_micros=0,
            num_batch_threads=1,
            max_enqueued_batches=1_000_000,
        )
    )
    server = runner.backend.start(runner.server_spec(cfg), workdir / "server-stalls")
    try:
        run = _load_run(
            runner, server, protocol, 2 * mbs + 4, "1", workdir / "stalls", 5.0, min_gap_s
        )
    finally:
        server.stop()
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


def _batches_of_one():
    from harness.tuning.space import TrialConfig

    return TrialConfig(
        batching=BatchingParameters(
            max_batch_size=1,
            batch_timeout_micros=0,
            num_batch_threads=1,
            max_enqueued_batches=1_000_000,
        )
    )


def request_path(
    runner, protocol: str, exec1_us: float, workdir: Path, echo, tracer: Tracer | None = None
) -> Overhead:
    """The three runs of the module's docstring. With a tracer, the busy run has the
    experiment's users on a server of its own, traced: its summary is kept in the result's
    ``measured["busy_trace"]``."""
    cfg = _batches_of_one()
    traced = None
    if tracer is not None:
        users = max(runner.exp.load.users or 0, 8)
        server = runner.backend.start(runner.server_spec(cfg), workdir / f"server-{protocol}-busy")
        try:
            busy = _load_run(
                runner, server, protocol, users, "1", workdir / f"{protocol}-busy", 3.0
            )
        finally:
            server.stop()
        traced = tracer.collect(skip_s=2.0)
        echo(f"  {protocol} {users} users, traced: {busy['ok_per_s']:.0f} req/s")
    server = runner.backend.start(runner.server_spec(cfg), workdir / f"server-{protocol}")
    try:
        if tracer is None:
            busy = _load_run(runner, server, protocol, 8, "1", workdir / f"{protocol}-busy", 3.0)
            echo(f"  {protocol} 8 users: {busy['ok_per_s']:.0f} req/s")
        rej = _load_run(runner, server, protocol, 8, "2", workdir / f"{protocol}-reject", 2.0)
        echo(f"  {protocol} 8 users, all refused: {rej['requests_per_s']:.0f} req/s")
        one = _load_run(runner, server, protocol, 1, "1", workdir / f"{protocol}-one", 2.0)
        echo(f"  {protocol} 1 user: p50 {one['p50_ms']:.2f} ms")
    finally:
        server.stop()
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
    from harness.tuning.trial import TrialRunner

    tracer = Tracer() if traceable(exp) else None
    try:
        runner = TrialRunner(exp)
        try:
            cpus = runner.server_cpus
            exec_us, gc = offline_exec(
                runner.model_dir, cpus, max_size, exp.model.signature, budget_s, echo
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
            # a collection's CPU is what it costs offline; the gaps a busy server shows are
            # longer because batches share the core meanwhile, which the simulator models itself
            gc["pause_ms"] = gc["offline_pause_ms"]
            if not gc["every_requests"]:
                gc["pause_ms"] = 0.0  # no pause seen: model none
        finally:
            runner.close()
    finally:
        if tracer is not None:
            tracer.close()
    env = environment(cpus)
    env.update(
        backend=exp.server.backend,
        binary=exp.server.binary,
        model_dir=str(runner.model_dir),
        load_cpus=list(runner.load_cpus or []),
        measured_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    prof = Profile(
        model=runner.model_name,
        backend=exp.server.backend,
        cores=len(cpus) if cpus else (env.get("machine_cores") or 1),
        exec_us=exec_us,
        overhead=overhead,
        environment=env,
        gc=gc,
    )
    ones = {p: o.measured.get("busy_trace") for p, o in overhead.items()}
    big = (gc.get("busy_run") or {}).get("trace")
    prof = calibrate.split(prof, ones, big, echo)
    echo(f"  per-batch server cost beyond the model: {prof.batch_overhead_us:.0f} us")
    return prof
