"""The PostgreSQL test server: where PostgreSQL is installed but cannot start here, the
tests that need it are skipped with its own message (or fail where CI requires it),
never an error with a bare CalledProcessError."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.postgres_support import postgres_server


def _fake_postgres(folder: Path) -> None:
    """initdb and pg_ctl that refuse, as Debian's do where they cannot run."""
    folder.mkdir()
    for name in ("initdb", "pg_ctl"):
        program = folder / name
        program.write_text("#!/bin/sh\necho 'initdb: error: cannot be run here' >&2\nexit 1\n")
        program.chmod(program.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    folder.chmod(0o755)


@pytest.fixture
def refusing_postgres(tmp_path_factory: pytest.TempPathFactory,
                      monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("psycopg")
    folder = Path(tmp_path_factory.mktemp("pg", numbered=True)) / "bin"
    _fake_postgres(folder)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")


def test_a_postgres_that_cannot_start_skips_with_its_own_message(
        refusing_postgres: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DLG_REQUIRE_POSTGRES", raising=False)
    with pytest.raises(pytest.skip.Exception) as caught, postgres_server():
        pass
    assert "initdb" in str(caught.value)
    assert "CalledProcessError" not in str(caught.value)


def test_a_postgres_that_cannot_start_fails_where_ci_requires_it(
        refusing_postgres: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DLG_REQUIRE_POSTGRES", "1")
    with pytest.raises(pytest.fail.Exception) as caught, postgres_server():
        pass
    assert "initdb" in str(caught.value)
    assert "DLG_REQUIRE_POSTGRES" in str(caught.value)
