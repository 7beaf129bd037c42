"""A ``tensorflow_model_server`` played by the reference server, for the tests and the test image.

The test image carries it as its ``tensorflow_model_server`` (``harness.servers.reference_image``)
and the process backend's tests put an executable of that name first on PATH that runs it, so
both backends are exercised exactly as they drive TF Serving's own binary. It is never installed
as a command: on a user's PATH it would shadow the real binary.

Where it behaves as the real binary does:

- the flags are TF Serving's (``harness.tfs_flags``); ``--version`` prints the two lines the real
  one prints (``TensorFlow ModelServer: ...`` and ``TensorFlow Library: ...``) and exits 0;
- it listens on every interface, as the real binary does, unless
  ``$HARNESS_REFSERVER_BIND_ADDRESS`` names an address (the project's own variable: the process
  backend sets it for every binary, and the real one ignores it).

Where it is stricter on purpose: any other argument is refused (exit 1, ``unknown argument:
<arg>``) where the real binary prints that line and starts anyway, ignoring the argument. A flag
of the harness's own that reached it would then fail a test instead of passing unseen. Each start
logs its arguments in one line, so a test can read what reached it.
"""

from __future__ import annotations

import os
import shlex
import sys

from harness import tfs_flags
from harness.servers.process import BIND_ENV

ARGV_PREFIX = "tensorflow_model_server (the tfs-harness reference server) argv:"


def version_text() -> str:
    """What ``--version`` prints: the reference server's version, its request path, TensorFlow's."""
    from importlib import metadata

    from harness.refserver.native import launch

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "unknown"

    path = launch.choose()
    return (
        f"TensorFlow ModelServer: tfs-harness {version('tfs-harness')} reference server "
        f"({path} path)\nTensorFlow Library: {version('tensorflow')}"
    )


def _wants_version(argv: list[str]) -> bool:
    for arg in argv:
        name, _, value = arg[2:].partition("=")
        if arg.startswith("--") and name == "version":
            return value.lower() not in ("false", "0")
    return False


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    print(f"{ARGV_PREFIX} {shlex.join(argv)}", file=sys.stderr, flush=True)
    bad = tfs_flags.unknown(argv)
    if bad:
        print(f"unknown argument: {bad[0]}", file=sys.stderr)
        print(
            "error: this tensorflow_model_server takes only the flags TF Serving's binary "
            "defines (harness/tfs_flags.py)",
            file=sys.stderr,
        )
        return 1
    if _wants_version(argv):
        print(version_text())
        return 0
    os.environ.setdefault(BIND_ENV, "0.0.0.0")
    from harness.refserver.server import main as serve

    return serve(argv)


if __name__ == "__main__":
    sys.exit(main())
