"""How close the reference server comes to the model's own ceiling.

Prints two tables:
1. offline: each demo model's throughput (items/s) at batch sizes 1..64 in one process on one
   core, TensorFlow session with one intra- and one inter-op thread: the ceiling;
2. served: the reference server on core 0 under closed-loop gRPC load from core 1 (requests of
   one item, pre-serialized, see grpc_blast.py), with and without batching, and the ratio to
   the offline figures (median of --repeats runs, range in brackets: this kind of machine is
   noisy, +-10% between runs).

Each served config runs on every request path given (``--impls python,native``: the Python
server and the compiled one, docs/native.md), interleaved run by run. ``--client h2load`` sends
the load from nghttp2's compiled HTTP/2 client instead of grpcio, whose ~3,300 calls/s on one
core would cap the native server.

Usage: python benchmarks/refserver_throughput.py [--models mlp,ranker,mobilenet_v2] [--seconds 5]
       [--impls python,native] [--client grpcio|h2load]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SERVER_CPU, LOAD_CPU = 0, 1
BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)

# No-batching concurrency per model: enough requests in flight to keep the server core busy.
UNBATCHED_CONCURRENCY = {"mlp": 32, "ranker": 8, "mobilenet_v2": 4, "resnet50": 4}


def served_configs(model: str, ceiling: dict[int, float]) -> list[tuple[str, str | None, int]]:
    """(label, batching parameters file or None, concurrency) to measure for ``model``.

    The batching config follows TF Serving's CPU advice: one batch thread per core (one here),
    timeout 0, max_batch_size at the model's offline sweet spot, and about twice max_batch_size
    requests in flight so batches fill.
    """
    configs = [("no batching", None, UNBATCHED_CONCURRENCY[model])]
    if model == "mlp":
        return configs
    best = max(ceiling, key=ceiling.get)
    params = (
        f"max_batch_size {{ value: {best} }}\nbatch_timeout_micros {{ value: 0 }}\n"
        "num_batch_threads { value: 1 }\nmax_enqueued_batches { value: 1000 }\n"
    )
    configs.append((f"batching mbs={best} t=0 thr=1", params, 2 * best))
    return configs


def offline(model_dir: Path, seconds: float) -> dict[int, float]:
    """Items/s per batch size, measured in a child pinned to the server core."""
    code = f"""
import os, sys, time, json, numpy as np
os.sched_setaffinity(0, {{{SERVER_CPU}}})
sys.path.insert(0, {str(ROOT)!r})
from harness.refserver.model import LoadedModel
m = LoadedModel({str(model_dir / "1")!r}, 1, intra_op=1, inter_op=1)
sig = m.signature("serving_default")
spec = next(iter(sig.inputs.values()))
out = {{}}
for b in {BATCH_SIZES!r}:
    x = np.random.default_rng(0).random((b, *spec.shape[1:]), dtype=np.float32)
    m.run(sig, [x]); m.run(sig, [x])
    n = 0; t0 = time.perf_counter()
    while time.perf_counter() - t0 < {seconds}:
        m.run(sig, [x]); n += 1
    out[b] = n * b / (time.perf_counter() - t0)
