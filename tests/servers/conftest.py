"""The Docker engine and the test image (built to tensorflow/serving's image contract from files
on this machine, once: it is cached by its content hash), shared by the Docker tests."""

import pytest


@pytest.fixture(scope="module")
def client():
    docker = pytest.importorskip("docker")
    try:
        c = docker.from_env(timeout=60)
        c.ping()
        return c
    except docker.errors.DockerException as exc:
        pytest.skip(f"no Docker engine could be reached or started here: {exc}")


@pytest.fixture(scope="module")
def reference_image(client):
    from harness.servers.docker_common import REFERENCE_IMAGE
    from harness.servers.reference_image import build_reference_image

    build_reference_image(client)
    return REFERENCE_IMAGE
