"""A lean closed-loop gRPC load generator for benchmarks: pre-serialized requests, no TensorFlow.

Keeps ``--concurrency`` Predict calls in flight through grpcio futures and prints one JSON line:
requests, errors and seconds. Used by refserver_throughput.py, one process per load core.

grpcio tops out near 3,300 calls/s on one core, below what the native server answers; with
``--client h2load`` the same calls come from nghttp2's compiled HTTP/2 client (Debian's
nghttp2-client), gRPC's framing added here: a 5-byte prefix, ``application/grpc``,
``te: trailers``. h2load counts HTTP/2 responses, so a gRPC error (HTTP 200 with a non-zero
``grpc-status``) would count as answered: check the server's request_count when it matters.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import struct
import subprocess
import tempfile
import threading
import time

import grpc


def h2load(target: str, payload: bytes, concurrency: int, seconds: float, warmup: float,
           cpu: int | None) -> dict:
    """The same closed loop from h2load (one connection, ``concurrency`` streams)."""
    framed = tempfile.NamedTemporaryFile(suffix=".grpc", delete=False)
    framed.write(struct.pack(">BI", 0, len(payload)) + payload)
    framed.close()
    cmd = [
        # h2load takes whole seconds or a unit: "4", "1500ms"
        "h2load", "-c", "1", "-m", str(concurrency), "-D", f"{round(seconds * 1000)}ms",
        f"--warm-up-time={round(warmup * 1000)}ms", "-d", framed.name,
        "-H", "content-type: application/grpc", "-H", "te: trailers",
        f"http://{target}/tensorflow.serving.PredictionService/Predict",
    ]
    if cpu is not None:
        cmd = ["taskset", "-c", str(cpu), *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    os.unlink(framed.name)
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", out)
    if not done:
        raise SystemExit(f"h2load printed no totals:\n{out[-2000:]}")
    return {"requests": int(done.group(2)), "errors": int(done.group(1)) - int(done.group(2)),
            "seconds": seconds}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", required=True)
    ap.add_argument("--request-file", required=True, help="a serialized PredictRequest")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--cpu", type=int, default=None)
    ap.add_argument("--client", choices=("grpcio", "h2load"), default="grpcio")
    args = ap.parse_args()
    if args.client == "h2load":
        if shutil.which("h2load") is None:
            raise SystemExit("h2load is not installed (apt-get install nghttp2-client)")
        payload = open(args.request_file, "rb").read()
        print(json.dumps(h2load(args.target, payload, args.concurrency, args.seconds,
                                args.warmup, args.cpu)))
        return
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    payload = open(args.request_file, "rb").read()
    channel = grpc.insecure_channel(
        args.target, options=[("grpc.max_receive_message_length", 1 << 30)]
    )
    call = channel.unary_unary("/tensorflow.serving.PredictionService/Predict")
    lock = threading.Lock()
    done = threading.Event()
    state = {"ok": 0, "err": 0, "active": args.concurrency, "counting": False}
    start = time.perf_counter()
    t_measure = start + args.warmup
    t_end = t_measure + args.seconds

    def on_done(fut):
        now = time.perf_counter()
        failed = fut.exception() is not None
        with lock:
            if state["counting"] or now >= t_measure:
                state["counting"] = True
                state["err" if failed else "ok"] += 1
            if now < t_end:
                call.future(payload).add_done_callback(on_done)
                return
            state["active"] -= 1
            if state["active"] == 0:
                done.set()

    for _ in range(args.concurrency):
        call.future(payload).add_done_callback(on_done)
    done.wait(args.warmup + args.seconds + 60)
    elapsed = time.perf_counter() - t_measure
    print(
        json.dumps({"requests": state["ok"], "errors": state["err"], "seconds": elapsed}),
        flush=True,
    )
    channel.close()


if __name__ == "__main__":
    main()
