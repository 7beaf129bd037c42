"""Predict a batching config's figures: workload + server model (from a profile) -> Prediction.

``Workload`` draws its random numbers once (arrival times, request sizes, execution noise), so
every config is simulated against the same traffic: comparisons between configs are not blurred by
sampling noise, and searching thousands of configs costs only the event loops.
"""

from __future__ import annotations

import dataclasses
import math
import threading

import numpy as np

from harness.batching import BatchingParameters
from harness.config import Arrivals, LoadConfig, parse_size_mix
from harness.config.validate import check_timing, check_traffic
from harness.errors import ConfigError
from harness.sim import kernel
from harness.sim.fitted import FITTED
from harness.sim.profile import Profile

# latency histogram: bins are a float's exponent and top 7 mantissa bits, from 1 us to ~1000 s
HIST_KEY0 = int(np.array([1e-6]).view(np.int64)[0] >> kernel.HIST_SHIFT)
HIST_BINS = int(np.array([1e3]).view(np.int64)[0] >> kernel.HIST_SHIFT) - HIST_KEY0
BATCHING_OFF_THREADS = 256  # batching off: each request runs at once on its own handler thread
# the request path's weight a ServerModel built by hand gets (the kernel's tests and golden
# predictions); one built from a profile gets the fitted one (harness.sim.fitted)
FE_WEIGHT = 2.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class ServerModel:
    """What the simulator knows about the server: costs in seconds, and its CPUs."""

    cores: float
    exec_table: np.ndarray  # padded batch size -> seconds of CPU (index 0 unused)
    noise_sigma: float  # log-normal spread of one batch's execution time
    o_in: float
    o_out: float
    o_rej: float
    o_wake: float = 0.0  # extra front-end CPU for work that finds it idle (see kernel)
    rtt: float
    client: float  # closed loop: client CPU per request (one client core)
    gc_every: float = 0.0  # collection threshold in request-answers x requests inside (0: none)
    gc_s: float = 0.0  # one full collection's CPU time
    fe_weight: float = FE_WEIGHT  # the request path's share of a core against one batch

    @classmethod
    def from_profile(
        cls,
        profile: Profile,
        protocol: str,
        cores: float | None = None,
        max_size: int = 0,
        fitted: dict | None = None,
    ) -> ServerModel:
        """The model of a server whose costs ``profile`` measured; ``fitted``: constants to use
        instead of ``harness.sim.fitted.FITTED`` (the calibration tries candidates so)."""
        fit = {**FITTED, **(fitted or {})}
        oh = profile.overhead_for(protocol)
        sizes = profile.sizes()
        med = np.array([profile.exec_us[s]["median"] for s in sizes]) * 1e-6
        top = max(max_size, sizes[-1], 1)
        grid = np.arange(top + 1, dtype=float)
        table = np.interp(grid, sizes, med)
        if top > sizes[-1]:  # beyond the profile: the last measured cost per row
            slope = med[-1] / sizes[-1]
            if len(sizes) > 1:
                slope = (med[-1] - med[-2]) / (sizes[-1] - sizes[-2])
            beyond = grid > sizes[-1]
            table[beyond] = med[-1] + slope * (grid[beyond] - sizes[-1])
        table[1:] += profile.batch_overhead_us * 1e-6
        spreads = []
        for s in sizes:
            e = profile.exec_us[s]
            if e.get("p90") and e.get("p10") and e["p10"] > 0:
                spreads.append(math.log(e["p90"] / e["p10"]) / (2 * 1.2816))
        sigma = float(np.median(spreads)) if spreads else 0.0
        return cls(
            cores=float(cores or profile.cores) * profile.utilisation(),
            exec_table=table,
            noise_sigma=sigma,
            o_in=oh.cpu_in_us * 1e-6,
            o_out=oh.cpu_out_us * 1e-6,
            o_rej=oh.reject_us * 1e-6,
            o_wake=oh.wake_us * 1e-6,
            rtt=oh.rtt_us * 1e-6,
            client=oh.client_us * 1e-6,
            gc_every=gc_units(profile.gc),
            gc_s=profile.gc.get("pause_ms", 0.0) / 1e3 if profile.gc else 0.0,
            fe_weight=fit["fe_weight"],
        )


def gc_units(gc: dict) -> float:
    """The kernel's collection threshold: answers between pauses times requests inside the
    server, as the profile's busy run saw them (pauses come faster with more requests inside)."""
    if not gc or not gc.get("every_requests"):
        return 0.0
    live = (gc.get("busy_run") or {}).get("users") or 1
    return gc["every_requests"] * live


