"""The command line: each command's flags into settings, the experiment resolver, lazy imports.

No server is started here: every command is stopped by a bad value before it would start one,
or only parsed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import typing

import pytest

from harness import config
from harness.cli import build_parser, main
from harness.cli.app import COMMANDS
from harness.cli.commands import run as run_command
from harness.config import LoadConfig, Protocol
from harness.errors import ConfigError
from tests.conftest import ROOT

HEAVY = ("tensorflow", "numpy", "docker", "optuna")

# Runs the real entry point (``python -m harness.cli``) and reports, as it exits, which of the
# heavy modules got imported.
_PROBE = """
import atexit, json, runpy, sys
atexit.register(lambda: print(json.dumps([m for m in {heavy!r} if m in sys.modules]),
                              file=sys.stderr))
sys.argv = ["harness", *{argv!r}]
runpy.run_module("harness.cli", run_name="__main__", alter_sys=True)
"""


def imported_by(argv: list[str]) -> list[str]:
    r = subprocess.run(
        [sys.executable, "-c", _PROBE.format(heavy=HEAVY, argv=argv)],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert "usage: harness" in r.stdout
    return json.loads(r.stderr.strip().splitlines()[-1])


def test_help_imports_neither_tensorflow_nor_numpy_nor_docker_nor_optuna():
    assert imported_by(["--help"]) == []


@pytest.mark.parametrize(
    "argv",
    [[c, "--help"] for c in COMMANDS if c != "serve"]
    + [["model", "export", "--help"], ["image", "build-optimized", "--help"]],
)
def test_each_commands_help_is_as_light(argv):
    assert imported_by(argv) == []


def test_serve_help_is_the_reference_servers_own_and_as_light():
    # ``harness serve`` hands its flags to harness.refserver.server (its parser is not this
    # package's), whose top level imports only the flag and file readers: the model manager,
    # numpy and TensorFlow come with the first model loaded.
    r = subprocess.run(
        [sys.executable, "-c", _PROBE.format(heavy=HEAVY, argv=["serve", "--help"])],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert "--model_base_path" in r.stdout
    assert json.loads(r.stderr.strip().splitlines()[-1]) == []


# -- harness run: flags -> settings ---------------------------------------------------------------


def parse(*argv: str):
    return build_parser().parse_args(list(argv))


def test_run_without_flags_measures_with_the_experiment_defaults():
    exp = run_command.experiment_from(parse("run"))
    assert exp.load == LoadConfig()  # one set of defaults: 64 users, 3 s windows
    assert exp.server == config.ServerConfig()
    assert exp.model.demo == run_command.DEFAULT_DEMO and exp.source == "command line"


def sample_value(hint, choices):
    if choices:
        return choices[-1], choices[-1]
    if hint is int:
        return "2", 2
    if hint is float:
        return "1.5", 1.5
    if typing.get_origin(hint) is tuple:  # a list setting: each use of the flag adds one
        return "x", ["x"]
    return "x", "x"


FLAG_ROWS = [(section, *row) for section, rows in run_command.FLAGS.items() for row in rows]


@pytest.mark.parametrize("section, flag, field, text", FLAG_ROWS, ids=[r[1] for r in FLAG_ROWS])
def test_each_run_flag_sets_its_settings_field(section, flag, field, text):
    import typing

    hint = typing.get_type_hints(run_command.SECTIONS[section])[field]
    action = next(a for a in build_parser()._subparsers._group_actions[0].choices["run"]._actions
                  if flag in a.option_strings)  # fmt: skip
    if hint is bool:
        given, want = [flag], True
    else:
        raw, want = sample_value(hint, action.choices)
        given = [flag, raw]
    assert run_command.settings_from(parse("run", *given)) == {section: {field: want}}
    assert run_command.settings_from(parse("run")) == {}  # not given: the field's own default


def test_run_flags_and_set_become_a_checked_experiment(tmp_path):
    args = parse(
        "run", "--model-dir", str(tmp_path), "--model-name", "m", "--protocol", "rest",
        "--users", "8", "--warmup", "1", "--window", "1.5", "--max-windows", "2",
        "--server-cpus", "0", "--load-cpus", "1", "--arrivals", "constant",
        "--set", "slo.p99_ms=20",
    )  # fmt: skip
    exp = run_command.experiment_from(args)
    assert exp.model.path == str(tmp_path) and exp.model.name == "m" and not exp.model.demo
    assert exp.load.protocol is Protocol.REST and exp.load.arrivals == "constant"
    assert (exp.load.users, exp.load.warmup_s, exp.load.window_s) == (8, 1.0, 1.5)
    assert (exp.load.min_windows, exp.load.max_windows) == (2, 2)  # at most the windows asked
    assert (exp.server.cpus, exp.load.cpus, exp.slo.p99_ms) == ("0", "1", 20)
    assert run_command.batching_from(args) is None
    assert run_command.batching_from(parse("run", "--max-batch-size", "4")).max_batch_size == 4


def test_run_choices_and_types_come_from_the_settings():
    with pytest.raises(SystemExit):
        parse("run", "--protocol", "soap")
    with pytest.raises(SystemExit):
        parse("run", "--users", "many")
    with pytest.raises(SystemExit):
        parse("run", "--backend", "k8s")


def test_run_from_a_bundled_experiment_with_overrides():
    exp = run_command.experiment_from(parse("run", "--experiment", "open_loop", "--set", "load.rate=9"))
    assert exp.source == str(config.BUNDLED_DIR / "open_loop.toml") and exp.load.rate == 9


def test_sweep_steps():
    load = LoadConfig(rate=5.0)
    assert [s.users for s in run_command.sweep_steps("users=1,4", load)] == [1, 4]
    assert all(s.rate == 0 for s in run_command.sweep_steps("users=1,4", load))
    assert [s.rate for s in run_command.sweep_steps("rate=10,20", load)] == [10.0, 20.0]
    assert run_command.sweep_steps(None, load) == [load]
    for bad in ("threads=1,2", "users=", "users=a,b"):
        with pytest.raises(ConfigError, match="--sweep"):
            run_command.sweep_steps(bad, load)


# -- the other commands' flags --------------------------------------------------------------------


def test_worker_tune_profile_and_plan_flags():
    w = parse("worker", "--master-host", "10.0.0.5")
    assert (w.master_port, w.protocol, w.processes) == (config.LOCUST_MASTER_PORT, "grpc", 1)
    assert parse("worker", "--master-host", "h", "--protocol", "rest").protocol == "rest"
    t = parse("tune", "--trials", "5", "--set", "load.users=3", "--guide", "simulate")
    assert (t.trials, t.set, t.guide, t.experiment) == (5, ["load.users=3"], "simulate", "experiments/default.toml")  # fmt: skip
    p = parse("profile", "--experiment", "open_loop", "--max-batch-size", "16")
    assert (p.experiment, p.max_batch_size, p.protocols) == ("open_loop", 16, "grpc,rest")
    q = parse("plan", "--rate", "100", "--p99", "20", "--protocol", "rest")
    assert (q.rate, q.p99, q.protocol, q.experiment, q.headroom) == (100.0, 20.0, "rest", None, 0.2)
    with pytest.raises(SystemExit):
        parse("plan", "--rate", "100", "--p99", "20", "--protocol", "soap")


# -- errors: one line, before anything starts ------------------------------------------------------


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["run", "--set", "load.userz=3"], "command line: unknown key load.userz (known keys in [load]:"),
        (["tune", "--set", "load.userz=3"], "default.toml: unknown key load.userz"),
        (["run", "--experiment", "default", "--set", "server.flavour=x"], "unknown key server.flavour"),
        (["run", "--set", "users=3"], "must look like section.key=value"),
        (["tune", "--experiment", "no_such_experiment"], "no experiment file no_such_experiment"),
        (["run", "--users", "0"], "command line: load.users must be > 0, got 0"),
        (["worker", "--master-host", "h", "--processes", "0"], "--processes must be >= 1"),
    ],
)  # fmt: skip
def test_bad_values_give_one_error_line(capsys, argv, fragment):
    assert main([*argv]) == 2  # a usage error (labels.EXIT_USAGE)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert fragment in err[0]


def test_image_and_binary_imply_their_backend_for_run_as_for_tune():
    from harness.cli.commands import run as run_command
    from harness.config import BackendKind

    exp = run_command.experiment_from(parse("run", "--image", "tensorflow/serving:2.19.1"))
    assert exp.server.backend is BackendKind.DOCKER and exp.server.image == "tensorflow/serving:2.19.1"
    exp = run_command.experiment_from(parse("run", "--binary", "reference"))
    assert exp.server.backend is BackendKind.PROCESS
    explicit = parse("run", "--image", "i", "--backend", "process")
    assert run_command.experiment_from(explicit).server.backend is BackendKind.PROCESS
    assert main(["run", "--image", "i", "--binary", "b"]) == 2


def test_run_max_windows_is_at_most_that_many():
    from harness.cli.commands import run as run_command

    load = run_command.experiment_from(parse("run", "--max-windows", "2")).load
    assert (load.min_windows, load.max_windows, load.extra_windows) == (2, 2, 0)


def test_tune_takes_input_shapes_and_the_deploy_host(capsys):
    from harness.cli.commands import tune as tune_command

    t = parse("tune", "--input-shape", "x=3,4", "--deploy-host", "127.0.0.1")
    given = tune_command.flags.settings_from(t, tune_command.TUNE_FLAGS)
    assert given["load"]["input_shapes"] == ["x=3,4"]
    assert given["study"]["deploy_host"] == "127.0.0.1"
    assert main(["tune", "--deploy-host", "every-interface"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "study.deploy_host must be an IP address, got 'every-interface'" in err[0]
