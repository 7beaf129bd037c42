"""``harness tune``: the study (baselines, Optuna under the SLO, re-measurement), then its report."""

from __future__ import annotations

import sys

from harness.cli.common import add_experiment_arguments, experiment_from


def register(sub) -> None:
    tune = sub.add_parser("tune", help="search batching parameters with Optuna under a latency SLO")
    add_experiment_arguments(
        tune, help="an experiment file (TOML), or a bundled experiment's name (default: default)"
    )
    tune.add_argument(
        "--trials",
        type=int,
        help="configs the study measures in all (default: the experiment's); a config the "
        "sampler proposes again is copied, not measured, and costs none of them",
    )
    tune.add_argument(
        "--study", help="study name (default: the experiment's, else model-protocol-backend)"
    )
    tune.add_argument(
        "--results-dir", default="results", help="studies live in RESULTS_DIR/<study>/"
    )
    tune.add_argument(
        "--storage", help="an Optuna storage URL (default: SQLite in the study folder)"
    )
    tune.add_argument("--timeout", type=float, help="stop searching after this many seconds")
    tune.add_argument(
        "--guide",
        choices=["simulate"],
        help="simulate: search the simulator first (profile made or loaded), then spend the real "
        "trials on its predicted best, Pareto front and neighbours (docs/simulator.md)",
    )
    tune.add_argument("--no-report", action="store_true", help="do not draw report.html at the end")
    tune.set_defaults(func=cmd_tune)


def cmd_tune(args) -> int:
    import dataclasses
    from pathlib import Path

    from harness.tuning.study import Tuner

    exp = experiment_from(args)
    study = exp.study
    if args.study:
        study = dataclasses.replace(study, name=args.study)
    if args.trials:
        study = dataclasses.replace(study, trials=args.trials)
    exp = dataclasses.replace(exp, study=study).check()
    tuner = Tuner(exp, Path(args.results_dir), storage=args.storage, guide=args.guide)
    try:
        tuner.run(exp.study.trials, timeout=args.timeout)
    except KeyboardInterrupt:
        from harness.tuning import outputs

        outputs.write_trials_csv(tuner.study, tuner.dir / "trials.csv")
        print(
            f"\ninterrupted: {tuner.finished()} trials are saved in {tuner.dir}; "
            "run the same command to resume",
            file=sys.stderr,
        )
        return 130
    finally:
        tuner.close()
    if not args.no_report:
        _report_after_tune(tuner.dir)
    return 0


def _report_after_tune(study_dir) -> None:
    """The report is a view of files already saved: if drawing fails, nothing is lost."""
    try:
        from harness.report.study import build

        paths = build(study_dir)
        print(f"report: {paths['html']}")
    except Exception as exc:  # noqa: BLE001 - a report failure must not fail a finished study
        print(
            f"warning: the report could not be drawn ({type(exc).__name__}: {exc}); "
            f"the results are saved; retry with: harness report {study_dir}",
            file=sys.stderr,
        )
