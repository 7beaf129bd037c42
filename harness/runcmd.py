"""``harness run``: start a server through a backend, measure it once (or sweep), print figures."""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

from harness.batching import BatchingParameters
from harness.errors import ConfigError
from harness.load.runner import LoadSpec, run_load


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--experiment",
        help="take model, server and load from an experiment file (their flags are then ignored; batching flags apply)",
    )
    p.add_argument(
        "--set", action="append", metavar="SECTION.KEY=VALUE", help="override an experiment value"
    )
    g = p.add_argument_group("model")
    g.add_argument(
        "--model", default="ranker", help="a demo model name (exported to --models-dir if missing)"
    )
    g.add_argument(
        "--model-dir",
        help="a SavedModel base path (version directories inside) instead of a demo model",
    )
    g.add_argument("--model-name", help="the name to serve it under (default: --model)")
    g.add_argument(
        "--models-dir", default="models", help="where demo models are exported (default ./models)"
    )
    g = p.add_argument_group("server")
    g.add_argument("--backend", choices=["process", "docker", "external"], default="process")
    g.add_argument(
        "--binary",
        default="auto",
        help="process backend: tensorflow_model_server, a path, or 'reference'",
    )
    g.add_argument(
        "--image", default="tfs-harness/reference:latest", help="docker backend: the image"
    )
    g.add_argument("--gpus", action="store_true", help="docker backend: request every GPU")
    g.add_argument("--grpc-target", help="external backend: host:port of gRPC")
    g.add_argument("--rest-url", help="external backend: http://host:port of REST")
    g.add_argument(
        "--server-cpus",
        help="cores for the server, e.g. 0 or 0-3 (default: core 0 when there are 2+)",
    )
    g.add_argument(
        "--bind-host",
        default="127.0.0.1",
        help="where the server listens (docker: where its ports are published); 0.0.0.0 for "
        "every interface (default 127.0.0.1)",
    )
    g.add_argument(
        "--advertise-host",
        default="",
        help="the name or address the harness and load workers reach the server at "
        "(default: --bind-host; for 0.0.0.0, a remote Docker engine's host or loopback)",
    )
    g.add_argument("--batching-file", help="a batching parameters file (turns batching on)")
    for name in (
        "max_batch_size",
        "batch_timeout_micros",
        "num_batch_threads",
        "max_enqueued_batches",
    ):
        g.add_argument(f"--{name.replace('_', '-')}", dest=name, type=int, help="turns batching on")
    g = p.add_argument_group("load")
    g.add_argument("--protocol", choices=["grpc", "rest"], default="grpc")
    g.add_argument("--users", type=int, default=16, help="closed loop: concurrent users")
    g.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="open loop: requests/s (Poisson unless --arrivals constant)",
    )
    g.add_argument("--arrivals", choices=["poisson", "constant"], default="poisson")
    g.add_argument(
        "--request-sizes", default="1", help="rows per request, or a mix like 1:50,4:30,16:20"
    )
    g.add_argument("--warmup", type=float, default=5.0, help="seconds excluded at the start")
    g.add_argument("--window", type=float, default=5.0, help="seconds per measurement window")
    g.add_argument("--max-windows", type=int, default=8)
    g.add_argument(
        "--processes",
        type=int,
        default=1,
        help="local Locust processes; above 1, a master and N worker processes (one core each)",
    )
    g.add_argument(
        "--remote-workers",
        type=int,
        default=0,
        help="also wait for N workers from other machines ('harness worker --master-host THIS')",
    )
    g.add_argument(
        "--master-bind-host",
        default="127.0.0.1",
        help="where the Locust master listens (0.0.0.0 or this host's address for remote workers)",
    )
    g.add_argument(
        "--master-port",
        type=int,
        default=0,
        help="the Locust master's port (default: free; 5557 with remote workers)",
    )
    g.add_argument(
        "--load-cpus", help="cores for the generator (default: every core but the server's)"
    )
    g = p.add_argument_group("output")
    g.add_argument("--sweep", help="users=1,2,4,8 or rate=100,200,400: one measurement per step")
    g.add_argument("--slo-p99-ms", type=float, help="with --sweep: stop once p99 exceeds this")
    g.add_argument("--workdir", help="where logs and samples go (default results/runs/<time>)")
    g.add_argument(
        "--json", action="store_true", help="print one JSON object (a list with --sweep)"
    )


