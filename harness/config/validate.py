"""The one validator of the settings: every rule a value must follow, written once.

Each message starts with where the value came from (a file, ``--set``, the command line) and
names the key, on one line: ``<source>: load.users must be > 0, got 0``.
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
import math
import re

from harness import tfs_flags
from harness.config.settings import (
    DEMO_MODELS,
    Arrivals,
    BackendKind,
    Experiment,
    LoadConfig,
    ModelConfig,
    Protocol,
    Range,
    SearchConfig,
    ServerConfig,
    SloConfig,
    StudyConfig,
)
from harness.config.sizes import parse_input_shapes, parse_size_mix, parse_traffic
from harness.errors import ConfigError


def check_experiment(exp: Experiment) -> None:
    src = exp.source
    check_model(src, exp.model)
    check_models(src, exp)
    check_server(src, exp.server)
    check_load(src, exp.load)
    check_slo(src, exp.slo)
    check_search(src, exp.search)
    check_study(src, exp.study)


def check_model(src: str, m: ModelConfig) -> None:
    if bool(m.demo) == bool(m.path):
        raise ConfigError(f'{src}: [model] needs exactly one of demo = "..." or path = "..."')
    if m.demo and m.demo not in DEMO_MODELS:
        raise ConfigError(
            f"{src}: model.demo {m.demo!r} is not a demo model ({', '.join(DEMO_MODELS)})"
        )
    if m.name and not _MODEL_NAME.fullmatch(m.name):
        raise ConfigError(
            f"{src}: model.name {show(m.name)} may hold only letters, digits, '.', '_' and '-'",
            hint="it is used in URLs, paths and server flags",
        )


def check_models(src: str, exp: Experiment) -> None:
    """Several models in one server: each model valid, names distinct, the traffic split over
    served models only, each model's own SLO (if any) a valid one."""
    if exp.models and exp.model != exp.models[0]:
        raise ConfigError(
            f"{src}: give [model] or [[models]], not both",
            hint="with several models, list each in its own [[models]] table",
        )
    names: list[str] = []
    for i, m in enumerate(exp.models):
        check_model(f"{src}: models[{i}]", m)
        if m.served_name in names:
            raise ConfigError(
                f"{src}: models[{i}] is served as {m.served_name!r} like an earlier one",
                hint='give each model its own name = "..."',
            )
        names.append(m.served_name)
    for m in exp.served_models:
        key = f"model {m.served_name!r}"
        if m.slo_p99_ms is not None:
            positive(src, f"{key}: slo_p99_ms", m.slo_p99_ms)
        if m.slo_max_error_rate is not None and not 0 <= m.slo_max_error_rate <= 1:
            raise ConfigError(f"{src}: {key}: slo_max_error_rate must be between 0 and 1")
    served = [m.served_name for m in exp.served_models]
    if exp.load.traffic:
        for name, _ in traffic_split(src, exp.load.traffic):
            if name not in served:
                raise ConfigError(
                    f"{src}: load.traffic names {name!r}, which is not a served model",
                    hint=f"served models: {', '.join(served)}",
                )
    for name in exp.search.per_model_batching:
        if name not in served:
            raise ConfigError(
                f"{src}: search.per_model_batching names {name!r}, which is not a served model",
                hint=f"served models: {', '.join(served)} (or write true for all)",
            )
    if exp.search.per_model_batching and (
        exp.search.allowed_batch_sizes or exp.search.large_batch_splitting
    ):
        raise ConfigError(
            f"{src}: search.per_model_batching searches max_batch_size, batch_timeout_micros "
            "and max_enqueued_batches per model, not allowed_batch_sizes or large batch splitting",
            hint="leave search.allowed_batch_sizes and search.large_batch_splitting false",
        )
    if len({m.signature for m in exp.served_models}) > 1:
        raise ConfigError(
            f"{src}: the served models name different signatures",
            hint="every model of one experiment is called through the same signature name",
        )
    if len(served) > 1 and exp.load.payload:
        raise ConfigError(
            f"{src}: load.payload with several models is not supported",
            hint="leave load.payload empty: each model gets random values from its signature",
        )


