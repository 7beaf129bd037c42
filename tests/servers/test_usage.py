"""The server's CPU and memory as a trial records them (harness.servers.usage)."""

import subprocess
import sys
import time

import pytest

from harness.servers.usage import Usage, UsageMonitor, _cpu_at, high_water_mark, process_usage


def test_cpu_between_two_instants_is_interpolated_between_samples():
    samples = [(10.0, Usage(1.0, 0)), (11.0, Usage(2.0, 0)), (13.0, Usage(2.0, 0))]
    assert _cpu_at(samples, 10.5) == pytest.approx(1.5)
    assert _cpu_at(samples, 12.0) == pytest.approx(2.0)
    assert _cpu_at(samples, 5.0) == 1.0 and _cpu_at(samples, 20.0) == 2.0  # clamped


def test_a_busy_process_and_its_child_are_counted_with_their_peak_memory():
    # a parent that sleeps and a child that spins: the server's figure is both of them
    code = (
        "import subprocess, sys, time; "
        "c = subprocess.Popen([sys.executable, '-c', 'x = bytearray(64 << 20)\\nwhile True: pass']); "
        "time.sleep(30)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        time.sleep(0.5)  # the child is running and holds its 64 MiB
        monitor = UsageMonitor(lambda: process_usage(proc.pid), every_s=0.1)
        t0 = time.time()
        time.sleep(1.5)
        t1 = time.time()
        time.sleep(0.3)
        figures = monitor.over(t0, t1)
        monitor.stop()
        assert 0.2 < figures["server_cores"] <= 1.1  # one spinning core, however busy the machine
        assert figures["server_cpu_s"] == pytest.approx(figures["server_cores"] * (t1 - t0), rel=0.01)
        assert figures["server_peak_memory_mb"] > 64
        assert high_water_mark(proc.pid) > 0
    finally:
        for child in __import__("psutil").Process(proc.pid).children():
            child.kill()
        proc.kill()
        proc.wait()
    assert process_usage(proc.pid) is None  # gone: nothing to read


def test_nothing_read_gives_blank_figures():
    monitor = UsageMonitor(lambda: None, every_s=0.05)
    time.sleep(0.1)
    monitor.stop()
    assert monitor.over(0, 1) == {
        "server_cpu_s": None,
        "server_cores": None,
        "server_peak_memory_mb": None,
    }
