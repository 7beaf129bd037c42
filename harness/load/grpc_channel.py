"""Unary gRPC calls over one HTTP/2 connection per process, on gevent (Locust processes only).

Why not grpcio here: under Locust, grpcio needs ``grpc.experimental.gevent.init_gevent()``, which
runs every blocking call's wait in gevent's OS thread pool: a thread hand-off and two GIL
switches per call. Against a batching server that answers ~30 requests at once, the Locust
process then works through the burst at ~600 us of CPU per request, so the last answers of a
burst are seen (and their users' next requests sent) ~19 ms late: the harness measured 0.77x
h2load's throughput and 1.28x its p50 at 16 users (benchmarks/independent_check.py). Measured
per call on this machine's one load core (``python benchmarks/grpc_transport.py``, closed loop,
64 greenlets, ranker with batching; the figures are in that file's docstring): grpcio blocking
calls, grpcio ``future()`` calls (still one pool hand-off per completion event), the ``h2``
library's connection state machine on a gevent socket, and this module. This module is the
cheapest by a wide margin, because a burst costs one ``recv``, one ``send`` and one greenlet
switch per request; ``h2`` spends most of its time in per-frame event objects and header
validation.

What is written here and what is not:

- gRPC's framing (one byte "compressed" flag, four bytes length) and the few HTTP/2 frames a
  unary client needs (RFC 9113): HEADERS/CONTINUATION, DATA, RST_STREAM, SETTINGS, PING,
  GOAWAY, WINDOW_UPDATE, with flow control both ways.
- HPACK (RFC 7541) is the ``hpack`` library's. Requests send one header block that never
  touches the dynamic table (so the same bytes serve every request); answers are decoded by
  ``hpack``, and a block that left the table as it was is remembered by its bytes until the
  table changes (a server repeats the same indexed block for every OK answer).
- Status codes and details come from the server's trailers as grpcio reports them; a
  connection that cannot be made or breaks gives UNAVAILABLE with details naming the cause
  ("failed to connect", "Socket closed", "Connection reset", "GOAWAY"), which the user
  classifies as a transport failure. A call past its timeout is cancelled (RST_STREAM) and
  reported DEADLINE_EXCEEDED; the server also gets the deadline (``grpc-timeout``). A message
  larger than the receive limit is RESOURCE_EXHAUSTED, as grpcio says it.
- After a failed connect, calls fail at once for a backoff (1 s, x1.6 per failure, at most
  10 s) instead of hammering a dead port, as grpcio's fail-fast calls do.
"""

from __future__ import annotations

import math
import re
import socket
import struct
import time
import urllib.parse

import gevent
import gevent.socket
from gevent.event import Event
from gevent.hub import Waiter, get_hub
from gevent.lock import Semaphore
from gevent.timeout import Timeout
from hpack import Decoder, Encoder, NeverIndexedHeaderTuple

# gRPC status numbers used here (grpc's StatusCode values)
OK, CANCELLED, UNKNOWN, DEADLINE_EXCEEDED = 0, 1, 2, 4
PERMISSION_DENIED, RESOURCE_EXHAUSTED, UNIMPLEMENTED, INTERNAL = 7, 8, 12, 13
UNAVAILABLE, UNAUTHENTICATED = 14, 16

DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0, 1, 3, 4, 6, 7, 8, 9
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY = 0x1, 0x1, 0x4, 0x8, 0x20
_FRAME = struct.Struct(">IBI")  # length << 8 | type, flags, stream id
_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_MAX_WINDOW = (1 << 31) - 1
_LAST_STREAM = (1 << 31) - 1
# HTTP status of an answer that is not gRPC -> the code grpcio gives it
_HTTP_CODES = {400: INTERNAL, 401: UNAUTHENTICATED, 403: PERMISSION_DENIED, 404: UNIMPLEMENTED,
               429: UNAVAILABLE, 502: UNAVAILABLE, 503: UNAVAILABLE, 504: UNAVAILABLE}  # fmt: skip
# RST_STREAM error code -> gRPC code (REFUSED_STREAM may be retried: UNAVAILABLE)
_RST_CODES = {7: UNAVAILABLE, 8: CANCELLED, 11: RESOURCE_EXHAUSTED, 12: PERMISSION_DENIED}
BACKOFF_S, BACKOFF_MULTIPLIER, BACKOFF_MAX_S = 1.0, 1.6, 10.0
# UNAVAILABLE with details like these means no answer came at all: a transport failure (these
# are this module's own details, and grpcio's for the same causes)
TRANSPORT_DETAILS = re.compile(
    r"failed to connect|Connection refused|Connection reset|Socket closed|Broken pipe|"
    r"connections to all backends failing|Stream removed|GOAWAY|Network is unreachable",
    re.IGNORECASE,
)


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return _FRAME.pack(len(payload) << 8 | kind, flags, stream) + payload