def check_server(src: str, s: ServerConfig) -> None:
    one_of(src, "server.backend", s.backend, BackendKind)
    check_cpu_list(src, "server.cpus", s.cpus)
    positive(src, "server.startup_timeout_s", s.startup_timeout_s)
    _check_hosts(src, s)
    one_of(src, "server.model_transfer", s.model_transfer, ("auto", "bind", "copy"))
    check_extra_flags(src, s.extra_flags)
    if s.backend == BackendKind.EXTERNAL and not (s.grpc_target and s.rest_url):
        raise ConfigError(
            f"{src}: the external backend needs server.grpc_target and server.rest_url"
        )


def check_extra_flags(src: str, flags) -> None:
    """Only flags ``tensorflow_model_server`` defines: it ignores any other (after printing
    "unknown argument"), so a misspelt flag would silently not apply."""
    for arg in flags:
        name = tfs_flags.flag_name(arg)
        if name not in tfs_flags.FLAGS:
            raise ConfigError(
                f"{src}: server.extra_flags: {show(arg)} is not a flag tensorflow_model_server "
                "defines (it would print 'unknown argument' and ignore it)",
                hint="write --name=value with a name from TF Serving's model_servers/main.cc, "
                "e.g. --tensorflow_session_parallelism=1",
            )
        if name in tfs_flags.HARNESS_SETS:
            raise ConfigError(
                f"{src}: server.extra_flags: --{name} is set by the harness for every trial",
                hint="leave it out: the model, ports and batching files come from the experiment",
            )


def check_load(src: str, load: LoadConfig) -> None:
    if not 1 <= load.processes <= 64:
        raise ConfigError(f"{src}: load.processes must be between 1 and 64")
    if load.users > 100_000:
        raise ConfigError(f"{src}: load.users must be at most 100000, got {load.users}")
    one_of(src, "load.protocol", load.protocol, Protocol)
    positive(src, "load.users", load.users)
    check_traffic(src, "load", load.rate, load.arrivals, load.request_sizes)
    check_timing(src, "load", load.warmup_s, load.window_s)
    if load.min_windows < 1 or load.max_windows < load.min_windows:
        raise ConfigError(f"{src}: need 1 <= load.min_windows <= load.max_windows")
    check_cpu_list(src, "load.cpus", load.cpus)
    if load.extra_windows < 0:
        raise ConfigError(f"{src}: load.extra_windows must be >= 0, got {load.extra_windows}")
    if not load.tolerance >= 0:
        raise ConfigError(f"{src}: load.tolerance must be >= 0, got {show(load.tolerance)}")
    positive(src, "load.request_timeout_s", load.request_timeout_s)
    if load.remote_workers < 0:
        raise ConfigError(f"{src}: load.remote_workers must be >= 0")
    if not 0 <= load.master_port < 65536:
        raise ConfigError(f"{src}: load.master_port {load.master_port} is not a port number")
    check_requests(src, load)
    traffic_split(src, load.traffic)


def traffic_split(src: str, text: str) -> list[tuple[str, float]]:
    """load.traffic parsed, its errors naming the key; [] when empty."""
    if not text:
        return []
    try:
        return parse_traffic(text)
    except ConfigError as exc:
        raise ConfigError(f"{src}: load.traffic: {exc.message}", hint=exc.hint) from None


def check_requests(src: str, load: LoadConfig) -> None:
    """What the requests carry: example requests (load.payload) or random values shaped by
    load.input_shapes; whether they fit the model is checked against its signature later."""
    if not isinstance(load.payload, str):
        raise ConfigError(f"{src}: load.payload must be a path, got {show(load.payload)}")
    try:
        parse_input_shapes(load.input_shapes)
    except ConfigError as exc:
        raise ConfigError(f"{src}: load.input_shapes: {exc.message}", hint=exc.hint) from None
    if load.payload and load.input_shapes:
        raise ConfigError(
            f"{src}: give load.payload or load.input_shapes, not both",
            hint="input shapes only shape random values; a payload's rows have their own shapes",
        )


def check_traffic(src: str, section: str, rate: float, arrivals, request_sizes: str) -> None:
    """What is sent: the open-loop rate, how sends are spaced, the request size mix (the
    simulator's ``Workload`` follows the same rules)."""
    one_of(src, f"{section}.arrivals", arrivals, Arrivals)
    if not rate >= 0:
        raise ConfigError(f"{src}: {section}.rate must be >= 0, got {show(rate)}")
    try:
        parse_size_mix(request_sizes)
    except ConfigError as exc:
        raise ConfigError(f"{src}: {section}.request_sizes: {exc.message}", hint=exc.hint) from None


