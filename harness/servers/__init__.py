"""Server backends behind one interface: process, docker, external."""

from harness.servers.base import Backend, Endpoint, RunningServer, ServerSpec
from harness.servers.external import ExternalBackend
from harness.servers.process import ProcessBackend

__all__ = [
    "Backend",
    "Endpoint",
    "ExternalBackend",
    "ProcessBackend",
    "RunningServer",
    "ServerSpec",
]
