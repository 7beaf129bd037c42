"""Which queue options a model version batches with: the global file's, or its own.

TF Serving's rule (servables/tensorflow/bundle_factory_util.cc, read for the facts):

- without ``--enable_per_model_batching_parameters`` every model version's queue takes its options
  from the global ``--batching_parameters_file``;
- with it, a version's queue options come from ``batching_params.pbtxt`` in its version directory
  (the SavedModel directory, ``<base_path>/<version>/``); the file's ``num_batch_threads`` and
  ``thread_pool_name`` are not used, because the one thread pool is made from the global file and
  shared by every model;
- with it and no such file, the version is served **without batching** (its session is not wrapped
  for batching at all): no queue, no size limit, no batching metrics. It does not fall back to the
  global file's queue options;
- a file that does not parse fails that version's load with INVALID_ARGUMENT ``Invalid protobuf
  file: '<path>'``; a file that parses but fails the queue checks (the last allowed batch size
  must equal max_batch_size, counts must be positive, ...) fails the load with that check's message.

The Python request path calls ``queue_options`` as it loads a version. The native request path,
which parses no TF Serving file itself, runs this module as a program on each version directory it
loads (``python -m harness.refserver.model_batching DIR THREADS``) and reads one JSON line back.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from harness.batching import BatchingParameters, EffectiveBatching
from harness.errors import ConfigError, ModelError

FILE_NAME = "batching_params.pbtxt"


def queue_options(
    version_dir: str | Path, global_eff: EffectiveBatching, per_model: bool
) -> EffectiveBatching | None:
    """The options the version's queue runs with; None: the version is served unbatched.

    ``global_eff`` is the global file's resolved parameters (its ``num_batch_threads`` is the
    shared pool's size). Raises ModelError, one line with a hint, where TF Serving's load fails.
    """
    if not per_model:
        return global_eff
    path = Path(version_dir) / FILE_NAME
    if not path.is_file():
        return None
    try:
        params = BatchingParameters.read(path)
    except ConfigError as exc:
        raise ModelError(
            f"Invalid protobuf file: '{path}'",
            hint="; ".join(
                [_without_path(exc.message, path)]
                + ([exc.hint] if exc.hint else [])
                + ["fix the file, or delete it to serve this version unbatched"]
            ),
        ) from None
    # the pool is the global file's: the file's own size and name are not used, nor checked
    shared = dataclasses.replace(
        params, num_batch_threads=global_eff.num_batch_threads, thread_pool_name=None
    )
    try:
        return shared.effective()
    except ConfigError as exc:
        raise ModelError(f"{path}: {exc.message}", hint=exc.hint or "fix the file") from None


def _without_path(message: str, path: Path) -> str:
    """A parse error's detail without the file name in front (the message names it already)."""
    text, prefix = str(message), str(path)
    return "at " + text[len(prefix) :].lstrip(":") if text.startswith(prefix + ":") else text


def to_json(eff: EffectiveBatching | None) -> dict | None:
    """The options as the native server reads them (None: unbatched)."""
    return None if eff is None else dataclasses.asdict(eff)


def main(argv: list[str]) -> int:
    """``DIR THREADS``: print {"batching": options or null} or {"error": ..., "hint": ...}."""
    version_dir, threads = argv[0], int(argv[1])
    shared = BatchingParameters(num_batch_threads=threads).effective()
    try:
        out = {"batching": to_json(queue_options(version_dir, shared, True))}
    except ModelError as exc:
        out = {"error": exc.message, "hint": exc.hint or ""}
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
