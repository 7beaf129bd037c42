"""A per-batch timing trace of the reference server, for checking the simulator's model of it.

Set ``HARNESS_REFSERVER_BATCH_TRACE`` to a path and every batch a batch thread runs is timed:
when the thread took it, its rows and padded size, how long merging the inputs took on the wall
clock, how long the model ran on the wall clock and on the thread's own CPU clock, and the
thread's CPU over the whole batch. TensorFlow runs the graph's ops on the calling thread when
the server has one core (``LoadedModel`` sets that up), so the thread's CPU clock measures the
model's execution without the time it spent waiting for the core or the GIL. The process's CPU
clock, read as each batch is taken, splits the rest: how busy the server kept its core, and
what its other threads (the request path) spent per row.

The records stay in memory (at most ``LIMIT``; the first ones are kept) and are written, one
JSON array per record, to ``<path>.<pid>`` when the batcher stops. Off by default: then the
batcher pays one attribute test per batch. Our server only: TensorFlow Serving has no such
trace.
"""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

from harness import atomic

ENV = "HARNESS_REFSERVER_BATCH_TRACE"
LIMIT = 500_000
FIELDS = (
    "thread",  # which batch thread ran it (0 .. num_batch_threads - 1)
    "taken",  # monotonic time the batch thread took the batch (s)
    "process_cpu",  # the server process's CPU clock (every thread) at that moment (s)
    "rows",  # real rows in the batch
    "padded",  # rows after padding to an allowed size
    "merge_wall_s",  # building the batch's input arrays, wall clock
    "run_wall_s",  # the model's run, wall clock
    "run_cpu_s",  # the model's run, the batch thread's CPU clock
    "batch_wall_s",  # the whole batch: merge, run, split and handing answers back
    "batch_cpu_s",  # the same, the thread's CPU clock
)


class BatchTrace:
    def __init__(self, path: str) -> None:
        self.path = path
        self.records: list[tuple] = []

    @classmethod
    def from_env(cls) -> BatchTrace | None:
        path = os.environ.get(ENV)
        return cls(path) if path else None

    def add(self, record: tuple) -> None:
        if len(self.records) < LIMIT:
            self.records.append(record)

    def write(self) -> Path:
        out = Path(f"{self.path}.{os.getpid()}")
        return atomic.write_text(out, json.dumps({"fields": FIELDS, "records": self.records}))


def load(path: Path) -> list[dict]:
    data = json.loads(Path(path).read_text())
    return [dict(zip(data["fields"], r)) for r in data["records"]]


def _medians(rs: list[dict]) -> dict:
    med = {k.replace("_s", "_ms"): statistics.median(r[k] for r in rs) * 1e3 for k in FIELDS[5:]}
    return {
        "batches": len(rs),
        "mean_rows": statistics.fmean(r["rows"] for r in rs),
        "mean_padded": statistics.fmean(r["padded"] for r in rs),
        **med,
    }


def summarize(records: list[dict], skip_s: float = 0.0) -> dict:
    """Medians of the timings (ms) over every batch (``all``) and per padded size (``sizes``),
    and the median time between two batches one thread took (``all["cycle_ms"]``): with every
    thread always busy, rows / cycle x threads is the throughput. ``skip_s`` drops the first
    seconds (the server's warm-up)."""
    if not records:
        return {"all": {}, "sizes": {}}
    start = records[0]["taken"] + skip_s
    kept = [r for r in records if r["taken"] >= start] or records
    sizes = {
        size: _medians([r for r in kept if r["padded"] == size])
        for size in sorted({r["padded"] for r in kept})
    }
    overall = _medians(kept)
    gaps = []
    threads = sorted({r["thread"] for r in kept})
    for t in threads:
        mine = [r["taken"] for r in kept if r["thread"] == t]
        gaps += [b - a for a, b in zip(mine, mine[1:])]
    overall["threads"] = len(threads)
    if gaps:
        overall["cycle_ms"] = statistics.median(gaps) * 1e3
    # between the first and the last batch taken: the process's CPU share of one core, and its
    # CPU outside the batch threads (request threads, gRPC, collections) per row served
    first, last = kept[0], kept[-1]
    wall = last["taken"] - first["taken"]
    if wall > 0 and "process_cpu" in first:
        cpu = last["process_cpu"] - first["process_cpu"]
        inside = sum(r["batch_cpu_s"] for r in kept[:-1])
        overall["process_cpu_share"] = cpu / wall
        overall["outside_cpu_us_per_row"] = (cpu - inside) * 1e6 / sum(r["rows"] for r in kept[:-1])
    return {"all": overall, "sizes": sizes}
