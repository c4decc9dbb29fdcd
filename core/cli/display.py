"""What ``dlg run`` shows while a dialogue runs: plain lines, or a live view."""

from __future__ import annotations

from typing import Any

from dlg.cli.terminal import closed, echo, rich_text, visible


class Progress:
    """Shows each turn as it starts and ends (stderr) and its text as it completes."""

    def __init__(self, total: int, *, show_text: bool, quiet: bool):
        self.total = total
        self.show_text = show_text
        self.quiet = quiet

    def _status(self, line: str) -> None:
        if not self.quiet:
            echo(line, err=True)

    def _streamed(self, turn: Any) -> bool:
        return False

    def _heading(self, turn: Any) -> str:
        who = " · ".join(x for x in (turn.participant, turn.model) if x)
        return f"\n## {turn.index}. {turn.role}{_round(turn)} ({who})\n"

    def _step(self, dialogue: Any, turn: Any) -> str:
        if dialogue.depth:  # a sub-dialogue's turn: indented under its parent's
            item = str((dialogue.metadata.get("parent") or {}).get("item", ""))[:40]
            return f"{'  ' * dialogue.depth}↳ {dialogue.mode} [{item}] {turn.role}"
        return f"[{turn.index}/{self.total}] {turn.role}{_round(turn)}"

    def turn_started(self, dialogue: Any, turn: Any) -> None:
        who = f" · {turn.participant}" if turn.participant else ""
        self._status(f"▶ {self._step(dialogue, turn)}{who} · {turn.model}")

    def turn_finished(self, dialogue: Any, turn: Any) -> None:
        step = self._step(dialogue, turn)
        if turn.replaced:
            # always shown, even with --quiet: the user should know who really answered
            echo(f"↪ {step} · {turn.model} answered in place of "
                 f"{', '.join(turn.replaced)} ({turn.attempts[-1]['error']})", err=True)
        if turn.status == "completed":
            cost = f" · ${turn.cost_usd:.4f}" if turn.cost_usd else ""
            estimated = " (estimated)" if turn.usage.estimated else ""
            self._status(f"✓ {step} · {turn.latency_seconds:.2f}s · "
                         f"{turn.usage.mark}{turn.usage.total} tokens{estimated}{cost}")
            if self.show_text and not self._streamed(turn) and not dialogue.depth:
                echo(self._heading(turn))
                echo((turn.response or "").strip() + "\n")
        elif turn.status == "skipped" and not dialogue.depth:
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
        if turn.id in self.parallel or dialogue.depth:
            return
        if turn.id not in self.started:
            self.started.add(turn.id)
            echo(self._heading(turn))
        echo(text, nl=False)

    def turn_finished(self, dialogue: Any, turn: Any) -> None:
        if turn.id in self.started and not dialogue.depth:
            echo("\n")
        super().turn_finished(dialogue, turn)


def _round(turn: Any) -> str:
    return f" (round {turn.round})" if turn.round > 1 else ""




