import pytest

from harness.batching import BatchingParameters
from harness.errors import ConfigError

FULL = """
# every field TF Serving's batching guide shows
max_batch_size { value: 128 }
batch_timeout_micros { value: 0 }
max_enqueued_batches { value: 1000000 }
num_batch_threads { value: 8 }
allowed_batch_sizes: 32
allowed_batch_sizes: 128
pad_variable_length_inputs: true
enable_large_batch_splitting { value: true }
max_execution_batch_size { value: 128 }
"""


def test_reads_every_field():
    p = BatchingParameters.from_text(FULL)
    assert p.max_batch_size == 128
    assert p.batch_timeout_micros == 0
    assert p.max_enqueued_batches == 1000000
    assert p.num_batch_threads == 8
    assert p.allowed_batch_sizes == (32, 128)
    assert p.pad_variable_length_inputs is True
    assert p.enable_large_batch_splitting is True
    assert p.max_execution_batch_size == 128


def test_round_trip_through_text():
    p = BatchingParameters.from_text(FULL)
    assert BatchingParameters.from_text(p.to_text()) == p


def test_omitted_fields_take_tf_serving_defaults():
    eff = BatchingParameters().effective(cores=3)
    assert eff.max_batch_size == 1000
    assert eff.batch_timeout_micros == 0
    assert eff.max_enqueued_batches == 10
    assert eff.num_batch_threads == 3
    assert eff.allowed_batch_sizes == ()
    assert eff.enable_large_batch_splitting is False
    assert eff.max_execution_batch_size == 1000


def test_written_file_omits_unset_fields(tmp_path):
    path = BatchingParameters(max_batch_size=8).write(tmp_path / "b.txt")
    assert path.read_text() == "max_batch_size { value: 8 }\n"
    assert BatchingParameters.read(path).max_batch_size == 8


@pytest.mark.parametrize(
    "params, message",
    [
        (dict(num_batch_threads=0), "num_batch_threads must be positive; was 0"),
        (dict(max_batch_size=0), "max_batch_size must be positive; was 0"),
        (dict(batch_timeout_micros=-1), "batch_timeout_micros must be non-negative; was -1"),
        (dict(max_enqueued_batches=-2), "max_enqueued_batches must be positive; was -2"),
        (
            dict(max_batch_size=8, allowed_batch_sizes=(2, 4)),
            "Last entry in allowed_batch_sizes must match max_batch_size; last entry was 4; expected 8",
        ),
        (
            dict(max_batch_size=8, enable_large_batch_splitting=True, max_execution_batch_size=16),
            "max_execution_batch_size (16) must be less than or equal to max_batch_size (8)",
        ),
    ],
)
def test_refuses_what_tf_serving_refuses(params, message):
    with pytest.raises(ConfigError) as exc:
        BatchingParameters(**params).effective(cores=2)
    assert message in str(exc.value)


def test_zero_enqueued_batches_is_raised_to_one_without_splitting():
    assert BatchingParameters(max_enqueued_batches=0).effective(cores=1).max_enqueued_batches == 1
    with pytest.raises(ConfigError):
        BatchingParameters(max_enqueued_batches=0, enable_large_batch_splitting=True).effective(
            cores=1
        )


def test_allowed_sizes_end_with_execution_size_when_splitting():
    p = BatchingParameters(
        max_batch_size=64,
        enable_large_batch_splitting=True,
        max_execution_batch_size=16,
        allowed_batch_sizes=(8, 16),
    )
    assert p.effective(cores=1).max_execution_batch_size == 16


@pytest.mark.parametrize(
    "text, fragment",
    [
        (
            "max_batch_size { value: 8 }\nmax_batch_sise { value: 8 }",
            "has no field named 'max_batch_sise'",
        ),
        ("max_batch_size { value: 8 ", "missing '}'"),
        ("max_batch_size { value: 'eight' }", "max_batch_size must be an integer"),
        ("max_batch_size: 8", "must be written as 'max_batch_size { value: ... }'"),
        ("max_batch_size { value: 8 }\nmax_batch_size { value: 9 }", "given 2 times"),
        ("allowed_batch_sizes: 2.5", "allowed_batch_sizes entries must be integers"),
        ("max_batch_size { value: 8 } %", "cannot parse text proto"),
    ],
)
def test_bad_files_name_the_problem(text, fragment):
    with pytest.raises(ConfigError) as exc:
        BatchingParameters.from_text(text, "params.txt")
    assert fragment in str(exc.value)
    assert "params.txt" in str(exc.value)


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read batching parameters file"):
        BatchingParameters.read(tmp_path / "nope.txt")
