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

from harness.config import BackendKind, Experiment, LoadConfig, ModelConfig
from harness.cpus import default_cpus, parse_cpus
from harness.errors import ConfigError
from harness.load.payloads import check_saved_model
from harness.load.runner import RunResult, run_load
from harness.procs import reap_orphans
from harness.servers.base import ServerSpec, is_wildcard
from harness.servers.factory import make_backend
from harness.servers.staging import ServedModel
from harness.servers.usage import UsageMonitor
from harness.tuning import outputs
from harness.tuning.space import TrialConfig


def model_location(
    exp: Experiment, models_dir: Path = Path("models"), m: ModelConfig | None = None
) -> tuple[str, Path]:
    """(served name, base path) of ``m`` (default: the experiment's model), a demo model
    exported on first use."""
    m = m or exp.model
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
        # every served model (several: one --model_config_file); the first is the model
        self.models = [model_location(exp, models_dir, m) for m in exp.served_models]
        self.model_name, self.model_dir = self.models[0]
        for (_, base), m in zip(self.models, exp.served_models):
            check_saved_model(base, exp.load, m.signature)  # before any server
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
            models=self.served(cfg),
        )

    def served(self, cfg: TrialConfig) -> tuple[ServedModel, ...]:
        """Several models: each with its base path and, searched per model, its batching."""
        if not self.exp.multi_model and not cfg.per_model:
            return ()
        return tuple(
            ServedModel(name=name, base_path=base, batching=cfg.model_batching(name))
            for name, base in self.models
        )

    def load_for(self, cfg: TrialConfig) -> LoadConfig:
        """The experiment's load, with the trial's users when the search varies them, and the
        traffic split over several models (even when the experiment gives none)."""
        load = dataclasses.replace(self.exp.load, traffic=self.exp.traffic())
        if cfg.users:
            return dataclasses.replace(load, users=cfg.users)
        return load

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
        if run.models:
            result["models"] = model_results(self.exp, run.models)
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


def model_results(exp: Experiment, figures: Mapping) -> dict[str, dict]:
    """Each model's figures (``{name: Measurement}``) against its own SLO (the study's unless
    the model sets one): ``constraints`` as ``loop.score`` reads them (<= 0: within), and
    ``meets_slo``. A trial of several models holds only if every model meets its SLO."""
    total = sum(m.requests for m in figures.values()) or 1
    slo = {m.served_name: m for m in exp.served_models}
    out = {}
    for name, m in figures.items():
        own = slo.get(name)
        p99_slo = own.slo_p99_ms if own and own.slo_p99_ms is not None else exp.slo.p99_ms
        err_slo = (
            own.slo_max_error_rate
            if own and own.slo_max_error_rate is not None
            else exp.slo.max_error_rate
        )
        p99 = _num(m.p99_ms)
        constraints = [(p99 if p99 is not None else math.inf) - p99_slo, m.rejection_rate - err_slo]
        out[name] = {
            "share": m.requests / total,
            "requests": m.requests,
            "throughput_rps": m.throughput_rps,
            "items_per_s": m.items_per_s,
            "p50_ms": _num(m.p50_ms),
            "p99_ms": p99,
            "error_rate": m.rejection_rate,
            "errors": m.errors,
            "slo_p99_ms": p99_slo,
            "slo_max_error_rate": err_slo,
            "constraints": constraints,
            "meets_slo": constraints[0] <= 0 and constraints[1] <= 0,
        }
    return out


def _num(v: float) -> float | None:
    return None if v is None or math.isnan(v) else v
