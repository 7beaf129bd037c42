"""The reference server's model-config and monitoring files: read through the protobuf messages,
checked as TF Serving checks them at start-up, refused in one line."""

import subprocess
import sys

import pytest

from harness.errors import ConfigError
from harness.refserver.manager import ModelConfig
from harness.refserver.server import read_model_config_file, read_monitoring_config
from tests.conftest import ROOT


def write(tmp_path, text, name="models.config"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_several_models_with_version_policies_and_labels(tmp_path):
    path = write(
        tmp_path,
        """model_config_list {
          config { name: "a" base_path: "/m/a" model_platform: "tensorflow" }
          config { name: "b" base_path: "/m/b" model_platform: "tensorflow"
                   model_version_policy { specific { versions: 5 versions: 7 } }
                   version_labels { key: "stable" value: 5 } version_labels { key: "canary" value: 7 } }
          config { name: "c" base_path: "/m/c" model_platform: "tensorflow"
                   model_version_policy { latest { num_versions: 3 } } }
          config { name: "d" base_path: "/m/d" model_type: TENSORFLOW
                   model_version_policy { all { } } }
          config { name: "e" base_path: "/m/e" model_platform: "tensorflow"
                   model_version_policy { latest { } } }
        }""",
    )
    assert read_model_config_file(path) == [
        ModelConfig(name="a", base_path="/m/a"),
        ModelConfig(
            name="b",
            base_path="/m/b",
            policy="specific",
            versions=(5, 7),
            labels=(("canary", 7), ("stable", 5)),
        ),
        ModelConfig(name="c", base_path="/m/c", versions=(3,)),
        ModelConfig(name="d", base_path="/m/d", policy="all", versions=()),
        ModelConfig(name="e", base_path="/m/e", versions=(1,)),  # 0 versions: TF Serving serves 1
    ]


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("", "model_config_list has no config entries"),
        ('model_config_list { config { name: "a" base_path: "/m" model_platfrom: "tensorflow" } }',
         "has no field named 'model_platfrom'"),
        ('model_config_list { config { name: "a" base_path: "/m" } }',
         "Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
         "ModelServerConfig::model_platform, model name is a"),
        ('model_config_list { config { name: "a" base_path: "/m" model_platform: "tensorflow" '
         "model_type: TENSORFLOW } }", "Illegal setting both ModelServerConfig::model_type"),
        ('model_config_list { config { name: "a" base_path: "/m" model_type: OTHER } }',
         "ModelServerConfig::model_type choice 2 not supported."),
        ('model_config_list { config { name: "a" base_path: "/m" model_platform: "tflite" } }',
         "Model a requests unsupported platform tflite"),
        ('model_config_list { config { name: "a" base_path: "m/a" model_platform: "tensorflow" } }',
         "Expected model a to have an absolute path or URI; got base_path()=m/a"),
        ('model_config_list { config { name: "a" base_path: "/m" model_platform: "tensorflow" } '
         'config { name: "a" base_path: "/n" model_platform: "tensorflow" } }',
         "Illegal to list model a multiple times in config list"),
        ('model_config_list { config { base_path: "/m" model_platform: "tensorflow" } }',
         "every config needs a name and a base_path"),
        ('model_config_list { config { name: "a" base_path: "/m" model_platform: "tensorflow" '
         'logging_config { log_collector_config { type: "file" } } } }',
         "the reference server does not log requests"),
        ('custom_model_config { type_url: "type.googleapis.com/x.Y" }',
         "ModelServer does not yet support custom model config."),
    ],
)  # fmt: skip
def test_model_config_files_tf_serving_refuses(tmp_path, text, fragment):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        read_model_config_file(path)
    assert fragment in str(exc.value) and path in str(exc.value)
    assert "\n" not in str(exc.value) and exc.value.hint


def test_monitoring_config(tmp_path):
    on = write(tmp_path, 'prometheus_config { enable: true path: "/metrics" }', "m.txt")
    assert read_monitoring_config(on) == "/metrics"
    default = write(tmp_path, "prometheus_config { enable: true }", "d.txt")
    assert read_monitoring_config(default) == "/monitoring/prometheus/metrics"
    off = write(tmp_path, 'prometheus_config { path: "/metrics" }', "o.txt")
    assert read_monitoring_config(off) is None
    assert read_monitoring_config(write(tmp_path, "", "e.txt")) is None
    bad = write(tmp_path, "prometheus_config { enabled: true }", "b.txt")
    with pytest.raises(ConfigError, match=r"b.txt:1:21: .* has no field named 'enabled'"):
        read_monitoring_config(bad)


@pytest.mark.parametrize(
    "flag, text, fragment",
    [
        ("--model_config_file", "model_config_list { config { nam: 'a' } }",
         "has no field named 'nam', near"),
        ("--monitoring_config_file", "prometheus_config: { enable: 1 } }",
         "Expected identifier or number, got }"),
    ],
)  # fmt: skip
def test_bad_files_stop_the_server_in_one_line(tmp_path, flag, text, fragment):
    path = write(tmp_path, text, "bad.txt")
    r = subprocess.run(
        [sys.executable, "-m", "harness.refserver", "--port=0", f"{flag}={path}"]
        + (["--model_base_path=/nonexistent"] if flag == "--monitoring_config_file" else []),
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert r.returncode == 1, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1, r.stderr[-2000:]
    assert errors[0].startswith(f"error: {path}:1:") and fragment in errors[0], errors[0]


def test_a_config_file_wins_over_the_entrypoints_model_flags(tmp_path):
    """The stock image's entrypoint always passes --model_name and --model_base_path; with a
    --model_config_file beside them TF Serving serves the file's models and ignores the two."""
    from harness.refserver.server import build_parser, model_configs

    path = tmp_path / "models.config"
    path.write_text(
        'model_config_list { config { name: "a" base_path: "/models/a" model_platform: "tensorflow" } '
        'config { name: "b" base_path: "/models/b" model_platform: "tensorflow" } }\n'
    )
    args = build_parser().parse_args(
        ["--model_name=m", "--model_base_path=/models/m", f"--model_config_file={path}"]
    )
    assert [c.name for c in model_configs(args)] == ["a", "b"]