class LiveProgress:
    """The terminal view (rich): a live table of the turns, with a timer on each running
    one and the text of a turn that runs alone as it streams in; each finished turn's
    text is printed above it, its Markdown rendered. Used when stderr is a terminal;
    ``Progress`` writes plain lines otherwise (logs, CI, pipes).

    Turn text goes to stdout: rendered when stdout is the same terminal, plain Markdown
    when it is a file or a pipe, so ``dlg run ... > out.md`` stays a clean document.
    """

    _ICONS = {"pending": "[dim]·[/]", "completed": "[green]✓[/]", "failed": "[red]✗[/]",
              "skipped": "[dim]-[/]", "cancelled": "[yellow]■[/]"}

    def __init__(self, dialogue: Any, *, show_text: bool, stream: bool,
                 parallel: set[str], console: Any = None, out: Any = None):
        import sys
        import time

        from rich.console import Console
        from rich.live import Live

        self.dialogue = dialogue
        self.show_text = show_text
        self.stream = stream
        self.parallel = parallel
        self._clock = time.monotonic
        self._started: dict[str, float] = {}
        self._streaming: dict[str, list[str]] = {}
        self._children: dict[str, Any] = {}  # sub-dialogues by id, as they start
        self.console = console or Console(stderr=True)
        self.live = Live(self, console=self.console, refresh_per_second=8, transient=True,
                         redirect_stdout=False, redirect_stderr=False)
        # text to the live console when stdout shares its terminal, else plain to stdout
        self._same_terminal = out is None and sys.stdout.isatty() and self.console.is_terminal
        self.out = out or (self.console if self._same_terminal else Console(
            file=sys.stdout, force_terminal=False, soft_wrap=True, highlight=False))
        for console in (self.console, self.out):
            _write_on_when_closed(console)

    def __enter__(self) -> LiveProgress:
        self.live.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.live.stop()
        self.console.print(self._table())  # the final state stays on screen

    def _elapsed(self, turn: Any) -> str:
        if turn.status == "running" and turn.id in self._started:
            return f"{self._clock() - self._started[turn.id]:.1f}s"
        return f"{turn.latency_seconds:.2f}s" if turn.latency_seconds is not None else ""

    def _table(self) -> Any:
        from rich.table import Table

        table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
        for name, justify in (("", "left"), ("#", "right"), ("turn", "left"),
                              ("participant", "left"), ("model", "left"),
                              ("time", "right"), ("tokens", "right"), ("cost", "right")):
            table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
        for t in self.dialogue.turns:
            icon = "[cyan]…[/]" if t.status == "running" else self._ICONS.get(t.status, "?")
            model = rich_text(t.model or "") + (" [magenta]↪[/]" if t.replaced else "")
            tokens = f"{t.usage.mark}{t.usage.total}" if t.usage.total else ""
            cost = f"${t.cost_usd:.4f}" if t.cost_usd else ""
            table.add_row(icon, str(t.index), rich_text(t.role + _round(t)),
                          rich_text(t.participant or ""), model, self._elapsed(t), tokens, cost)
        for child in self._children.values():  # sub-dialogues: one row each
            running = [t for t in child.turns if t.status == "running"]
            icon = "[cyan]…[/]" if child.status == "running" else self._ICONS.get(
                child.status, "?")
            item = str((child.metadata.get("parent") or {}).get("item", ""))[:40]
            done = sum(1 for t in child.turns if t.status == "completed")
            cost = f"${child.total_cost_usd:.4f}" if child.total_cost_usd else ""
            model = (running[0].model or "") if running else ""
            table.add_row(icon, "", rich_text(f"{'  ' * child.depth}↳ {item}"),
                          rich_text(child.mode), rich_text(model),
                          f"{done}/{len(child.turns)}", str(child.usage.total or ""), cost)
        return table

    def __rich__(self) -> Any:
        from rich.console import Group
        from rich.panel import Panel
        from rich.text import Text

        parts: list[Any] = [self._table()]
        for turn_id, pieces in self._streaming.items():
            tail = "".join(pieces).splitlines()[-6:]
            turn = self.dialogue.turn(turn_id)
            parts.append(Panel(Text(visible("\n".join(tail))),
                               title=rich_text(f"{turn.index}. {turn.role}"),
                               title_align="left", border_style="dim"))
        return Group(*parts)

    def turn_started(self, dialogue: Any, turn: Any) -> None:
        if dialogue.id != self.dialogue.id:  # a sub-dialogue: a row of its own
            self._children[dialogue.id] = dialogue
            return
        self._started[turn.id] = self._clock()

    def turn_chunk(self, dialogue: Any, turn: Any, text: str) -> None:
        if (self.stream and self.show_text and turn.id not in self.parallel
                and dialogue.id == self.dialogue.id):
            self._streaming.setdefault(turn.id, []).append(text)

    def turn_finished(self, dialogue: Any, turn: Any) -> None:
        if dialogue.id != self.dialogue.id:
            return
        self._streaming.pop(turn.id, None)
        if turn.replaced:
            self.console.print("[magenta]↪[/] " + rich_text(
                f"{turn.index}. {turn.role}: {turn.model} answered in place of "
                f"{', '.join(turn.replaced)} ({turn.attempts[-1]['error']})"), highlight=False)
        if turn.status == "failed":
            self.console.print("[red]✗[/] " + rich_text(
                f"{turn.index}. {turn.role} failed: {turn.error}"), highlight=False)
        if not (self.show_text and turn.status == "completed"):
            return
        who = " · ".join(x for x in (turn.participant, turn.model) if x)
        text = (turn.response or "").strip()
        if self._same_terminal:
            from rich.markdown import Markdown
            from rich.rule import Rule

            self.out.print(Rule(rich_text(f"{turn.index}. {turn.role} ({who})"),
                                align="left"))
            self.out.print(Markdown(visible(text)))
            self.out.print()
            return
        self.out.print(f"\n## {turn.index}. {turn.role} ({who})\n\n{text}\n",
                       markup=False, highlight=False)


def _write_on_when_closed(console: Any) -> None:
    """A rich console whose output is closed (``| head``) writes no more; rich's own
    answer, exit status 1, would end the dialogue with no one saying why."""
    def stop_writing() -> None:
        console.quiet = True
        closed(console.file)

    setattr(console, "on_broken_pipe", stop_writing)  # noqa: B010 (a method, replaced)
