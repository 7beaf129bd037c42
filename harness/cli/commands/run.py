"""``harness run``: start a server through a backend, measure it once (or sweep), print figures.

The model, server and load flags are the experiment's own settings under command-line names:
``FLAGS`` maps each flag to its field, and the field gives the flag its type, its choices and
its default, so ``harness run`` measures with exactly the defaults of an experiment file. The
measurement goes through ``TrialRunner``, as a tuning trial's does.
"""

from __future__ import annotations

import argparse
import dataclasses

from harness import labels
from harness.cli import flags
from harness.config import LoadConfig
from harness.errors import ConfigError

# The demo model measured when neither --model nor --model-dir is given: the default
# experiment's (experiments/default.toml).
DEFAULT_DEMO = "ranker"

SECTIONS = {name: flags.SECTIONS[name] for name in ("model", "server", "load")}

# section -> (flag, field, help); type, choices and default come from the field
FLAGS = {
    "model": (
        ("--model-dir", "path", "a SavedModel base path (version directories inside) instead of a demo model"),
        ("--model-name", "name", "the name to serve it under (default: the demo model's, or the --model-dir folder's)"),
        ("--signature", "signature", "the signature the requests call"),
    ),
    "server": (
        ("--backend", "backend", "how the server is run"),
        ("--binary", "binary", "process backend: tensorflow_model_server, a path, or 'reference'"),
        ("--image", "image", "docker backend: the image"),
        ("--gpus", "gpus", "docker backend: request every GPU"),
        ("--grpc-target", "grpc_target", "external backend: host:port of gRPC"),
        ("--rest-url", "rest_url", "external backend: http://host:port of REST"),
        ("--server-cpus", "cpus", "cores for the server, e.g. 0 or 0-3 (default: core 0 when there are 2+)"),
        ("--bind-host", "bind_host", "where the server listens (docker: where its ports are published); 0.0.0.0 for every interface"),
        ("--advertise-host", "advertise_host", "the name or address the harness and load workers reach the server at (default: --bind-host; for 0.0.0.0, a remote Docker engine's host or loopback)"),
    ),
    "load": (
        ("--protocol", "protocol", "how the load generator talks to the server"),
        ("--users", "users", "closed loop: concurrent users"),
        ("--rate", "rate", "open loop: requests/s (Poisson unless --arrivals constant)"),
        ("--arrivals", "arrivals", "open loop: how sends are spaced"),
        ("--request-sizes", "request_sizes", "rows per request, or a mix like 1:50,4:30,16:20"),
        ("--payload", "payload", "example requests to draw rows from: a TF Serving REST request body (instances or inputs, {\"b64\": ...} for binary strings), a directory of them, or an .npz (default: random values)"),
        ("--input-shape", "input_shapes", "random values: the row shape of an input with dynamic dimensions, NAME=D1,D2,... (repeat for several inputs)"),
        ("--warmup", "warmup_s", "seconds excluded at the start"),
        ("--window", "window_s", "seconds per measurement window"),
        ("--max-windows", "max_windows", "windows at most, when the figures do not settle sooner"),
        ("--processes", "processes", "local Locust processes; above 1, a master and N worker processes (one core each)"),
        ("--remote-workers", "remote_workers", "also wait for N workers from other machines ('harness worker --master-host THIS')"),
        ("--master-bind-host", "master_bind_host", "where the Locust master listens (0.0.0.0 or this host's address for remote workers)"),
        ("--master-port", "master_port", "the Locust master's port (0: free; 5557 with remote workers)"),
        ("--load-cpus", "cpus", "cores for the generator (default: every core but the server's)"),
    ),
}  # fmt: skip

# BatchingParameters fields a flag may set (any of them turns batching on)
BATCHING_FLAGS = ("max_batch_size", "batch_timeout_micros", "num_batch_threads", "max_enqueued_batches")  # fmt: skip


EPILOG = "exit codes:\n" + labels.exit_table()


def register(sub) -> None:
    p = sub.add_parser(
        "run",
        help="start a server, drive it with Locust, print one measurement",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(p)
    p.set_defaults(func=cmd_run)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--experiment",
        help="take model, server and load from an experiment file (their flags are then ignored; batching flags apply)",
    )
    p.add_argument(
        "--set", action="append", metavar="SECTION.KEY=VALUE", help="override an experiment value"
    )
    groups = {name: p.add_argument_group(name) for name in SECTIONS}
    groups["model"].add_argument(
        "--model",
        help=f"a demo model name, exported to --models-dir if missing (default: {DEFAULT_DEMO})",
    )
    groups["model"].add_argument(
        "--models-dir", default="models", help="where demo models are exported (default: models)"
    )
    flags.add_setting_flags(groups, FLAGS)
    g = groups["server"]
    g.add_argument("--batching-file", help="a batching parameters file (turns batching on)")
    for name in BATCHING_FLAGS:
        g.add_argument(f"--{name.replace('_', '-')}", dest=name, type=int, help="turns batching on")
    g = p.add_argument_group("output")
    g.add_argument("--sweep", help="users=1,2,4,8 or rate=100,200,400: one measurement per step")
    g.add_argument(
        "--slo-p99-ms",
        type=float,
        help="the latency SLO: exit with code 3 when the run misses it (p99 above it, or errors "
        "above the experiment's slo.max_error_rate); with --sweep: stop once a step misses it, "
        "and exit 3 only when none kept it",
    )
    g.add_argument("--workdir", help="where logs and samples go (default results/runs/<time>)")
    g.add_argument(
        "--json", action="store_true", help="print one JSON object (a list with --sweep)"
    )


