"""``harness``: the command line. Keeps imports lazy so ``harness --help`` is instant."""

from __future__ import annotations

import argparse
import signal
import sys

from harness.errors import HarnessError


def _cmd_model_export(args) -> int:
    from harness.models.export import export

    path = export(args.name, args.output, args.version, overwrite=args.overwrite)
    print(path)
    return 0


def _cmd_model_list(args) -> int:
    from harness.models.catalog import MODELS

    for m in MODELS.values():
        shape = "x".join(str(d) for d in m.input_shape)
        print(f"{m.name:14} {m.input_name}[N,{shape}] -> {m.output_name}   {m.description}")
    return 0


def _cmd_image_reference(args) -> int:
    from harness.servers.docker import build_reference_image

    image_id = build_reference_image(tag=args.tag)
    print(f"{args.tag} {image_id}")
    return 0


def _cmd_image_optimized(args) -> int:
    from pathlib import Path

    from harness.servers.images import OptimizedBuild, build_optimized

    build = OptimizedBuild(
        source=Path(args.source),
        tag=args.tag,
        devel_tag=args.devel_tag,
        build_options=args.build_options,
    )
    print(build_optimized(build, dry_run=args.dry_run))
    return 0


def _cmd_run(args) -> int:
    from harness.runcmd import run

    return run(args)


def _cmd_worker(args) -> int:
    from harness.runcmd import worker

    return worker(args)


def _cmd_report(args) -> int:
    from harness.report.study import build

    paths = build(args.study_dir)
    print(paths["html"])
    print(paths["markdown"])
    return 0


def _cmd_compare(args) -> int:
    from pathlib import Path

    from harness.report.compare import build

    out = args.out or str(
        Path(args.study_dirs[0]).parent
        / ("compare-" + "-vs-".join(Path(d).name for d in args.study_dirs))
    )
    paths = build(args.study_dirs, out)
    print(paths["html"])
    print(paths["markdown"])
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


def _cmd_tune(args) -> int:
    import dataclasses
    from pathlib import Path

    from harness import config
    from harness.tuning.study import Tuner

    path = Path(args.experiment)
    if not path.exists() and not path.is_absolute():
        bundled = Path(__file__).resolve().parent.parent / "experiments" / path.name
        path = bundled if bundled.exists() else path
    exp = config.load(path, args.set or [])
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


_signals_seen = []


