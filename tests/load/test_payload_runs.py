"""A string-input model load-tested end to end with a real payload: `harness run --payload` over
gRPC and REST on both reference-server paths; and the one-line refusals that come before any
load (no payload for a string input, a payload that does not fit, a study left unwritten)."""

import json
import subprocess
import sys
import time

import pytest

from harness.labels import EXIT_USAGE
from tests.conftest import ROOT, refserver_impls

RUN_FAST = ["--users", "4", "--warmup", "0.5", "--window", "1", "--max-windows", "2"]


@pytest.fixture(scope="module")
def jpeg_payload(tmp_path_factory):
    """The demo model's own sample: six random JPEGs of four sizes, as a REST request body."""
    path = tmp_path_factory.mktemp("payload") / "jpegs.json"
    harness("model", "payload", "image_jpeg", "--output", str(path), "--rows", "6", check=True)
    doc = json.loads(path.read_text())
    assert len(doc["instances"]) == 6 and set(doc["instances"][0]) == {"b64"}
    return path


def harness(*args, cwd=ROOT, timeout=240, check=False):
    out = subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )
    if check:
        assert out.returncode == 0, out.stderr[-3000:]
    return out


def _protocol_and_path() -> list[tuple[str, str]]:
    """Each protocol once, each request path once: gRPC on the first path (native when built),
    REST on the last (Python). The other two pairs take the same code on each side: Locust
    builds a protocol's requests from the payload alike whichever path serves them, and each
    path answers the image model's JPEGs over both protocols in
    tests/refserver/test_string_tensors.py (test_image_jpeg_scores_real_jpegs_over_both_protocols)."""
    impls = refserver_impls()
    return [("grpc", impls[0]), ("rest", impls[-1])]


@pytest.mark.parametrize("protocol, refserver_impl", _protocol_and_path())
def test_harness_run_sends_the_payloads_jpegs(
    jpeg_payload, model_root, tmp_path, protocol, refserver_impl, monkeypatch
):
    from harness.refserver.native import launch

    if refserver_impl == "native" and launch.binary() is None:
        pytest.skip("the native server is not built (bash scripts/build-native.sh)")
    monkeypatch.setenv(launch.ENV, refserver_impl)  # the server `harness run` starts takes it
    out = harness(
        "run", "--model", "image_jpeg", "--models-dir", str(model_root), "--binary", "reference",
        "--payload", str(jpeg_payload), "--protocol", protocol, "--request-sizes", "1:50,4:50",
        *RUN_FAST, "--max-batch-size", "8", "--workdir", str(tmp_path / "run"), "--json",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    assert doc["ok"] > 0 and doc["ok"] == doc["requests"], doc
    assert doc["errors"] == {}, doc["errors"]
    assert doc["items_per_s"] > doc["throughput_rps"]  # 4-row requests were among them
    assert doc["server"]["batches"] > 0
    log = (tmp_path / "run" / "server" / "server.log").read_text(errors="replace")
    want = "native" if refserver_impl == "native" else "Python"
    assert f"Request path: {want}" in log


def test_a_string_input_without_a_payload_is_refused_before_any_load(model_root, tmp_path):
    started = time.monotonic()
    out = harness(
        "run", "--model", "image_jpeg", "--models-dir", str(model_root), "--binary", "reference",
        *RUN_FAST, "--workdir", str(tmp_path / "run"),
    )  # fmt: skip
    assert out.returncode == EXIT_USAGE
    line = out.stderr.strip().splitlines()[-1]
    assert line.startswith("error: input 'image_bytes' is DT_STRING: random values cannot"), line
    assert "--payload FILE" in line
    assert not (tmp_path / "run").exists()  # no server was started, no load sent
    assert time.monotonic() - started < 60


def test_a_payload_that_does_not_fit_is_refused_before_the_first_trial(mlp_base, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"instances": [{"x": [0.5] * 16, "mask": [1]}]}))
    out = harness(
        "run", "--model-dir", str(mlp_base), "--payload", str(bad), *RUN_FAST,
        "--workdir", str(tmp_path / "run"),
    )  # fmt: skip
    assert out.returncode == EXIT_USAGE
    line = out.stderr.strip().splitlines()[-1]
    assert f"error: payload {bad} has input 'mask', which the signature does not have" in line
    assert not (tmp_path / "run").exists()
    # harness tune: the study folder is not even created
    results = tmp_path / "results"
    out = harness(
        "tune", "--experiment", "default", "--set", 'model.demo="mlp"',
        "--set", f'load.payload="{bad}"', "--results-dir", str(results), "--trials", "1",
        cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == EXIT_USAGE, out.stderr[-2000:]
    assert "has input 'mask', which the signature does not have" in out.stderr
    assert not results.exists() or not any(results.iterdir())


def test_locust_users_stop_the_run_at_once_with_the_same_message(tmp_path, model_root):
    """By hand (no harness preflight): the first user that cannot build a request stops Locust
    with the harness's one-line message and exit code 2, not a traceback per user."""
    from harness.models.export import ensure
    from tests.conftest import RefServer

    base = model_root / "image_jpeg"
    ensure("image_jpeg", base)
    server = RefServer(["--model_name=jpeg", f"--model_base_path={base}"], tmp_path / "s.log")
    try:
        server.wait_ready("jpeg")
        started = time.monotonic()
        out = subprocess.run(
            [
                sys.executable, "-m", "locust", "-f", str(ROOT / "locustfiles" / "grpc.py"),
                "--headless", "--host", f"grpc://{server.grpc_target}", "-u", "8", "-r", "8",
                "--run-time", "60s", "--model-name", "jpeg", "--only-summary",
            ],
            capture_output=True, text=True, timeout=90, cwd=tmp_path,
        )  # fmt: skip
    finally:
        server.stop()
    assert time.monotonic() - started < 30
    assert out.returncode == 2, out.stderr[-2000:]
    errors = [x for x in out.stderr.splitlines() if x.startswith("error: ")]
    assert len(errors) == 1 and "input 'image_bytes' is DT_STRING" in errors[0]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
