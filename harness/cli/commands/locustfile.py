"""``harness locustfile``: where the installed locustfiles are, for ``locust -f`` by hand."""

from __future__ import annotations

from harness.config import Protocol


def register(sub) -> None:
    p = sub.add_parser(
        "locustfile",
        help="print the path of the locustfile the harness measures with (for locust -f)",
        description="Print the path of the installed locustfile for PROTOCOL, the one "
        "'harness run' and 'harness tune' drive, e.g.: "
        'locust -f "$(harness locustfile grpc)" --host grpc://127.0.0.1:8500 --model-name ranker',
    )
    p.add_argument(
        "protocol", nargs="?", choices=[v.value for v in Protocol], default=Protocol.GRPC.value
    )
    p.set_defaults(func=cmd_locustfile)


def cmd_locustfile(args) -> int:
    from harness.load.runner import locustfile

    print(locustfile(args.protocol))
    return 0