def batching_from(args) -> BatchingParameters | None:
    if args.batching_file:
        return BatchingParameters.read(args.batching_file)
    values = {
        k: getattr(args, k)
        for k in (
            "max_batch_size",
            "batch_timeout_micros",
            "num_batch_threads",
            "max_enqueued_batches",
        )
        if getattr(args, k) is not None
    }
    return BatchingParameters(**values) if values else None


def experiment_from(args):
    """The experiment to run: a file (with --set overrides) or one built from the flags."""
    from harness import config

    if args.experiment:
        return config.load(args.experiment, args.set or [])
    model = (
        {"path": args.model_dir, "name": args.model_name or ""}
        if args.model_dir
        else {"demo": args.model, "name": args.model_name or ""}
    )
    server = {
        "backend": args.backend,
        "binary": args.binary,
        "image": args.image,
        "gpus": args.gpus,
        "grpc_target": args.grpc_target or "",
        "rest_url": args.rest_url or "",
        "cpus": args.server_cpus or "",
        "bind_host": args.bind_host,
        "advertise_host": args.advertise_host,
    }
    load = {
        "protocol": args.protocol,
        "users": args.users,
        "rate": args.rate,
        "arrivals": args.arrivals,
        "request_sizes": args.request_sizes,
        "warmup_s": args.warmup,
        "window_s": args.window,
        "min_windows": min(3, args.max_windows),
        "max_windows": args.max_windows,
        "processes": args.processes,
        "cpus": args.load_cpus or "",
        "remote_workers": args.remote_workers,
        "master_bind_host": args.master_bind_host,
        "master_port": args.master_port,
    }
    data = {"model": model, "server": server, "load": load}
    for item in args.set or []:
        config.apply_override(data, item, "--set")
    return config.from_dict(data, "command line")


def run(args) -> int:
    from harness.tuning.space import TrialConfig
    from harness.tuning.trial import TrialRunner

    exp = experiment_from(args)
    workdir = Path(args.workdir or f"results/runs/{time.strftime('%Y%m%d-%H%M%S')}")
    runner = TrialRunner(exp, models_dir=Path(args.models_dir))
    cfg = TrialConfig(batching=batching_from(args))
    steps = sweep_steps(args.sweep, runner.load_spec(cfg))
    results = []
    try:
        server = runner.backend.start(runner.server_spec(cfg), workdir / "server")
        try:
            for i, step in enumerate(steps):
                r = run_load(
                    server.endpoint, step, workdir / f"load-{i}", check_server=server.check_alive
                )
                out = r.summary()
                out.update(
                    users=step.users, rate=step.rate, protocol=step.protocol, notes=server.notes()
                )
                results.append(out)
                if not args.json:
                    print_table(out, step)
                if args.slo_p99_ms and not (out["p99_ms"] <= args.slo_p99_ms):
                    break
        finally:
            server.stop()
    finally:
        runner.close()
    if args.json:
        print(json.dumps(results if args.sweep else results[0], default=_json_default))
    return 0


def _json_default(o):
    if isinstance(o, float) and math.isnan(o):
        return None
    return str(o)


