"""The server's own view of a window: Prometheus text before and after, histograms differenced.

The exposition text is read by prometheus_client's parser (label values may hold any character,
escaped quotes and braces included). Only sample lines are handed to it: with the ``# TYPE``
lines it would rename a counter's samples to OpenMetrics' ``<name>_total``, and the harness
looks samples up by the names the server wrote.
"""

from __future__ import annotations

import math
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

PROCESSED = ":tensorflow:serving:batching_session:processed_batch_size"
INPUT = ":tensorflow:serving:batching_session:input_batch_size"
QUEUING = ":tensorflow:serving:batching_session:queuing_latency"


def parse(text: str) -> dict[tuple, float]:
    """{(metric name, ((label, value), ...)): value} for every sample line. A malformed line is
    skipped, the rest kept: one bad line of a live server must not lose the window's view."""
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    try:
        return _samples("\n".join(lines))
    except ValueError:
        out = {}
        for line in lines:
            try:
                out.update(_samples(line))
            except ValueError:
                continue
        return out


def _samples(text: str) -> dict[tuple, float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
    return out


def scrape(url: str, timeout: float = 5.0) -> dict[tuple, float] | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return parse(r.read().decode(errors="replace"))
    except (OSError, ValueError):
        return None


def histogram_delta(before: dict, after: dict, name: str) -> dict[float, int]:
    """Per-bucket counts (not cumulative) observed between two scrapes, summed over labels."""
    cum: dict[float, float] = {}
    for (metric, labels), value in after.items():
        if metric != name + "_bucket":
            continue
        le = dict(labels).get("le")
        bound = math.inf if le == "+Inf" else float(le)
        prev = before.get((metric, labels), 0.0) if before else 0.0
        cum[bound] = cum.get(bound, 0.0) + value - prev
    bounds = sorted(cum)
    out, prev = {}, 0.0
    for b in bounds:
        out[b] = int(round(cum[b] - prev))
        prev = cum[b]
    return {b: n for b, n in out.items() if n}


def _total(before, after, name: str, suffix: str) -> float:
    total = 0.0
    for (metric, labels), value in after.items():
        if metric == name + suffix:
            total += value - (before.get((metric, labels), 0.0) if before else 0.0)
    return total


def server_view(before: dict | None, after: dict | None) -> dict:
    """Batches the server formed and the time requests waited in its queue, for one interval."""
    if not after:
        return {}
    before = before or {}
    batches = _total(before, after, PROCESSED, "_count")
    view = {
        "batches": int(batches),
        "mean_batch_size": (_total(before, after, PROCESSED, "_sum") / batches)
        if batches
        else None,
        "mean_input_batch_size": (_total(before, after, INPUT, "_sum") / batches)
        if batches
        else None,
        "batch_size_histogram": {
            ("+Inf" if math.isinf(b) else int(b)): n
            for b, n in histogram_delta(before, after, PROCESSED).items()
        },
    }
    waits = _total(before, after, QUEUING, "_count")
    view["mean_queuing_ms"] = (
        (_total(before, after, QUEUING, "_sum") / waits / 1000.0) if waits else None
    )
    return view
