"""Elapsed time and an ETA for a study's progress lines.

The ETA is the mean time of the measurements this run has made so far (a trial, or one
re-measurement of the winner step: each starts a server and measures it once) times the
measurements still to come, the winner step's included. It is a mean, not a promise: the first
trial also pays the fork server's start, and a config the server refuses ends early.
"""

from __future__ import annotations

import time
from collections.abc import Callable


def duration(seconds: float) -> str:
    """``45s``, ``3m05s``, ``1h02m``."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Clock:
    """Laps of measurements since this run started, for ``status``."""

    def __init__(self, now: Callable[[], float] = time.monotonic) -> None:
        self._now = now
        self.start = now()
        self._mark = self.start
        self.laps: list[float] = []

    def lap(self, measured: bool = True) -> float:
        """The seconds since the last lap; kept for the mean when something was measured (a
        copied config took no measurement)."""
        t = self._now()
        seconds, self._mark = t - self._mark, t
        if measured:
            self.laps.append(seconds)
        return seconds

    def elapsed(self) -> float:
        return self._now() - self.start

    def eta(self, runs_left: int) -> float | None:
        """Seconds for ``runs_left`` more measurements at this run's mean (None before any)."""
        if not self.laps:
            return None
        return sum(self.laps) / len(self.laps) * max(0, runs_left)

    def status(self, runs_left: int) -> str:
        eta = self.eta(runs_left)
        return f"{duration(self.elapsed())} elapsed, ETA {'?' if eta is None else duration(eta)}"


def winner_runs(top_k: int, repeats: int, references: int) -> int:
    """Measurements the winner step will make: ``repeats`` rounds over the top ``top_k`` configs
    and the references beside them (none when it only reads the search's figures). An estimate:
    a reference among the top configs is measured once, a failed group adds another."""
    if repeats <= 1 and top_k <= 1:
        return 0
    return repeats * (top_k + references)
