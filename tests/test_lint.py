"""The code base stays ruff clean (style rules in pyproject.toml)."""

import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT


def test_ruff_clean():
    if shutil.which("ruff") is None and subprocess.run([sys.executable, "-m", "ruff", "--version"],
                                                      capture_output=True).returncode != 0:
        pytest.skip("ruff not installed")
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", str(REPO_ROOT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
