"""CPU sets for the server and the load generator (a core each, so neither measures the other)."""

from __future__ import annotations

import os

from harness.errors import ConfigError


def parse_cpus(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    cpus: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.partition("-")
            cpus.extend(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise ConfigError(f"CPU list {text!r} is not like 0 or 0-3 or 0,2") from None
    allowed = os.sched_getaffinity(0)
    missing = sorted(set(cpus) - allowed)
    if missing:
        raise ConfigError(
            f"CPU list {text!r} names CPU {missing[0]}, which this machine does not give us "
            f"(available: {','.join(map(str, sorted(allowed)))})",
            hint="set server.cpus and load.cpus (or --server-cpus/--load-cpus) to available CPUs",
        )
    return tuple(cpus)


def default_cpus(server: tuple[int, ...] | None, load: tuple[int, ...] | None):
    cores = sorted(os.sched_getaffinity(0))
    if server is None and load is None and len(cores) >= 2:
        return (cores[0],), tuple(cores[1:])
    if server is not None and load is None:
        rest = tuple(c for c in cores if c not in server)
        return server, rest or None
    return server, load
