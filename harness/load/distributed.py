"""Locust master/worker mode: samples shipped from workers to the master, and worker health.

A worker (local or on another machine) never writes samples to disk: every second it sends the
rows it recorded to the master as a Locust custom message (``harness_samples``), with its clock,
its CPU time and a sequence number. The master, which runs beside the harness, writes each
message as a chunk file in the record directory and keeps ``workers.json``: every worker that
joined, how far its samples reach, and when it went missing. The harness reads that file at each
window edge: a window is valid only if every expected worker is alive and has reported past the
window's end. A worker that dies makes the window invalid (``WorkerLost``), never silently smaller.

This module does not import Locust; ``locust_common`` wires it to Locust's events.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from harness import atomic
from harness.errors import LoadError
from harness.samples import COLUMNS, DTYPES, write_chunk

MESSAGE = "harness_samples"
STATUS_FILE = "workers.json"
SKEW_WARN_S = 0.05  # a worker clock this far from the master's shifts samples across windows


class WorkerLost(LoadError):
    """A load worker died or stopped reporting during a measurement: the window is invalid."""


def pack(seq: int, arrays: dict[str, np.ndarray], oversize: list, cpu_s: float) -> dict:
    """A worker's message: raw column bytes (msgpack carries bytes as they are)."""
    return {
        "seq": seq,
        "sent_at": time.time(),
        "cpu_s": cpu_s,
        "rows": int(len(arrays["t_intended"])),
        "columns": {name: arrays[name].tobytes() for name in COLUMNS},
        "oversize": oversize,
    }


def unpack(data: dict) -> dict[str, np.ndarray]:
    return {
        name: np.frombuffer(data["columns"][name], dtype=dt).copy()
        for name, dt in zip(COLUMNS, DTYPES)
    }


class Collector:
    """The master's side: chunk files and the status of every worker."""

    def __init__(self, record_dir: str | os.PathLike, expected: int = 0) -> None:
        self.dir = Path(record_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.expected = expected
        self.workers: dict[str, dict] = {}

    def _worker(self, node_id: str, index: int | None) -> dict:
        w = self.workers.get(node_id)
        if w is None:
            w = self.workers[node_id] = {
                "index": index if index is not None else len(self.workers),
                "joined": time.time(),
                "lost": None,
                "lost_reason": "",
                "chunks": 0,
                "rows": 0,
                "last_flush": None,  # the worker's clock: its samples reach this far
                "last_recv": None,  # the master's clock
                "cpu_s": None,
                "skew_s": None,  # master receive time minus worker send time, smallest seen
                "seq": 0,
            }
        return w

    def joined(self, node_id: str, index: int | None = None) -> None:
        self._worker(node_id, index)
        self.save()

    def receive(self, node_id: str, data: dict, index: int | None = None) -> None:
        now = time.time()
        w = self._worker(node_id, index)
        if data["seq"] != w["seq"] + 1 and w["lost"] is None:
            w["lost"], w["lost_reason"] = now, f"chunk {w['seq'] + 1} never arrived"
        w["seq"] = data["seq"]
        if data["rows"] or data["oversize"]:
            name = f"w{w['index']}-{data['seq']:06d}"
            write_chunk(self.dir, name, unpack(data), data["oversize"])
            w["chunks"] += 1
            w["rows"] += data["rows"]
        w["last_flush"] = data["sent_at"]
        w["last_recv"] = now
        w["cpu_s"] = data["cpu_s"]
        skew = now - data["sent_at"]
        w["skew_s"] = skew if w["skew_s"] is None or abs(skew) < abs(w["skew_s"]) else w["skew_s"]
        self.save()

    def lost(self, node_id: str, reason: str) -> None:
        w = self.workers.get(node_id)
        if w is not None and w["lost"] is None:
            w["lost"], w["lost_reason"] = time.time(), reason
            self.save()

    def save(self) -> None:
        # rewritten at every worker message: atomic for the harness reading it, no fsync
        doc = {"expected": self.expected, "workers": self.workers}
        atomic.write_text(self.dir / STATUS_FILE, json.dumps(doc), durable=False)


def read_status(record_dir: Path) -> dict | None:
    try:
        return json.loads((Path(record_dir) / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None


def check_window(record_dir: Path, edge: float, expected: int) -> bool:
    """True when every expected worker reported past ``edge``; raises ``WorkerLost`` if one died.

    False means "not yet": a worker is alive but its samples do not reach the edge yet.
    """
    status = read_status(record_dir)
    workers = (status or {}).get("workers", {})
    for node, w in workers.items():
        if w["lost"] is not None:
            raise WorkerLost(
                f"load worker {w['index']} ({node}) stopped during the measurement "
                f"({w['lost_reason']}): the window ending at {time.strftime('%H:%M:%S', time.localtime(edge))} "
                "is invalid",
                hint="see the Locust logs in the load folder; the measurement was not kept",
            )
    if len(workers) < expected:
        return False
    return all(w["last_flush"] is not None and w["last_flush"] >= edge for w in workers.values())


def worker_figures(before: dict | None, after: dict | None) -> list[dict]:
    """Per worker over a measurement: rows, CPU share of one core, clock skew."""
    out = []
    b_workers = (before or {}).get("workers", {})
    for node, w in ((after or {}).get("workers") or {}).items():
        b = b_workers.get(node, {})
        cpu = None
        if b.get("cpu_s") is not None and w["cpu_s"] is not None and w["last_flush"]:
            wall = w["last_flush"] - b["last_flush"]
            cpu = (w["cpu_s"] - b["cpu_s"]) / wall if wall > 0 else None
        out.append(
            {
                "worker": w["index"],
                "id": node,
                "rows": w["rows"] - b.get("rows", 0),
                "cpu": cpu,
                "skew_s": w["skew_s"],
            }
        )
    return sorted(out, key=lambda r: r["worker"])


def wait_window(record_dir: Path, edge: float, expected: int, poll, grace_s: float = 5.0) -> None:
    """Wait (calling ``poll()`` for other failures) until every worker reported past ``edge``."""
    end = time.time() + grace_s
    while not check_window(record_dir, edge, expected):
        if time.time() > end:
            status = read_status(record_dir) or {}
            workers = status.get("workers", {})
            late = [
                f"worker {w['index']} ({n}) last reported at "
                + (
                    time.strftime("%H:%M:%S", time.localtime(w["last_flush"]))
                    if w["last_flush"]
                    else "never"
                )
                for n, w in workers.items()
                if not (w["last_flush"] and w["last_flush"] >= edge)
            ]
            if len(workers) < expected:
                late.append(f"only {len(workers)} of {expected} workers connected")
            raise WorkerLost(
                "load workers stopped reporting samples: " + "; ".join(late),
                hint="a worker died or its clock is far behind the harness's; the window is invalid",
            )
        poll()
        time.sleep(0.2)
