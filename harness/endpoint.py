"""Where a running server is reached, and the address rules every stage shares.

A foundation module (standard library only): the load runner needs an ``Endpoint`` and the
loopback test without importing the server backends, and the backends build the ``Endpoint``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import urllib.parse

METRICS_PATH = "/monitoring/prometheus/metrics"
LOG_TAIL_LINES = 25


@dataclasses.dataclass(frozen=True)
class Endpoint:
    grpc_target: str  # host:port
    rest_url: str  # http://host:port
    model_name: str

    @classmethod
    def at(cls, host: str, grpc_port: int, rest_port: int, model_name: str) -> Endpoint:
        """A server reached at ``host`` (a name, or an IPv4 or IPv6 address)."""
        return cls(host_port(host, grpc_port), f"http://{host_port(host, rest_port)}", model_name)

    @property
    def host(self) -> str:
        """The host the harness and the load workers use to reach the server."""
        return urllib.parse.urlsplit(self.rest_url).hostname or ""

    @property
    def metrics_url(self) -> str:
        return self.rest_url + METRICS_PATH


def host_port(host: str, port: int) -> str:
    """``host:port``, with an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_wildcard(host: str) -> bool:
    """Whether listening on ``host`` means listening on every interface."""
    return host in ("0.0.0.0", "::", "")


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine's loopback (no name lookup: "localhost" or a literal)."""
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def advertised_host(bind_host: str, advertise_host: str = "", engine_host: str = "") -> str:
    """The host the harness and the load workers use to reach a server listening on ``bind_host``.

    An explicit ``advertise_host`` wins. A server bound to one address is reached there. A server
    bound to every interface is reached through the remote Docker engine's host when there is
    one (``engine_host``, from ``DOCKER_HOST``), else through this machine's loopback: naming this
    machine for other machines is the experiment's business (``server.advertise_host``), not a
    guess from its host name (Debian maps that to 127.0.1.1).
    """
    if advertise_host:
        return advertise_host
    if not is_wildcard(bind_host):
        return bind_host
    if engine_host:
        return engine_host
    return "::1" if bind_host == "::" else "127.0.0.1"


def log_tail(text: str, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a server's or Locust's log, for an error message."""
    return "\n".join(text.rstrip().splitlines()[-lines:])
