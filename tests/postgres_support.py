"""A real PostgreSQL server for tests: initdb and pg_ctl from Debian's package, on
127.0.0.1, in a temporary folder; stopped at the end.

Where PostgreSQL is not installed the tests that need it are skipped, unless
``DLG_REQUIRE_POSTGRES=1`` (set by ``.ci/run``, which installs it): then they fail.
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


@contextmanager
def postgres_server() -> Iterator[str]:
    """Start a throwaway server; yield its URL."""
    initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
    if not (initdb and pg_ctl):
        if os.environ.get("DLG_REQUIRE_POSTGRES"):
            pytest.fail("PostgreSQL is not installed (initdb, pg_ctl), and "
                        "DLG_REQUIRE_POSTGRES is set")
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    pytest.importorskip("psycopg")
    folder = Path(tempfile.mkdtemp(prefix="dlg-pg-"))
    data, port = folder / "data", _free_port()
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: run it as postgres
        shutil.chown(folder, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    run = {"check": True, "capture_output": True, "text": True}
    subprocess.run([*as_user, initdb, "-D", str(data), "-U", "dlg", "--auth=trust",
                    "-E", "UTF8", "--no-sync"], **run)
    subprocess.run([*as_user, pg_ctl, "-D", str(data), "-l", str(folder / "log"), "-w",
                    "-o", f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 "
                    "-c fsync=off", "start"], **run)
    try:
        yield f"postgresql://dlg@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)