def _interrupted(signum, frame):
    """The first SIGINT or SIGTERM stops the work; a second one while servers and Locust are
    being stopped is only acknowledged (leaving them running is what we want to avoid); a third
    quits at once (the next start removes what is left)."""
    _signals_seen.append(signum)
    if len(_signals_seen) == 2:
        print("stopping servers and load generators; signal again to quit at once", file=sys.stderr)
        return
    raise KeyboardInterrupt


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="harness",
        description="Load-testing and batching-tuning harness for TensorFlow Serving.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser(
        "serve",
        add_help=False,
        help="run the reference model server (tensorflow_model_server's flags; see 'harness serve --help')",
    )

    run = sub.add_parser("run", help="start a server, drive it with Locust, print one measurement")
    from harness.runcmd import add_arguments

    add_arguments(run)
    run.set_defaults(func=_cmd_run)

    worker = sub.add_parser(
        "worker", help="a Locust load worker for a harness run/tune on another machine"
    )
    from harness.runcmd import add_worker_arguments

    add_worker_arguments(worker)
    worker.set_defaults(func=_cmd_worker)

    tune = sub.add_parser("tune", help="search batching parameters with Optuna under a latency SLO")
    tune.add_argument(
        "--experiment", default="experiments/default.toml", help="an experiment file (TOML)"
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
    tune.add_argument(
        "--set",
        action="append",
        metavar="SECTION.KEY=VALUE",
        help="override one experiment value, e.g. --set load.users=32 --set slo.p99_ms=20",
    )
    tune.add_argument("--no-report", action="store_true", help="do not draw report.html at the end")
    tune.set_defaults(func=_cmd_tune)

    report = sub.add_parser(
        "report", help="draw report.md, report.html and plots from a study folder"
    )
    report.add_argument("study_dir", help="a study folder, e.g. results/ranker-grpc")
    report.set_defaults(func=_cmd_report)

    compare = sub.add_parser("compare", help="studies side by side (REST vs gRPC, two images, ...)")
    compare.add_argument("study_dirs", nargs="+", help="two or more study folders")
    compare.add_argument(
        "--out", help="output folder (default: results/compare-A-vs-B beside the first study)"
    )
    compare.set_defaults(func=_cmd_compare)

    from harness.sim.cli import add_plan_parser, add_profile_parser

    add_profile_parser(sub)
    add_plan_parser(sub)

    model = sub.add_parser("model", help="demo SavedModels")
    msub = model.add_subparsers(dest="model_command", required=True)
    exp = msub.add_parser("export", help="export a demo model to DIR/<version>/")
    exp.add_argument("name", help="mlp, ranker, mobilenet_v2 or resnet50")
    exp.add_argument("--output", required=True, help="model base directory")
    exp.add_argument("--version", type=int, default=1)
    exp.add_argument("--overwrite", action="store_true")
    exp.set_defaults(func=_cmd_model_export)
    lst = msub.add_parser("list", help="list the demo models")
    lst.set_defaults(func=_cmd_model_list)

    image = sub.add_parser("image", help="build server images")
    isub = image.add_subparsers(dest="image_command", required=True)
    ref = isub.add_parser(
        "build-reference",
        help="an image running the reference server from bind-mounted host paths (no registry)",
    )
    ref.add_argument("--tag", default="tfs-harness/reference:latest")
    ref.set_defaults(func=_cmd_image_reference)
    opt = isub.add_parser(
        "build-optimized", help="TF Serving compiled for this CPU (two-stage build)"
    )
    opt.add_argument(
        "--source", required=True, help="a checkout of the tensorflow/serving repository"
    )
    opt.add_argument("--tag", default="tfs-harness/serving-optimized:latest")
    opt.add_argument("--devel-tag", default="tfs-harness/serving-optimized-devel:latest")
    opt.add_argument(
        "--build-options",
        default="--copt=-mavx2 --copt=-mfma",
        help="TF_SERVING_BUILD_OPTIONS, e.g. '--config=nativeopt'",
    )
    opt.add_argument("--dry-run", action="store_true", help="print the docker commands only")
    opt.set_defaults(func=_cmd_image_optimized)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if argv and argv[0] == "serve" or (debug and argv[1:2] == ["serve"]):
        from harness.refserver.server import main as serve_main

        rest = argv[argv.index("serve") + 1 :]
        return serve_main(rest)
    args = build_parser().parse_args(argv)
    # SIGTERM (kill, a CI runner, systemd) stops as Ctrl-C does: servers and Locust are stopped
    # and finished trials kept, instead of dying with children left running.
    signal.signal(signal.SIGTERM, _interrupted)
    signal.signal(signal.SIGINT, _interrupted)
    try:
        return args.func(args)
    except HarnessError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if _signals_seen:  # whatever the command, a child whose start the signal cut short
            from harness.procs import reap_own  # has no one to stop it but this

            reap_own()


def run() -> None:
    """The ``harness`` command: ``main``, then exit with its code."""
    try:
        code = main()
    except KeyboardInterrupt:  # a Ctrl-C between main's own handling and the lines below
        code = 130
    finally:
        # The work is done and saved; a signal during the interpreter's shutdown (TensorFlow's
        # teardown takes seconds) must not kill it. Ignored, not handled: the interpreter puts
        # Python-level handlers back to the default action while it finalizes (a SIGINT there
        # ended the process with -2 and no message), but it leaves ignored signals ignored.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(code)


if __name__ == "__main__":
    run()
