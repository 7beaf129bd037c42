"""``harness plan``: the batching config and replica count to serve a rate within a p99."""

from __future__ import annotations

from harness.cli.common import add_experiment_arguments, experiment_from
from harness.config import Protocol
from harness.errors import ConfigError


def register(sub) -> None:
    p = sub.add_parser(
        "plan", help="batching config and replica count to serve a rate within a p99 (simulated)"
    )
    p.add_argument("--rate", type=float, required=True, help="requests per second to serve")
    p.add_argument("--p99", type=float, required=True, help="p99 latency limit in ms")
    p.add_argument("--profile", help="a profile JSON from 'harness profile'")
    add_experiment_arguments(
        p, default=None, help="or an experiment (its profile, measured if missing)"
    )
    p.add_argument("--protocol", choices=[v.value for v in Protocol])
    p.add_argument("--request-sizes", help="size mix like 1:50,4:30,16:20 (default 1)")
    p.add_argument("--headroom", type=float, default=0.2, help="capacity kept spare (default 0.2)")
    p.set_defaults(func=cmd_plan)


def cmd_plan(args) -> int:
    from harness.sim import profile as profiles
    from harness.sim.plan import plan, render
    from harness.tuning.profiling import ensure_profile

    if bool(args.profile) == bool(args.experiment):
        raise ConfigError("give --profile FILE or --experiment FILE (one of them)")
    if args.profile:
        prof = profiles.load(args.profile)
        protocol = args.protocol or next(iter(prof.overhead))
        sizes = args.request_sizes or "1"
    else:
        exp = experiment_from(args)
        prof = ensure_profile(exp)
        protocol = args.protocol or exp.load.protocol
        sizes = args.request_sizes or exp.load.request_sizes
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
