"""A lean closed-loop gRPC load generator for benchmarks: pre-serialized requests, no TensorFlow.

Keeps ``--concurrency`` Predict calls in flight through grpcio futures and prints one JSON line:
requests, errors and seconds. Used by refserver_throughput.py, one process per load core.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time

import grpc


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", required=True)
    ap.add_argument("--request-file", required=True, help="a serialized PredictRequest")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--cpu", type=int, default=None)
    args = ap.parse_args()
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
