"""``harness``: the command line, one module per command.

``app``: ``main`` builds the parser from each command's ``register`` and runs the chosen one;
``run`` is the console script. ``commands/``: one module per command. ``common``: the
``--experiment``/``--set`` pair several commands share. A command module imports only the standard library and the foundations at
its top; what a command needs (TensorFlow, numpy, Docker, Optuna) it imports when it runs, so
``harness --help`` and ``harness <command> --help`` start in a fraction of a second. Nothing in
the harness imports this package.
"""

from harness.cli.app import build_parser, main, run

__all__ = ["build_parser", "main", "run"]
