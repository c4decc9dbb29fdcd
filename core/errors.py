"""Every exception dlg raises on purpose.

```
DlgError                      base class: catch this to catch anything dlg reports
├── ModeError                 a mode could not be loaded; carries one or more Problems
│   └── ModeNotFoundError     no mode by that name or path
├── InputError                a dialogue input, or an argument (a participant, a router,
│                             a store), that is missing, unknown or malformed
├── PluginError               a plugin failed to load or registered something invalid
├── ModelError                a model spec could not be turned into a chat model
│   └── UnknownModelError     no provider registered under that name
├── StoreError                a dialogue store could not be opened, read or written
├── ExportError               a dialogue could not be exported
│   └── UnknownExporterError  no exporter registered under that name
└── TurnError                 a turn failed while the dialogue ran (recorded on the turn)
    └── TurnTimeoutError      the turn ran past its timeout
```

Errors that the user caused carry a message written for the user: what is wrong, where,
and how to fix it. The CLI prints ``str(error)`` and never a traceback (unless
``--traceback`` is given).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "DlgError",
    "ExportError",
    "InputError",
    "ModeError",
    "ModeNotFoundError",
    "ModelError",
    "PluginError",
    "Problem",
    "StoreError",
    "TurnError",
    "TurnTimeoutError",
    "UnknownExporterError",
    "UnknownModelError",
    "describe",
    "first_dlg_error",
]


class DlgError(Exception):
    """Base class of every error dlg raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a mode, located as precisely as we can.

    ``path`` is the JSON path inside the file (``$.turns[2].context_from[0]``); ``line``
    and ``column`` are 1-based and ``None`` when unknown.
    """

    message: str
    file: str | None = None
    path: str = "$"
    line: int | None = None
    column: int | None = None
    hint: str | None = None
    details: tuple[str, ...] = field(default=())

    @property
    def location(self) -> str:
        where = self.file or "<mode>"
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return where

    def format(self) -> str:
        lines = [f"{self.location}: {self.path}: {self.message}"]
        lines.extend(f"  {d}" for d in self.details)
        if self.hint:
            lines.append(f"  hint: {self.hint}")
        return "\n".join(lines)


MAX_SHOWN = 200  # problems ``--all-errors`` shows; a count says how many more there are


class ModeError(DlgError):
    """A mode file is malformed, invalid, or refers to something that does not exist."""

    def __init__(self, problems: list[Problem] | Problem | str, *, file: str | None = None):
        if isinstance(problems, str):
            problems = [Problem(problems, file=file)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems: list[Problem] = list(problems)
        super().__init__(self.format())

    def format(self, *, all_problems: bool = False) -> str:
        """The first problem and a count of the rest; with ``all_problems``, every problem
        up to ``MAX_SHOWN`` (a generated file can hold thousands) and a count of the rest."""
        if not self.problems:
            return "invalid mode"
        shown = self.problems[:MAX_SHOWN] if all_problems else self.problems[:1]
        text = "\n".join(p.format() for p in shown)
        rest = len(self.problems) - len(shown)
        if rest:
            more = f"\n... and {rest:,} more error{'s' if rest != 1 else ''}"
            text += (more + " (use --all-errors to see them all)" if not all_problems else
                     more + f" (only the first {MAX_SHOWN} are shown)")
        return text


class ModeNotFoundError(ModeError):
    """No mode is registered under that name and no file exists at that path."""


class InputError(DlgError):
    """A dialogue input, or an argument (a participant, a router, a store, an executor),
    that is missing, unknown or malformed."""


class PluginError(DlgError):
    """A plugin could not be loaded, or registered something dlg cannot use."""


class StoreError(DlgError):
    """A dialogue store could not be opened, read or written (corrupt, unwritable, full)."""


class ModelError(DlgError):
    """A model spec could not be turned into a chat model."""


class UnknownModelError(ModelError):
    """No model provider is registered under the spec's provider name."""


class ExportError(DlgError):
    """A dialogue could not be exported."""


class UnknownExporterError(ExportError):
    """No exporter is registered under that name."""


class TurnError(DlgError):
    """A turn failed while the dialogue ran; the message is recorded on the turn."""


class TurnTimeoutError(TurnError):
    """A turn ran past its timeout."""


def first_dlg_error(group: BaseExceptionGroup) -> BaseException:
    """The error to report from a parallel phase: its first dlg error, if every error in
    it is one (a plugin that failed in two turns is reported once); else the group."""
    leaves: list[BaseException] = []
    stack: list[BaseException] = [group]
    while stack:
        exc = stack.pop(0)
        if isinstance(exc, BaseExceptionGroup):
            stack[:0] = list(exc.exceptions)
        else:
            leaves.append(exc)
    return leaves[0] if leaves and all(isinstance(e, DlgError) for e in leaves) else group


def describe(exc: BaseException) -> str:
    if isinstance(exc, DlgError):
        return str(exc)
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
