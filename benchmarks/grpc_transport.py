"""What one gRPC call costs a gevent process, per client transport (the Locust gRPC user's choice).

Each candidate runs in a process of its own on the load core, gevent-patched as a Locust process
is, with N greenlets in a closed loop of one-row ranker Predicts against the native reference
server (max_batch_size 128, timeout 0, one thread, on the server core). Locust itself is left
out: this is the transport's share only. Printed per candidate and concurrency: requests/s,
p50, and the client process's CPU per request (user + system). h2load (compiled, one connection
with N streams) is the reference for what the server gives.

Candidates:
- ``grpcio``: blocking calls with grpc.experimental.gevent.init_gevent() (the user until now);
- ``grpcio-future``: the same channel, ``future()`` calls, each greenlet waiting on its future;
- ``grpc-aio``: grpc.aio in a plain asyncio process without gevent (it cannot share gevent's
  loop; this is a floor on its cost before any hand-off to Locust's greenlets);
- ``h2``: the ``h2`` library's HTTP/2 state machine on a gevent socket, reader and writer
  greenlets, writes coalesced per wake-up;
- ``channel``: harness.load.grpc_channel over harness.load.http2 (hand-written framing, ``hpack``
  for headers).

Usage: python benchmarks/grpc_transport.py [--users 16,64] [--seconds 5] [--clients ...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
SERVER_CPU, LOAD_CPU = 0, 1
BATCHING = "max_batch_size { value: 128 }\nbatch_timeout_micros { value: 0 }\nnum_batch_threads { value: 1 }\n"
METHOD = "/tensorflow.serving.PredictionService/Predict"
CLIENTS = ("grpcio", "grpcio-future", "grpc-aio", "h2", "channel")


# -- the clients (run in a child process: python grpc_transport.py --child NAME ...) ----------


def _gevent_loop(make_call, users: int, seconds: float, warmup: float) -> dict:
    import time

    import gevent

    lat: list[float] = []
    state = {"measuring": False, "stop": False}

    def user():
        call = make_call()
        while not state["stop"]:
            t = time.perf_counter()
            call()
            if state["measuring"]:
                lat.append(time.perf_counter() - t)

    greenlets = [gevent.spawn(user) for _ in range(users)]
    gevent.sleep(warmup)
    t0, c0 = time.perf_counter(), os.times()
    state["measuring"] = True
    gevent.sleep(seconds)
    state["measuring"] = False
    t1, c1 = time.perf_counter(), os.times()
    state["stop"] = True
    gevent.joinall(greenlets, timeout=5)
    return _figures(lat, t1 - t0, (c1.user + c1.system) - (c0.user + c0.system))


def _figures(lat: list[float], wall: float, cpu: float) -> dict:
    import numpy as np

    return {
        "rps": len(lat) / wall,
        "p50": float(np.percentile(lat, 50)) * 1000,
        "p99": float(np.percentile(lat, 99)) * 1000,
        "cpu_us": cpu / max(len(lat), 1) * 1e6,
        "cpu_share": cpu / wall,
    }


def _grpcio(target, body, users, seconds, warmup, future: bool) -> dict:
    import grpc
    import grpc.experimental.gevent as grpc_gevent

    grpc_gevent.init_gevent()
    channel = grpc.insecure_channel(target)
    stub = channel.unary_unary(METHOD)
    if future:
        return _gevent_loop(lambda: lambda: stub.future(body, timeout=30).result(), users, seconds, warmup)
    return _gevent_loop(lambda: lambda: stub(body, timeout=30), users, seconds, warmup)


def _channel(target, body, users, seconds, warmup) -> dict:
    from harness.load.grpc_channel import Channel

    def make():
        ch = Channel(target, METHOD, timeout=30)

        def call():
            code, detail, _ = ch(body)
            assert code == 0, detail

        return call

    return _gevent_loop(make, users, seconds, warmup)


def _h2(target, body, users, seconds, warmup) -> dict:
    import gevent
    import gevent.socket
    from gevent.event import AsyncResult, Event
    from h2.config import H2Configuration
    from h2.connection import H2Connection
    from h2.events import DataReceived, StreamEnded, StreamReset, TrailersReceived

    host, port = target.rsplit(":", 1)
    sock = gevent.socket.create_connection((host, int(port)))
    conn = H2Connection(H2Configuration(client_side=True, header_encoding=None))
    conn.initiate_connection()
    conn.increment_flow_control_window(2**31 - 1 - 65535)
    waiting: dict[int, AsyncResult] = {}
    wake = Event()
    headers = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", METHOD.encode()),
               (b":authority", target.encode()), (b"content-type", b"application/grpc"),
               (b"te", b"trailers"), (b"grpc-timeout", b"30000m")]  # fmt: skip
    message = struct.pack(">BI", 0, len(body)) + body

    def writer():
        while True:
            wake.wait()
            wake.clear()
            data = conn.data_to_send()
            if data:
                sock.sendall(data)

    def reader():
        while True:
            data = sock.recv(1 << 18)
            if not data:
                return
            for ev in conn.receive_data(data):
                if isinstance(ev, DataReceived):
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, TrailersReceived):
                    status = dict(ev.headers).get(b"grpc-status")
                    waiting.pop(ev.stream_id).set(status)
                elif isinstance(ev, (StreamEnded, StreamReset)) and ev.stream_id in waiting:
                    waiting.pop(ev.stream_id).set(None)
            wake.set()

    gevent.spawn(writer)
    gevent.spawn(reader)
    wake.set()

    def make():
        def call():
            sid = conn.get_next_available_stream_id()
            result = waiting[sid] = AsyncResult()
            conn.send_headers(sid, headers)
            conn.send_data(sid, message, end_stream=True)
            wake.set()
            assert result.get(timeout=30) == b"0"

        return call

    return _gevent_loop(make, users, seconds, warmup)


def _aio(target, body, users, seconds, warmup) -> dict:
    import asyncio
    import time

    import grpc

    async def main():
        lat: list[float] = []
        state = {"measuring": False, "stop": False}
        async with grpc.aio.insecure_channel(target) as channel:
            stub = channel.unary_unary(METHOD)

            async def user():
                while not state["stop"]:
                    t = time.perf_counter()
                    await stub(body, timeout=30)
                    if state["measuring"]:
                        lat.append(time.perf_counter() - t)

            tasks = [asyncio.create_task(user()) for _ in range(users)]
            await asyncio.sleep(warmup)
            t0, c0 = time.perf_counter(), os.times()
            state["measuring"] = True
            await asyncio.sleep(seconds)
            state["measuring"] = False
            t1, c1 = time.perf_counter(), os.times()
            state["stop"] = True
            await asyncio.gather(*tasks)
        return _figures(lat, t1 - t0, (c1.user + c1.system) - (c0.user + c0.system))

    return asyncio.run(main())


def child(name: str, target: str, body: bytes, users: int, seconds: float, warmup: float) -> dict:
    if name != "grpc-aio":
        from gevent import monkey

        monkey.patch_all()  # as `import locust` does
    run = {"grpcio": lambda *a: _grpcio(*a, future=False),
           "grpcio-future": lambda *a: _grpcio(*a, future=True),
           "grpc-aio": _aio, "h2": _h2, "channel": _channel}[name]  # fmt: skip
    return run(target, body, users, seconds, warmup)


# -- the parent ---------------------------------------------------------------------------------


def h2load(target: str, body_file: Path, users: int, seconds: float, warmup: float) -> dict:
    import resource

    cmd = ["taskset", "-c", str(LOAD_CPU), "h2load", "-c", "1", "-m", str(users),
           "-D", f"{round(seconds * 1000)}ms", f"--warm-up-time={round(warmup * 1000)}ms",
           "-d", str(body_file), "-H", "content-type: application/grpc", "-H", "te: trailers",
           f"http://{target}{METHOD}"]  # fmt: skip
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
    rps = float(out.split("finished in")[1].split(",")[1].split("req/s")[0])
    lat = [ln for ln in out.splitlines() if ln.startswith("time for request:")][0].split()
    # h2load prints min, max, mean, sd: the mean stands in for the median here
    mean = lat[5]
    p50 = float(mean[:-2]) / 1000 if mean.endswith("us") else float(mean[:-2])
    return {"rps": rps, "p50": p50, "p99": float("nan"), "cpu_us": cpu / (rps * (seconds + warmup)) * 1e6,
            "cpu_share": cpu / (seconds + warmup)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", default="16,64")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=1.5)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--clients", default=",".join(CLIENTS))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--target", help=argparse.SUPPRESS)
    ap.add_argument("--body", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        body = Path(args.body).read_bytes()
        users = int(args.users)
        print(json.dumps(child(args.child, args.target, body, users, args.seconds, args.warmup)))
        return
    import numpy as np

    from harness.batching import BatchingParameters
    from harness.load import wire
    from harness.models.catalog import MODELS
    from harness.models.export import ensure
    from harness.servers import ProcessBackend, ServerSpec

    work = Path(tempfile.mkdtemp(prefix="grpc-transport-"))
    info = MODELS["ranker"]
    ensure("ranker", work / "ranker")
    row = np.random.default_rng(0).random((1, *info.input_shape), dtype=np.float32)
    body = wire.predict_request("ranker", {info.input_name: row})
    (work / "body").write_bytes(body)
    (work / "request.grpc").write_bytes(struct.pack(">BI", 0, len(body)) + body)
    backend = ProcessBackend("reference")
    spec = ServerSpec(model_name="ranker", model_dir=work / "ranker", cpus=(SERVER_CPU,),
                      batching=BatchingParameters.from_text(BATCHING))  # fmt: skip
    server = backend.start(spec, work / "server")
    target = server.endpoint.grpc_target
    results: dict[tuple[str, int], list[dict]] = {}
    try:
        for _ in range(args.rounds):
            for users in map(int, args.users.split(",")):
                for name in ["h2load", *args.clients.split(",")]:
                    if name == "h2load":
                        run = h2load(target, work / "request.grpc", users, args.seconds, args.warmup)
                    else:
                        cmd = ["taskset", "-c", str(LOAD_CPU), sys.executable, __file__,
                               "--child", name, "--target", target, "--body", str(work / "body"),
                               "--users", str(users), "--seconds", str(args.seconds),
                               "--warmup", str(args.warmup)]  # fmt: skip
                        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
                        if out.returncode:
                            print(f"{name} {users}: failed\n{out.stderr[-1500:]}", file=sys.stderr)
                            continue
                        run = json.loads(out.stdout.strip().splitlines()[-1])
                    results.setdefault((name, users), []).append(run)
                    print(f"{name} users {users}: {run}", file=sys.stderr)
    finally:
        server.stop()
        backend.close()
    print("| users | client | req/s | p50 ms | client CPU us/req | client CPU share |")
    print("|---|---|---|---|---|---|")
    for users in map(int, args.users.split(",")):
        for name in ["h2load", *args.clients.split(",")]:
            runs = results.get((name, users), [])
            if not runs:
                continue
            med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            print(f"| {users} | {name} | {med['rps']:,.0f} | {med['p50']:.1f} | "
                  f"{med['cpu_us']:.0f} | {med['cpu_share']:.0%} |")  # fmt: skip


if __name__ == "__main__":
    main()
