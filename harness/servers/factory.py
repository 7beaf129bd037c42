"""Build a backend from the experiment's [server] section."""

from __future__ import annotations

from harness.config import BackendKind, ServerConfig
from harness.errors import ConfigError


def make_backend(s: ServerConfig):
    if s.backend == BackendKind.PROCESS:
        from harness.servers.process import ProcessBackend

        return ProcessBackend(s.binary)
    if s.backend == BackendKind.DOCKER:
        from harness.servers.docker import DockerBackend, DockerOptions

        return DockerBackend(
            DockerOptions(
                image=s.image,
                gpus=s.gpus,
                allow_pull=s.allow_pull,
                model_transfer=s.model_transfer,
            )
        )
    if s.backend == BackendKind.EXTERNAL:
        if not (s.grpc_target and s.rest_url):
            raise ConfigError("the external backend needs a gRPC target and a REST URL")
        from harness.servers.external import ExternalBackend

        return ExternalBackend(s.grpc_target, s.rest_url)
    raise ConfigError(f"unknown backend {s.backend!r}: choose {', '.join(BackendKind)}")
