"""``tensorflow_model_server``'s command line, served by the reference server.

Flags keep TF Serving's names, spellings and defaults (``--port=8500``, ``--rest_api_port=0``,
``--enable_batching``, ...), so a backend can start either binary with the same arguments.
Additions of our own are marked as such in their help.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import threading
from concurrent import futures
from typing import TYPE_CHECKING

from harness import tfs_formats
from harness.batching import BatchingParameters, EffectiveBatching, schedulable_cores
from harness.errors import ConfigError, HarnessError, ServerError

if TYPE_CHECKING:  # the manager imports numpy: not for ``harness serve --help``
    from harness.refserver.manager import ModelConfig

log = logging.getLogger("harness.refserver")
DEFAULT_METRICS_PATH = "/monitoring/prometheus/metrics"


def _bool(value: str) -> bool:
    low = str(value).lower()
    if low in ("1", "true", "t", "yes"):
        return True
    if low in ("0", "false", "f", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def build_parser() -> argparse.ArgumentParser:
    cores = schedulable_cores()
    p = argparse.ArgumentParser(
        prog="harness serve",
        description="Reference TensorFlow Serving model server (TF Serving's flags and API).",
    )
    a = p.add_argument
    a("--port", type=int, default=8500, help="gRPC port (default 8500)")
    a("--rest_api_port", type=int, default=0, help="REST port; 0 turns REST off (default 0)")
    a(
        "--rest_api_num_threads",
        type=int,
        default=0,
        help="threads running REST requests; 0: max(4 x cores, 64). TF's default is 4 x cores; more here "
        "because each waiting request holds a thread",
    )
    a("--rest_api_timeout_in_ms", type=int, default=30000)
    a(
        "--grpc_max_threads",
        type=int,
        default=0,
        help="threads handling gRPC requests; 0: max(4 x cores, 256), as each waiting request holds one",
    )
    a("--enable_batching", type=_bool, nargs="?", const=True, default=False)
    a("--batching_parameters_file", default="")
    a(
        "--enable_per_model_batching_parameters",
        type=_bool,
        nargs="?",
        const=True,
        default=False,
        help="with --enable_batching: each model version's queue options from batching_params.pbtxt "
        "in its version directory (unbatched without one); the thread pool stays the global file's",
    )
    a("--model_name", default="default")
    a("--model_base_path", default="")
    a("--model_config_file", default="")
    a("--monitoring_config_file", default="")
    a("--file_system_poll_wait_seconds", type=int, default=1)
    a("--tensorflow_session_parallelism", type=int, default=0)
    a("--tensorflow_intra_op_parallelism", type=int, default=0)
    a("--tensorflow_inter_op_parallelism", type=int, default=0)
    a("--enable_model_warmup", type=_bool, nargs="?", const=True, default=True)
    a(
        "--bind_address",
        default=os.environ.get("HARNESS_REFSERVER_BIND_ADDRESS", "127.0.0.1"),
        help="(reference server only) address to listen on; TF Serving uses 0.0.0.0, we default to "
        "loopback; containers pass 0.0.0.0",
    )
    a(
        "--rest_api_max_request_bytes",
        type=int,
        default=256 << 20,
        help="(reference server only) larger REST bodies get HTTP 413",
    )
    p.set_defaults(_cores=cores)
    return p


def model_configs(args) -> list[ModelConfig]:
    from harness.refserver.manager import ModelConfig

    # With a config file, TF Serving serves what it lists and ignores --model_name and
    # --model_base_path: the stock image's entrypoint always passes both, so
    # `docker run tensorflow/serving --model_config_file=...` serves the file's models.
    if args.model_config_file:
        return read_model_config_file(args.model_config_file)
    if not args.model_base_path:
        raise ConfigError(
            "no model to serve",
            hint="give --model_base_path=DIR (the directory holding version directories) or --model_config_file",
        )
    return [ModelConfig(name=args.model_name, base_path=args.model_base_path)]


def read_model_config_file(path: str) -> list[ModelConfig]:
    """The models a ``--model_config_file`` lists, refused where TF Serving refuses them."""
    return model_configs_from_message(tfs_formats.read(path, tfs_formats.ModelServerConfig), path)


def model_configs_from_message(msg, path: str) -> list[ModelConfig]:
    """ModelConfigs from a ``tensorflow.serving.ModelServerConfig``, with TF Serving's start-up
    checks (server_core.cc) and its wording; ``path`` names the file in every error."""
    if msg.HasField("custom_model_config"):
        raise ConfigError(
            f"{path}: ModelServer does not yet support custom model config.",
            hint="list the models in model_config_list { config { ... } }",
        )
    out = [_model_config(cfg, path) for cfg in msg.model_config_list.config]
    if not out:
        raise ConfigError(
            f"{path}: model_config_list has no config entries",
            hint='add model_config_list { config { name: "m" base_path: "/models/m" '
            'model_platform: "tensorflow" } }',
        )
    seen: set[str] = set()
    for cfg in out:
        if cfg.name in seen:
            raise ConfigError(
                f"{path}: Illegal to list model {cfg.name} multiple times in config list",
                hint="give each model's config once",
            )
        seen.add(cfg.name)
    return out


def _model_config(cfg, path: str) -> ModelConfig:
    """One ``ModelConfig`` message as the manager's dataclass."""
    from harness.refserver.manager import ModelConfig

    name = cfg.name
    if not name or not cfg.base_path:
        raise ConfigError(
            f"{path}: every config needs a name and a base_path",
            hint='give each config name: "m" and base_path: "/models/m"',
        )
    if "://" not in cfg.base_path and not cfg.base_path.startswith("/"):
        raise ConfigError(
            f"{path}: Expected model {name} to have an absolute path or URI; "
            f"got base_path()={cfg.base_path}",
            hint="give base_path as an absolute directory",
        )
    platform = _platform(cfg, path)
    if platform != "tensorflow":
        raise ConfigError(
            f"{path}: Model {name} requests unsupported platform {platform}",
            hint='the reference server serves model_platform: "tensorflow" only',
        )
    if cfg.HasField("logging_config"):  # declared by TF Serving, not implemented here
        raise ConfigError(
            f"{path}: model {name} sets logging_config: the reference server does not log requests",
            hint="drop logging_config, or measure tensorflow_model_server instead",
        )
    policy = cfg.model_version_policy
    which = policy.WhichOneof("policy_choice")
    if which == "all":
        rule, versions = "all", ()
    elif which == "specific":
        rule, versions = "specific", tuple(policy.specific.versions)
    else:  # latest, also when no policy is given; 0 versions means 1, as TF Serving has it
        rule, versions = "latest", (max(policy.latest.num_versions, 1),)
    return ModelConfig(
        name=name,
        base_path=cfg.base_path,
        policy=rule,
        versions=versions,
        labels=tuple(sorted(cfg.version_labels.items())),
    )


