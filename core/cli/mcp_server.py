"""The MCP server ``dlg mcp`` runs (the official ``mcp`` SDK's ``MCPServer``).

Tools: ``list_modes``, ``run_mode`` (a progress notification per finished turn),
``show_dialogue`` and ``export_dialogue``; resources: ``dlg://dialogues`` (the saved ones,
newest first) and ``dlg://dialogues/{dialogue_id}`` (one saved record, as JSON).

Model answers are hostile input: they go out as text content and nothing here evaluates
them. Every text that leaves goes through ``redact``, so no secret reaches the client
(saved records are redacted already). dlg's own errors become tool errors with their
message, never a traceback. Only ``dlg mcp`` imports this module (and so ``mcp``).
"""

from __future__ import annotations

import json
from typing import Any

import mcp_types
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError, ToolError

from dlg.errors import DlgError

__all__ = ["DIALOGUE_URI", "build_server"]

DIALOGUE_URI = "dlg://dialogues/{dialogue_id}"
_LIST_URI = "dlg://dialogues"
_RESOURCES_LISTED = 50  # the newest saved dialogues listed as resources


def _safe(text: str) -> str:
    from dlg.observability.redact import redact

    return redact(text)


def _tool_error(exc: DlgError) -> Exception:
    return ToolError(_safe(str(exc)))


class _TurnProgress:
    """An observer: a progress notification to the client when each turn finishes (its
    id, participant, model and status; never its text)."""

    def __init__(self, ctx: Any):
        self.ctx = ctx

    async def turn_finished(self, dialogue: Any, turn: Any) -> None:
        done = sum(1 for t in dialogue.turns if t.status not in ("pending", "running"))
        where = f" ({turn.participant} on {turn.model})" if turn.model else ""
        await self.ctx.report_progress(done, len(dialogue.turns),
                                       _safe(f"turn {turn.id}{where}: {turn.status}"))


def _check_run(mode: str, model: str | None) -> None:
    """A call names a mode list_modes lists (a path would have dlg read any file, and "-"
    the protocol's own input), and a model spec without options (``?base_url=...`` would
    send the prompts, and the provider's key, wherever the caller says)."""
    from dlg import registrations
    from dlg.language.source import user_modes

    if mode not in registrations.modes() and mode not in user_modes():
        raise ToolError(f"{mode!r} is not a mode list_modes lists: give one of its names")
    if model is not None and "?" in model:
        raise ToolError(f"the model {model.partition('?')[0]!r} is given with options: a "
                        "call may name a model but not its options; start `dlg mcp --model "
                        "SPEC` with them instead")


