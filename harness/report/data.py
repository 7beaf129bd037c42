"""A study folder read back from its files: no Optuna, no servers, no TensorFlow.

Everything a report shows comes from what ``harness tune`` wrote: ``trials.csv``, each trial's
``measurement.json``, ``summary.json``, ``remeasure.json``, ``experiment.toml`` and
``environment.json``. A file that is missing or unreadable (a study stopped early, a folder
copied without its raw samples) leaves a gap in the report, named in its notes, never a crash.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path

import pandas as pd

from harness import labels
from harness.errors import ReportError


@dataclasses.dataclass
class StudyResults:
    dir: Path
    name: str
    experiment: dict
    trials: pd.DataFrame
    measurements: dict[int, dict]
    summary: dict | None
    remeasure: dict[int, list[dict]]
    environment: dict | None
    problems: list[str]  # files that could not be read, for the report's notes

    @property
    def slo_p99_ms(self) -> float | None:
        return self.experiment.get("slo", {}).get("p99_ms")

    @property
    def max_error_rate(self) -> float | None:
        return self.experiment.get("slo", {}).get("max_error_rate")

    @property
    def load(self) -> dict:
        return self.experiment.get("load", {})

    @property
    def mode(self) -> str:
        return self.experiment.get("study", {}).get("mode", "single")

    def samples_dir(self, trial: int, run: int | None = None) -> Path:
        if run is None:
            return self.dir / "trials" / f"{trial:04d}" / "load" / "samples"
        return self.dir / "remeasure" / f"{trial:04d}-{run}" / "load" / "samples"


def _read_json(path: Path, problems: list[str]):
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        problems.append(f"{path.name} in {path.parent}: unreadable ({exc.__class__.__name__})")
        return None


def _current_labels(summary: dict | None) -> dict | None:
    """summary.json with an older study's baseline labels read as today's."""
    if not isinstance(summary, dict):
        return summary
    entries = list(summary.get("candidates") or [])
    entries += [summary[k] for k in ("winner", "batching_off") if isinstance(summary.get(k), dict)]
    for entry in entries:
        if isinstance(entry, dict) and "label" in entry:
            entry["label"] = labels.baseline_label(entry["label"])
    return summary


def load(study_dir: str | Path) -> StudyResults:
    d = Path(study_dir)
    if not d.is_dir():
        raise ReportError(
            f"{d} is not a folder",
            hint="give a study folder, such as results/ranker-grpc (made by 'harness tune')",
        )
    csv_path = d / "trials.csv"
    if not csv_path.exists():
        raise ReportError(
            f"{d} has no trials.csv",
            hint="run 'harness tune' first, or point at the folder it wrote (results/<study>)",
        )
    problems: list[str] = []
    try:
        trials = pd.read_csv(csv_path, keep_default_na=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ReportError(
            f"{csv_path} cannot be read: {exc}",
            hint="it is rewritten after every trial; run 'harness tune' on the study again to rebuild it",
        ) from None
    if "number" not in trials.columns or "state" not in trials.columns:
        raise ReportError(f"{csv_path} is not a trials table (no 'number'/'state' columns)")
    if "baseline" in trials.columns:  # an older study's baseline labels, read as today's
        trials["baseline"] = trials["baseline"].map(labels.baseline_label)

    experiment: dict = {}
    toml_path = d / "experiment.toml"
    if toml_path.exists():
        try:
            experiment = tomllib.loads(toml_path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            problems.append(f"experiment.toml: unreadable ({exc})")
    else:
        problems.append("experiment.toml is missing: SLO and load settings are unknown")

    measurements = {}
    for n in trials["number"]:
        m = _read_json(d / "trials" / f"{int(n):04d}" / "measurement.json", problems)
        if m is not None:
            measurements[int(n)] = m
    raw = _read_json(d / "remeasure.json", problems) or {}
    remeasure = {int(k): v for k, v in raw.items()}
    return StudyResults(
        dir=d,
        name=(experiment.get("study", {}).get("name") or d.name),
        experiment=experiment,
        trials=trials,
        measurements=measurements,
        summary=_current_labels(_read_json(d / "summary.json", problems)),
        remeasure=remeasure,
        environment=_read_json(d / "environment.json", problems),
        problems=problems,
    )
