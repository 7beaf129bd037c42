"""Outcome codes for recorded requests: gRPC status numbers, plus transport failures.

REST answers are mapped back to the gRPC code that TF Serving's HTTP mapping came from, so both
protocols are counted the same way.
"""

from __future__ import annotations

import re

OK = 0
TRANSPORT = 100  # connection refused, reset, timed out at the socket: no answer at all
OTHER = 101

NAMES = {
    0: "OK",
    1: "CANCELLED",
    2: "UNKNOWN",
    3: "INVALID_ARGUMENT",
    4: "DEADLINE_EXCEEDED",
    5: "NOT_FOUND",
    6: "ALREADY_EXISTS",
    7: "PERMISSION_DENIED",
    8: "RESOURCE_EXHAUSTED",
    9: "FAILED_PRECONDITION",
    10: "ABORTED",
    11: "OUT_OF_RANGE",
    12: "UNIMPLEMENTED",
    13: "INTERNAL",
    14: "UNAVAILABLE",
    15: "DATA_LOSS",
    16: "UNAUTHENTICATED",
    TRANSPORT: "TRANSPORT",
    OTHER: "OTHER",
}
CODES = {v: k for k, v in NAMES.items()}

HTTP_TO_CODE = {
    200: 0,
    400: 3,
    401: 16,
    403: 7,
    404: 5,
    409: 10,
    429: 8,
    499: 1,
    500: 13,
    501: 12,
    503: 14,
    504: 4,
}

TASK_SIZE = re.compile(r"Task size (\d+) is larger than maximum (?:input )?batch size (\d+)")


def from_http(status: int) -> int:
    return HTTP_TO_CODE.get(status, OTHER)


def oversize(message: str) -> tuple[int, int] | None:
    """(task size, limit) from an INVALID_ARGUMENT "Task size N is larger than ..." message."""
    m = TASK_SIZE.search(message or "")
    return (int(m.group(1)), int(m.group(2))) if m else None
