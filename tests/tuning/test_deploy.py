"""deploy/: the winning config as docker run, docker-compose and Kubernetes files.

The files are checked structurally (parsed, every flag one of TF Serving's, the ConfigMap's files
mounted where the flags point), then for real: a study with the Docker backend writes them, and
the compose file (published on 127.0.0.1) is started with Docker Compose against the test image,
which must serve with the winning batching.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from harness import config, tfs_flags, tfs_formats
from harness.atomic import write_json, write_text
from harness.batching import BatchingParameters
from harness.tuning import deploy
from harness.tuning.space import TrialConfig
from tests.conftest import ROOT

WINNING = BatchingParameters(
    max_batch_size=4, batch_timeout_micros=1000, num_batch_threads=1, max_enqueued_batches=16
)


def study_folder(tmp_path: Path, model: Path, server: dict, peak_mb: float | None = None) -> Path:
    """A study folder as the tuner leaves it: experiment.toml and the winner's measurement."""
    out = tmp_path / "study"
    exp = config.from_dict({"model": {"path": str(model), "name": "m"}, "server": server}, "t")
    write_text(out / "experiment.toml", config.to_toml(exp))
    write_json(out / "trials" / "0003" / "measurement.json", {"server_peak_memory_mb": peak_mb})
    return out


def winner(batching=WINNING) -> dict:
    return {"trial": 3, "config": TrialConfig(batching=batching).as_dict()}


def load_files(folder: Path) -> tuple[dict, list[dict], str]:
    compose = yaml.safe_load((folder / "docker-compose.yml").read_text())
    k8s = list(yaml.safe_load_all((folder / "kubernetes.yaml").read_text()))
    return compose, k8s, (folder / "docker-run.sh").read_text()


