"""One interface for every way of running a model server.

A backend starts a server for a model and a set of batching parameters, waits until the model is
AVAILABLE, and hands back a ``RunningServer``: its endpoint, its logs, a liveness check that
raises with the exit code and the last log lines, and ``stop()``. The tuner never knows which
backend it drives.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Protocol

from harness import tfs_formats
from harness.batching import BatchingParameters

# Where a server is reached lives in the foundation (the load runner needs it without the
# backends); re-exported here so the backends and their callers keep one import.
from harness.endpoint import (  # noqa: F401
    LOG_TAIL_LINES,
    METRICS_PATH,
    Endpoint,
    advertised_host,
    host_port,
    is_loopback,
    is_wildcard,
    log_tail,
)
from harness.errors import ServerError
from harness.servers.staging import ServedModel

# Start-up lines worth recording with a trial (what the binary was built for, for example).
NOTABLE_LINES = [
    re.compile(
        r"Your CPU supports instructions that this TensorFlow binary was not compiled to use:.*"
    ),
    re.compile(r"To enable the following instructions: .*rebuild TensorFlow.*"),
    re.compile(r"This TensorFlow binary is optimized to use available CPU instructions.*"),
    re.compile(r"Running gRPC ModelServer at .*"),
    re.compile(r"Exporting HTTP/REST API at.*"),
]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ServerSpec:
    """What to serve and how: everything that changes from one trial to the next."""

    model_name: str
    model_dir: Path  # the base path holding version directories
    batching: BatchingParameters | None = None  # None: --enable_batching off (TF's default)
    intra_op_parallelism: int = 0
    inter_op_parallelism: int = 0
    extra_flags: tuple[str, ...] = ()
    cpus: tuple[int, ...] | None = None  # CPU set the server may use
    memory: str | None = None  # container memory limit, e.g. "8g"
    startup_timeout: float = 180.0
    bind_host: str = "127.0.0.1"  # where the server listens (docker: where ports are published)
    advertise_host: str = ""  # how the harness and load workers reach it; empty: derived
    # several models in one server (a --model_config_file), the first being model_name and
    # model_dir; a model with its own batching parameters gets its batching_params.pbtxt
    # (--enable_per_model_batching_parameters), and ``batching`` then holds the shared pool's
    models: tuple[ServedModel, ...] = ()

    @property
    def model_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.models) or (self.model_name,)

    @property
    def per_model_batching(self) -> bool:
        return self.batching is not None and any(m.batching is not None for m in self.models)

    def server_flags(self, batching_file: str | None, monitoring_file: str) -> list[str]:
        """Flags shared by every backend (model and port flags are the backend's business)."""
        flags = [f"--monitoring_config_file={monitoring_file}"]
        if self.batching is not None:
            flags.append("--enable_batching")
            if batching_file:
                flags.append(f"--batching_parameters_file={batching_file}")
            if self.per_model_batching:
                flags.append("--enable_per_model_batching_parameters")
        if self.intra_op_parallelism:
            flags.append(f"--tensorflow_intra_op_parallelism={self.intra_op_parallelism}")
        if self.inter_op_parallelism:
            flags.append(f"--tensorflow_inter_op_parallelism={self.inter_op_parallelism}")
        flags.extend(self.extra_flags)
        return flags


class RunningServer(Protocol):
    endpoint: Endpoint

    def logs(self) -> str: ...

    def check_alive(self) -> None:
        """Raise ServerError (with exit code and log tail) if the server has exited."""

    def notes(self) -> list[str]: ...

    def stop(self) -> None: ...


class ServerHandle:
    """What every running server shares: notes read from its log, use as a context manager."""

    def logs(self) -> str:
        return ""

    def notes(self) -> list[str]:
        return notable_lines(self.logs())

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class Backend(Protocol):
    name: str
    can_restart: bool

    def start(self, spec: ServerSpec, workdir: Path) -> RunningServer: ...


def write_config_files(spec: ServerSpec, workdir: Path) -> tuple[Path | None, Path]:
    """The batching parameters file (when batching is on) and the monitoring config file."""
    workdir.mkdir(parents=True, exist_ok=True)
    batching = None
    if spec.batching is not None:
        batching = spec.batching.write(workdir / "batching_parameters.txt")
    monitoring = workdir / "monitoring.txt"
    monitoring.write_text(tfs_formats.to_text(tfs_formats.monitoring_config(METRICS_PATH)))
    return batching, monitoring


def notable_lines(text: str) -> list[str]:
    found = []
    for line in text.splitlines():
        for pattern in NOTABLE_LINES:
            m = pattern.search(line)
            if m and m.group(0) not in found:
                found.append(m.group(0))
    return found


def model_state(rest_url: str, model_name: str, timeout: float = 2.0) -> tuple[str | None, str]:
    """(state of the newest version, error message) from the REST status API; (None, why) if unreachable."""
    try:
        with urllib.request.urlopen(f"{rest_url}/v1/models/{model_name}", timeout=timeout) as r:
            doc = json.loads(r.read())
    except urllib.error.HTTPError as exc:
        try:
            return None, json.loads(exc.read()).get("error", str(exc))
        except ValueError:
            return None, str(exc)
    except (OSError, ValueError) as exc:
        return None, str(exc)
    statuses = doc.get("model_version_status") or []
    if not statuses:
        return None, "no versions reported"
    newest = max(statuses, key=lambda s: int(s.get("version", 0)))
    return newest.get("state"), newest.get("status", {}).get("error_message", "")


def wait_until_available(server: RunningServer, timeout: float, names=()) -> float:
    """Poll until the model (or each of ``names``) is AVAILABLE; returns seconds waited. Raises
    ServerError on exit, on a model that failed to load, or on timeout (with the log tail)."""
    t0 = time.monotonic()
    last = ""
    # A probe of a server that is not up yet is a refused connection (well under a millisecond
    # of either side's CPU), so polling often costs nothing and each probe's gap is what a
    # restart waits past the moment the server is ready.
    delay = 0.01
    waiting = list(names or (server.endpoint.model_name,))
    while True:
        server.check_alive()
        name = waiting[0]
        state, why = model_state(server.endpoint.rest_url, name)
        if state == "AVAILABLE":
            waiting.pop(0)
            if not waiting:
                return time.monotonic() - t0
            continue
        if state == "END" and why:
            raise ServerError(f"model {name} failed to load: {why}\n{log_tail(server.logs())}")
        last = why or f"state {state}"
        if time.monotonic() - t0 > timeout:
            raise ServerError(
                f"model {name} not AVAILABLE after {timeout:.0f}s ({last})\n"
                f"{log_tail(server.logs())}",
                hint="raise the start-up timeout or check the model directory",
            )
        time.sleep(delay)
        delay = min(delay * 1.5, 0.05)
