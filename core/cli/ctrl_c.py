"""Ctrl-C while ``dlg run`` or ``dlg resume`` runs a dialogue.

The first Ctrl-C says at once that dlg is stopping, and stops: no turn starts after it,
a turn in flight has ``GRACE`` seconds to answer (an answer that arrives is kept and
saved, so resuming does not pay for it again), then it is cancelled, and the dialogue
is saved ``cancelled``. A second Ctrl-C quits at once, as a kill would: what was saved
last is kept, and ``dlg resume`` continues from there.

Python's own Ctrl-C (``KeyboardInterrupt``, which asyncio turns into cancelling
everything) is replaced only where it can be: in the main thread, when Ctrl-C is not
ignored (a shell's background job ignores it).
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import anyio

from dlg.running.interrupt import GRACE, Interrupt

__all__ = ["CtrlC"]


class CtrlC:
    """Catches Ctrl-C around a run (``with CtrlC(...)``), and, inside the event loop,
    gives it the scope to cancel (``with ctrl_c.running():``)."""

    def __init__(self, interrupt: Interrupt, say: Callable[[str], None], quit_note: str):
        self.interrupt = interrupt
        self.say = say  # how to tell the user, in the loop's thread
        self.quit_note = quit_note  # what a forced quit says of what was kept
        self.count = 0  # Ctrl-Cs so far
        self._loop: Any = None
        self._scope: anyio.CancelScope | None = None
        self._previous: Any = None

    def __enter__(self) -> CtrlC:
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self._previous = signal.signal(signal.SIGINT, self._on_signal)
        return self

    def __exit__(self, *exc: Any) -> None:
        # after a Ctrl-C the handler stays: a second one still quits at once while the
        # process ends (a model's thread that does not stop would hold it)
        if self._previous is not None and not self.count:
            signal.signal(signal.SIGINT, self._previous)

    @property
    def interrupted(self) -> bool:
        return self.count > 0

    @contextmanager
    def running(self) -> Iterator[None]:
        """Within the event loop: the run, in the scope a stop cancels after the grace."""
        import asyncio

        self._loop = asyncio.get_running_loop()
        with anyio.CancelScope() as scope:
            self._scope = scope
            try:
                yield
            finally:
                self._scope = None

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.count += 1
        if self.count > 1:
            os.write(2, f"\nQuit at once; {self.quit_note}\n".encode())
            os._exit(130)
        loop = self._loop
        if loop is None or loop.is_closed() or self._scope is None:
            raise KeyboardInterrupt  # no dialogue running now: Python's own Ctrl-C
        loop.call_soon_threadsafe(self._stop)

    def _stop(self) -> None:
        """In the event loop's thread: stop the run, and cancel what is left after the
        grace."""
        self.say(f"Stopping: no new turn starts, a turn in flight has {GRACE:g}s to "
                 "answer (Ctrl-C again to quit at once)")
        self.interrupt.request()
        if self._scope is not None:
            self._scope.deadline = min(self._scope.deadline, anyio.current_time() + GRACE)