def _platform(cfg, path: str) -> str:
    """The model's platform from model_platform or the deprecated model_type (GetPlatform)."""
    if cfg.model_type:
        log.warning(
            "Deprecated ModelServerConfig::model_type field used. "
            "Prefer ModelServerConfig::model_platform."
        )
        if cfg.model_platform:
            raise ConfigError(
                f"{path}: Illegal setting both ModelServerConfig::model_type (deprecated) and "
                f"ModelServerConfig::model_platform, model name is {cfg.name}",
                hint="drop model_type",
            )
        if cfg.model_type != tfs_formats.MODEL_TYPE_TENSORFLOW:
            raise ConfigError(
                f"{path}: ModelServerConfig::model_type choice {cfg.model_type} not supported.",
                hint='use model_platform: "tensorflow"',
            )
        return "tensorflow"
    if not cfg.model_platform:
        raise ConfigError(
            f"{path}: Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
            f"ModelServerConfig::model_platform, model name is {cfg.name}",
            hint='add model_platform: "tensorflow" to the config',
        )
    return cfg.model_platform


def read_monitoring_config(path: str) -> str | None:
    """The Prometheus path from a monitoring config file, or None when it is off."""
    prom = tfs_formats.read(path, tfs_formats.MonitoringConfig).prometheus_config
    if not prom.enable:
        return None
    return prom.path or DEFAULT_METRICS_PATH


