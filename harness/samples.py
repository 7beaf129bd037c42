"""Per-request samples, the record every figure is computed from: one row per request, as numpy
columns, in chunk files that the load processes write and the harness reads back.

Every request gives one row: intended send time (epoch seconds), latency in microseconds (from
the intended send time, so queueing in the generator is not hidden), outcome code
(``harness.codes``: the gRPC code, TRANSPORT or OTHER), request size and how late the send
actually went out, and which model it went to (its place in the load's traffic split; 0 for
the one model of a plain run). Chunks are ``.npz`` files renamed into place (``harness.atomic``), so a
reader never sees half a chunk. numpy only: ``load`` writes these files, ``metrics``, ``report``
and ``sim`` read them.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np

from harness import atomic

COLUMNS = ("t_intended", "latency_us", "code", "size", "late_us", "model")
DTYPES = (np.float64, np.float64, np.int16, np.int32, np.float32, np.int16)


def write_chunk(
    directory: Path, name: str, arrays: dict[str, np.ndarray], oversize: list[list[int]]
) -> Path:
    """One chunk file ``samples-<name>.npz``, renamed into place so a reader never sees half."""
    path = Path(directory) / f"samples-{name}.npz"
    # written every second or so by the load processes: atomic for the reader, no fsync
    with atomic.replacing(path, durable=False) as tmp:
        with open(tmp, "wb") as f:
            np.savez(
                f,
                **arrays,
                oversize=np.frombuffer(json.dumps(oversize).encode(), dtype=np.uint8),
            )
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

    def of_model(self, index: int) -> Samples:
        """Rows of the requests sent to model ``index`` (its place in the traffic split)."""
        mask = self.columns["model"] == index
        return Samples({k: v[mask] for k, v in self.columns.items()}, self.oversize)

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
                    # chunks written before the model column: every request to model 0
                    parts[name].append(
                        z[name] if name in z.files else np.zeros(len(z["t_intended"]), np.int16)
                    )
                for s, lim, n in json.loads(z["oversize"].tobytes().decode() or "[]"):
                    oversize[(s, lim)] += n
        cols = {
            name: (np.concatenate(parts[name]) if parts[name] else np.array([], dtype=dt))
            for name, dt in zip(COLUMNS, DTYPES)
        }
        order = np.argsort(cols["t_intended"], kind="stable")
        return cls({k: v[order] for k, v in cols.items()}, oversize)
