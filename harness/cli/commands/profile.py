"""``harness profile``: measure what the simulator needs about a model on this machine."""

from __future__ import annotations

from harness.cli.common import add_experiment_arguments, experiment_from
from harness.config import Protocol
from harness.errors import ConfigError


def register(sub) -> None:
    p = sub.add_parser(
        "profile",
        help="measure a model's execution time per batch size and the server's per-request cost",
    )
    add_experiment_arguments(p, help="the experiment whose model, server and cores to profile")
    p.add_argument(
        "--protocols",
        default=",".join(Protocol),
        help=f"request paths to measure (default {','.join(Protocol)})",
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


def cmd_profile(args) -> int:
    from pathlib import Path

    from harness.sim import profile as profiles
    from harness.tuning.profiling import ensure_profile
    from harness.tuning.space import largest_batch_size

    exp = experiment_from(args)
    protocols = [p.strip() for p in args.protocols.split(",") if p.strip()]
    for p in protocols:
        if p not in set(Protocol):
            raise ConfigError(f"--protocols: {p!r} is not {' or '.join(Protocol)}")
    max_size = args.max_batch_size or largest_batch_size(exp.search)
    if max_size < 1:
        raise ConfigError("--max-batch-size must be >= 1")
    out = Path(args.output) if args.output else profiles.profile_path_for(exp)
    if args.recalibrate:
        from harness.sim import calibrate

        if not out.exists():
            raise ConfigError(f"--recalibrate: no profile at {out}", hint="measure one first")
        profiles.save(calibrate.again(profiles.load(out)), out)
        print(f"profile recalibrated from its stored runs: {out}")
        print(describe(profiles.load(out)))
        return 0
    prof = ensure_profile(exp, path=out, protocols=protocols, max_size=max_size, force=args.force)
    print(describe(prof))
    return 0


def describe(prof) -> str:
    """A profile as the lines ``harness profile`` prints."""
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
    lines += _extras(prof)
    return "\n".join(lines)


def _extras(prof) -> list[str]:
    lines = []
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
    return lines