def monitoring_path(args) -> str | None:
    """Where the Prometheus metrics are served, from ``--monitoring_config_file`` (None: off)."""
    if not args.monitoring_config_file:
        return None
    return read_monitoring_config(args.monitoring_config_file)


def batching_from_flags(args) -> tuple[BatchingParameters, EffectiveBatching] | None:
    """``--enable_batching``'s parameters (its file, or TF Serving's defaults) and the values the
    server runs with, checked as TF Serving checks them; None when batching is off."""
    if not args.enable_batching:
        return None
    params = (
        BatchingParameters.read(args.batching_parameters_file)
        if args.batching_parameters_file
        else BatchingParameters()
    )
    try:
        eff = params.effective(args._cores)
    except ConfigError as exc:
        where = args.batching_parameters_file or "default batching parameters"
        raise ConfigError(f"{where}: {exc.message}", hint=exc.hint) from None
    log.info("Batching enabled: %s", eff)
    return params, eff


def op_parallelism(args) -> tuple[int, int]:
    """TensorFlow's intra- and inter-op thread counts (``--tensorflow_session_parallelism``
    stands for both when the two are not given)."""
    session = args.tensorflow_session_parallelism
    return (
        args.tensorflow_intra_op_parallelism or session,
        args.tensorflow_inter_op_parallelism or session,
    )


def check_flags(args) -> None:
    if args.batching_parameters_file and not args.enable_batching:
        raise ConfigError(
            "--batching_parameters_file was given without --enable_batching",
            hint="add --enable_batching, or drop the parameters file",
        )
    if args.tensorflow_session_parallelism and (
        args.tensorflow_intra_op_parallelism or args.tensorflow_inter_op_parallelism
    ):
        raise ConfigError(
            "Either configure 'tensorflow_session_parallelism' or ('tensorflow_intra_op_parallelism', "
            "'tensorflow_inter_op_parallelism'). Setting all three is an error."
        )
    for flag in ("port", "rest_api_port"):
        v = getattr(args, flag)
        if not 0 <= v <= 65535:
            raise ConfigError(f"--{flag}={v} is not a port number (0 to 65535)")


