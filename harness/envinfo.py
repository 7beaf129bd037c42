"""What a measurement ran on: machine, software and server, as plain values for environment.json.

Standard library only (package versions come from installed metadata, not from importing the
packages), so recording it costs milliseconds and a report can show it without TensorFlow.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from harness.config import BackendKind

PACKAGES = ("tfs-harness", "tensorflow", "tensorflow-serving-api", "grpcio", "locust", "optuna")


def cpu_info() -> dict:
    model, flags = "", []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and not model:
                model = value.strip()
            elif key == "flags" and not flags:
                flags = value.split()
    except OSError:
        model = platform.processor()
    wanted = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "amx_tile")
    return {
        "model": model or "unknown",
        "logical_cpus": os.cpu_count(),
        "schedulable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "simd_flags": [f for f in wanted if f in flags],
    }


def memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def versions() -> dict:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit(root: Path | None = None) -> str | None:
    root = root or Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def server_name(server_cfg, backend=None) -> str:
    """The server measured, as a report prints it: "the reference server (native path,
    tfs-harness X, TensorFlow Y)", "<image> (<its tensorflow_model_server --version>)", or
    "<binary path> (<its --version>)". The backend knows (``describe()``); without one, what
    the settings say."""
    describe = getattr(backend, "describe", None)
    if describe is not None:
        try:
            return describe()
        except Exception as exc:  # the engine or the binary may be gone; the report says so
            detail = f"version unknown: {type(exc).__name__}"
    else:
        detail = "version unknown"
    if server_cfg.backend == BackendKind.DOCKER:
        return f"{server_cfg.image} ({detail})"
    if server_cfg.backend == BackendKind.PROCESS:
        return f"{server_cfg.binary} ({detail})"
    return f"the server at {server_cfg.rest_url} (external; {detail})"


def server_info(server_cfg, backend=None) -> dict:
    """The server as the user named it, plus what could be learned without starting it."""
    info = {"backend": server_cfg.backend, "name": server_name(server_cfg, backend)}
    if server_cfg.backend == BackendKind.DOCKER:
        info["image"] = server_cfg.image
        client = getattr(backend, "client", None)
        if client is not None:
            try:
                image = client.images.get(server_cfg.image)
                info["image_id"] = image.id
                info["image_digests"] = image.attrs.get("RepoDigests") or []
            except Exception as exc:  # the engine may be gone; the report says so
                info["image_id"] = f"unknown ({type(exc).__name__})"
    elif server_cfg.backend == BackendKind.PROCESS:
        binary = server_cfg.binary
        info["binary"] = binary
        if binary == "reference":
            v = versions()
            info["version"] = (
                f"reference server (tfs-harness {v['tfs-harness']}, TensorFlow {v['tensorflow']})"
            )
        else:
            try:
                out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
                info["version"] = (out.stdout or out.stderr).strip().splitlines()[0]
            except (OSError, subprocess.TimeoutExpired, IndexError):
                info["version"] = "unknown"
    else:
        info["grpc_target"] = server_cfg.grpc_target
        info["rest_url"] = server_cfg.rest_url
    return info


def collect(exp=None, backend=None) -> dict:
    env = {
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "os": platform.platform(),
        "cpu": cpu_info(),
        "memory_gib": memory_gib(),
        "versions": versions(),
        "harness_commit": git_commit(),
    }
    if exp is not None:
        env["server"] = server_info(exp.server, backend)
        env["model"] = {
            "demo": exp.model.demo,
            "path": str(exp.model.path or ""),
            "name": exp.model.name,
            "signature": exp.model.signature,
        }
    return env
