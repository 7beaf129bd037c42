"""Child processes of our own (servers, Locust): started in their own process group, pinned to
their CPUs, logging to a file; stopped as a group, politely first. Process state, liveness and
the TERM -> wait -> KILL sequence go through psutil.

Every process we start carries an owner marker in its environment (``TFS_HARNESS_OWNER``: the
pid and start time of the harness that started it), and so do the processes it forks (Locust
workers, servers forked by the fork server). When a harness is killed outright (SIGKILL, a
crash, the OOM killer), nothing stops its children; the next harness finds processes whose
marker names an owner that is gone and stops them. A process without our marker is never
touched, nor one whose owner still runs.

CPU pinning happens right after the child starts (``pin``: psutil's ``cpu_affinity``), not in
``preexec_fn``, which Python documents as unsafe in a process with threads (the harness has
several). The child therefore runs unpinned from its exec until that call returns, and a thread
it started in that window would keep the old mask, so ``pin`` sets every thread the child has.
Measured with benchmarks/pin_after_start.py (2-core VM, 10 starts each of the reference server
and of Locust with both cores idle and 10 with both busy): the window was 0.5-4.4 ms (median
per case), 7.3 ms at most; the child had one thread when it closed, every time; once running,
none of the server's 17 threads nor of Locust's 5 had another mask. Pinning before exec (a
``taskset``-style wrapper, or ``os.posix_spawn``, which cannot set affinity) would change no
measurement, so there is none. The fork server pins its forked children before they start any
thread (harness.servers.forkserver).
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import psutil

OWNER_ENV = "TFS_HARNESS_OWNER"

# psutil's status names as the one-letter codes of ps(1), which callers compare against
_STATE_LETTER = {
    psutil.STATUS_RUNNING: "R",
    psutil.STATUS_SLEEPING: "S",
    psutil.STATUS_DISK_SLEEP: "D",
    psutil.STATUS_STOPPED: "T",
    psutil.STATUS_TRACING_STOP: "t",
    psutil.STATUS_ZOMBIE: "Z",
    psutil.STATUS_DEAD: "X",
    psutil.STATUS_IDLE: "I",
    psutil.STATUS_PARKED: "P",
    psutil.STATUS_WAKING: "W",
}


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (ours or another user's)."""
    return psutil.pid_exists(pid)


def process_state(pid: int) -> str | None:
    """The one-letter state (R, S, D, T for stopped, Z for zombie), None if gone."""
    try:
        status = psutil.Process(pid).status()
    except psutil.NoSuchProcess:
        return None
    return _STATE_LETTER.get(status, "?")


def _started(pid: int) -> str | None:
    """When the process started, in seconds since boot to the clock tick, as text: with the pid,
    it names one process (a reused pid has another start). Boot-relative, so a change of the
    wall clock between two harnesses does not make a live owner look gone."""
    try:
        since_boot = psutil.Process(pid).create_time() - psutil.boot_time()
    except psutil.Error:
        return None
    return f"{since_boot:.2f}"


def owner_token(pid: int | None = None) -> str:
    pid = os.getpid() if pid is None else pid
    return f"{pid}:{_started(pid) or 0}"


def marked_env(env: dict | None = None) -> dict:
    """A copy of ``env`` (default: ours) carrying this process's owner marker."""
    out = dict(os.environ if env is None else env)
    out[OWNER_ENV] = owner_token()
    return out


def _owner_alive(token: str) -> bool:
    pid, _, started = token.partition(":")
    if not pid.isdigit():
        return False
    now = _started(int(pid))
    return now is not None and (started == "0" or now == started)


def marked(select: Callable[[str], bool]) -> list[tuple[int, str]]:
    """(pid, command line) of live processes (zombies aside) whose owner marker ``select``
    accepts; this process excluded."""
    me = os.getpid()
    out = []
    for p in psutil.process_iter(["environ", "status", "cmdline"], ad_value=None):
        token = (p.info["environ"] or {}).get(OWNER_ENV)
        if p.pid == me or token is None or p.info["status"] in (None, psutil.STATUS_ZOMBIE):
            continue
        if select(token):
            out.append((p.pid, " ".join(p.info["cmdline"] or ()).strip()))
    return out


def find_orphans() -> list[tuple[int, str]]:
    """(pid, command line) of processes carrying our marker whose owning harness is gone."""
    return marked(lambda token: not _owner_alive(token))


def reap_orphans(grace: float = 3.0) -> list[str]:
    """Stop the processes a killed harness left behind (SIGTERM, then SIGKILL after ``grace``
    seconds); returns their command lines. Only marked processes whose owner is gone."""
    return _stop(find_orphans(), grace)


def reap_own(grace: float = 3.0) -> list[str]:
    """Stop every process this harness started that is still running: the last step of an
    interrupted run, for a child whose start an interrupt cut short (Ctrl-C inside ``Popen``,
    after the fork, leaves a child no one holds)."""
    me = owner_token()
    return _stop(marked(lambda token: token == me), grace)


