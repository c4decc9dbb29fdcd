"""``dlg mcp``: dlg as a Model Context Protocol server over stdio (``mcp_server``), for
MCP clients (Claude Desktop, editors, agents) to run modes and read saved dialogues."""

from __future__ import annotations

import click

from dlg.cli.base import EXIT_USAGE, Amount, DlgClickError, _registry, cli


@cli.command("mcp")
@click.option("--model", "-m", metavar="SPEC", envvar="DLG_MODEL",
              help="The model runs use unless a call names one (default: each mode's, "
                   "else DLG_MODEL).")
@click.option("--store", metavar="NAME",
              help="Where dialogues are saved and read (default DLG_STORE or sqlite).")
@click.option("--max-cost", type=Amount("dollars"), metavar="USD",
              help="A hard limit on what each run spends, in US dollars.")
def mcp_command(model: str | None, store: str | None, max_cost: float | None) -> None:
    """Serve dlg to MCP clients over stdio: tools to list modes, run one (with progress),
    show and export saved dialogues; saved dialogues as resources (dlg://dialogues/ID)."""
    try:
        from dlg.cli.mcp_server import build_server
    except ImportError as exc:  # not installed, or mcp 1.x (no MCPServer, no mcp_types)
        if not (exc.name or "").startswith("mcp"):
            raise
        raise DlgClickError("dlg mcp needs the MCP SDK 2.x: pip install "
                            "'dlg-orchestrator[mcp]'", EXIT_USAGE) from None
    build_server(model=model, store=store, max_cost=max_cost,
                 registry=_registry()).run("stdio")
