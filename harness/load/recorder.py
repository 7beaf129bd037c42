"""Per-request samples recorded in each load process and flushed in chunk files; the harness
reads them back as ``harness.samples.Samples`` (the row and file format live there).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

import numpy as np

from harness.samples import COLUMNS, DTYPES, write_chunk


class Recorder:
    def __init__(self, directory: str | os.PathLike | None) -> None:
        self.directory = Path(directory) if directory else None
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
        self._rows: list[tuple] = []
        self.oversize: Counter = Counter()
        self._seq = 0
        self._prefix = f"{os.getpid()}-{int(time.time() * 1000) % 10**9}"

    def add(
        self,
        t_intended: float,
        latency_us: float,
        code: int,
        size: int,
        late_us: float = 0.0,
        model: int = 0,
    ) -> None:
        self._rows.append((t_intended, latency_us, code, size, late_us, model))

    def take(self) -> tuple[dict[str, np.ndarray], list[list[int]]]:
        """The rows and oversize counts recorded since the last call, as numpy columns."""
        rows, self._rows = self._rows, []
        oversize, self.oversize = self.oversize, Counter()
        arrays = {
            name: np.array([r[i] for r in rows], dtype=dt)
            for i, (name, dt) in enumerate(zip(COLUMNS, DTYPES))
        }
        return arrays, [[s, lim, n] for (s, lim), n in oversize.items()]

    def flush(self) -> Path | None:
        if self.directory is None or (not self._rows and not self.oversize):
            return None
        arrays, oversize = self.take()
        self._seq += 1
        return write_chunk(self.directory, f"{self._prefix}-{self._seq:06d}", arrays, oversize)
