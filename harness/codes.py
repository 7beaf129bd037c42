"""Status codes as TF Serving reports them: gRPC code numbers and names, and the HTTP status its
REST API answers with for each (model_servers/http_server.cc), and the outcome codes the harness
records per request. Standard library only: the reference server, the load generator and the
figures computed from its samples all read it."""

from __future__ import annotations

CODE_NAMES = {
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
}

HTTP_STATUS = {
    "OK": 200,
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
    "UNAUTHENTICATED": 401,
}

# The outcome of one recorded request (the ``code`` column of harness.samples): the gRPC code the
# server answered with (a REST answer mapped back to it), or one of two codes of our own.
OK = 0
TRANSPORT = 100  # connection refused, reset, timed out at the socket: no answer at all
OTHER = 101  # an answer that maps to no gRPC code

OUTCOME_NAMES = {**CODE_NAMES, TRANSPORT: "TRANSPORT", OTHER: "OTHER"}
OUTCOME_CODES = {v: k for k, v in OUTCOME_NAMES.items()}


class StatusError(Exception):
    """A failure with a TF status ``code`` (the gRPC status name) and its message; the reference
    server answers a REST request with ``http_status``. The scheduler's rejections and the
    reference server's errors are both ones."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return HTTP_STATUS.get(self.code, 500)