def check_timing(src: str, section: str, warmup_s: float, window_s: float) -> None:
    """How long is measured: a warm-up and a window (the simulator's are in virtual time)."""
    positive(src, f"{section}.window_s", window_s)
    if not warmup_s >= 0:
        raise ConfigError(f"{src}: {section}.warmup_s must be >= 0, got {show(warmup_s)}")


def check_slo(src: str, slo: SloConfig) -> None:
    positive(src, "slo.p99_ms", slo.p99_ms)
    if not 0 <= slo.max_error_rate <= 1:
        raise ConfigError(f"{src}: slo.max_error_rate must be between 0 and 1")


def check_search(src: str, search: SearchConfig) -> None:
    for f in dataclasses.fields(SearchConfig):
        r = getattr(search, f.name)
        if isinstance(r, Range) and not (f.name == "users" and r == Range(choices=())):
            _check_range(src, f"search.{f.name}", r, _SEARCH_MIN[f.name])


def check_study(src: str, study: StudyConfig) -> None:
    one_of(src, "study.sampler", study.sampler, ("tpe", "random", "nsga2"))
    one_of(src, "study.mode", study.mode, ("constrained", "pareto"))
    if study.guide_procedure != "":  # empty: no procedure
        one_of(src, "study.guide_procedure", study.guide_procedure, ("cpu", "gpu"))
    positive(src, "study.trials", study.trials)
    try:
        ipaddress.ip_address(study.deploy_host)
    except ValueError:
        raise ConfigError(
            f"{src}: study.deploy_host must be an IP address, got {study.deploy_host!r}",
            hint="0.0.0.0 publishes the deployed ports on every interface, 127.0.0.1 on loopback",
        ) from None
    if study.top_k < 1 or study.repeats < 1:
        raise ConfigError(f"{src}: study.top_k and study.repeats must be >= 1")


# -- the rules the sections share ----------------------------------------------------------------


def one_of(src: str, key: str, value, allowed) -> None:
    """``allowed``: a tuple of strings or a StrEnum (its values, in declaration order)."""
    names = [m.value for m in allowed] if isinstance(allowed, type) else list(allowed)
    plain = value.value if isinstance(value, enum.Enum) else value
    if not isinstance(plain, str) or plain not in names:
        raise ConfigError(f"{src}: {key} = {show(plain)} is not one of {', '.join(names)}")


def positive(src: str, key: str, value) -> None:
    if not value > 0:
        raise ConfigError(f"{src}: {key} must be > 0, got {show(value)}")


def check_cpu_list(src: str, key: str, value: str) -> None:
    if value and not _CPU_LIST.fullmatch(value):
        raise ConfigError(f'{src}: {key} = {show(value)} is not like "0", "0-3" or "0,2"')


def _check_hosts(src: str, server: ServerConfig) -> None:
    try:
        ipaddress.ip_address(server.bind_host)
    except ValueError:
        raise ConfigError(
            f"{src}: server.bind_host = {show(server.bind_host)} is not an IP address",
            hint='the address the server listens on: "127.0.0.1" (the default), "0.0.0.0" for '
            "every interface, or one of this machine's addresses; names go in server.advertise_host",
        ) from None
    adv = server.advertise_host
    if not adv:
        return
    if adv in ("0.0.0.0", "::"):
        raise ConfigError(
            f"{src}: server.advertise_host = {show(adv)} is not an address a client can reach",
            hint="give this machine's (or the Docker host's) name or address as other machines see it",
        )
    try:
        ipaddress.ip_address(adv)
    except ValueError:
        if not _HOST_NAME.fullmatch(adv):
            raise ConfigError(
                f"{src}: server.advertise_host = {show(adv)} is not a host name or an IP address",
                hint='a bare name or address, without scheme or port: "10.0.0.5", "gpu-box-1.internal"',
            ) from None


def _check_range(src, key, r: Range, minimum: int = 0) -> None:
    values = [("choices", v) for v in r.choices] + [("low", r.low), ("high", r.high)]
    for what, v in values:
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ConfigError(f"{src}: {key}: {what} must be whole numbers, got {show(v)}")
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


def show(value, width: int = 60) -> str:
    """A value for a one-line message: repr, shortened."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."
