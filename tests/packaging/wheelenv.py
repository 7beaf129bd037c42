"""The harness as a user installs it: the wheel built from the sources, installed into a fresh
virtual environment, run from an empty directory with no PYTHONPATH.

Time is kept bounded: the wheel is installed with ``--no-deps`` and its dependencies are made
visible from the suite's own environment through a ``.pth`` line (entries of a ``.pth`` file are
put on ``sys.path`` after the new environment's own site-packages; the ``.pth`` files found
there are not run, so the checkout's editable install stays out). Installing numpy, grpcio,
TensorFlow and the rest from PyPI into every fresh environment would cost minutes and a network.
``harness_file`` is how a test proves the harness it ran is the wheel's, not the checkout's.

Without the server extra, the dependencies are a view of that environment without TensorFlow,
TF Serving's API and Keras (symbolic links to every other entry), so ``import tensorflow``
fails there as it does after ``pip install tfs-harness``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from tests.conftest import ROOT

SHARED_SITE = Path(sysconfig.get_paths()["purelib"])
# What the server extra brings (TensorFlow, TF Serving's API, TensorFlow's Keras), and the
# checkout's own editable install: left out of the core environment's view.
SERVER_ONLY = ("tensorflow", "keras", "tfs_harness", "__editable__")


def build_wheel(cache: Path) -> Path:
    """``pip wheel --no-deps`` of a copy of the sources (a build in the checkout would leave
    build/ and egg-info behind); built once per directory ``cache``."""
    cache.mkdir(parents=True, exist_ok=True)
    built = sorted(cache.glob("tfs_harness-*.whl"))
    if built:
        return built[-1]
    src = cache / "src"
    skip = shutil.ignore_patterns("__pycache__", "build", "*.egg-info", "*.so", "*.o")
    shutil.copytree(ROOT / "harness", src / "harness", ignore=skip, symlinks=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(cache), str(src)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    (wheel,) = cache.glob("tfs_harness-*.whl")
    return wheel


def make_venv(path: Path, wheel: Path, *, server: bool) -> Path:
    """A fresh virtual environment at ``path`` with ``wheel`` installed; returns its python."""
    r = subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    python = path / "bin" / "python"
    site = Path(
        subprocess.check_output(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            text=True,
        ).strip()
    )
    deps = SHARED_SITE if server else _core_view(path / "core-deps")
    (site / "zz_harness_deps.pth").write_text(f"{deps}\n")
    r = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q",
         "--no-index", str(wheel)],
        capture_output=True, text=True, timeout=300, env=clean_env(),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    return python


def _core_view(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for entry in SHARED_SITE.iterdir():
        if entry.name.lower().startswith(SERVER_ONLY) or entry.suffix == ".pth":
            continue
        (folder / entry.name).symlink_to(entry)
    return folder


def clean_env(**extra: str) -> dict[str, str]:
    """The environment a user's shell gives: no PYTHONPATH pointing at the checkout, no
    virtual environment of the suite's active."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, "TF_CPP_MIN_LOG_LEVEL": "2", **extra}


def harness_file(python: Path) -> Path:
    """Where ``import harness`` finds the package in that environment."""
    out = subprocess.check_output(
        [str(python), "-c", "import harness; print(harness.__file__)"],
        text=True, env=clean_env(), cwd=python.parent,
    )  # fmt: skip
    return Path(out.strip())
