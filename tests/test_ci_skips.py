"""The suite's skip policy (tests/conftest.py): under CI=true a skip is a failure.

A real pytest runs small suites with the policy loaded as a plugin: a test skipped for a missing
service, a ``skipif``, an expected failure and a test that passes; and a module skipped whole by
``importorskip``. Outside CI the skips skip; under CI they fail (the module as a collection
error, which stops the run), and the expected failure stays one.
"""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import ROOT, in_ci

TESTS = """
import pytest

def test_needs_an_engine():
    pytest.skip("no Docker engine answers here")

@pytest.mark.skipif(True, reason="the native server is not built")
def test_needs_a_build():
    pass

@pytest.mark.xfail(reason="known", strict=True)
def test_expected_to_fail():
    assert False

def test_runs():
    assert True
"""

MODULE = """
import pytest

pytest.importorskip("a_package_that_is_not_installed")

def test_never_collected():
    pass
"""


def run_suite(tmp_path, text: str, ci: str | None) -> subprocess.CompletedProcess:
    (tmp_path / "test_suite.py").write_text(text)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests"), str(ROOT)])
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "conftest", "-p", "no:cacheprovider", "-q"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env,
    )  # fmt: skip


def summary(r: subprocess.CompletedProcess) -> str:
    return r.stdout.strip().splitlines()[-1]


def test_what_counts_as_ci(monkeypatch):
    for value in ("true", "1", "yes", "TRUE", " on "):
        monkeypatch.setenv("CI", value)
        assert in_ci(), value
    for value in ("", "0", "false", "no", "False"):
        monkeypatch.setenv("CI", value)
        assert not in_ci(), value
    monkeypatch.delenv("CI")
    assert not in_ci()


def test_outside_ci_a_missing_service_skips(tmp_path):
    ci = None
    r = run_suite(tmp_path, TESTS, ci)
    assert r.returncode == 0, r.stdout[-3000:]
    assert "1 passed, 2 skipped, 1 xfailed" in summary(r), r.stdout[-3000:]
    r = run_suite(tmp_path, MODULE, ci)
    assert r.returncode == 5 and "1 skipped" in summary(r), r.stdout[-3000:]  # 5: no tests ran


def test_under_ci_a_skip_fails_and_says_why(tmp_path):
    ci = "true"
    r = run_suite(tmp_path, TESTS, ci)
    assert r.returncode == 1, r.stdout[-3000:]
    assert "1 failed, 1 passed, 1 xfailed, 1 error" in summary(r), r.stdout[-3000:]
    assert "CI=true: this would have skipped (Skipped: no Docker engine answers here)" in r.stdout
    assert "CI=true: this would have skipped (Skipped: the native server is not built)" in r.stdout
    r = run_suite(tmp_path, MODULE, ci)
    assert r.returncode == 2 and "1 error" in summary(r), r.stdout[-3000:]
    assert "ERROR test_suite.py - CI=true: this would have skipped" in r.stdout
    assert "a_package_that_is_not_installed" in r.stdout
