"""One trial: a fresh server with the trial's config, one measurement, the figures kept.

``TrialRunner.measure_loads`` is the one way a server is started and measured: a trial, a
re-measurement and ``harness run`` (which may sweep several loads over one server) all go
through it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path

from harness.config import BackendKind, Experiment, LoadConfig
from harness.cpus import default_cpus, parse_cpus
from harness.errors import ConfigError
from harness.load.payloads import check_saved_model
from harness.load.runner import RunResult, run_load
from harness.procs import reap_orphans
from harness.servers.base import ServerSpec, is_wildcard
from harness.servers.factory import make_backend
from harness.servers.usage import UsageMonitor
from harness.tuning import outputs
from harness.tuning.space import TrialConfig


def model_location(exp: Experiment, models_dir: Path = Path("models")) -> tuple[str, Path]:
    m = exp.model
    if m.path:
        if exp.server.backend != BackendKind.EXTERNAL and not Path(m.path).is_dir():
            raise ConfigError(
                f"{exp.source}: model.path {m.path} is not a directory",
                hint="give the SavedModel base path (holding version directories), or export one",
            )
        return m.name or Path(m.path).name, Path(m.path)
    from harness.models.export import ensure

    base = models_dir / m.demo
    if exp.server.backend != BackendKind.EXTERNAL:
        ensure(m.demo, base)
    return m.name or m.demo, base


class TrialRunner:
    def __init__(self, exp: Experiment, models_dir: Path = Path("models")) -> None:
        self.exp = exp
        # servers and Locust processes a killed harness left running (see harness.procs)
        self.removed_leftovers = reap_orphans()
        self.backend = make_backend(exp.server)
        self.removed_leftovers += getattr(self.backend, "removed_leftovers", [])
        self._check_reachable()
        self.model_name, self.model_dir = model_location(exp, models_dir)
        check_saved_model(self.model_dir, exp.load, exp.model.signature)  # before any server
        self.server_cpus, self.load_cpus = default_cpus(
            parse_cpus(exp.server.cpus), parse_cpus(exp.load.cpus)
        )

    def _check_reachable(self) -> None:
        """Load workers on other machines need a name for a server listening everywhere."""
        s = self.exp.server
        if (
            self.exp.load.remote_workers
            and s.backend != BackendKind.EXTERNAL
            and is_wildcard(s.bind_host)
            and not s.advertise_host
            and not getattr(self.backend, "engine_host", "")
        ):
            self.close()
            raise ConfigError(
                f"{self.exp.source}: server.bind_host = {s.bind_host!r} listens on every "
                "interface, but load workers on other machines need to know where to send: "
                "set server.advertise_host",
                hint="this machine's name or address as the load machines see it, e.g. "
                '--set server.advertise_host="10.0.0.5"',
            )

    def server_spec(self, cfg: TrialConfig) -> ServerSpec:
        exp = self.exp
        return ServerSpec(
            model_name=self.model_name,
            model_dir=self.model_dir,
            batching=cfg.batching,
            intra_op_parallelism=cfg.intra_op_parallelism,
            inter_op_parallelism=cfg.inter_op_parallelism,
            extra_flags=exp.server.extra_flags,
            cpus=self.server_cpus,
            memory=exp.server.memory or None,
            startup_timeout=exp.server.startup_timeout_s,
            bind_host=exp.server.bind_host,
            advertise_host=exp.server.advertise_host,
        )

    def load_for(self, cfg: TrialConfig) -> LoadConfig:
        """The experiment's load, with the trial's users when the search varies them."""
        if cfg.users:
            return dataclasses.replace(self.exp.load, users=cfg.users)
        return self.exp.load

    def run_load(self, server, load: LoadConfig, workdir: Path) -> RunResult:
        """``load`` against a running ``server``, on the load generator's cores."""
        return run_load(
            server.endpoint,
            load,
            workdir,
            cpus=self.load_cpus,
            signature=self.exp.model.signature,
            check_server=server.check_alive,
        )

    def measure_loads(
        self,
        cfg: TrialConfig,
        workdir: Path,
        loads: Mapping[str, LoadConfig],
        *,
        after: Callable[[LoadConfig, RunResult, list[str]], bool] | None = None,
    ) -> tuple[list[RunResult], list[str]]:
        """Start a server with ``cfg``, measure each of ``loads`` against it in turn (each in
        ``workdir/<its key>``), stop it. ``after(load, run, notes)`` sees each result as it
        comes; returning False skips the loads left. Returns the runs and the server's notes."""
        workdir.mkdir(parents=True, exist_ok=True)
        server = self.backend.start(self.server_spec(cfg), workdir / "server")
        # the server's CPU and memory, sampled while it serves (usage() is None for an external)
        usage = UsageMonitor(getattr(server, "usage", lambda: None))
        runs: list[RunResult] = []
        notes: list[str] = []
        try:
            for name, load in loads.items():
                runs.append(self.run_load(server, load, workdir / name))
                runs[-1].server.update(usage.over(*runs[-1].span))
                notes = server.notes()
                if after is not None and after(load, runs[-1], notes) is False:
                    break
        finally:
            usage.stop()
            server.stop()
        return runs, notes

    def measure(self, cfg: TrialConfig, workdir: Path) -> dict:
        """Start a server with ``cfg``, measure it, stop it; figures as plain values."""
        load = self.load_for(cfg)
        (run,), notes = self.measure_loads(cfg, workdir, {"load": load})
        m = run.measurement
        result = {
            "throughput_rps": m.throughput_rps,
            "items_per_s": m.items_per_s,
            "p50_ms": _num(m.p50_ms),
            "p90_ms": _num(m.p90_ms),
            "p99_ms": _num(m.p99_ms),
            "p999_ms": _num(m.p999_ms),
            "requests": m.requests,
            "errors": m.errors,
            "error_rate": m.rejection_rate,
            "stable": run.stable,
            "generator_cpu": run.generator_cpu,
            "mean_batch_size": run.server.get("mean_batch_size"),
            "batch_size_histogram": {
                str(k): v for k, v in (run.server.get("batch_size_histogram") or {}).items()
            },
            "mean_queuing_ms": run.server.get("mean_queuing_ms"),
            # the server's CPU over the measured windows, and its peak memory (harness.servers.usage)
            "server_cpu_s": run.server.get("server_cpu_s"),
            "server_cores": run.server.get("server_cores"),
            "server_peak_memory_mb": run.server.get("server_peak_memory_mb"),
            "oversize": run.oversize,
            "warnings": run.warnings,
            "notes": notes,
            "users": load.users,
        }
        outputs.write_json_atomic(
            workdir / "measurement.json",
            {
                "config": cfg.as_dict(),
                **result,
                "windows": [dataclasses.asdict(w) for w in run.windows],
                "window_server": run.window_server,
            },
        )
        if cfg.batching is not None:
            outputs.write_text_atomic(workdir / "batching_parameters.txt", cfg.batching.to_text())
        return json.loads(json.dumps(result, default=str))

    def close(self) -> None:
        close = getattr(self.backend, "close", None)
        if close:
            close()


def _num(v: float) -> float | None:
    return None if v is None or math.isnan(v) else v
