"""What every module that talks to a Docker engine shares: our labels, where models live inside a
container, and the Docker SDK imported on demand (it is an optional dependency)."""

from __future__ import annotations

import os

from harness.errors import ServerError

LABEL = "org.tfs-harness.managed"
OWNER_LABEL = "org.tfs-harness.owner-pid"
HOST_LABEL = "org.tfs-harness.owner-host"
FLAVOR_LABEL = "org.tfs-harness.flavor"  # "reference" for images built by build_reference_image
MOUNTS_LABEL = "org.tfs-harness.host-mounts"  # ":"-separated host paths the image expects
ROLE_LABEL = "org.tfs-harness.role"  # "transfer": a helper container that fills a volume
REFERENCE_IMAGE = "tfs-harness/reference:latest"
GRPC_PORT, REST_PORT = 8500, 8501
MODELS_DIR = "/models"  # TF Serving images read MODEL_BASE_PATH=/models/<MODEL_NAME>
CONFIG_SUBDIR = ".tfs-harness"  # copy mode: trial config files, beside the model in the volume


def sdk():
    """The Docker SDK, or a clear error saying how to install it."""
    try:
        import docker
    except ImportError:
        raise ServerError("the Docker SDK is not installed", hint="pip install docker") from None
    return docker


def owner_labels() -> dict[str, str]:
    """Labels of everything we create on an engine: ours, and which process on which host owns it
    (``remove_leftovers`` reaps what a killed harness left)."""
    return {LABEL: "true", OWNER_LABEL: str(os.getpid()), HOST_LABEL: os.uname().nodename}
