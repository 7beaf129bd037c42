"""The simulator's commands: ``harness profile`` and ``harness plan`` (registered by harness.cli)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from harness.config import Experiment
from harness.errors import ConfigError


def load_experiment(path: str, overrides: list[str] | None) -> Experiment:
    from harness import config

    p = Path(path)
    if not p.exists() and not p.is_absolute():
        bundled = Path(__file__).resolve().parents[2] / "experiments" / p.name
        p = bundled if bundled.exists() else p
    return config.load(p, overrides or [])


def space_max_size(exp: Experiment) -> int:
    """The largest batch the experiment's search space can run."""
    r = exp.search.max_batch_size
    top = max(r.choices) if r.choices else int(r.high or r.low or 1)
    return int(top)


def profile_path_for(exp: Experiment, root: Path | None = None) -> Path:
    from harness.cpus import default_cpus, parse_cpus
    from harness.sim import profile as profiles

    server_cpus, _ = default_cpus(parse_cpus(exp.server.cpus), parse_cpus(exp.load.cpus))
    model = exp.model.name or exp.model.demo or Path(exp.model.path).name
    backend = exp.server.backend
    if backend == "process" and exp.server.binary not in ("auto", "reference"):
        backend = f"process-{Path(exp.server.binary).name}"
    return profiles.default_path(model, backend, server_cpus, root or profiles.DEFAULT_DIR)


def ensure_profile(
    exp: Experiment,
    *,
    path: Path | None = None,
    protocols: list[str] | None = None,
    max_size: int | None = None,
    workdir: Path | None = None,
    force: bool = False,
    echo=print,
):
    """The experiment's profile: loaded when one covering it exists, else measured and saved."""
    from harness.sim import measure
    from harness.sim import profile as profiles

    path = Path(path) if path else profile_path_for(exp)
    protocols = protocols or [exp.load.protocol]
    need = max_size or space_max_size(exp)
    if path.exists() and not force:
        prof = profiles.load(path)
        same_cpu = prof.environment.get("cpu_model") == profiles.environment(None)["cpu_model"]
        if prof.max_size() >= need and all(p in prof.overhead for p in protocols) and same_cpu:
            echo(f"profile: {path} (measured {prof.environment.get('measured_at', '?')})")
            return prof
        echo(f"profile {path} does not cover this study (sizes, protocols or CPU): measuring again")
    prof = measure.measure(
        exp,
        protocols=protocols,
        max_size=need,
        workdir=workdir or path.parent / f".work-{path.stem}",
        echo=echo,
    )
    profiles.save(prof, path)
    prof = dataclasses.replace(prof, path=str(path))
    echo(f"profile saved: {path}")
    return prof


def cmd_profile(args) -> int:
    exp = load_experiment(args.experiment, args.set)
    protocols = [p.strip() for p in args.protocols.split(",") if p.strip()]
    for p in protocols:
        if p not in ("grpc", "rest"):
            raise ConfigError(f"--protocols: {p!r} is not grpc or rest")
    max_size = args.max_batch_size or space_max_size(exp)
    if max_size < 1:
        raise ConfigError("--max-batch-size must be >= 1")
    out = Path(args.output) if args.output else profile_path_for(exp)
    if args.recalibrate:
        from harness.sim import calibrate
        from harness.sim import profile as profiles

        if not out.exists():
            raise ConfigError(f"--recalibrate: no profile at {out}", hint="measure one first")
        prof = profiles.save(calibrate.again(profiles.load(out)), out)
        print(f"profile recalibrated from its stored runs: {out}")
        print(describe(profiles.load(out)))
        return 0
    prof = ensure_profile(exp, path=out, protocols=protocols, max_size=max_size, force=args.force)
    print(describe(prof))
    return 0


