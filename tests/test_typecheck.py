"""The package type-checks with mypy, as users import it (``dlg``, not the checkout's
folders): a regular install of the package into a temporary folder (one, shared by the
tests here), then ``mypy -p dlg``; and ``mypy --strict`` on the packages held to it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# over a minute together on 2 cores: .ci/run runs them (pytest -m long), the README command not
pytestmark = [pytest.mark.slow, pytest.mark.long]

# held to ``mypy --strict`` (anyio's level), with everything they import
STRICT_PACKAGES = ("dlg.running", "dlg.models", "dlg.records")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package installed (not editable) into a temporary folder, once for the module."""
    if shutil.which("mypy", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("mypy is not installed (it is in the [dev] extra)")
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--no-build-isolation", "--target", str(target), str(ROOT)],
                   check=True, capture_output=True)
    return target


def mypy(site: Path, cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mypy", *args, "--config-file", str(ROOT / "pyproject.toml"),
         "--cache-dir", str(cache)],
        cwd=site, capture_output=True, text=True, env={**os.environ, "MYPYPATH": str(site)})


def test_mypy_finds_no_errors(installed, tmp_path):
    result = mypy(installed, tmp_path / "cache", "-p", "dlg")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_finds_no_errors(installed, tmp_path):
    packages = [arg for name in STRICT_PACKAGES for arg in ("-p", name)]
    result = mypy(installed, tmp_path / "cache", "--strict", *packages)
    assert result.returncode == 0, result.stdout + result.stderr
