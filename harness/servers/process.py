"""Run ``tensorflow_model_server`` (when on PATH) or the reference server as a local process.

Both get the same command line, TF Serving's flags only. Where to listen is not a flag (the real
binary has none): ``$HARNESS_REFSERVER_BIND_ADDRESS`` carries the spec's ``bind_host``
(127.0.0.1 unless the experiment says otherwise) to the reference server, and the real binary
ignores it and listens on every interface (gRPC on 0.0.0.0, REST on ``::``), so with it
``bind_host`` only decides where free ports are looked for. Either is reached at the advertised
host (``ServerSpec.advertise_host``, else ``bind_host``).
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from harness.errors import ServerError
from harness.procs import process_state, spawn, stop_group
from harness.servers.base import (
    Endpoint,
    ServerHandle,
    ServerSpec,
    advertised_host,
    is_wildcard,
    log_tail,
    wait_until_available,
    write_config_files,
)
from harness.servers.forkserver import ForkServer
from harness.servers.staging import MODEL_CONFIG_FILE, stage, write_model_config
from harness.servers.usage import Usage, process_usage
from harness.servers.watchdog import Watchdog

TF_BINARY = "tensorflow_model_server"
# The reference server's listening address (the project's own variable; TF's binary ignores it).
BIND_ENV = "HARNESS_REFSERVER_BIND_ADDRESS"
PORT_ATTEMPTS = 3
# What TF Serving and the reference server say when a port is taken.
_CLASH = ("port is in use", "address already in use", "failed to bind", "could not bind")


def _port_clash(text: str) -> bool:
    low = text.lower()
    return any(c in low for c in _CLASH)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on at ``host`` right now (the server takes it a moment later)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        try:
            s.bind((host, 0))
        except OSError as exc:
            raise ServerError(
                f"cannot listen on {host}: {exc.strerror}",
                hint="server.bind_host must be an address of this machine (or 0.0.0.0)",
            ) from None
        return s.getsockname()[1]


def server_command(binary: str) -> list[str]:
    """The command that starts a server: "auto" prefers TF Serving's binary, else ours."""
    if binary == "auto":
        found = shutil.which(TF_BINARY)
        return [found] if found else [sys.executable, "-m", "harness.refserver"]
    if binary == "reference":
        return [sys.executable, "-m", "harness.refserver"]
    path = shutil.which(binary) or (binary if Path(binary).is_file() else None)
    if path is None:
        raise ServerError(
            f"server binary {binary!r} not found",
            hint=f'install {TF_BINARY}, give its path, or use binary = "reference"',
        )
    return [path]


class ProcessServer(ServerHandle):
    def __init__(self, proc, endpoint: Endpoint, log_path: Path, notes: list[str] = ()) -> None:
        self.proc = proc
        self.endpoint = endpoint
        self.log_path = log_path
        self.watchdog: Watchdog | None = None  # armed once the model is AVAILABLE
        self._notes = list(notes)

    def notes(self) -> list[str]:
        return [*self._notes, *super().notes()]

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def check_alive(self) -> None:
        rc = self.proc.poll()
        if rc is not None:
            raise ServerError(
                f"server process exited with code {rc}\n{log_tail(self.logs())}",
                hint=f"the full log is {self.log_path}",
            )
        if process_state(self.proc.pid) == "T":
            raise ServerError(
                f"server process {self.proc.pid} is stopped (SIGSTOP or a debugger): it cannot "
                f"answer\n{log_tail(self.logs())}",
                hint="the trial is failed; the server is stopped and a fresh one starts next",
            )
        if self.watchdog is not None:
            self.watchdog.check(self.logs)

    def usage(self) -> Usage | None:
        """CPU time and memory of the server and its children (psutil)."""
        return process_usage(self.proc.pid)

    def stop(self, timeout: float = 10.0) -> None:
        stop_group(self.proc, timeout)


