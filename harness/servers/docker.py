"""Run TF Serving images (CPU, CPU-optimised, GPU) as containers, through the stock image contract.

Every image is driven the same way, the project's own test image included: ``MODEL_NAME`` in the
environment, the model at ``/models/<name>``, ports 8500 and 8501, and the trial's TF Serving
flags as the container's arguments (see ``DockerBackend``). Every container carries our labels, publishes its
ports on the spec's ``bind_host`` only (127.0.0.1 unless the experiment says otherwise; Docker
picks free host ports, so runs can share a machine), gets the model read-only, and drops every
capability. Containers and volumes left by a run that crashed are found by label and removed
when a backend starts.

The engine may be on another machine (``DOCKER_HOST=ssh://...`` or ``tcp://...``). Its host
cannot see our files, so instead of bind mounts the model is copied once per backend into a
Docker volume, and each trial's config files beside it (``model_transfer = "copy"``, the default
for a remote engine). The server is then reached at the advertised host: ``advertise_host``, or
the engine's host when the ports are published on every interface.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
import urllib.parse
from pathlib import Path

from harness.errors import ServerError
from harness.procs import pid_alive
from harness.servers.base import (
    Endpoint,
    ServerHandle,
    ServerSpec,
    advertised_host,
    is_loopback,
    log_tail,
    wait_until_available,
    write_config_files,
)
from harness.servers.docker_common import (  # noqa: F401 - the labels are part of this module's API
    CONFIG_SUBDIR,
    GRPC_PORT,
    HOST_LABEL,
    LABEL,
    MODELS_DIR,
    OWNER_LABEL,
    REFERENCE_IMAGE,
    REST_PORT,
    ROLE_LABEL,
    owner_labels,
    sdk,
)
from harness.servers.docker_volumes import VolumeShipment
from harness.servers.staging import MODEL_CONFIG_FILE, StagedModel, stage, write_model_config
from harness.servers.usage import Usage, container_usage
from harness.servers.watchdog import Watchdog


def connect():
    """A Docker client, or a clear error when no engine answers."""
    docker = sdk()
    where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except docker.errors.DockerException as exc:
        hint = "start dockerd (or Docker Desktop), or point DOCKER_HOST at a running engine"
        if "paramiko" in str(exc):
            hint = "an ssh:// engine needs paramiko: pip install 'tfs-harness[remote]'"
        elif where.startswith("ssh://"):
            hint = (
                "check that 'ssh' to that host works without a password prompt (key in "
                "~/.ssh, host in known_hosts) and that its user may run docker"
            )
        raise ServerError(f"cannot reach the Docker engine at {where}: {exc}", hint=hint) from None
    except OSError as exc:  # paramiko's socket errors are not DockerExceptions
        raise ServerError(
            f"cannot reach the Docker engine at {where}: {exc}",
            hint="check the host and port in DOCKER_HOST, and that sshd (or the engine) listens there",
        ) from None
    return client


def engine_of(client) -> tuple[bool, str]:
    """(local, host): whether the engine runs on this machine (a unix socket or named pipe), and
    for a remote engine (ssh:// or tcp://) the host name it was reached at."""
    api = getattr(client, "api", client)
    url = str(getattr(api, "base_url", ""))
    if url in ("http+docker://localhost", "http+docker://localnpipe"):
        return True, ""
    if url.startswith("http+docker://ssh"):
        adapter = getattr(api, "_custom_adapter", None)
        host = (getattr(adapter, "ssh_params", None) or {}).get("hostname")
        if not host:  # the ssh binary instead of paramiko: "user@host:port"
            ssh_host = getattr(adapter, "ssh_host", "") or os.environ.get("DOCKER_HOST", "")
            host = urllib.parse.urlsplit("ssh://" + ssh_host.removeprefix("ssh://")).hostname
        return False, host or ""
    return False, urllib.parse.urlsplit(url).hostname or ""


@dataclasses.dataclass(frozen=True, kw_only=True)
class DockerOptions:
    image: str = "tensorflow/serving:latest"
    gpus: bool = False  # request every GPU (needs the NVIDIA container runtime)
    allow_pull: bool = False  # pull a missing image instead of failing
    container_prefix: str = "tfs-harness"
    # auto: bind mounts for a local engine, copies into a volume for a remote one
    model_transfer: str = "auto"


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
        docker = sdk()
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
            self.watchdog.check(self.logs)

    def usage(self) -> Usage | None:
        """CPU time and memory from the Docker stats API (what ``docker stats`` shows)."""
        return container_usage(self.container)

    def stop(self) -> None:
        docker = sdk()
        try:
            self._final_logs = self.container.logs().decode(errors="replace")
            (self.workdir / "server.log").write_text(self._final_logs)
        except docker.errors.DockerException:
            pass
        # Killed, not stopped: the stock entrypoint is a bash script that does not exec, so PID 1
        # is bash, which ignores SIGTERM, and a stop would wait out its timeout every trial. The
        # log is kept above; a model server keeps no state worth a graceful exit.
        try:
            self.container.remove(force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.DockerException:
            pass


class DockerBackend:
    """Containers from any image that keeps the ``tensorflow/serving`` contract: its entrypoint
    starts ``tensorflow_model_server --port=8500 --rest_api_port=8501 --model_name=$MODEL_NAME
    --model_base_path=$MODEL_BASE_PATH/$MODEL_NAME`` followed by the container's arguments, and
    the model is read from ``/models/<name>``. The container's arguments are the trial's TF
    Serving flags only; nothing else about the image is assumed (the project's own test image is
    built to the same contract, ``harness.servers.reference_image``)."""

    name = "docker"
    can_restart = True

    def __init__(self, options: DockerOptions | None = None, client=None) -> None:
        self.options = options or DockerOptions()
        if self.options.model_transfer not in ("auto", "bind", "copy"):
            raise ServerError(
                f"model_transfer {self.options.model_transfer!r} is not one of auto, bind, copy"
            )
        self.client = client or connect()
        self.local_engine, host = engine_of(self.client)
        self.engine_host = "" if self.local_engine else host  # a remote engine's host
        transfer = self.options.model_transfer
        self.transfer = (
            ("bind" if self.local_engine else "copy") if transfer == "auto" else transfer
        )
        # a -gpu tag is a GPU image: it needs the GPU device request (and a GPU runtime)
        self.gpus = self.options.gpus or is_gpu_image(self.options.image)
        self._gpu_checked = False
        self._shipments: dict[tuple, VolumeShipment] = {}
        self.removed_leftovers = remove_leftovers(self.client)

    def preflight(self) -> None:
        """Refuse a study up front when no trial could start: the image is missing, or it needs
        a GPU and the engine has no GPU runtime."""
        self._image()
        self._check_gpu_runtime()

    def close(self) -> None:
        """Remove the volumes (and their helper containers) this backend filled."""
        for shipment in self._shipments.values():
            shipment.remove()
        self._shipments.clear()

    def _image(self):
        docker = sdk()
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

    def _check_gpu_runtime(self) -> None:
        if not self.gpus or self._gpu_checked:
            return
        where = "this machine's" if self.local_engine else f"{self.engine_host}'s"
        if not has_gpu_runtime(self.client, self.local_engine):
            why = (
                "its tag ends in -gpu" if is_gpu_image(self.options.image) else "server.gpus = true"
            )
            raise ServerError(
                f"image {self.options.image} needs a GPU ({why}), and {where} Docker engine has "
                "no GPU runtime (no nvidia runtime, no CDI GPU devices in docker info)",
                hint="install the NVIDIA Container Toolkit (nvidia-container-toolkit) and restart "
                "dockerd, or use a CPU image",
            )
        self._gpu_checked = True

    def advertised(self, spec: ServerSpec) -> str:
        """The host the harness and load workers reach this spec's container at."""
        return reachable_host(spec.bind_host, spec.advertise_host, self.engine_host)

    def describe(self) -> str:
        """The image and what its ``tensorflow_model_server --version`` says (run once, through
        the image's own entrypoint, with no network and no model)."""
        return f"{self.options.image} ({image_version(self.client, self._image().id)})"

    def start(self, spec: ServerSpec, workdir: Path) -> DockerServer:
        workdir = Path(workdir).resolve()
        host = self.advertised(spec)
        image = self._image()
        self._check_gpu_runtime()
        model_dir = Path(spec.model_dir).resolve()
        if not model_dir.is_dir():
            raise ServerError(
                f"model directory {model_dir} does not exist", hint="export the model first"
            )
        batching, monitoring = write_config_files(spec, workdir)
        files = [p for p in (batching, monitoring) if p]
        models = {spec.model_name: model_dir}
        staged: list[StagedModel] = []
        if spec.models:  # several: each at /models/<name>, listed in a model config file
            staged = self._stage(spec, workdir)
            models = {m.name: m.base_path for m in staged}
            config = write_model_config(
                [(m.name, f"{MODELS_DIR}/{m.name}") for m in staged], workdir / MODEL_CONFIG_FILE
            )
            files.append(config)
        mounts, config_dir = self._mounts(image, models, workdir, files, staged)
        args = spec.server_flags(
            f"{config_dir}/batching_parameters.txt" if batching else None,
            f"{config_dir}/monitoring.txt",
        )
        if spec.models:  # the entrypoint's --model_name/--model_base_path give way to the file
            args.insert(0, f"--model_config_file={config_dir}/{MODEL_CONFIG_FILE}")
        container = self._run(image, spec, args, mounts)
        return self._ready(container, spec, host, workdir)

    def _stage(self, spec: ServerSpec, workdir: Path) -> list[StagedModel]:
        """Each model as the container reads it: a per-model batching model is staged with
        empty stand-ins that the user's files are mounted over (links would point nowhere
        inside the container)."""
        if self.transfer == "copy" and spec.per_model_batching:
            raise ServerError(
                "per-model batching parameters cannot be copied to a remote Docker engine yet",
                hint='set server.model_transfer = "bind" (the engine sees this machine\'s paths) '
                "or search shared parameters (search.per_model_batching = false)",
            )
        return [stage(m, workdir / "models", links=False) for m in spec.models]

    def _mounts(self, image, models: dict, workdir: Path, files: list[Path], staged=()):
        """(mounts, the directory the trial's config ``files`` are at inside the container):
        each model at /models/<name>, where the image's entrypoint looks, read-only."""
        docker = sdk()
        if self.transfer == "copy":
            shipment = self._shipment(image, models)
            config_dir = shipment.add_files(files)
            volume = docker.types.Mount(
                MODELS_DIR, shipment.volume_name, type="volume", read_only=True
            )
            return [volume], config_dir
        mounts = [
            docker.types.Mount(f"{MODELS_DIR}/{name}", str(path), type="bind", read_only=True)
            for name, path in models.items()
        ]
        for m in staged:  # the user's files over the stand-ins of a staged model
            mounts += [
                docker.types.Mount(
                    f"{MODELS_DIR}/{m.name}/{rel}", str(src), type="bind", read_only=True
                )
                for src, rel in m.mounts
            ]
        mounts.append(docker.types.Mount("/config", str(workdir), type="bind", read_only=True))
        return mounts, "/config"

    def _run(self, image, spec: ServerSpec, args: list[str], mounts: list):
        """The container, started detached: confined, on the bridge network, ports on bind_host."""
        docker = sdk()
        kwargs = {}
        if spec.cpus:
            kwargs["cpuset_cpus"] = ",".join(str(c) for c in spec.cpus)
        if spec.memory:
            kwargs["mem_limit"] = spec.memory
        if self.gpus:
            kwargs["device_requests"] = [
                docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])
            ]
        name = f"{self.options.container_prefix}-{os.getpid()}-{time.monotonic_ns() % 10**9}"
        try:
            return self.client.containers.run(
                image.id,
                args,
                name=name,
                detach=True,
                # the stock entrypoint's variables: --model_name and --model_base_path come from them
                environment={"MODEL_NAME": spec.model_name, "MODEL_BASE_PATH": MODELS_DIR},
                ports={
                    f"{GRPC_PORT}/tcp": (spec.bind_host, None),
                    f"{REST_PORT}/tcp": (spec.bind_host, None),
                },
                mounts=mounts,
                tmpfs={"/tmp": "size=256m"},
                labels=owner_labels(),
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                read_only=True,  # the root file system; /tmp is a tmpfs
                privileged=False,
                network_mode="bridge",  # never the host's network: ports go to bind_host only
                **kwargs,
            )
        except docker.errors.APIError as exc:
            msg = exc.explanation or str(exc)
            if self.gpus and "gpu" in msg.lower():
                raise ServerError(
                    f"cannot start a GPU container: {msg}",
                    hint="install the NVIDIA Container Toolkit, or use a CPU image",
                ) from None
            raise ServerError(f"cannot start container from {self.options.image}: {msg}") from None

    def _ready(self, container, spec: ServerSpec, host: str, workdir: Path) -> DockerServer:
        """Wait until the model is AVAILABLE; a container that never gets there is removed."""
        docker = sdk()
        try:
            endpoint = self._endpoint(container, spec.model_name, host)
            server = DockerServer(container, endpoint, workdir)
            wait_until_available(server, spec.startup_timeout, spec.model_names)
            server.watchdog = Watchdog(endpoint.rest_url, spec.model_name)
        except BaseException:
            try:
                container.remove(force=True)
            except docker.errors.DockerException:
                pass
            raise
        return server

    def _shipment(self, image, models: dict) -> VolumeShipment:
        key = (image.id, tuple((name, str(path)) for name, path in models.items()))
        if key not in self._shipments:
            prefix = f"{self.options.container_prefix}-{os.getpid()}-{time.monotonic_ns() % 10**9}"
            self._shipments[key] = VolumeShipment(self.client, image.id, prefix, models)
        return self._shipments[key]

    def _endpoint(self, container, model_name: str, host: str) -> Endpoint:
        for _ in range(50):
            container.reload()
            ports = container.attrs.get("NetworkSettings", {}).get("Ports") or {}
            grpc = ports.get(f"{GRPC_PORT}/tcp")
            rest = ports.get(f"{REST_PORT}/tcp")
            if grpc and rest:
                return Endpoint.at(
                    host, int(grpc[0]["HostPort"]), int(rest[0]["HostPort"]), model_name
                )
            if container.status in ("exited", "dead"):
                break
            time.sleep(0.1)
        raise ServerError(
            f"container {container.name} published no ports\n{log_tail(container.logs().decode(errors='replace'))}"
        )


