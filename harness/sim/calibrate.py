"""Split a served request's server CPU into the parts the simulator charges.

The simulator charges the model's execution per batch (the profile's offline timing), a
per-batch cost beyond the model, and per-request costs on the request path. Two ways to find the
last two:

- ``from_traces`` (the reference server, run by the process backend): served runs with the
  server's batch trace on (``harness/refserver/batch_trace.py``) at batch sizes 1 and ``m``. The
  trace gives, over the very batches served, the process's CPU outside the batch threads per row,
  the batch thread's CPU beyond the model, and how busy the process kept its core. With
  ``outside(b) = path + 2 * wake / b`` at the two sizes, both parts follow: the request path's
  CPU per request, and what it costs the request path to wake up (twice per batch in a
  saturated closed loop: for the batch's answers, then for the next requests).
- ``from_cpu_times`` (any server whose process CPU time we can read): a busy run with batches of
  one and a busy batching run give two equations for the same two unknowns, from the process's
  CPU time over each whole run.

On this machine the second way overstated the per-batch cost (0.85 ms; the traces show 0.07 ms
on the batch thread, plus the request path waking up twice per batch at 0.25-0.36 ms each) and
understated how busy a saturated server is (0.93 against 0.98-1.00), because a whole run's CPU
time and wall time include the load generator's start and ramp, and its busy run with batches of
one had 8 users, where every request wakes threads that 64 users would find awake.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from harness.sim.profile import Profile

SPLIT_IN = 0.5  # share of the request path's CPU spent before the batch queue (assumed)
# below this, the batch thread's CPU clock saw much less of the model than the offline timing:
# part of it ran on TensorFlow's pool threads (mobilenet_v2 with 16-row batches: 0.37). Above
# it, the ratio moves with the machine's speed between the two measurements (0.9-1.2 here).
MIN_EXEC_RATIO = 0.8


def _interp_exec(prof: Profile, size: float) -> float:
    sizes = sorted(prof.exec_us)
    return float(np.interp(size, sizes, [prof.exec_us[s]["median"] for s in sizes]))


def _gc_per_request(prof: Profile) -> float:
    gc = prof.gc
    return gc["pause_ms"] * 1e3 / gc["every_requests"] if gc.get("every_requests") else 0.0


def from_cpu_times(prof: Profile) -> Profile:
    """Two busy runs' whole-run process CPU (collections' share taken out of both): batches of
    one, ``cpu_1 = exec(1) + per_batch + path``, and the batching run with mean batch B,
    ``B * cpu_B = exec(B) + per_batch + B * path``."""
    gc = prof.gc
    run = gc.get("busy_run") or {}
    e1 = prof.exec_us[min(prof.exec_us)]["median"]
    g = _gc_per_request(prof)
    first = next(iter(prof.overhead))
    per_batch = 0.0
    b, c_b = run.get("mean_batch_size"), run.get("server_cpu_per_request_us")
    c_1 = prof.overhead[first].measured.get("busy", {}).get("server_cpu_per_request_us")
    if b and c_b and c_1 and b > 1.5:
        e_b = _interp_exec(prof, b)
        path = ((c_b - g) * b - (c_1 - g) - e_b + e1) / (b - 1)
        per_batch = max((c_1 - g) - e1 - max(path, 1.0), 0.0)
    overhead = {}
    for proto, oh in prof.overhead.items():
        busy = oh.measured["busy"]
        c1 = busy["server_cpu_per_request_us"] or 1e6 / busy["ok_per_s"]
        path = max(c1 - g - e1 - per_batch, 1.0)
        overhead[proto] = dataclasses.replace(_with_path(prof, oh, path, per_batch, g), wake_us=0.0)
    return dataclasses.replace(prof, overhead=overhead, batch_overhead_us=per_batch, served={})


def from_traces(prof: Profile, ones: dict[str, dict], big: dict) -> Profile:
    """``ones``: per protocol, the trace summary (``summarize()["all"]``) of a busy run with
    batches of one; ``big``: the same for a busy run of the first protocol with full batches of
    ``m`` rows. Each summary carries ``outside_cpu_us_per_row``, ``batch_cpu_ms``,
    ``run_cpu_ms``, ``mean_rows``, ``mean_padded`` and ``process_cpu_share``."""
    first = next(iter(prof.overhead))
    one = ones[first]
    m = big["mean_rows"]
    if m < 1.5:
        raise ValueError("the batching run formed no batches larger than one row")
    # CPU outside the batch threads per row: path + outside_per_batch / rows
    o1, om = one["outside_cpu_us_per_row"], big["outside_cpu_us_per_row"]
    path = max((m * om - o1) / (m - 1), 1.0)
    outside_batch = max(o1 - path, 0.0)
    # the batch thread's CPU beyond the model: merging and splitting, per batch and per row
    x1 = (one["batch_cpu_ms"] - one["run_cpu_ms"]) * 1e3
    xm = (big["batch_cpu_ms"] - big["run_cpu_ms"]) * 1e3
    merge_row = max((xm - x1) / (m - 1), 0.0)
    # the outside cost that comes per batch is the request path waking up: in a saturated
    # closed loop it sleeps twice per batch (before the batch's answers, and before the next
    # requests come); the simulator charges a wake-up to all work that finds it idle
    wake = outside_batch / 2
    per_batch = max(x1 - merge_row, 0.0)
    g = _gc_per_request(prof)
    overhead = {}
    for proto, oh in prof.overhead.items():
        mine = ones.get(proto)
        p = (
            path
            if proto == first or mine is None
            else mine["outside_cpu_us_per_row"] - outside_batch
        )
        overhead[proto] = dataclasses.replace(
            _with_path(prof, oh, max(p + merge_row - g, 1.0), per_batch + 2 * wake, g),
            wake_us=wake,
        )
    shares = [s["process_cpu_share"] for s in [*ones.values(), big] if s.get("process_cpu_share")]
    served = {
        "how": "batch traces of busy served runs (harness/refserver/batch_trace.py)",
        "cpu_share": min(max(float(np.median(shares)), 0.5), 1.0) if shares else 1.0,
        "path_us": path,
        "outside_per_batch_us": outside_batch,
        "wake_us": wake,
        "merge_us_per_row": merge_row,
        # the model's CPU per batch in the busy server against the offline timing; far from 1.0
        # means the machine ran at another speed than when the model was timed
        "exec_ratio": {
            str(round(s["mean_padded"])): s["run_cpu_ms"]
            * 1e3
            / _interp_exec(prof, s["mean_padded"])
            for s in [one, big]
        },
        "runs": {"ones": ones, "big": big},
    }
    return dataclasses.replace(prof, overhead=overhead, batch_overhead_us=per_batch, served=served)


def split(prof: Profile, ones: dict, big: dict | None, echo=print) -> Profile:
    """From the traces when there are usable ones, else from whole-run CPU times."""
    if not (ones and all(ones.values()) and big and big.get("mean_rows", 0) > 1.5):
        return from_cpu_times(prof)
    traced = from_traces(prof, ones, big)
    ratios = traced.served["exec_ratio"]
    echo(
        "  traced: the model's CPU per batch on the batch thread against offline: "
        + ", ".join(f"{r:.2f} at {s} rows" for s, r in ratios.items())
    )
    if min(ratios.values()) < MIN_EXEC_RATIO:
        # TensorFlow ran part of the model on its own pool threads, which the batch thread's
        # clock does not see: the traces cannot tell the model from the request path
        echo("  part of the model ran off the batch thread: using whole-run CPU times")
        kept = {k: traced.served[k] for k in ("cpu_share", "exec_ratio", "runs")}
        how = "whole-run CPU times (the batch thread's clock missed part of the model)"
        return dataclasses.replace(from_cpu_times(prof), served={"how": how, **kept})
    if any(abs(r - 1.0) > 0.1 for r in ratios.values()):
        echo(
            "  warning: the machine ran at another speed during the served runs than during the "
            "offline timing (a busy or throttled host); profile again when it is quiet"
        )
    return traced


def again(prof: Profile, echo=print) -> Profile:
    """The profile's costs split anew from the runs it stores (after a change to these rules)."""
    runs = (prof.served or {}).get("runs") or {}
    return split(prof, runs.get("ones") or {}, runs.get("big"), echo)


def _with_path(prof: Profile, oh, path: float, per_batch: float, g: float):
    """The protocol's costs for a request path of ``path`` us of CPU per request."""
    m = oh.measured
    rej, one = m["reject"], m["one_user"]
    e1 = prof.exec_us[min(prof.exec_us)]["median"]
    cpu_in = SPLIT_IN * path
    per_rej = rej["server_cpu_per_request_us"] or 1e6 / rej["requests_per_s"]
    rtt = max(one["p50_ms"] * 1e3 - (e1 + per_batch + path) - oh.client_us, 0.0)
    return dataclasses.replace(
        oh,
        cpu_in_us=cpu_in,
        cpu_out_us=path - cpu_in,
        reject_us=max(per_rej - 0.35 * g - cpu_in, 1.0),
        rtt_us=rtt,
    )
