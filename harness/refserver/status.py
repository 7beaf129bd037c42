"""The error a request fails with inside the reference server, and its HTTP status."""

from __future__ import annotations

from harness.codes import HTTP_STATUS


class ServingError(Exception):
    """A request failed with a TF status ``code`` (the gRPC status name) and a message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return HTTP_STATUS.get(self.code, 500)


def invalid(message: str) -> ServingError:
    return ServingError("INVALID_ARGUMENT", message)