class ProcessBackend:
    """Servers as child processes on the spec's bind host (127.0.0.1), pinned to its CPUs."""

    name = "process"
    can_restart = True

    def __init__(self, binary: str = "auto", *, fork_server: bool = True) -> None:
        self.command = server_command(binary)
        # The reference server starts from a pre-warmed fork server (TensorFlow imported once).
        self._forks = ForkServer() if fork_server and self.is_reference else None

    def close(self) -> None:
        if self._forks is not None:
            self._forks.close()

    @property
    def is_reference(self) -> bool:
        return self.command[-1] == "harness.refserver"

    def describe(self) -> str:
        """The server by name: the reference server and its request path, or the binary's path
        and what its ``--version`` says."""
        if self.is_reference:
            from importlib import metadata

            from harness.refserver.native import launch

            path = {"native": "native path", "python": "Python path"}[launch.choose()]
            return (
                f"the reference server ({path}, tfs-harness {metadata.version('tfs-harness')}, "
                f"TensorFlow {metadata.version('tensorflow')})"
            )
        return f"{self.command[0]} ({binary_version(self.command[0])})"

    def start(self, spec: ServerSpec, workdir: Path) -> ProcessServer:
        workdir = Path(workdir)
        model_dir = Path(spec.model_dir).resolve()
        if not model_dir.is_dir():
            raise ServerError(
                f"model directory {model_dir} does not exist", hint="export the model first"
            )
        # Ports are picked free, then handed to the server: another process may take one in
        # between. A server that could not listen is retried on fresh ports.
        for attempt in range(PORT_ATTEMPTS):
            try:
                return self._start_once(spec, workdir, model_dir)
            except ServerError as exc:
                if attempt + 1 == PORT_ATTEMPTS or not _port_clash(str(exc)):
                    raise

    def _start_once(self, spec: ServerSpec, workdir: Path, model_dir: Path) -> ProcessServer:
        batching, monitoring = write_config_files(spec, workdir)
        notes = []
        probe = spec.bind_host
        if not self.is_reference:  # TF Serving listens everywhere: ports free on every interface
            probe = "::" if ":" in spec.bind_host else "0.0.0.0"
            if not is_wildcard(spec.bind_host):
                notes.append(
                    f"tensorflow_model_server listens on every interface, not only on "
                    f"server.bind_host {spec.bind_host} (it has no flag for the address)"
                )
        grpc_port, rest_port = free_port(probe), free_port(probe)
        cmd = [
            *self.command,
            f"--port={grpc_port}",
            f"--rest_api_port={rest_port}",
            *model_flags(spec, workdir, model_dir),
            *spec.server_flags(str(batching) if batching else None, str(monitoring)),
        ]
        env = {BIND_ENV: spec.bind_host}  # the reference server's address; TF's binary ignores it
        log_path = workdir / "server.log"
        # the command as a shell would run it again, the address variable in front
        (workdir / "server.cmd").write_text(shlex.join([f"{BIND_ENV}={spec.bind_host}", *cmd]) + "\n")
        if self._forks is not None:
            proc = self._forks.spawn(cmd[len(self.command) :], log_path, spec.cpus, env)
        else:
            proc = self._popen(cmd, log_path, spec.cpus, env)
        (workdir / "server.pid").write_text(f"{proc.pid}\n")
        host = advertised_host(spec.bind_host, spec.advertise_host)
        server = ProcessServer(
            proc, Endpoint.at(host, grpc_port, rest_port, spec.model_name), log_path, notes
        )
        try:
            wait_until_available(server, spec.startup_timeout, spec.model_names)
        except BaseException:
            server.stop()
            raise
        server.watchdog = Watchdog(server.endpoint.rest_url, spec.model_name)
        return server

    @staticmethod
    def _popen(cmd: list[str], log_path: Path, cpus, env: dict[str, str]) -> subprocess.Popen:
        try:
            return spawn(cmd, log_path, cpus, env={**os.environ, **env})
        except OSError as exc:
            raise ServerError(f"cannot start {cmd[0]}: {exc.strerror}") from None


def model_flags(spec: ServerSpec, workdir: Path, model_dir: Path) -> list[str]:
    """The one model's name and base path, or for several a ``--model_config_file`` listing
    them (each staged with its batching_params.pbtxt under per-model batching)."""
    if not spec.models:
        return [f"--model_name={spec.model_name}", f"--model_base_path={model_dir}"]
    staged = [stage(m, workdir / "models") for m in spec.models]
    path = write_model_config([(m.name, m.base_path) for m in staged], workdir / MODEL_CONFIG_FILE)
    return [f"--model_config_file={path}"]


def binary_version(path: str) -> str:
    """What ``<path> --version`` prints, its lines joined; or why it is unknown."""
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"version unknown: {type(exc).__name__}"
    lines = [ln.strip() for ln in (out.stdout or out.stderr).splitlines() if ln.strip()]
    return ", ".join(lines[:2]) if lines else "version unknown: --version printed nothing"