def test_the_three_forms_run_the_same_image_flags_and_files(tmp_path, mlp_base):
    server = {"backend": "docker", "image": "tensorflow/serving:2.14.1", "cpus": "0", "memory": "2g"}
    out = study_folder(tmp_path, mlp_base, server)
    folder = deploy.write(out, winner())
    assert folder == out / "deploy"
    assert BatchingParameters.read(folder / "batching_parameters.txt") == WINNING
    mon = tfs_formats.read(folder / "monitoring.config", tfs_formats.MonitoringConfig)
    assert mon.prometheus_config.enable and mon.prometheus_config.path == "/monitoring/prometheus/metrics"
    compose, (cm, dep, svc), run = load_files(folder)

    (name,) = compose["services"]
    s = compose["services"][name]
    flags = s["command"]
    assert tfs_flags.unknown(flags) == []
    assert "--enable_batching" in flags
    assert "--batching_parameters_file=/config/batching_parameters.txt" in flags
    assert "--monitoring_config_file=/config/monitoring.config" in flags
    assert s["image"] == "tensorflow/serving:2.14.1" and s["environment"] == {"MODEL_NAME": "m"}
    assert s["ports"] == ["0.0.0.0:8500:8500", "0.0.0.0:8501:8501"]  # the default: every interface
    assert f"{mlp_base}:/models/m:ro" in s["volumes"]
    assert "./batching_parameters.txt:/config/batching_parameters.txt:ro" in s["volumes"]
    assert s["restart"] == "unless-stopped"
    assert s["logging"] == {"driver": "json-file", "options": {"max-size": "10m", "max-file": "3"}}
    assert s["cpus"] == 1 and s["mem_limit"] == "2048m"  # the trial's core and memory limit

    assert [d["kind"] for d in (cm, dep, svc)] == ["ConfigMap", "Deployment", "Service"]
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["image"] == s["image"] and c["args"] == flags
    assert c["env"] == [{"name": "MODEL_NAME", "value": "m"}]
    want = {"cpu": "1", "memory": "2048Mi"}
    assert c["resources"] == {"requests": want, "limits": want}
    assert cm["data"] == {
        "batching_parameters.txt": (folder / "batching_parameters.txt").read_text(),
        "monitoring.config": (folder / "monitoring.config").read_text(),
    }
    # every file a flag names is in the ConfigMap, mounted where the flag points
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    (config_volume,) = [v["name"] for v in pod["volumes"] if "configMap" in v]
    assert {v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v} == {cm["metadata"]["name"]}
    for flag in flags:
        value = flag.partition("=")[2]
        if value.startswith("/config/"):
            assert os.path.dirname(value) == mounts[config_volume]
            assert os.path.basename(value) in cm["data"]
    assert mounts["model"] == "/models/m"
    assert dep["spec"]["selector"]["matchLabels"] == dep["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert {p["port"] for p in svc["spec"]["ports"]} == {8500, 8501}

    assert os.access(folder / "docker-run.sh", os.X_OK)
    subprocess.run(["sh", "-n", str(folder / "docker-run.sh")], check=True)
    assert "--restart unless-stopped" in run and "--log-opt max-size=10m" in run
    assert "-p 0.0.0.0:8500:8500 -p 0.0.0.0:8501:8501" in run and "--cpus 1 --memory 2048m" in run
    assert "tensorflow/serving:2.14.1 \\\n  " + " ".join(flags) in run


def test_a_gpu_image_asks_for_the_gpu_everywhere(tmp_path, mlp_base):
    out = study_folder(tmp_path, mlp_base, {"backend": "docker", "image": "tensorflow/serving:2.14.1-gpu"})
    compose, (_, dep, _), run = load_files(deploy.write(out, winner()))
    (s,) = compose["services"].values()
    assert s["deploy"]["resources"]["reservations"]["devices"] == [
        {"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}
    ]
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "--gpus all" in run


def test_a_study_on_the_reference_server_deploys_the_stock_image_with_measured_memory(
    tmp_path, mlp_base
):
    out = study_folder(tmp_path, mlp_base, {"binary": "reference", "cpus": "0"}, peak_mb=300.0)
    folder = deploy.write(out, {"trial": 3, "config": TrialConfig(batching=None).as_dict()})
    compose, (cm, dep, _), run = load_files(folder)
    (s,) = compose["services"].values()
    assert s["image"] == "tensorflow/serving:latest"
    assert s["mem_limit"] == "512m"  # 300 MiB measured, with headroom, in 64 MiB steps
    assert not any(f.startswith("--enable_batching") for f in s["command"])  # batching off won
    assert not (folder / "batching_parameters.txt").exists() and list(cm["data"]) == ["monitoring.config"]
    assert "the study measured the reference server" in run.splitlines()[1]


def test_a_study_folder_without_its_experiment_gets_no_deploy_folder(tmp_path):
    assert deploy.write(tmp_path, winner()) is None
    assert not (tmp_path / "deploy").exists()


# -- for real: a Docker study writes deploy/, and Docker Compose serves its winning batching ------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def predict(port: int, rows: int) -> tuple[int, dict]:
    body = json.dumps({"instances": [[0.1] * 16] * rows}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/models/m:predict", data=body)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def wait_available(port: int, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models/m", timeout=2) as r:
                if json.loads(r.read())["model_version_status"][0]["state"] == "AVAILABLE":
                    return
        except (OSError, ValueError, KeyError, IndexError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"the composed server was not AVAILABLE within {timeout:.0f}s")


DOCKER_STUDY = """
[model]
path = "{model}"
name = "m"
[server]
backend = "docker"
image = "{image}"
cpus = "0"
memory = "1g"
[load]
users = 4
request_sizes = "1"
warmup_s = 0.5
window_s = 1.0
min_windows = 2
max_windows = 2
extra_windows = 0
cpus = "1"
[slo]
p99_ms = 500
max_error_rate = 0.5
[search]
max_batch_size = [4]
batch_timeout_micros = [1000]
num_batch_threads = [1]
max_enqueued_batches = [16]
[study]
name = "d"
trials = 1
top_k = 1
repeats = 1
baselines = false
"""


def test_a_docker_study_writes_deploy_and_compose_serves_the_winning_batching(
    client,  # noqa: F811
    reference_image,  # noqa: F811
    compose_cli,
    mlp_base,
    tmp_path,
):
    exp = tmp_path / "exp.toml"
    exp.write_text(DOCKER_STUDY.format(model=mlp_base, image=reference_image))
    r = subprocess.run(
        [sys.executable, "-m", "harness.cli", "tune", "--experiment", str(exp), "--results-dir",
         str(tmp_path / "res"), "--no-report"],
        capture_output=True, text=True, timeout=400, cwd=ROOT,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    study = tmp_path / "res" / "d"
    summary = json.loads((study / "summary.json").read_text())
    won = TrialConfig.from_dict(summary["winner"]["config"]).batching
    assert won.max_batch_size == 4
    compose, _, _ = load_files(study / "deploy")  # the winner step wrote it, with the defaults
    (s,) = compose["services"].values()
    assert s["image"] == reference_image and s["ports"][0] == "0.0.0.0:8500:8500"
    assert (study / "deploy" / "batching_parameters.txt").read_text() == (
        study / "best_batching_parameters.txt"
    ).read_text()
    env = json.loads((study / "environment.json").read_text())
    assert env["server"]["name"].startswith(f"{reference_image} (TensorFlow ModelServer: ")

    # the same winner, published on loopback only, run by Docker Compose
    grpc_port, rest_port = free_port(), free_port()
    local = deploy.write(
        study, summary["winner"], dest=tmp_path / "local", host="127.0.0.1", ports=(grpc_port, rest_port)
    )
    project = f"tfsh-deploy-{os.getpid()}"
    cmd = [compose_cli, "-p", project, "-f", str(local / "docker-compose.yml")]
    up = subprocess.run([*cmd, "up", "-d"], capture_output=True, text=True, timeout=180)
    try:
        assert up.returncode == 0, up.stderr
        wait_available(rest_port)
        code, body = predict(rest_port, won.max_batch_size + 1)
        assert code == 400
        assert body["error"] == "Task size 5 is larger than maximum input batch size 4"
        code, body = predict(rest_port, won.max_batch_size - 1)
        assert code == 200 and len(body["predictions"]) == 3
        (c,) = client.containers.list(filters={"label": f"com.docker.compose.project={project}"})
        host = c.attrs["HostConfig"]
        assert host["RestartPolicy"]["Name"] == "unless-stopped"
        assert host["LogConfig"] == {"Type": "json-file", "Config": {"max-file": "3", "max-size": "10m"}}
        assert host["NanoCpus"] == 10**9 and host["Memory"] == 2**30
        ports = c.attrs["NetworkSettings"]["Ports"]
        assert {b["HostIp"] for p in ports.values() for b in p} == {"127.0.0.1"}
    finally:
        down = subprocess.run([*cmd, "down"], capture_output=True, text=True, timeout=120)
    assert down.returncode == 0, down.stderr
    assert client.containers.list(all=True, filters={"label": f"com.docker.compose.project={project}"}) == []