def grpc_timeout(seconds: float) -> str:
    """The ``grpc-timeout`` header's value: at most eight digits and a unit."""
    ms = max(1, math.ceil(seconds * 1000))
    return f"{ms}m" if ms < 10**8 else f"{min(math.ceil(seconds), 10**8 - 1)}S"


def split_target(target: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port)."""
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"not a host:port target: {target!r}")
    return host.strip("[]"), int(port)


class _Stream:
    __slots__ = ("id", "waiter", "waiting", "window", "headers", "data", "size", "result")

    def __init__(self, sid: int, window: int) -> None:
        self.id, self.window = sid, window
        self.waiter: Waiter | None = None
        self.waiting = False
        self.headers: list | None = None
        self.data: list[bytes] = []
        self.size = 0
        self.result: tuple[int, str, int] | None = None


class Connection:
    """One HTTP/2 connection; any number of greenlets call on it at once."""

    def __init__(self, target: str, max_receive: int, connect_timeout: float) -> None:
        host, port = split_target(target)
        self.hub = get_hub()
        self.max_receive = max_receive
        self.sock = gevent.socket.create_connection((host, port), timeout=connect_timeout)
        self.sock.settimeout(None)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.streams: dict[int, _Stream] = {}
        self.next_id = 1
        self.closed: str | None = None  # why no new call may start here
        self.send_window, self.peer_window, self.peer_frame = 65535, 65535, 16384
        self.peer_streams = _LAST_STREAM
        self.unacked = 0  # bytes received since our last connection WINDOW_UPDATE
        self.decoder = Decoder()
        self.decoded: dict[bytes, list] = {}
        self.pending_block: tuple[int, int, list[bytes]] | None = None
        self.out: list[bytes] = []
        self.wake_writer, self.window_open, self.slot_free = Event(), Event(), Event()
        settings = struct.pack(">HIHI", 2, 0, 4, _MAX_WINDOW)  # no push; stream windows 2^31-1
        self._write(_PREFACE, frame(SETTINGS, 0, 0, settings),
                    frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", _MAX_WINDOW - 65535)))  # fmt: skip
        self.reader = gevent.spawn(self._read_loop)
        self.writer = gevent.spawn(self._write_loop)

    # -- calls ------------------------------------------------------------------------------

    def call(self, header_block: bytes, body: bytes, timeout: float) -> tuple[int, str, int]:
        """Send one request (its header block and message) and wait for its answer."""
        deadline = Timeout._start_new_or_dummy(timeout)
        stream = None
        try:
            while len(self.streams) >= self.peer_streams and not self.closed:
                self.slot_free.clear()
                self.slot_free.wait()
            if self.closed:
                return UNAVAILABLE, self.closed, 0
            stream = self._open(header_block, body)
            if stream.result is None:
                stream.waiter, stream.waiting = Waiter(self.hub), True
                stream.waiter.get()
            return stream.result
        except Timeout as exc:
            if exc is not deadline:
                raise
            if stream is not None:
                self._cancel(stream)
            return DEADLINE_EXCEEDED, "Deadline Exceeded", 0
        except BaseException:
            if stream is not None:
                self._cancel(stream)
            raise
        finally:
            deadline.close()

    def _open(self, header_block: bytes, body: bytes) -> _Stream:
        sid = self.next_id
        self.next_id += 2
        if self.next_id > _LAST_STREAM:
            self.closed = "Stream ids used up"  # the next call opens a new connection
        stream = self.streams[sid] = _Stream(sid, self.peer_window)
        message = len(body) + 5
        prefix = b"\x00" + len(body).to_bytes(4, "big")
        head = _FRAME.pack(len(header_block) << 8 | HEADERS, END_HEADERS, sid)
        if message <= min(self.send_window, stream.window, self.peer_frame):  # the usual case
            self.send_window -= message
            stream.window -= message
            self._write(head, header_block, _FRAME.pack(message << 8 | DATA, END_STREAM, sid),
                        prefix, body)  # fmt: skip
        else:
            self._write(head, header_block)
            self._send_flow_controlled(stream, prefix + body)
        return stream

    def _send_flow_controlled(self, stream: _Stream, data: bytes) -> None:
        view, sid = memoryview(data), stream.id
        while view and stream.result is None:
            n = min(len(view), self.send_window, stream.window, self.peer_frame)
            if n <= 0:
                self.window_open.clear()
                self.window_open.wait()
                continue
            self.send_window -= n
            stream.window -= n
            last = n == len(view)
            self._write(frame(DATA, END_STREAM if last else 0, sid, bytes(view[:n])))
            view = view[n:]

    def _cancel(self, stream: _Stream) -> None:
        """The caller gives up (timeout, killed): the stream is reset, its answer dropped."""
        stream.waiting = False
        if self.streams.pop(stream.id, None) is not None:
            self.slot_free.set()
            self._reset(stream)

    def _reset(self, stream: _Stream) -> None:
        if self.sock is not None:
            self._write(frame(RST_STREAM, 0, stream.id, struct.pack(">I", 8)))  # CANCEL

    def _finish(self, stream: _Stream, code: int, detail: str, length: int = 0) -> None:
        """The answer is complete: hand it to the waiting greenlet (from the reader)."""
        self.streams.pop(stream.id, None)
        self.slot_free.set()
        stream.result = (code, detail, length)
        if stream.waiting:
            self.hub.loop.run_callback(self._wake, stream)
        if self.closed and not self.streams and self.sock is not None:
            self.fail(self.closed)  # drained after a GOAWAY: nothing more comes

    @staticmethod
    def _wake(stream: _Stream) -> None:
        if stream.waiting:  # not given up (timed out, killed) since
            stream.waiting = False
            stream.waiter.switch(None)

    # -- the socket ------------------------------------------------------------------------

    def _write(self, *parts: bytes) -> None:
        self.out.extend(parts)
        self.wake_writer.set()

    def _write_loop(self) -> None:
        # one send per wake-up: the requests of every greenlet that ran since go out together
        sock = self.sock
        try:
            while True:
                self.wake_writer.wait()
                self.wake_writer.clear()
                if self.out:
                    data = b"".join(self.out)
                    self.out.clear()
                    sock.sendall(data)
        except Exception as exc:  # the socket broke (or was closed under us)
            self.fail(_describe(exc))

    def _read_loop(self) -> None:
        buf, sock = bytearray(), self.sock
        try:
            while True:
                chunk = sock.recv(1 << 18)
                if not chunk:
                    raise ConnectionError("Socket closed")
                buf += chunk
                pos, n = 0, len(buf)
                while n - pos >= 9:
                    lt, flags, sid = _FRAME.unpack_from(buf, pos)
                    end = pos + 9 + (lt >> 8)
                    if end > n:
                        break
                    self._frame(lt & 0xFF, flags, sid & _LAST_STREAM, bytes(buf[pos + 9 : end]))
                    pos = end
                del buf[:pos]
        except Exception as exc:  # a broken socket, or a peer we cannot follow
            self.fail(_describe(exc))

    def fail(self, why: str) -> None:
        """The connection is gone: every open call ends UNAVAILABLE with ``why``."""
        if self.closed is None:
            self.closed = why
        for stream in list(self.streams.values()):
            self._finish(stream, UNAVAILABLE, why)
        self.window_open.set()
        if self.sock is not None:
            sock, self.sock = self.sock, None
            sock.close()
        current = gevent.getcurrent()
        for g in (self.reader, self.writer):
            if g is not current:
                g.kill(block=False)

    # -- frames ----------------------------------------------------------------------------

    def _frame(self, kind: int, flags: int, sid: int, payload: bytes) -> None:
        if self.pending_block is not None and kind != CONTINUATION:
            raise ValueError("a header block was interrupted (protocol error)")
        if kind == DATA:
            self._data(flags, sid, payload)
        elif kind == HEADERS:
            if flags & PADDED:
                payload = payload[1 : len(payload) - payload[0]]
            if flags & PRIORITY:
                payload = payload[5:]
            self._block(sid, flags, [payload])
        elif kind == CONTINUATION:
            if self.pending_block is None or self.pending_block[0] != sid:
                raise ValueError("CONTINUATION out of place (protocol error)")
            _, first_flags, parts = self.pending_block
            parts.append(payload)
            self.pending_block = None
            self._block(sid, first_flags | (flags & END_HEADERS), parts)
        elif kind == RST_STREAM:
            stream = self.streams.get(sid)
            if stream is not None:
                code = struct.unpack(">I", payload)[0]
                self._finish(stream, _RST_CODES.get(code, INTERNAL),
                             f"Received RST_STREAM with error code {code}")  # fmt: skip
        elif kind == SETTINGS and not flags & ACK:
            self._settings(payload)
        elif kind == PING and not flags & ACK:
            self._write(frame(PING, ACK, 0, payload))
        elif kind == GOAWAY:
            self._goaway(payload)
        elif kind == WINDOW_UPDATE:
            self._window_update(sid, payload)

    def _data(self, flags: int, sid: int, payload: bytes) -> None:
        self.unacked += len(payload)
        if self.unacked >= 1 << 30:
            self._write(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", self.unacked)))
            self.unacked = 0
        stream = self.streams.get(sid)
        if stream is None:
            return  # given up on, or cancelled
        if flags & PADDED:
            payload = payload[1 : len(payload) - payload[0]]
        stream.data.append(payload)
        stream.size += len(payload)
        if stream.size > self.max_receive + 5:
            self._reset(stream)
            self._finish(stream, RESOURCE_EXHAUSTED,
                         f"Received message larger than max ({stream.size - 5} vs. {self.max_receive})")  # fmt: skip
        elif flags & END_STREAM:
            self._finish(stream, INTERNAL, "Stream ended without a status (protocol error)")

    def _block(self, sid: int, flags: int, parts: list[bytes]) -> None:
        if not flags & END_HEADERS:
            self.pending_block = (sid, flags, parts)
            return
        headers = self._decode(b"".join(parts))  # always: the table must follow the server
        stream = self.streams.get(sid)
        if stream is None:
            return
        if stream.headers is None and not flags & END_STREAM:  # the answer's first headers
            stream.headers = headers
            http = dict(headers).get(":status", "200")
            if http != "200":
                self._reset(stream)
                self._finish(stream, _HTTP_CODES.get(int(http), UNKNOWN),
                             f"Received http2 header with status: {http}")  # fmt: skip
            return
        self._trailers(stream, dict(headers))

    def _trailers(self, stream: _Stream, fields: dict) -> None:
        code = fields.get("grpc-status")
        if code is None:
            http = fields.get(":status", "")
            if http and http != "200":
                code, detail = _HTTP_CODES.get(int(http), UNKNOWN), f"Received http2 header with status: {http}"
            else:
                code, detail = UNKNOWN, "No status received"
            self._finish(stream, code, detail)
            return
        detail = urllib.parse.unquote(fields.get("grpc-message", ""))
        code = int(code)
        if code != OK:
            self._finish(stream, code, detail)
            return
        data = b"".join(stream.data) if len(stream.data) != 1 else stream.data[0]
        if len(data) < 5 or int.from_bytes(data[1:5], "big") != len(data) - 5:
            self._finish(stream, INTERNAL, "The answer is not one complete gRPC message")
            return
        self._finish(stream, OK, "", len(data) - 5)

    def _decode(self, block: bytes) -> list:
        hit = self.decoded.get(block)
        if hit is not None:
            return hit
        table = self.decoder.header_table
        before = (table.maxsize, len(table.dynamic_entries),
                  table.dynamic_entries[0] if table.dynamic_entries else None)  # fmt: skip
        headers = self.decoder.decode(block)
        after = (table.maxsize, len(table.dynamic_entries),
                 table.dynamic_entries[0] if table.dynamic_entries else None)  # fmt: skip
        if before == after and after[2] is (before[2]):
            self.decoded[block] = headers  # the same bytes decode the same until the table moves
        else:
            self.decoded.clear()
        return headers

    def _settings(self, payload: bytes) -> None:
        for i in range(0, len(payload) - 5, 6):
            key, value = struct.unpack_from(">HI", payload, i)
            if key == 3:
                self.peer_streams = value
            elif key == 4:
                delta, self.peer_window = value - self.peer_window, value
                for stream in self.streams.values():
                    stream.window += delta
                self.window_open.set()
            elif key == 5:
                self.peer_frame = value
        self._write(frame(SETTINGS, ACK, 0))

    def _goaway(self, payload: bytes) -> None:
        last, code = struct.unpack_from(">II", payload)
        self.closed = f"GOAWAY received; error code {code}"
        for sid, stream in list(self.streams.items()):
            if sid > last & _LAST_STREAM:
                self._finish(stream, UNAVAILABLE, self.closed)

    def _window_update(self, sid: int, payload: bytes) -> None:
        n = struct.unpack(">I", payload)[0] & _LAST_STREAM
        if sid == 0:
            self.send_window += n
        elif sid in self.streams:
            self.streams[sid].window += n
        self.window_open.set()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionResetError):
        return "Connection reset by peer"
    if isinstance(exc, BrokenPipeError):
        return "Broken pipe"
    if isinstance(exc, ConnectionError) and str(exc) == "Socket closed":
        return "Socket closed"
    if isinstance(exc, OSError):
        return f"Socket closed ({exc.strerror or exc})"
    return f"Stream removed ({type(exc).__name__}: {exc})"  # a frame we could not read


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
