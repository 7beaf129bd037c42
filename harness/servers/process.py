"""Run ``tensorflow_model_server`` (when on PATH) or the reference server as a local process.

The reference server listens on the spec's ``bind_host`` (127.0.0.1 unless the experiment says
otherwise); ``tensorflow_model_server`` has no such flag and listens on every interface (gRPC on
0.0.0.0, REST on ``::``), so with it ``bind_host`` only decides where free ports are looked for.
Either is reached at the advertised host (``ServerSpec.advertise_host``, else ``bind_host``).
"""

from __future__ import annotations

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
from harness.servers.watchdog import Watchdog

TF_BINARY = "tensorflow_model_server"
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
        if self.is_reference:
            listen = [f"--bind_address={spec.bind_host}"]
            probe = spec.bind_host
        else:  # TF Serving listens on every interface: its ports must be free on all of them
            listen, probe = [], "::" if ":" in spec.bind_host else "0.0.0.0"
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
            *listen,
            f"--model_name={spec.model_name}",
            f"--model_base_path={model_dir}",
            *spec.server_flags(str(batching) if batching else None, str(monitoring)),
        ]
        log_path = workdir / "server.log"
        (workdir / "server.cmd").write_text(" ".join(cmd) + "\n")
        if self._forks is not None:
            proc = self._forks.spawn(cmd[len(self.command) :], log_path, spec.cpus)
        else:
            proc = self._popen(cmd, log_path, spec.cpus)
        (workdir / "server.pid").write_text(f"{proc.pid}\n")
        host = advertised_host(spec.bind_host, spec.advertise_host)
        server = ProcessServer(
            proc, Endpoint.at(host, grpc_port, rest_port, spec.model_name), log_path, notes
        )
        try:
            wait_until_available(server, spec.startup_timeout)
        except BaseException:
            server.stop()
            raise
        server.watchdog = Watchdog(server.endpoint.rest_url, spec.model_name)
        return server

    @staticmethod
    def _popen(cmd: list[str], log_path: Path, cpus: tuple[int, ...] | None) -> subprocess.Popen:
        try:
            return spawn(cmd, log_path, cpus)
        except OSError as exc:
            raise ServerError(f"cannot start {cmd[0]}: {exc.strerror}") from None
