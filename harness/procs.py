"""Child processes of our own (servers, Locust): started in their own process group, pinned to
their CPUs, logging to a file; stopped as a group, politely first."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path


def spawn(cmd: list[str], log_path: Path, cpus=None, *, env=None, cwd=None) -> subprocess.Popen:
    """Start ``cmd`` with stdout and stderr in ``log_path``; raises OSError if it cannot start."""
    pinned = set(cpus) if cpus else None

    def pin():
        if pinned:
            os.sched_setaffinity(0, pinned)

    with open(log_path, "wb") as log:
        return subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            preexec_fn=pin,
            start_new_session=True,
        )


def stop_group(proc, timeout: float = 10.0) -> None:
    """SIGTERM the process group, wait, then SIGKILL. ``proc`` is Popen-like (pid, poll, wait)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    except ProcessLookupError:
        pass
