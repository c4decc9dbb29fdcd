"""What ``dlg run`` shows while a dialogue runs: plain lines, or a live view."""

from __future__ import annotations

from typing import Any

import click


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


