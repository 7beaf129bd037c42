"""The Locust gRPC user's transport (harness.load.grpc_channel) against a real grpcio server on
127.0.0.1: answers, status codes and details as grpcio reports them, timeouts, the receive limit,
flow control for large requests, transport failures and their classification, closing."""

from __future__ import annotations

import socket
import threading
import time
from concurrent import futures

import gevent
import grpc
import pytest

from harness.load import grpc_channel, status
from harness.load.grpc_channel import Channel

METHOD = "/tensorflow.serving.PredictionService/Predict"
CODES = {c.value[0]: c for c in grpc.StatusCode}


def _handle(request: bytes, context):
    """The request says what to answer: ok:N (N bytes), echo (its own length as the answer's),
    sleep:S, abort:CODE:DETAIL."""
    verb, _, rest = request.partition(b":")
    if verb == b"ok":
        return b"x" * int(rest)
    if verb == b"sleep":
        time.sleep(float(rest))
        return b"late"
    if verb == b"abort":
        code, _, detail = rest.partition(b":")
        context.abort(CODES[int(code)], detail.decode())
    return str(len(request)).encode()  # echo


@pytest.fixture(scope="module")
def server():
    srv = grpc.server(
        futures.ThreadPoolExecutor(max_workers=16),
        options=[("grpc.max_receive_message_length", 64 << 20),
                 ("grpc.max_send_message_length", 64 << 20)],  # fmt: skip
    )
    handler = grpc.method_handlers_generic_handler(
        "tensorflow.serving.PredictionService",
        {"Predict": grpc.unary_unary_rpc_method_handler(_handle)},
    )
    srv.add_generic_rpc_handlers((handler,))
    port = srv.add_insecure_port("127.0.0.1:0")
    srv.start()
    yield f"127.0.0.1:{port}"
    srv.stop(0)


def _grpcio(target: str, body: bytes, timeout: float = 10) -> tuple[int, str]:
    with grpc.insecure_channel(target) as ch:
        try:
            ch.unary_unary(METHOD)(body, timeout=timeout)
            return 0, ""
        except grpc.RpcError as exc:
            return exc.code().value[0], exc.details()


def test_answers_many_calls_at_once_on_one_connection(server):
    ch = Channel(server, METHOD, timeout=10)
    calls = [gevent.spawn(ch, f"ok:{n}".encode()) for n in range(200)]
    gevent.joinall(calls)
    assert [g.value for g in calls] == [(0, "", n) for n in range(200)]
    assert len(grpc_channel._POOLS[(server, 1 << 30)].conn.streams) == 0
    ch.close()
    assert (server, 1 << 30) not in grpc_channel._POOLS  # the last channel closed the socket


def test_codes_and_details_are_grpcios(server):
    ch = Channel(server, METHOD, timeout=10)
    cases = [b"abort:3:Task size 300 is larger than maximum batch size 128",
             b"abort:5:Servable not found for request: Latest(nope)",
             b"abort:8:caf\xc3\xa9 100% full, try later", b"abort:14:gone"]  # fmt: skip
    for body in cases:
        code, detail, length = ch(body)
        assert (code, detail) == _grpcio(server, body), body
        assert length == 0
    bad = Channel(server, "/tensorflow.serving.PredictionService/Nope", timeout=10)
    assert bad(b"x")[0] == grpc.StatusCode.UNIMPLEMENTED.value[0]
    assert status.oversize(ch(cases[0])[1]) == (300, 128)
    ch.close()
    bad.close()


def test_a_large_request_waits_for_flow_control_windows(server):
    ch = Channel(server, METHOD, timeout=10)
    sizes = [3 << 20, 100_000, 70_000, 1]
    calls = [gevent.spawn(ch, b"e" * n) for n in sizes for _ in range(3)]
    gevent.joinall(calls)
    assert [g.value for g in calls] == [(0, "", len(str(n))) for n in sizes for _ in range(3)]
    ch.close()