def sweep_steps(text: str | None, load: LoadSpec) -> list[LoadSpec]:
    import dataclasses

    if not text:
        return [load]
    key, _, values = text.partition("=")
    if key not in ("users", "rate") or not values:
        raise ConfigError(f"--sweep {text!r}: write users=1,2,4 or rate=100,200")
    try:
        steps = [float(v) for v in values.split(",")]
    except ValueError:
        raise ConfigError(f"--sweep {text!r}: values must be numbers") from None
    if key == "users":
        return [dataclasses.replace(load, users=int(v), rate=0.0) for v in steps]
    return [dataclasses.replace(load, rate=v) for v in steps]


def print_table(out: dict, step: LoadSpec) -> None:
    loop = (
        f"open loop {step.rate:g}/s {step.arrivals}"
        if step.rate
        else f"closed loop, {step.users} users"
    )
    print(f"\n{step.protocol.upper()} {loop}, request sizes {step.request_sizes}")
    rows = [
        ("throughput", f"{out['throughput_rps']:.1f} req/s, {out['items_per_s']:.1f} items/s"),
        (
            "latency ms",
            "  ".join(f"{k[:-3]} {out[k]:.2f}" for k in ("p50_ms", "p90_ms", "p99_ms", "p999_ms")),
        ),
        (
            "requests",
            f"{out['requests']} ({out['ok']} ok) in {out['seconds']:.0f} s, {out['windows']} windows, "
            f"{'stable' if out['stable'] else 'UNSTABLE'}",
        ),
        ("errors", ", ".join(f"{k} {v}" for k, v in out["errors"].items()) or "none"),
        ("server batches", _server_line(out["server"])),
        ("generator cpu", f"{out['generator_cpu']:.0%}"),
    ]
    for k, v in rows:
        print(f"  {k:15} {v}")
    for w in out["warnings"]:
        print(f"  warning: {w}")


def _server_line(view: dict) -> str:
    if not view or not view.get("batches"):
        return "no batching metrics (batching off, or no monitoring endpoint)"
    q = view.get("mean_queuing_ms")
    return f"{view['batches']} batches, mean size {view['mean_batch_size']:.1f}" + (
        f", mean queueing {q:.2f} ms" if q is not None else ""
    )


# -- harness worker ----------------------------------------------------------------------------


def add_worker_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--master-host", required=True, help="the machine running harness run/tune")
    p.add_argument("--master-port", type=int, default=5557, help="its Locust master port")
    p.add_argument(
        "--protocol", choices=["grpc", "rest"], default="grpc", help="the experiment's protocol"
    )
    p.add_argument("--processes", type=int, default=1, help="worker processes on this machine")
    p.add_argument("--cpus", help="cores for the workers, e.g. 2-7")
    p.add_argument(
        "--once", action="store_true", help="serve one measurement, then exit (default: loop)"
    )


def worker(args) -> int:
    """Keep Locust workers connected to a master: each measurement's master tells its workers
    to quit when it ends, so a new worker is started for the next one until Ctrl-C."""
    import subprocess

    from harness.cpus import parse_cpus
    from harness.load.runner import worker_command
    from harness.procs import stop_group

    if args.processes < 1:
        raise ConfigError("--processes must be >= 1")
    cpus = parse_cpus(args.cpus)
    cmd = worker_command(args.protocol, args.master_host, args.master_port)
    if args.processes > 1:
        cmd += ["--processes", str(args.processes)]
    print(
        f"load worker ({args.protocol}, {args.processes} process(es)): connecting to the master "
        f"at {args.master_host}:{args.master_port}; Ctrl-C to stop",
        flush=True,
    )
    pinned = set(cpus) if cpus else None
    measurements = 0
    proc = None
    try:
        while True:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=(lambda: os.sched_setaffinity(0, pinned)) if pinned else None,
            )
            rc = proc.wait()
            measurements += 1
            print(f"worker exited with code {rc} after measurement {measurements}", flush=True)
            if args.once:
                return rc
            time.sleep(1.0)
    except KeyboardInterrupt:
        if proc is not None:
            stop_group(proc, 10)
        print("load worker stopped", flush=True)
        return 0
