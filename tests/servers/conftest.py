"""The Docker engine and the locally built reference image, shared by the Docker tests."""

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
    from harness.servers.docker import REFERENCE_IMAGE, build_reference_image

    build_reference_image(client)
    return REFERENCE_IMAGE
