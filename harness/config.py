"""Experiment files (TOML) -> frozen, keyword-only dataclasses, with every value checked.

Unknown keys, wrong types and impossible ranges are errors that name the key and the file.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import re
import tomllib
import typing
from pathlib import Path

from harness.errors import ConfigError


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelConfig:
    demo: str = ""  # a demo model name, exported on first use
    path: str = ""  # or a SavedModel base path
    name: str = ""  # served under this name (default: demo name or directory name)
    signature: str = "serving_default"


@dataclasses.dataclass(frozen=True, kw_only=True)
class ServerConfig:
    backend: str = "process"  # process | docker | external
    binary: str = "auto"  # process: tensorflow_model_server, a path, or "reference"
    image: str = "tfs-harness/reference:latest"  # docker
    gpus: bool = False
    allow_pull: bool = False
    grpc_target: str = ""  # external
    rest_url: str = ""  # external
    cpus: str = ""  # e.g. "0" or "0-3"; empty: core 0 on a machine with 2+ cores
    memory: str = ""  # docker memory limit, e.g. "8g"
    extra_flags: tuple[str, ...] = ()
    startup_timeout_s: float = 180.0
    # Where the server listens (docker: the host address its ports are published on). Loopback
    # by default: nothing is exposed unless asked. tensorflow_model_server cannot be told: it
    # listens on every interface whatever this says (docs/distributed.md).
    bind_host: str = "127.0.0.1"
    # The name or address the harness and the load workers use to reach the server; empty:
    # bind_host, or for a wildcard bind_host the remote Docker engine's host, else loopback.
    advertise_host: str = ""
    # docker: how the model and config files reach the engine; auto: bind mounts for a local
    # engine (unix socket), copies into a Docker volume for a remote one (ssh://, tcp://)
    model_transfer: str = "auto"


@dataclasses.dataclass(frozen=True, kw_only=True)
class LoadConfig:
    protocol: str = "grpc"
    users: int = 64
    rate: float = 0.0
    arrivals: str = "poisson"
    request_sizes: str = "1"
    warmup_s: float = 3.0
    window_s: float = 3.0
    min_windows: int = 3
    max_windows: int = 5
    processes: int = 1  # local Locust processes; above 1: a master and N workers
    cpus: str = ""  # empty: every core the server does not use
    remote_workers: int = 0  # workers on other machines (`harness worker --master-host ...`)
    master_bind_host: str = "127.0.0.1"  # 0.0.0.0 (or an address) to let remote workers in
    master_port: int = 0  # 0: a free port, or 5557 when remote workers are expected


@dataclasses.dataclass(frozen=True, kw_only=True)
class SloConfig:
    p99_ms: float = 100.0
    max_error_rate: float = 0.01  # errors and rejections, as a share of requests


@dataclasses.dataclass(frozen=True, kw_only=True)
class Range:
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: int | None = None
    choices: tuple = ()
    zero: bool = False  # also try 0 (batch_timeout_micros: "0, or log scale from 100 us")


@dataclasses.dataclass(frozen=True, kw_only=True)
class SearchConfig:
    max_batch_size: Range = Range(choices=(1, 2, 4, 8, 16, 32, 64, 128, 256))
    batch_timeout_micros: Range = Range(low=100, high=100_000, log=True, zero=True)
    num_batch_threads: Range = Range(low=1, high=0)  # high 0: the server's cores
    max_enqueued_batches: Range = Range(choices=(1, 4, 16, 64, 1_000_000))
    allowed_batch_sizes: bool = False  # also search padding to powers of two
    large_batch_splitting: bool = False
    intra_op_parallelism: Range = Range(choices=(0,))
    inter_op_parallelism: Range = Range(choices=(0,))
    users: Range = Range(choices=())  # a workload value searched too; empty: load.users fixed


@dataclasses.dataclass(frozen=True, kw_only=True)
class StudyConfig:
    name: str = ""
    storage: str = ""  # an Optuna storage URL; empty: SQLite in the study folder
    sampler: str = "tpe"  # tpe | random | nsga2
    seed: int | None = 0
    trials: int = 30
    mode: str = (
        "constrained"  # constrained: max throughput within the SLO; pareto: throughput up, p99 down
    )
    baselines: bool = True
    top_k: int = 3
    repeats: int = 3


@dataclasses.dataclass(frozen=True, kw_only=True)
class Experiment:
    model: ModelConfig = ModelConfig()
    server: ServerConfig = ServerConfig()
    load: LoadConfig = LoadConfig()
    slo: SloConfig = SloConfig()
    search: SearchConfig = SearchConfig()
    study: StudyConfig = StudyConfig()
    source: str = "<defaults>"

    def check(self) -> Experiment:
        src = self.source
        m = self.model
        if bool(m.demo) == bool(m.path):
            raise ConfigError(f'{src}: [model] needs exactly one of demo = "..." or path = "..."')
        if m.demo:
            from harness.models.catalog import MODELS

            if m.demo not in MODELS:
                raise ConfigError(
                    f"{src}: model.demo {m.demo!r} is not a demo model ({', '.join(MODELS)})"
                )
        _one_of(src, "server.backend", self.server.backend, ("process", "docker", "external"))
        if m.name and not _MODEL_NAME.fullmatch(m.name):
            raise ConfigError(
                f"{src}: model.name {_show(m.name)} may hold only letters, digits, '.', '_' and '-'",
                hint="it is used in URLs, paths and server flags",
            )
        for key, value in (("server.cpus", self.server.cpus), ("load.cpus", self.load.cpus)):
            if value and not _CPU_LIST.fullmatch(value):
                raise ConfigError(f'{src}: {key} = {_show(value)} is not like "0", "0-3" or "0,2"')
        _positive(src, "server.startup_timeout_s", self.server.startup_timeout_s)
        _check_hosts(src, self.server)
        _one_of(src, "server.model_transfer", self.server.model_transfer, ("auto", "bind", "copy"))
        if not 1 <= self.load.processes <= 64:
            raise ConfigError(f"{src}: load.processes must be between 1 and 64")
        if self.load.users > 100_000:
            raise ConfigError(f"{src}: load.users must be at most 100000, got {self.load.users}")
        if self.server.backend == "external" and not (
            self.server.grpc_target and self.server.rest_url
        ):
            raise ConfigError(
                f"{src}: the external backend needs server.grpc_target and server.rest_url"
            )
        _one_of(src, "load.protocol", self.load.protocol, ("grpc", "rest"))
        _one_of(src, "load.arrivals", self.load.arrivals, ("poisson", "constant"))
        _positive(src, "load.users", self.load.users)
        _positive(src, "load.window_s", self.load.window_s)
        if self.load.min_windows < 1 or self.load.max_windows < self.load.min_windows:
            raise ConfigError(f"{src}: need 1 <= load.min_windows <= load.max_windows")
        if self.load.rate < 0 or self.load.warmup_s < 0:
            raise ConfigError(f"{src}: load.rate and load.warmup_s must be >= 0")
        from harness.load.payloads import parse_size_mix

        try:
            parse_size_mix(self.load.request_sizes)
        except ConfigError as exc:
            raise ConfigError(f"{src}: load.request_sizes: {exc.message}", hint=exc.hint) from None
        _positive(src, "slo.p99_ms", self.slo.p99_ms)
        if not 0 <= self.slo.max_error_rate <= 1:
            raise ConfigError(f"{src}: slo.max_error_rate must be between 0 and 1")
        for f in dataclasses.fields(SearchConfig):
            r = getattr(self.search, f.name)
            if isinstance(r, Range) and not (f.name == "users" and r == Range(choices=())):
                _check_range(src, f"search.{f.name}", r, _SEARCH_MIN[f.name])
        _one_of(src, "study.sampler", self.study.sampler, ("tpe", "random", "nsga2"))
        _one_of(src, "study.mode", self.study.mode, ("constrained", "pareto"))
        _positive(src, "study.trials", self.study.trials)
        if self.study.top_k < 1 or self.study.repeats < 1:
            raise ConfigError(f"{src}: study.top_k and study.repeats must be >= 1")
        return self


def _one_of(src, key, value, allowed):
    if value not in allowed:
        raise ConfigError(f"{src}: {key} = {_show(value)} is not one of {', '.join(allowed)}")


def _check_hosts(src, server: ServerConfig) -> None:
    try:
        ipaddress.ip_address(server.bind_host)
    except ValueError:
        raise ConfigError(
            f"{src}: server.bind_host = {_show(server.bind_host)} is not an IP address",
            hint='the address the server listens on: "127.0.0.1" (the default), "0.0.0.0" for '
            "every interface, or one of this machine's addresses; names go in server.advertise_host",
        ) from None
    adv = server.advertise_host
    if not adv:
        return
    if adv in ("0.0.0.0", "::"):
        raise ConfigError(
            f"{src}: server.advertise_host = {_show(adv)} is not an address a client can reach",
            hint="give this machine's (or the Docker host's) name or address as other machines see it",
        )
    try:
        ipaddress.ip_address(adv)
    except ValueError:
        if not _HOST_NAME.fullmatch(adv):
            raise ConfigError(
                f"{src}: server.advertise_host = {_show(adv)} is not a host name or an IP address",
                hint='a bare name or address, without scheme or port: "10.0.0.5", "gpu-box-1.internal"',
            ) from None


def _positive(src, key, value):
    if not value > 0:
        raise ConfigError(f"{src}: {key} must be > 0, got {_show(value)}")


def _check_range(src, key, r: Range, minimum: int = 0) -> None:
    values = [("choices", v) for v in r.choices] + [("low", r.low), ("high", r.high)]
    for what, v in values:
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ConfigError(f"{src}: {key}: {what} must be whole numbers, got {_show(v)}")
        if not float(v).is_integer():
            raise ConfigError(f"{src}: {key}: {what} must be whole numbers, got {v}")
    if r.step is not None and (r.step < 1 or r.log):
        raise ConfigError(f"{src}: {key}: step must be >= 1 and cannot go with a log scale")
    if r.choices:
        if r.low is not None or r.high is not None:
            raise ConfigError(f"{src}: {key}: give either choices or low/high, not both")
        _check_minimum(src, key, r, minimum)
        return
    if r.low is None or r.high is None:
        raise ConfigError(f"{src}: {key}: give choices = [...] or low and high")
    if r.high != 0 and r.low > r.high:
        raise ConfigError(f"{src}: {key}: low ({r.low}) is above high ({r.high})")
    if r.log and r.low <= 0:
        raise ConfigError(f"{src}: {key}: a log scale needs low > 0, got {r.low}")
    _check_minimum(src, key, r, minimum)


def _check_minimum(src, key, r: Range, minimum: int) -> None:
    for what, v in [("choices", v) for v in r.choices] + [("low", r.low), ("high", r.high)]:
        if v is not None and v < minimum and not (what == "high" and v == 0):
            raise ConfigError(f"{src}: {key}: {what} must be >= {minimum}, got {v}")


# The smallest value each searched parameter may take (num_batch_threads' high = 0: the cores).
_SEARCH_MIN = {
    "max_batch_size": 1,
    "batch_timeout_micros": 0,
    "num_batch_threads": 1,
    "max_enqueued_batches": 1,
    "intra_op_parallelism": 0,
    "inter_op_parallelism": 0,
    "users": 1,
}
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_HOST_NAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)
_CPU_LIST = re.compile(r"\d{1,4}(-\d{1,4})?(,\d{1,4}(-\d{1,4})?)*")


def _show(value, width: int = 60) -> str:
    """A value for a one-line message: repr, shortened."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


