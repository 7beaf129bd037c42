"""What several commands share: the ``--experiment``/``--set`` pair and its one resolver, and
the checks and preparation of the model before anything is started."""

from __future__ import annotations

from pathlib import Path

DEFAULT_EXPERIMENT = "experiments/default.toml"


def add_experiment_arguments(p, *, default: str | None = DEFAULT_EXPERIMENT, help: str) -> None:
    p.add_argument("--experiment", default=default, help=help)
    p.add_argument(
        "--set",
        action="append",
        metavar="SECTION.KEY=VALUE",
        help="override one experiment value, e.g. --set load.users=32 --set slo.p99_ms=20",
    )


def experiment_from(args):
    """The experiment ``--experiment`` names (a path, or a bundled experiment's name), with the
    ``--set`` overrides, checked."""
    from harness import config

    return config.load_experiment(args.experiment, args.set or [])


def _is_saved_model(path: Path) -> bool:
    return (path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file()


def check_model_dir(exp) -> None:
    """A model path TF Serving can load: a base path holding numbered version folders, each a
    SavedModel. Checked before anything is started or written, in one line that says how to fix
    the usual slips (a version folder or a bare SavedModel given instead of the base path)."""
    from harness.config import BackendKind
    from harness.errors import ConfigError

    if not exp.model.path or exp.server.backend == BackendKind.EXTERNAL:
        return
    path, src = Path(exp.model.path), exp.source
    if not path.is_dir():
        raise ConfigError(
            f"{src}: model.path {path} is not a directory",
            hint="give the SavedModel base path, the folder holding version folders such as 1/",
        )
    if any(d.name.isdigit() and _is_saved_model(d) for d in path.iterdir() if d.is_dir()):
        return
    if _is_saved_model(path):
        hint = (
            f"it is version {path.name} of a model: give its parent, {path.parent}"
            if path.name.isdigit()
            else f"TF Serving loads numbered version folders: move it to {path}/1/ and give {path}"
        )
        raise ConfigError(f"{src}: model.path {path} is a SavedModel, not a base path", hint=hint)
    raise ConfigError(
        f"{src}: model.path {path} holds no version folder with a SavedModel",
        hint=f"TF Serving loads <base>/<version>/saved_model.pb, e.g. {path}/1/saved_model.pb",
    )


def prepare_demo_model(exp, models_dir: Path) -> None:
    """Export the demo model the experiment names when it is missing, in a child process: its
    output (TensorFlow's C++ start-up lines, CUDA and oneDNN among them) goes to a log file beside
    the model instead of the terminal, and the harness itself never imports TensorFlow."""
    import importlib.util
    import subprocess
    import sys

    from harness.config import BackendKind
    from harness.errors import ModelError

    demo = exp.model.demo
    if not demo or exp.server.backend == BackendKind.EXTERNAL:
        return
    base = Path(models_dir) / demo
    if _is_saved_model(base / "1"):
        return
    if importlib.util.find_spec("tensorflow") is None:
        raise ModelError(
            f"exporting the demo model {demo} needs TensorFlow, which is not installed",
            hint="pip install 'tfs-harness[server]', or measure your own SavedModel with --model-dir",
        )
    base.parent.mkdir(parents=True, exist_ok=True)
    log = base.parent / f"{demo}.export.log"
    print(f"exporting the demo model {demo} to {base} (log: {log})", file=sys.stderr)
    cmd = [sys.executable, "-m", "harness.cli", "model", "export", demo, "--output", str(base)]
    with open(log, "wb") as out:
        r = subprocess.run([*cmd, "--overwrite"], stdout=out, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        lines = log.read_text(errors="replace").splitlines()
        said = [ln for ln in lines if ln.startswith("error: ")] or lines[-1:] or ["no output"]
        raise ModelError(
            f"exporting the demo model {demo} failed (exit code {r.returncode}): {said[-1]}",
            hint=f"the whole output is in {log}",
        )
