"""The harness's figures against an independent gRPC load generator's, at the same concurrency.

The harness measures through Locust (a Python client) and its own per-request record; h2load
(nghttp2's compiled HTTP/2 client, Debian's nghttp2-client) knows nothing of either. Both drive
the same reference server, one after the other, interleaved round by round (this machine's
speed drifts), with the same one-row PredictRequest, closed loop, the same number of requests in
flight: Locust's users share one HTTP/2 connection (harness.load.grpc_channel keeps one per
process and target), so h2load gets one connection with that many streams. The server is the
bottleneck (ranker with batching, ~600-1,000 requests/s on its one core here), so the two should
agree; the bar is 5% on throughput and p50.

Server on core 0, the load (Locust or h2load) on core 1. Prints one table: per concurrency, the
median of the rounds (range in brackets) for each client, the mean size of the batches the
server formed for it (from its Prometheus page, warm-up included), and the harness/h2load ratios.

Usage: python benchmarks/independent_check.py [--users 16,64] [--rounds 5] [--seconds 8]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
SERVER_CPU, LOAD_CPU = 0, 1
WARMUP_S = 2.0
BATCHING = "max_batch_size { value: 128 }\nbatch_timeout_micros { value: 0 }\nnum_batch_threads { value: 1 }\n"


def harness_run(endpoint, users: int, seconds: float, workdir: Path) -> dict:
    """One measurement as a trial makes it (run_load: Locust, windows, the per-request record)."""
    from harness.config import LoadConfig
    from harness.load.runner import run_load

    windows = max(1, round(seconds / 2))
    load = LoadConfig(
        users=users, warmup_s=WARMUP_S, window_s=seconds / windows, min_windows=windows,
        max_windows=windows, extra_windows=0,
    )
    m = run_load(endpoint, load, workdir, cpus=(LOAD_CPU,)).measurement
    return {"rps": m.throughput_rps, "p50": m.p50_ms, "p99": m.p99_ms, "errors": m.requests - m.ok}


def h2load_run(target: str, body: bytes, users: int, seconds: float, workdir: Path) -> dict:
    """The same closed loop from h2load, latencies from its per-request log."""
    framed = workdir / "request.grpc"
    framed.write_bytes(struct.pack(">BI", 0, len(body)) + body)
    log = workdir / "h2load.log"
    cmd = [
        "taskset", "-c", str(LOAD_CPU), "h2load", "-c", "1", "-m", str(users),
        "-D", f"{round(seconds * 1000)}ms", f"--warm-up-time={round(WARMUP_S * 1000)}ms",
        "-d", str(framed), "-H", "content-type: application/grpc", "-H", "te: trailers",
        f"--log-file={log}", f"http://{target}/tensorflow.serving.PredictionService/Predict",
    ]
    subprocess.run(cmd, capture_output=True, text=True, check=True)
    rows = np.loadtxt(log, dtype=np.int64, ndmin=2)  # start (us since epoch), status, duration (us)
    ok = rows[rows[:, 1] == 200]
    span = (rows[:, 0].max() + rows[:, 2].max() - rows[:, 0].min()) / 1e6
    lat_ms = ok[:, 2] / 1000.0
    return {
        "rps": len(ok) / min(span, seconds),
        "p50": float(np.percentile(lat_ms, 50)),
        "p99": float(np.percentile(lat_ms, 99)),
        "errors": len(rows) - len(ok),
    }


def _cell(values: list[float], fmt: str) -> str:
    return f"{statistics.median(values):{fmt}} [{min(values):{fmt}}-{max(values):{fmt}}]"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", default="16,64")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=8.0)
    args = ap.parse_args()
    if shutil.which("h2load") is None:
        raise SystemExit("h2load is not installed (apt-get install nghttp2-client)")
    from harness.batching import BatchingParameters
    from harness.load import promscrape, wire
    from harness.models.catalog import MODELS
    from harness.models.export import ensure
    from harness.servers import ProcessBackend, ServerSpec

    work = Path(tempfile.mkdtemp(prefix="independent-check-"))
    info = MODELS["ranker"]
    ensure("ranker", work / "ranker")
    row = np.random.default_rng(0).random((1, *info.input_shape), dtype=np.float32)
    body = wire.predict_request("ranker", {info.input_name: row})
    backend = ProcessBackend("reference")
    spec = ServerSpec(
        model_name="ranker", model_dir=work / "ranker", cpus=(SERVER_CPU,),
        batching=BatchingParameters.from_text(BATCHING),
    )
    server = backend.start(spec, work / "server")
    results: dict[tuple[int, str], list[dict]] = {}
    try:
        for r in range(args.rounds):
            for users in map(int, args.users.split(",")):
                for client in ("harness", "h2load"):
                    d = work / f"{client}-{users}-{r}"
                    d.mkdir()
                    before = promscrape.scrape(server.endpoint.metrics_url)
                    run = (
                        harness_run(server.endpoint, users, args.seconds, d)
                        if client == "harness"
                        else h2load_run(server.endpoint.grpc_target, body, users, args.seconds, d)
                    )
                    # the batches the server formed for this client (warm-up included)
                    view = promscrape.server_view(before, promscrape.scrape(server.endpoint.metrics_url))
                    run["batch"] = view.get("mean_batch_size") or 0.0
                    results.setdefault((users, client), []).append(run)
                    print(f"round {r + 1} users {users} {client}: {run}", file=sys.stderr)
    finally:
        server.stop()
        backend.close()
    print("| users | client | req/s | p50 ms | p99 ms | mean batch, rows | errors |")
    print("|---|---|---|---|---|---|---|")
    for users in map(int, args.users.split(",")):
        for client in ("harness", "h2load"):
            runs = results[(users, client)]
            print(
                f"| {users} | {client} | {_cell([x['rps'] for x in runs], ',.0f')} | "
                f"{_cell([x['p50'] for x in runs], '.2f')} | {_cell([x['p99'] for x in runs], '.2f')}"
                f" | {_cell([x['batch'] for x in runs], '.1f')} | {sum(x['errors'] for x in runs)} |"
            )
        h, g = results[(users, "harness")], results[(users, "h2load")]
        ratio = [a["rps"] / b["rps"] for a, b in zip(h, g)]
        p50 = [a["p50"] / b["p50"] for a, b in zip(h, g)]
        print(f"| {users} | harness / h2load | {_cell(ratio, '.3f')} | {_cell(p50, '.3f')} | | | |")


if __name__ == "__main__":
    main()
