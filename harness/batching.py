"""TF Serving's ``BatchingParameters``: the dataclass, its text-proto file, and its checks.

The same file feeds our reference server and ``tensorflow_model_server``. Fields left as ``None``
are omitted from the file, so the server applies its own default; ``effective()`` tells what that
default is. The checks are the ones TF Serving makes at start-up, with its wording, so a config
that our server refuses is one the real server refuses too.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from google.protobuf.message import Message

from harness import atomic, tfs_formats
from harness.errors import ConfigError

# Fields TF Serving declares as wrappers, written ``name { value: ... }``.
_WRAPPED = (
    "max_batch_size",
    "batch_timeout_micros",
    "max_enqueued_batches",
    "num_batch_threads",
    "thread_pool_name",
    "enable_large_batch_splitting",
    "max_execution_batch_size",
)

DEFAULT_MAX_BATCH_SIZE = 1000
DEFAULT_MAX_ENQUEUED_BATCHES = 10


def schedulable_cores() -> int:
    """Cores this process may run on: TF Serving's default for ``num_batch_threads``."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def describe(params: BatchingParameters | None) -> str:
    """A config in a few words, for log lines and listings (``None``: batching off)."""
    if params is None:
        return "batching off"
    b = params
    text = (
        f"mbs={b.max_batch_size} t={b.batch_timeout_micros}us thr={b.num_batch_threads} "
        f"q={b.max_enqueued_batches}"
    )
    if b.allowed_batch_sizes:
        text += f" allowed={list(b.allowed_batch_sizes)}"
    if b.enable_large_batch_splitting:
        text += f" split@{b.max_execution_batch_size}"
    return text


def _given(value, default):
    """A field's value, or the server's default when the file leaves it out."""
    return value if value is not None else default


def _check_counts(threads: int, max_batch: int, timeout: int, enqueued: int, splitting: bool) -> int:
    """TF Serving's start-up checks of the counts; the queue bound it runs with."""
    if threads < 1:
        raise ConfigError(f"num_batch_threads must be positive; was {threads}")
    if max_batch < 1:
        raise ConfigError(f"max_batch_size must be positive; was {max_batch}")
    if timeout < 0:
        raise ConfigError(f"batch_timeout_micros must be non-negative; was {timeout}")
    if enqueued == 0 and not splitting:
        enqueued = 1  # TF Serving raises 0 to 1 silently on this path
    if enqueued < 1:
        raise ConfigError(f"max_enqueued_batches must be positive; was {enqueued}")
    return enqueued


def _execution_size(max_batch: int, max_exec: int | None, splitting: bool) -> int:
    """The largest batch that runs: max_execution_batch_size when splitting, else max_batch_size."""
    if not splitting:
        return max_batch
    max_exec = _given(max_exec, max_batch)
    if max_exec < 1:
        raise ConfigError(f"max_execution_batch_size must be positive; was {max_exec}")
    if max_batch < max_exec:
        raise ConfigError(
            f"max_execution_batch_size ({max_exec}) must be less than or equal to "
            f"max_batch_size ({max_batch})",
            hint="raise max_batch_size or lower max_execution_batch_size",
        )
    return max_exec


def _check_allowed(allowed: tuple[int, ...], max_exec: int) -> tuple[int, ...]:
    """allowed_batch_sizes as TF Serving checks them: positive, ending with the largest batch."""
    if not allowed:
        return allowed
    if allowed[-1] != max_exec:
        raise ConfigError(
            "Last entry in allowed_batch_sizes must match max_batch_size; "
            f"last entry was {allowed[-1]}; expected {max_exec}",
            hint="end allowed_batch_sizes with max_batch_size (max_execution_batch_size when splitting)",
        )
    if any(s < 1 for s in allowed):
        raise ConfigError(f"allowed_batch_sizes entries must be positive; got {list(allowed)}")
    return allowed


