"""``harness plan --rate R --p99 MS``: batching config and replica count for a rate, from a profile.

For each batching config in a grid, the simulator finds the highest Poisson rate one replica
serves within the p99 and without rejections (bisection on the rate); the config with the highest
such capacity wins, and the replica count is the rate divided by that capacity less a headroom.
Only one replica is ever simulated (at R / replicas), so rates far beyond what this machine
can generate cost the same as small ones.
"""

from __future__ import annotations

import dataclasses
import math

from harness.batching import BatchingParameters, describe
from harness.errors import ConfigError
from harness.sim.model import Prepared, ServerModel, Workload, simulate

TIMEOUTS_US = (0, 200, 500, 1000, 2000, 5000, 10_000, 20_000, 50_000)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Capacity:
    params: BatchingParameters | None
    rate: float  # the most requests/s one replica serves within the SLO
    p99_ms: float | None  # at that rate


def configs(max_size: int, cores: int) -> list[BatchingParameters | None]:
    sizes = [s for s in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024) if s <= max_size]
    out: list[BatchingParameters | None] = [None]
    for mbs in sizes:
        for t in TIMEOUTS_US if mbs > 1 else (0,):
            for thr in sorted({1, cores, 2 * cores}):
                out.append(
                    BatchingParameters(
                        max_batch_size=mbs,
                        batch_timeout_micros=t,
                        num_batch_threads=thr,
                        max_enqueued_batches=1_000_000,
                    )
                )
    return out


def _ok(params, rate, server, sizes, slo_ms, window_s) -> tuple[bool, float | None]:
    wl = Workload(rate=rate, request_sizes=sizes, warmup_s=1.0, window_s=window_s, tail_s=1.0)
    p = simulate(params, Prepared(wl, server))
    ok = (
        p.p99_ms is not None
        and p.p99_ms <= slo_ms
        and p.error_rate <= 0.001
        and p.throughput_rps >= 0.98 * p.requests / window_s
    )
    return ok, p.p99_ms


def capacity(params, server: ServerModel, sizes: str, slo_ms: float, window_s: float) -> Capacity:
    """The highest rate one replica serves within the SLO (bisection, 1% resolution)."""
    mean_rows = _mean_rows(sizes)
    b = params.max_batch_size if params else 1
    per_req = (
        server.o_in
        + server.o_out
        + server.exec_table[min(b, len(server.exec_table) - 1)] / b * mean_rows
    )
    hi = server.cores / per_req * 1.2  # no config serves more than its CPU allows
    lo = 0.0
    p99_at = None
    ok, p99 = _ok(params, hi * 0.02, server, sizes, slo_ms, window_s)
    if not ok:
        return Capacity(params=params, rate=0.0, p99_ms=p99)
    lo, p99_at = hi * 0.02, p99
    while hi - lo > 0.01 * hi:
        mid = (lo + hi) / 2
        ok, p99 = _ok(params, mid, server, sizes, slo_ms, window_s)
        if ok:
            lo, p99_at = mid, p99
        else:
            hi = mid
    return Capacity(params=params, rate=lo, p99_ms=p99_at)


def _mean_rows(sizes: str) -> float:
    from harness.config import parse_size_mix

    return sum(s * p for s, p in parse_size_mix(sizes))


def plan(
    profile,
    *,
    rate: float,
    p99_ms: float,
    protocol: str,
    sizes: str = "1",
    headroom: float = 0.2,
    window_s: float = 5.0,
    echo=print,
) -> dict:
    if rate <= 0 or p99_ms <= 0:
        raise ConfigError("--rate and --p99 must be > 0")
    if not 0 <= headroom < 1:
        raise ConfigError("--headroom must be in [0, 1)")
    server = ServerModel.from_profile(profile, protocol, max_size=1024)
    from harness.config import parse_size_mix

    biggest = max(s for s, _ in parse_size_mix(sizes))
    caps = [
        capacity(c, server, sizes, p99_ms, window_s)
        for c in configs(profile.max_size(), profile.cores)
        if c is None or c.max_batch_size >= biggest
    ]
    caps.sort(key=lambda c: -c.rate)
    best = caps[0]
    if best.rate <= 0:
        raise ConfigError(
            f"no config serves even a trickle within p99 {p99_ms:g} ms on one replica",
            hint="the model alone takes longer than the SLO at batch 1; relax --p99",
        )
    replicas = max(1, math.ceil(rate / (best.rate * (1 - headroom))))
    per_replica = rate / replicas
    wl = Workload(
        rate=per_replica, request_sizes=sizes, warmup_s=1.0, window_s=window_s, tail_s=1.0
    )
    at = simulate(best.params, Prepared(wl, server))
    return {
        "rate": rate,
        "p99_slo_ms": p99_ms,
        "best": best,
        "replicas": replicas,
        "per_replica_rate": per_replica,
        "predicted_at_plan": at,
        "runners_up": caps[1:6],
        "batching_off": next(c for c in caps if c.params is None),
        "assumptions": assumptions(profile, protocol, sizes, headroom),
    }


def assumptions(profile, protocol: str, sizes: str, headroom: float) -> list[str]:
    env = profile.environment
    return [
        f"every replica is like the profiled one: {profile.cores} core(s) of "
        f"{env.get('cpu_model', '?')}, the {profile.backend} backend, TensorFlow "
        f"{env.get('tensorflow')}, model {profile.model} (profile {profile.path or 'given'})",
        "requests reach replicas at random and evenly (a load balancer without affinity): each "
        "replica sees Poisson arrivals at rate / replicas",
        f"request sizes {sizes}; the {protocol} request path costs what the profile measured",
        "latency counts the server and the profiled loopback round trip only: no network, "
        "load-balancer or client time beyond that",
        "no rejections allowed (queue unbounded); p99 over a steady window, no bursts, no "
        "warm-up, no failures or restarts",
        f"capacity is planned with {headroom:.0%} headroom (this machine's runs differ by "
        "10-20%; the simulator's own error is in results/simulator-validation/)",
    ]


def render(result: dict) -> str:
    best = result["best"]
    at = result["predicted_at_plan"]
    lines = [
        f"plan for {result['rate']:,.0f} requests/s within p99 {result['p99_slo_ms']:g} ms",
        "",
        f"  batching: {describe(best.params)}",
        f"  one replica serves up to {best.rate:,.0f} requests/s within the SLO "
        f"(p99 {best.p99_ms:.1f} ms there)",
        f"  replicas: {result['replicas']} ({result['per_replica_rate']:,.0f} requests/s each)",
        f"  predicted per replica at that rate: p99 {at.p99_ms:.1f} ms, p50 {at.p50_ms:.1f} ms, "
        f"mean batch {at.mean_batch_size or 0:.1f}",
        f"  batching off would serve {result['batching_off'].rate:,.0f} requests/s per replica",
        "",
    ]
    if best.params is not None:
        lines += ["batching_parameters.txt:", best.params.to_text().rstrip(), ""]
    lines.append("runners-up (requests/s per replica):")
    for c in result["runners_up"]:
        lines.append(f"  {c.rate:10,.0f}  {describe(c.params)}")
    lines += ["", "assumptions:"] + [f"  - {a}" for a in result["assumptions"]]
    return "\n".join(lines)
