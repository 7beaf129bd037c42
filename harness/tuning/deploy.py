"""A result to deploy: the winning config, written the way TF Serving's production tutorials run it.

The winner step calls ``write`` next to ``best_batching_parameters.txt``; ``deploy/`` then holds

- ``batching_parameters.txt`` and ``monitoring.config``: the files the server reads;
- ``docker-run.sh``: one ``docker run`` (TF Serving's Docker tutorial, g3doc/docker.md);
- ``docker-compose.yml``: the same service with a restart policy and log rotation;
- ``kubernetes.yaml``: a ConfigMap holding the two files, a Deployment running the same image
  and flags with the measured trial's CPUs and memory as its resources, and a Service
  (serving_kubernetes.md's Deployment and Service, with the config in a ConfigMap).

Every form runs the image through its stock contract, as the Docker backend does: ``MODEL_NAME``
in the environment, the model at ``/models/<name>``, ports 8500 (gRPC) and 8501 (REST), the
trial's TF Serving flags as the container's arguments (the same ``ServerSpec.server_flags``).
Ports are published on the experiment's ``study.deploy_host`` (``harness tune --deploy-host``):
every interface by default, as the tutorials publish them (see docs/deploy.md); ``127.0.0.1``
keeps the server on the machine.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from pathlib import Path

import yaml

from harness import config, tfs_formats
from harness.atomic import write_text
from harness.batching import schedulable_cores
from harness.config import BackendKind, Experiment
from harness.cpus import default_cpus, parse_cpus
from harness.endpoint import METRICS_PATH
from harness.servers.base import ServerSpec
from harness.servers.docker import is_gpu_image
from harness.servers.docker_common import GRPC_PORT, MODELS_DIR, REST_PORT
from harness.servers.staging import PER_MODEL_FILE, ServedModel
from harness.tuning.space import TrialConfig

DEFAULT_IMAGE = "tensorflow/serving:latest"  # when the study did not measure an image
CONFIG_DIR = "/config"  # where the batching and monitoring files are mounted in the container
BATCHING_FILE, MONITORING_FILE = "batching_parameters.txt", "monitoring.config"
MODELS_FILE = "models.config"  # several models: the --model_config_file
PER_MODEL_DIR = "best_batching_params"  # per-model winner: <model>/batching_params.pbtxt


def write_per_model(out: Path, cfg: TrialConfig, dirname: str = PER_MODEL_DIR) -> list[Path]:
    """A per-model winner's files beside the global one: ``<model>/batching_params.pbtxt``
    (under ``dirname``), each to be copied into that model's version directory, where
    ``--enable_per_model_batching_parameters`` makes TF Serving read it."""
    written = []
    for name, params in cfg.per_model:
        path = Path(out) / dirname / name / PER_MODEL_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        written.append(write_text(path, params.to_text()))
    return written
MEMORY_HEADROOM = 1.5  # a measured peak is not a limit: room for larger requests and growth


def write(
    out: Path,
    winner: dict,
    *,
    dest: Path | None = None,
    host: str | None = None,
    ports: tuple[int, int] = (GRPC_PORT, REST_PORT),
    image: str = "",
) -> Path | None:
    """Write ``deploy/`` for the study in ``out`` (its experiment.toml) and its ``winner`` (a
    summary row: ``trial`` and ``config``); returns the folder. ``dest``: another folder;
    ``host``, ``ports``: where the host publishes gRPC and REST (``host`` by default: the
    experiment's ``study.deploy_host``); ``image``: instead of the
    study's. A study folder without its experiment.toml (a winner step driven by hand) gets
    nothing: None."""
    cfg = TrialConfig.from_dict(winner["config"])
    write_per_model(Path(out), cfg)
    if not (Path(out) / "experiment.toml").is_file():
        return None
    exp = config.load(Path(out) / "experiment.toml")
    host = exp.study.deploy_host if host is None else host
    plan = Plan(exp, cfg, image=image)
    plan.memory_mb = plan.memory_mb or _measured_memory(Path(out), winner.get("trial"))
    folder = Path(dest) if dest is not None else Path(out) / "deploy"
    folder.mkdir(parents=True, exist_ok=True)
    if plan.batching_text:
        write_text(folder / BATCHING_FILE, plan.batching_text)
    if plan.models_text:
        write_text(folder / MODELS_FILE, plan.models_text)
    write_per_model(folder, cfg, dirname="")
    write_text(folder / MONITORING_FILE, plan.monitoring_text)
    write_text(folder / "docker-run.sh", docker_run(plan, host, ports))
    (folder / "docker-run.sh").chmod(0o755)
    write_text(folder / "docker-compose.yml", compose(plan, host, ports))
    write_text(folder / "kubernetes.yaml", kubernetes(plan))
    return folder


class Plan:
    """What every form says: the image, the model, the flags, the resources."""

    def __init__(self, exp: Experiment, cfg: TrialConfig, *, image: str = "") -> None:
        s = exp.server
        self.study_image = s.image if s.backend == BackendKind.DOCKER else ""
        self.image = image or self.study_image or DEFAULT_IMAGE
        self.gpus = is_gpu_image(self.image) or (s.gpus and self.image == self.study_image)
        self.models = [_model(m) for m in exp.served_models]  # [(name, base path)]
        self.model_name, self.model_dir = self.models[0]
        self.name = _dns_name(f"{self.model_name}-serving")
        several = len(self.models) > 1 or bool(cfg.per_model)
        spec = ServerSpec(
            model_name=self.model_name,
            model_dir=self.model_dir,
            batching=cfg.batching,
            intra_op_parallelism=cfg.intra_op_parallelism,
            inter_op_parallelism=cfg.inter_op_parallelism,
            extra_flags=s.extra_flags,
            models=tuple(
                ServedModel(name=n, base_path=p, batching=cfg.model_batching(n))
                for n, p in self.models
            )
            if several
            else (),
        )
        batching = f"{CONFIG_DIR}/{BATCHING_FILE}" if cfg.batching is not None else None
        self.flags = spec.server_flags(batching, f"{CONFIG_DIR}/{MONITORING_FILE}")
        self.models_text = ""
        if several:  # the entrypoint's --model_name/--model_base_path give way to the file
            listed = [(n, f"{MODELS_DIR}/{n}") for n, _ in self.models]
            self.models_text = tfs_formats.to_text(tfs_formats.model_config_list(listed))
            self.flags.insert(0, f"--model_config_file={CONFIG_DIR}/{MODELS_FILE}")
        self.per_model = [n for n, _ in cfg.per_model]
        self.batching_text = cfg.batching.to_text() if cfg.batching is not None else ""
        self.monitoring_text = tfs_formats.to_text(tfs_formats.monitoring_config(METRICS_PATH))
        cpus, _ = default_cpus(parse_cpus(s.cpus), parse_cpus(exp.load.cpus))
        self.cpus = len(cpus) if cpus else schedulable_cores()  # what the trial's server had
        self.memory_mb = _memory_mb(s.memory) if s.memory else None
        self.measured_on = self.study_image or (
            "the reference server" if s.binary == "reference" else f"binary {s.binary}"
        )

    @property
    def config_files(self) -> list[str]:
        files = [BATCHING_FILE] if self.batching_text else []
        return files + ([MODELS_FILE] if self.models_text else []) + [MONITORING_FILE]

    def header(self) -> str:
        note = "" if self.image == self.study_image else f" (the study measured {self.measured_on})"
        text = (
            f"# The winning batching config of a tfs-harness study, served by {self.image}{note}.\n"
            f"# {self.cpus} CPU(s) and {self.memory_mb} MiB, as the measured trial had. docs/deploy.md\n"
        )
        if self.per_model:  # a file inside a read-only model mount cannot be mounted over
            text += (
                f"# Per-model batching: first copy <model>/{PER_MODEL_FILE} from beside this file\n"
                f"# into that model's version directory ({', '.join(self.per_model)}).\n"
            )
        return text

    def model_mounts(self) -> list[tuple[str, str]]:
        """(host base path, container path) of every served model."""
        return [(str(path), f"{MODELS_DIR}/{name}") for name, path in self.models]


def docker_run(plan: Plan, host: str, ports: tuple[int, int]) -> str:
    """One ``docker run``: the config files beside this script, the model from the study."""
    q = shlex.quote
    mounts = [f"-v {q(f'{src}:{dst}:ro')}" for src, dst in plan.model_mounts()] + [
        f'-v "$here/{f}:{CONFIG_DIR}/{f}:ro"' for f in plan.config_files
    ]
    lines = [
        f"--name {q(plan.name)} --restart unless-stopped",
        "--log-driver json-file --log-opt max-size=10m --log-opt max-file=3",
        f"-p {q(f'{host}:{ports[0]}:{GRPC_PORT}')} -p {q(f'{host}:{ports[1]}:{REST_PORT}')}",
        f"--cpus {plan.cpus} --memory {plan.memory_mb}m" + (" --gpus all" if plan.gpus else ""),
        *mounts,
        f"-e MODEL_NAME={q(plan.model_name)} {q(plan.image)}",
        " ".join(q(f) for f in plan.flags),
    ]
    body = " \\\n  ".join(lines)
    return f'#!/bin/sh\n{plan.header()}set -e\nhere=$(cd "$(dirname "$0")" && pwd)\nexec docker run -d {body}\n'


def compose(plan: Plan, host: str, ports: tuple[int, int]) -> str:
    service = {
        "image": plan.image,
        "command": plan.flags,
        "environment": {"MODEL_NAME": plan.model_name},
        "ports": [f"{host}:{ports[0]}:{GRPC_PORT}", f"{host}:{ports[1]}:{REST_PORT}"],
        "volumes": [f"{src}:{dst}:ro" for src, dst in plan.model_mounts()]
        + [f"./{f}:{CONFIG_DIR}/{f}:ro" for f in plan.config_files],
        "cpus": plan.cpus,
        "mem_limit": f"{plan.memory_mb}m",
        "restart": "unless-stopped",
        "logging": {"driver": "json-file", "options": {"max-size": "10m", "max-file": "3"}},
    }
    if plan.gpus:
        gpu = {"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}
        service["deploy"] = {"resources": {"reservations": {"devices": [gpu]}}}
    doc = {"services": {plan.name: service}}
    return plan.header() + _yaml(doc)


def kubernetes(plan: Plan) -> str:
    """A ConfigMap with the config files, a Deployment, a Service, as one multi-document YAML."""
    files = {
        BATCHING_FILE: plan.batching_text,
        MODELS_FILE: plan.models_text,
        MONITORING_FILE: plan.monitoring_text,
    }
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"{plan.name}-config"},
        "data": {f: files[f] for f in plan.config_files},
    }
    docs = [config_map, _deployment(plan), _service(plan)]
    model_note = (
        "# The model comes from a hostPath at the study's path: point the `model` volume at where\n"
        "# the model lives in your cluster (a PersistentVolumeClaim, or an image with the model in\n"
        "# it, as serving_kubernetes.md builds one).\n"
    )
    return plan.header() + model_note + "---\n".join(_yaml(d) for d in docs)


def _deployment(plan: Plan) -> dict:
    resources = {"cpu": str(plan.cpus), "memory": f"{plan.memory_mb}Mi"}
    limits = {**resources, **({"nvidia.com/gpu": 1} if plan.gpus else {})}
    container = {
        "name": "tensorflow-serving",
        "image": plan.image,
        "args": plan.flags,
        "env": [{"name": "MODEL_NAME", "value": plan.model_name}],
        "ports": [
            {"name": "grpc", "containerPort": GRPC_PORT},
            {"name": "rest", "containerPort": REST_PORT},
        ],
        "resources": {"requests": resources, "limits": limits},  # requests = limits: Guaranteed
        "readinessProbe": {
            "httpGet": {"path": f"/v1/models/{plan.model_name}", "port": REST_PORT},
            "periodSeconds": 5,
        },
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            *(
                {"name": _volume(i), "mountPath": dst, "readOnly": True}
                for i, (_, dst) in enumerate(plan.model_mounts())
            ),
        ],
    }
    labels = {"app": plan.name}
    scrape = {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(REST_PORT),
        "prometheus.io/path": METRICS_PATH,
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": plan.name, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels, "annotations": scrape},
                "spec": {
                    "containers": [container],
                    "volumes": [
                        {"name": "config", "configMap": {"name": f"{plan.name}-config"}},
                        *(
                            {"name": _volume(i), "hostPath": {"path": src, "type": "Directory"}}
                            for i, (src, _) in enumerate(plan.model_mounts())
                        ),
                    ],
                },
            },
        },
    }


def _service(plan: Plan) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": plan.name},
        "spec": {
            "selector": {"app": plan.name},
            "ports": [
                {"name": "grpc", "port": GRPC_PORT, "targetPort": GRPC_PORT},
                {"name": "rest", "port": REST_PORT, "targetPort": REST_PORT},
            ],
        },
    }


def _yaml(doc: dict) -> str:
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=100)


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the files in the ConfigMap) as literal blocks, readable as written;
    a value used twice (the app label) written twice, not as an anchor and an alias."""

    def ignore_aliases(self, data) -> bool:
        return True


def _str(dumper, value: str):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def _volume(i: int) -> str:
    """The Kubernetes volume of the i-th model: ``model`` (one model), ``model-2``, ..."""
    return "model" if i == 0 else f"model-{i + 1}"


def _model(m: config.ModelConfig) -> tuple[str, Path]:
    """A model's served name and its base path on this machine (absolute, for the mounts)."""
    path = Path(m.path) if m.path else Path("models") / m.demo
    return m.name or (m.demo or path.name), path.resolve()


def _memory_mb(text: str) -> int:
    """Docker's memory syntax ("512m", "8g", "1073741824") in MiB, rounded up."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([bkmg]?)b?\s*", text.lower())
    if not match:
        return 0
    scale = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30}[match.group(2)]
    return math.ceil(float(match.group(1)) * scale / 2**20)


def _measured_memory(out: Path, trial) -> int:
    """The winning trial's peak memory with headroom, in MiB (256 when it was not measured)."""
    try:
        m = json.loads((out / "trials" / f"{int(trial):04d}" / "measurement.json").read_text())
        peak = float(m.get("server_peak_memory_mb") or 0)
    except (OSError, ValueError, TypeError):
        peak = 0.0
    return max(256, int(math.ceil(peak * MEMORY_HEADROOM / 64.0)) * 64)


def _dns_name(text: str) -> str:
    """A Kubernetes object name (RFC 1123: lower case letters, digits and '-', 63 at most)."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return name[:63].rstrip("-") or "tensorflow-serving"
