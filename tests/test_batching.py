import dataclasses

import pytest
from google.protobuf import text_format

from harness import tfs_formats
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


EVERY_FIELD = BatchingParameters(
    max_batch_size=64,
    batch_timeout_micros=2500,
    max_enqueued_batches=100,
    num_batch_threads=3,
    thread_pool_name="p",
    allowed_batch_sizes=(8, 16),
    pad_variable_length_inputs=True,
    enable_large_batch_splitting=True,
    max_execution_batch_size=16,
)


def test_every_field_is_written_as_tf_serving_declares_it():
    assert EVERY_FIELD.to_text() == (
        "max_batch_size { value: 64 }\n"
        "batch_timeout_micros { value: 2500 }\n"
        "max_enqueued_batches { value: 100 }\n"
        "num_batch_threads { value: 3 }\n"
        'thread_pool_name { value: "p" }\n'
        "allowed_batch_sizes: 8\n"
        "allowed_batch_sizes: 16\n"
        "pad_variable_length_inputs: true\n"
        "enable_large_batch_splitting { value: true }\n"
        "max_execution_batch_size { value: 16 }\n"
    )


@pytest.mark.parametrize("name", [f.name for f in dataclasses.fields(BatchingParameters)])
def test_each_field_round_trips_alone(name):
    """Set one field, write, read back: the same value, and nothing else set."""
    p = BatchingParameters(**{name: getattr(EVERY_FIELD, name)})
    assert BatchingParameters.from_text(p.to_text()) == p
    assert p.to_text().startswith(name)


@pytest.mark.parametrize("value", [False, True])
def test_explicit_false_and_absent_stay_apart(value):
    for name in ("pad_variable_length_inputs", "enable_large_batch_splitting"):
        p = BatchingParameters(**{name: value})
        assert BatchingParameters.from_text(p.to_text()) == p
    assert BatchingParameters.from_text("").pad_variable_length_inputs is None


def test_written_text_parses_with_plain_text_format():
    msg = tfs_formats.BatchingParameters()
    text_format.Parse(EVERY_FIELD.to_text(), msg)
    assert msg.thread_pool_name.value == "p"
    assert msg.max_batch_size.value == 64 and msg.max_execution_batch_size.value == 16
    assert list(msg.allowed_batch_sizes) == [8, 16]
    assert msg.enable_large_batch_splitting.value is True
    assert BatchingParameters.from_message(msg) == EVERY_FIELD
    assert msg == EVERY_FIELD.to_message()


def test_text_format_variants_tf_serving_accepts():
    """Angle brackets, a colon before a block, lists, separators and comments are all text format."""
    p = BatchingParameters.from_text(
        "max_batch_size: < value: 8 >; allowed_batch_sizes: [4, 8], # comment\n"
        "thread_pool_name { value: 'q' } pad_variable_length_inputs: t"
    )
    assert p == BatchingParameters(
        max_batch_size=8, allowed_batch_sizes=(4, 8), thread_pool_name="q",
        pad_variable_length_inputs=True,
    )  # fmt: skip


def test_a_value_protobuf_cannot_hold_is_a_config_error():
    with pytest.raises(ConfigError, match=r"max_batch_size=1.5 cannot be written"):
        BatchingParameters(max_batch_size=1.5).to_text()
    with pytest.raises(ConfigError, match=r"out of range"):
        BatchingParameters(num_batch_threads=2**64).to_text()


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
            "params.txt:2:1: cannot parse text proto tensorflow.serving.BatchingParameters: "
            "Message type 'tensorflow.serving.BatchingParameters' has no field named "
            "'max_batch_sise', near 'max_batch_sise { value: 8 }' (did you mean 'max_batch_size'?)",
        ),
        ("max_batch_size { value: 8 ", "params.txt:1:25: cannot parse text proto"),
        ("max_batch_size { value: 8 ", "Expected '}'"),
        ("max_batch_size { value: 'eight' }", "(max_batch_size takes a whole number (int64))"),
        ("max_batch_size: 8", "must be written as 'max_batch_size { value: ... }'"),
        ('thread_pool_name: "p"', "must be written as 'thread_pool_name { value: ... }'"),
        (
            "max_batch_size { value: 8 }\nmax_batch_size { value: 9 }",
            "params.txt:2:16: cannot parse text proto tensorflow.serving.BatchingParameters: "
            "Message type 'tensorflow.serving.BatchingParameters' should not have multiple "
            "'max_batch_size' fields, near 'max_batch_size { value: 9 }' (give max_batch_size once)",
        ),
        ("allowed_batch_sizes: 2.5", "Couldn't parse integer: 2.5"),
        ("allowed_batch_sizes: [4, 2.5]", "(allowed_batch_sizes takes a whole number (int64))"),
        ("pad_variable_length_inputs: 2", "(pad_variable_length_inputs takes true or false)"),
        ("enable_large_batch_splitting { value: yes }", "(enable_large_batch_splitting takes true"),
        ("max_batch_size { value: 9223372036854775808 }", "Value out of range"),
        ("max_batch_size { value: 8 } %", "cannot parse text proto"),
        ("\n\n   bogus { }", "params.txt:3:4:"),
    ],
)
def test_bad_files_name_the_problem(text, fragment):
    with pytest.raises(ConfigError) as exc:
        BatchingParameters.from_text(text, "params.txt")
    assert fragment in str(exc.value)
    assert str(exc.value).startswith("params.txt:")
    assert "\n" not in str(exc.value)
    assert exc.value.hint


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read batching parameters file"):
        BatchingParameters.read(tmp_path / "nope.txt")


def test_a_file_that_is_not_text_is_a_config_error(tmp_path):
    path = tmp_path / "b.txt"
    path.write_bytes(b"max_batch_size { value: 8 }\xff\n")
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        BatchingParameters.read(path)