def _stop(found: list[tuple[int, str]], grace: float) -> list[str]:
    procs = []
    for pid, _ in found:
        with contextlib.suppress(psutil.NoSuchProcess):
            procs.append(psutil.Process(pid))
    for p in procs:
        _signal(p, signal.SIGTERM, signal.SIGCONT)  # a stopped process must run to act on it
    left = _wait_gone(procs, grace)
    for p in left:
        _signal(p, signal.SIGKILL)  # psutil refuses if the pid now names another process
    _wait_gone(left, 1.0)
    return [cmd for _, cmd in found]


def _signal(p: psutil.Process, *sigs: int) -> None:
    for sig in sigs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            p.send_signal(sig)


def _wait_gone(procs: Iterable[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait up to ``timeout`` s for the processes to exit; returns those still running. A zombie
    counts as gone: only its parent can reap it. Children of ours are polled, not waited on:
    psutil's wait would reap them and take the exit code from the Popen that holds each."""
    end = time.monotonic() + timeout
    alive = [p for p in procs if not _exited(p)]
    while alive and time.monotonic() < end:
        step = min(0.05, max(end - time.monotonic(), 0))
        others = [p for p in alive if not _child_of_ours(p)]
        if others:
            psutil.wait_procs(others, timeout=step)
        else:
            time.sleep(step)
        alive = [p for p in alive if not _exited(p)]
    return alive


def _exited(p: psutil.Process) -> bool:
    try:
        return not p.is_running() or p.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _child_of_ours(p: psutil.Process) -> bool:
    try:
        return p.ppid() == os.getpid()
    except psutil.NoSuchProcess:
        return False


def tree_cpu_seconds(proc: int | psutil.Process) -> float | None:
    """User plus system CPU seconds of a process and its descendants so far (a descendant that
    exits meanwhile is left out); None when the process itself is gone or not ours to read."""
    try:
        p = proc if isinstance(proc, psutil.Process) else psutil.Process(proc)
        times = p.cpu_times()
        total = times.user + times.system
        children = p.children(recursive=True)
    except psutil.Error:
        return None
    for c in children:
        try:
            t = c.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def pin(pid: int, cpus: Iterable[int]) -> None:
    """Pin a process and every thread it has to ``cpus`` (see the module's docstring). Threads
    it starts later inherit the mask of the thread that starts them."""
    mask = sorted(set(cpus))
    proc = psutil.Process(pid)
    proc.cpu_affinity(mask)  # the main thread
    for _ in range(3):  # and any other, again if one started while we set the rest
        stale = [t for t, now in _threads(proc) if now != mask]
        if not stale:
            return
        for t in stale:
            with contextlib.suppress(psutil.NoSuchProcess):
                t.cpu_affinity(mask)


def _threads(proc: psutil.Process) -> list[tuple[psutil.Process, list[int]]]:
    """(thread, its CPUs) for each thread: on Linux a thread id works as a pid for psutil, and
    its affinity is the thread's own."""
    out = []
    for t in proc.threads():
        with contextlib.suppress(psutil.NoSuchProcess):
            thread = psutil.Process(t.id)
            out.append((thread, thread.cpu_affinity()))
    return out


def spawn(cmd: list[str], log_path: Path, cpus=None, *, env=None, cwd=None) -> subprocess.Popen:
    """Start ``cmd`` with stdout and stderr in ``log_path``, pinned to ``cpus``; raises OSError
    if it cannot start or cannot be pinned. The child carries our owner marker (see the
    module's docstring)."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=marked_env(env),
            cwd=cwd,
            start_new_session=True,
        )
    if cpus:
        try:
            pin(proc.pid, cpus)
        except psutil.NoSuchProcess:  # exited already: the caller reads its exit code and log
            pass
        except (psutil.Error, OSError, ValueError) as exc:
            stop_group(proc, 1.0)
            raise OSError(errno.EINVAL, f"cannot pin it to CPUs {sorted(set(cpus))}: {exc}") from None
    return proc


def stop_group(proc, timeout: float = 10.0) -> None:
    """SIGTERM the process group, wait up to ``timeout`` s, then SIGKILL. ``proc`` is Popen-like
    (pid, poll, wait): its own ``wait`` collects the leader's exit code, psutil waits for the
    rest of the group. A stopped (SIGSTOP) group is continued so that it can act on the SIGTERM."""
    if proc.poll() is not None:
        return
    members = _group(proc.pid)
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        os.killpg(proc.pid, signal.SIGCONT)
    except ProcessLookupError:
        return
    end = time.monotonic() + timeout
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout)
    left = _wait_gone(members, end - time.monotonic())
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the whole group, members started since too
        proc.wait()
    for p in left:
        _signal(p, signal.SIGKILL)
    _wait_gone(left, 1.0)


def _group(pgid: int) -> list[psutil.Process]:
    """The other processes of a process group (a forked worker, a shell's child)."""
    out = []
    for pid in psutil.pids():
        with contextlib.suppress(OSError, psutil.NoSuchProcess):
            if pid != pgid and os.getpgid(pid) == pgid:
                out.append(psutil.Process(pid))
    return out
