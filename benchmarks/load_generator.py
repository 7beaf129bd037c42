"""How much load one Locust process makes, and whether its latencies can be trusted.

Against the reference server serving `mlp` without batching (server on core 0, load on core 1):
1. capacity: requests/s of one Locust process, gRPC and REST, closed loop, with its CPU share
   (a process near 100% CPU is the limit; otherwise the server is);
2. accuracy: the harness's p50 at concurrency 1 against a plain grpcio blocking loop's p50
   (target: within 15% or 100 us, whichever is larger);
3. cross-check: REST throughput against wrk (Debian's wrk, a POST script) at the same
   concurrency (target: within 10%);
4. footprint: a Locust worker's start time and peak memory with and without TensorFlow.

Usage: python benchmarks/load_generator.py [--seconds 6]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
SERVER_CPU, LOAD_CPU = 0, 1

PLAIN_GRPC = r"""
import os, sys, time, json, grpc, numpy as np
os.sched_setaffinity(0, {%(cpu)d})
sys.path.insert(0, %(root)r)
from harness.load import wire
body = wire.predict_request("mlp", {"x": np.random.default_rng(0).random((1, 16), dtype=np.float32)})
ch = grpc.insecure_channel(%(target)r)
call = ch.unary_unary("/tensorflow.serving.PredictionService/Predict")
for _ in range(200): call(body)
lat = []
end = time.perf_counter() + %(seconds)f
while time.perf_counter() < end:
    t = time.perf_counter(); call(body); lat.append(time.perf_counter() - t)
print(json.dumps({"p50_ms": float(np.percentile(lat, 50)) * 1000, "rps": len(lat) / %(seconds)f}))
"""

WRK_LUA = """wrk.method = "POST"
wrk.body = '%s'
wrk.headers["Content-Type"] = "application/json"
"""


def footprint(with_tf: bool) -> tuple[float, float]:
    code = "import resource, time, locust\nfrom harness.load import grpc_user, rest_user\n"
    if with_tf:
        code += "import tensorflow\n"
    code += "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)\n"
    times, mems = [], []
    for _ in range(3):
        t0 = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
        )
        times.append(time.perf_counter() - t0)
        mems.append(float(out.stdout.strip().splitlines()[-1]))
    return statistics.median(times), statistics.median(mems)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=6.0)
    args = ap.parse_args()
    from harness.config import LoadConfig
    from harness.load.payloads import rest_encoder
    from harness.load.runner import run_load
    from harness.models.export import ensure
    from harness.servers import ProcessBackend, ServerSpec

    tmp = Path(tempfile.mkdtemp(prefix="loadgen-"))
    base = ROOT / "models" / "mlp"
    ensure("mlp", base)
    backend = ProcessBackend("reference")
    server = backend.start(
        ServerSpec(model_name="mlp", model_dir=base, cpus=(SERVER_CPU,)), tmp / "server"
    )
    ep = server.endpoint
    win = dict(
        warmup_s=2.0, window_s=args.seconds / 3, min_windows=3, max_windows=3
    )
    try:
        print(
            f"machine: {os.cpu_count()} cores; server (reference, mlp, no batching) on cpu {SERVER_CPU}, "
            f"load on cpu {LOAD_CPU}\n"
        )
        print("## Capacity of one Locust process (closed loop, 1-row requests)\n")
        print("| protocol | users | requests/s | generator CPU | requests/s per full core |")
        print("|---|---|---|---|---|")
        rest_rps = {}
        for proto in ("grpc", "rest"):
            for users in (8, 32):
                r = run_load(
                    ep, LoadConfig(protocol=proto, users=users, **win),
                    tmp / f"cap-{proto}-{users}",
                    cpus=(LOAD_CPU,),
                )
                rps = r.measurement.throughput_rps
                if proto == "rest":
                    rest_rps[users] = rps
                print(
                    f"| {proto} | {users} | {rps:.0f} | {r.generator_cpu:.0%} | {rps / max(r.generator_cpu, 1e-9):.0f} |",
                    flush=True,
                )

        print("\n## Latency at concurrency 1 (gRPC)\n")
        r = run_load(ep, LoadConfig(protocol="grpc", users=1, **win), tmp / "c1", cpus=(LOAD_CPU,))
        plain = json.loads(
            subprocess.run(
                [
                    sys.executable,
                    "-c",
                    PLAIN_GRPC
                    % dict(
                        cpu=LOAD_CPU, root=str(ROOT), target=ep.grpc_target, seconds=args.seconds
                    ),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        diff_us = (r.measurement.p50_ms - plain["p50_ms"]) * 1000
        allowed = max(0.15 * plain["p50_ms"] * 1000, 100)
        print("| client | p50 ms | requests/s |")
        print("|---|---|---|")
        print(
            f"| harness (Locust + recorder) | {r.measurement.p50_ms:.3f} | {r.measurement.throughput_rps:.0f} |"
        )
        print(f"| plain grpcio blocking loop | {plain['p50_ms']:.3f} | {plain['rps']:.0f} |")
        print(
            f"\ndifference {diff_us:+.0f} us (allowed {allowed:.0f} us): {'OK' if abs(diff_us) <= allowed else 'MISSED'}"
        )

        if shutil.which("wrk"):
            print("\n## REST cross-check with wrk (same server, same concurrency, 1 wrk thread)\n")
            import numpy as np

            body = rest_encoder()(
                {"x": np.random.default_rng(0).random((1, 16), dtype=np.float32)}
            ).decode()
            script = tmp / "post.lua"
            script.write_text(WRK_LUA % body)
            print("| connections | wrk requests/s | harness requests/s | harness / wrk |")
            print("|---|---|---|---|")
            for conns in (8, 32):
                out = subprocess.run(
                    [
                        "taskset",
                        "-c",
                        str(LOAD_CPU),
                        "wrk",
                        "-t1",
                        f"-c{conns}",
                        f"-d{int(args.seconds)}s",
                        "-s",
                        str(script),
                        f"{ep.rest_url}/v1/models/mlp:predict",
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
                wrk_rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
                print(
                    f"| {conns} | {wrk_rps:.0f} | {rest_rps[conns]:.0f} | {rest_rps[conns] / wrk_rps:.2f} |"
                )

        print("\n## Worker footprint (median of 3 starts)\n")
        print("| worker | start s | peak RSS MB |")
        print("|---|---|---|")
        for with_tf in (False, True):
            t, mem = footprint(with_tf)
            print(
                f"| locust + harness users{' + tensorflow' if with_tf else ''} | {t:.2f} | {mem:.0f} |"
            )
    finally:
        server.stop()
        backend.close()


if __name__ == "__main__":
    main()
