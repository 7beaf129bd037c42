"""Several models in one server: the ``--model_config_file`` and, for per-model batching, each
model staged with its own ``batching_params.pbtxt``.

With ``--enable_per_model_batching_parameters`` TF Serving reads a model's batching parameters
from ``batching_params.pbtxt`` inside its version directory. The user's model directory is never
written to: each model is staged under the trial's folder as a base path whose version
directories hold the user's files (symbolic links for a local process; empty stand-ins over
which the Docker backend mounts the real files, since links to host paths mean nothing inside a
container) and the trial's ``batching_params.pbtxt``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from harness import atomic, tfs_formats
from harness.batching import BatchingParameters
from harness.errors import ServerError

PER_MODEL_FILE = "batching_params.pbtxt"  # TF Serving's name for a model's own parameters
MODEL_CONFIG_FILE = "models.config"


@dataclasses.dataclass(frozen=True, kw_only=True)
class ServedModel:
    """One model of several in a server: its name, its base path (holding version
    directories), and its own batching parameters when batching is set per model."""

    name: str
    base_path: Path
    batching: BatchingParameters | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class StagedModel:
    """A model as the server is given it: the base path to list in the model config file and,
    for stand-ins, the user's files to mount over them (``[(user's path, path under base)]``)."""

    name: str
    base_path: Path
    mounts: tuple[tuple[Path, str], ...] = ()


def version_dirs(base_path: Path) -> list[Path]:
    """The version directories of a SavedModel base path (named by whole numbers)."""
    found = sorted((p for p in Path(base_path).iterdir() if p.is_dir() and p.name.isdigit()),
                   key=lambda p: int(p.name))  # fmt: skip
    if not found:
        raise ServerError(
            f"model directory {base_path} holds no version directory (1/, 2/, ...)",
            hint="give the SavedModel base path: the directory holding version directories",
        )
    return found


def stage(model: ServedModel, root: Path, *, links: bool = True) -> StagedModel:
    """``model`` as the server should read it. Without its own batching parameters it is read
    where it is; with them, a base path under ``root`` mirrors each version directory (links,
    or with ``links=False`` empty stand-ins to mount over) and adds ``batching_params.pbtxt``."""
    base = Path(model.base_path).resolve()
    if model.batching is None:
        return StagedModel(name=model.name, base_path=base)
    staged = Path(root) / model.name
    mounts: list[tuple[Path, str]] = []
    for version in version_dirs(base):
        out = staged / version.name
        out.mkdir(parents=True, exist_ok=True)
        for entry in sorted(version.iterdir()):
            if entry.name == PER_MODEL_FILE:
                continue  # the user's own file is replaced by the trial's
            target = out / entry.name
            if target.is_symlink() or target.is_file():
                target.unlink()
            if links:
                target.symlink_to(entry.resolve())
            else:
                (target.mkdir(exist_ok=True) if entry.is_dir() else target.touch())
                mounts.append((entry.resolve(), f"{version.name}/{entry.name}"))
        model.batching.write(out / PER_MODEL_FILE)
    return StagedModel(name=model.name, base_path=staged, mounts=tuple(mounts))


def write_model_config(staged: list[tuple[str, str]], path: Path) -> Path:
    """The ``--model_config_file`` listing ``[(name, base path as the server sees it)]``."""
    return atomic.write_text(path, tfs_formats.to_text(tfs_formats.model_config_list(staged)))
