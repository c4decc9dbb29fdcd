"""Stopping a run that is under way (Ctrl-C): ``Interrupt``.

``request()`` stops every dialogue that runs with the interrupt, sub-dialogues too, as
their own ``until`` would: no turn starts after it, and the turns in flight may still
answer. The caller then cancels what is left after a short grace (``dlg run`` waits
``GRACE`` seconds), and a turn cancelled mid-answer is recorded ``cancelled``. An answer
that arrives in the grace is kept, and saved, so resuming does not pay for it again.
The dialogue ends ``cancelled``, with ``metadata.stopped.reason`` ``interrupted``.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["GRACE", "Interrupt", "Stoppable"]

GRACE = 0.25  # seconds the turns in flight get to answer once a stop is asked for
STOPPED = ("cancelled", "interrupted", "user")  # the kernel's (status, reason, by)


class Stoppable(Protocol):
    """What an interrupt stops: a running dialogue (``dlg.running.kernel.Kernel``)."""

    def stop(self, status: str, reason: str, by: str | None) -> None: ...


class Interrupt:
    """A request to stop, shared by the dialogues of a run (``Orchestrator.interrupt``)."""

    def __init__(self) -> None:
        self.requested = False
        self._runs: set[Stoppable] = set()  # the kernel's runs in progress

    def enter(self, run: Stoppable) -> None:
        """A run starts (stopped at once if a stop was asked for already)."""
        self._runs.add(run)
        if self.requested:
            run.stop(*STOPPED)

    def leave(self, run: Stoppable) -> None:
        self._runs.discard(run)

    def request(self) -> None:
        """Ask every run to stop: no turn starts from now on."""
        self.requested = True
        for run in list(self._runs):
            run.stop(*STOPPED)
