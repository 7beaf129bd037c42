"""Issue 18's "Done when", as a new user would go: the wheel installed into a fresh virtual
environment; from an empty directory, ``harness tune`` on a SavedModel the project did not
export (a string input), with a TF Serving REST request body as the payload, the test image
built to tensorflow/serving's contract, and the user's batching file as the baseline. The run
completes, states the three gains and names the image; then Docker Compose starts the written
deploy/docker-compose.yml (its ports moved to 127.0.0.1) and it serves with the winning
batching: one row more than the winner's max_batch_size is TF Serving's "Task size" rejection,
one row fewer is answered.

Bounded: short windows, 4 trials (the three references and one of the search), one re-measure.
``HARNESS_E2E_TRIALS=5`` runs issue 18's five trials (with ``-s``, the tune output is printed).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from harness.batching import BatchingParameters
from harness.servers.process import free_port
from tests.e2e import usermodel
from tests.packaging.wheelenv import build_wheel, clean_env, harness_file, make_venv

TRIALS = int(os.environ.get("HARNESS_E2E_TRIALS", "4"))  # 5 for issue 18's run by hand
SHORT = [
    "--set", "load.warmup_s=0.5", "--set", "load.window_s=1", "--set", "load.min_windows=2",
    "--set", "load.max_windows=2", "--set", "study.top_k=1", "--set", "study.repeats=1",
]  # fmt: skip
BASELINE = (
    "max_batch_size { value: 16 }\nbatch_timeout_micros { value: 2000 }\n"
    "num_batch_threads { value: 1 }\nmax_enqueued_batches { value: 100 }\n"
)


def predict(port: int, model: str, rows: int) -> tuple[int, dict]:
    url = f"http://127.0.0.1:{port}/v1/models/{model}:predict"
    req = urllib.request.Request(url, data=usermodel.rest_body(rows))
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def wait_available(port: int, model: str, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{port}/v1/models/{model}", timeout=2
            ) as r:
                if json.loads(r.read())["model_version_status"][0]["state"] == "AVAILABLE":
                    return
        except (OSError, ValueError, KeyError, IndexError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"the composed server was not AVAILABLE within {timeout:.0f}s")


def on_loopback(compose_file: Path) -> tuple[int, int]:
    """Move the compose file's published ports from every interface to 127.0.0.1 (free ports);
    nothing else in it changes."""
    grpc_port, rest_port = free_port(), free_port()
    text = compose_file.read_text()
    moved = text.replace("0.0.0.0:8500:8500", f"127.0.0.1:{grpc_port}:8500").replace(
        "0.0.0.0:8501:8501", f"127.0.0.1:{rest_port}:8501"
    )
    assert moved.count("127.0.0.1:") == 2 and "0.0.0.0" not in moved, text
    compose_file.write_text(moved)
    return grpc_port, rest_port


def test_the_users_model_in_the_users_image_from_a_fresh_install(
    client,  # noqa: F811
    reference_image,  # noqa: F811
    compose_cli,
    tmp_path_factory,
    tmp_path,
):
    python = make_venv(
        tmp_path / "venv", build_wheel(tmp_path_factory.getbasetemp() / "wheel"), server=True
    )
    assert harness_file(python).is_relative_to(tmp_path / "venv")  # the wheel's harness
    mine = tmp_path / "mine"  # the user's files, made outside the harness
    model = usermodel.export(mine / "query_scorer")
    payload = usermodel.write_payload(mine / "request.json")
    (mine / "batching.txt").write_text(BASELINE)
    work = tmp_path / "work"
    work.mkdir()

    argv = [
        str(python.parent / "harness"), "tune", "--model-dir", str(model), "--payload", str(payload),
        "--image", reference_image, "--baseline", str(mine / "batching.txt"),
        "--trials", str(TRIALS), "--slo-p99-ms", "500", *SHORT,
    ]  # fmt: skip
    t0 = time.monotonic()
    r = subprocess.run(argv, capture_output=True, text=True, timeout=900, cwd=work, env=clean_env())
    wall = time.monotonic() - t0
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    print(f"\nharness tune, {TRIALS} trials, in {wall:.0f}s:\n{r.stdout}")
    assert "Traceback" not in r.stderr and "oneDNN" not in r.stdout + r.stderr
    (study,) = (work / "results").iterdir()
    summary = json.loads((study / "summary.json").read_text())
    assert summary["server"].startswith(f"{reference_image} (TensorFlow ModelServer: ")
    assert f"measured on {summary['server']}" in r.stdout  # the headline names the image
    assert set(summary["gains"]) == {"batching off", "batching guide CPU start", "your baseline"}
    winner = summary["winner"]["trial"]
    for label, name in [
        ("batching off", "batching off"),
        ("batching guide CPU start", "the batching guide's CPU start"),
        ("your baseline", "your baseline"),
    ]:
        g = summary["gains"][label]
        said = (
            f"the winner is {name} itself"
            if g["reference_trial"] == winner
            else f"{g['gain']:.2f}x the throughput of {name}: "
        )
        assert said in r.stdout, (said, r.stdout)
    assert re.search(r"your baseline", (study / "trials.csv").read_text())
    report = (study / "report.md").read_text()  # the written report says the same
    assert summary["server"] in report and "your baseline" in report

    deploy = study / "deploy"
    batching = summary["winner"]["config"].get("enable_batching")
    won = BatchingParameters.read(study / "best_batching_parameters.txt") if batching else None
    if won is not None:
        assert BatchingParameters.read(deploy / "batching_parameters.txt") == won
    grpc_port, rest_port = on_loopback(deploy / "docker-compose.yml")
    (service,) = yaml.safe_load((deploy / "docker-compose.yml").read_text())["services"].values()
    assert service["image"] == reference_image
    name = service["environment"]["MODEL_NAME"]
    project = f"tfsh-e2e-{os.getpid()}"
    cmd = [compose_cli, "-p", project, "-f", str(deploy / "docker-compose.yml")]
    up = subprocess.run([*cmd, "up", "-d"], capture_output=True, text=True, timeout=180)
    try:
        assert up.returncode == 0, up.stderr
        wait_available(rest_port, name)
        if won is None:  # batching off won (rare with this model): the deploy does not batch
            assert "--enable_batching" not in service["command"], service["command"]
            code, body = predict(rest_port, name, 300)  # no batch limit applies
            assert code == 200 and len(body["predictions"]) == 300, body
        else:
            size = won.max_batch_size
            code, body = predict(rest_port, name, size + 1)
            assert code == 400, body
            want = f"Task size {size + 1} is larger than maximum input batch size {size}"
            assert body["error"] == want
            code, body = predict(rest_port, name, size - 1 or 1)
            assert code == 200 and len(body["predictions"]) == (size - 1 or 1), body
        (c,) = client.containers.list(filters={"label": f"com.docker.compose.project={project}"})
        ports = c.attrs["NetworkSettings"]["Ports"]
        assert {b["HostIp"] for p in ports.values() for b in p} == {"127.0.0.1"}
    finally:
        down = subprocess.run([*cmd, "down"], capture_output=True, text=True, timeout=120)
    assert down.returncode == 0, down.stderr
    assert (
        client.containers.list(all=True, filters={"label": f"com.docker.compose.project={project}"})
        == []
    )
