"""The Docker backend against a real engine, with the test image built locally.

No registry is reachable here, so the image is the project's own, built to tensorflow/serving's
image contract (an entrypoint script that starts ``tensorflow_model_server`` with MODEL_NAME,
MODEL_BASE_PATH and the container's arguments; ports 8500 and 8501; the model under /models) and
self-contained: the backend takes exactly the path a ``tensorflow/serving:2.x`` image takes.
"""

import json
import os
import threading
import time
import urllib.request

import pytest

from harness import tfs_flags
from harness.batching import BatchingParameters
from harness.errors import ServerError
from harness.servers import ServerSpec
from harness.servers.tfs_binary import ARGV_PREFIX

docker = pytest.importorskip("docker")


def ours(client):
    from harness.servers.docker import LABEL

    return client.containers.list(all=True, filters={"label": f"{LABEL}=true"})


def grpc_predict(server, rows: int):
    import grpc
    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    req = predict_pb2.PredictRequest()
    req.model_spec.name = "m"
    req.inputs["x"].CopyFrom(tf.make_tensor_proto(np.ones((rows, 16), np.float32)))
    with grpc.insecure_channel(server.endpoint.grpc_target) as ch:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
        try:
            resp = stub.Predict(req, timeout=30)
            return grpc.StatusCode.OK, len(resp.outputs["y"].float_val)
        except grpc.RpcError as exc:
            return exc.code(), exc.details()


def test_start_predict_restart_with_new_parameters(client, reference_image, mlp_base, tmp_path):
    import grpc

    from harness.servers.docker import DockerBackend, DockerOptions

    backend = DockerBackend(DockerOptions(image=reference_image), client=client)
    spec = ServerSpec(
        model_name="m",
        model_dir=mlp_base,
        batching=BatchingParameters(max_batch_size=8),
        cpus=(0,),
        memory="2g",
    )
    server = backend.start(spec, tmp_path / "t1")
    try:
        assert grpc_predict(server, 5) == (grpc.StatusCode.OK, 20)
        attrs = server.container.attrs
        ports = attrs["NetworkSettings"]["Ports"]
        assert {b["HostIp"] for p in ports.values() for b in p} == {"127.0.0.1"}
        model_mount = next(m for m in attrs["Mounts"] if m["Destination"] == "/models/m")
        assert model_mount["RW"] is False
        assert attrs["HostConfig"]["CpusetCpus"] == "0"
        assert attrs["HostConfig"]["CapDrop"] == ["ALL"]
        assert attrs["Config"]["Labels"]["org.tfs-harness.owner-pid"] == str(os.getpid())
        assert any("Running gRPC ModelServer at 0.0.0.0:8500" in n for n in server.notes())
    finally:
        server.stop()
    assert "Running gRPC ModelServer" in (tmp_path / "t1" / "server.log").read_text()
    server = backend.start(
        ServerSpec(
            model_name="m", model_dir=mlp_base, batching=BatchingParameters(max_batch_size=4)
        ),
        tmp_path / "t2",
    )
    try:
        code, details = grpc_predict(server, 5)
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert details == "Task size 5 is larger than maximum input batch size 4"
    finally:
        server.stop()
    assert ours(client) == []


def test_container_killed_mid_request_gives_early_exit_error(
    client, reference_image, mlp_base, tmp_path
):
    from harness.servers.docker import DockerBackend, DockerOptions

    backend = DockerBackend(DockerOptions(image=reference_image), client=client)
    spec = ServerSpec(
        model_name="m",
        model_dir=mlp_base,
        batching=BatchingParameters(
            max_batch_size=64, batch_timeout_micros=3_000_000, num_batch_threads=1
        ),
    )
    server = backend.start(spec, tmp_path)
    outcome = {}

    def slow_request():
        body = json.dumps({"instances": [[0.1] * 16]}).encode()
        req = urllib.request.Request(f"{server.endpoint.rest_url}/v1/models/m:predict", data=body)
        try:
            urllib.request.urlopen(req, timeout=20).read()
            outcome["result"] = "answered"
        except Exception as exc:  # the connection dies with the container
            outcome["result"] = type(exc).__name__

    t = threading.Thread(target=slow_request)
    t.start()
    time.sleep(0.5)  # the request now waits in the batch queue
    server.container.kill()
    t.join(30)
    assert outcome["result"] != "answered"
    with pytest.raises(ServerError) as exc:
        server.check_alive()
    assert "exited with code 137" in str(exc.value)
    assert "Running gRPC ModelServer" in str(exc.value)  # the log tail comes along
    server.stop()
    assert ours(client) == []


def test_refused_parameters_fail_start_with_logs(client, reference_image, mlp_base, tmp_path):
    from harness.servers.docker import DockerBackend, DockerOptions

    backend = DockerBackend(DockerOptions(image=reference_image), client=client)
    spec = ServerSpec(
        model_name="m",
        model_dir=mlp_base,
        batching=BatchingParameters(max_batch_size=8, allowed_batch_sizes=(2,)),
    )
    with pytest.raises(ServerError) as exc:
        backend.start(spec, tmp_path)
    assert "exited with code 1" in str(exc.value)
    assert "Last entry in allowed_batch_sizes must match max_batch_size" in str(exc.value)
    assert ours(client) == []


def test_missing_image_says_how_to_get_it(client):
    from harness.servers.docker import DockerBackend, DockerOptions

    backend = DockerBackend(
        DockerOptions(image="tensorflow/serving:0.0.0-does-not-exist"), client=client
    )
    with pytest.raises(ServerError) as exc:
        backend.start(ServerSpec(model_name="m", model_dir="/tmp"), "/tmp/unused-harness-test")
    assert "is not present locally" in str(exc.value)
    assert "docker pull tensorflow/serving:0.0.0-does-not-exist" in str(exc.value)


