"""Bad experiment and batching files, fuzzed: always one line naming the problem, never a
traceback; and no value from an experiment reaches a shell."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from faultkit import ROOT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness import config
from harness.batching import BatchingParameters
from harness.errors import ConfigError

TRIED = {"experiments": 0, "batching": 0}
FUZZ = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

GOOD = {
    "model": {"demo": "mlp"},
    "server": {"backend": "process", "cpus": "0"},
    "load": {"users": 8, "window_s": 1.0},
    "slo": {"p99_ms": 50.0},
    "search": {"max_batch_size": [1, 8], "batch_timeout_micros": {"low": 100, "high": 1000}},
    "study": {"trials": 5},
}

toml_scalar = st.one_of(
    st.integers(-(2**64), 2**64),
    st.floats(),
    st.booleans(),
    st.text(max_size=12),
)
toml_value = st.recursive(
    toml_scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.sampled_from(["low", "high", "log", "step", "choices", "zero", "x"]),
            inner,
            max_size=3,
        ),
    ),
    max_leaves=8,
)


def toml_literal(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(repr(v), repr(v))
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return '"' + v.encode("unicode_escape").decode().replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(toml_literal(x) for x in v) + "]"
    return "{" + ", ".join(f"{k} = {toml_literal(x)}" for k, x in v.items()) + "}"


def to_toml(doc: dict) -> str:
    lines = []
    for section, table in doc.items():
        if isinstance(table, dict):
            lines.append(f"[{section}]")
            lines += [f"{k} = {toml_literal(v)}" for k, v in table.items()]
        else:
            lines.insert(0, f"{section} = {toml_literal(table)}")
    return "\n".join(lines) + "\n"


KNOWN = {
    "model": ["demo", "path", "name", "signature", "bogus"],
    "server": ["backend", "binary", "image", "cpus", "memory", "extra_flags", "startup_timeout_s", "gpus"],
    "load": ["protocol", "users", "rate", "arrivals", "request_sizes", "warmup_s", "window_s",
             "min_windows", "max_windows", "processes", "cpus", "userz"],
    "slo": ["p99_ms", "max_error_rate"],
    "search": ["max_batch_size", "batch_timeout_micros", "num_batch_threads", "max_enqueued_batches",
               "allowed_batch_sizes", "users", "intra_op_parallelism"],
    "study": ["name", "sampler", "seed", "trials", "mode", "top_k", "repeats", "baselines"],
}  # fmt: skip


@st.composite
def experiments(draw):
    """A good experiment with a few values replaced, keys added or sections broken."""
    doc = {k: dict(v) for k, v in GOOD.items()}
    for _ in range(draw(st.integers(1, 3))):
        section = draw(st.sampled_from([*KNOWN, "extra"]))
        if section == "extra" or draw(st.integers(0, 9)) == 0:
            doc[section] = draw(toml_value)  # a section that is not a table, or unknown
            continue
        table = doc.setdefault(section, {})
        if not isinstance(table, dict):
            continue
        table[draw(st.sampled_from(KNOWN[section]))] = draw(toml_value)
    text = to_toml(doc)
    if draw(st.integers(0, 7)) == 0:  # invalid TOML: cut, or a stray character
        cut = draw(st.integers(0, len(text)))
        text = text[:cut] + draw(st.sampled_from(["", "=", "[", '"', "\x00", "]]"])) + text[cut:]
    return text


def assert_one_line(exc: ConfigError, path) -> None:
    text = str(exc)
    assert "\n" not in text, text
    assert len(text) < 600, text
    assert str(path) in text or "override" in text, text


@FUZZ
@given(text=experiments())
def test_experiment_files_fail_with_one_line_naming_the_file(tmp_path, text):
    TRIED["experiments"] += 1
    path = tmp_path / "bad.toml"
    path.write_text(text)
    try:
        exp = config.load(path)
    except ConfigError as exc:
        assert_one_line(exc, path)
        return
    # accepted: then every value is usable as the experiment says
    assert exp.load.users >= 1 and exp.load.window_s > 0 and exp.study.trials >= 1
    for name in ("max_batch_size", "num_batch_threads", "max_enqueued_batches"):
        r = getattr(exp.search, name)
        assert all(isinstance(c, int | float) and c >= 1 for c in r.choices)


@FUZZ
@given(raw=st.binary(max_size=200))
def test_experiment_files_of_random_bytes(tmp_path, raw):
    TRIED["experiments"] += 1
    path = tmp_path / "bytes.toml"
    path.write_bytes(raw)
    try:
        config.load(path)
    except ConfigError as exc:
        assert_one_line(exc, path)


FIELDS = [
    "max_batch_size", "batch_timeout_micros", "max_enqueued_batches", "num_batch_threads",
    "max_execution_batch_size", "enable_large_batch_splitting", "allowed_batch_sizes",
    "pad_variable_length_inputs", "thread_pool_name", "bogus_field",
]  # fmt: skip
proto_value = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.sampled_from(["true", "false", "1.5", "-0", "0x10", "nan", "inf", "AB", '"s"', '"\\x"']),
    st.text(alphabet="{}<>:;,[]\"'\\ #\n0123456789abcdefxyz-.", max_size=12),
)


@st.composite
def batching_files(draw):
    lines = []
    for _ in range(draw(st.integers(0, 6))):
        field = draw(st.sampled_from(FIELDS))
        value = draw(proto_value)
        form = draw(st.sampled_from(["wrapped", "plain", "list", "nested"]))
        if form == "wrapped":
            lines.append(f"{field} {{ value: {value} }}")
        elif form == "plain":
            lines.append(f"{field}: {value}")
        elif form == "list":
            lines.append(f"{field}: [{value}, {draw(proto_value)}]")
        else:
            depth = draw(st.integers(1, 3000))
            lines.append(f"{field} " + "{ a " * depth + "}" * depth)
    return "\n".join(lines)


@FUZZ
@given(text=batching_files())
def test_batching_files_fail_with_one_line(text):
    TRIED["batching"] += 1
    try:
        params = BatchingParameters.from_text(text, "params.txt")
        params.effective(cores=2)
    except ConfigError as exc:
        assert str(exc) and "\n" not in str(exc), str(exc)


def test_counts(capsys):
    """Printed for the record (runs after the fuzzers in this file)."""
    with capsys.disabled():
        print(f"\nbad-input examples tried: {TRIED}")


# -- through the command line and the server's start-up ----------------------------------------


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("[model\ndemo = 'mlp'", "invalid TOML"),
        ("[model]\ndemo = 'mlp'\n[load]\nusers = 'many'\n", "load.users must be an integer"),
        ("[model]\ndemo = 'mlp'\n[load]\nuserz = 1\n", "unknown key load.userz"),
        ("[model]\ndemo = 'mlp'\n[search]\nmax_batch_size = [0, 8]\n", "must be >= 1"),
        ("[model]\ndemo = 'mlp'\n[search]\nmax_batch_size = ['x']\n", "whole numbers"),
        ("[model]\ndemo = 'mlp'\n[load]\nwarmup_s = nan\n", "finite number"),
        ("[model]\ndemo = 'mlp'\nname = 'm; touch /tmp/pwned'\n", "may hold only letters"),
        ("[model]\ndemo = 'mlp'\n[server]\nextra_flags = [1]\n", "list of strings"),
        ("[model]\ndemo = 'mlp'\n[server]\ncpus = '0-99999999999'\n", "server.cpus"),
    ],
)
def test_harness_tune_prints_one_error_line(tmp_path, text, fragment):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    r = subprocess.run(
        [sys.executable, "-m", "harness.cli", "tune", "--experiment", str(path),
         "--results-dir", str(tmp_path / "res")],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert fragment in lines[0] and str(path) in lines[0]
    assert not (tmp_path / "res").exists()  # refused before anything started


@pytest.mark.parametrize(
    "params, fragment",
    [
        (
            "max_batch_size { value: 8 }\nallowed_batch_sizes: 4\n",
            "Last entry in allowed_batch_sizes",
        ),
        ("max_batch_size: 8\n", "must be written as"),
        ('thread_pool_name { value: "\\x" }\n', "cannot parse"),
        ("a { " * 5000 + "}" * 5000, "cannot parse"),
        ("num_batch_threads { value: 99999999999999999999999 }", "out of range"),
    ],
)
def test_reference_server_refuses_bad_batching_files_in_one_line(
    tmp_path, mlp_base, params, fragment
):
    path = tmp_path / "batching.txt"
    path.write_text(params)
    r = subprocess.run(
        [sys.executable, "-m", "harness.refserver", "--port=0", "--model_name=m",
         f"--model_base_path={mlp_base}", "--enable_batching", f"--batching_parameters_file={path}"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )  # fmt: skip
    assert r.returncode == 1, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and fragment in errors[0], r.stderr[-2000:]


def test_no_shell_anywhere_in_the_harness():
    """Commands are argument lists: no shell=True, os.system or os.popen in our code."""
    offenders = []
    for path in (ROOT / "harness").rglob("*.py"):
        text = path.read_text()
        for needle in ("shell=True", "os.system(", "os.popen("):
            if needle in text:
                offenders.append(f"{path.relative_to(ROOT)}: {needle}")
    assert offenders == []
