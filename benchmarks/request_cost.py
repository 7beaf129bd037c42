"""Server CPU per request, Python and native request paths (issue 17's CPU rows).

Starts `harness serve` (no batching) on core 0 for each path, drives it from core 1 with
closed-loop load (gRPC: grpc_blast.py's pre-serialized Predict calls; REST: keep-alive HTTP/1.1
connections from threads), and divides the server process's CPU seconds (utime + stime from
/proc, every thread) by the requests it answered. Paths are interleaved, runs repeated; prints
the median and range per path and protocol.

Usage: python benchmarks/request_cost.py [--model mlp] [--seconds 5] [--repeats 3]
       [--client grpcio|h2load] [--rest-client threads|h2load] [--protocols grpc,rest]

The REST figure depends on the client: Python's threads cannot keep the native server busy, so
it waits for each request and pays a wake-up per request; h2load keeps it busy, so one
``epoll_wait`` returns several connections' requests.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def start(impl: str, base: Path, grpc_port: int, rest_port: int, log: Path) -> subprocess.Popen:
    env = dict(os.environ, HARNESS_REFSERVER_IMPL=impl)
    cmd = ["taskset", "-c", "0", sys.executable, "-m", "harness.refserver", "--model_name=m",
           f"--model_base_path={base}", f"--port={grpc_port}", f"--rest_api_port={rest_port}"]
    proc = subprocess.Popen(cmd, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, cwd=ROOT)
    import requests

    for _ in range(300):
        try:
            if requests.get(f"http://127.0.0.1:{rest_port}/v1/models/m", timeout=1).ok:
                return proc
        except requests.RequestException:
            time.sleep(0.1)
    raise SystemExit(f"server did not start: {log.read_text()[-2000:]}")


def grpc_load(port: int, request_file: Path, seconds: float, client: str = "grpcio") -> int:
    runs = [
        subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "grpc_blast.py"),
                          f"--target=127.0.0.1:{port}", f"--request-file={request_file}",
                          "--concurrency=16", f"--seconds={seconds}", "--warmup=0", "--cpu=1",
                          f"--client={client}"],
                         stdout=subprocess.PIPE, text=True)
    ]
    return sum(json.loads(r.communicate()[0].strip().splitlines()[-1])["requests"] for r in runs)


def rest_h2load(port: int, body: bytes, seconds: float, connections: int = 16) -> int:
    """Keep-alive HTTP/1.1 POSTs from h2load (``--h1``), one request in flight per connection."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        f.write(body)
    cmd = ["taskset", "-c", "1", "h2load", "--h1", "-c", str(connections), "-m", "1",
           "-D", f"{round(seconds * 1000)}ms", "-d", f.name, "-H", "content-type: application/json",
           f"http://127.0.0.1:{port}/v1/models/m:predict"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    os.unlink(f.name)
    done = re.search(r"status codes: (\d+) 2xx", out)
    if not done:
        raise SystemExit(f"h2load printed no status codes:\n{out[-2000:]}")
    return int(done.group(1))


def rest_load(port: int, body: bytes, seconds: float, threads: int = 8) -> int:
    os.sched_setaffinity(0, {1})
    count = [0] * threads
    end = time.monotonic() + seconds

    def worker(i):
        conn = http.client.HTTPConnection("127.0.0.1", port)
        while time.monotonic() < end:
            conn.request("POST", "/v1/models/m:predict", body, {"Content-Type": "application/json"})
            r = conn.getresponse()
            r.read()
            if r.status == 200:
                count[i] += 1

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(count)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="mlp")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--impls", default="python,native")
    ap.add_argument("--client", choices=("grpcio", "h2load"), default="grpcio",
                    help="gRPC load from grpcio or from nghttp2's h2load (compiled)")
    ap.add_argument("--rest-client", choices=("threads", "h2load"), default="threads",
                    help="REST load from http.client threads or from h2load --h1 (compiled)")
    ap.add_argument("--protocols", default="grpc,rest")
    args = ap.parse_args()
    import numpy as np

    from harness.load.wire import predict_request
    from harness.models.export import ensure
    from tests.conftest import free_port

    tmp = Path(tempfile.mkdtemp(prefix="request-cost-"))
    base = ensure(args.model, tmp / args.model).parent
    row = np.random.default_rng(0).random((1, 16), dtype=np.float32)
    req = tmp / "req.bin"
    req.write_bytes(predict_request("m", {"x": row}))
    body = json.dumps({"instances": row.tolist()}).encode()
    results: dict[tuple[str, str], list[float]] = {}
    for rep in range(args.repeats):
        for impl in args.impls.split(","):
            g, r = free_port(), free_port()
            proc = start(impl, base, g, r, tmp / f"{impl}-{rep}.log")
            try:
                for proto in args.protocols.split(","):
                    if proto == "grpc":
                        grpc_load(g, req, 1.0, args.client)  # warm-up
                    c0 = cpu_seconds(proc.pid)
                    if proto == "grpc":
                        n = grpc_load(g, req, args.seconds, args.client)
                    elif args.rest_client == "h2load":
                        n = rest_h2load(r, body, args.seconds)
                    else:
                        n = rest_load(r, body, args.seconds)
                    c1 = cpu_seconds(proc.pid)
                    us = (c1 - c0) * 1e6 / max(n, 1)
                    results.setdefault((impl, proto), []).append(us)
                    print(f"run {rep} {impl:6} {proto:4}: {n / args.seconds:8.0f} req/s, "
                          f"{us:6.1f} us server CPU per request", flush=True)
            finally:
                proc.terminate()
                proc.wait(10)
    print(f"\nserver CPU per unbatched request, {args.model}, median [range] over {args.repeats} runs")
    for (impl, proto), v in sorted(results.items()):
        print(f"  {impl:6} {proto:4}: {statistics.median(v):6.1f} us [{min(v):.1f}-{max(v):.1f}]")


if __name__ == "__main__":
    main()
