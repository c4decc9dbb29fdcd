"""A real PostgreSQL server for tests: initdb and pg_ctl from Debian's package, on
127.0.0.1, in a temporary folder; stopped at the end.

Where PostgreSQL is not installed, or is installed but its server cannot be started here
(initdb refuses, no ``postgres`` user to run it as root, a port it cannot bind), the tests
that need it are skipped with PostgreSQL's own message, unless ``DLG_REQUIRE_POSTGRES=1``
(set by ``.ci/run``, which installs it): then they fail with that message. As root the
server runs as the ``postgres`` user (it refuses root); as anyone else, as that user.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import pytest


def _bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _unavailable(why: str) -> NoReturn:
    """Skip the test, or fail it where CI requires PostgreSQL."""
    if os.environ.get("DLG_REQUIRE_POSTGRES"):
        pytest.fail(f"{why}, and DLG_REQUIRE_POSTGRES is set", pytrace=False)
    pytest.skip(why)


def _run(command: list[str], what: str) -> None:
    """Run a PostgreSQL program; one that cannot run makes the server unavailable."""
    try:
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=120)
    except subprocess.CalledProcessError as exc:
        said = " ".join((exc.stderr or exc.stdout or "").split())[:500]
        _unavailable(f"PostgreSQL's {what} failed (exit {exc.returncode}): {said}")
    except (OSError, subprocess.TimeoutExpired) as exc:
        _unavailable(f"PostgreSQL's {what} could not run: {exc}")


@contextmanager
def postgres_server() -> Iterator[str]:
    """Start a throwaway server; yield its URL."""
    initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
    if not (initdb and pg_ctl):
        _unavailable("PostgreSQL is not installed (initdb, pg_ctl: apt-get install postgresql)")
    pytest.importorskip("psycopg")
    folder = Path(tempfile.mkdtemp(prefix="dlg-pg-"))
    data, port = folder / "data", _free_port()
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: run it as postgres
        try:
            shutil.chown(folder, "postgres")
        except (LookupError, OSError) as exc:
            shutil.rmtree(folder, ignore_errors=True)
            _unavailable(f"PostgreSQL cannot run as root and there is no 'postgres' user "
                         f"to run it as ({exc})")
        as_user = ["runuser", "-u", "postgres", "--"]
    try:
        _run([*as_user, initdb, "-D", str(data), "-U", "dlg", "--auth=trust",
              "-E", "UTF8", "--no-sync"], "initdb")
        _run([*as_user, pg_ctl, "-D", str(data), "-l", str(folder / "log"), "-w",
              "-o", f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 "
              "-c fsync=off", "start"], "pg_ctl start")
    except BaseException:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)
        raise
    try:
        yield f"postgresql://dlg@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)