def is_gpu_image(image: str) -> bool:
    """A ``tensorflow/serving:<version>-gpu`` style tag (``latest-gpu``, ``2.14.1-gpu``,
    ``latest-devel-gpu``): the tag's dash-separated words include ``gpu``."""
    last = image.rsplit("/", 1)[-1]
    tag = last.partition("@")[0].partition(":")[2]
    return "gpu" in tag.lower().split("-")


def has_gpu_runtime(client, local_engine: bool) -> bool:
    """Whether the engine can grant a GPU device request: an ``nvidia`` runtime or CDI GPU
    devices in ``docker info``, or (a local engine) NVIDIA's runtime hook, which Docker's
    ``--gpus`` uses with runc."""
    info = client.info()
    if any("nvidia" in name for name in (info.get("Runtimes") or {})):
        return True
    devices = info.get("DiscoveredDevices") or []
    if any("gpu" in str(d.get("ID", "")).lower() for d in devices if isinstance(d, dict)):
        return True
    return local_engine and shutil.which("nvidia-container-runtime-hook") is not None


def image_version(client, image_id: str, timeout: float = 60.0) -> str:
    """The image's ``tensorflow_model_server --version`` lines, joined; or why they are unknown."""
    docker = sdk()
    container = None
    try:
        container = client.containers.create(
            image_id,
            ["--version"],
            labels=owner_labels(),
            network_disabled=True,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            read_only=True,
            tmpfs={"/tmp": "size=16m"},
        )
        container.start()
        container.wait(timeout=timeout)
        lines = container.logs(stdout=True, stderr=False).decode(errors="replace").splitlines()
    except (docker.errors.DockerException, OSError) as exc:  # OSError: the wait timed out
        return f"version unknown: {type(exc).__name__}"
    finally:
        if container is not None:
            try:
                container.remove(force=True)
            except docker.errors.DockerException:
                pass
    lines = [ln.strip() for ln in lines if ln.strip()]
    return ", ".join(lines[:2]) if lines else "version unknown: --version printed nothing"


