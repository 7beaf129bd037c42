"""The fork server's spare native server: started before it is needed, TensorFlow already open.

A restart on the native path spends ~0.35 s opening TensorFlow's C API (``dlopen`` and its
static initialisers), a third of the time to ready (docs/native.md, "Restart to ready"). The
fork server (harness/servers/forkserver.py) keeps one ``harness-refserver-native --standby``
process waiting, in its own session, with that done. A start then goes:

1. the fork server forks its child as before, with ``$HARNESS_REFSERVER_HANDOFF_FD`` naming a
   pipe; the child runs ``harness serve``'s launcher (every flag and file checked by the same
   code, every refusal the same message and exit code in the same log);
2. where the launcher would ``exec`` the binary it writes the command (argv and environment)
   down the pipe and exits; a child that refuses, or serves on the Python path, closes the pipe
   instead and is the server, as before;
3. the fork server sends the command, the log and the CPUs to the standby, which takes the log
   as its output, pins every thread, takes the environment and serves; its pid is the server's.
   A standby whose environment differs in anything TensorFlow may have read (or whose binary
   was rebuilt since) exec's the command instead: a cold start, still correct.

Then a new standby is started for the next restart, and told what was just started: it opens
TensorFlow and loads those models (the next trial's, most often) on nice-19 threads, so that it
takes only CPU that a running trial's server and load leave idle (``preload.h``). A start with
other models or session options finds it unfit and exec's cold. ``$HARNESS_REFSERVER_STANDBY_
PRELOAD=0`` keeps standbys to opening TensorFlow (a second copy of a large model may not fit).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
from pathlib import Path

from harness.errors import HarnessError
from harness.procs import pin

# How long the fork server waits for its child's launcher to hand over or close the pipe, and
# for a standby to say it took a request (it answers at once unless it is gone).
LAUNCH_TIMEOUT = 60.0
ACK_TIMEOUT = 5.0
# "0": standbys only open TensorFlow; they do not load the previous start's models ahead.
PRELOAD_ENV = "HARNESS_REFSERVER_STANDBY_PRELOAD"


class Standby:
    """One waiting native server at a time, and the hand-over of a start to it.

    Spawned with ``os.posix_spawn``, not ``subprocess``: the fork server reaps every child
    itself (``waitpid(-1)``, for the exit files), and a dropped ``Popen`` would reap a served
    standby behind its back (``subprocess`` collects abandoned children on the next spawn)."""

    def __init__(self, binary: Path, env: dict) -> None:
        self.binary = binary
        self.env = env
        self.pid: int | None = None
        self._pipe: int | None = None  # its standard input
        self._ack: int | None = None  # its standard output

    @classmethod
    def create(cls) -> Standby | None:
        """A standby when this process would start the native path; None otherwise."""
        from harness.refserver.native import launch

        try:
            if launch.choose() != "native":
                return None
            launch.preload()
            return cls(launch.binary(), launch.environment())
        except HarnessError:
            return None

    def start(self) -> None:
        """Start the next standby (it opens TensorFlow while it waits)."""
        r, w = os.pipe()  # its standard input: requests
        ack_r, ack_w = os.pipe()  # its standard output until it serves: "taken"
        null = os.open(os.devnull, os.O_RDWR)
        try:
            self.pid = os.posix_spawn(
                str(self.binary),
                [str(self.binary), "--standby"],
                self.env,
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, r, 0),
                    (os.POSIX_SPAWN_DUP2, ack_w, 1),
                    (os.POSIX_SPAWN_DUP2, null, 2),
                ],
                setsid=True,  # its own session and group: the backend signals the server's group
            )
            self._pipe, self._ack = w, ack_r
        except OSError:
            os.close(w)
            os.close(ack_r)
            self.pid = None
        finally:
            os.close(r)
            os.close(ack_w)
            os.close(null)

    def owns(self, pid: int) -> bool:
        """``pid`` is the waiting standby (reaped by the fork server: it died unused)."""
        if self.pid is not None and self.pid == pid:
            self._forget()
            return True
        return False

    def spawn(self, cmd: dict, fork) -> int:
        """The server's pid for the fork server's request ``cmd``. ``fork(cmd)`` forks the fork
        server's child and returns its pid."""
        from harness.refserver.native.launch import HANDOFF_ENV

        r, w = os.pipe()
        try:
            child = fork({**cmd, "env": {**(cmd.get("env") or {}), HANDOFF_ENV: str(w)}})
        finally:
            os.close(w)
        with os.fdopen(r, "rb") as pipe:
            command = _read_command(pipe)
        if command is None:
            return child  # the child refused, or serves by itself
        os.waitpid(child, 0)  # it exited as soon as it had written
        pid = self._hand_over(command, cmd)
        if pid is None:
            pid = _cold_start(command, cmd)
        self.start()
        if os.environ.get(PRELOAD_ENV, "1") != "0":
            self._prepare(command, cmd)
        return pid

    def _prepare(self, command: dict, cmd: dict) -> None:
        """Tell the new standby what was just started: it loads those models ahead of the next
        start, which is most often the same models with new batching parameters (preload.h)."""
        message = {"prepare": command["argv"], "cpus": list(cmd.get("cpus") or ())}
        try:
            os.write(self._pipe, json.dumps(message).encode() + b"\n")
        except (OSError, TypeError):
            self._forget()

    def _hand_over(self, command: dict, cmd: dict) -> int | None:
        """The standby's pid once it has said it took the request; None when it is gone (it
        died while waiting, or is dying: the caller starts cold)."""
        pid, pipe, ack = self.pid, self._pipe, self._ack
        self.pid = self._pipe = self._ack = None
        if pid is None:
            return None
        request = {**command, "log": cmd["log"], "cpus": list(cmd.get("cpus") or ())}
        try:
            with os.fdopen(pipe, "wb") as out:
                out.write(json.dumps(request).encode() + b"\n")
            ready, _, _ = select.select([ack], [], [], ACK_TIMEOUT)
            taken = bool(ready) and os.read(ack, 1) == b"\n"
        except OSError:
            taken = False
        finally:
            os.close(ack)
        if not taken:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return pid if taken else None

    def _forget(self) -> None:
        for fd in (self._pipe, self._ack):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.pid = self._pipe = self._ack = None

    def close(self) -> None:
        """Stop the waiting standby (it has no server to stop)."""
        pid = self.pid
        self._forget()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


def _read_command(pipe) -> dict | None:
    """The launcher's command, or None when the child closed the pipe without one."""
    ready, _, _ = select.select([pipe], [], [], LAUNCH_TIMEOUT)
    if not ready:
        return None
    data = pipe.read()  # to the end: the child closes the pipe when it has written
    try:
        command = json.loads(data) if data else None
    except ValueError:
        return None
    return command if isinstance(command, dict) and command.get("argv") else None


def _cold_start(command: dict, cmd: dict) -> int:
    """Without a standby: fork and exec the command as the child would have."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            if cmd.get("cpus"):
                pin(os.getpid(), cmd["cpus"])
            fd = os.open(cmd["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
                signal.signal(sig, signal.SIG_DFL)
            os.execve(command["argv"][0], command["argv"], command["env"])
        finally:
            os._exit(1)
    return pid