def describe(prof) -> str:
    lines = [
        f"model {prof.model} on {prof.backend}, {prof.cores} core(s), "
        f"{prof.environment.get('cpu_model', '?')}, TensorFlow {prof.environment.get('tensorflow')}",
        "",
        "batch  exec ms (p10-p90)   items/s",
    ]
    for s in prof.sizes():
        e = prof.exec_us[s]
        lines.append(
            f"{s:>5}  {e['median'] / 1e3:7.2f} ({e['p10'] / 1e3:.2f}-{e['p90'] / 1e3:.2f})"
            f"  {s / e['median'] * 1e6:8.0f}"
        )
    for proto, o in prof.overhead.items():
        lines.append(
            f"{proto}: request path {o.cpu_in_us + o.cpu_out_us:.0f} us CPU/request, "
            f"refusal {o.cpu_in_us + o.reject_us:.0f} us, round trip {o.rtt_us:.0f} us, "
            f"client {o.client_us:.0f} us/request"
        )
    if prof.batch_overhead_us:
        lines.append(f"per-batch server overhead beyond the model: {prof.batch_overhead_us:.0f} us")
    wake = {p: o.wake_us for p, o in prof.overhead.items() if o.wake_us}
    if wake:
        lines.append(
            "request path wake-up: " + ", ".join(f"{p} {w:.0f} us" for p, w in wake.items())
        )
    if prof.served:
        lines.append(
            f"split from batch traces: core {prof.served['cpu_share']:.0%} busy when saturated; "
            "model CPU in the server / offline: "
            + ", ".join(f"{r:.2f} at {s} rows" for s, r in prof.served["exec_ratio"].items())
        )
    if prof.gc.get("pause_ms"):
        lines.append(
            f"pauses (full garbage collection): {prof.gc['pause_ms']:.0f} ms every "
            f"{prof.gc['every_requests']:.0f} answered requests"
        )
    return "\n".join(lines)


def add_profile_parser(sub) -> None:
    p = sub.add_parser(
        "profile",
        help="measure a model's execution time per batch size and the server's per-request cost",
    )
    p.add_argument("--experiment", default="experiments/default.toml")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE")
    p.add_argument(
        "--protocols", default="grpc,rest", help="request paths to measure (default grpc,rest)"
    )
    p.add_argument(
        "--max-batch-size",
        type=int,
        help="largest batch size to time (default: the search space's largest)",
    )
    p.add_argument(
        "--output", help="profile JSON (default results/profiles/<model>-<backend>-cpus<N>.json)"
    )
    p.add_argument("--force", action="store_true", help="measure again even if a profile exists")
    p.add_argument(
        "--recalibrate",
        action="store_true",
        help="no measuring: split the stored runs' CPU again with this version's rules",
    )
    p.set_defaults(func=cmd_profile)


def cmd_plan(args) -> int:
    from harness.sim import profile as profiles
    from harness.sim.cli import ensure_profile, load_experiment

    if bool(args.profile) == bool(args.experiment):
        raise ConfigError("give --profile FILE or --experiment FILE (one of them)")
    if args.profile:
        prof = profiles.load(args.profile)
        protocol = args.protocol or next(iter(prof.overhead))
        sizes = args.request_sizes or "1"
    else:
        exp = load_experiment(args.experiment, args.set)
        prof = ensure_profile(exp)
        protocol = args.protocol or exp.load.protocol
        sizes = args.request_sizes or exp.load.request_sizes
    from harness.sim.plan import plan, render

    result = plan(
        prof,
        rate=args.rate,
        p99_ms=args.p99,
        protocol=protocol,
        sizes=sizes,
        headroom=args.headroom,
    )
    print(render(result))
    return 0


def add_plan_parser(sub) -> None:
    p = sub.add_parser(
        "plan", help="batching config and replica count to serve a rate within a p99 (simulated)"
    )
    p.add_argument("--rate", type=float, required=True, help="requests per second to serve")
    p.add_argument("--p99", type=float, required=True, help="p99 latency limit in ms")
    p.add_argument("--profile", help="a profile JSON from 'harness profile'")
    p.add_argument("--experiment", help="or an experiment (its profile, measured if missing)")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE")
    p.add_argument("--protocol", choices=["grpc", "rest"])
    p.add_argument("--request-sizes", help="size mix like 1:50,4:30,16:20 (default 1)")
    p.add_argument("--headroom", type=float, default=0.2, help="capacity kept spare (default 0.2)")
    p.set_defaults(func=cmd_plan)
