"""SIGINT, SIGTERM and SIGKILL to a running ``harness tune``: nothing left running, no finished
trial lost, and the same command resumes."""

import os
import random
import signal
import subprocess
import time

from faultkit import (
    ROOT,
    commands_mentioning,
    csv_rows,
    our_containers,
    processes_of,
    run,
    storage_trials,
    tune_cmd,
    wait_for,
)

FINISHED = ("COMPLETE", "FAIL")


def assert_nothing_left(harness_pid: int, tmp_path) -> None:
    # Children stop within the harness's own clean-up; give a killed group a moment to exit.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (
        processes_of(harness_pid) or commands_mentioning(str(tmp_path))
    ):
        time.sleep(0.2)
    assert processes_of(harness_pid) == []  # by our owner marker
    assert commands_mentioning(str(tmp_path)) == []  # by command line (servers, Locust)
    containers = our_containers()
    assert not containers, [c.name for c in containers or []]  # by the project's docker label


def assert_storage_matches_csv(tmp_path) -> dict:
    """Every finished trial in the storage is in trials.csv with the same state and figures."""
    stored = {t.number: t for t in storage_trials(tmp_path) if t.state.name in FINISHED}
    rows = {int(r["number"]): r for r in csv_rows(tmp_path)}
    for number, t in stored.items():
        assert number in rows, f"trial {number} is in the storage but not in trials.csv"
        assert rows[number]["state"] == t.state.name
        if t.state.name == "COMPLETE":
            assert float(rows[number]["items_per_s"]) == t.user_attrs["items_per_s"]
    return {n: r for n, r in rows.items() if r["state"] == "COMPLETE"}


def test_sigint_and_sigterm_at_random_moments_then_resume(tmp_path, model):
    trials = 4
    cmd = tune_cmd(tmp_path, trials, "--no-report")  # what survives the signals, not a report
    rng = random.Random(20261123)  # seeded: the same moments on every run
    # one moment in each stretch: start-up (imports, study, first server), early trials, later
    stretches = [(0.3, 4.0), (4.0, 10.0), (10.0, 18.0)]
    signals = [signal.SIGINT, signal.SIGTERM, rng.choice([signal.SIGINT, signal.SIGTERM])]
    rng.shuffle(signals)
    moments = [(sig, rng.uniform(*span)) for sig, span in zip(signals, stretches)]
    kept: dict = {}
    for sig, delay in moments:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT
        )
        time.sleep(delay)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=90)
        assert proc.returncode in (0, 130), (
            f"{sig!r} after {delay:.1f}s: rc {proc.returncode}\n{err[-3000:]}"
        )
        assert "Traceback" not in err, err[-3000:]
        assert_nothing_left(proc.pid, tmp_path)
        done = assert_storage_matches_csv(tmp_path)
        for number, row in kept.items():  # nothing finished earlier was lost or changed
            assert done[number]["items_per_s"] == row["items_per_s"]
        kept = done
    final = run(cmd, timeout=300)
    assert final.returncode == 0, final.stderr[-3000:]
    done = assert_storage_matches_csv(tmp_path)
    for number, row in kept.items():
        assert done[number]["items_per_s"] == row["items_per_s"]
    assert sum(1 for r in csv_rows(tmp_path) if r["state"] in FINISHED) >= trials
    assert (tmp_path / "res" / "t" / "best_batching_parameters.txt").exists()


def test_sigkill_leaves_children_that_the_next_start_removes(tmp_path, model):
    cmd = tune_cmd(tmp_path, 3, "--no-report")  # the leftovers and the resume, not a report
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    trial = tmp_path / "res" / "t" / "trials" / "0001"
    # in the middle of the second trial: its server runs and Locust drives it
    wait_for(lambda: (trial / "load" / "locust.log").exists(), 120, "the second trial's load")
    time.sleep(1.0)
    # A Locust that hangs (here: stopped) cannot notice that its harness died, as a running one
    # does within a second; nobody but the next start stops it after a SIGKILL of the harness.
    hung = [pid for pid, c in processes_of(proc.pid) if "locust" in c]
    assert hung, processes_of(proc.pid)
    for pid in hung:
        os.kill(pid, signal.SIGSTOP)
    proc.kill()
    proc.wait()
    survivors = processes_of(proc.pid)
    assert "locust" in " ".join(c for _, c in survivors), survivors
    done_before = {int(r["number"]): r for r in csv_rows(tmp_path) if r["state"] == "COMPLETE"}

    again = run(cmd, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "leftovers of a killed run" in again.stdout
    assert processes_of(proc.pid) == []
    assert commands_mentioning(str(tmp_path)) == []
    rows = {int(r["number"]): r for r in csv_rows(tmp_path)}
    for number, row in done_before.items():
        assert rows[number]["items_per_s"] == row["items_per_s"]
    assert sum(1 for r in rows.values() if r["state"] == "COMPLETE") >= 2
