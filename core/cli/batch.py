"""``dlg batch``: one mode on many inputs, with a progress bar and a summary table."""

from __future__ import annotations

import json
from typing import Any

import click

from dlg.cli.base import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    Amount,
    DlgClickError,
    _pairs,
    _registry,
    all_errors_option,
    cli,
    store_option,
)
from dlg.cli.collector import freeze_heap, hold_collector
from dlg.cli.run import _live_terminal, _pool
from dlg.cli.terminal import echo, one_line

LISTED = 50  # dialogues the summary lists one by one, unless --all


@cli.command("batch")
@click.argument("mode", required=False)
@click.option("--inputs", "inputs_file", type=click.Path(dir_okay=False), metavar="FILE",
              help="The rows of inputs: a .jsonl file (one JSON object a line) or a .csv "
                   "file (a header row names the inputs).")
@click.option("--resume", "resume_id", metavar="BATCH",
              help="Continue a batch: its ended dialogues are kept, the rest run.")
@click.option("--id", "batch_id", metavar="BATCH",
              help="The batch's id (default: a new one); dialogues are BATCH-00000, ...")
@click.option("--model", "-m", metavar="SPEC", help="Send every participant to this model.")
@click.option("--participant", "-p", "participants", multiple=True, metavar="ALIAS=SPEC",
              help="Bind one participant to a model; repeatable.")
@click.option("--router", metavar="NAME", help="The router (default: the mode's).")
@click.option("--pool", "pool", multiple=True, metavar="[NAME=]SPEC",
              help="Offer a model to the router; repeatable.")
@click.option("--max-cost", type=Amount("dollars"), metavar="USD",
              help="A hard limit on what each dialogue spends, in US dollars.")
@click.option("--max-total-cost", type=Amount("dollars"), metavar="USD",
              help="A hard limit on what the whole batch spends, in US dollars, earlier "
                   "runs of it included; kept for --resume.")
@click.option("--timeout", type=Amount("seconds"), metavar="SECONDS", help="Per-turn timeout.")
@click.option("--concurrency", "-c", type=click.IntRange(1, 1024), default=None,
              help="Dialogues that run at once (default 4).")
@click.option("--executor", default="local", show_default=True, metavar="NAME",
              help="Where the dialogues run: local, or a plugin's (ray).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--all", "list_all", is_flag=True,
              help=f"List every dialogue in the summary (past {LISTED:,}, only those that "
                   "did not end are listed).")
@click.option("--quiet", "-q", is_flag=True, help="No progress on stderr.")
@store_option
@all_errors_option
def batch_command(mode: str | None, inputs_file: str | None, resume_id: str | None,
                  batch_id: str | None, model: str | None, participants: tuple[str, ...],
                  router: str | None, pool: tuple[str, ...], max_cost: float | None,
                  max_total_cost: float | None, timeout: float | None,
                  concurrency: int | None, executor: str, as_json: bool, list_all: bool,
                  quiet: bool, store: str | None) -> None:
    """Run MODE once per row of --inputs; or continue a batch with --resume BATCH.

    Every dialogue is saved (dlg ls, show, resume); the summary gives each one's status,
    turns, tokens, cost and time, and the totals.
    """
    held = hold_collector()  # until freeze_heap: the packages it imports
    try:
        _batch(mode, inputs_file, resume_id, batch_id, model, participants, router, pool,
               max_cost, max_total_cost, timeout, concurrency, executor, as_json, list_all,
               quiet, store)
    finally:
        if held:  # on again, also when it failed before the heap was frozen
            import gc

            gc.enable()


