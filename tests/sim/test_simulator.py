"""The simulator against cases whose answer is known, and against the server's own queue."""

import dataclasses

import numpy as np
import pytest

from harness.batching import BatchingParameters
from harness.scheduler import BatchQueue, Task
from harness.sim.model import Prepared, ServerModel, Workload, simulate


def server(
    exec_ms=10.0,
    per_row_ms=0.0,
    cores=1,
    o_in=0.0,
    o_out=0.0,
    o_rej=0.0,
    rtt=0.0,
    client=0.0,
    top=64,
    wake=0.0,
):
    table = np.array([0.0] + [(exec_ms + per_row_ms * b) / 1e3 for b in range(1, top + 1)])
    return ServerModel(
        cores=cores,
        exec_table=table,
        noise_sigma=0.0,
        o_in=o_in,
        o_out=o_out,
        o_rej=o_rej,
        rtt=rtt,
        client=client,
        o_wake=wake,
    )


def cfg(**kw):
    base = dict(
        max_batch_size=8,
        batch_timeout_micros=0,
        num_batch_threads=1,
        max_enqueued_batches=1_000_000,
    )
    base.update(kw)
    return BatchingParameters(**base)


def test_constant_arrivals_and_a_long_timeout_form_full_batches():
    wl = Workload(rate=1000, arrivals="constant", warmup_s=0.5, window_s=2.0)
    p = simulate(
        cfg(max_batch_size=8, batch_timeout_micros=100_000), Prepared(wl, server(exec_ms=1))
    )
    assert set(p.batch_size_histogram) == {8}
    assert p.throughput_rps == pytest.approx(1000, rel=0.01)
    # the first request of a batch waits for 7 more arriving 1 ms apart, then 1 ms of execution
    assert p.p99_ms == pytest.approx(8.0, rel=0.05)
    assert p.p50_ms < p.p99_ms


def test_the_timeout_closes_a_batch_that_does_not_fill():
    wl = Workload(rate=1000, arrivals="constant", warmup_s=0.5, window_s=2.0)
    p = simulate(
        cfg(max_batch_size=64, batch_timeout_micros=3_500), Prepared(wl, server(exec_ms=1))
    )
    assert set(p.batch_size_histogram) == {4}  # arrivals at 0, 1, 2, 3 ms; due at 3.5 ms


def test_one_core_shared_by_two_threads_serves_no_more_than_one_thread():
    wl = Workload(users=2, warmup_s=1.0, window_s=4.0)
    one = simulate(
        cfg(max_batch_size=1, num_batch_threads=2), Prepared(wl, server(exec_ms=10, cores=1))
    )
    two = simulate(
        cfg(max_batch_size=1, num_batch_threads=2), Prepared(wl, server(exec_ms=10, cores=2))
    )
    assert one.throughput_rps == pytest.approx(100, rel=0.02)
    assert one.p50_ms == pytest.approx(20, rel=0.05)  # two batches stretch each other to 20 ms
    assert two.throughput_rps == pytest.approx(200, rel=0.02)


def test_rejections_by_kind():
    wl = Workload(users=8, request_sizes="1:50,16:50", warmup_s=1.0, window_s=4.0)
    srv = server(exec_ms=5, o_in=1e-4, o_rej=5e-5)
    p = simulate(cfg(max_batch_size=8), Prepared(wl, srv))
    assert p.queue_full == 0
    assert p.oversize / p.requests == pytest.approx(0.5, abs=0.05)
    q = simulate(
        cfg(max_batch_size=1, max_enqueued_batches=1),
        Prepared(Workload(users=8, warmup_s=1, window_s=4), srv),
    )
    assert q.oversize == 0 and q.queue_full > q.ok > 0
    assert q.error_rate == pytest.approx((q.requests - q.ok) / q.requests)


def test_splitting_and_padding_follow_the_scheduler():
    wl = Workload(rate=100, arrivals="constant", request_sizes="10", warmup_s=0.5, window_s=2.0)
    split = cfg(max_batch_size=32, enable_large_batch_splitting=True, max_execution_batch_size=4)
    p = simulate(split, Prepared(wl, server(exec_ms=1)))
    assert p.batch_size_histogram.keys() == {2, 4}  # 10 rows: 4 + 4 + 2
    assert p.batch_size_histogram[4] == 2 * p.batch_size_histogram[2]
    assert p.ok == p.requests  # each request answered once, after its last piece
    padded = simulate(
        cfg(max_batch_size=16, allowed_batch_sizes=(4, 8, 16)),
        Prepared(
            Workload(rate=100, arrivals="constant", request_sizes="3", warmup_s=0.5, window_s=2),
            server(exec_ms=1),
        ),
    )
    assert padded.batch_size_histogram.keys() == {4}


def test_request_path_cpu_and_the_client_bound_a_closed_loop():
    # 1 ms of execution plus 1 ms of request path per request on one core: at most 500 req/s
    srv = server(exec_ms=1, o_in=5e-4, o_out=5e-4)
    p = simulate(cfg(max_batch_size=1), Prepared(Workload(users=16, warmup_s=1, window_s=4), srv))
    assert p.throughput_rps == pytest.approx(500, rel=0.03)
    slow_client = server(exec_ms=1, o_in=5e-4, o_out=5e-4, client=4e-3)  # 250 req/s at most
    q = simulate(
        cfg(max_batch_size=1), Prepared(Workload(users=16, warmup_s=1, window_s=4), slow_client)
    )
    assert q.throughput_rps == pytest.approx(250, rel=0.03)


