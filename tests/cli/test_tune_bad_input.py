"""``harness tune`` on the user's model, given what a user gets wrong (issue 18's "Bad input"):
each is one ``error: <what> (<what to do>)`` line, exit code 2, no traceback, and no study folder
(nothing is written before the experiment is valid). The model is a user's string-input
SavedModel (tests/e2e/usermodel.py); the image cases ask the real Docker engine."""

from __future__ import annotations

import subprocess
import sys

import pytest

from harness import labels
from tests.e2e import usermodel

BATCHING = "max_batch_size { value: 16 }\nbatch_timeout_micros { value: 2000 }\n"


@pytest.fixture(scope="module")
def user_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("user")
    usermodel.export(d / "qmodel")
    usermodel.write_payload(d / "request.json")
    (d / "numbers.json").write_text('{"instances": [{"query": 3}]}')
    (d / "renamed.json").write_text('{"instances": [{"text": "x"}]}')
    (d / "baseline.txt").write_text(BATCHING)
    (d / "bad_baseline.txt").write_text("max_batch_size { value: 8 }\nallowed_batch_sizes: 4\n")
    (d / "old_style.txt").write_text("max_batch_size: 8\n")
    return d


@pytest.fixture(scope="module")
def gpu_tag(client, reference_image):  # noqa: F811
    """A named fake of a GPU image: the test image tagged ...-gpu (the tag implies the GPU)."""
    from harness.servers.docker import has_gpu_runtime

    if has_gpu_runtime(client, True):
        pytest.skip("this engine has a GPU runtime: nothing to refuse")
    repo, _, tag = reference_image.rpartition(":")
    client.images.get(reference_image).tag(repo, f"{tag}-e2e-gpu")
    yield f"{repo}:{tag}-e2e-gpu"
    client.images.remove(f"{repo}:{tag}-e2e-gpu")


CASES = [
    (
        "missing model directory",
        ["--model-dir", "{d}/no_such_model"],
        ["model.path {d}/no_such_model is not a directory", "give the SavedModel base path"],
    ),
    (
        "a version folder instead of the base path",
        ["--model-dir", "{d}/qmodel/1"],
        ["is a SavedModel, not a base path", "give its parent, {d}/qmodel"],
    ),
    (
        "numbers for a string input",
        ["--payload", "{d}/numbers.json"],
        ["numbers.json: input 'query' is DT_STRING but the payload gives numbers", '{"b64": "..."}'],
    ),
    (
        "an input the signature does not have",
        ["--payload", "{d}/renamed.json"],
        ["renamed.json has input 'text', which the signature does not have (its inputs: query)"],
    ),
    (
        "a string input and no payload",
        ["--payload", ""],
        ["input 'query' is DT_STRING", "pass --payload FILE"],
    ),
    (
        "a payload file that is not there",
        ["--payload", "{d}/no_such.json"],
        ["payload {d}/no_such.json does not exist", "a TF Serving REST request body"],
    ),
    (
        "an image that is not there",
        ["--image", "tfs-harness-e2e/no-such-image:0.0"],
        ["image tfs-harness-e2e/no-such-image:0.0 is not present locally", "build or pull"],
    ),
    (
        "an invalid baseline file",
        ["--baseline", "{d}/bad_baseline.txt"],
        ["--baseline {d}/bad_baseline.txt: Last entry in allowed_batch_sizes must match", "end allowed_batch_sizes"],
    ),
    (
        "a baseline in the old colon form",
        ["--baseline", "{d}/old_style.txt"],
        ["--baseline {d}/old_style.txt", "must be written as 'max_batch_size { value: ... }'"],
    ),
    (
        "a baseline file that is not there",
        ["--baseline", "{d}/missing.txt"],
        ["--baseline cannot read batching parameters file {d}/missing.txt", "give a TF Serving batching"],
    ),
    (
        "a GPU tag without a GPU runtime",
        ["--image", "{gpu}"],
        ["image {gpu} needs a GPU (its tag ends in -gpu)", "install the NVIDIA Container Toolkit"],
    ),
]  # fmt: skip


def fill(text: str, d, gpu: str) -> str:
    """``{d}`` and ``{gpu}`` filled in (not str.format: the errors quote braces)."""
    return text.replace("{d}", str(d)).replace("{gpu}", gpu)


@pytest.mark.parametrize("what, changed, fragments", CASES, ids=[c[0] for c in CASES])
def test_each_mistake_is_one_line_exit_2_and_nothing_written(
    what,
    changed,
    fragments,
    user_files,
    reference_image,  # noqa: F811
    request,
    tmp_path,
):
    d = user_files
    gpu = request.getfixturevalue("gpu_tag") if "{gpu}" in " ".join(changed) else ""
    good = {
        "--model-dir": f"{d}/qmodel", "--payload": f"{d}/request.json",
        "--image": reference_image, "--baseline": f"{d}/baseline.txt",
    }  # fmt: skip
    flags = {**good, **dict(zip(changed[::2], changed[1::2]))}
    argv = [fill(x, d, gpu) for k, v in flags.items() if v for x in (k, v)]
    work = tmp_path / "work"
    work.mkdir()
    r = subprocess.run(
        [sys.executable, "-m", "harness.cli", "tune", *argv, "--trials", "1"],
        capture_output=True, text=True, timeout=120, cwd=work,
    )  # fmt: skip
    lines = r.stderr.strip().splitlines()
    assert r.returncode == labels.EXIT_USAGE, (what, r.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr[-2000:]
    assert lines[0].endswith(")"), lines[0]  # error: <what> (<what to do>)
    for fragment in fragments:
        assert fill(fragment, d, gpu) in lines[0], lines[0]
    assert list(work.iterdir()) == []  # no results/, no models/: nothing written
