"""``harness tune``: the study (baselines, Optuna under the SLO, re-measurement), then its report.

Without flags it runs an experiment file as it is (the default one, or ``--experiment``). The
model, server, load and SLO flags are settings of the experiment under command-line names,
picked from ``harness run``'s table (``TUNE_FLAGS``): given, they are laid over the experiment
file, so ``harness tune --model-dir DIR --image IMAGE`` tunes the user's model with the default
experiment's search space and measurement, and needs no file of its own. The experiment that
ran is written to the study folder either way.
"""

from __future__ import annotations

import argparse
import sys

from harness import labels
from harness.cli import flags
from harness.cli.commands.run import FLAGS as RUN_FLAGS
from harness.cli.common import add_experiment_arguments

# The settings tune takes as flags: run's rows for the model, the server and the load, and the SLO.
TUNE_FLAGS = {
    **flags.pick(
        RUN_FLAGS,
        (
            "--model-dir", "--model-name", "--signature",
            "--backend", "--binary", "--image", "--gpus", "--server-cpus",
            "--protocol", "--users", "--rate", "--request-sizes", "--payload", "--input-shape",
            "--load-cpus",
        ),
    ),
    "slo": (
        ("--slo-p99-ms", "p99_ms", "the latency SLO: p99 in milliseconds"),
        ("--max-error-rate", "max_error_rate", "the share of requests that may fail or be rejected, e.g. 0.01"),
    ),
    "study": (
        ("--deploy-host", "deploy_host", "where deploy/'s docker run and Compose files publish the ports: 0.0.0.0 (every interface, the default) or 127.0.0.1"),
    ),
}  # fmt: skip

EPILOG = f"""\
examples:
  harness tune --trials 30
      the demo ranking model on the reference server (experiments/default.toml)
  harness tune --model-dir models/my_model --image tensorflow/serving:2.19.1 \\
      --slo-p99-ms 50 --request-sizes 1:80,8:20 --baseline my_batching.txt
      your SavedModel (a base path holding version folders) in your TF Serving image, against
      the batching parameters file you deploy today

exit codes:
{labels.exit_table()}
"""


def register(sub) -> None:
    tune = sub.add_parser(
        "tune",
        help="search batching parameters with Optuna under a latency SLO",
        description="Search TF Serving's batching parameters for the most throughput within a\n"
        "p99 latency SLO: baselines first, then Optuna, then the best configs re-measured\n"
        "beside the baselines. Flags left out take the experiment's values.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_experiment_arguments(
        tune,
        help="an experiment file (TOML), or a bundled experiment's name (default: default); "
        "the flags below are laid over it",
    )
    tune.add_argument(
        "--trials",
        type=int,
        help="configs the study measures in all (default: the experiment's); a config the "
        "sampler proposes again is copied, not measured, and costs none of them",
    )
    tune.add_argument(
        "--baseline",
        metavar="FILE",
        help="the batching parameters file you run today: measured first, re-measured beside "
        "the winner, and the gain over it stated",
    )
    tune.add_argument(
        "--study",
        help="study name (default: the experiment's; with --model-dir or --model-name, "
        "<model>-<protocol>-<backend>)",
    )
    tune.add_argument(
        "--results-dir", default="results", help="studies live in RESULTS_DIR/<study>/"
    )
    tune.add_argument(
        "--models-dir", default="models", help="where demo models are exported (default: models)"
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
    tune.add_argument(
        "--guide-procedure",
        choices=["cpu", "gpu"],
        help="also follow TF Serving's batching guide step by step (its CPU or GPU procedure), "
        "beside the search and outside its trial budget; its choice is re-measured beside the "
        "winner and the gain over it stated (default: the experiment's study.guide_procedure)",
    )
    tune.add_argument("--no-report", action="store_true", help="do not draw report.html at the end")
    groups = {
        name: tune.add_argument_group(f"{name} (default: the experiment's)")
        for name in TUNE_FLAGS
    }
    flags.add_setting_flags(groups, TUNE_FLAGS, show_defaults=False)
    tune.set_defaults(func=cmd_tune)


def experiment_from(args):
    """The experiment file with the flags laid over it, then ``--set``, ``--study`` and
    ``--trials``; checked. Without flags the source is the file, so errors name it."""
    import dataclasses

    from harness import config

    path = config.resolve_experiment(args.experiment)
    given = flags.settings_from(args, TUNE_FLAGS)
    if not given:
        exp = config.load(path, args.set or [])
    else:
        data = _table(path)
        lay_over(data, given, named=bool(args.study) or _sets(args, "study.name"))
        for item in args.set or []:
            config.apply_override(data, item, "--set")
        exp = config.from_dict(data, f"command line (over {path.name})")
    study = exp.study
    if args.study:
        study = dataclasses.replace(study, name=args.study)
    if args.trials:
        study = dataclasses.replace(study, trials=args.trials)
    if getattr(args, "guide_procedure", None):
        study = dataclasses.replace(study, guide_procedure=args.guide_procedure)
    return dataclasses.replace(exp, study=study).check()


def _sets(args, key: str) -> bool:
    return any(item.partition("=")[0].strip() == key for item in args.set or [])


def _table(path) -> dict:
    """The experiment file as a table; when it cannot be read, ``config.load``'s error for it."""
    import tomllib

    from harness import config

    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError):
        config.load(path)  # raises the one-line error this file deserves
        raise