def test_batching_off_runs_each_request_alone_and_shares_the_core():
    p = simulate(None, Prepared(Workload(users=4, warmup_s=1, window_s=4), server(exec_ms=10)))
    assert p.batch_size_histogram.keys() == {1}
    assert p.throughput_rps == pytest.approx(100, rel=0.02)
    assert p.p50_ms == pytest.approx(40, rel=0.05)


def _reference_batches(params, arrivals, exec_s):
    """The server's own BatchQueue driven by a plain loop: one thread, no request-path cost."""
    q = BatchQueue(params.effective(cores=1))
    sizes, free_at, i = [], 0.0, 0
    while i < len(arrivals) or len(q):
        due = q.due_time()
        start = max(free_at, due) if due is not None else None
        if i < len(arrivals) and (start is None or arrivals[i] <= start):
            q.schedule(Task(1), arrivals[i])
            i += 1
            continue
        batch = q.pop_ready(start)
        sizes.append((start, batch.size))
        free_at = start + exec_s
    return sizes


def test_the_kernel_forms_the_same_batches_as_the_servers_queue():
    wl = Workload(rate=3000, arrivals="poisson", warmup_s=0.0, window_s=1.0, tail_s=2.0, seed=3)
    params = cfg(max_batch_size=16, batch_timeout_micros=2000)
    prep = Prepared(wl, server(exec_ms=2))
    p = simulate(params, prep)
    ref = [
        size for start, size in _reference_batches(params, list(prep.arrivals), 2e-3) if start < 1.0
    ]
    got = sorted((int(k), v) for k, v in p.batch_size_histogram.items())
    want = sorted((s, ref.count(s)) for s in set(ref))
    assert sum(v for _, v in got) == len(ref)
    assert got == want


def test_garbage_collection_pauses_set_the_tail_not_the_median():
    srv = server(exec_ms=1, o_in=1e-4, o_out=1e-4)
    paused = dataclasses.replace(srv, gc_every=2000 * 16, gc_s=0.2)
    wl = Workload(users=16, warmup_s=1, window_s=8)
    cfg1 = cfg(max_batch_size=8)
    calm = simulate(cfg1, Prepared(wl, srv))
    hit = simulate(cfg1, Prepared(wl, paused))
    assert hit.p50_ms == pytest.approx(calm.p50_ms, rel=0.1)
    assert hit.p999_ms > calm.p999_ms + 150
    assert hit.throughput_rps < calm.throughput_rps


def test_the_request_path_pays_a_wake_up_only_for_work_that_finds_it_idle():
    def run(wl, wake, rtt=0.0, **kw):
        srv = server(exec_ms=1.0, o_in=0.0002, o_out=0.0002, wake=wake, rtt=rtt)
        return simulate(cfg(**kw), Prepared(wl, srv))

    # requests 10 ms apart never overlap: each wakes the request path twice (its arrival, its
    # answer), 2 x 0.5 ms on top of 0.2 + 1 + 0.2 ms
    sparse = Workload(rate=100, arrivals="constant", warmup_s=0.5, window_s=2.0)
    assert run(sparse, 0.0, max_batch_size=1).p50_ms == pytest.approx(1.4, rel=0.02)
    assert run(sparse, 0.0005, max_batch_size=1).p50_ms == pytest.approx(2.4, rel=0.02)
    # a closed loop of 8 users and full batches of 8, with a 5 ms round trip: the batch's 8
    # answers share one wake-up, and the 8 next requests (they come back 0.2 ms apart, as
    # fast as the request path takes them) share another: 2 x 0.5 ms per cycle, not 16 x 0.5
    closed = Workload(users=8, warmup_s=0.5, window_s=2.0)
    kw = dict(max_batch_size=8, batch_timeout_micros=50_000)
    woken = run(closed, 0.0005, rtt=0.005, **kw)
    plain = run(closed, 0.0, rtt=0.005, **kw)
    assert set(woken.batch_size_histogram) == {8}
    cycle_woken, cycle_plain = 8 / woken.throughput_rps, 8 / plain.throughput_rps
    assert cycle_woken - cycle_plain == pytest.approx(0.001, rel=0.1)


def test_a_batch_past_every_deadline_is_answered_resource_exhausted_not_run():
    wl = Workload(rate=100, arrivals="constant", warmup_s=0.5, window_s=2.0)
    # requests 10 ms apart, each batch waits 45 ms from its first: 5 requests, the last sent
    # 40 ms after the first
    params = cfg(max_batch_size=64, batch_timeout_micros=45_000)
    late = simulate(params, Prepared(wl, server(exec_ms=1), deadline_s=0.002))
    assert late.ok == 0 and late.deadline_exceeded == late.requests > 0
    assert late.batches == 0 and late.error_rate == 1.0
    # with 20 ms, the first requests of each batch are past due but the last is not: it runs
    some = simulate(params, Prepared(wl, server(exec_ms=1), deadline_s=0.02))
    assert some.ok == some.requests and some.deadline_exceeded == 0
    # a deadline the batches meet changes nothing
    calm = simulate(params, Prepared(wl, server(exec_ms=1)))
    met = simulate(params, Prepared(wl, server(exec_ms=1), deadline_s=0.2))
    assert met == calm and calm.deadline_exceeded == 0


def test_a_load_that_reaches_several_queues_is_refused():
    from harness.errors import ConfigError

    wl = Workload(rate=100, warmup_s=0.5, window_s=1.0)
    with pytest.raises(ConfigError, match="one batch queue") as exc:
        Prepared(wl, server(), queues=2)
    assert "measure it" in exc.value.hint
    with pytest.raises(ConfigError, match="deadline"):
        Prepared(wl, server(), deadline_s=0.0)