# -- reading ------------------------------------------------------------------------------------


def _build(cls, data, where: str, src: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{src}: [{where}] must be a table, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)} - {"source"}
    values = {}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(
                f"{src}: unknown key {where + '.' if where else ''}{key}",
                hint=f"known keys in [{where or 'top level'}]: {', '.join(sorted(fields))}",
            )
        values[key] = _convert(hints[key], value, f"{where}.{key}" if where else key, src)
    return cls(**values)


def _convert(hint, value, key: str, src: str):
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Range:
        if isinstance(value, list):
            value = {"choices": value}
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            value = {"choices": [value]}
        return _build(Range, value, key, src)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key, src)
    if origin is tuple or hint is tuple:
        if not isinstance(value, list):
            raise ConfigError(f"{src}: {key} must be a list, got {_show(value)}")
        if args and args[0] is str and not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{src}: {key} must be a list of strings, got {_show(value)}")
        return tuple(value)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None:
            return None
        inner = [a for a in args if a is not type(None)]
        if int in inner and isinstance(value, int) and not isinstance(value, bool):
            return value  # keep whole numbers whole where a field takes either
        return _convert(inner[0], value, key, src)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{src}: {key} must be true or false, got {_show(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{src}: {key} must be an integer, got {_show(value)}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{src}: {key} must be a number, got {_show(value)}")
        if not math.isfinite(value):
            raise ConfigError(f"{src}: {key} must be a finite number, got {value}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{src}: {key} must be a string, got {_show(value)}")
        return value
    return value


def from_dict(data: dict, source: str = "<dict>") -> Experiment:
    exp = _build(Experiment, data, "", source)
    return dataclasses.replace(exp, source=source).check()


def load(path: str | Path, overrides: list[str] = ()) -> Experiment:
    """Read an experiment file; ``overrides`` are ``section.key=value`` (TOML values)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"cannot read experiment file {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{path}: invalid TOML: {first}") from None
    for item in overrides:
        apply_override(data, item, str(path))
    return from_dict(data, str(path))


def apply_override(data: dict, item: str, src: str) -> None:
    key, sep, raw = item.partition("=")
    if not sep or "." not in key:
        raise ConfigError(f"override {item!r} must look like section.key=value, e.g. load.users=32")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # a bare word: take it as a string
    *parents, last = key.strip().split(".")
    node = data
    for p in parents:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{src}: override {item!r}: {p} is not a table")
    node[last] = value


def to_toml(exp: Experiment) -> str:
    """The experiment as TOML (what a study folder keeps beside its results)."""
    lines = []
    for section in ("model", "server", "load", "slo", "study"):
        lines.append(f"[{section}]")
        for k, v in dataclasses.asdict(getattr(exp, section)).items():
            if v is None:
                continue
            lines.append(f"{k} = {_toml_value(v)}")
        lines.append("")
    lines.append("[search]")
    for f in dataclasses.fields(SearchConfig):
        v = getattr(exp.search, f.name)
        if isinstance(v, Range):
            parts = [
                f"{k} = {_toml_value(x)}"
                for k, x in dataclasses.asdict(v).items()
                if not (x is None or x is False or (isinstance(x, tuple) and not x))
            ]
            lines.append(f"{f.name} = {{ {', '.join(parts)} }}")
        else:
            lines.append(f"{f.name} = {_toml_value(v)}")
    return "\n".join(lines) + "\n"


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (tuple, list)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'
