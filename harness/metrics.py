"""Per-request samples -> one Measurement: throughput, latency percentiles, outcomes (numpy only)."""

from __future__ import annotations

import dataclasses

import numpy as np

from harness import codes
from harness.samples import Samples

PERCENTILES = {"p50_ms": 50, "p90_ms": 90, "p95_ms": 95, "p99_ms": 99, "p999_ms": 99.9}
LATE_US = 1000.0  # an open-loop send more than 1 ms after its intended time counts as late


@dataclasses.dataclass(frozen=True, kw_only=True)
class Measurement:
    seconds: float
    requests: int  # every request due in the interval, whatever its outcome
    ok: int
    throughput_rps: float  # successful requests per second
    items_per_s: float  # rows of successful requests per second
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    p999_ms: float
    mean_ms: float
    errors: dict[str, int]  # outcome name -> count, OK excluded
    rejection_rate: float  # share of requests that did not succeed
    late_sends: int  # open loop: sends more than 1 ms behind schedule

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def measure(samples: Samples, t0: float, t1: float) -> Measurement:
    """Figures for the requests due in [t0, t1). Latencies are of successful requests only:
    fast rejections would otherwise flatter the percentiles; they are counted in ``errors``."""
    window = samples.between(t0, t1)
    seconds = max(t1 - t0, 1e-9)
    outcome = window["code"]
    ok_mask = outcome == codes.OK
    lat_ms = window["latency_us"][ok_mask] / 1000.0
    n_ok = int(ok_mask.sum())
    if n_ok:
        pct = np.percentile(lat_ms, list(PERCENTILES.values()))
        mean = float(lat_ms.mean())
    else:
        pct = [float("nan")] * len(PERCENTILES)
        mean = float("nan")
    errors: dict[str, int] = {}
    values, counts = np.unique(outcome[~ok_mask], return_counts=True)
    for v, c in zip(values, counts):
        errors[codes.OUTCOME_NAMES.get(int(v), f"CODE_{int(v)}")] = int(c)
    n = len(window)
    return Measurement(
        seconds=seconds,
        requests=n,
        ok=n_ok,
        throughput_rps=n_ok / seconds,
        items_per_s=float(window["size"][ok_mask].sum()) / seconds,
        **{k: float(v) for k, v in zip(PERCENTILES, pct)},
        mean_ms=mean,
        errors=errors,
        rejection_rate=(n - n_ok) / n if n else 0.0,
        late_sends=int((window["late_us"] > LATE_US).sum()),
    )


def agree(values: list[float], tolerance: float) -> bool:
    """True when every value is within ``tolerance`` (relative) of their median."""
    arr = np.asarray(values, dtype=float)
    if len(arr) == 0 or not np.all(np.isfinite(arr)):
        return False
    med = float(np.median(arr))
    if med == 0:
        return bool(np.all(arr == 0))
    return bool(np.all(np.abs(arr - med) <= tolerance * abs(med)))