def _batch(mode: str | None, inputs_file: str | None, resume_id: str | None,
           batch_id: str | None, model: str | None, participants: tuple[str, ...],
           router: str | None, pool: tuple[str, ...], max_cost: float | None,
           max_total_cost: float | None, timeout: float | None, concurrency: int | None,
           executor: str, as_json: bool, list_all: bool, quiet: bool, store: str | None
           ) -> None:
    import anyio

    from dlg.running.api import Orchestrator
    from dlg.running.batches.items import new_batch_id
    from dlg.running.inputs import read_rows

    options: dict[str, Any] = {}
    if resume_id:
        manifest = _manifest(resume_id, store)
        mode, rows, batch_id = manifest["mode"], manifest["rows"], resume_id
        options = dict(manifest.get("options") or {})
        concurrency = concurrency or manifest.get("concurrency")
        if max_total_cost is None:  # kept with the batch, unless given again
            max_total_cost = manifest.get("max_total_cost")
    else:
        if not mode or not inputs_file:
            raise DlgClickError("give a MODE and --inputs FILE, or --resume BATCH", EXIT_USAGE)
        rows = read_rows(inputs_file)
    # a registry file given now (--registry, DLG_REGISTRY) wins over the batch's
    given = {"model": model, "models": _pairs(participants, "--participant") or None,
             "router": router, "pool": _pool(pool) or None, "timeout": timeout,
             "registry": _registry()}
    options.update({k: v for k, v in given.items() if v is not None})
    if max_cost is not None:
        options["constraints"] = {**(options.get("constraints") or {}), "max_cost": max_cost}
    orchestrator = Orchestrator(store=store or "default", **options)
    if executor == "local":
        # its models made now, as `dlg run` makes them, so that the provider's package
        # (langchain-openai and openai: most of the start-up) is imported before the heap
        # is frozen, not in the event loop with the collector walking it all
        from dlg.language.loader import load_mode

        orchestrator.bindings(load_mode(mode, pm=orchestrator.plugin_manager))
    progress = _Progress(len(rows), quiet=quiet, limit=max_total_cost)
    freeze_heap()

    async def main() -> Any:
        return await orchestrator.batch(mode, rows, batch_id=batch_id,
                                        concurrency=concurrency or 4, executor=executor,
                                        on_item=progress.done, max_total_cost=max_total_cost)

    batch_id = batch_id or new_batch_id()  # known here, so an interrupt can name it
    try:
        with progress:
            result = anyio.run(main)
    except KeyboardInterrupt:
        again = (f"dlg batch --resume {batch_id}" if hasattr(orchestrator.open_store(),
                                                             "save_batch")
                 else f"dlg batch {mode} --inputs {inputs_file} --id {batch_id}")
        echo(f"\nInterrupted; `{again}` continues it.", err=True)
        raise SystemExit(EXIT_INTERRUPTED) from None
    if as_json:
        echo(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
    else:
        echo(summary_table(result, None if list_all else LISTED))
    if not result.ok:
        from dlg.records.record import ENDED

        left = sum(1 for i in result.items if i.status not in ENDED)
        raise DlgClickError(f"{left} of {len(result.items)} dialogues did not end; "
                            f"`dlg batch --resume {result.id}` continues them", EXIT_FAILED)


def _manifest(batch_id: str, store: str | None) -> dict[str, Any]:
    from dlg.cli.base import _store

    opened = _store(store)
    load = getattr(opened, "load_batch", None)
    manifest = load(batch_id) if load is not None else None
    if manifest is None:
        raise DlgClickError(f"no saved batch '{batch_id}' in this store (give the MODE and "
                            f"--inputs again with --id {batch_id} to continue it)", EXIT_USAGE)
    return manifest


def summary_table(result: Any, listed: int | None = None, *, ran: bool = True) -> str:
    """Each dialogue's status, turns, tokens, cost and time, then the totals. With
    ``listed``, a batch of more dialogues lists only those that did not end, at most
    ``listed`` of them (thousands of lines would hide the totals). ``ran``: the result
    of a run (what it spent, its wall time), not a batch as saved (``dlg show --batch``)."""
    from dlg.records.record import ENDED

    items = result.items
    if listed is not None and len(items) > listed:
        items = [i for i in items if i.status not in ENDED][:listed]
    lines = [f"batch {result.id} · mode {result.mode} · {len(result.items)} dialogues", ""]
    if items:
        lines.append(f"{'dialogue':<36} {'status':<13} {'turns':>5} {'tokens':>8} "
                     f"{'cost':>10} {'time':>8}  inputs")
    for i in items:
        inputs = json.dumps(i.inputs, ensure_ascii=False)
        inputs = inputs if len(inputs) <= 40 else inputs[:39] + "…"
        status = i.status + ("*" if i.skipped else "")
        lines.append(f"{i.dialogue_id[:36]:<36} {status:<13} {i.turns:>5} {i.tokens:>8} "
                     f"{f'${i.cost_usd:.5f}':>10} {i.latency_seconds:>7.2f}s  {inputs}")
        if i.error and i.status not in ("completed",):
            lines.append(f"{'':<36} {one_line(i.error)[:200]}")
    if not items:
        lines.append("(every one ended: --all lists them, --json gives them all)")
    elif len(items) < len(result.items):
        lines.append(f"({len(result.items) - len(items):,} more not listed: those that "
                     f"ended{'' if len(items) < (listed or 0) else ', and more that did not'}"
                     f"; --all lists every one, --json gives them all)")
    t = result.totals
    statuses = ", ".join(f"{n} {s}" for s, n in sorted(t["statuses"].items()))
    lines += ["", f"total: {t['dialogues']} dialogues ({statuses}) · {t['turns']} turns · "
                  f"{t['tokens']} tokens · ${t['cost_usd']:.5f} · model time "
                  f"{t['model_seconds']:.2f}s"
              + (f" · wall {t['wall_seconds']:.2f}s" if ran else "")]
    if result.max_total_cost is not None:
        this_run = sum(i.spent_usd for i in result.items)
        lines.append(f"max total cost ${result.max_total_cost:g}: ${t['cost_usd']:.5f} "
                     "spent" + (f", ${this_run:.5f} of it in this run" if ran else ""))
    if any(i.skipped for i in result.items):
        lines.append("* ended before this run: kept as it was")
    return "\n".join(lines)


class _Progress:
    """A progress bar on a terminal (rich), else a line per dialogue as it ends; each
    with what this run has spent so far (of the batch's ``limit``, if it has one)."""

    def __init__(self, total: int, *, quiet: bool, limit: float | None = None):
        from dlg.models.pacing import pacer

        self.total, self.quiet, self.finished = total, quiet, 0
        self.limit, self.spent = limit, 0.0
        self._pacer, self._waited_before = pacer, pacer.waited
        self._bar: Any = None
        self._task: Any = None
        if not quiet and _live_terminal():
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self._bar = Progress(TextColumn("batch"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("{task.description}"),
                                 transient=True)

    def __enter__(self) -> _Progress:
        if self._bar is not None:
            self._bar.__enter__()
            self._task = self._bar.add_task("", total=self.total)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def waited(self) -> str:
        """What this run's calls waited on rate limits (their pacing and their 429s), in
        all, if they did: `` · 12.3s waiting on rate limits``."""
        seconds = self._pacer.waited - self._waited_before
        return f" · {seconds:.1f}s waiting on rate limits" if seconds >= 0.05 else ""

    def done(self, item: Any) -> None:
        self.finished += 1
        self.spent += item.spent_usd
        of = f" of ${self.limit:g}" if self.limit is not None else ""
        if self._bar is not None:
            self._bar.update(self._task, advance=1, description=(
                f"{item.dialogue_id}: {item.status} · ${self.spent:.4f}{of} spent"
                f"{self.waited()}"))
        elif not self.quiet:
            cost = f" · ${item.cost_usd:.4f}" if item.cost_usd else ""
            kept = " (ended before: kept)" if item.skipped else ""
            total = f" · this run ${self.spent:.4f}{of}" if self.spent or of else ""
            echo(f"[{self.finished}/{self.total}] {item.dialogue_id} {item.status} · "
                 f"{item.turns} turns · {item.tokens} tokens{cost}{kept}{total}"
                 f"{self.waited()}", err=True)
