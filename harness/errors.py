"""One error tree for the whole harness.

Every error carries what went wrong and, where we know it, what to do about it. The CLI prints
``error: <message> (<hint>)`` and exits non-zero; library exceptions are translated into these at
the edge where they happen.
"""

from __future__ import annotations


class HarnessError(Exception):
    """Base of every error the harness raises on purpose."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ConfigError(HarnessError):
    """A configuration file or value is wrong."""


class ServerError(HarnessError):
    """A server could not start, died, or answered in a way we cannot use."""


class ModelError(HarnessError):
    """A model could not be exported or loaded."""


class LoadError(HarnessError):
    """The load generator failed."""


class ReportError(HarnessError):
    """A results folder cannot be turned into a report."""
