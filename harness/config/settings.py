"""The experiment's settings: frozen, keyword-only dataclasses, one set of defaults.

Every stage reads its settings from these types: the load runner takes ``LoadConfig`` as it is,
``harness run``'s flags are derived from the fields, and the simulator's ``Workload`` is built
from a ``LoadConfig``. Values that are known only at run time (the CPU set the load generator was
given, the model's signature) are passed beside the settings, not folded into a second type.
"""

from __future__ import annotations

import dataclasses
import enum
from pathlib import Path


class Protocol(enum.StrEnum):
    """How the load generator talks to the server."""

    GRPC = "grpc"
    REST = "rest"


class BackendKind(enum.StrEnum):
    """How the server is run (``harness.servers``)."""

    PROCESS = "process"
    DOCKER = "docker"
    EXTERNAL = "external"


class Arrivals(enum.StrEnum):
    """Open loop: how the send times are spaced."""

    POISSON = "poisson"
    CONSTANT = "constant"


# Locust's default master port: where a master expecting workers from other machines listens
# unless told otherwise, and where ``harness worker`` connects by default.
LOCUST_MASTER_PORT = 5557

# The demo models ``harness model export`` builds (harness.models.catalog describes each one);
# named here so the experiment's checks need not import the models stage.
DEMO_MODELS = ("mlp", "ranker", "mobilenet_v2", "resnet50", "image_jpeg")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelConfig:
    demo: str = ""  # a demo model name, exported on first use
    path: str = ""  # or a SavedModel base path
    name: str = ""  # served under this name (default: demo name or directory name)
    signature: str = "serving_default"
    # Several models in one server ([[models]], docs/multi-model.md): this model's own SLO;
    # None: the study's slo.p99_ms / slo.max_error_rate.
    slo_p99_ms: float | None = None
    slo_max_error_rate: float | None = None

    @property
    def served_name(self) -> str:
        """The name the server serves this model under."""
        return self.name or self.demo or Path(self.path).name


@dataclasses.dataclass(frozen=True, kw_only=True)
class ServerConfig:
    backend: BackendKind = BackendKind.PROCESS
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
    """One measurement's traffic and how long it is measured (``harness.load.runner``)."""

    protocol: Protocol = Protocol.GRPC
    users: int = 64  # closed loop: concurrent users, each waiting for its answer
    rate: float = 0.0  # open loop when > 0: requests/s in total
    arrivals: Arrivals = Arrivals.POISSON
    request_sizes: str = "1"  # rows per request, or a mix like 1:50,4:30,16:20
    # example requests to draw rows from (docs/payloads.md): a TF Serving REST request body, a
    # directory of them, or an .npz; empty: random values from the model's signature
    payload: str = ""
    # random values only: the row shape of inputs with dynamic dimensions, "NAME=D1,D2,..."
    input_shapes: tuple[str, ...] = ()
    warmup_s: float = 3.0
    window_s: float = 3.0
    min_windows: int = 3
    max_windows: int = 5
    tolerance: float = 0.10  # the last three windows agree within this share: stable
    # windows added, up to this many, when the first max_windows still do not agree: an
    # unstable measurement gets more time before it is reported (flagged) as unstable
    extra_windows: int = 3
    request_timeout_s: float = 30.0  # a request unanswered this long counts as failed
    processes: int = 1  # local Locust processes; above 1: a master and N workers
    cpus: str = ""  # empty: every core the server does not use
    remote_workers: int = 0  # workers on other machines (`harness worker --master-host ...`)
    master_bind_host: str = "127.0.0.1"  # 0.0.0.0 (or an address) to let remote workers in
    master_port: int = 0  # 0: a free port, or LOCUST_MASTER_PORT when remote workers are expected
    # several models in one server: the share of requests each gets, "ranker:70,mlp:30";
    # empty: the one model, or an even split over the experiment's [[models]]
    traffic: str = ""

    @property
    def distributed(self) -> bool:
        """Locust as a master and workers (several local processes, or remote workers)."""
        return self.processes > 1 or self.remote_workers > 0

    @property
    def workers(self) -> int:
        return self.processes + self.remote_workers if self.distributed else 1

    def check(self, src: str = "load settings") -> LoadConfig:
        from harness.config.validate import check_load

        check_load(src, self)
        return self


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
    # max_batch_size, batch_timeout_micros and max_enqueued_batches searched for each of these
    # models (its batching_params.pbtxt, --enable_per_model_batching_parameters); num_batch_threads
    # stays one value, for the pool every model shares. In a file, true means every served model
    per_model_batching: tuple[str, ...] = ()


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
    # "cpu" | "gpu": also run the batching guide's procedure and state the gain over it
    # (harness.tuning.guide_procedure); empty: not run
    guide_procedure: str = ""
    # where deploy/'s docker run and Compose files publish the ports: every interface, as TF
    # Serving's tutorials do; 127.0.0.1 keeps the deployed server on its machine
    deploy_host: str = "0.0.0.0"
    top_k: int = 3
    repeats: int = 3


@dataclasses.dataclass(frozen=True, kw_only=True)
class Experiment:
    model: ModelConfig = ModelConfig()
    # several models in one server ([[models]] tables): the first is also ``model``
    models: tuple[ModelConfig, ...] = ()
    server: ServerConfig = ServerConfig()
    load: LoadConfig = LoadConfig()
    slo: SloConfig = SloConfig()
    search: SearchConfig = SearchConfig()
    study: StudyConfig = StudyConfig()
    source: str = "<defaults>"

    @property
    def served_models(self) -> tuple[ModelConfig, ...]:
        """Every model the server serves: ``models``, or the one ``model``."""
        return self.models or (self.model,)

    @property
    def multi_model(self) -> bool:
        return len(self.served_models) > 1

    def traffic(self) -> str:
        """``load.traffic``, or with several models and none given, an even split over them;
        empty for one model and no split."""
        if self.load.traffic or not self.multi_model:
            return self.load.traffic
        return ",".join(f"{m.served_name}:1" for m in self.served_models)

    def check(self) -> Experiment:
        from harness.config.validate import check_experiment

        check_experiment(self)
        return self
