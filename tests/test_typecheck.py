"""The package type-checks with mypy, as users import it (``dlg``, not the checkout's
folders): a regular install of the package into a temporary folder, then ``mypy -p dlg``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def test_mypy_finds_no_errors(tmp_path):
    if shutil.which("mypy", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("mypy is not installed (it is in the [dev] extra)")
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--no-build-isolation", "--target", str(target), str(ROOT)],
                   check=True, capture_output=True)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "-p", "dlg", "--config-file",
         str(ROOT / "pyproject.toml"), "--cache-dir", str(tmp_path / "cache")],
        cwd=target, capture_output=True, text=True,
        env={**os.environ, "MYPYPATH": str(target)})
    assert result.returncode == 0, result.stdout + result.stderr
