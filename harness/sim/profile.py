"""A model's measured costs on one machine: the simulator's only input about the real world.

A profile holds the model's execution time per batch size (median and spread, measured with the
reference server's own model runner, pinned to the server's cores) and the server's per-request
cost on its request path, per protocol, measured through a running server. It is saved as JSON
with the environment it was measured in, and reused by every study on the same machine
(``results/profiles/<model>-<backend>-cpus<list>.json`` by default).
"""

from __future__ import annotations

import dataclasses
import json
import platform
from pathlib import Path

from harness.config import BackendKind, Experiment
from harness.errors import ConfigError

FORMAT = 1
DEFAULT_DIR = Path("results/profiles")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Overhead:
    """Per-request costs of one protocol's path through the server, in microseconds.

    ``cpu_in_us`` and ``cpu_out_us``: server CPU spent before a request reaches the batch queue
    (receive, decode, checks) and after its batch ran (split, encode, send); ``reject_us``: CPU to
    answer a rejected request after ``cpu_in_us``; ``rtt_us``: time an answer takes that is not
    the server's CPU (loopback, thread hand-offs): added to every latency; ``client_us``: the load
    generator's own CPU per request, which bounds a closed loop run from one client process.
    """

    cpu_in_us: float
    cpu_out_us: float
    reject_us: float
    rtt_us: float
    client_us: float = 0.0  # the load generator's CPU per request (closed loop: one core)
    # extra CPU when work finds the request path idle (threads asleep): see harness.sim.kernel
    wake_us: float = 0.0
    measured: dict = dataclasses.field(default_factory=dict)  # the raw figures they came from


@dataclasses.dataclass(frozen=True, kw_only=True)
class Profile:
    model: str
    backend: str
    cores: int  # CPUs the server is pinned to
    exec_us: dict[int, dict]  # padded batch size -> {"median", "p10", "p90", "n"} in us
    overhead: dict[str, Overhead]  # protocol -> costs
    environment: dict
    # the server process's full garbage collections: {"pause_ms", "every_requests", ...}; empty
    # for a server that has none (tensorflow_model_server is C++)
    gc: dict = dataclasses.field(default_factory=dict)
    # server CPU per batch beyond the model (merge, split, hand-offs), from a busy batching run
    batch_overhead_us: float = 0.0
    # how the costs above were split, when the served runs were traced (harness.sim.calibrate)
    served: dict = dataclasses.field(default_factory=dict)
    path: str = ""

    def sizes(self) -> list[int]:
        return sorted(self.exec_us)

    def max_size(self) -> int:
        return max(self.exec_us)

    def utilisation(self) -> float:
        """The share of its cores a saturated server keeps busy: from the batch traces of the
        served runs when there are some, else from the busy runs' whole-run CPU time (which
        includes the load's start, so it reads low); 1.0 when unknown."""
        if self.served.get("cpu_share"):
            return float(self.served["cpu_share"])
        shares = [
            r.get("server_cpu_share")
            for r in [o.measured.get("busy", {}) for o in self.overhead.values()]
            + [self.gc.get("busy_run") or {}]
        ]
        shares = [x for x in shares if x]
        return min(max(sum(shares) / len(shares), 0.5), 1.0) if shares else 1.0

    def overhead_for(self, protocol: str) -> Overhead:
        try:
            return self.overhead[protocol]
        except KeyError:
            raise ConfigError(
                f"profile {self.path or self.model} has no {protocol} overhead "
                f"(has: {', '.join(self.overhead) or 'none'})",
                hint="run 'harness profile' with that protocol",
            ) from None

    def to_json(self) -> dict:
        return {
            "format": FORMAT,
            "model": self.model,
            "backend": self.backend,
            "cores": self.cores,
            "exec_us": {str(k): v for k, v in sorted(self.exec_us.items())},
            "overhead": {k: dataclasses.asdict(v) for k, v in self.overhead.items()},
            "environment": self.environment,
            "gc": self.gc,
            "batch_overhead_us": self.batch_overhead_us,
            "served": self.served,
        }

    @classmethod
    def from_json(cls, data: dict, path: str = "") -> Profile:
        where = path or "profile"
        if data.get("format") != FORMAT:
            raise ConfigError(
                f"{where}: not a profile of format {FORMAT}", hint="re-run 'harness profile'"
            )
        try:
            exec_us = {int(k): dict(v) for k, v in data["exec_us"].items()}
            overhead = {k: Overhead(**v) for k, v in data["overhead"].items()}
            prof = cls(
                model=data["model"],
                backend=data["backend"],
                cores=int(data["cores"]),
                exec_us=exec_us,
                overhead=overhead,
                environment=data.get("environment", {}),
                gc=dict(data.get("gc") or {}),
                batch_overhead_us=float(data.get("batch_overhead_us") or 0.0),
                served=dict(data.get("served") or {}),
                path=path,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(
                f"{where}: malformed profile ({exc})", hint="re-run 'harness profile'"
            ) from None
        if not exec_us or any(v.get("median", 0) <= 0 for v in exec_us.values()):
            raise ConfigError(f"{where}: execution times missing or not positive")
        return prof


def save(profile: Profile, path: Path) -> Path:
    from harness.atomic import write_json as write_json_atomic

    write_json_atomic(Path(path), profile.to_json())
    return Path(path)


def load(path: str | Path) -> Profile:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read profile {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not JSON ({exc})") from None
    return Profile.from_json(data, str(path))


def default_path(
    model: str, backend: str, cpus: list[int] | None, root: Path = DEFAULT_DIR
) -> Path:
    where = "-".join(str(c) for c in cpus) if cpus else "all"
    return Path(root) / f"{model}-{backend}-cpus{where}.json"


def profile_path_for(exp: Experiment, root: Path | None = None) -> Path:
    """Where the profile of ``exp`` is kept: one per model, server and server cores."""
    from harness.cpus import default_cpus, parse_cpus

    server_cpus, _ = default_cpus(parse_cpus(exp.server.cpus), parse_cpus(exp.load.cpus))
    model = exp.model.name or exp.model.demo or Path(exp.model.path).name
    backend = exp.server.backend
    if backend == BackendKind.PROCESS and exp.server.binary not in ("auto", "reference"):
        backend = f"process-{Path(exp.server.binary).name}"
    return default_path(model, str(backend), server_cpus, root or DEFAULT_DIR)


def environment(cpus: list[int] | None) -> dict:
    """Where a profile was measured: it only predicts a machine like this one."""
    import os

    from harness.envinfo import cpu_info

    env = {
        "cpu_model": cpu_info()["model"],
        "machine_cores": os.cpu_count(),
        "server_cpus": list(cpus) if cpus else None,
        "python": platform.python_version(),
        "hostname": platform.node(),
    }
    try:
        from importlib.metadata import version

        env["tensorflow"] = version("tensorflow")
    except Exception:  # noqa: BLE001 - not installed: the profile still stands
        env["tensorflow"] = None
    return env
