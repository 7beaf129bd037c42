"""Run TF Serving images (CPU, CPU-optimised, GPU) or our reference image as containers.

The only module that imports the Docker SDK. Every container carries our labels, binds its ports
on 127.0.0.1 only (Docker picks free host ports, so runs can share a machine), gets the model
mounted read-only, and drops every capability. Containers left by a run that crashed are found
by label and removed when a backend starts.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import sys
import tarfile
import time
from pathlib import Path

from harness.errors import ServerError
from harness.procs import pid_alive
from harness.servers.base import (
    Endpoint,
    ServerHandle,
    ServerSpec,
    log_tail,
    wait_until_available,
    write_config_files,
)
from harness.servers.watchdog import Watchdog

LABEL = "org.tfs-harness.managed"
OWNER_LABEL = "org.tfs-harness.owner-pid"
HOST_LABEL = "org.tfs-harness.owner-host"
FLAVOR_LABEL = "org.tfs-harness.flavor"  # "reference" for images built by build_reference_image
MOUNTS_LABEL = "org.tfs-harness.host-mounts"  # ":"-separated host paths the image expects
REFERENCE_IMAGE = "tfs-harness/reference:latest"
GRPC_PORT, REST_PORT = 8500, 8501


def _docker():
    try:
        import docker
    except ImportError:
        raise ServerError("the Docker SDK is not installed", hint="pip install docker") from None
    return docker


def connect():
    """A Docker client, or a clear error when no engine answers."""
    docker = _docker()
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except docker.errors.DockerException as exc:
        where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        raise ServerError(
            f"cannot reach the Docker engine at {where}: {exc}",
            hint="start dockerd (or Docker Desktop), or point DOCKER_HOST at a running engine",
        ) from None
    return client


@dataclasses.dataclass(frozen=True, kw_only=True)
class DockerOptions:
    image: str = "tensorflow/serving:latest"
    gpus: bool = False  # request every GPU (needs the NVIDIA container runtime)
    allow_pull: bool = False  # pull a missing image instead of failing
    container_prefix: str = "tfs-harness"


class DockerServer(ServerHandle):
    def __init__(self, container, endpoint: Endpoint, workdir: Path) -> None:
        self.container = container
        self.endpoint = endpoint
        self.workdir = workdir
        self._final_logs: str | None = None
        self.watchdog: Watchdog | None = None  # armed once the model is AVAILABLE

    def logs(self) -> str:
        if self._final_logs is not None:
            return self._final_logs
        try:
            return self.container.logs().decode(errors="replace")
        except Exception:  # the container may be gone
            return ""

    def check_alive(self) -> None:
        docker = _docker()
        try:
            self.container.reload()
        except docker.errors.NotFound:
            raise ServerError(f"container {self.container.name} disappeared") from None
        state = self.container.attrs.get("State", {})
        if state.get("Status") in ("exited", "dead"):
            code = state.get("ExitCode")
            oom = " (killed: out of memory)" if state.get("OOMKilled") else ""
            raise ServerError(
                f"container {self.container.name} exited with code {code}{oom}\n{log_tail(self.logs())}",
                hint=f"the full log is kept in {self.workdir / 'server.log'} after the trial",
            )
        if state.get("Paused"):
            raise ServerError(
                f"container {self.container.name} is paused: it cannot answer\n{log_tail(self.logs())}",
                hint="the trial is failed; the container is removed and a fresh one starts next",
            )
        if self.watchdog is not None:
            try:
                self.watchdog.check()
            except ServerError as exc:
                raise ServerError(f"{exc.message}\n{log_tail(self.logs())}", hint=exc.hint) from None

    def stop(self) -> None:
        docker = _docker()
        try:
            self._final_logs = self.container.logs().decode(errors="replace")
            (self.workdir / "server.log").write_text(self._final_logs)
        except docker.errors.DockerException:
            pass
        try:
            self.container.stop(timeout=5)
        except docker.errors.DockerException:
            pass
        try:
            self.container.remove(force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.DockerException:
            pass


class DockerBackend:
    name = "docker"
    can_restart = True

    def __init__(self, options: DockerOptions | None = None, client=None) -> None:
        self.options = options or DockerOptions()
        self.client = client or connect()
        self.removed_leftovers = remove_leftovers(self.client)

    def preflight(self) -> None:
        """Refuse a study up front when no trial could start (the image is missing)."""
        self._image()

    def _image(self):
        docker = _docker()
        image = self.options.image
        try:
            return self.client.images.get(image)
        except docker.errors.ImageNotFound:
            if self.options.allow_pull:
                try:
                    return self.client.images.pull(image)
                except docker.errors.DockerException as exc:
                    raise ServerError(f"cannot pull image {image}: {exc}") from None
            if image.split(":")[0] == REFERENCE_IMAGE.split(":")[0]:
                hint = "build it with: harness image build-reference"
            elif "tensorflow/serving" in image:
                hint = f"run: docker pull {image} (or set allow_pull = true in the experiment)"
            else:
                hint = f"build or pull {image} first (for a CPU-optimised image: harness image build-optimized)"
            raise ServerError(f"image {image} is not present locally", hint=hint) from None

    def start(self, spec: ServerSpec, workdir: Path) -> DockerServer:
        docker = _docker()
        workdir = Path(workdir).resolve()
        batching, monitoring = write_config_files(spec, workdir)
        image = self._image()
        labels = image.labels or {}
        model_dir = Path(spec.model_dir).resolve()
        if not model_dir.is_dir():
            raise ServerError(
                f"model directory {model_dir} does not exist", hint="export the model first"
            )
        mounts = [
            docker.types.Mount(
                f"/models/{spec.model_name}", str(model_dir), type="bind", read_only=True
            ),
            docker.types.Mount("/config", str(workdir), type="bind", read_only=True),
        ]
        args = spec.server_flags(
            "/config/batching_parameters.txt" if batching else None, "/config/monitoring.txt"
        )
        if labels.get(FLAVOR_LABEL) == "reference":
            # Our image has no entrypoint script: name the model explicitly, listen on all
            # container addresses (the published ports stay on the host's loopback).
            args = [
                f"--model_name={spec.model_name}",
                f"--model_base_path=/models/{spec.model_name}",
                *args,
            ]
            for host_path in filter(None, labels.get(MOUNTS_LABEL, "").split(":")):
                if os.path.exists(host_path):
                    mounts.append(
                        docker.types.Mount(host_path, host_path, type="bind", read_only=True)
                    )
        kwargs = {}
        if spec.cpus:
            kwargs["cpuset_cpus"] = ",".join(str(c) for c in spec.cpus)
        if spec.memory:
            kwargs["mem_limit"] = spec.memory
        if self.options.gpus:
            kwargs["device_requests"] = [
                docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])
            ]
        name = f"{self.options.container_prefix}-{os.getpid()}-{time.monotonic_ns() % 10**9}"
        try:
            container = self.client.containers.run(
                image.id,
                args,
                name=name,
                detach=True,
                environment={"MODEL_NAME": spec.model_name},
                ports={
                    f"{GRPC_PORT}/tcp": ("127.0.0.1", None),
                    f"{REST_PORT}/tcp": ("127.0.0.1", None),
                },
                mounts=mounts,
                tmpfs={"/tmp": "size=256m"},
                labels={
                    LABEL: "true",
                    OWNER_LABEL: str(os.getpid()),
                    HOST_LABEL: os.uname().nodename,
                },
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                read_only=True,  # the root file system; /tmp is a tmpfs
                privileged=False,
                network_mode="bridge",  # never the host's network: ports go to 127.0.0.1
                **kwargs,
            )
        except docker.errors.APIError as exc:
            msg = exc.explanation or str(exc)
            if self.options.gpus and "gpu" in msg.lower():
                raise ServerError(
                    f"cannot start a GPU container: {msg}",
                    hint="install the NVIDIA container toolkit, or use a CPU image",
                ) from None
            raise ServerError(f"cannot start container from {self.options.image}: {msg}") from None
        try:
            endpoint = self._endpoint(container, spec.model_name)
            server = DockerServer(container, endpoint, workdir)
            wait_until_available(server, spec.startup_timeout)
            server.watchdog = Watchdog(endpoint.rest_url, spec.model_name)
        except BaseException:
            try:
                container.remove(force=True)
            except docker.errors.DockerException:
                pass
            raise
        return server

    def _endpoint(self, container, model_name: str) -> Endpoint:
        for _ in range(50):
            container.reload()
            ports = container.attrs.get("NetworkSettings", {}).get("Ports") or {}
            grpc = ports.get(f"{GRPC_PORT}/tcp")
            rest = ports.get(f"{REST_PORT}/tcp")
            if grpc and rest:
                return Endpoint(
                    f"127.0.0.1:{grpc[0]['HostPort']}",
                    f"http://127.0.0.1:{rest[0]['HostPort']}",
                    model_name,
                )
            if container.status in ("exited", "dead"):
                break
            time.sleep(0.1)
        raise ServerError(
            f"container {container.name} published no ports\n{log_tail(container.logs().decode(errors='replace'))}"
        )


def remove_leftovers(client) -> list[str]:
    """Remove our containers whose owning process on this host is gone (a crashed run)."""
    removed = []
    host = os.uname().nodename
    for c in client.containers.list(all=True, filters={"label": f"{LABEL}=true"}):
        labels = c.labels or {}
        if labels.get(HOST_LABEL) != host:
            continue
        try:
            owner = int(labels.get(OWNER_LABEL, "0"))
        except ValueError:
            owner = 0
        if owner and pid_alive(owner):
            continue
        try:
            c.remove(force=True)
            removed.append(c.name)
        except Exception:  # raced with another cleaner
            pass
    return removed


def reference_image_mounts() -> list[str]:
    """Host paths a container needs to run this interpreter and environment read-only: the
    virtual environment, the base interpreter, the project, and the system libraries."""
    project = str(Path(__file__).resolve().parents[2])
    paths = [sys.prefix, sys.base_prefix, project, "/usr", "/lib", "/lib64", "/etc/ld.so.cache"]
    out = []
    for p in paths:
        if os.path.exists(p) and p not in out and ":" not in p:
            out.append(p)
    return out


def build_reference_image(client=None, tag: str = REFERENCE_IMAGE) -> str:
    """Build an image that runs the reference server from bind-mounted host paths.

    The image is empty (``docker import`` of an empty tar): no registry, no network. The
    interpreter, the virtual environment, the project and the system libraries are mounted
    read-only at run time by the Docker backend, at the paths recorded in the image's labels.
    """
    client = client or connect()
    empty = io.BytesIO()
    with tarfile.open(fileobj=empty, mode="w"):
        pass
    python = str(Path(sys.prefix) / "bin" / "python")
    entry = json.dumps(
        [
            python,
            "-m",
            "harness.refserver",
            f"--port={GRPC_PORT}",
            f"--rest_api_port={REST_PORT}",
            "--bind_address=0.0.0.0",
        ]
    )
    changes = [
        f"ENTRYPOINT {entry}",
        f"LABEL {FLAVOR_LABEL}=reference",
        f"LABEL {MOUNTS_LABEL}={':'.join(reference_image_mounts())}",
        "ENV TF_CPP_MIN_LOG_LEVEL=0",
        f"EXPOSE {GRPC_PORT} {REST_PORT}",
    ]
    repo, _, version = tag.rpartition(":") if ":" in tag.split("/")[-1] else (tag, "", "latest")
    docker = _docker()
    try:
        client.api.import_image_from_data(
            empty.getvalue(), repository=repo, tag=version, changes=changes
        )
        return client.images.get(tag).id
    except docker.errors.DockerException as exc:
        raise ServerError(f"cannot build {tag}: {exc}") from None