def settings_from(args) -> dict[str, dict]:
    """The settings the flags gave, as the experiment file's tables: {section: {field: value}}."""
    return flags.settings_from(args, FLAGS)


def experiment_from(args):
    """The experiment to run: a file (with --set overrides) or one built from the flags."""
    from harness import config

    if args.experiment:
        return config.load_experiment(args.experiment, args.set or [])
    data = settings_from(args)
    if "server" in data:
        data["server"] = flags.backend_from(data["server"])
    model = data.setdefault("model", {})
    if "path" not in model:
        model["demo"] = args.model or DEFAULT_DEMO
    load = data.setdefault("load", {})
    if "max_windows" in load:  # windows at most: fewer than the usual minimum stops there, and
        load["min_windows"] = min(LoadConfig().min_windows, load["max_windows"])
        load.setdefault("extra_windows", 0)  # no more are added when they disagree
    for item in args.set or []:
        config.apply_override(data, item, "--set")
    return config.from_dict(data, "command line")


def batching_from(args):
    from harness.batching import BatchingParameters

    if args.batching_file:
        return BatchingParameters.read(args.batching_file)
    values = {k: getattr(args, k) for k in BATCHING_FLAGS if getattr(args, k) is not None}
    return BatchingParameters(**values) if values else None


def sweep_steps(text: str | None, load: LoadConfig) -> list[LoadConfig]:
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


def cmd_run(args) -> int:
    import json
    import sys
    import time
    from pathlib import Path

    from harness.cli.common import check_model_dir, prepare_demo_model
    from harness.envinfo import server_name
    from harness.tuning.space import TrialConfig
    from harness.tuning.trial import TrialRunner

    exp = experiment_from(args)
    cfg = TrialConfig(batching=batching_from(args))
    check_model_dir(exp)
    prepare_demo_model(exp, Path(args.models_dir))
    workdir = Path(args.workdir or f"results/runs/{time.strftime('%Y%m%d-%H%M%S')}")
    runner = TrialRunner(exp, models_dir=Path(args.models_dir))
    steps = sweep_steps(args.sweep, runner.load_for(cfg))
    # every figure says which server it measured (the reference server's native or Python
    # path, a binary and its version, an image, or an external address), as a study's do
    measured = server_name(exp.server, runner.backend)
    results = []

    def after(step: LoadConfig, run, notes: list[str]) -> bool:
        out = run.summary()
        out.update(users=step.users, rate=step.rate, protocol=step.protocol, notes=notes)
        out["measured_server"] = measured
        if args.slo_p99_ms:
            out["met_slo"] = met_slo(out, args.slo_p99_ms, exp.slo.max_error_rate)
        results.append(out)
        if not args.json:
            print_table(out, step)
        return out.get("met_slo", True)

    try:
        loads = {f"load-{i}": step for i, step in enumerate(steps)}
        runner.measure_loads(cfg, workdir, loads, after=after)
    finally:
        runner.close()
    if args.json:
        print(json.dumps(results if args.sweep else results[0], default=_json_default))
    if not args.slo_p99_ms:
        return labels.EXIT_OK
    kept = sum(r["met_slo"] for r in results)
    verdict = f"SLO p99 <= {args.slo_p99_ms:g} ms, errors <= {exp.slo.max_error_rate:.1%}: "
    if args.sweep:
        verdict += f"{kept} of {len(results)} steps kept it"
    else:
        verdict += "met" if kept else f"missed (p99 {_ms(results[0]['p99_ms'])} ms, errors {results[0]['rejection_rate']:.1%})"
    print(verdict, file=sys.stderr if args.json else sys.stdout)
    return labels.EXIT_OK if kept else labels.EXIT_SLO_MISSED


def met_slo(out: dict, p99_ms: float, max_error_rate: float) -> bool:
    """One measurement against the SLO, by the rule a tuning trial is judged by."""
    from harness.config import SloConfig
    from harness.tuning.loop import score

    figures = {"items_per_s": out["items_per_s"], "p99_ms": out["p99_ms"], "error_rate": out["rejection_rate"]}  # fmt: skip
    return bool(score(figures, SloConfig(p99_ms=p99_ms, max_error_rate=max_error_rate))[2])


def _ms(v) -> str:
    return "-" if v is None or v != v else f"{v:.1f}"


def _json_default(o):
    import math

    if isinstance(o, float) and math.isnan(o):
        return None
    return str(o)


def print_table(out: dict, step: LoadConfig) -> None:
    loop = (
        f"open loop {step.rate:g}/s {step.arrivals}"
        if step.rate
        else f"closed loop, {step.users} users"
    )
    print(f"\n{step.protocol.upper()} {loop}, request sizes {step.request_sizes}")
    rows = [
        ("server", out["measured_server"]),
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
    requests = sum(m["requests"] for m in (out.get("models") or {}).values()) or 1
    for name, m in (out.get("models") or {}).items():  # several models: each one apart
        print(
            f"  {name:15} {m['requests'] / requests:.0%} of requests, {m['items_per_s']:.1f} items/s, "
            f"p99 {_ms(m['p99_ms'])} ms, errors {m['rejection_rate']:.1%}"
        )
    for w in out["warnings"]:
        print(f"  warning: {w}")


def _server_line(view: dict) -> str:
    if not view or not view.get("batches"):
        return "no batching metrics (batching off, or no monitoring endpoint)"
    q = view.get("mean_queuing_ms")
    return f"{view['batches']} batches, mean size {view['mean_batch_size']:.1f}" + (
        f", mean queueing {q:.2f} ms" if q is not None else ""
    )
