"""The resolved, normalised form of a mode: what the kernel runs.

A mode on disk may say ``structure: sequential`` with a list of ``turns``, or
``structure: mixed`` with ``phases``; after loading it is always a list of phases, each
``sequential`` or ``parallel``, with every turn's ``context_from`` resolved to turn ids.
``Mode.to_dict()`` gives back a document that loads to the same mode (round trip).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Input", "Mode", "Participant", "Phase", "Turn", "merged_settings"]


@dataclass(frozen=True)
class Input:
    name: str
    description: str = ""
    required: bool = False
    default: Any = None
    type: str = "string"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.description:
            out["description"] = self.description
        if self.type != "string":
            out["type"] = self.type
        if self.required:
            out["required"] = True
        if self.default is not None:
            out["default"] = self.default
        return out


@dataclass(frozen=True)
class Participant:
    alias: str
    model: str | None = None
    description: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    fallbacks: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.model is not None:
            out["model"] = self.model
        if self.description:
            out["description"] = self.description
        if self.settings:
            out["settings"] = dict(self.settings)
        if self.fallbacks:
            out["fallbacks"] = list(self.fallbacks)
        return out


@dataclass(frozen=True)
class Turn:
    id: str
    role: str
    index: int  # 1-based position in execution order
    phase: str
    prompt: str
    participant: str | None = None
    requires: tuple[str, ...] = ()
    prefer: str | None = None
    instruction: str | None = None
    context_from: tuple[str, ...] = ()
    context_spec: Any = "all"  # as written (for round-tripping)
    settings: dict[str, Any] = field(default_factory=dict)
    when: str | None = None
    timeout: float | None = None
    on_error: str = "fail"
    description: str = ""
    constraints: dict[str, Any] = field(default_factory=dict)  # routing limits for this turn
    output: dict[str, Any] = field(default_factory=dict)  # {"schema": {...}}: answer JSON
    scores: tuple[str, ...] = ()  # turns this one judges: its data.score rates them
    context_compression: str | None = None  # none, truncate, relevant_only (or the mode's)
    max_context_tokens: int | None = None
    # sub-dialogues: {"mode": ..., "for_each": ..., "inputs": {...}, "concurrency": N, ...}
    spawn: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "role": self.role}
        if self.description:
            out["description"] = self.description
        if self.participant is not None:
            out["participant"] = self.participant
        if self.requires:
            out["requires"] = list(self.requires)
        if self.prefer is not None:
            out["prefer"] = self.prefer
        if self.instruction is not None:
            out["instruction"] = self.instruction
        out["prompt"] = self.prompt
        if self.context_spec != "all":
            spec = self.context_spec
            out["context_from"] = list(spec) if isinstance(spec, list | tuple) else spec
        if self.settings:
            out["settings"] = dict(self.settings)
        if self.when is not None:
            out["when"] = self.when
        if self.timeout is not None:
            out["timeout"] = self.timeout
        if self.on_error != "fail":
            out["on_error"] = self.on_error
        _optional(out, self, ("constraints", "output", "scores", "context_compression",
                              "max_context_tokens", "spawn"))
        return out


@dataclass(frozen=True)
class Phase:
    id: str
    structure: str  # "sequential" | "parallel"
    turns: tuple[Turn, ...]
    # a refinement loop: {"max_rounds": N, "until": {...}}; the phase's turns run again,
    # round after round, until ``until`` holds or ``max_rounds`` rounds have run
    repeat: dict[str, Any] = field(default_factory=dict)

    @property
    def parallel(self) -> bool:
        return self.structure == "parallel"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "structure": self.structure,
                               "turns": [t.to_dict() for t in self.turns]}
        if self.repeat:
            out["repeat"] = dict(self.repeat)
        return out


@dataclass(frozen=True)
class Mode:
    name: str
    phases: tuple[Phase, ...]
    description: str = ""
    inputs: dict[str, Input] = field(default_factory=dict)
    participants: dict[str, Participant] = field(default_factory=dict)
    system: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    timeout: float | None = None
    source: str | None = None  # file path or "plugin:NAME"
    extends_chain: tuple[str, ...] = ()
    template_dirs: tuple[str, ...] = ()
    models: dict[str, str] = field(default_factory=dict)  # the model pool: name -> spec
    router: str | None = None  # the router the mode asks for
    constraints: dict[str, Any] = field(default_factory=dict)  # max_cost, quality, ...
    context_compression: str | None = None  # how turns trim what they read
    max_context_tokens: int | None = None
    until: dict[str, Any] = field(default_factory=dict)  # condition / similarity: stop early
    max_turns: int | None = None
    max_depth: int | None = None  # how deep sub-dialogues nest (None: the default, 2)
    # derived data (compiled templates, the content hash), filled on first use; not part
    # of the mode's value
    _compiled: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def turns(self) -> tuple[Turn, ...]:
        """Every turn, in execution order."""
        turns = self._compiled.get("turns")
        if turns is None:
            turns = self._compiled["turns"] = tuple(t for p in self.phases for t in p.turns)
        return turns

    def turn(self, key: str | int) -> Turn:
        """A turn by id or by 1-based position."""
        turns = self.turns
        if isinstance(key, int):
            if 1 <= key <= len(turns):
                return turns[key - 1]
            raise KeyError(key)
        by_id: dict[str, Turn] | None = self._compiled.get("by_id")
        if by_id is None:
            by_id = self._compiled["by_id"] = {t.id: t for t in turns}
        return by_id[key]

    @property
    def loops(self) -> bool:
        """Whether any phase repeats (its turns then have a record per round)."""
        return any(p.repeat for p in self.phases)

    def phase(self, phase_id: str) -> Phase:
        return next(p for p in self.phases if p.id == phase_id)

    @property
    def structure(self) -> str:
        if len(self.phases) == 1:
            return self.phases[0].structure
        return "mixed"

    def to_dict(self) -> dict[str, Any]:
        """A standalone document (no ``extends``) that loads back to this mode."""
        out: dict[str, Any] = {"name": self.name}
        if self.description:
            out["description"] = self.description
        if self.inputs:
            out["inputs"] = {k: v.to_dict() for k, v in self.inputs.items()}
        if self.participants:
            out["participants"] = {k: v.to_dict() for k, v in self.participants.items()}
        if self.system is not None:
            out["system"] = self.system
        if self.settings:
            out["settings"] = dict(self.settings)
        if self.timeout is not None:
            out["timeout"] = self.timeout
        _optional(out, self, ("models", "router", "constraints", "context_compression",
                              "max_context_tokens", "until", "max_turns", "max_depth"))
        if len(self.phases) == 1 and self.phases[0].id == "main" and not self.phases[0].repeat:
            out["structure"] = self.phases[0].structure
            out["turns"] = [t.to_dict() for t in self.phases[0].turns]
        else:
            out["structure"] = "mixed"
            out["phases"] = [p.to_dict() for p in self.phases]
        return out

    @property
    def document(self) -> dict[str, Any]:
        """``to_dict()``, made once and shared (every saved dialogue keeps it): read it,
        do not change it; change a copy from ``to_dict()``."""
        cached = self._compiled.get("document")
        if cached is None:
            cached = self._compiled["document"] = self.to_dict()
        return cached

    @property
    def content_hash(self) -> str:
        """sha256 of the resolved mode: changes whenever what would run changes."""
        cached = self._compiled.get("content_hash")
        if cached is None:
            blob = json.dumps(self.document, sort_keys=True, ensure_ascii=False, default=str)
            cached = self._compiled["content_hash"] = hashlib.sha256(
                blob.encode("utf-8")).hexdigest()
        return cached


def _optional(out: dict[str, Any], obj: Any, keys: tuple[str, ...]) -> None:
    """Copy into ``out`` the fields of ``obj`` that are set (not None and not empty)."""
    for key in keys:
        value = getattr(obj, key)
        if value is None or value == {} or value == ():
            continue
        out[key] = dict(value) if isinstance(value, dict) else (
            list(value) if isinstance(value, tuple) else value)


def merged_settings(*layers: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for layer in layers:
        for k, v in layer.items():
            if k == "extra":
                out["extra"] = {**out.get("extra", {}), **v}
            else:
                out[k] = v
    return out
