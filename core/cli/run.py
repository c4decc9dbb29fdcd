"""``dlg run`` and ``dlg resume``: run a dialogue with the progress display."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from dlg.cli.base import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    Amount,
    DlgClickError,
    _format_for,
    _pairs,
    _registry,
    _write_export,
    all_errors_option,
    cli,
    store_option,
)
from dlg.cli.ctrl_c import CtrlC
from dlg.cli.display import Progress, StreamingProgress
from dlg.cli.terminal import echo
from dlg.errors import DlgError, ExportError, StoreError
from dlg.records.record import ENDED


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
@click.option("--timeout", type=Amount("seconds"), metavar="SECONDS", help="Per-turn timeout.")
@click.option("--quiet", "-q", is_flag=True, help="No progress lines on stderr.")
@click.option("--stream/--no-stream", default=None,
              help="Print turns as they are written (default: when stdout is a terminal).")
@click.option("--save/--no-save", default=True, show_default=True,
              help="Save the dialogue after every turn (for dlg ls/show/resume).")
@click.option("--store", metavar="NAME", help="Where to save (a store plugin; default "
              "DLG_STORE or sqlite).")
@click.option("--telemetry", metavar="EXPORTER", envvar="DLG_TELEMETRY",
              help="OpenTelemetry spans and metrics: console, otlp or prometheus[:PORT].")
@click.option("--router", metavar="NAME",
              help="The router: participants, capabilities, learned, or a plugin's "
                   "(default: the mode's; capabilities with a pool).")
@click.option("--pool", "pool", multiple=True, metavar="[NAME=]SPEC",
              help="Offer a model to the router for turns no participant pins; repeatable.")
@click.option("--max-cost", type=Amount("dollars"), metavar="USD",
              help="A hard limit on what the dialogue spends, in US dollars.")
@click.option("--quality", type=click.Choice(["maximum", "balanced", "minimum_cost"]),
              help="How routers trade quality against cost (default balanced).")
@all_errors_option
@click.pass_context
def run(ctx: click.Context, mode: str, topic: str | None, inputs: tuple[str, ...],
        model: str | None, participants: tuple[str, ...], out: str | None, fmt: str | None,
        timeout: float | None, quiet: bool, stream: bool | None, save: bool,
        store: str | None, telemetry: str | None, router: str | None,
        pool: tuple[str, ...], max_cost: float | None, quality: str | None) -> None:
    """Run MODE (a built-in or plugin mode name, a mode file, or - for standard input)."""
    from dlg.cli.collector import freeze_heap, hold_collector
    from dlg.records.export import get_exporter
    from dlg.running.api import Orchestrator

    # no collections while it starts up; then what it loaded (the provider's package
    # too: start makes the models) out of the collector's way (dlg.cli.collector)
    held = hold_collector()
    try:
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
                                    registry=_registry(),
                                    store=(store or "default") if save else None,
                                    watchdog=True,
                                    router=router, pool=_pool(pool), max_cost=max_cost,
                                    constraints={"quality": quality} if quality else None)
        loaded, dialogue = orchestrator.start(mode, values)
    finally:
        if held:
            freeze_heap()
    _execute(orchestrator, loaded, dialogue, fmt=fmt, out=out, quiet=quiet, stream=stream)


def _pool(values: tuple[str, ...]) -> dict[str, str]:
    """``--pool SPEC`` or ``--pool NAME=SPEC``, repeated."""
    out: dict[str, str] = {}
    for item in values:
        name, sep, spec = item.partition("=")
        if sep and name and ":" not in name and "?" not in name:
            out[name.strip()] = spec.strip()
        else:
            out[item.strip()] = item.strip()
    return out


def _live_terminal() -> bool:
    """Whether the live view fits: stderr is a terminal that can redraw."""
    if os.environ.get("TERM", "") in ("dumb", "") or os.environ.get("CI"):
        return False
    return sys.stderr.isatty()


def _say(live: Any, text: str) -> None:
    """A line to the user on stderr, above the live view when there is one."""
    if live is not None:
        from dlg.cli.terminal import rich_text

        live.console.print(rich_text(text), highlight=False)
    else:
        echo(text, err=True)


def _execute(orchestrator: Any, loaded: Any, dialogue: Any, *, fmt: str | None,
             out: str | None, quiet: bool, stream: bool | None) -> None:
    """Run a prepared dialogue with the progress display, then export and report it."""
    import anyio

    show_text = not (fmt and out is None)
    if stream is None:
        stream = sys.stdout.isatty()
    parallel = {t.id for p in loaded.phases if p.parallel and len(p.turns) > 1
                for t in p.turns}
    live = None
    if not quiet and _live_terminal():
        from dlg.cli.display import LiveProgress

        live = LiveProgress(dialogue, show_text=show_text, stream=stream, parallel=parallel)
        progress: Any = live
    elif stream and show_text:
        progress = StreamingProgress(len(dialogue.turns), quiet=quiet,
                                     parallel=parallel)
    else:
        progress = Progress(len(dialogue.turns), show_text=show_text, quiet=quiet)
    orchestrator.observers = (progress,)
    if not quiet:
        echo(f"dlg: {loaded.name} · dialogue {dialogue.id}", err=True)
        done = sum(1 for t in dialogue.turns if t.status in ("completed", "skipped"))
        if done:
            echo(f"resuming: {done} of {len(dialogue.turns)} turns already done",
                 err=True)

    from dlg.running.interrupt import Interrupt

    saved = orchestrator.store is not None
    resume = f"`dlg resume {dialogue.id}` continues it." if saved else ""
    interrupt = orchestrator.interrupt = Interrupt()
    ctrl_c = CtrlC(interrupt, lambda text: _say(live, text),
                   f"`dlg resume {dialogue.id}` continues from its last save." if saved
                   else "nothing was saved.")

    async def main() -> None:
        with ctrl_c.running():
            await orchestrator.execute(loaded, dialogue)
        if ctrl_c.interrupted and dialogue.status not in ENDED:
            # said now: the event loop, as it closes, waits for the threads of models
            # that cannot be stopped (a second Ctrl-C does not)
            _say(live, f"Interrupted; {resume}" if saved else "Interrupted.")

    try:
        with ctrl_c:
            if live is not None:
                with live:
                    anyio.run(main)
            else:
                anyio.run(main)
    except KeyboardInterrupt:  # Ctrl-C before the dialogue ran, or raised by a plugin
        if saved:
            echo(f"\nInterrupted; {resume}", err=True)
            raise SystemExit(EXIT_INTERRUPTED) from None
        raise
    if ctrl_c.interrupted and dialogue.status not in ENDED:
        raise SystemExit(EXIT_INTERRUPTED)

    if fmt is not None:
        try:
            _write_export(dialogue, fmt, out, quiet=quiet)
        except ExportError as exc:  # the folder went away while it ran, a full disk...
            kept = f"; the dialogue is saved: `dlg export {dialogue.id} --out PATH`" if saved \
                else ""
            raise DlgClickError(f"{exc}{kept}", EXIT_FAILED) from None
    m = dialogue.metrics
    if not quiet:
        cost = f" · ${m.total_cost_usd:.4f}" if m.total_cost_usd else ""
        subs = f" · {m.substitutions} substituted" if m.substitutions else ""
        children = ""
        if dialogue.subdialogues:
            from dlg.running.budget import tree_spent

            spent = tree_spent(dialogue) - m.total_cost_usd
            children = (f" · {len(dialogue.subdialogues)} sub-dialogues, "
                        f"{sum(c.metrics.total_tokens for c in dialogue.subdialogues)} tokens"
                        + (f", ${spent:.4f}" if spent else ""))
        echo(
            f"{dialogue.status}: {m.turns_completed}/{len(dialogue.turns)} turns · "
            f"{m.total_latency_seconds:.2f}s · {m.total_tokens} tokens{cost}{subs}{children}",
            err=True)
    if dialogue.status not in ENDED:  # stopped early by its mode's design is done too
        hint = f"\n`dlg resume {dialogue.id}` continues it." if saved else ""
        reason = dialogue.error or (dialogue.metadata.get("stopped") or {}).get("reason")
        raise DlgClickError(f"dialogue {dialogue.status}" + (f": {reason}" if reason else "")
                            + hint, EXIT_FAILED)



@cli.command("resume")
@click.argument("dialogue_id")
@click.option("--force", is_flag=True, help="Resume even if the mode has changed since.")
@click.option("--mode", "mode_ref", metavar="MODE",
              help="Continue with this mode (a file or a name) when the one the dialogue "
                   "ran is not where it was, say on another machine; it must be the same "
                   "mode unless --force.")
@click.option("--out", "-o", type=click.Path(dir_okay=True, writable=True),
              help="Write the dialogue to this file (or directory) when done.")
@click.option("--format", "-f", "fmt", metavar="NAME", help="Export format.")
@click.option("--quiet", "-q", is_flag=True, help="No progress lines on stderr.")
@click.option("--stream/--no-stream", default=None, help="Print turns as they are written.")
@click.option("--model", "-m", metavar="SPEC",
              help="Run the remaining turns on this model instead of the saved ones.")
@click.option("--participant", "-p", "participants", multiple=True, metavar="ALIAS=SPEC",
              help="Bind one participant to a model for the remaining turns; repeatable.")
@click.option("--router", metavar="NAME", help="Route the remaining turns with this router "
              "(default: the one the dialogue used).")
@click.option("--max-cost", type=Amount("dollars"), metavar="USD",
              help="A new limit on what the whole dialogue spends (it counts what it spent).")
@store_option
def resume_command(dialogue_id: str, force: bool, mode_ref: str | None, out: str | None,
                   fmt: str | None, quiet: bool, stream: bool | None, model: str | None,
                   participants: tuple[str, ...], router: str | None,
                   max_cost: float | None, store: str | None) -> None:
    """Continue a saved dialogue: completed turns are kept, the rest run."""
    from dlg.records.export import get_exporter
    from dlg.running.api import Orchestrator

    fmt = _format_for(fmt, out)
    if fmt is not None:
        get_exporter(fmt)
    orchestrator = Orchestrator(store=store or "default", watchdog=True, model=model,
                                registry=_registry(),
                                models=_pairs(participants, "--participant"),
                                router=router, max_cost=max_cost)
    from dlg.records.store import DialogueBusyError

    try:
        mode, dialogue = orchestrator.prepare_resume(dialogue_id, force=force,
                                                     mode=mode_ref)
    except (DialogueBusyError, StoreError) as exc:
        raise DlgClickError(str(exc), EXIT_FAILED) from None
    except DlgError as exc:
        raise DlgClickError(str(exc), EXIT_USAGE) from None
    if all(t.status in ("completed", "skipped") for t in dialogue.turns):
        echo(f"dialogue {dialogue.id} is already complete", err=True)
        return
    _execute(orchestrator, mode, dialogue, fmt=fmt, out=out, quiet=quiet, stream=stream)