@dataclasses.dataclass(frozen=True, kw_only=True)
class Workload:
    """Closed loop with ``users``, or open loop at ``rate`` requests/s (Poisson or constant).

    The traffic fields are ``LoadConfig``'s (``from_load`` copies them); the lengths are virtual
    time, the simulator's own: a window of simulated seconds costs milliseconds to run, so it
    is longer than a measured one and needs no repeats to settle.
    """

    users: int = 0
    rate: float = 0.0
    arrivals: Arrivals = Arrivals.POISSON
    request_sizes: str = "1"
    warmup_s: float = 2.0
    window_s: float = 10.0
    tail_s: float = 1.0  # simulated past the window so late answers are counted
    seed: int = 0

    @classmethod
    def from_load(cls, load: LoadConfig, *, users: int | None = None, **virtual) -> Workload:
        """The traffic of ``load`` (``users`` instead of its own when given); ``virtual``:
        this workload's own ``warmup_s``, ``window_s``, ``tail_s`` and ``seed``."""
        return cls(
            users=users or load.users,
            rate=load.rate,
            arrivals=load.arrivals,
            request_sizes=load.request_sizes,
            **virtual,
        )

    @property
    def closed(self) -> bool:
        return self.rate <= 0

    def check(self) -> Workload:
        if self.closed and self.users < 1:
            raise ConfigError("a workload needs users >= 1 (closed loop) or rate > 0 (open loop)")
        check_traffic("simulator", "workload", self.rate, self.arrivals, self.request_sizes)
        check_timing("simulator", "workload", self.warmup_s, self.window_s)
        return self

    def describe(self) -> str:
        how = f"{self.users} users" if self.closed else f"{self.rate:g} req/s {self.arrivals}"
        return f"{how}, sizes {self.request_sizes}"


class Prepared:
    """A workload's random draws, made once and shared by every config simulated against it.

    ``deadline_s``: each request's deadline after it is sent (a gRPC client's timeout, REST's
    ``--rest_api_timeout_in_ms``); a batch whose every request is past it is answered
    RESOURCE_EXHAUSTED instead of run. ``math.inf`` (the default): no deadline. ``queues``: the
    batch queues the load reaches (one per model version and signature); the simulator has one
    and refuses more rather than predict a different server.
    """

    def __init__(
        self, wl: Workload, server: ServerModel, *, deadline_s: float = math.inf, queues: int = 1
    ) -> None:
        wl.check()
        if queues != 1:
            raise ConfigError(
                f"the simulator models one batch queue (one model version and signature); "
                f"this load reaches {queues}",
                hint="simulate each model's share of the load on its own, or measure it",
            )
        if not deadline_s > 0:
            raise ConfigError(f"the request deadline must be > 0 s; was {deadline_s}")
        self.deadline_s = float(deadline_s)
        self.wl = wl
        self.server = server
        rng = np.random.default_rng(wl.seed)
        self.t0 = wl.warmup_s
        self.t1 = wl.warmup_s + wl.window_s
        self.t_end = self.t1 + wl.tail_s
        mix = parse_size_mix(wl.request_sizes)
        self.max_request = max(s for s, _ in mix)
        if wl.closed:
            self.arrivals = np.empty(0)
            # the most requests the server can possibly see: every one rejected at the front end
            per_req = max(server.o_in + min(server.o_rej, server.o_out), 2e-6)
            cap = int(self.t_end * server.cores / per_req) + wl.users + 16
            self.n_cap = min(cap, 4_000_000)
        else:
            n = int(wl.rate * self.t_end * 1.2) + 64
            if wl.arrivals == Arrivals.CONSTANT:
                arr = np.arange(n) / wl.rate
            else:
                arr = np.cumsum(rng.exponential(1.0 / wl.rate, n))
            self.arrivals = arr[arr < self.t_end]
            self.n_cap = len(self.arrivals) + 1
        n_sizes = 65536
        if len(mix) == 1:
            self.sizes = np.full(1, mix[0][0], np.int64)
        else:
            self.sizes = rng.choice(
                np.array([s for s, _ in mix], np.int64), size=n_sizes, p=[p for _, p in mix]
            )
        if server.noise_sigma > 0:
            self.noise = rng.lognormal(0.0, server.noise_sigma, 4096)
            self.noise /= np.median(self.noise)
        else:
            self.noise = np.ones(1)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Prediction:
    throughput_rps: float
    items_per_s: float
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    p999_ms: float | None
    requests: int  # sent in the window
    ok: int
    oversize: int  # INVALID_ARGUMENT: larger than max_batch_size
    queue_full: int  # UNAVAILABLE: the batch queue was full
    deadline_exceeded: int = 0  # RESOURCE_EXHAUSTED: every request of its batch was past due
    unanswered: int  # sent in the window, not answered by its end plus the tail
    error_rate: float
    batches: int
    mean_batch_size: float | None  # padded, of the batches started in the window
    batch_size_histogram: dict[int, int]
    truncated: bool  # ran out of request slots (should not happen)
    front_end_wakes: int = 0  # work in the window that found the request path idle

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["batch_size_histogram"] = {str(k): v for k, v in self.batch_size_histogram.items()}
        return d


