"""Prompt-cache hints: what a call tells a provider plugin about its prompt's reuse.

Providers cache a prompt's prefix: OpenAI by itself (prefixes of 1,024 tokens and more,
in 128-token steps), routed by a ``prompt_cache_key``; Anthropic where the request marks
breakpoints. dlg lays a turn out so that its prefix (the system text, then the earlier
turns it reads) is byte for byte the next turn's, and says so in a ``CacheHint``: the
dialogue the call belongs to, and where in the turn's prompt (the first user message;
a structured answer's repair request follows it with more) the stable parts end. The
kernel knows no provider; a chat model that declares ``dlg_cache_hint = True`` gets the
hint as its ``dlg_cache`` call argument and uses what its provider has (plugins/openai.py,
plugins/anthropic.py). Other models never see it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

__all__ = ["CacheHint", "cache_note", "cache_saving", "dialogue_saved_usd", "hint_of",
           "saved_usd", "split_stable"]


class CacheHint(NamedTuple):  # a tuple: made for every turn, so made fast
    """``key``: groups calls that share a prefix (the dialogue's id). ``ends``: in the
    first user message's text, the offsets where each stable part ends (one per earlier
    turn the prompt repeats), ascending; the text after the last is the turn's own.
    ``last``: the mode's last turn (outside loops): a prefix written to a cache now would
    not be read again by this dialogue."""

    key: str | None = None
    ends: tuple[int, ...] = ()
    last: bool = False  # no later turn of the mode reads this prompt's prefix
    # or the earlier turns' records (and those read as summaries) the prompt starts with,
    # for ``stable_ends`` to work ``ends`` out from when a provider asks
    records: Any = ()
    summarised: frozenset[str] = frozenset()

    def stable_ends(self) -> tuple[int, ...]:
        """``ends``, or worked out from ``records`` (most turns' calls never ask)."""
        if self.ends or not self.records:
            return self.ends
        from dlg.language.templates import transcript_ends

        return transcript_ends(self.records, self.summarised)


def split_stable(text: str, ends: tuple[int, ...]) -> list[str]:
    """``text`` cut at ``ends`` (offsets out of order or out of range are ignored): the
    stable parts, then the rest (empty if nothing follows them). Joined, they are
    ``text`` again."""
    parts, start = [], 0
    for end in ends:
        if type(end) is int and start < end <= len(text):
            parts.append(text[start:end])
            start = end
    parts.append(text[start:])
    return parts


def hint_of(kwargs: dict[str, Any]) -> CacheHint | None:
    """The hint a call passed (removed from ``kwargs``), or None."""
    hint = kwargs.pop("dlg_cache", None)
    return hint if isinstance(hint, CacheHint) else None


def cache_saving(registry: Any, result: Any, record: Any = None) -> float | None:
    """What the prompt cache saved on a call's ``result`` (its ``cost_usd`` priced
    already): its cost with every prompt token at the input price, less what it cost.
    Added to ``record.metadata["cache"]["saved_usd"]`` when a turn's record is given (a
    turn's repair calls add theirs)."""
    usage = result.usage
    full: float | None = registry.cost(result.model, usage.prompt, usage.completion)
    paid: float | None = result.cost_usd
    if full is None or paid is None:
        return None
    saved = full - paid
    if record is not None:
        metadata = dict(getattr(record, "metadata", None) or {})
        before = saved_usd(metadata)
        metadata["cache"] = {"saved_usd": round(before + saved, 10)}
        record.metadata = metadata
    return saved


def saved_usd(metadata: Any) -> float:
    """The money a turn's prompt cache saved, from its record's ``metadata`` (0 if none)."""
    cache = (metadata or {}).get("cache") if isinstance(metadata, dict) else None
    value = cache.get("saved_usd") if isinstance(cache, dict) else None
    return float(value) if isinstance(value, int | float) and not isinstance(
        value, bool) else 0.0


def dialogue_saved_usd(dialogue: Any) -> float:
    """What the prompt cache saved over a dialogue's turns."""
    return sum(saved_usd(t.metadata) for t in dialogue.turns)


def cache_note(usage: Any, saved: float) -> str:
    """How a person reads what a prompt cache did for ``usage`` (a ``TokenUsage``) that
    saved ``saved`` dollars: "1500 cached, $0.00405 saved"; "" when it did nothing."""
    parts = []
    if usage.cached:
        parts.append(f"{usage.cached} cached")
    if usage.cache_written:
        parts.append(f"{usage.cache_written} written to the cache")
    if saved >= 5e-6:
        parts.append(f"${saved:.5f} saved")
    elif saved <= -5e-6:
        parts.append(f"${-saved:.5f} more for the cache writes")
    return ", ".join(parts)
