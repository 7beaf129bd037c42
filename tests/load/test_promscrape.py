"""The server's Prometheus text read back: batch sizes and queueing between two scrapes, and
label values a regex would split."""

from harness.load import promscrape

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
