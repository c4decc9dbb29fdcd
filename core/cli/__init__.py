"""The ``dlg`` command line, one module per command group.

``base`` has the group, its errors and shared options; ``run`` runs and resumes
dialogues; ``batch`` runs a mode on many inputs; ``saved`` lists, shows and exports saved
ones; ``modes``, ``models``, ``plugins`` and ``routing`` (with ``rate``) are their
groups; ``display`` is what a run shows. Plugins add commands through the
``register_commands`` hook.
"""

from dlg.cli import batch, models, modes, plugins, routing, run, saved  # noqa: F401 - registers
from dlg.cli.base import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, DlgClickError, cli, main
from dlg.cli.saved import _table

__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_USAGE", "DlgClickError", "_table", "cli",
           "main"]
