"""The error a request fails with inside the reference server, and its HTTP status."""

from __future__ import annotations

from harness.codes import StatusError


class ServingError(StatusError):
    """A request failed inside the reference server with a TF status ``code`` and a message."""


def invalid(message: str) -> ServingError:
    return ServingError("INVALID_ARGUMENT", message)
