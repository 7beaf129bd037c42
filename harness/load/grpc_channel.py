"""Unary gRPC calls for the Locust gRPC user: channels to a target share one HTTP/2 connection
per process (harness.load.http2, whose docstring says why grpcio is not used here), made on
demand. After a failed connect, calls fail at once for a backoff (1 s, x1.6 per failure, at most
10 s) instead of hammering a dead port, as grpcio's fail-fast calls do.
"""

from __future__ import annotations

import math
import re
import time

from gevent.lock import Semaphore
from hpack import Encoder, NeverIndexedHeaderTuple

from harness.load.http2 import DEADLINE_EXCEEDED, OK, UNAVAILABLE, Connection, split_target

__all__ = ["DEADLINE_EXCEEDED", "OK", "UNAVAILABLE", "Channel", "split_target"]

BACKOFF_S, BACKOFF_MULTIPLIER, BACKOFF_MAX_S = 1.0, 1.6, 10.0
# UNAVAILABLE with details like these means no answer came at all: a transport failure (these
# are this module's own details, and grpcio's for the same causes)
TRANSPORT_DETAILS = re.compile(
    r"failed to connect|Connection refused|Connection reset|Socket closed|Broken pipe|"
    r"connections to all backends failing|Stream removed|GOAWAY|Network is unreachable",
    re.IGNORECASE,
)


def grpc_timeout(seconds: float) -> str:
    """The ``grpc-timeout`` header's value: at most eight digits and a unit."""
    ms = max(1, math.ceil(seconds * 1000))
    return f"{ms}m" if ms < 10**8 else f"{min(math.ceil(seconds), 10**8 - 1)}S"


class Channel:
    """Unary calls to one method of one target; the connection is shared by every channel to
    the same target in this process (as grpcio's channels share a subchannel)."""

    def __init__(self, target: str, method: str, *, timeout: float, max_receive: int = 1 << 30) -> None:
        self.target, self.max_receive = target, max_receive
        self.timeout = timeout
        self.header_block = request_headers(target, method, timeout)
        self.pool = _POOLS.setdefault((target, max_receive), _Pool(target, max_receive))
        self.pool.users += 1
        self.open = True

    def __call__(self, body: bytes) -> tuple[int, str, int]:
        """(gRPC code, details, answer length) of one call with this channel's timeout."""
        start = time.monotonic()
        conn = self.pool.connection(self.timeout)
        if isinstance(conn, str):
            return UNAVAILABLE, conn, 0
        left = self.timeout - (time.monotonic() - start)
        if left <= 0:
            return DEADLINE_EXCEEDED, "Deadline Exceeded", 0
        return conn.call(self.header_block, body, left)

    def close(self) -> None:
        if self.open:
            self.open = False
            self.pool.release()


def request_headers(target: str, method: str, timeout: float) -> bytes:
    """The one header block of every request: indexed or never-indexed fields only, so the
    server's table never changes and the same bytes can be sent again."""
    fields = [(":method", "POST"), (":scheme", "http"), (":path", method), (":authority", target),
              ("content-type", "application/grpc"), ("te", "trailers"),
              ("grpc-timeout", grpc_timeout(timeout)), ("user-agent", "tfs-harness")]  # fmt: skip
    encoder = Encoder()
    block = encoder.encode([NeverIndexedHeaderTuple(k, v) for k, v in fields[2:]], huffman=False)
    return encoder.encode(fields[:2]) + block


class _Pool:
    """The live connection to a target, made on demand, with a backoff after a failed connect."""

    def __init__(self, target: str, max_receive: int) -> None:
        self.target, self.max_receive = target, max_receive
        self.conn: Connection | None = None
        self.lock = Semaphore()
        self.users = 0
        self.retry_at, self.backoff, self.last_error = 0.0, BACKOFF_S, ""

    def connection(self, timeout: float) -> Connection | str:
        conn = self.conn
        if conn is not None and conn.closed is None:
            return conn
        with self.lock:  # one greenlet connects, the others wait for it
            if self.conn is not None and self.conn.closed is None:
                return self.conn
            if time.monotonic() < self.retry_at:
                return self.last_error
            try:
                self.conn = Connection(self.target, self.max_receive, timeout)
                self.backoff = BACKOFF_S
                return self.conn
            except (OSError, ValueError) as exc:
                self.retry_at = time.monotonic() + self.backoff
                self.backoff = min(self.backoff * BACKOFF_MULTIPLIER, BACKOFF_MAX_S)
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                self.last_error = f"failed to connect to {self.target}: {reason}"
                return self.last_error

    def release(self) -> None:
        self.users -= 1
        if self.users <= 0 and self.conn is not None:
            conn, self.conn = self.conn, None
            conn.fail("Channel closed")
            _POOLS.pop((self.target, self.max_receive), None)


_POOLS: dict[tuple[str, int], _Pool] = {}
