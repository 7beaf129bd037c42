"""TF Serving's ``BatchingParameters``: the dataclass, its text-proto file, and its checks.

The same file feeds our reference server and ``tensorflow_model_server``. Fields left as ``None``
are omitted from the file, so the server applies its own default; ``effective()`` tells what that
default is. The checks are the ones TF Serving makes at start-up, with its wording, so a config
that our server refuses is one the real server refuses too.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path

from harness import textproto
from harness.errors import ConfigError

# Wrapped scalars (``name { value: N }``) in session_bundle_config.proto.
_WRAPPED_INT = (
    "max_batch_size",
    "batch_timeout_micros",
    "max_enqueued_batches",
    "num_batch_threads",
    "max_execution_batch_size",
)
_WRAPPED_BOOL = ("enable_large_batch_splitting",)
_PLAIN = ("allowed_batch_sizes", "pad_variable_length_inputs", "thread_pool_name")
_FIELDS = set(_WRAPPED_INT) | set(_WRAPPED_BOOL) | set(_PLAIN)

DEFAULT_MAX_BATCH_SIZE = 1000
_INT64 = (-(2**63), 2**63 - 1)
DEFAULT_MAX_ENQUEUED_BATCHES = 10


def schedulable_cores() -> int:
    """Cores this process may run on: TF Serving's default for ``num_batch_threads``."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


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
        max_batch = (
            self.max_batch_size if self.max_batch_size is not None else DEFAULT_MAX_BATCH_SIZE
        )
        threads = (
            self.num_batch_threads
            if self.num_batch_threads is not None
            else (cores or schedulable_cores())
        )
        timeout = self.batch_timeout_micros if self.batch_timeout_micros is not None else 0
        enqueued = (
            self.max_enqueued_batches
            if self.max_enqueued_batches is not None
            else DEFAULT_MAX_ENQUEUED_BATCHES
        )
        max_exec = (
            self.max_execution_batch_size
            if self.max_execution_batch_size is not None
            else max_batch
        )
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
        if splitting:
            if max_exec < 1:
                raise ConfigError(f"max_execution_batch_size must be positive; was {max_exec}")
            if max_batch < max_exec:
                raise ConfigError(
                    f"max_execution_batch_size ({max_exec}) must be less than or equal to "
                    f"max_batch_size ({max_batch})",
                    hint="raise max_batch_size or lower max_execution_batch_size",
                )
        else:
            max_exec = max_batch
        allowed = tuple(self.allowed_batch_sizes)
        if allowed:
            expected = max_exec
            if allowed[-1] != expected:
                raise ConfigError(
                    "Last entry in allowed_batch_sizes must match max_batch_size; "
                    f"last entry was {allowed[-1]}; expected {expected}",
                    hint="end allowed_batch_sizes with max_batch_size (max_execution_batch_size when splitting)",
                )
            if any(s < 1 for s in allowed):
                raise ConfigError(
                    f"allowed_batch_sizes entries must be positive; got {list(allowed)}"
                )
        return EffectiveBatching(
            max_batch_size=max_batch,
            batch_timeout_micros=timeout,
            max_enqueued_batches=enqueued,
            num_batch_threads=threads,
            allowed_batch_sizes=allowed,
            pad_variable_length_inputs=bool(self.pad_variable_length_inputs),
            enable_large_batch_splitting=splitting,
            max_execution_batch_size=max_exec,
        )

    def to_text(self) -> str:
        """The parameters file, in TF Serving's text-proto format."""
        lines = []
        for name in _WRAPPED_INT:
            value = getattr(self, name)
            if value is not None:
                lines.append(f"{name} {{ value: {int(value)} }}")
        for size in self.allowed_batch_sizes:
            lines.append(f"allowed_batch_sizes: {int(size)}")
        if self.pad_variable_length_inputs is not None:
            lines.append(
                f"pad_variable_length_inputs: {str(self.pad_variable_length_inputs).lower()}"
            )
        if self.enable_large_batch_splitting is not None:
            lines.append(
                f"enable_large_batch_splitting {{ value: {str(self.enable_large_batch_splitting).lower()} }}"
            )
        if self.thread_pool_name is not None:
            lines.append(f'thread_pool_name: "{self.thread_pool_name}"')
        return "\n".join(lines) + "\n"

    def write(self, path: str | os.PathLike) -> Path:
        """Write the file atomically (a reader never sees half a file)."""
        path = Path(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(self.to_text())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        return path

    @classmethod
    def from_text(cls, text: str, source: str = "<batching parameters>") -> BatchingParameters:
        try:
            msg = textproto.parse(text, source)
        except (ValueError, RecursionError) as exc:  # bad escapes, absurd nesting
            raise ConfigError(
                f"{source}: cannot parse text proto ({type(exc).__name__}: {str(exc)[:80]})",
                hint="fix the syntax; see TF Serving's batching guide for the format",
            ) from None
        textproto.check_fields(msg, _FIELDS, "tensorflow.serving.BatchingParameters", source)
        values: dict = {}
        for name in _WRAPPED_INT + _WRAPPED_BOOL:
            wrapper = textproto.single(msg, name, source)
            if wrapper is None:
                continue
            if not isinstance(wrapper, dict):
                raise ConfigError(f"{source}: {name} must be written as '{name} {{ value: ... }}'")
            textproto.check_fields(wrapper, {"value"}, f"google.protobuf wrapper of {name}", source)
            value = textproto.single(wrapper, "value", source)
            want = bool if name in _WRAPPED_BOOL else int
            if value is None:
                value = want()
            if want is int and (isinstance(value, bool) or not isinstance(value, int)):
                raise ConfigError(f"{source}: {name} must be an integer; got {value!r}")
            if want is int and not _INT64[0] <= value <= _INT64[1]:
                raise ConfigError(f"{source}: {name} is out of range for int64; got {value}")
            if want is bool and not isinstance(value, bool):
                raise ConfigError(f"{source}: {name} must be true or false; got {value!r}")
            values[name] = value
        sizes = msg.get("allowed_batch_sizes", [])
        for s in sizes:
            if isinstance(s, bool) or not isinstance(s, int):
                raise ConfigError(
                    f"{source}: allowed_batch_sizes entries must be integers; got {s!r}"
                )
            if not _INT64[0] <= s <= _INT64[1]:
                raise ConfigError(f"{source}: allowed_batch_sizes entry {s} is out of range")
        values["allowed_batch_sizes"] = tuple(sizes)
        pad = textproto.single(msg, "pad_variable_length_inputs", source)
        if pad is not None:
            if not isinstance(pad, bool):
                raise ConfigError(
                    f"{source}: pad_variable_length_inputs must be true or false; got {pad!r}"
                )
            values["pad_variable_length_inputs"] = pad
        name = textproto.single(msg, "thread_pool_name", source)
        if name is not None:
            values["thread_pool_name"] = str(name)
        return cls(**values)

    @classmethod
    def read(cls, path: str | os.PathLike) -> BatchingParameters:
        path = Path(path)
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            raise ConfigError(
                f"batching parameters file {path} is not UTF-8 text",
                hint="check --batching_parameters_file",
            ) from None
        except OSError as exc:
            raise ConfigError(
                f"cannot read batching parameters file {path}: {exc.strerror or exc}",
                hint="check --batching_parameters_file",
            ) from None
        return cls.from_text(text, str(path))


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