def reachable_host(bind_host: str, advertise_host: str, engine_host: str) -> str:
    """Where a container whose ports are published on ``bind_host`` is reached from here; for a
    remote engine (``engine_host``), its loopback is refused unless a host is advertised (a
    tunnel, say): nothing here could reach it."""
    if (
        not advertise_host
        and engine_host
        and is_loopback(bind_host)
        and not is_loopback(engine_host)
    ):
        raise ServerError(
            f"the Docker engine runs on {engine_host}: ports published on its loopback "
            f"({bind_host}) cannot be reached from this machine",
            hint='set server.bind_host = "0.0.0.0" (or that host\'s address) and open the '
            "server's ports to the tuner and the load machines (docs/distributed.md)",
        )
    return advertised_host(bind_host, advertise_host, engine_host)


def remove_leftovers(client) -> list[str]:
    """Remove our containers and volumes whose owning process on this host is gone (a crashed
    run): containers first, since a volume in use cannot be removed."""
    removed = []
    host = os.uname().nodename

    def orphaned(labels: dict) -> bool:
        if labels.get(HOST_LABEL) != host:
            return False
        try:
            owner = int(labels.get(OWNER_LABEL, "0"))
        except ValueError:
            owner = 0
        return not (owner and pid_alive(owner))

    for c in client.containers.list(all=True, filters={"label": f"{LABEL}=true"}):
        if not orphaned(c.labels or {}):
            continue
        try:
            c.remove(force=True)
            removed.append(c.name)
        except Exception:  # raced with another cleaner
            pass
    for v in client.volumes.list(filters={"label": f"{LABEL}=true"}):
        if not orphaned(v.attrs.get("Labels") or {}):
            continue
        try:
            v.remove(force=True)
            removed.append(f"volume {v.name}")
        except Exception:  # raced with another cleaner, or still in use
            pass
    return removed
