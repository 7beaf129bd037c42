"""Restart-to-ready time per backend: start a server with new batching parameters and wait until
the model is AVAILABLE (median of N starts; the previous server is stopped first, as in a trial).

Usage: python benchmarks/restart_to_ready.py [--models mlp,mobilenet_v2] [--runs 5] [--backends process,docker]
       [--timeline] [--gap SECONDS]

``--timeline`` also prints where each start's time went, from the server log's timestamps
(milliseconds since the backend was asked to start): the launcher's line before it hands over
to the native binary, TensorFlow opened, the SavedModel loaded, REST listening, and the moment
the backend saw the model AVAILABLE.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def backend(name: str):
    if name == "process":
        from harness.servers import ProcessBackend

        return ProcessBackend("reference")
    from harness.servers.docker import DockerBackend, DockerOptions
    from harness.servers.reference_image import build_reference_image

    build_reference_image()
    return DockerBackend(DockerOptions(image="tfs-harness/reference:latest"))


# What the log says, in the order a start goes through (the native path's lines; the Python
# path has only the first, the load and the REST line).
PHASES = (
    ("launcher", "Request path:"),
    ("tf opened", "Opened TensorFlow's C API"),
    ("model loaded", "Successfully loaded servable version"),
    ("listening", "Exporting HTTP/REST API"),
)
STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) ")


def timeline(log: str, started: float, ready: float) -> str:
    """Milliseconds from the start request to each phase's log line, and to readiness."""
    seen = {}
    for line in log.splitlines():
        m = STAMP.match(line)
        if not m:
            continue
        at = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp()
        for name, text in PHASES:
            if name not in seen and text in line:
                seen[name] = at
    parts = [f"{name} {1e3 * (seen[name] - started):.0f}" for name, _ in PHASES if name in seen]
    return ", ".join([*parts, f"ready {1e3 * (ready - started):.0f} ms"])


def trial_load(endpoint, model: str, seconds: float, tmp: Path) -> None:
    """Closed-loop Predict calls of one item for ``seconds`` from cpu 1 (grpc_blast.py's h2load)."""
    import subprocess

    import numpy as np

    from harness.load.wire import predict_request
    from harness.models import MODELS

    info = MODELS[model]
    x = np.random.default_rng(0).random((1, *info.input_shape), dtype=np.float32)
    request = tmp / f"{model}-request.bin"
    request.write_bytes(predict_request(endpoint.model_name, {info.input_name: x}))
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "grpc_blast.py"), f"--target={endpoint.grpc_target}",
         f"--request-file={request}", "--concurrency=4", f"--seconds={seconds}", "--warmup=0",
         "--cpu=1", "--client=h2load"],
        check=True, capture_output=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="mlp,mobilenet_v2")
    ap.add_argument("--backends", default="process,docker")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--model-dir", default=str(ROOT / "models"))
    ap.add_argument("--timeline", action="store_true", help="print each start's phases")
    ap.add_argument(
        "--gap-load",
        action="store_true",
        help="during each gap, closed-loop gRPC load (h2load, 4 in flight) from cpu 1, as in a "
        "trial: the standby then has only the CPU the trial leaves",
    )
    ap.add_argument(
        "--gap",
        type=float,
        default=0.0,
        help="seconds each server stays up before it is stopped, as during a trial (default 0: "
        "back to back; the fork server's standby loads the next start's model in that time)",
    )
    args = ap.parse_args()
    from harness.batching import BatchingParameters
    from harness.models.export import ensure
    from harness.servers import ServerSpec

    tmp = Path(tempfile.mkdtemp(prefix="restart-"))
    print(f"machine: {os.cpu_count()} cores; server pinned to cpu 0; {args.runs} starts each\n")
    print("| backend | model | median s | min s | max s |")
    print("|---|---|---|---|---|")
    for bname in args.backends.split(","):
        b = backend(bname)
        for model in args.models.split(","):
            base = Path(args.model_dir) / model
            ensure(model, base)
            times = []
            for i in range(args.runs):
                spec = ServerSpec(
                    model_name=model,
                    model_dir=base,
                    cpus=(0,),
                    batching=BatchingParameters(
                        max_batch_size=8 * (i + 1), batch_timeout_micros=1000 * i
                    ),
                )
                wall, t0 = time.time(), time.monotonic()
                server = b.start(spec, tmp / f"{bname}-{model}-{i}")
                times.append(time.monotonic() - t0)
                if args.timeline:
                    print(f"  start {i}: {timeline(server.logs(), wall, wall + times[-1])}")
                if args.gap_load and args.gap > 0:
                    trial_load(server.endpoint, model, args.gap, tmp)
                else:
                    time.sleep(args.gap)
                server.stop()
            print(
                f"| {bname} | {model} | {statistics.median(times):.2f} | {min(times):.2f} | {max(times):.2f} |",
                flush=True,
            )
        if hasattr(b, "close"):
            b.close()


if __name__ == "__main__":
    main()