def lay_over(data: dict, given: dict[str, dict], *, named: bool) -> None:
    """Lay the flags' settings (``{section: {field: value}}``) over an experiment's tables.

    ``--image`` means the Docker backend and ``--binary`` the process backend; a model given by
    ``--model-dir`` replaces the file's model (its demo and name); a model named by flags
    names the study after it unless ``named`` (a study name given on the command line)."""
    from pathlib import Path


    server = flags.backend_from(given.get("server", {}))
    model = dict(given.get("model", {}))
    if "path" in model:
        model["path"] = str(Path(model["path"]).expanduser().resolve())
        data["model"] = {k: v for k, v in data.get("model", {}).items() if k == "signature"}
    if ("path" in model or "name" in model) and not named:
        data.setdefault("study", {})["name"] = ""  # the Tuner names it after the model
    for section, values in {**given, "server": server, "model": model}.items():
        if values:
            data.setdefault(section, {}).update(values)


def read_baseline(path: str):
    """``--baseline FILE`` as BatchingParameters, checked as TF Serving checks it at start-up;
    any problem is one line naming the file."""
    from harness.batching import BatchingParameters
    from harness.errors import ConfigError

    try:
        params = BatchingParameters.read(path)
        params.effective()
    except ConfigError as exc:
        message = exc.message if path in exc.message else f"{path}: {exc.message}"
        hint = exc.hint if exc.hint and "--batching_parameters_file" not in exc.hint else None
        raise ConfigError(
            f"--baseline {message}",
            hint=hint or "give a TF Serving batching parameters file, as "
            "--batching_parameters_file takes, e.g. max_batch_size { value: 32 }",
        ) from None
    return params


def cmd_tune(args) -> int:
    from pathlib import Path

    from harness.cli.common import check_model_dir, prepare_demo_model
    from harness.errors import ConfigError
    from harness.tuning.study import Tuner

    exp = experiment_from(args)
    baseline = read_baseline(args.baseline) if args.baseline else None
    if args.guide and (exp.multi_model or exp.search.per_model_batching):
        raise ConfigError(  # the simulator models one model's queue (docs/multi-model.md)
            f"{exp.source}: --guide {args.guide} simulates one model, not several in one server",
            hint="leave out --guide for a study of several models",
        )
    check_model_dir(exp)
    prepare_demo_model(exp, Path(args.models_dir))
    tuner = Tuner(
        exp,
        Path(args.results_dir),
        storage=args.storage,
        guide=args.guide,
        baseline=baseline,
        models_dir=Path(args.models_dir),
    )
    try:
        summary = tuner.run(exp.study.trials, timeout=args.timeout)
    except KeyboardInterrupt:
        from harness.tuning import outputs

        outputs.write_trials_csv(tuner.study, tuner.dir / "trials.csv")
        print(
            f"\ninterrupted: {tuner.finished()} trials are saved in {tuner.dir}; "
            "run the same command to resume",
            file=sys.stderr,
        )
        return labels.EXIT_INTERRUPTED
    finally:
        tuner.close()
    if not args.no_report:
        _report_after_tune(tuner.dir)
    return summary.get("exit_code", labels.EXIT_OK)


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
