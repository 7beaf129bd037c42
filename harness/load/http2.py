"""The Locust gRPC user's HTTP/2 client: one connection, many unary calls at once, on gevent.

Why not grpcio here: under Locust, grpcio needs ``grpc.experimental.gevent.init_gevent()``, which
runs every blocking call's wait in gevent's OS thread pool: a thread hand-off and two GIL
switches per call. Against a batching server that answers ~30 requests at once, the Locust
process then works through the burst at ~600 us of CPU per request, so the last answers of a
burst are seen (and their users' next requests sent) ~19 ms late: the harness measured 0.77x
h2load's throughput and 1.28x its p50 at 16 users (benchmarks/independent_check.py).

Candidates, measured without Locust (``python benchmarks/grpc_transport.py --rounds 1
--seconds 4``: a gevent-patched process on the load core, N greenlets in a closed loop of
one-row ranker Predicts against the native reference server with batching on the other core;
client CPU per request, 16 / 64 users): grpcio blocking calls under init_gevent 564 / 404 us;
grpcio ``future()`` calls 654 / 715 us (still one pool hand-off per completion event); grpc.aio
in a plain asyncio process 375 / 290 us (a floor: it cannot share gevent's loop, so a real
user would add a cross-thread hand-off on top); the ``h2`` library's state machine on a gevent
socket 653 / 481 us (per-frame event objects and header validation); this module 181 / 142 us;
h2load itself (compiled) 76 / 54 us. This module is the cheapest by 2-4x: a burst of answers
costs one ``recv``, one ``send`` and one greenlet switch per request.

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
- One connection per process and target, made on demand (harness.load.grpc_channel), with a
  backoff after a failed connect.
"""

from __future__ import annotations

import socket
import struct
import urllib.parse
from collections import deque

import gevent
import gevent.socket
from gevent.event import Event
from gevent.hub import Waiter, get_hub
from gevent.timeout import Timeout
from hpack import Decoder

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
_REFUSED = -1  # a stream the server refused unread: the call sends it again
_RST_CODES = {7: UNAVAILABLE, 8: CANCELLED, 11: RESOURCE_EXHAUSTED, 12: PERMISSION_DENIED}


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return _FRAME.pack(len(payload) << 8 | kind, flags, stream) + payload


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
        self.wake_writer, self.window_open = Event(), Event()
        self.queued: deque[Waiter] = deque()  # calls waiting for the peer's stream limit
        settings = struct.pack(">HIHI", 2, 0, 4, _MAX_WINDOW)  # no push; stream windows 2^31-1
        self._write(_PREFACE, frame(SETTINGS, 0, 0, settings),
                    frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", _MAX_WINDOW - 65535)))  # fmt: skip
        self.reader = gevent.spawn(self._read_loop)
        self.writer = gevent.spawn(self._write_loop)

    # -- calls ------------------------------------------------------------------------------

    def call(self, header_block: bytes, body: bytes, timeout: float) -> tuple[int, str, int]:
        """Send one request (its header block and message) and wait for its answer."""
        deadline = Timeout.start_new(timeout)
        stream = None
        try:
            while True:
                while len(self.streams) >= self.peer_streams and not self.closed:
                    waiter = Waiter(self.hub)
                    self.queued.append(waiter)
                    try:
                        waiter.get()
                    finally:
                        if waiter in self.queued:
                            self.queued.remove(waiter)
                if self.closed:
                    return UNAVAILABLE, self.closed, 0
                stream = self._open(header_block, body)
                if stream.result is None:
                    stream.waiter, stream.waiting = Waiter(self.hub), True
                    stream.waiter.get()
                if stream.result[0] != _REFUSED:
                    return stream.result
                # refused before the server read it (its stream count lags ours by the time its
                # last answers take to leave): sent again, as grpcio's transparent retry does
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
            self._next_queued()
            self._reset(stream)

    def _reset(self, stream: _Stream) -> None:
        if self.sock is not None:
            self._write(frame(RST_STREAM, 0, stream.id, struct.pack(">I", 8)))  # CANCEL

    def _finish(self, stream: _Stream, code: int, detail: str, length: int = 0) -> None:
        """The answer is complete: hand it to the waiting greenlet (from the reader)."""
        self.streams.pop(stream.id, None)
        if self.queued:
            self._next_queued()
        stream.result = (code, detail, length)
        if stream.waiting:
            self.hub.loop.run_callback(self._wake, stream)
        if self.closed and not self.streams and self.sock is not None:
            self.fail(self.closed)  # drained after a GOAWAY: nothing more comes

    def _next_queued(self) -> None:
        """A stream closed: the longest-waiting call over the stream limit may open one."""
        if self.queued:
            self.hub.loop.run_callback(self.queued.popleft().switch, None)

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
        while self.queued:
            self._next_queued()  # they see ``closed``
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
                if code == 7 and stream.headers is None:  # REFUSED_STREAM: never processed
                    self._finish(stream, _REFUSED, "")
                    return
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
