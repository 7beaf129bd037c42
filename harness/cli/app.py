"""The parser (each command adds its own), the signal handling, and the exit codes: ``main``
and ``run`` (the console script).

The exit codes (``harness.labels``, where summary.json reads their meanings too): 0 done (tune:
a config met the SLO), 2 a usage, bad-input or start-up error (argparse's code for a usage
error, and every ``HarnessError``: the one ``error:`` line), 3 the SLO missed (tune: no config
met it; run: ``--slo-p99-ms`` missed), 130 interrupted; 1 is left to Python for a crash.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys

from harness import labels
from harness.errors import HarnessError

# One module per command, in the order ``harness --help`` lists them.
COMMANDS = (
    "serve",
    "run",
    "worker",
    "locustfile",
    "tune",
    "report",
    "compare",
    "profile",
    "plan",
    "model",
    "image",
)

_signals_seen = []


def _interrupted(signum, frame):
    """The first SIGINT or SIGTERM stops the work; a second one while servers and Locust are
    being stopped is only acknowledged (leaving them running is what we want to avoid); a third
    quits at once (the next start removes what is left)."""
    _signals_seen.append(signum)
    if len(_signals_seen) == 2:
        print("stopping servers and load generators; signal again to quit at once", file=sys.stderr)
        return
    raise KeyboardInterrupt


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="harness",
        description="Load-testing and batching-tuning harness for TensorFlow Serving.",
        epilog="exit codes:\n" + labels.exit_table(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"harness.cli.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if argv and argv[0] == "serve" or (debug and argv[1:2] == ["serve"]):
        from harness.cli.commands.serve import serve

        return serve(argv[argv.index("serve") + 1 :])
    args = build_parser().parse_args(argv)
    # SIGTERM (kill, a CI runner, systemd) stops as Ctrl-C does: servers and Locust are stopped
    # and finished trials kept, instead of dying with children left running.
    signal.signal(signal.SIGTERM, _interrupted)
    signal.signal(signal.SIGINT, _interrupted)
    try:
        return args.func(args)
    except HarnessError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return labels.EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return labels.EXIT_INTERRUPTED
    finally:
        if _signals_seen:  # whatever the command, a child whose start the signal cut short
            from harness.procs import reap_own  # has no one to stop it but this

            reap_own()


def run() -> None:
    """The ``harness`` command: ``main``, then exit with its code."""
    try:
        code = main()
    except KeyboardInterrupt:  # a Ctrl-C between main's own handling and the lines below
        code = labels.EXIT_INTERRUPTED
    finally:
        # The work is done and saved; a signal during the interpreter's shutdown (TensorFlow's
        # teardown takes seconds) must not kill it. Ignored, not handled: the interpreter puts
        # Python-level handlers back to the default action while it finalizes (a SIGINT there
        # ended the process with -2 and no message), but it leaves ignored signals ignored.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(code)
