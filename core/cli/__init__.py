"""The ``dlg`` command line, one module per command group.

``base`` has the group, its errors and shared options; ``run`` runs and resumes
dialogues; ``batch`` runs a mode on many inputs; ``saved`` lists, shows and exports saved
ones; ``modes``, ``models``, ``plugins`` and ``routing`` (with ``rate``) are their
groups; ``mcp`` serves dlg to MCP clients (``mcp_server``); ``display`` is what a run
shows. A command's module is imported when the command is asked for
(``base.BUILTIN_COMMANDS``). Plugins add commands through the ``register_commands`` hook.
"""

from typing import Any

from dlg.cli.base import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, DlgClickError, cli, main

__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_USAGE", "DlgClickError", "_table", "cli",
           "main"]


def __getattr__(name: str) -> Any:
    if name == "_table":  # a dialogue's table, as ``dlg show`` prints it
        from dlg.cli.saved import _table

        return _table
    raise AttributeError(f"module 'dlg.cli' has no attribute {name!r}")
