"""Context compression: which earlier turns a turn reads when they do not all fit.

``context_compression`` (on a mode or a turn) with ``max_context_tokens``:

- ``none`` (the default): every turn in ``context_from``;
- ``truncate``: the most recent turns that fit;
- ``relevant_only``: the turns most similar to this turn (its role, description and
  prompt template), by the embeddings configured (``hashing`` offline by default, or a
  plugin's: ``DLG_EMBEDDINGS``), as many as fit, in their original order;
- ``summary``: the most recent turns as they are, in half the limit; the older ones as
  summaries, made once by a cheap model (the cheapest of the pool, else the default
  model) and kept on their records (``turn.metadata["summary"]``), so later turns reuse
  them (context caching). Their cost is the reading turn's.

Token counts are estimates (about four characters a token). What was kept is recorded on
the turn: ``turn.metadata["context"]`` (strategy, the turns kept, tokens kept and of how
many).
"""

from __future__ import annotations

import math
import os
from collections.abc import Awaitable, Callable
from typing import Any

from dlg.models.calls import estimate_tokens

__all__ = ["STRATEGIES", "compress", "cosine", "embeddings", "ensure_summaries",
           "turn_reads"]

STRATEGIES = ("none", "truncate", "relevant_only", "summary")
SUMMARY_TOKENS = 160  # the most a summary may take
SUMMARY_PROMPT = ("Summarise this contribution to a dialogue in at most 80 words. Keep its "
                  "claims, numbers, names and conclusion; no preamble.\n\n")


def _text(record: Any) -> str:
    return (record.response or "").strip()


def compress(records: list[Any], positions: tuple[int, ...], strategy: str,
             max_tokens: int | None, query: str, embed: Any = None
             ) -> tuple[tuple[int, ...], dict[str, Any] | None]:
    """The positions (into ``records``) a turn reads, and what was done (None if
    nothing was)."""
    readable = [p for p in positions if records[p].status == "completed"]
    sizes = {p: estimate_tokens(_text(records[p])) for p in readable}
    total = sum(sizes.values())
    if strategy == "none" or not max_tokens or total <= max_tokens:
        return positions, None
    kept: list[int] = []
    used = 0
    if strategy == "truncate":
        for p in reversed(readable):
            if used + sizes[p] > max_tokens:
                break
            kept.append(p)
            used += sizes[p]
        kept.reverse()
    elif strategy == "summary":
        summarised: list[int] = []
        for p in reversed(readable):
            if not summarised and used + sizes[p] <= max_tokens // 2:
                kept.append(p)
                used += sizes[p]
            elif used + SUMMARY_TOKENS <= max_tokens:
                summarised.append(p)
                kept.append(p)
                used += SUMMARY_TOKENS
        kept.reverse()
        info = {"strategy": strategy, "turns": [records[p].id for p in kept],
                "summarised": [records[p].id for p in reversed(summarised)],
                "tokens": used, "of_tokens": total}
        return tuple(kept), info
    elif strategy == "relevant_only":
        vectors = embed.embed_documents([_text(records[p]) for p in readable])
        target = embed.embed_query(query)
        scores = {p: cosine(v, target) for p, v in zip(readable, vectors, strict=True)}
        for p in sorted(readable, key=lambda p: -scores[p]):
            if used + sizes[p] <= max_tokens:
                kept.append(p)
                used += sizes[p]
        kept.sort()
    else:
        raise ValueError(f"unknown context_compression '{strategy}' "
                         f"({', '.join(STRATEGIES)})")
    info = {"strategy": strategy, "turns": [records[p].id for p in kept],
            "tokens": used, "of_tokens": total}
    return tuple(kept), info


async def ensure_summaries(records: list[Any], ids: list[str],
                           call: Callable[[str], Awaitable[Any]]) -> float:
    """Give each named record a summary (``metadata["summary"]``) unless it has one:
    ``call(prompt)`` answers (a result with ``text`` and ``cost_usd``) or is None when
    the budget cannot pay, and then the text's start stands in. Returns what it cost."""
    cost = 0.0
    for record in records:
        if record.id not in ids or (record.metadata or {}).get("summary"):
            continue
        try:
            result = await call(SUMMARY_PROMPT + _text(record))
        except Exception:  # no model could summarise: the text's start stands in
            result = None
        if result is not None and (result.text or "").strip():
            summary = result.text.strip()
            cost += result.cost_usd or 0.0
        else:
            summary = _text(record)[:4 * SUMMARY_TOKENS // 2] + " [...]"
        record.metadata = {**(record.metadata or {}), "summary": summary}
    return cost


async def turn_reads(mode: Any, turn: Any, rec: Any, records: list[Any], tpl: dict[str, Any],
                     embed: Callable[[], Any], summarise: Callable[[str], Awaitable[Any]]
                     ) -> tuple[tuple[int, ...], frozenset[str], float]:
    """The positions a turn reads after its (or its mode's) compression, the turns it
    reads as summaries, and what making those summaries cost."""
    reads: tuple[int, ...] = tpl["reads"]
    strategy = turn.context_compression or mode.context_compression
    if not strategy or strategy == "none" or not tpl["needs"]:
        return reads, frozenset(), 0.0
    reads, trimmed = compress(records, reads, strategy,
                              turn.max_context_tokens or mode.max_context_tokens,
                              f"{turn.role}\n{turn.description}\n{turn.prompt}",
                              embed() if strategy == "relevant_only" else None)
    if not trimmed:
        return reads, frozenset(), 0.0
    rec.metadata = {**(rec.metadata or {}), "context": trimmed}
    summarised = frozenset(trimmed.get("summarised", ()))
    cost = await ensure_summaries(records, list(summarised), summarise) if summarised else 0.0
    return reads, summarised, cost


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=False))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0


def embeddings(pm: Any, name: str | None = None) -> Any:
    """The embeddings to use: ``name``, else ``DLG_EMBEDDINGS``, else ``hashing``."""
    from dlg import registrations
    from dlg.errors import DlgError

    chosen = name or os.environ.get("DLG_EMBEDDINGS") or "hashing"
    found = registrations.embeddings(pm)
    if chosen not in found:
        raise DlgError(f"'{chosen}' is not a known embeddings (installed: "
                       f"{', '.join(found) or 'none'})")
    return found[chosen]()
