"""A pre-warmed parent for reference servers: TensorFlow is imported once, each trial forks.

Starting a Python server costs ~3 s of ``import tensorflow`` on this kind of machine, paid again
at every trial restart. The fork server pays it once: it imports the reference server and
TensorFlow, stays single-threaded (no TF session, no gRPC server, nothing that forking could
break), and on request forks a child that runs ``harness serve`` with the given flags. The child
starts a new session (its own process group), pins itself to its CPUs (``harness.procs.pin``, as
every server and Locust process is pinned; here before the server starts, as a forked child of a
single-threaded parent has no other thread yet) and writes to its own log.

On the native request path the parent imports no TensorFlow: a standby native server, its
TensorFlow already open, takes each start from the child's launcher
(``harness/refserver/native/standby.py``), and its pid is the one reported.

The protocol is JSON lines over the fork server's stdin and stdout. Exit codes of children are
written to their ``exit_file`` (``-N`` for a signal, as ``subprocess`` reports it), since only
the fork server can reap them.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import psutil

from harness import atomic
from harness.errors import ServerError
from harness.procs import marked_env, pin


class ForkedProcess:
    """A Popen-like handle on a server forked by the fork server."""

    def __init__(self, pid: int, exit_file: Path) -> None:
        self.pid = pid
        self.exit_file = exit_file
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                self.returncode = int(self.exit_file.read_text())
            except (OSError, ValueError):
                return None
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        end = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if end is not None and time.monotonic() > end:
                raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout)
            time.sleep(0.02)
        return self.returncode

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class ForkServer:
    """The client side: starts the fork server lazily and asks it for children."""

    def __init__(self, log_path: Path | None = None) -> None:
        self._proc: subprocess.Popen | None = None
        self._log_path = log_path

    def _ensure(self) -> subprocess.Popen:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        log = open(self._log_path, "ab") if self._log_path else subprocess.DEVNULL
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "harness.servers.forkserver"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            env=marked_env(),  # forked servers inherit our owner marker (see harness.procs)
            start_new_session=True,
        )
        if log is not subprocess.DEVNULL:
            log.close()
        hello = self._proc.stdout.readline()
        if not hello:
            raise ServerError(
                "the fork server exited before it was ready",
                hint="run with the process backend's fork_server = false to see the error directly",
            )
        return self._proc

    def spawn(
        self, argv: list[str], log_path: Path, cpus: tuple[int, ...] | None, env: dict | None = None
    ) -> ForkedProcess:
        """A server started with ``argv``; ``env``: variables set in the child only."""
        proc = self._ensure()
        exit_file = log_path.with_suffix(".exit")
        exit_file.unlink(missing_ok=True)
        cmd = {
            "argv": argv,
            "log": str(log_path),
            "cpus": list(cpus or ()),
            "exit_file": str(exit_file),
            "env": dict(env or {}),
        }
        try:
            proc.stdin.write((json.dumps(cmd) + "\n").encode())
            proc.stdin.flush()
            reply = json.loads(proc.stdout.readline())
        except (OSError, ValueError):
            raise ServerError(
                "the fork server died", hint="see its log, or set fork_server = false"
            ) from None
        return ForkedProcess(reply["pid"], exit_file)

    def close(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.stdin.close()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None


# -- the fork server itself ---------------------------------------------------------------------


def _child(cmd: dict, server_main) -> None:
    code = 1
    try:
        os.setsid()
        if cmd["cpus"]:
            pin(os.getpid(), cmd["cpus"])
        fd = os.open(cmd["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        os.environ.update(cmd.get("env") or {})
        code = server_main(cmd["argv"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code or 0)


def _write_exit(path: str, code: int) -> None:
    """The child's exit code as ``subprocess`` reports it (``-N`` for signal N), for its client."""
    atomic.write_text(path, str(int(code)), durable=False)


def _stop_children(children: dict[int, str]) -> None:
    """SIGTERM each child's group, wait up to 5 s (writing the exit files), SIGKILL the rest."""
    procs = []
    for pid in list(children):
        for sig in (signal.SIGTERM, signal.SIGCONT):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, sig)  # each child leads its own session and group
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            children.pop(pid, None)
    # psutil reaps our children as it waits; returncode is the exit code, -N for a signal
    _, alive = psutil.wait_procs(
        procs, timeout=5, callback=lambda p: _write_exit(children.pop(p.pid), p.returncode)
    )
    for p in alive:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGKILL)


def _fork(cmd: dict, server_main) -> int:
    pid = os.fork()
    if pid == 0:
        _child(cmd, server_main)
    return pid


def main() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")
    from harness.refserver.native.standby import Standby
    from harness.refserver.server import main as server_main
    from harness.refserver.server import preload

    # The native path: a standby server with TensorFlow's C API open takes each start, so this
    # process needs no TensorFlow of its own (harness/refserver/native/standby.py).
    standby = Standby.create()
    if standby is None:
        preload()
    else:
        standby.start()
    children: dict[int, str] = {}
    out = sys.stdout.buffer
    out.write(b'{"ready": true}\n')
    out.flush()
    stdin = sys.stdin.buffer
    while True:
        ready, _, _ = select.select([stdin], [], [], 0.1)
        # a waiting standby is reaped too when it dies, with no server running
        while children or (standby is not None and standby.pid is not None):
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if standby is not None and standby.owns(pid):
                continue  # died while waiting; the next start is a cold one
            exit_file = children.pop(pid, None)
            if exit_file:
                _write_exit(exit_file, os.waitstatus_to_exitcode(status))
        if not ready:
            continue
        line = stdin.readline()
        if not line:
            # Our client went away. After a clean close its servers are already stopped; after
            # a crash or a SIGKILL of the harness nobody else will stop them.
            _stop_children(children)
            if standby is not None:
                standby.close()
            return
        cmd = json.loads(line)
        if standby is not None:
            pid = standby.spawn(cmd, lambda c: _fork(c, server_main))
        else:
            pid = _fork(cmd, server_main)
        children[pid] = cmd["exit_file"]
        out.write(json.dumps({"pid": pid}).encode() + b"\n")
        out.flush()


if __name__ == "__main__":
    main()