def test_leftovers_of_a_dead_run_are_removed(client, reference_image):
    from harness.servers.docker import HOST_LABEL, LABEL, OWNER_LABEL, DockerBackend, DockerOptions

    dead_pid = 2**22 + 12345  # above pid_max on this kind of machine: no such process
    c = client.containers.create(
        reference_image,
        ["--help"],
        labels={LABEL: "true", OWNER_LABEL: str(dead_pid), HOST_LABEL: os.uname().nodename},
    )
    backend = DockerBackend(DockerOptions(image=reference_image), client=client)
    assert c.name in backend.removed_leftovers
    assert ours(client) == []


def test_unreachable_engine_is_a_clear_error(monkeypatch):
    from harness.servers.docker import connect

    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(ServerError) as exc:
        connect()
    assert "cannot reach the Docker engine at unix:///nonexistent/docker.sock" in str(exc.value)


def reached_binary(logs: str) -> list[str]:
    """The arguments the image's tensorflow_model_server was started with (it logs them)."""
    import shlex

    (line,) = [ln for ln in logs.splitlines() if ln.startswith(ARGV_PREFIX)]
    return shlex.split(line[len(ARGV_PREFIX) :])


def test_the_stock_contract_and_only_tf_serving_flags(client, reference_image, mlp_base, tmp_path):
    """The model reaches the server through MODEL_NAME and /models/<name> (the image's
    entrypoint adds --model_name and --model_base_path), and every argument that reaches the
    binary is one of TF Serving's flags; the image carries everything it runs (no host path is
    mounted but the model and the trial's config files)."""
    import grpc

    from harness.servers.docker import DockerBackend, DockerOptions

    backend = DockerBackend(DockerOptions(image=reference_image), client=client)
    spec = ServerSpec(
        model_name="m",
        model_dir=mlp_base,
        batching=BatchingParameters(max_batch_size=4, num_batch_threads=1),
        intra_op_parallelism=1,
        extra_flags=("--file_system_poll_wait_seconds=5",),
    )
    server = backend.start(spec, tmp_path)
    try:
        assert grpc_predict(server, 4) == (grpc.StatusCode.OK, 16)
        attrs = server.container.attrs
        assert attrs["Config"]["Entrypoint"] == ["/usr/bin/tf_serving_entrypoint.sh"]
        assert "MODEL_NAME=m" in attrs["Config"]["Env"]
        assert not any(a.startswith(("--model_name", "--model_base_path")) for a in attrs["Args"])
        assert {m["Destination"] for m in attrs["Mounts"]} == {"/models/m", "/config"}
        argv = reached_binary(server.logs())
        assert tfs_flags.unknown(argv) == []
        assert argv[:4] == [
            "--port=8500",
            "--rest_api_port=8501",
            "--model_name=m",
            "--model_base_path=/models/m",
        ]
        assert {tfs_flags.flag_name(a) for a in argv[4:]} == {
            "monitoring_config_file",
            "enable_batching",
            "batching_parameters_file",
            "tensorflow_intra_op_parallelism",
            "file_system_poll_wait_seconds",
        }
        usage = server.usage()  # the Docker stats API
        assert usage.cpu_s > 0 and usage.memory_bytes > 10 * 2**20
    finally:
        server.stop()
    assert ours(client) == []


def test_the_image_binary_refuses_any_other_flag(client, reference_image):
    """Stricter than the real binary (which prints "unknown argument" and ignores it): a flag
    of the harness's own that reached it fails the start, so the tests above would see it."""
    from harness.servers.docker_common import owner_labels

    c = client.containers.run(
        reference_image, ["--bind_address=0.0.0.0"], detach=True, labels=owner_labels()
    )
    try:
        assert c.wait(timeout=60)["StatusCode"] == 1
        assert "unknown argument: --bind_address=0.0.0.0" in c.logs().decode()
    finally:
        c.remove(force=True)


def test_the_server_is_named_by_its_image_and_version(client, reference_image):
    from harness import config, envinfo
    from harness.servers.docker import DockerBackend, DockerOptions

    backend = DockerBackend(DockerOptions(image=reference_image), client=client)
    name = backend.describe()
    assert name.startswith(f"{reference_image} (TensorFlow ModelServer: tfs-harness ")
    assert "reference server (native path), TensorFlow Library: " in name
    exp = config.from_dict(
        {"model": {"demo": "mlp"}, "server": {"backend": "docker", "image": reference_image}}
    )
    assert envinfo.server_info(exp.server, backend)["name"] == name
    assert ours(client) == []


def test_a_gpu_tag_without_a_gpu_runtime_is_refused_up_front(client, reference_image, tmp_path):
    """A named fake of a GPU image (the test image tagged ...-gpu): the tag implies the device
    request, and an engine without the NVIDIA runtime refuses the study before any trial."""
    from harness.servers.docker import DockerBackend, DockerOptions, has_gpu_runtime

    if has_gpu_runtime(client, True):
        pytest.skip("this engine has a GPU runtime: nothing to refuse")
    repo, _, tag = reference_image.rpartition(":")
    fake = f"{repo}:{tag}-gpu"
    client.images.get(reference_image).tag(repo, f"{tag}-gpu")
    try:
        backend = DockerBackend(DockerOptions(image=fake), client=client)
        assert backend.gpus
        with pytest.raises(ServerError) as exc:
            backend.preflight()
        assert f"image {fake} needs a GPU (its tag ends in -gpu)" in exc.value.message
        assert "NVIDIA Container Toolkit" in exc.value.hint
        assert "\n" not in str(exc.value)
    finally:
        client.images.remove(fake)  # the tag only: the image stays
