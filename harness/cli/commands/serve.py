"""``harness serve``: the reference server, with ``tensorflow_model_server``'s own flags.

Its flags are parsed by the server itself (``harness.refserver.server``), so ``main`` hands it
the arguments before argparse sees them; the sub-parser here only lists it in ``--help``.
"""

from __future__ import annotations


def register(sub) -> None:
    sub.add_parser(
        "serve",
        add_help=False,
        help="run the reference model server (tensorflow_model_server's flags; see 'harness serve --help')",
    )


def serve(argv: list[str]) -> int:
    from harness.refserver.server import main as serve_main

    return serve_main(argv)
