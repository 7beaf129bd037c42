"""Containers killed or frozen mid-trial, and what a container is allowed to do."""

from __future__ import annotations

import os
import threading
import time

import pytest
from faultkit import wait_for, write_experiment

from harness import config
from harness.batching import BatchingParameters
from harness.errors import ServerError
from harness.tuning.space import TrialConfig

docker = pytest.importorskip("docker")


@pytest.fixture
def runner(client, reference_image, tmp_path, model):  # the session's engine and test image
    from harness.tuning.trial import TrialRunner

    text = write_experiment(tmp_path, 1).read_text()
    text = text.replace('binary = "reference"', 'backend = "docker"\nmemory = "2g"')
    (tmp_path / "d.toml").write_text(text)
    r = TrialRunner(config.load(tmp_path / "d.toml"))
    yield r
    r.close()


def mine(client):
    from harness.servers.docker import LABEL, OWNER_LABEL

    return [
        c
        for c in client.containers.list(all=True, filters={"label": f"{LABEL}=true"})
        if c.labels.get(OWNER_LABEL) == str(os.getpid())
    ]


def _during_load(client, workdir, action, seen: dict) -> None:
    wait_for(lambda: (workdir / "load" / "locust.log").exists(), 120, "the trial's load")
    time.sleep(1.0)
    (container,) = mine(client)
    container.reload()
    seen["attrs"] = container.attrs
    seen["id"] = container.id
    action(container)


def _measure_with(runner, client, workdir, action) -> tuple[dict, Exception | None]:
    seen: dict = {}
    t = threading.Thread(target=_during_load, args=(client, workdir, action, seen), daemon=True)
    t.start()
    cfg = TrialConfig(batching=BatchingParameters(max_batch_size=8, num_batch_threads=1))
    try:
        runner.measure(cfg, workdir)
        error = None
    except ServerError as exc:
        error = exc
    t.join(30)
    return seen, error


def test_container_killed_or_paused_mid_trial_then_a_fresh_one(runner, client, tmp_path):
    killed, error = _measure_with(runner, client, tmp_path / "t0", lambda c: c.kill())
    assert error is not None and "exited with code 137" in str(error)
    assert "Running gRPC ModelServer" in str(error)  # the container's last log lines
    assert mine(client) == []

    paused, error = _measure_with(runner, client, tmp_path / "t1", lambda c: c.pause())
    assert error is not None and "is paused" in str(error)
    assert mine(client) == []  # the frozen container was removed, not left

    result = runner.measure(
        TrialConfig(batching=BatchingParameters(max_batch_size=8)), tmp_path / "t2"
    )
    assert result["items_per_s"] > 0
    assert mine(client) == []

    # what the containers were allowed: nothing more than serving on the host's loopback
    host = killed["attrs"]["HostConfig"]
    assert host["Privileged"] is False
    assert host["CapDrop"] == ["ALL"] and not host.get("CapAdd")
    assert "no-new-privileges" in host["SecurityOpt"]
    assert host["ReadonlyRootfs"] is True
    assert host["NetworkMode"] not in ("host",) and not host.get("PidMode")
    assert all(not m["RW"] for m in killed["attrs"]["Mounts"])  # model and config read-only
    ports = killed["attrs"]["NetworkSettings"]["Ports"]
    assert {b["HostIp"] for p in ports.values() for b in p} == {"127.0.0.1"}