class ModelServer:
    """The whole server: models, optional batcher, gRPC and REST front ends."""

    def __init__(self, args) -> None:
        from harness.refserver.manager import ModelManager
        from harness.refserver.metrics import ServingMetrics
        from harness.refserver.model_batching import FILE_NAME
        from harness.refserver.predict import Predictor

        check_flags(args)
        self.args = args
        self.metrics = ServingMetrics()
        self.metrics_path = monitoring_path(args)
        configs = model_configs(args)
        self.batcher = None
        batching = batching_from_flags(args)
        if batching is not None:
            from harness.refserver.batcher import Batcher

            params, eff = batching
            self.batcher = Batcher(eff, self.metrics, params.thread_pool_name or "")
            if args.enable_per_model_batching_parameters:
                log.info(
                    "Per-model batching parameters: each version's %s; the %d-thread pool is "
                    "shared by every model",
                    FILE_NAME,
                    eff.num_batch_threads,
                )
        intra, inter = op_parallelism(args)
        self.manager = ModelManager(
            configs,
            intra_op=intra,
            inter_op=inter,
            poll_seconds=args.file_system_poll_wait_seconds,
            batcher=self.batcher,
            metrics=self.metrics,
            warm_up=args.enable_model_warmup,
            batching=None if batching is None else batching[1],
            per_model_batching=args.enable_per_model_batching_parameters,
        )
        self.predictor = Predictor(self.manager, self.metrics, self.batcher)
        self._grpc = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped = threading.Event()

    def start_grpc(self) -> None:
        import grpc

        from harness.refserver.grpc_api import add_services

        cores = self.args._cores
        threads = self.args.grpc_max_threads or max(4 * cores, 256)
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="grpc"),
            options=[
                (
                    "grpc.so_reuseport",
                    0,
                ),  # a second server on the same port must fail, not share it
                ("grpc.max_receive_message_length", 2**31 - 1),
                ("grpc.max_send_message_length", 2**31 - 1),
            ],
        )
        add_services(server, self.predictor)
        bind = self.args.bind_address
        address = f"[{bind}]:{self.args.port}" if ":" in bind else f"{bind}:{self.args.port}"
        try:
            bound = server.add_insecure_port(address)
        except RuntimeError:
            bound = 0
        if not bound:
            raise ServerError(
                f"cannot listen for gRPC on {address}: the port is in use or the address is not local",
                hint="pick a free --port or stop the other server",
            )
        server.start()
        self._grpc = server
        shown = "0.0.0.0" if self.args.bind_address == "0.0.0.0" else self.args.bind_address
        log.info("Running gRPC ModelServer at %s:%d ...", shown, self.args.port)

    async def _serve_rest(self) -> None:
        from harness.refserver.rest import RestServer

        cores = self.args._cores
        rest = RestServer(
            self.predictor,
            num_threads=self.args.rest_api_num_threads or max(4 * cores, 64),
            timeout_ms=self.args.rest_api_timeout_in_ms,
            metrics_path=self.metrics_path,
            max_body_bytes=self.args.rest_api_max_request_bytes,
        )
        try:
            server = await asyncio.start_server(
                rest.serve_connection,
                self.args.bind_address,
                self.args.rest_api_port,
                limit=64 * 1024,
                backlog=1024,
            )
        except OSError as exc:
            raise ServerError(
                f"cannot listen for REST on {self.args.bind_address}:{self.args.rest_api_port}: {exc.strerror}",
                hint="pick a free --rest_api_port or stop the other server",
            ) from None
        log.info("Exporting HTTP/REST API at:localhost:%d ...", self.args.rest_api_port)
        async with server:
            await server.serve_forever()

    def run(self) -> None:
        """Load models, open the ports, serve until SIGINT/SIGTERM."""
        self.manager.load_initial()
        self.manager.start_polling()
        self.start_grpc()
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self._on_signal)
            except (NotImplementedError, RuntimeError):
                pass
        try:
            if self.args.rest_api_port:
                self._rest_task = loop.create_task(self._serve_rest())
                try:
                    loop.run_until_complete(self._rest_task)
                except asyncio.CancelledError:
                    pass
            else:
                loop.run_until_complete(self._wait_stop())
        finally:
            self.shutdown()

    async def _wait_stop(self) -> None:
        while not self._stopped.is_set():
            await asyncio.sleep(0.2)

    def _on_signal(self) -> None:
        log.info("Shutting down on signal")
        self._stopped.set()
        task = getattr(self, "_rest_task", None)
        if task is not None:
            task.cancel()

    def shutdown(self) -> None:
        if self._grpc is not None:
            self._grpc.stop(grace=1).wait(2)
        if self.batcher is not None:
            self.batcher.stop()
        self.manager.stop()


def preload() -> None:
    """Import everything a server needs (TensorFlow above all) without starting anything:
    what the fork server does once, so that each forked server starts in a fraction of the time."""
    import grpc  # noqa: F401
    import tensorflow  # noqa: F401

    import harness.refserver.batcher  # noqa: F401
    import harness.refserver.grpc_api  # noqa: F401
    import harness.refserver.manager  # noqa: F401
    import harness.refserver.model  # noqa: F401
    import harness.refserver.rest  # noqa: F401


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s.%(msecs)03d %(levelname).1s refserver] %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
        stream=sys.stderr,
    )
    args = build_parser().parse_args(argv)
    from harness.refserver.native import launch

    try:
        if launch.choose() == "native":
            launch.exec_server(args)  # returns only by raising
        why = (
            f"{launch.ENV}=python"
            if os.environ.get(launch.ENV, "").lower() == "python"
            else f"{launch.BINARY_NAME} is not built (bash scripts/build-native.sh)"
        )
        log.info("Request path: Python (%s)", why)
        ModelServer(args).run()
    except HarnessError as exc:
        log.error("%s", exc)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
