"""Process control on psutil: pinning after start reaches every thread, a group stops politely
then by force, and orphans are told from live owners' children by the owner marker. The whole
harness's interrupt and SIGKILL cases are in tests/faults/test_interrupts.py."""

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from harness import procs

# a child that starts four threads at once, before anyone could have pinned it
THREADS = (
    "import threading, time\n"
    "ts = [threading.Thread(target=time.sleep, args=(30,), daemon=True) for _ in range(4)]\n"
    "[t.start() for t in ts]\n"
    "print('up', flush=True)\n"
    "time.sleep(30)\n"
)


def wait_for(cond, timeout=10.0):
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


def test_spawn_pins_every_thread_of_the_child(tmp_path):
    cpu = sorted(os.sched_getaffinity(0))[-1]
    log = tmp_path / "child.log"
    proc = procs.spawn([sys.executable, "-c", THREADS], log, (cpu,))
    try:
        wait_for(lambda: "up" in log.read_text())
        threads = psutil.Process(proc.pid).threads()
        assert len(threads) == 5
        assert all(psutil.Process(t.id).cpu_affinity() == [cpu] for t in threads)
        assert procs.OWNER_ENV in psutil.Process(proc.pid).environ()
    finally:
        procs.stop_group(proc, 5)
    assert proc.returncode == -signal.SIGTERM


def test_pin_reaches_threads_started_before_it(tmp_path):
    log = tmp_path / "child.log"
    proc = procs.spawn([sys.executable, "-c", THREADS], log)  # unpinned
    try:
        wait_for(lambda: "up" in log.read_text())
        procs.pin(proc.pid, [0])
        threads = psutil.Process(proc.pid).threads()
        assert all(psutil.Process(t.id).cpu_affinity() == [0] for t in threads)
    finally:
        procs.stop_group(proc, 5)


def test_a_cpu_that_does_not_exist_is_refused_and_nothing_is_left(tmp_path):
    before = procs.marked(lambda token: token == procs.owner_token())
    with pytest.raises(OSError, match=r"cannot pin it to CPUs \[4096\]"):
        procs.spawn(["sleep", "30"], tmp_path / "x.log", (4096,))
    assert procs.marked(lambda token: token == procs.owner_token()) == before


def test_stop_group_continues_a_stopped_child_and_kills_a_member_that_ignores_term(tmp_path):
    proc = procs.spawn(["sleep", "30"], tmp_path / "a.log")
    os.kill(proc.pid, signal.SIGSTOP)
    wait_for(lambda: procs.process_state(proc.pid) == "T")
    procs.stop_group(proc, 5)
    assert proc.returncode == -signal.SIGTERM and procs.process_state(proc.pid) is None
    assert not procs.pid_alive(proc.pid)

    # the leader exits on SIGTERM; a member of its group ignores it and must be killed
    script = "trap '' TERM; sleep 30 & echo $! > pid; trap - TERM; wait"
    proc = procs.spawn(["bash", "-c", script], tmp_path / "b.log", cwd=tmp_path)
    wait_for(lambda: (tmp_path / "pid").exists() and (tmp_path / "pid").read_text().strip())
    member = psutil.Process(int((tmp_path / "pid").read_text()))
    t0 = time.monotonic()
    procs.stop_group(proc, 1.0)
    assert time.monotonic() - t0 < 5
    assert proc.returncode is not None
    assert not member.is_running() or member.status() == psutil.STATUS_ZOMBIE


def test_orphans_are_told_apart_by_their_owner(tmp_path):
    gone = subprocess.Popen(["true"])
    gone.wait()
    env_dead = {**os.environ, procs.OWNER_ENV: f"{gone.pid}:1.00"}
    env_reused = {**os.environ, procs.OWNER_ENV: f"{os.getpid()}:1.00"}  # our pid, not our start
    dead = subprocess.Popen(["sleep", "31"], env=env_dead, start_new_session=True)
    reused = subprocess.Popen(["sleep", "32"], env=env_reused, start_new_session=True)
    live = subprocess.Popen(["sleep", "33"], env=procs.marked_env(), start_new_session=True)
    unmarked = subprocess.Popen(["sleep", "34"], start_new_session=True)
    try:
        wait_for(lambda: all(procs.process_state(p.pid) == "S" for p in (dead, reused, live)))
        orphans = dict(procs.find_orphans())
        assert orphans.get(dead.pid) == "sleep 31"
        assert orphans.get(reused.pid) == "sleep 32"
        assert live.pid not in orphans and unmarked.pid not in orphans
        # ours, and none of the others (an earlier test's server of ours may be reaped too)
        reaped = procs.reap_own(2.0)
        assert "sleep 33" in reaped
        assert not {"sleep 31", "sleep 32", "sleep 34"} & set(reaped)
        assert live.poll() == -signal.SIGTERM
        assert dead.poll() is None and unmarked.poll() is None
    finally:
        for p in (dead, reused, live, unmarked):
            procs.stop_group(p, 2)
