"""This process: its id and its host's name, read once and kept, and the random bits
dlg's ids are made of.

``os.getpid()`` is a system call each time, and the stores ask for it at every save (a
connection must not cross a fork); ``pid()`` returns the id kept, renewed in a child
after ``os.fork``. The host name is read once per process.

``random_bits(n)`` makes the random part of dialogue ids, span ids and lease tokens: from
a generator of dlg's own, seeded from the system's entropy when the process starts and
again in a child after ``os.fork``. ``os.urandom`` is a system call for every id (one a
turn); ``random``'s shared generator would give every process that calls
``random.seed(42)``, as experiment scripts do, the same ids.
"""

from __future__ import annotations

import os
import random

__all__ = ["host", "pid", "random_bits"]

_pid = os.getpid()
_host: str | None = None
_random = random.Random()  # seeded from os.urandom
random_bits = _random.getrandbits


def _forked() -> None:
    global _pid
    _pid = os.getpid()
    _random.seed()  # a child does not repeat its parent's ids


os.register_at_fork(after_in_child=_forked)


def pid() -> int:
    """This process's id."""
    return _pid


def host() -> str:
    """This machine's host name, as it was when first asked."""
    global _host
    if _host is None:
        import socket

        _host = socket.gethostname()
    return _host
