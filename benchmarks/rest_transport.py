"""The reference server's REST transport against library candidates, measured with wrk.

Every candidate serves the same routes through the same ``RestServer.handle`` (JSON decoding,
the model run in the REST thread pool, the answer), so only the HTTP layer differs:

- ``hand-written``: harness/refserver/rest.py as it is (asyncio streams, our own HTTP/1.1);
- ``aiohttp``: aiohttp's server (asyncio, its C HTTP parser) calling ``handle``;
- ``uvicorn``: uvicorn's server (asyncio, the httptools C parser) with a bare ASGI app calling
  ``handle``;
- ``http.server``: the standard library's ThreadingHTTPServer, one thread per connection,
  running ``handle`` to completion in that thread (decoding and the model run there).

The server runs on core 0 (``taskset``), wrk on core 1, REST ``:predict`` of one row on the demo
``mlp`` model, batching off and on, several connection counts. The configs are interleaved: each
round starts every (candidate, batching) server in turn and runs every connection count against
it, the candidate order rotating between rounds, because this kind of machine drifts by up to
45% within an hour. Prints medians over rounds with the range.

Usage: python benchmarks/rest_transport.py [--rounds 5] [--seconds 5] [--connections 1,16,64]
Needs wrk (Debian package ``wrk``) and, for their candidates, aiohttp and uvicorn + httptools
(``pip install -e ".[bench]"``). Takes the machine: run it
under ``flock /tmp/heavy.lock``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import Executor, Future
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SERVER_CPU, LOAD_CPU = 0, 1
CANDIDATES = ("hand-written", "aiohttp", "uvicorn", "http.server")
BATCHING = (
    "max_batch_size { value: 32 }\nbatch_timeout_micros { value: 0 }\n"
    "num_batch_threads { value: 1 }\nmax_enqueued_batches { value: 1000 }\n"
)
ROW = [0.1 * i for i in range(16)]  # the mlp's one input row of 16 floats


# -- the candidates, run inside the server process (``--serve``) ----------------------------------


def _rest_server(ms):
    from harness.refserver.rest import RestServer

    return RestServer(
        ms.predictor,
        num_threads=ms.args.rest_api_num_threads or max(4 * ms.args._cores, 64),
        timeout_ms=ms.args.rest_api_timeout_in_ms,
        metrics_path=ms.metrics_path,
        max_body_bytes=ms.args.rest_api_max_request_bytes,
    )


async def _serve_aiohttp(ms) -> None:
    from aiohttp import web

    rest = _rest_server(ms)

    async def any_route(request):
        body = await request.read()
        status, payload, ctype = await rest.handle(request.method, request.path_qs, body)
        return web.Response(status=status, body=payload, headers={"Content-Type": ctype})

    app = web.Application(client_max_size=ms.args.rest_api_max_request_bytes)
    app.router.add_route("*", "/{tail:.*}", any_route)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, ms.args.bind_address, ms.args.rest_api_port, backlog=1024)
    await site.start()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


async def _serve_uvicorn(ms) -> None:
    import uvicorn

    rest = _rest_server(ms)

    async def app(scope, receive, send):
        body, more = b"", True
        while more:
            msg = await receive()
            body += msg.get("body", b"")
            more = msg.get("more_body", False)
        target = scope["raw_path"].decode("latin-1")
        if scope["query_string"]:
            target += "?" + scope["query_string"].decode("latin-1")
        status, payload, ctype = await rest.handle(scope["method"], target, body)
        headers = [(b"content-type", ctype.encode()), (b"content-length", b"%d" % len(payload))]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    config = uvicorn.Config(
        app,
        host=ms.args.bind_address,
        port=ms.args.rest_api_port,
        http="httptools",
        lifespan="off",
        access_log=False,
        log_level="warning",
        backlog=1024,
    )
    await uvicorn.Server(config).serve()


class _Inline(Executor):
    """Runs the submitted call at once in the calling thread (the connection's own thread)."""

    def submit(self, fn, /, *args, **kwargs):
        f: Future = Future()
        try:
            f.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            f.set_exception(exc)
        return f


async def _serve_threaded(ms) -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    rest = _rest_server(ms)
    rest.pool = _Inline()
    local = threading.local()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, *args) -> None:
            pass

        def _any(self) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n) if n else b""
            loop = getattr(local, "loop", None) or asyncio.new_event_loop()
            local.loop = loop
            status, payload, ctype = loop.run_until_complete(
                rest.handle(self.command, self.path, body)
            )
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = _any

    ThreadingHTTPServer.request_queue_size = 1024
    httpd = ThreadingHTTPServer((ms.args.bind_address, ms.args.rest_api_port), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        await asyncio.Event().wait()
    finally:
        httpd.shutdown()


def serve(candidate: str, argv: list[str]) -> int:
    from harness.refserver import server

    if candidate == "aiohttp":
        server.ModelServer._serve_rest = _serve_aiohttp
    elif candidate == "uvicorn":
        server.ModelServer._serve_rest = _serve_uvicorn
    elif candidate == "http.server":
        server.ModelServer._serve_rest = _serve_threaded
    return server.main(argv)


# -- the driver ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(candidate: str, base: Path, batching: bool, tmp: Path):
    grpc_port, port = free_port(), free_port()
    args = [f"--port={grpc_port}", f"--rest_api_port={port}", "--model_name=m"]
    args += [f"--model_base_path={base}", "--tensorflow_intra_op_parallelism=1"]
    args += ["--tensorflow_inter_op_parallelism=1"]
    if batching:
        (tmp / "batching.txt").write_text(BATCHING)
        args += ["--enable_batching", f"--batching_parameters_file={tmp / 'batching.txt'}"]
    cmd = ["taskset", "-c", str(SERVER_CPU), sys.executable, __file__, "--serve", candidate]
    log = open(tmp / f"{candidate}-{int(batching)}.log", "w")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([*cmd, "--", *args], stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{candidate} server exited:\n{Path(log.name).read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/v1/models/m", timeout=1) as r:
                if "AVAILABLE" in r.read().decode():
                    return proc, url
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{candidate} server not ready after 120 s")


def wrk(url: str, connections: int, seconds: float, script: Path) -> dict:
    cmd = ["taskset", "-c", str(LOAD_CPU), "wrk", "-t1", f"-c{connections}", f"-d{int(seconds)}s"]
    cmd += ["--latency", "-s", str(script), f"{url}/v1/models/m:predict"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    lat = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", out, re.M))
    return {
        "rps": rps,
        "p50_ms": _ms(lat.get("50", "nan")),
        "p99_ms": _ms(lat.get("99", "nan")),
        "errors": (int(bad.group(1)) if bad else 0) + (sum(map(int, errs.groups())) if errs else 0),
    }


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not m:
        return float("nan")
    return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]


def check(url: str) -> None:
    """The candidate answers a predict as the hand-written one does (same body, same code)."""
    req = urllib.request.Request(
        f"{url}/v1/models/m:predict", data=json.dumps({"instances": [ROW]}).encode()
    )
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 200 and "predictions" in json.loads(r.read()), url


def measure(args, base: Path, tmp: Path) -> dict:
    script = tmp / "post.lua"
    body = json.dumps({"instances": [ROW]}, separators=(",", ":"))
    script.write_text(
        f"wrk.method = 'POST'\nwrk.body = '{body}'\n"
        "wrk.headers['Content-Type'] = 'application/json'\n"
    )
    runs: dict = {}
    for rnd in range(args.rounds):
        shift = rnd % len(args.candidates)
        order = args.candidates[shift:] + args.candidates[:shift]
        for batching in (False, True):
            for cand in order:
                proc, url = start(cand, base, batching, tmp)
                try:
                    check(url)
                    wrk(url, max(args.connections), 2, script)  # warm-up, not counted
                    for conns in args.connections:
                        r = wrk(url, conns, args.seconds, script)
                        runs.setdefault((cand, batching, conns), []).append(r)
                        print(f"round {rnd + 1} {cand:12} batching={'on' if batching else 'off'}"
                              f" c={conns:<3} {r['rps']:8.0f} req/s", file=sys.stderr, flush=True)
                finally:
                    proc.terminate()
                    proc.wait(20)
    return runs


def table(runs: dict, candidates: list[str], connections: list[int]) -> str:
    lines = [
        "| batching | connections | server | req/s median | range | p50 ms | p99 ms | errors |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for batching in (False, True):
        for conns in connections:
            for cand in candidates:
                rs = runs[(cand, batching, conns)]
                rps = [r["rps"] for r in rs]
                p50 = statistics.median(r["p50_ms"] for r in rs)
                p99 = statistics.median(r["p99_ms"] for r in rs)
                lines.append(
                    f"| {'on' if batching else 'off'} | {conns} | {cand} | "
                    f"{statistics.median(rps):.0f} | {min(rps):.0f}-{max(rps):.0f} | "
                    f"{p50:.2f} | {p99:.2f} | {sum(r['errors'] for r in rs)} |"
                )
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--serve":
        sys.exit(serve(sys.argv[2], sys.argv[4:]))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--connections", default="1,16,64")
    ap.add_argument("--candidates", default=",".join(CANDIDATES))
    args = ap.parse_args()
    args.connections = [int(c) for c in args.connections.split(",")]
    args.candidates = args.candidates.split(",")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from harness.models.export import export

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        base = tmp / "mlp"
        export("mlp", base, 1)
        runs = measure(args, base, tmp)
    print(f"REST :predict, one row, mlp; server on core {SERVER_CPU}, wrk -t1 on core {LOAD_CPU};")
    print(f"{args.rounds} interleaved rounds of {args.seconds:g} s per config\n")
    print(table(runs, args.candidates, args.connections))


if __name__ == "__main__":
    main()
