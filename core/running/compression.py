"""Context compression: which earlier turns a turn reads when they do not all fit.

``context_compression`` (on a mode or a turn) with ``max_context_tokens``:

- ``none`` (the default): every turn in ``context_from``;
- ``truncate``: the most recent turns that fit;
- ``relevant_only``: the sentences of the earlier turns most relevant to this turn (its
  role, description and prompt template; each question it asks on its own, a sentence
  holding the kind of fact a question asks for (a name, a date, a number, a cause)
  preferred), by BM25 word overlap (the stop words and a light stemmer of each turn's
  language: English, Spanish, French, German, Portuguese or Italian) and the
  embeddings configured (``hashing`` offline by default, or a plugin's:
  ``DLG_EMBEDDINGS``), as many as fit, each turn's in their original order with
  ``[...]`` where text was left out (``dlg.running.selection``);
- ``summary``: the most recent turns as they are, in half the limit; the older ones as
  summaries, made once by a cheap model (the cheapest of the pool, else the default
  model) and kept on their records (``turn.metadata["summary"]``), so later turns reuse
  them (context caching). When the older turns' summaries do not all fit, each is read
  in a share of what is left (at least 32 tokens), cut to its sentences most relevant to
  the turn. A summary that dropped a number, date or name of its source
  gets it back (``keep_facts``). The summariser's tokens and cost are the reading
  turn's: on its usage and cost, in the budget, and in ``metadata["context"]
  ["summariser"]``.

Token counts are estimates (about four characters a token). What was kept is recorded on
the turn: ``turn.metadata["context"]`` (strategy, the turns kept, tokens kept and of how
many).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from dlg.models.calls import estimate_tokens
from dlg.records.record import NO_USAGE, TokenUsage
from dlg.running.selection import cosine, keep_facts, select

if TYPE_CHECKING:
    import pluggy

__all__ = ["STRATEGIES", "compress", "cosine", "embeddings", "ensure_summaries",
           "turn_reads"]

STRATEGIES = ("none", "truncate", "relevant_only", "summary")
SUMMARY_TOKENS = 160  # the most a summary may take
MIN_SUMMARY_TOKENS = 32  # the least a summary is read in (shortened to what the turn asks)
SUMMARY_PROMPT = ("Summarise this contribution to a dialogue in at most 80 words. Keep "
                  "every number, date and name exactly as written, its claims and its "
                  "conclusion; no preamble.\n\n")


def _text(record: Any) -> str:
    return (record.response or "").strip()


def compress(records: list[Any], strategy: str, max_tokens: int | None, query: str,
             embed: Any = None) -> tuple[list[Any], dict[str, Any] | None]:
    """The records (of ``records``, the ones a turn reads) it keeps, and what was done
    (None if nothing was)."""
    readable = [r for r in records if r.status == "completed"]
    sizes = {id(r): estimate_tokens(_text(r)) for r in readable}
    total = sum(sizes.values())
    if strategy == "none" or not max_tokens or total <= max_tokens:
        return records, None
    kept: list[Any] = []
    used = 0
    if strategy == "truncate":
        for r in reversed(readable):
            if used + sizes[id(r)] > max_tokens:
                break
            kept.append(r)
            used += sizes[id(r)]
        kept.reverse()
    elif strategy == "summary":
        older: list[Any] = []
        for r in reversed(readable):  # the most recent as they are, in half the limit
            if not older and used + sizes[id(r)] <= max_tokens // 2:
                kept.append(r)
                used += sizes[id(r)]
            else:
                older.append(r)
        # the older ones share what is left: each summary read in that much, or at least
        # MIN_SUMMARY_TOKENS, the most recent first
        each = min(SUMMARY_TOKENS, max(MIN_SUMMARY_TOKENS, (max_tokens - used) // (
            len(older) or 1)))
        summarised: list[Any] = []
        for r in older:
            if used + each <= max_tokens:
                summarised.append(r)
                kept.append(r)
                used += each
        kept.reverse()
        info = {"strategy": strategy, "turns": [r.id for r in kept],
                "summarised": [r.id for r in reversed(summarised)],
                "summary_tokens": each, "tokens": used, "of_tokens": total}
        return kept, info
    elif strategy == "relevant_only":
        excerpts, used = select([_text(r) for r in readable], query, max_tokens, embed)
        shortened = []
        for r, excerpt in zip(readable, excerpts, strict=True):
            if excerpt is None:
                continue
            if excerpt != _text(r):  # the turn reads a copy: the record keeps its text
                shortened.append(r.id)
                r = dataclasses.replace(r, response=excerpt)
            kept.append(r)
        info = {"strategy": strategy, "turns": [r.id for r in kept],
                "excerpted": shortened, "tokens": used, "of_tokens": total}
        return kept, info
    else:
        raise ValueError(f"unknown context_compression '{strategy}' "
                         f"({', '.join(STRATEGIES)})")
    info = {"strategy": strategy, "turns": [r.id for r in kept],
            "tokens": used, "of_tokens": total}
    return kept, info


async def ensure_summaries(records: list[Any], ids: list[str],
                           call: Callable[[str], Awaitable[Any]]
                           ) -> tuple[float, TokenUsage, int]:
    """Give each named record a summary (``metadata["summary"]``) unless it has one:
    ``call(prompt)`` answers (a result with ``text``, ``usage`` and ``cost_usd``) or is
    None when the budget cannot pay, and then the text's start stands in. A summary that
    dropped a number, date or name of the text gets it back, within ``SUMMARY_TOKENS``.
    Returns what the calls cost, the tokens they used and how many were made."""
    cost, usage, calls = 0.0, NO_USAGE, 0
    for record in records:
        if record.id not in ids or (record.metadata or {}).get("summary"):
            continue
        try:
            result = await call(SUMMARY_PROMPT + _text(record))
        except Exception:  # no model could summarise: the text's start stands in
            result = None
        if result is not None:
            calls += 1
            cost += result.cost_usd or 0.0
            usage = usage + (result.usage or NO_USAGE)
        if result is not None and (result.text or "").strip():
            summary = keep_facts(_text(record), result.text.strip(), SUMMARY_TOKENS)
        else:
            summary = _text(record)[:4 * SUMMARY_TOKENS // 2] + " [...]"
        record.metadata = {**(record.metadata or {}), "summary": summary}
    return cost, usage, calls


async def turn_reads(mode: Any, turn: Any, rec: Any, readable: list[Any],
                     tpl: dict[str, Any], embed: Callable[[], Any],
                     summarise: Callable[[str], Awaitable[Any]]
                     ) -> tuple[list[Any], frozenset[str], float]:
    """The records a turn reads after its (or its mode's) compression, the ids of those
    it reads as summaries, and what making those summaries cost."""
    strategy = turn.context_compression or mode.context_compression
    if not strategy or strategy == "none" or not tpl["needs"]:
        return readable, frozenset(), 0.0
    query = f"{turn.role}\n{turn.description}\n{turn.prompt}"
    kept, trimmed = compress(readable, strategy,
                             turn.max_context_tokens or mode.max_context_tokens, query,
                             embed() if strategy == "relevant_only" else None)
    if not trimmed:
        return readable, frozenset(), 0.0
    rec.metadata = {**(rec.metadata or {}), "context": trimmed}
    summarised = frozenset(trimmed.get("summarised", ()))
    if not summarised:
        return kept, summarised, 0.0
    cost, usage, calls = await ensure_summaries(kept, list(summarised), summarise)
    if calls:  # the summariser's cost is this turn's, whether or not its own call works
        trimmed["summariser"] = {"calls": calls, "prompt_tokens": usage.prompt,
                                 "completion_tokens": usage.completion,
                                 "cost_usd": round(cost, 10)}
        rec.usage = rec.usage + usage
        rec.cost_usd = (rec.cost_usd or 0.0) + cost
    return _shortened(kept, summarised, trimmed, query), summarised, cost


def _shortened(kept: list[Any], summarised: frozenset[str], info: dict[str, Any],
               query: str) -> list[Any]:
    """``kept`` with each summary longer than this turn reads them (``summary_tokens``)
    cut to its sentences most relevant to the turn (a copy: the record keeps its
    summary); ``info["tokens"]`` becomes what is read."""
    each = info["summary_tokens"]
    out: list[Any] = []
    used = 0
    for r in kept:
        if r.id not in summarised:
            used += estimate_tokens(_text(r))
            out.append(r)
            continue
        summary = (r.metadata or {}).get("summary") or ""
        if estimate_tokens(summary) > each:
            summary = select([summary], query, each)[0][0] or summary[:4 * each]
            r = dataclasses.replace(r, metadata={**(r.metadata or {}), "summary": summary})
        used += estimate_tokens(summary)
        out.append(r)
    info["tokens"] = used
    return out


def embeddings(pm: pluggy.PluginManager | None, name: str | None = None) -> Any:
    """The embeddings to use: ``name``, else ``DLG_EMBEDDINGS``, else ``hashing``."""
    from dlg import registrations
    from dlg.errors import DlgError

    chosen = name or os.environ.get("DLG_EMBEDDINGS") or "hashing"
    found = registrations.embeddings(pm)
    if chosen not in found:
        raise DlgError(f"'{chosen}' is not a known embeddings (installed: "
                       f"{', '.join(found) or 'none'})")
    return found[chosen]()
