"""``harness profile``, part 1: the model's execution time per batch size, timed offline.

The model is loaded with the reference server's own runner (``LoadedModel``, the callable the
batch threads call) in a child process pinned to the server's cores, and each batch size is
timed many times (median and the 10th/90th percentiles). Offline, so nothing but the model is
timed. The child also times a full garbage collection in a Python process holding the model:
what the reference server's collections cost (``harness.tuning.profiling`` counts how often
they happen). TensorFlow is imported in the child only.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from harness.errors import HarnessError

ROOT = Path(__file__).resolve().parents[2]


def batch_sizes(max_size: int) -> list[int]:
    """1, 2, 3, 4, 6, 8, 12, 16, ...: powers of two and the midpoints, up to ``max_size``."""
    out = {max_size}
    p = 1
    while p <= max_size:
        out.add(p)
        if p >= 2 and p + p // 2 <= max_size:
            out.add(p + p // 2)
        p *= 2
    return sorted(out)


_OFFLINE = r"""
import json, os, sys, time
import numpy as np
cpus, path, version, sizes, budget = json.loads(sys.argv[1])
if cpus:
    os.sched_setaffinity(0, set(cpus))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, %(root)r)
from harness.refserver.model import LoadedModel
from harness.refserver.tensors import NUMPY_DTYPE
m = LoadedModel(path, version)
sig = m.signature(%(signature)r)
rng = np.random.default_rng(0)
def feed(b):
    out = []
    for spec in sig.inputs.values():
        shape = [b] + [d if d and d > 0 else 1 for d in spec.shape[1:]]
        out.append(rng.random(shape).astype(NUMPY_DTYPE[spec.dtype]))
    return out
# one size at a time, as a server runs one config: alternating sizes between calls (tried:
# three interleaved rounds) read the small sizes 15 to 17 percent slower than the batch
# thread's own clock in the busy server, against 2 to 3 percent one size at a time
res = {}
for b in sizes:
    x = feed(b)
    m.run(sig, x); m.run(sig, x)
    times = []
    t_end = time.perf_counter() + budget
    while len(times) < 5 or (time.perf_counter() < t_end and len(times) < 400):
        t = time.perf_counter(); m.run(sig, x); times.append(time.perf_counter() - t)
    times = np.array(times) * 1e6
    res[b] = {"median": float(np.median(times)), "p10": float(np.percentile(times, 10)),
              "p90": float(np.percentile(times, 90)), "n": len(times)}
    print(json.dumps({"size": b, **res[b]}), file=sys.stderr, flush=True)
import gc
pauses = []
for _ in range(3):
    t = time.perf_counter(); gc.collect(); pauses.append((time.perf_counter() - t) * 1e3)
print(json.dumps({"exec": res, "gc_ms": sorted(pauses)[1], "objects": len(gc.get_objects())}))
"""


def offline_exec(
    model_dir: Path, cpus, max_size: int, signature: str, budget_s: float, echo
) -> tuple[dict[int, dict], dict]:
    """Execution time per batch size, and how long a full garbage collection takes in a Python
    process holding the model (what the reference server's collections cost)."""
    versions = sorted(int(p.name) for p in Path(model_dir).iterdir() if p.name.isdigit())
    if not versions:
        raise HarnessError(f"no version directory under {model_dir}")
    v = versions[-1]
    sizes = batch_sizes(max_size)
    arg = json.dumps([list(cpus or []), str(Path(model_dir) / str(v)), v, sizes, budget_s])
    code = _OFFLINE % {"root": str(ROOT), "signature": signature}
    echo(f"timing {len(sizes)} batch sizes offline on cpus {list(cpus or [])}: {sizes}")
    proc = subprocess.Popen(
        [sys.executable, "-c", code, arg],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = []
    for line in proc.stderr:
        if line.startswith("{"):
            d = json.loads(line)
            echo(f"  batch {d['size']:>4}: {d['median'] / 1e3:8.2f} ms (n={d['n']})")
        else:
            lines.append(line)
    out = proc.stdout.read()
    if proc.wait() != 0:
        raise HarnessError("offline timing failed: " + "".join(lines[-5:]).strip())
    data = json.loads(out.strip().splitlines()[-1])
    exec_us = {int(k): v for k, v in data["exec"].items()}
    return exec_us, {"offline_pause_ms": data["gc_ms"], "offline_objects": data["objects"]}
