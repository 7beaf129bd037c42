"""Per-request samples -> Measurement: throughput, items, percentiles, errors by code, late sends,
and whether windows agree."""

import math
from collections import Counter

import numpy as np

from harness.load.recorder import Recorder
from harness.metrics import agree, measure
from harness.samples import Samples


def synthetic(tmp_path):
    rec = Recorder(tmp_path)
    for i in range(1000):  # 100 requests/s for 10 s, latency i/10 ms
        rec.add(1000.0 + i / 100, (i % 100) * 100.0 + 100.0, 0, 2, 0.0)
    rec.add(1001.0, 50.0, 3, 40, 0.0)
    rec.oversize[(40, 32)] += 1
    rec.add(1002.0, 50.0, 14, 1, 5000.0)
    rec.flush()
    rec.add(1003.0, 999999.0, 100, 1, 0.0)
    rec.flush()
    return Samples.read(tmp_path)


def test_measure(tmp_path):
    s = synthetic(tmp_path)
    assert len(s) == 1003 and s.oversize == Counter({(40, 32): 1})
    m = measure(s, 1000.0, 1010.0)
    assert m.requests == 1003 and m.ok == 1000
    assert m.throughput_rps == 100.0 and m.items_per_s == 200.0
    assert math.isclose(m.p50_ms, np.percentile((np.arange(1000) % 100) * 0.1 + 0.1, 50))
    assert m.p99_ms <= 10.0
    assert m.errors == {"INVALID_ARGUMENT": 1, "UNAVAILABLE": 1, "TRANSPORT": 1}
    assert m.late_sends == 1
    assert m.rejection_rate == 3 / 1003
    half = measure(s, 1000.0, 1005.0)
    assert half.requests == 500 + 3


def test_agree():
    assert agree([100, 105, 96], 0.10)
    assert not agree([100, 125, 96], 0.10)
    assert not agree([float("nan"), 1, 1], 0.10)
