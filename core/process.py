"""This process: its id and its host's name, read once and kept.

``os.getpid()`` is a system call each time, and the stores ask for it at every save (a
connection must not cross a fork); ``pid()`` returns the id kept, renewed in a child
after ``os.fork``. The host name is read once per process.
"""

from __future__ import annotations

import os
import socket

__all__ = ["host", "pid"]

_pid = os.getpid()
_host: str | None = None


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)


def pid() -> int:
    """This process's id."""
    return _pid


def host() -> str:
    """This machine's host name, as it was when first asked."""
    global _host
    if _host is None:
        _host = socket.gethostname()
    return _host