_local = threading.local()


def _workspace(nf: int, ni: int) -> tuple[np.ndarray, np.ndarray]:
    """This thread's scratch arrays for the kernel, grown when a config needs more."""
    wf = getattr(_local, "wf", None)
    wi = getattr(_local, "wi", None)
    if wf is None or len(wf) < nf:
        wf = _local.wf = np.empty(max(nf, 1))
    if wi is None or len(wi) < ni:
        wi = _local.wi = np.empty(max(ni, 1), np.int64)
    return wf, wi


def _percentile(hist: np.ndarray, total: int, q: float) -> float | None:
    if total == 0:
        return None
    cum = np.cumsum(hist)
    rank = q / 100.0 * total
    b = int(np.searchsorted(cum, rank, side="left"))
    b = min(b, len(hist) - 1)
    before = cum[b - 1] if b > 0 else 0
    frac = (rank - before) / hist[b] if hist[b] else 0.5
    edges = (np.array([b, b + 1], np.int64) + HIST_KEY0) << kernel.HIST_SHIFT
    lo, hi = edges.view(np.float64)
    return (lo + min(max(frac, 0.0), 1.0) * (hi - lo)) * 1e3


def _config_args(params: BatchingParameters | None, prep: Prepared, cores: float):
    """The scalar settings the kernel takes, with TF Serving's defaults filled in."""
    if params is None:  # batching off: every request runs on its own, at once
        top = max(prep.max_request, 1)
        return top, top, 1_000_000, False, 0.0, BATCHING_OFF_THREADS, np.zeros(0, np.int64)
    eff = params.effective(cores=max(int(cores), 1))
    return (
        eff.max_batch_size,
        eff.max_execution_batch_size,
        eff.max_enqueued_batches,
        bool(eff.enable_large_batch_splitting),
        eff.batch_timeout_micros / 1e6,
        eff.num_batch_threads,
        np.array(eff.allowed_batch_sizes, np.int64),
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class KernelTrace:
    """Every batch the kernel formed and every request's verdict (``simulate_trace``)."""

    batch_start: np.ndarray  # when a thread took it (seconds)
    batch_size: np.ndarray
    batch_padded: np.ndarray
    batch_first: np.ndarray  # its first and last request (indices into the task arrays)
    batch_last: np.ndarray
    batch_expired: np.ndarray  # answered RESOURCE_EXHAUSTED instead of run
    task_send: np.ndarray  # per request: send time, size, and verdict
    task_size: np.ndarray
    task_verdict: np.ndarray  # scheduler.ADMIT_OK/OVERSIZE/QUEUE_FULL or kernel.V_EXPIRED


_NO_TRACE_F = np.zeros(0)
_NO_TRACE_I = np.zeros((0, 5), np.int64)
_NO_TRACE_V = np.zeros(0, np.int64)


def _kernel_params(params: BatchingParameters | None, prep: Prepared, trace: bool):
    """The kernel's ``PARAMS`` record for one config, and its allowed sizes and largest batch."""
    srv = prep.server
    wl = prep.wl
    max_input, max_exec, max_enq, split, timeout, threads, allowed = _config_args(
        params, prep, srv.cores
    )
    biggest = max(max_exec, int(allowed[-1]) if len(allowed) else 0, prep.max_request)
    if len(srv.exec_table) <= biggest:
        raise ConfigError(
            f"the profile's execution table stops at batch size {len(srv.exec_table) - 1}; "
            f"this config runs batches of {biggest}",
            hint="build the server model with max_size covering the search space",
        )
    rec = np.array(
        [
            (
                max_input, max_exec, max_enq, split, timeout, threads,
                srv.cores, srv.o_in, srv.o_out, srv.o_rej, srv.o_wake, srv.rtt, srv.client,
                srv.gc_every, srv.gc_s, srv.fe_weight,
                wl.closed, wl.users if wl.closed else 0, prep.deadline_s,
                prep.t0, prep.t1, prep.t_end, prep.n_cap, HIST_KEY0, trace,
            )
        ],
        kernel.PARAMS,
    )  # fmt: skip
    return rec, allowed, biggest


def _buffers(prep: Prepared, rec: np.ndarray, allowed: np.ndarray, biggest: int) -> kernel.Buffers:
    """The kernel's arrays: this thread's workspace, zeroed outputs, trace arrays if asked."""
    p = rec[0]
    threads, n_cap = int(p["threads"]), prep.n_cap
    nf, ni, b_cap = kernel.workspace_size(
        n_cap, int(p["users"]), int(p["max_input"]), int(p["max_exec"]), int(p["splitting"])
    )
    wf, wi = _workspace(nf + threads, ni + threads)
    if p["trace"]:
        tf, ti = np.zeros(b_cap), np.zeros((b_cap, 5), np.int64)
        tv = np.full(n_cap, -1, np.int64)
    else:
        tf, ti, tv = _NO_TRACE_F, _NO_TRACE_I, _NO_TRACE_V
    hist_f = np.empty(1)
    return kernel.Buffers(
        allowed,
        prep.server.exec_table,
        prep.noise,
        prep.arrivals,
        prep.sizes,
        np.zeros(HIST_BINS, np.int64),
        np.zeros(biggest + 2, np.int64),
        np.zeros(kernel.N_COUNTERS, np.int64),
        wf,
        wi,
        tf,
        ti,
        tv,
        wi[ni : ni + threads],
        wf[nf : nf + threads],
        hist_f,
        hist_f.view(np.int64),
    )


def _trace(b: kernel.Buffers, state: np.ndarray, n_tasks: int) -> KernelTrace:
    n_b = int(state[0]["n_traced"])
    return KernelTrace(
        batch_start=b.trace_f[:n_b].copy(),
        batch_size=b.trace_i[:n_b, 0].copy(),
        batch_padded=b.trace_i[:n_b, 1].copy(),
        batch_first=b.trace_i[:n_b, 2].copy(),
        batch_last=b.trace_i[:n_b, 3].copy(),
        batch_expired=b.trace_i[:n_b, 4].astype(bool),
        task_send=b.wf[:n_tasks].copy(),  # the kernel's t_send and t_size (see kernel._views)
        task_size=b.wi[:n_tasks].copy(),
        task_verdict=b.trace_v[:n_tasks].copy(),
    )


def _run(params: BatchingParameters | None, prep: Prepared, trace: bool):
    """Run the kernel on one config: (counters, batch_hist, lat_hist, KernelTrace or None)."""
    rec, allowed, biggest = _kernel_params(params, prep, trace)
    b = _buffers(prep, rec, allowed, biggest)
    state = kernel.new_state()
    n_tasks = kernel.run(rec, b, state)
    return b.counters, b.batch_hist, b.lat_hist, _trace(b, state, n_tasks) if trace else None


def _prediction(wl: Workload, c: np.ndarray, batch_hist: np.ndarray, lat_hist: np.ndarray):
    ok = int(c[kernel.C_OK])
    sent = int(c[kernel.C_SENT])
    n_b = int(c[kernel.C_BATCHES])
    nz = np.nonzero(batch_hist)[0]
    hist = {int(s): int(batch_hist[s]) for s in nz}
    mean_b = float((nz * batch_hist[nz]).sum() / n_b) if n_b else None
    return Prediction(
        throughput_rps=ok / wl.window_s,
        items_per_s=int(c[kernel.C_ITEMS]) / wl.window_s,
        p50_ms=_percentile(lat_hist, ok, 50),
        p90_ms=_percentile(lat_hist, ok, 90),
        p99_ms=_percentile(lat_hist, ok, 99),
        p999_ms=_percentile(lat_hist, ok, 99.9),
        requests=sent,
        ok=ok,
        oversize=int(c[kernel.C_OVERSIZE]),
        queue_full=int(c[kernel.C_QUEUE_FULL]),
        deadline_exceeded=int(c[kernel.C_EXPIRED]),
        unanswered=int(c[kernel.C_INCOMPLETE]),
        error_rate=(sent - ok) / sent if sent else 0.0,
        batches=n_b,
        mean_batch_size=mean_b,
        batch_size_histogram=hist,
        truncated=bool(c[kernel.C_TRUNCATED]),
        front_end_wakes=int(c[kernel.C_WAKES]),
    )


def simulate(params: BatchingParameters | None, prep: Prepared) -> Prediction:
    """One config against a prepared workload."""
    counters, batch_hist, lat_hist, _ = _run(params, prep, False)
    return _prediction(prep.wl, counters, batch_hist, lat_hist)


def simulate_trace(
    params: BatchingParameters | None, prep: Prepared
) -> tuple[Prediction, KernelTrace]:
    """``simulate``, and every batch formed and every verdict (slower: for tests)."""
    counters, batch_hist, lat_hist, trace = _run(params, prep, True)
    return _prediction(prep.wl, counters, batch_hist, lat_hist), trace


def simulate_many(
    configs: list[BatchingParameters | None], prep: Prepared, workers: int = 1
) -> list[Prediction]:
    """Many configs against one workload; ``workers`` > 1 runs the compiled loop on several
    threads at once (it releases the GIL)."""
    if workers <= 1 or len(configs) < 2:
        return [simulate(c, prep) for c in configs]
    from concurrent.futures import ThreadPoolExecutor

    simulate(configs[0], prep)  # compile (or load from cache) before the threads race to it
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda c: simulate(c, prep), configs))