def test_a_timeout_is_deadline_exceeded_and_the_connection_goes_on(server):
    ch = Channel(server, METHOD, timeout=0.2)
    t = time.monotonic()
    assert ch(b"sleep:1")[:2] == (grpc.StatusCode.DEADLINE_EXCEEDED.value[0], "Deadline Exceeded")
    assert time.monotonic() - t < 0.6
    assert ch(b"ok:3") == (0, "", 3)
    assert grpc_channel.grpc_timeout(0.2) == "200m" and grpc_channel.grpc_timeout(1e6) == "1000000S"
    ch.close()


def test_an_answer_over_the_receive_limit_is_resource_exhausted(server):
    ch = Channel(server, METHOD, timeout=10, max_receive=1000)
    code, detail, _ = ch(b"ok:200000")
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0] and "larger than max" in detail
    assert ch(b"ok:999") == (0, "", 999)  # the stream was reset, not the connection
    ch.close()


def _classified(code: int, detail: str) -> int:
    # as the Locust user classifies (harness.load.grpc_user: importing it would patch this process)
    transport = code == grpc_channel.UNAVAILABLE and grpc_channel.TRANSPORT_DETAILS.search(detail)
    return status.TRANSPORT if transport else code


def test_no_server_is_a_transport_failure_and_backs_off():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # a port nobody listens on
    ch = Channel(f"127.0.0.1:{port}", METHOD, timeout=5)
    code, detail, _ = ch(b"ok:1")
    assert "failed to connect" in detail and "refused" in detail.lower()
    assert _classified(code, detail) == status.TRANSPORT
    t = time.monotonic()
    assert ch(b"ok:1")[1] == detail and time.monotonic() - t < 0.05  # fails fast while backing off
    ch.close()


def test_a_connection_the_server_drops_is_a_transport_failure():
    """A peer that reads the request and closes: the open call fails as a transport failure,
    and the next call connects again."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def drop_two():
        for _ in range(2):
            conn, _ = listener.accept()
            conn.recv(65536)
            time.sleep(0.05)
            conn.close()

    threading.Thread(target=drop_two, daemon=True).start()
    ch = Channel(f"127.0.0.1:{port}", METHOD, timeout=5)
    for _ in range(2):
        code, detail, _ = ch(b"ok:1")
        assert _classified(code, detail) == status.TRANSPORT, detail
    ch.close()
    listener.close()


def test_ipv6_targets(server):
    try:
        srv = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        port = srv.add_insecure_port("[::1]:0")
    except RuntimeError:
        pytest.skip("no IPv6 loopback here")
    srv.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "tensorflow.serving.PredictionService",
        {"Predict": grpc.unary_unary_rpc_method_handler(_handle)}),))  # fmt: skip
    srv.start()
    ch = Channel(f"[::1]:{port}", METHOD, timeout=5)
    assert ch(b"ok:7") == (0, "", 7)
    ch.close()
    srv.stop(0)
    assert grpc_channel.split_target("[::1]:8500") == ("::1", 8500)
    with pytest.raises(ValueError):
        grpc_channel.split_target("localhost")


def test_calls_over_the_servers_stream_limit_wait_their_turn():
    srv = grpc.server(
        futures.ThreadPoolExecutor(max_workers=8), options=[("grpc.max_concurrent_streams", 4)]
    )
    srv.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "tensorflow.serving.PredictionService",
        {"Predict": grpc.unary_unary_rpc_method_handler(_handle)}),))  # fmt: skip
    port = srv.add_insecure_port("127.0.0.1:0")
    srv.start()
    ch = Channel(f"127.0.0.1:{port}", METHOD, timeout=10)
    assert ch(b"ok:1") == (0, "", 1)  # the server's SETTINGS have come
    conn = grpc_channel._POOLS[(f"127.0.0.1:{port}", 1 << 30)].conn
    assert conn.peer_streams == 4
    calls = [gevent.spawn(ch, b"sleep:0.02") for _ in range(40)]
    peak = 0
    while not all(g.dead for g in calls):
        peak = max(peak, len(conn.streams))
        gevent.sleep(0.001)
    # never more open than the server allows; a stream it refuses while its count lags is sent
    # again (REFUSED_STREAM), so every call is answered
    assert [g.value for g in calls] == [(0, "", 4)] * 40 and peak <= 4
    ch.close()
    srv.stop(0)
