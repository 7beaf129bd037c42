"""What a server used while it was measured: CPU time and peak memory.

A process server is read with psutil (the server and every child of it), a container through the
Docker stats API (the figures ``docker stats`` shows). ``UsageMonitor`` samples in a thread and
answers for any interval afterwards: CPU-seconds between two instants by linear interpolation
between the samples around them (under steady load a server burns CPU at a steady rate, so the
error is a small part of one sample period's use), and the peak memory seen.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable

import psutil

SAMPLE_EVERY_S = 0.5


@dataclasses.dataclass(frozen=True)
class Usage:
    cpu_s: float  # CPU time used so far (user + system), every process of the server
    memory_bytes: int  # resident now (a container: its working set, page cache excluded)
    peak_bytes: int = 0  # the kernel's high-water mark where one is kept, else 0


def process_usage(pid: int) -> Usage | None:
    """The process ``pid`` and its children (None once it is gone)."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return None
    cpu, rss, peak = 0.0, 0, 0
    for p in procs:
        try:
            with p.oneshot():
                times, mem = p.cpu_times(), p.memory_info()
        except psutil.Error:
            continue  # a child that just exited
        cpu += times.user + times.system
        rss += mem.rss
        peak += high_water_mark(p.pid)
    return Usage(cpu, rss, peak)


def high_water_mark(pid: int) -> int:
    """The process's peak resident set (``VmHWM`` in /proc/<pid>/status), in bytes; 0 where
    there is no /proc. Read by hand: psutil does not expose it, and the peak between two samples
    would otherwise be missed."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def container_usage(container) -> Usage | None:
    """A container's CPU time and working set from one stats read (None when it has none)."""
    from harness.servers.docker_common import sdk

    docker = sdk()
    try:
        try:
            stats = container.stats(stream=False, one_shot=True)
        except docker.errors.InvalidVersion:  # an engine before API 1.41: a full read (~1 s)
            stats = container.stats(stream=False)
    except (docker.errors.DockerException, OSError, ValueError):
        return None
    cpu = ((stats.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage")
    mem = stats.get("memory_stats") or {}
    if cpu is None or "usage" not in mem:
        return None
    extra = mem.get("stats") or {}
    cache = extra.get("total_inactive_file", extra.get("inactive_file", 0))  # cgroup v1 / v2
    return Usage(cpu / 1e9, max(int(mem["usage"]) - int(cache), 0))


class UsageMonitor:
    """Samples ``read()`` every ``every_s`` in a thread until ``stop()``."""

    def __init__(self, read: Callable[[], Usage | None], every_s: float = SAMPLE_EVERY_S):
        self._read = read
        self.every_s = every_s
        self.samples: list[tuple[float, Usage]] = []
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._sample()
        self._thread = threading.Thread(target=self._loop, name="server-usage", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        t0 = time.time()
        u = self._read()
        if u is not None:
            with self._lock:
                self.samples.append(((t0 + time.time()) / 2, u))

    def _loop(self) -> None:
        while not self._stopped.wait(self.every_s):
            self._sample()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(5)

    def over(self, t0: float, t1: float) -> dict:
        """The server's CPU-seconds and mean cores in use from ``t0`` to ``t1`` (wall-clock
        seconds), and its peak memory so far; None where nothing could be read."""
        self._sample()
        with self._lock:
            samples = list(self.samples)
        out = {"server_cpu_s": None, "server_cores": None, "server_peak_memory_mb": None}
        if samples:
            peak = max(max(u.memory_bytes, u.peak_bytes) for _, u in samples)
            out["server_peak_memory_mb"] = round(peak / 2**20, 1)
        if len(samples) >= 2 and t1 > t0:
            cpu = max(_cpu_at(samples, t1) - _cpu_at(samples, t0), 0.0)
            out["server_cpu_s"] = round(cpu, 3)
            out["server_cores"] = round(cpu / (t1 - t0), 3)
        return out


def _cpu_at(samples: list[tuple[float, Usage]], t: float) -> float:
    """CPU time at instant ``t``, interpolated between the samples around it (the nearest
    sample when ``t`` is outside them)."""
    if t <= samples[0][0]:
        return samples[0][1].cpu_s
    for (ta, a), (tb, b) in zip(samples, samples[1:], strict=False):
        if ta <= t <= tb:
            return a.cpu_s + (b.cpu_s - a.cpu_s) * ((t - ta) / (tb - ta) if tb > ta else 1.0)
    return samples[-1][1].cpu_s
