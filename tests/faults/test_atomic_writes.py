"""Results are written atomically: an interrupted or killed write leaves the previous file whole."""

from __future__ import annotations

import csv
import errno
import io
import os
import random
import signal
import subprocess
import sys
import time

import pytest
from faultkit import ROOT

from harness.batching import BatchingParameters
from harness.tuning import outputs


def rows(version: str, n: int = 4000) -> list[dict]:
    return [
        {"number": i, "state": "COMPLETE", "version": version, "pad": "x" * 40} for i in range(n)
    ]


def csv_text(version: str) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows(version, 1)[0]))
    w.writeheader()
    w.writerows(rows(version))
    return buf.getvalue()


def test_an_interrupt_between_write_and_rename_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "trials.csv"
    outputs.write_csv_atomic(path, rows("A"))

    def interrupted(*a):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        outputs.write_csv_atomic(path, rows("B"))
    monkeypatch.undo()
    assert path.read_bytes().decode() == csv_text("A")
    assert [p.name for p in tmp_path.iterdir()] == ["trials.csv"]  # no temporary left behind


def test_a_full_disk_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "summary.json"
    outputs.write_json_atomic(path, {"v": 1})

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError):
        outputs.write_json_atomic(path, {"v": 2, "big": "y" * 100_000})
    monkeypatch.undo()
    assert path.read_text() == '{\n  "v": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


WRITER = """
import sys
from pathlib import Path
from harness.batching import BatchingParameters
from harness.tuning import outputs
sys.path.insert(0, {tests!r})
from test_atomic_writes import rows
d = Path(sys.argv[1])
i = 0
print("ready", flush=True)
while True:
    v = "AB"[i % 2]
    outputs.write_csv_atomic(d / "trials.csv", rows(v))
    outputs.write_json_atomic(d / "summary.json", {{"version": v, "rows": rows(v, 500)}})
    BatchingParameters(max_batch_size=8 if v == "A" else 16).write(d / "batching_parameters.txt")
    i += 1
"""


def test_sigkill_at_random_moments_never_leaves_a_truncated_file(tmp_path):
    import json

    script = tmp_path / "writer.py"
    script.write_text(WRITER.format(tests=str(ROOT / "tests" / "faults")))
    out = tmp_path / "out"
    out.mkdir()
    rng = random.Random(42)
    whole = {"A": csv_text("A"), "B": csv_text("B")}
    kills = 0
    for _ in range(8):
        proc = subprocess.Popen(
            [sys.executable, str(script), str(out)], stdout=subprocess.PIPE, cwd=ROOT
        )
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(rng.uniform(0.05, 0.6))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        if not (out / "trials.csv").exists():
            continue  # killed before the first write finished: no file, never half a file
        assert (out / "trials.csv").read_bytes().decode() in whole.values()
        doc = json.loads((out / "summary.json").read_text())
        assert len(doc["rows"]) == 500
        params = BatchingParameters.read(out / "batching_parameters.txt")
        assert params.max_batch_size in (8, 16)
    assert kills == 8
    assert (out / "trials.csv").exists()  # at least one write completed over the eight runs
