"""Restart-to-ready time per backend: start a server with new batching parameters and wait until
the model is AVAILABLE (median of N starts; the previous server is stopped first, as in a trial).

Usage: python benchmarks/restart_to_ready.py [--models mlp,mobilenet_v2] [--runs 5] [--backends process,docker]
"""

from __future__ import annotations

import argparse
import os
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="mlp,mobilenet_v2")
    ap.add_argument("--backends", default="process,docker")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--model-dir", default=str(ROOT / "models"))
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
                t0 = time.monotonic()
                server = b.start(spec, tmp / f"{bname}-{model}-{i}")
                times.append(time.monotonic() - t0)
                server.stop()
            print(
                f"| {bname} | {model} | {statistics.median(times):.2f} | {min(times):.2f} | {max(times):.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
