"""Fixtures of the fault-injection tests (the session's demo models come from tests/conftest.py)."""

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # faultkit
sys.path.insert(0, str(Path(__file__).parents[2]))  # tests.conftest, however pytest is started


@pytest.fixture
def model(tmp_path, mlp_base):
    shutil.copytree(mlp_base, tmp_path / "model")
    return tmp_path / "model"
