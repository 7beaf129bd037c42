"""The Docker backend for an engine whose host cannot see our files: the model and each trial's
config files are copied into a Docker volume (``model_transfer = "copy"``) instead of bind-mounted.

Against the real local engine with copy forced, then against the same engine reached as a remote
one, over ``DOCKER_HOST=ssh://root@127.0.0.1:PORT`` through a private sshd on loopback (a
throwaway key, stopped at the end). The image is the locally built reference image.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from harness import config
from harness.batching import BatchingParameters
from harness.servers import ServerSpec

docker = pytest.importorskip("docker")


def ours(client) -> tuple[list, list]:
    """Our containers and volumes (with the project's label) owned by this process."""
    from harness.servers.docker import LABEL, OWNER_LABEL

    mine = {OWNER_LABEL: str(os.getpid())}
    containers = [
        c
        for c in client.containers.list(all=True, filters={"label": f"{LABEL}=true"})
        if c.labels.get(OWNER_LABEL) == mine[OWNER_LABEL]
    ]
    volumes = [
        v
        for v in client.volumes.list(filters={"label": f"{LABEL}=true"})
        if (v.attrs.get("Labels") or {}).get(OWNER_LABEL) == mine[OWNER_LABEL]
    ]
    return containers, volumes


def predict(server, rows: int):
    body = json.dumps({"instances": [[0.1] * 16] * rows}).encode()
    req = urllib.request.Request(f"{server.endpoint.rest_url}/v1/models/m:predict", data=body)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _check_copied(server, client, model_dir: Path, workdir: Path, trial: int) -> str:
    """The model and the trial's config files came through a read-only volume, not binds."""
    attrs = server.container.attrs
    mounts = attrs["Mounts"]
    (models,) = [m for m in mounts if m["Destination"] == "/models"]
    assert models["Type"] == "volume" and models["RW"] is False
    sources = {m.get("Source") for m in mounts if m["Type"] == "bind"}
    assert str(model_dir) not in sources and str(workdir) not in sources
    assert not any(m["Destination"].startswith(("/models/", "/config")) for m in mounts)
    args = attrs["Args"]
    # the stock entrypoint names the model from its variables: /models/m is $MODEL_BASE_PATH/$MODEL_NAME
    assert not any(a.startswith(("--model_base_path", "--model_name")) for a in args)
    env = dict(e.split("=", 1) for e in attrs["Config"]["Env"])
    assert env["MODEL_NAME"] == "m" and env["MODEL_BASE_PATH"] == "/models"
    assert (
        f"--batching_parameters_file=/models/.tfs-harness/{trial}/batching_parameters.txt" in args
    )
    assert f"--monitoring_config_file=/models/.tfs-harness/{trial}/monitoring.txt" in args
    volume = client.volumes.get(models["Name"])
    assert volume.attrs["Labels"]["org.tfs-harness.owner-pid"] == str(os.getpid())
    return models["Name"]


def _start_two_trials(backend, client, mlp_base, tmp_path) -> str:
    """Two trials with different batching: the second's file is the one the server read."""
    spec = ServerSpec(
        model_name="m",
        model_dir=mlp_base,
        batching=BatchingParameters(max_batch_size=8),
        cpus=(0,),
        memory="2g",
    )
    server = backend.start(spec, tmp_path / "t1")
    try:
        code, body = predict(server, 5)
        assert code == 200 and len(body["predictions"]) == 5
        volume = _check_copied(server, client, mlp_base, tmp_path / "t1", 1)
    finally:
        server.stop()
    spec = ServerSpec(
        model_name="m", model_dir=mlp_base, batching=BatchingParameters(max_batch_size=4)
    )
    server = backend.start(spec, tmp_path / "t2")
    try:
        code, body = predict(server, 5)
        assert code == 400
        assert body["error"] == "Task size 5 is larger than maximum input batch size 4"
        assert _check_copied(server, client, mlp_base, tmp_path / "t2", 2) == volume  # shipped once
    finally:
        server.stop()
    return volume


def test_copy_mode_ships_model_and_configs_through_a_volume(
    client, reference_image, mlp_base, tmp_path
):
    from harness.servers.docker import ROLE_LABEL, DockerBackend, DockerOptions

    backend = DockerBackend(
        DockerOptions(image=reference_image, model_transfer="copy"), client=client
    )
    assert backend.local_engine and backend.engine_host == "" and backend.transfer == "copy"
    try:
        volume = _start_two_trials(backend, client, mlp_base, tmp_path)
        containers, volumes = ours(client)
        # what is left between trials: the volume and its helper, created and never started
        assert [v.name for v in volumes] == [volume]
        (helper,) = containers
        assert helper.labels[ROLE_LABEL] == "transfer" and helper.status == "created"
        assert helper.attrs["HostConfig"]["ReadonlyRootfs"] is True
    finally:
        backend.close()
    assert ours(client) == ([], [])
    with pytest.raises(docker.errors.NotFound):
        client.volumes.get(volume)


def test_auto_binds_on_a_local_engine(client, reference_image):
    from harness.servers.docker import DockerBackend, DockerOptions

    backend = DockerBackend(DockerOptions(image=reference_image), client=client)
    assert backend.local_engine and backend.transfer == "bind"


def test_a_trial_in_copy_mode_and_its_volume_removed(client, reference_image, mlp_base, tmp_path):
    from harness.tuning.space import TrialConfig
    from harness.tuning.trial import TrialRunner

    exp = config.from_dict(
        {
            "model": {"path": str(mlp_base), "name": "m"},
            "server": {
                "backend": "docker",
                "image": reference_image,
                "model_transfer": "copy",
                "cpus": "0",
                "memory": "2g",
            },
            "load": {
                "users": 4,
                "warmup_s": 0.5,
                "window_s": 1.0,
                "min_windows": 2,
                "max_windows": 2,
                "extra_windows": 0,
                "cpus": "1",
            },
        },
        "copy.toml",
    )
    runner = TrialRunner(exp)
    try:
        assert runner.backend.transfer == "copy"
        result = runner.measure(
            TrialConfig(batching=BatchingParameters(max_batch_size=8, num_batch_threads=1)),
            tmp_path / "trial",
        )
        assert result["requests"] > 0 and result["errors"] == {}
        assert result["mean_batch_size"] and result["mean_batch_size"] >= 1  # metrics scraped
        containers, volumes = ours(client)
        assert len(volumes) == 1 and len(containers) == 1  # the volume and its helper
    finally:
        runner.close()
    assert ours(client) == ([], [])


def test_volumes_of_a_dead_run_are_removed(client, reference_image):
    from harness.servers.docker import (
        HOST_LABEL,
        LABEL,
        OWNER_LABEL,
        ROLE_LABEL,
        DockerBackend,
        DockerOptions,
    )

    dead = {LABEL: "true", OWNER_LABEL: str(2**22 + 4321), HOST_LABEL: os.uname().nodename}
    volume = client.volumes.create(name=f"tfs-harness-test-dead-{os.getpid()}", labels=dead)
    helper = client.containers.create(
        reference_image,
        ["true"],
        labels={**dead, ROLE_LABEL: "transfer"},
        mounts=[docker.types.Mount("/models", volume.name, type="volume")],
    )
    other_host = client.volumes.create(
        name=f"tfs-harness-test-other-{os.getpid()}", labels={**dead, HOST_LABEL: "elsewhere"}
    )
    try:
        backend = DockerBackend(DockerOptions(image=reference_image), client=client)
        assert helper.name in backend.removed_leftovers
        assert f"volume {volume.name}" in backend.removed_leftovers
        with pytest.raises(docker.errors.NotFound):
            client.volumes.get(volume.name)
        client.volumes.get(other_host.name)  # another host's: not ours to judge
    finally:
        other_host.remove(force=True)


# -- a remote engine over SSH ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ssh_engine(tmp_path, monkeypatch, client):
    """DOCKER_HOST=ssh://root@127.0.0.1:PORT: a private sshd on loopback in front of the local
    engine, a throwaway key pair, and a HOME whose .ssh holds the key and the host key."""
    pytest.importorskip("paramiko")
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    if not os.path.exists(sshd) or not shutil.which("ssh-keygen"):
        pytest.skip("OpenSSH's server is not installed (scripts/test.sh installs openssh-server)")
    if os.geteuid() != 0:
        pytest.skip("the private sshd logs in as root (the engine's socket belongs to root)")
    d = tmp_path / "sshd"
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    d.mkdir()
    for key in (d / "host_key", home / ".ssh" / "id_ed25519"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    shutil.copy(home / ".ssh" / "id_ed25519.pub", d / "authorized_keys")
    port = free_port()
    host_pub = (d / "host_key.pub").read_text().split()
    (home / ".ssh" / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    (d / "sshd_config").write_text(
        f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {d / 'host_key'}\n"
        f"PidFile {d / 'sshd.pid'}\nAuthorizedKeysFile {d / 'authorized_keys'}\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPrintMotd no\n"
    )
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    log = open(d / "sshd.log", "w")
    proc = subprocess.Popen(
        [sshd, "-D", "-e", "-f", str(d / "sshd_config")], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        end = time.monotonic() + 20
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert proc.poll() is None, (d / "sshd.log").read_text()
            assert time.monotonic() < end, "sshd did not listen"
            time.sleep(0.1)
        monkeypatch.setenv("HOME", str(home))  # paramiko reads ~/.ssh from $HOME
        monkeypatch.setenv("DOCKER_HOST", f"ssh://root@127.0.0.1:{port}")
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_remote_engine_over_ssh_copies_the_model(
    ssh_engine, client, reference_image, mlp_base, tmp_path
):
    from harness.servers.docker import DockerBackend, DockerOptions, connect

    remote = connect()  # from DOCKER_HOST, as harness tune does
    try:
        backend = DockerBackend(DockerOptions(image=reference_image), client=remote)
        assert not backend.local_engine and backend.engine_host == "127.0.0.1"
        assert backend.transfer == "copy"  # auto, for an engine reached over ssh://
        try:
            volume = _start_two_trials(backend, remote, mlp_base, tmp_path)
        finally:
            backend.close()
        with pytest.raises(docker.errors.NotFound):
            client.volumes.get(volume)  # seen through the local socket: gone
        assert ours(client) == ([], [])
    finally:
        remote.close()


def test_a_remote_engine_is_reached_at_its_host():
    """Ports published on a remote engine's loopback cannot be reached from here: say so."""
    from harness.errors import ServerError
    from harness.servers.docker import reachable_host

    with pytest.raises(ServerError) as exc:
        reachable_host("127.0.0.1", "", "gpu-box-1")  # DOCKER_HOST=ssh://gpu-box-1, defaults
    assert "ports published on its loopback (127.0.0.1) cannot be reached" in str(exc.value)
    assert reachable_host("0.0.0.0", "", "gpu-box-1") == "gpu-box-1"
    assert reachable_host("10.0.0.7", "", "gpu-box-1") == "10.0.0.7"
    assert reachable_host("127.0.0.1", "tunnel.local", "gpu-box-1") == "tunnel.local"
    assert reachable_host("127.0.0.1", "", "127.0.0.1") == "127.0.0.1"  # ssh to this machine
    assert reachable_host("127.0.0.1", "", "") == "127.0.0.1"  # a local engine
