"""TF Serving's flag list, and the experiment's extra flags checked against it at load time."""

import pytest

from harness import config, tfs_flags
from harness.errors import ConfigError


def test_the_list_is_main_cc_s_48_flags():
    assert len(tfs_flags.FLAGS) == 48
    assert {"enable_batching", "batching_parameters_file", "version", "port"} <= tfs_flags.FLAGS
    assert "bind_address" not in tfs_flags.FLAGS  # the reference server's own flag
    assert tfs_flags.HARNESS_SETS <= tfs_flags.FLAGS


def test_unknown_arguments_are_what_the_binary_would_ignore():
    args = ["--port=1", "--enable_batching", "--bind_address=0.0.0.0", "8500", "-port=1", "--"]
    assert tfs_flags.unknown(args) == ["--bind_address=0.0.0.0", "8500", "-port=1", "--"]
    assert tfs_flags.flag_name("--rest_api_port=8501") == "rest_api_port"
    assert tfs_flags.flag_name("rest_api_port") is None


def exp(flags):
    return config.from_dict({"model": {"demo": "mlp"}, "server": {"extra_flags": flags}}, "x.toml")


def test_extra_flags_are_checked_when_the_experiment_is_read():
    ok = exp(["--tensorflow_session_parallelism=1", "--enable_model_warmup=false"])
    assert ok.server.extra_flags == ("--tensorflow_session_parallelism=1", "--enable_model_warmup=false")
    with pytest.raises(ConfigError) as bad:
        exp(["--enable_model_warmup=false", "--tensorflow_sesion_parallelism=1"])
    text = str(bad.value)
    assert text.startswith("x.toml: server.extra_flags: '--tensorflow_sesion_parallelism=1' is not a flag")
    assert "\n" not in text and "main.cc" in text
    for wrong in ("--bind_address=0.0.0.0", "tensorflow_session_parallelism=1", "--x=$(touch y)"):
        with pytest.raises(ConfigError, match="is not a flag tensorflow_model_server defines"):
            exp([wrong])
    with pytest.raises(ConfigError, match="--port is set by the harness for every trial"):
        exp(["--port=9000"])