print(json.dumps(out))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return {int(k): v for k, v in json.loads(r.stdout.strip().splitlines()[-1]).items()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request_bytes(input_name: str, shape: tuple[int, ...], model_name: str) -> bytes:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    req = predict_pb2.PredictRequest()
    req.model_spec.name = model_name
    x = np.random.default_rng(1).random((1, *shape), dtype=np.float32)
    req.inputs[input_name].CopyFrom(tf.make_tensor_proto(x))
    return req.SerializeToString()


def first_answer(port: int, payload: bytes) -> float:
    """Send one request and wait for its answer; returns its seconds. The first run of a
    signature builds its executor (TensorFlow's graph optimisation: ~2 s for mobilenet_v2 on
    this machine), which a 1 s warm-up would leave inside the measured window; the offline
    figures exclude it too (their two warm-up runs)."""
    import grpc

    t0 = time.monotonic()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary("/tensorflow.serving.PredictionService/Predict")
        call(payload, timeout=120)
    return time.monotonic() - t0


def served(
    model: str,
    base: Path,
    params: str | None,
    concurrency: int,
    seconds: float,
    tmp: Path,
    processes: int = 1,
    impl: str = "auto",
    client: str = "grpcio",
) -> dict:
    from harness.models import MODELS

    info = MODELS[model]
    port, rest = free_port(), free_port()
    args = [
        sys.executable,
        "-m",
        "harness.refserver",
        f"--port={port}",
        f"--rest_api_port={rest}",
        f"--model_name={model}",
        f"--model_base_path={base}",
        "--tensorflow_intra_op_parallelism=1",
        "--tensorflow_inter_op_parallelism=1",
    ]
    if params is not None:
        pfile = tmp / f"{model}-params.txt"
        pfile.write_text(params)
        args += ["--enable_batching", f"--batching_parameters_file={pfile}"]
    log = open(tmp / f"{model}-server.log", "w")
    proc = subprocess.Popen(
        args,
        env=dict(os.environ, HARNESS_REFSERVER_IMPL=impl),
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        preexec_fn=lambda: os.sched_setaffinity(0, {SERVER_CPU}),
    )
    try:
        import requests

        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{rest}/v1/models/{model}", timeout=1).ok:
                    break
            except requests.RequestException:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"server failed: {(tmp / f'{model}-server.log').read_text()[-2000:]}"
                )
            time.sleep(0.2)
        reqfile = tmp / f"{model}-request.bin"
        reqfile.write_bytes(request_bytes(info.input_name, info.input_shape, model))
        first = first_answer(port, reqfile.read_bytes())
        blasters = [
            subprocess.Popen(
                [
                    sys.executable,
                    str(ROOT / "benchmarks" / "grpc_blast.py"),
                    f"--target=127.0.0.1:{port}",
                    f"--request-file={reqfile}",
                    f"--concurrency={concurrency}",
                    f"--seconds={seconds}",
                    f"--cpu={LOAD_CPU}",
                    f"--client={client}",
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(processes)
        ]
        results = [json.loads(b.communicate()[0].strip().splitlines()[-1]) for b in blasters]
        reqs = sum(r["requests"] for r in results)
        errs = sum(r["errors"] for r in results)
        secs = max(r["seconds"] for r in results)
        return {"rps": reqs / secs, "errors": errs, "first": first}
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="mlp,ranker,mobilenet_v2")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--model-dir", default=str(ROOT / "models"))
    ap.add_argument(
        "--repeats", type=int, default=3, help="served runs per config; the median is shown"
    )
    ap.add_argument("--impls", default="python,native", help="request paths, interleaved")
    ap.add_argument("--client", choices=("grpcio", "h2load"), default="grpcio")
    args = ap.parse_args()
    from harness.models.export import ensure

    impls = args.impls.split(",")

    models = args.models.split(",")
    tmp = Path(tempfile.mkdtemp(prefix="bench-"))
    print(
        f"machine: {os.cpu_count()} cores, {os.uname().machine}; server on cpu {SERVER_CPU}, load on cpu {LOAD_CPU}"
    )
    ceilings = {}
    print("\n## Offline throughput (items/s, one core, median of --repeats sweeps)\n")
    print("| model | " + " | ".join(f"b={b}" for b in BATCH_SIZES) + " | best |")
    print("|---|" + "---|" * (len(BATCH_SIZES) + 1))
    for model in models:
        base = Path(args.model_dir) / model
        ensure(model, base)
        # the ceiling is as noisy as the served figures: each batch size's median of --repeats
        # sweeps (the best one's range is printed)
        sweeps = [offline(base, min(args.seconds, 3.0)) for _ in range(args.repeats)]
        tp = {b: statistics.median(s[b] for s in sweeps) for b in BATCH_SIZES}
        ceilings[model] = tp
        best_b = max(tp, key=tp.get)
        spread = f" ({min(s[best_b] for s in sweeps):.0f}-{max(s[best_b] for s in sweeps):.0f})"
        print(
            f"| {model} | "
            + " | ".join(f"{tp[b]:.0f}" for b in BATCH_SIZES)
            + f" | {max(tp.values()):.0f}{spread} |",
            flush=True,
        )
    print(f"\n## Served throughput (gRPC, closed loop, 1-item requests, client {args.client})\n")
    print(
        "| model | config | path | concurrency | requests/s median (range) | errors | / offline b=1 "
        "| / offline best | first answer s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for model in models:
        base = Path(args.model_dir) / model
        for label, params, conc in served_configs(model, ceilings[model]):
            runs: dict[str, list[dict]] = {i: [] for i in impls}
            for _ in range(args.repeats):
                for impl in impls:  # interleaved: a slow spell of the machine hits both
                    runs[impl].append(
                        served(model, base, params, conc, args.seconds, tmp, impl=impl,
                               client=args.client)
                    )
            tp = ceilings[model]
            for impl in impls:
                rps = [r["rps"] for r in runs[impl]]
                med = statistics.median(rps)
                errors = sum(r["errors"] for r in runs[impl])
                print(
                    f"| {model} | {label} | {impl} | {conc} | {med:.0f} ({min(rps):.0f}-{max(rps):.0f}) "
                    f"| {errors} | {med / tp[1]:.2f} | {med / max(tp.values()):.2f} "
                    f"| {statistics.median(r['first'] for r in runs[impl]):.2f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
