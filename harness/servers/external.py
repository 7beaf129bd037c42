"""A server that is already running: measured as it is, never restarted."""

from __future__ import annotations

from pathlib import Path

from harness.errors import ConfigError, ServerError
from harness.servers.base import Endpoint, ServerHandle, ServerSpec, model_state


class ExternalServer(ServerHandle):
    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint

    def notes(self) -> list[str]:
        return ["external server: its batching parameters are whatever it was started with"]

    def check_alive(self) -> None:
        state, why = model_state(self.endpoint.rest_url, self.endpoint.model_name)
        if state != "AVAILABLE":
            raise ServerError(
                f"external server at {self.endpoint.rest_url} is not serving "
                f"{self.endpoint.model_name}: {why or state}"
            )

    def stop(self) -> None:
        """Not ours to stop."""


class ExternalBackend:
    name = "external"
    can_restart = False

    def __init__(self, grpc_target: str, rest_url: str) -> None:
        self.grpc_target = grpc_target
        self.rest_url = rest_url.rstrip("/")

    def describe(self) -> str:
        return f"the server at {self.rest_url} (external: not started by the harness)"

    def start(self, spec: ServerSpec, workdir: Path) -> ExternalServer:
        if spec.batching is not None and spec.batching.to_text().strip():
            raise ConfigError(
                "an external server cannot be restarted with new batching parameters",
                hint="use the process or docker backend to tune; the external backend measures as-is",
            )
        server = ExternalServer(Endpoint(self.grpc_target, self.rest_url, spec.model_name))
        server.check_alive()
        return server
