"""What several commands share: the ``--experiment``/``--set`` pair and its one resolver."""

from __future__ import annotations

DEFAULT_EXPERIMENT = "experiments/default.toml"


def add_experiment_arguments(p, *, default: str | None = DEFAULT_EXPERIMENT, help: str) -> None:
    p.add_argument("--experiment", default=default, help=help)
    p.add_argument(
        "--set",
        action="append",
        metavar="SECTION.KEY=VALUE",
        help="override one experiment value, e.g. --set load.users=32 --set slo.p99_ms=20",
    )


def experiment_from(args):
    """The experiment ``--experiment`` names (a path, or a bundled experiment's name), with the
    ``--set`` overrides, checked."""
    from harness import config

    return config.load_experiment(args.experiment, args.set or [])
