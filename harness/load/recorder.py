"""Per-request samples: recorded in each load process, flushed to files, merged by the harness.

Every request gives one row: intended send time (epoch seconds), latency in microseconds (from
the intended send time, so queueing in the generator is not hidden), outcome code, request size
and how late the send actually went out. Rows are flushed in chunks (``.npz``, written to a
temporary name and renamed, so a reader never sees half a chunk).
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path

import numpy as np

COLUMNS = ("t_intended", "latency_us", "code", "size", "late_us")
DTYPES = (np.float64, np.float64, np.int16, np.int32, np.float32)


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
        self, t_intended: float, latency_us: float, code: int, size: int, late_us: float = 0.0
    ) -> None:
        self._rows.append((t_intended, latency_us, code, size, late_us))

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


def write_chunk(
    directory: Path, name: str, arrays: dict[str, np.ndarray], oversize: list[list[int]]
) -> Path:
    """One chunk file ``samples-<name>.npz``, renamed into place so a reader never sees half."""
    path = Path(directory) / f"samples-{name}.npz"
    tmp = path.with_name("." + path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(
            f,
            **arrays,
            oversize=np.frombuffer(json.dumps(oversize).encode(), dtype=np.uint8),
        )
    os.replace(tmp, path)
    return path


class Samples:
    """All rows read from a directory of chunks, as numpy columns."""

    def __init__(self, columns: dict[str, np.ndarray], oversize: Counter) -> None:
        self.columns = columns
        self.oversize = oversize

    def __len__(self) -> int:
        return len(self.columns["t_intended"])

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def between(self, t0: float, t1: float) -> Samples:
        """Rows whose request was due in [t0, t1)."""
        t = self.columns["t_intended"]
        mask = (t >= t0) & (t < t1)
        return Samples({k: v[mask] for k, v in self.columns.items()}, self.oversize)

    @classmethod
    def read(cls, directory: str | os.PathLike) -> Samples:
        parts = {name: [] for name in COLUMNS}
        oversize: Counter = Counter()
        for path in sorted(Path(directory).glob("samples-*.npz")):
            with np.load(path) as z:
                for name in COLUMNS:
                    parts[name].append(z[name])
                for s, lim, n in json.loads(z["oversize"].tobytes().decode() or "[]"):
                    oversize[(s, lim)] += n
        cols = {
            name: (np.concatenate(parts[name]) if parts[name] else np.array([], dtype=dt))
            for name, dt in zip(COLUMNS, DTYPES)
        }
        order = np.argsort(cols["t_intended"], kind="stable")
        return cls({k: v[order] for k, v in cols.items()}, oversize)
