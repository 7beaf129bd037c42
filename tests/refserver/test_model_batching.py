"""Which queue options a version gets: the global file's, its own batching_params.pbtxt's, none."""

import json
import subprocess
import sys

import pytest

from harness.batching import BatchingParameters
from harness.errors import ModelError
from harness.refserver.model_batching import FILE_NAME, queue_options
from tests.conftest import ROOT

GLOBAL = BatchingParameters(max_batch_size=64, num_batch_threads=3, max_enqueued_batches=7).effective()


def test_without_the_flag_every_version_takes_the_global_options(tmp_path):
    (tmp_path / FILE_NAME).write_text("max_batch_size { value: 4 }\n")
    assert queue_options(tmp_path, GLOBAL, per_model=False) is GLOBAL


def test_a_version_without_a_file_is_unbatched(tmp_path):
    assert queue_options(tmp_path, GLOBAL, per_model=True) is None


def test_the_file_sets_the_queue_and_the_pool_stays_global(tmp_path):
    (tmp_path / FILE_NAME).write_text(
        "max_batch_size { value: 4 }\nnum_batch_threads { value: 0 }\n"
        'thread_pool_name { value: "mine" }\nallowed_batch_sizes: 2\nallowed_batch_sizes: 4\n'
    )
    got = queue_options(tmp_path, GLOBAL, per_model=True)
    assert got.max_batch_size == 4 and got.allowed_batch_sizes == (2, 4)
    # the file's pool size (0 would be refused) is not used; fields it omits take TF Serving's
    # defaults, not the global file's
    assert got.num_batch_threads == 3
    assert got.max_enqueued_batches == 10


@pytest.mark.parametrize(
    "text, message, hint",
    [
        ("max_batch_size { value: 4\n", "Invalid protobuf file: '{path}'", "at 1:25: cannot parse"),
        ("max_batch { value: 4 }\n", "Invalid protobuf file: '{path}'", "did you mean 'max_batch_size'"),
        (
            "max_batch_size { value: 0 }\n",
            "{path}: max_batch_size must be positive; was 0",
            "fix the file",
        ),
    ],
)
def test_a_bad_file_fails_the_load_in_one_line(tmp_path, text, message, hint):
    path = tmp_path / FILE_NAME
    path.write_text(text)
    with pytest.raises(ModelError) as err:
        queue_options(tmp_path, GLOBAL, per_model=True)
    assert err.value.message == message.format(path=path)
    assert hint in err.value.hint and "\n" not in str(err.value)


def run_reader(directory, threads=2) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "harness.refserver.model_batching", str(directory), str(threads)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=True,
    )
    return json.loads(out.stdout)


def test_the_reader_the_native_server_runs_prints_the_same_decisions(tmp_path):
    assert run_reader(tmp_path) == {"batching": None}
    (tmp_path / FILE_NAME).write_text("max_batch_size { value: 4 }\n")
    got = run_reader(tmp_path)["batching"]
    assert got["max_batch_size"] == 4 and got["num_batch_threads"] == 2
    (tmp_path / FILE_NAME).write_text("max_batch_size {\n")
    bad = run_reader(tmp_path)
    assert bad["error"] == f"Invalid protobuf file: '{tmp_path / FILE_NAME}'"
