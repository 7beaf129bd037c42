"""Start ``harness serve`` on the native request path, or say why it cannot.

Which path runs: ``HARNESS_REFSERVER_IMPL=native`` (refuses to start without the binary),
``python`` (the pure-Python server), or unset / ``auto``: native when it is built, Python with
one line saying so when it is not. Flags and files are read and checked here, by the code the
Python server uses, so refusals keep their messages; the binary receives the resolved settings
as one JSON document and never parses a TF Serving file itself.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import sys
from pathlib import Path

from harness.errors import ConfigError, ServerError

log = logging.getLogger("harness.refserver")
ENV = "HARNESS_REFSERVER_IMPL"
BINARY_ENV = "HARNESS_REFSERVER_NATIVE_BIN"
BINARY_NAME = "harness-refserver-native"
# Set by the fork server in a child it forks while a standby waits: the pipe to send the
# native command down instead of exec'ing it (``standby.py``).
HANDOFF_ENV = "HARNESS_REFSERVER_HANDOFF_FD"
HERE = Path(__file__).resolve().parent


def binary() -> Path | None:
    """The built server: $HARNESS_REFSERVER_NATIVE_BIN, else the in-tree build."""
    given = os.environ.get(BINARY_ENV)
    if given:
        return Path(given) if os.access(given, os.X_OK) else None
    path = HERE / "build" / BINARY_NAME
    return path if os.access(path, os.X_OK) else None


def choose() -> str:
    """``native`` or ``python``, from $HARNESS_REFSERVER_IMPL and whether the binary is built."""
    want = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if want not in ("auto", "native", "python"):
        raise ConfigError(f"{ENV}={want!r} is not one of auto, native, python")
    if want == "python":
        release_handoff()
        return "python"
    if binary() is None:
        if want == "native":
            raise ServerError(
                f"{ENV}=native but {BINARY_NAME} is not built",
                hint="run bash scripts/build-native.sh, or unset the variable",
            )
        release_handoff()
        return "python"
    return "native"


def preload() -> None:
    """Import what ``resolve`` imports (the model manager, and with it numpy): what a fork
    server does once, so that each start it forks checks its flags in milliseconds."""
    import harness.refserver.manager  # noqa: F401


def tensorflow_libdir() -> str:
    """Where libtensorflow_cc.so.2 lives, found without importing TensorFlow."""
    spec = importlib.util.find_spec("tensorflow")
    if spec is None or not spec.submodule_search_locations:
        raise ServerError(
            "TensorFlow is not installed in this Python environment",
            hint="the native server opens the wheel's C API; run bash scripts/bootstrap.sh",
        )
    return list(spec.submodule_search_locations)[0]


def resolve(args) -> dict:
    """The settings the native server runs with, every file read and checked."""
    from harness.refserver import server

    server.check_flags(args)
    cores = args._cores
    models = [
        {
            "name": c.name,
            "base_path": c.base_path,
            "policy": c.policy,
            "versions": list(c.versions),
            "labels": [list(kv) for kv in c.labels],
        }
        for c in server.model_configs(args)
    ]
    batching = server.batching_from_flags(args)
    intra, inter = server.op_parallelism(args)
    return {
        "cores": cores,
        "port": args.port,
        "rest_api_port": args.rest_api_port,
        "bind_address": args.bind_address,
        "rest_api_timeout_in_ms": args.rest_api_timeout_in_ms,
        "rest_api_max_request_bytes": args.rest_api_max_request_bytes,
        # one event loop per core: a loop never blocks on a batch, only on an unbatched run
        "rest_threads": args.rest_api_num_threads or max(cores, 1),
        "grpc_threads": args.grpc_max_threads or cores,
        "metrics_path": server.monitoring_path(args) or "",
        "models": models,
        "batching": None if batching is None else _batching(*batching),
        "intra_op": intra,
        "inter_op": inter,
        "poll_seconds": args.file_system_poll_wait_seconds,
        "warm_up": bool(args.enable_model_warmup),
        # per-model batching: the binary runs this on each version directory it loads, and it
        # prints the version's queue options (model_batching.py reads the file, as for Python)
        "per_model_batching": batching is not None
        and bool(args.enable_per_model_batching_parameters),
        "batching_resolver": [sys.executable, "-m", "harness.refserver.model_batching"],
    }


def _batching(params, eff) -> dict:
    """The batch scheduler's settings as the native server reads them."""
    return {
        "max_batch_size": eff.max_batch_size,
        "batch_timeout_micros": eff.batch_timeout_micros,
        "max_enqueued_batches": eff.max_enqueued_batches,
        "num_batch_threads": eff.num_batch_threads,
        "allowed_batch_sizes": list(eff.allowed_batch_sizes),
        "pad_variable_length_inputs": bool(eff.pad_variable_length_inputs),
        "enable_large_batch_splitting": bool(eff.enable_large_batch_splitting),
        "max_execution_batch_size": eff.max_execution_batch_size,
        "thread_pool_name": params.thread_pool_name or "",
    }


def environment(base=None) -> dict:
    """The native server's environment: ours (or ``base``) and where TensorFlow's library is."""
    env = dict(os.environ if base is None else base)
    env.pop(HANDOFF_ENV, None)
    env["HARNESS_TF_LIBDIR"] = tensorflow_libdir()
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def command(args) -> tuple[list[str], dict]:
    """The native server's argv and environment for parsed ``harness serve`` flags."""
    path = binary()
    if path is None:
        raise ServerError(f"{BINARY_NAME} is not built", hint="run bash scripts/build-native.sh")
    config = json.dumps(resolve(args), separators=(",", ":"))
    return [str(path), f"--config={config}"], environment()


def exec_server(args) -> None:
    """Replace this process with the native server (same pid: signals and exit codes reach it);
    under the fork server with a standby ready, hand the command to it instead and exit (the
    fork server then reports the standby's pid: ``standby.py``)."""
    argv, env = command(args)
    log.info("Request path: native (%s)", argv[0])
    for handler in logging.getLogger().handlers:
        handler.flush()
    fd = _handoff_fd()
    if fd is not None:
        data = json.dumps({"argv": argv, "env": env}).encode() + b"\n"
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os._exit(0)
    os.execve(argv[0], argv, env)


def _handoff_fd() -> int | None:
    """The pipe to the fork server a standby waits behind, when there is one (and forget it)."""
    value = os.environ.pop(HANDOFF_ENV, "")
    return int(value) if value.isdigit() else None


def release_handoff() -> None:
    """This process serves by itself (the Python path): close the pipe so that the fork server
    stops waiting for a command and reports this process as the server."""
    fd = _handoff_fd()
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)
