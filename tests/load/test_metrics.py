import math
from collections import Counter

import numpy as np

from harness.load import promscrape
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


METRICS = """# TYPE :tensorflow:serving:batching_session:processed_batch_size histogram
:tensorflow:serving:batching_session:processed_batch_size_bucket{le="1"} {a1}
:tensorflow:serving:batching_session:processed_batch_size_bucket{le="2"} {a2}
:tensorflow:serving:batching_session:processed_batch_size_bucket{le="4"} {a4}
:tensorflow:serving:batching_session:processed_batch_size_bucket{le="+Inf"} {a4}
:tensorflow:serving:batching_session:processed_batch_size_sum{} {sum}
:tensorflow:serving:batching_session:processed_batch_size_count{} {a4}
:tensorflow:serving:batching_session:queuing_latency_sum{thread_pool_name="p"} {q}
:tensorflow:serving:batching_session:queuing_latency_count{thread_pool_name="p"} {a4}
"""


def fill(**values) -> str:
    text = METRICS
    for k, v in values.items():
        text = text.replace("{" + k + "}", str(v))
    return text


def test_server_view_differences_two_scrapes():
    before = promscrape.parse(fill(a1=1, a2=1, a4=1, sum=1, q=100))
    after = promscrape.parse(fill(a1=3, a2=5, a4=9, sum=1 + 2 * 1 + 4 * 2 + 4 * 4, q=100 + 8 * 500))
    view = promscrape.server_view(before, after)
    assert view["batches"] == 8
    assert view["batch_size_histogram"] == {1: 2, 2: 2, 4: 4}
    assert view["mean_batch_size"] == (2 + 8 + 16) / 8
    assert view["mean_queuing_ms"] == 0.5


def test_label_values_with_braces_and_escaped_quotes_keep_their_samples():
    text = (
        "# TYPE :tensorflow:serving:request_count counter\n"
        ':tensorflow:serving:request_count{model_name="m}1",status="OK"} 5\n'
        ':tensorflow:serving:request_count{model_name="say \\"hi\\" {x}",status="OK"} 7\n'
        ':tensorflow:serving:request_count{model_name="back\\\\slash",status="OK"} 9\n'
        "a line no parser can read {\n"
        + fill(a1=1, a2=1, a4=1, sum=1, q=100)
    )
    got = promscrape.parse(text)
    name = ":tensorflow:serving:request_count"  # the server's own name, not OpenMetrics' _total
    assert got[(name, (("model_name", "m}1"), ("status", "OK")))] == 5
    assert got[(name, (("model_name", 'say "hi" {x}'), ("status", "OK")))] == 7
    assert got[(name, (("model_name", "back\\slash"), ("status", "OK")))] == 9
    # the malformed line is skipped, the histograms after it are kept
    assert promscrape.server_view({}, got)["batches"] == 1
