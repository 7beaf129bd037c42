"""TF Serving's REST API on a small asyncio HTTP/1.1 server of our own.

Parsing and JSON work happen on the event loop; model runs happen in a thread pool of
``--rest_api_num_threads`` threads (they block on the batcher), so slow batches never stall the
loop.

Why HTTP/1.1 is written here rather than taken from a library: it is the request line, headers,
Content-Length or chunked bodies and keep-alive (about a hundred lines), and the maintained
servers that fit this model are slower. benchmarks/rest_transport.py serves the same
``RestServer.handle`` through each (this server on core 0, wrk on core 1, REST ``:predict`` of
one row on the demo ``mlp`` model, 5 interleaved rounds of 5 s, a 2-core VM); requests/s,
median (range):

    batching connections  here                aiohttp 3.14        uvicorn 0.54+httptools  http.server
    off       1           2547 (1999-2611)    2006 (1831-2073)    1978 (1584-2399)        2283 (2034-2308)
    off      16           5145 (2999-5647)    3773 (2558-4098)    3501 (2301-4459)        2339 (2146-2414)
    off      64           4956 (3403-6186)    3468 (2132-4173)    3554 (2171-4467)        2192 (2006-2384)
    on        1           1922 (1564-2259)    1676 (1618-1764)    1817 (1495-2091)        1961 (1434-2061)
    on       16           2945 (2380-5001)    3130 (2841-3326)    3414 (2375-3803)        2413 (1670-2786)
    on       64           3748 (2547-5443)    2925 (2250-3189)    3264 (2275-4084)        1759 (1523-2566)

Without batching (TF Serving's default) the libraries reach 68-73% of this server's median at
16 and 64 connections, with a higher p99 (at 64: aiohttp 32 ms, uvicorn 27 ms, this server
19 ms); with batching the ranges overlap. Rerun with
``flock /tmp/heavy.lock python benchmarks/rest_transport.py``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor

from google.protobuf import json_format

from harness.refserver.manager import STATE_NAME
from harness.refserver.predict import Predictor, select_outputs
from harness.refserver.status import ServingError, invalid
from harness.refserver.tensors import binary_output, json_to_numpy, numpy_to_json

log = logging.getLogger("harness.refserver")
monotonic = time.monotonic

_MODEL_PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<rest>/metadata|:predict|:classify|:regress)?$"
)
_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    411: "Length Required",
    413: "Payload Too Large",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    499: "Client Closed Request",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
MAX_HEADER_BYTES = 64 * 1024


class RestServer:
    def __init__(
        self,
        predictor: Predictor,
        *,
        num_threads: int,
        timeout_ms: int,
        metrics_path: str | None,
        max_body_bytes: int,
    ) -> None:
        self.p = predictor
        self.pool = ThreadPoolExecutor(max_workers=num_threads, thread_name_prefix="rest")
        self.timeout = timeout_ms / 1000.0
        self.metrics_path = metrics_path
        self.max_body = max_body_bytes

    async def serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.LimitOverrunError:
                    await self._send(
                        writer, 431, _error_body("Request headers are too large"), close=True
                    )
                    return
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                try:
                    method, path, version, headers = _parse_head(head)
                except ValueError as exc:
                    await self._send(writer, 400, _error_body(str(exc)), close=True)
                    return
                keep_alive = _keep_alive(version, headers)
                body = b""
                if headers.get("transfer-encoding", "").lower() == "chunked":
                    try:
                        body = await self._read_chunked(reader)
                    except ValueError:
                        await self._send(
                            writer, 400, _error_body("Malformed chunked body"), close=True
                        )
                        return
                    if body is None:
                        await self._send(writer, 413, self._too_large(), close=True)
                        return
                else:
                    length = headers.get("content-length")
                    if length is not None:
                        if not length.isdigit():
                            await self._send(
                                writer, 400, _error_body("Invalid Content-Length"), close=True
                            )
                            return
                        n = int(length)
                        if n > self.max_body:
                            await self._send(writer, 413, self._too_large(n), close=True)
                            return
                        body = await reader.readexactly(n)
                status, payload, ctype = await self.handle(method, path, body)
                await self._send(writer, status, payload, close=not keep_alive, content_type=ctype)
                if not keep_alive:
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()

    def _too_large(self, n: int | None = None) -> bytes:
        size = f"of {n} bytes " if n is not None else ""
        return _error_body(f"Request body {size}is over the limit of {self.max_body} bytes")

    async def _read_chunked(self, reader: asyncio.StreamReader) -> bytes | None:
        parts = []
        total = 0
        while True:
            line = await reader.readuntil(b"\r\n")
            n = int(line.split(b";")[0].strip(), 16)  # ValueError: the caller answers 400
            if n < 0:
                raise ValueError("negative chunk size")
            if n == 0:
                await reader.readuntil(b"\r\n")
                return b"".join(parts)
            total += n
            if total > self.max_body:
                return None
            parts.append(await reader.readexactly(n))
            await reader.readexactly(2)

    async def _send(
        self, writer, status: int, payload: bytes, *, close: bool, content_type="application/json"
    ):
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(payload)}\r\n"
            f"{'Connection: close' if close else 'Connection: keep-alive'}\r\n\r\n"
        )
        writer.write(head.encode() + payload)
        await writer.drain()

    # -- routing ---------------------------------------------------------------------------------

    async def handle(self, method: str, target: str, body: bytes) -> tuple[int, bytes, str]:
        path = target.split("?", 1)[0]
        if self.metrics_path and path == self.metrics_path and method == "GET":
            return 200, self.p.metrics.render().encode(), "text/plain; version=0.0.4"
        m = _MODEL_PATH.match(path)
        if (
            m is None
            or (method == "GET" and m["rest"] not in (None, "/metadata"))
            or (method == "POST" and m["rest"] in (None, "/metadata"))
            or method not in ("GET", "POST")
        ):
            if path.startswith("/v1/"):
                return 400, _error_body(f"Malformed request: {method} {target}"), "application/json"
            return 404, _error_body(f"Not found: {method} {target}"), "application/json"
        name, label, rest = m["name"], m["label"], m["rest"]
        version = None
        if m["version"] is not None:
            if not m["version"].isdigit():
                return 400, _error_body(f"Malformed request: {method} {target}"), "application/json"
            version = int(m["version"])
        try:
            if rest is None:
                return 200, _dump(self._status(name, version, label)), "application/json"
            if rest == "/metadata":
                return 200, _dump(self._metadata(name, version, label)), "application/json"
            if rest != ":predict":
                raise ServingError(
                    "UNIMPLEMENTED",
                    f"{rest[1:]} is not implemented by the reference server; use :predict",
                )
            return await self._predict(name, version, label, body)
        except ServingError as err:
            return err.http_status, _error_body(err.message), "application/json"
        except Exception as exc:  # a bug of ours: answer 500 and keep serving
            log.exception("REST %s %s failed", method, path)
            return 500, _error_body(f"Internal error: {type(exc).__name__}"), "application/json"

    def _status(self, name, version, label) -> dict:
        out = []
        for st in self.p.manager.statuses(name, version, label):
            out.append(
                {
                    "version": str(st.version),
                    "state": STATE_NAME.get(st.state, "UNKNOWN"),
                    "status": {"error_code": st.error_code, "error_message": st.error_message},
                }
            )
        return {"model_version_status": out}

    def _metadata(self, name, version, label) -> dict:
        model = self.p.manager.resolve(name, version, label)
        sigs = {
            key: json_format.MessageToDict(sd, preserving_proto_field_name=True)
            for key, sd in model.signature_defs.items()
        }
        return {
            "model_spec": {"name": name, "signature_name": "", "version": str(model.version)},
            "metadata": {"signature_def": {"signature_def": sigs}},
        }

    async def _predict(self, name, version, label, body: bytes) -> tuple[int, bytes, str]:
        started = monotonic()
        p = self.p
        try:
            try:
                doc = json.loads(body)
            except (ValueError, UnicodeDecodeError) as exc:
                raise invalid(f"JSON Parse error: {exc}") from None
            except RecursionError:
                raise invalid("JSON Parse error: the document is nested too deeply") from None
            if not isinstance(doc, dict):
                raise invalid("JSON Value: request body must be a JSON object")
            sig_name = doc.get("signature_name", "")
            if not isinstance(sig_name, str):
                raise invalid("'signature_name' must be a string")
            model, sig = p.resolve(name, version, label, sig_name)
            row = "instances" in doc
            if row and "inputs" in doc:
                raise invalid("Not both 'instances' and 'inputs' may be specified in the request")
            if not row and "inputs" not in doc:
                raise invalid("Missing 'inputs' or 'instances' key")
            given = (
                _rows_to_inputs(doc["instances"], sig)
                if row
                else _columns_to_inputs(doc["inputs"], sig)
            )
            filt = doc.get("output_filter")
            aliases = select_outputs(sig, filt if isinstance(filt, list) else None)
            deadline = started + self.timeout
            loop = asyncio.get_running_loop()
            # Like TF Serving, the timeout is the run's deadline: a request still queued when its
            # batch is taken gets RESOURCE_EXHAUSTED (429); one stuck past it gets 504.
            outputs = await loop.run_in_executor(
                self.pool, p.run, name, model, sig, given, deadline
            )
            named = {a: o for a, o in zip(sig.outputs, outputs) if a in aliases}
            result = _rows_result(named) if row else _columns_result(named)
        except ServingError as err:
            p.record(name, err.code, started, "REST")
            return err.http_status, _error_body(err.message), "application/json"
        p.record(name, "OK", started, "REST")
        return 200, _dump(result), "application/json"


def _rows_to_inputs(instances, sig) -> dict:
    if not isinstance(instances, list):
        raise invalid("'instances' must be a JSON list")
    if not instances:
        raise invalid("'instances' is empty: send at least one instance")
    aliases = list(sig.inputs)
    if all(isinstance(i, dict) and "b64" not in i for i in instances):
        keys = set(instances[0])
        for inst in instances:
            if set(inst) != keys:
                raise invalid(
                    "Expecting object with the same keys in every instance of 'instances'"
                )
        return {k: json_to_numpy([inst[k] for inst in instances], k, _dtype(sig, k)) for k in keys}
    if len(aliases) != 1:
        raise invalid(
            f"The signature has {len(aliases)} inputs ({', '.join(aliases)}): each instance must be an "
            "object naming them"
        )
    a = aliases[0]
    return {a: json_to_numpy(instances, a, sig.inputs[a].dtype)}


def _columns_to_inputs(inputs, sig) -> dict:
    if isinstance(inputs, dict) and not (len(inputs) == 1 and "b64" in inputs):
        return {k: json_to_numpy(v, k, _dtype(sig, k)) for k, v in inputs.items()}
    aliases = list(sig.inputs)
    if len(aliases) != 1:
        raise invalid(
            f"The signature has {len(aliases)} inputs: 'inputs' must be an object naming them"
        )
    return {aliases[0]: json_to_numpy(inputs, aliases[0], sig.inputs[aliases[0]].dtype)}


def _dtype(sig, alias: str) -> int:
    spec = sig.inputs.get(alias)
    if spec is None:
        raise invalid(
            f"input tensor alias not found in signature: {alias}. "
            f"Inputs expected to be in the set {{{','.join(sorted(sig.inputs))}}}."
        )
    return spec.dtype


def _rows_result(named: dict) -> dict:
    if len(named) == 1:
        ((alias, arr),) = named.items()
        return {"predictions": numpy_to_json(arr, binary_output(alias))}
    cols = {k: numpy_to_json(v, binary_output(k)) for k, v in named.items()}
    n = len(next(iter(named.values())))
    return {"predictions": [{k: cols[k][i] for k in cols} for i in range(n)]}


def _columns_result(named: dict) -> dict:
    if len(named) == 1:
        ((alias, arr),) = named.items()
        return {"outputs": numpy_to_json(arr, binary_output(alias))}
    return {"outputs": {k: numpy_to_json(v, binary_output(k)) for k, v in named.items()}}


def _dump(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _error_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


def _parse_head(head: bytes):
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:
        raise ValueError("Malformed request headers") from None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise ValueError(f"Malformed request line: {lines[0][:100]!r}")
    headers = {}
    for line in lines[1:]:
        if not line:
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"Malformed header line: {line[:100]!r}")
        headers[key.strip().lower()] = value.strip()
    return parts[0], parts[1], parts[2], headers


def _keep_alive(version: str, headers: dict) -> bool:
    conn = headers.get("connection", "").lower()
    if version == "HTTP/1.0":
        return conn == "keep-alive"
    return conn != "close"
