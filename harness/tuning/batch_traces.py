"""Batch traces for ``harness profile``: servers started while a ``Tracer`` is open write them."""

from __future__ import annotations

import os
from pathlib import Path

from harness.config import BackendKind, Experiment
from harness.errors import HarnessError


class Tracer:
    """Servers started while it is open write batch traces (the reference server run by the
    process backend only); ``collect`` reads the trace of the server that stopped last."""

    def __init__(self) -> None:
        import tempfile

        from harness.refserver import batch_trace

        self._dir = Path(tempfile.mkdtemp(prefix="harness-profile-trace-"))
        self._env = batch_trace.ENV
        self._old = os.environ.get(self._env)
        # set before the backend starts its fork server, which copies our environment once
        os.environ[self._env] = str(self._dir / "trace")

    def collect(self, skip_s: float) -> dict | None:
        from harness.refserver import batch_trace

        files = sorted(self._dir.iterdir(), key=lambda f: f.stat().st_mtime)
        if not files:
            return None
        summary = batch_trace.summarize(batch_trace.load(files[-1]), skip_s=skip_s)
        for f in files:
            f.unlink()
        return summary["all"] or None

    def close(self) -> None:
        import shutil

        if self._old is None:
            os.environ.pop(self._env, None)
        else:
            os.environ[self._env] = self._old
        shutil.rmtree(self._dir, ignore_errors=True)


def traceable(exp: Experiment) -> bool:
    """Whether the experiment's servers can write batch traces: our reference server, started
    by the process backend (a container does not see this process's environment)."""
    from harness.servers.process import server_command

    if exp.server.backend != BackendKind.PROCESS:
        return False
    try:
        return server_command(exp.server.binary)[-1] == "harness.refserver"
    except HarnessError:
        return False