def build_server(*, model: str | None = None, store: str | None = None,
                 max_cost: float | None = None, registry: str | None = None) -> MCPServer:
    """The MCP server: ``model`` runs every participant unless a call names another
    (default: the mode's, else DLG_MODEL), ``store`` is where dialogues are saved and read,
    ``max_cost`` limits what each run spends (dollars)."""
    from dlg._version import __version__

    default_model = model

    def opened() -> Any:
        from dlg.records.store import open_store

        return open_store(store)

    def saved(dialogue_id: str) -> Any:
        from dlg.records.store import load_dialogue

        return load_dialogue(dialogue_id, opened())

    class Server(MCPServer):
        async def list_resources(self) -> list[mcp_types.Resource]:
            import anyio

            rows = await anyio.to_thread.run_sync(lambda: opened().list())
            found = [mcp_types.Resource(
                uri=DIALOGUE_URI.format(dialogue_id=r["id"]),
                name=_safe(f"{r['id']} · {r.get('mode')} · {r.get('status')}"),
                mime_type="application/json") for r in rows[:_RESOURCES_LISTED]
                if isinstance(r.get("id"), str)]
            return [*await super().list_resources(), *found]

    server: Server = Server(
        "dlg", version=__version__, log_level="WARNING",
        instructions="Run dlg's multi-model dialogue modes: list_modes, then run_mode with "
                     "the mode's inputs; show_dialogue and export_dialogue read saved ones.")

    @server.tool(structured_output=False)
    def list_modes() -> str:
        """The modes run_mode can run, as JSON: name, structure, turns, description and
        inputs (which are required, their types and defaults)."""
        from dlg.cli.modes import mode_rows

        try:
            return _safe(json.dumps(mode_rows(inputs=True), indent=2, ensure_ascii=False))
        except DlgError as exc:
            raise _tool_error(exc) from None

    @server.tool(structured_output=False)
    async def run_mode(mode: str, ctx: Context, inputs: dict[str, Any] | None = None,
                       model: str | None = None) -> str:
        """Run a dlg mode (a name from list_modes) with its inputs (for example
        {"topic": "..."}), and return the saved dialogue's id, status and every turn as
        Markdown. A progress notification is sent as each turn finishes. ``model``
        (a model spec such as "openai:gpt-4o") runs every participant on it."""
        from dlg.records.export import render_export
        from dlg.records.record import ENDED
        from dlg.running.api import Orchestrator

        _check_run(mode, model)
        try:
            orchestrator = Orchestrator(model=model or default_model, store=store or "default",
                                        registry=registry, max_cost=max_cost,
                                        observers=(_TurnProgress(ctx),))
            loaded, dialogue = orchestrator.start(mode, dict(inputs or {}))
            await orchestrator.execute(loaded, dialogue)
        except DlgError as exc:
            raise _tool_error(exc) from None
        if dialogue.status not in ENDED:
            reason = dialogue.error or (dialogue.metadata.get("stopped") or {}).get("reason")
            raise ToolError(_safe(f"dialogue {dialogue.id} {dialogue.status}"
                                  + (f": {reason}" if reason else "")
                                  + f"; it is saved (`dlg resume {dialogue.id}` continues it)"))
        m = dialogue.metrics
        head = (f"dialogue {dialogue.id} · {dialogue.mode} · {dialogue.status} · "
                f"{m.turns_completed}/{len(dialogue.turns)} turns · {m.total_tokens} tokens"
                + (f" · ${m.total_cost_usd:.4f}" if m.total_cost_usd else ""))
        body = render_export(dialogue, "markdown")
        return _safe(f"{head}\n\n{body}" if isinstance(body, str) else head)

    @server.tool(structured_output=False)
    def show_dialogue(dialogue_id: str) -> str:
        """A saved dialogue (by id or a unique prefix of one) as ``dlg show`` prints it:
        per turn the model, status, latency, tokens and cost, then the routing reasons."""
        from dlg.cli.saved import _table

        try:
            return _safe(_table(saved(dialogue_id)))
        except DlgError as exc:
            raise _tool_error(exc) from None

    @server.tool(structured_output=False)
    def export_dialogue(dialogue_id: str, format: str = "markdown") -> str:
        """A saved dialogue exported as ``dlg export`` does: "markdown", "json", or another
        text format (html, csv, jsonl, or a plugin's); binary ones (pdf) are refused."""
        from dlg.records.export import get_exporter, render_export

        binary = ToolError(_safe(f"the {format} export is binary: use `dlg export "
                                 f"{dialogue_id} -f {format} --out FILE` instead"))
        try:
            if getattr(get_exporter(format), "binary", False):
                raise binary
            data = render_export(saved(dialogue_id), format)
        except DlgError as exc:
            raise _tool_error(exc) from None
        if isinstance(data, bytes):  # an exporter that did not say it was binary
            raise binary
        return _safe(data)

    @server.resource(_LIST_URI, name="dialogues", mime_type="application/json",
                     description="The saved dialogues, newest first (id, mode, status, "
                                 "turns, tokens, cost, inputs).")
    def list_dialogues() -> str:
        try:
            return _safe(json.dumps(opened().list(), indent=2, ensure_ascii=False))
        except DlgError as exc:  # the store cannot be opened or read
            raise ResourceError(_safe(str(exc))) from None

    @server.resource(DIALOGUE_URI, name="dialogue", mime_type="application/json",
                     description="One saved dialogue's full record, as `dlg export -f json`.")
    def dialogue_resource(dialogue_id: str) -> str:
        from dlg.records.export import render_export
        from dlg.records.store import DialogueNotFoundError

        try:
            data = render_export(saved(dialogue_id), "json")
        except DialogueNotFoundError as exc:
            raise ResourceNotFoundError(_safe(str(exc))) from None
        except DlgError as exc:  # damaged, or the store cannot be read
            raise ResourceError(_safe(str(exc))) from None
        return _safe(data if isinstance(data, str) else data.decode())

    return server