@dataclasses.dataclass(frozen=True, kw_only=True)
class BatchingParameters:
    """Batching settings; ``None`` means "not in the file, server default applies"."""

    max_batch_size: int | None = None
    batch_timeout_micros: int | None = None
    max_enqueued_batches: int | None = None
    num_batch_threads: int | None = None
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool | None = None
    enable_large_batch_splitting: bool | None = None
    max_execution_batch_size: int | None = None
    thread_pool_name: str | None = None

    def effective(self, cores: int | None = None) -> EffectiveBatching:
        """The values the server will use, defaults filled in and checked like TF Serving."""
        splitting = bool(self.enable_large_batch_splitting)
        max_batch = _given(self.max_batch_size, DEFAULT_MAX_BATCH_SIZE)
        threads = (
            self.num_batch_threads
            if self.num_batch_threads is not None
            else (cores or schedulable_cores())
        )
        timeout = _given(self.batch_timeout_micros, 0)
        enqueued = _given(self.max_enqueued_batches, DEFAULT_MAX_ENQUEUED_BATCHES)
        enqueued = _check_counts(threads, max_batch, timeout, enqueued, splitting)
        max_exec = _execution_size(max_batch, self.max_execution_batch_size, splitting)
        return EffectiveBatching(
            max_batch_size=max_batch,
            batch_timeout_micros=timeout,
            max_enqueued_batches=enqueued,
            num_batch_threads=threads,
            allowed_batch_sizes=_check_allowed(tuple(self.allowed_batch_sizes), max_exec),
            pad_variable_length_inputs=bool(self.pad_variable_length_inputs),
            enable_large_batch_splitting=splitting,
            max_execution_batch_size=max_exec,
        )

    def to_message(self) -> Message:
        """The ``tensorflow.serving.BatchingParameters`` message; unset fields stay unset."""
        msg = tfs_formats.BatchingParameters()
        for name in (*_WRAPPED, "allowed_batch_sizes", "pad_variable_length_inputs"):
            value = getattr(self, name)
            try:  # protobuf checks the type and range (an int64 is no float, bool or str)
                if name in _WRAPPED and value is not None:
                    getattr(msg, name).value = value
                elif name == "allowed_batch_sizes":
                    msg.allowed_batch_sizes.extend(value)
                elif value is not None:
                    msg.pad_variable_length_inputs = value
            except (TypeError, ValueError) as exc:
                raise ConfigError(
                    f"{name}={value!r} cannot be written to a batching parameters file: {exc}"
                ) from None
        return msg

    @classmethod
    def from_message(cls, msg: Message) -> BatchingParameters:
        """The dataclass for a parsed message: a field absent from the file stays ``None``."""
        values: dict = {name: getattr(msg, name).value for name in _WRAPPED if msg.HasField(name)}
        values["allowed_batch_sizes"] = tuple(msg.allowed_batch_sizes)
        if msg.HasField("pad_variable_length_inputs"):
            values["pad_variable_length_inputs"] = msg.pad_variable_length_inputs
        return cls(**values)

    def to_text(self) -> str:
        """The parameters file, in TF Serving's text-proto format (one field a line)."""
        return tfs_formats.to_text(self.to_message())

    def write(self, path: str | os.PathLike) -> Path:
        """Write the file atomically (a reader never sees half a file)."""
        return atomic.write_text(path, self.to_text())

    @classmethod
    def from_text(cls, text: str, source: str = "<batching parameters>") -> BatchingParameters:
        """Parse a parameters file as TF Serving does; errors name ``source``, line and field."""
        return cls.from_message(tfs_formats.parse(text, tfs_formats.BatchingParameters, source))

    @classmethod
    def read(cls, path: str | os.PathLike) -> BatchingParameters:
        return cls.from_message(tfs_formats.read(path, tfs_formats.BatchingParameters))


@dataclasses.dataclass(frozen=True, kw_only=True)
class EffectiveBatching:
    """Batching settings with every default resolved; what a scheduler runs with."""

    max_batch_size: int
    batch_timeout_micros: int
    max_enqueued_batches: int
    num_batch_threads: int
    allowed_batch_sizes: tuple[int, ...]
    pad_variable_length_inputs: bool
    enable_large_batch_splitting: bool
    max_execution_batch_size: int
