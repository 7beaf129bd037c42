"""Child processes of our own (servers, Locust): started in their own process group, pinned to
their CPUs, logging to a file; stopped as a group, politely first.

Every process we start carries an owner marker in its environment (``TFS_HARNESS_OWNER``: the
pid and start time of the harness that started it), and so do the processes it forks (Locust
workers, servers forked by the fork server). When a harness is killed outright (SIGKILL, a
crash, the OOM killer), nothing stops its children; the next harness finds processes whose
marker names an owner that is gone and stops them. A process without our marker is never
touched, nor one whose owner still runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

OWNER_ENV = "TFS_HARNESS_OWNER"
_MARK = OWNER_ENV.encode() + b"="


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (ours or another user's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (pid + this identify a process)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ")".
    fields = stat.rsplit(b")", 1)[-1].split()
    try:
        return int(fields[19])  # field 22 of the whole line
    except (IndexError, ValueError):
        return None


def owner_token(pid: int | None = None) -> str:
    pid = os.getpid() if pid is None else pid
    return f"{pid}:{_start_ticks(pid) or 0}"


def marked_env(env: dict | None = None) -> dict:
    """A copy of ``env`` (default: ours) carrying this process's owner marker."""
    out = dict(os.environ if env is None else env)
    out[OWNER_ENV] = owner_token()
    return out


def _owner_alive(token: str) -> bool:
    pid, _, ticks = token.partition(":")
    try:
        pid_i, ticks_i = int(pid), int(ticks)
    except ValueError:
        return False
    now = _start_ticks(pid_i)
    return now is not None and (ticks_i == 0 or now == ticks_i)


def _marker_of(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = f.read()
    except OSError:  # gone, or not ours to read
        return None
    for item in env.split(b"\0"):
        if item.startswith(_MARK):
            return item[len(_MARK) :].decode(errors="replace")
    return None


def process_state(pid: int) -> str | None:
    """The one-letter state from /proc (R, S, D, T for stopped, Z for zombie), None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat.rsplit(b")", 1)[-1].split()
    return fields[0].decode() if fields else None


def find_orphans() -> list[tuple[int, str]]:
    """(pid, command line) of processes carrying our marker whose owning harness is gone."""
    return _marked(lambda token: not _owner_alive(token))


def _marked(select) -> list[tuple[int, str]]:
    """(pid, command line) of live processes whose marker ``select(token)`` accepts."""
    me = os.getpid()
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        pid = int(entry)
        token = _marker_of(pid)
        if token is None or not select(token) or process_state(pid) in (None, "Z"):
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        out.append((pid, cmd))
    return out


def reap_orphans(grace: float = 3.0) -> list[str]:
    """Stop the processes a killed harness left behind (SIGTERM, then SIGKILL after ``grace``
    seconds); returns their command lines. Only marked processes whose owner is gone."""
    return _stop(find_orphans(), grace)


def reap_own(grace: float = 3.0) -> list[str]:
    """Stop every process this harness started that is still running: the last step of an
    interrupted run, for a child whose start an interrupt cut short (Ctrl-C inside ``Popen``,
    after the fork, leaves a child no one holds)."""
    me = owner_token()
    return _stop(_marked(lambda token: token == me), grace)


def _stop(orphans: list[tuple[int, str]], grace: float) -> list[str]:
    for pid, _ in orphans:
        for sig in (signal.SIGTERM, signal.SIGCONT):
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
    end = time.monotonic() + grace
    left = [pid for pid, _ in orphans]
    while left and time.monotonic() < end:
        time.sleep(0.05)
        left = [pid for pid in left if process_state(pid) not in (None, "Z")]
    for pid in left:
        if _marker_of(pid) is not None:  # still the same, still ours
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    return [cmd for _, cmd in orphans]


def spawn(cmd: list[str], log_path: Path, cpus=None, *, env=None, cwd=None) -> subprocess.Popen:
    """Start ``cmd`` with stdout and stderr in ``log_path``; raises OSError if it cannot start.
    The child carries our owner marker (see the module's docstring)."""
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
            env=marked_env(env),
            cwd=cwd,
            preexec_fn=pin,
            start_new_session=True,
        )


def stop_group(proc, timeout: float = 10.0) -> None:
    """SIGTERM the process group, wait, then SIGKILL. ``proc`` is Popen-like (pid, poll, wait).
    A stopped (SIGSTOP) group is continued so that it can act on the SIGTERM."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        os.killpg(proc.pid, signal.SIGCONT)
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    except ProcessLookupError:
        pass
