"""Which typed record the simulator's kernel should take: a structured numpy record, a numba
jitclass, or the loop's scalars kept as locals (the kernel before its records).

Each variant runs the same toy event loop (a queue fed by arrivals and drained by one server,
the shape of ``harness.sim.kernel.run``: a few parameters read and a dozen state scalars updated
per event, split into handler functions where the variant allows it), for ``--events`` events,
and the table gives the time per call and per event, plus whether numba can cache the compiled
code on disk (a jitclass cannot: every process would compile the kernel again). Run under the
heavy lock: ``flock /tmp/heavy.lock .venv/bin/python benchmarks/kernel_records.py``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numba
import numpy as np
from numba.experimental import jitclass

P = np.dtype([("rate", np.float64), ("service", np.float64), ("cap", np.int64)])
S = np.dtype(
    [("now", np.float64), ("busy_until", np.float64), ("head", np.int64), ("tail", np.int64)]
    + [("served", np.int64), ("dropped", np.int64)]
)


@numba.njit(cache=True)
def _arrive_rec(p, s, t):
    s.now = t
    if s.tail - s.head < p.cap:
        s.tail += 1
    else:
        s.dropped += 1


@numba.njit(cache=True)
def _serve_rec(p, s):
    s.now = s.busy_until
    s.head += 1
    s.served += 1


@numba.njit(cache=True)
def loop_record(params, state, arrivals):
    p = params[0]
    s = state[0]
    s.busy_until = np.inf
    i = 0
    while i < len(arrivals):
        if s.busy_until < arrivals[i]:
            _serve_rec(p, s)
            s.busy_until = s.now + p.service if s.head < s.tail else np.inf
        else:
            _arrive_rec(p, s, arrivals[i])
            i += 1
            if s.busy_until == np.inf:
                s.busy_until = s.now + p.service
    return s.served


@numba.njit(cache=True)
def loop_locals(rate, service, cap, arrivals):
    now, busy_until, head, tail, served, dropped = 0.0, np.inf, 0, 0, 0, 0
    i = 0
    while i < len(arrivals):
        if busy_until < arrivals[i]:
            now = busy_until
            head += 1
            served += 1
            busy_until = now + service if head < tail else np.inf
        else:
            now = arrivals[i]
            if tail - head < cap:
                tail += 1
            else:
                dropped += 1
            i += 1
            if busy_until == np.inf:
                busy_until = now + service
    return served


@jitclass(
    [("rate", numba.float64), ("service", numba.float64), ("cap", numba.int64)]
    + [("now", numba.float64), ("busy_until", numba.float64)]
    + [(n, numba.int64) for n in ("head", "tail", "served", "dropped")]
)
class Sim:
    def __init__(self, rate, service, cap):
        self.rate, self.service, self.cap = rate, service, cap
        self.now, self.busy_until = 0.0, np.inf
        self.head = self.tail = self.served = self.dropped = 0


def _arrive_cls(c, t):
    c.now = t
    if c.tail - c.head < c.cap:
        c.tail += 1
    else:
        c.dropped += 1


def _serve_cls(c):
    c.now = c.busy_until
    c.head += 1
    c.served += 1


_arrive_cls = numba.njit(_arrive_cls)
_serve_cls = numba.njit(_serve_cls)


@numba.njit
def loop_jitclass(c, arrivals):
    i = 0
    while i < len(arrivals):
        if c.busy_until < arrivals[i]:
            _serve_cls(c)
            c.busy_until = c.now + c.service if c.head < c.tail else np.inf
        else:
            _arrive_cls(c, arrivals[i])
            i += 1
            if c.busy_until == np.inf:
                c.busy_until = c.now + c.service
    return c.served


_CACHE_PROBE = """
import numba
from numba.experimental import jitclass
@jitclass([("x", numba.int64)])
class C:
    def __init__(self, x):
        self.x = x
@numba.njit(cache=True)
def f(c):
    return c.x + 1
f(C(1))
print(sum(f.stats.cache_hits.values()))
"""


def cacheable_jitclass() -> str:
    """Whether a second process loads a function that takes a jitclass from numba's cache."""
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "probe.py").write_text(_CACHE_PROBE)
        runs = [
            subprocess.run(
                [sys.executable, "-c", "import probe"], cwd=tmp, capture_output=True, text=True
            ).stdout.strip()
            for _ in range(2)
        ]
    return "yes" if runs[1] not in ("", "0") else "no: compiled again in every process"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    arrivals = np.cumsum(rng.exponential(1.0, args.events))
    rate, service, cap = 1.0, 0.9, 16

    def record():
        params = np.array([(rate, service, cap)], P)
        return loop_record(params, np.zeros(1, S), arrivals)

    def jitcls():
        return loop_jitclass(Sim(rate, service, cap), arrivals)

    def local():
        return loop_locals(rate, service, cap, arrivals)

    variants = {"structured record": record, "jitclass": jitcls, "locals (before)": local}
    answers = {name: fn() for name, fn in variants.items()}  # compile outside the clock
    assert len(set(answers.values())) == 1, answers
    times = {name: [] for name in variants}
    for _ in range(args.rounds):  # interleaved, so that the machine's drift hits all alike
        for name, fn in variants.items():
            t = time.perf_counter()
            for _ in range(args.calls):
                fn()
            times[name].append((time.perf_counter() - t) / args.calls)
    cache = {"structured record": "yes", "jitclass": cacheable_jitclass(), "locals (before)": "yes"}
    n = 2 * args.events
    print(f"{args.events:,} arrivals ({n:,} events) per call, {args.calls} calls x {args.rounds}")
    print("| variant | us per call, median (range) | ns per event | cached on disk |")
    print("|---|---|---|---|")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(
            f"| {name} | {med * 1e6:,.0f} ({min(ts) * 1e6:,.0f}-{max(ts) * 1e6:,.0f}) "
            f"| {med / n * 1e9:.2f} | {cache[name]} |"
        )


if __name__ == "__main__":
    main()
