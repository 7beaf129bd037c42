"""Safe defaults: every socket the harness's servers and Locust processes listen on is on the
loopback interface."""

from __future__ import annotations

import subprocess
import time

import psutil
from faultkit import ROOT, processes_of, tune_cmd, wait_for, write_experiment

LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


def test_servers_and_locust_listen_on_loopback_only(tmp_path, model):
    text = write_experiment(tmp_path, 1).read_text().replace("[load]", "[load]\nprocesses = 2")
    exp = tmp_path / "two.toml"
    exp.write_text(text)
    cmd = tune_cmd(tmp_path, 1, "--no-report")  # the sockets are the point, not the report
    cmd[cmd.index("--experiment") + 1] = str(exp)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    try:
        trial = tmp_path / "res" / "t" / "trials" / "0000"
        wait_for(lambda: (trial / "load" / "locust.log").exists(), 120, "the trial's load")
        time.sleep(2.0)
        ours = {pid: cmd for pid, cmd in processes_of(proc.pid)}
        listening = [
            (ours[c.pid][:60], c.laddr.ip, c.laddr.port)
            for c in psutil.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN and c.pid in ours
        ]
        assert any("server" in w for w, _, _ in listening), listening  # the server is there
        assert [x for x in listening if x[1] not in LOOPBACK] == []
    finally:
        out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-3000:]
