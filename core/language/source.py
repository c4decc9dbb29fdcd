"""Finding a mode document, parsing it safely, and locating JSON paths in it.

Parsing uses ruamel.yaml's safe loader (JSON is parsed by ``json``). Line and column
numbers are only needed when something is wrong, so the round-trip parse that records
positions happens lazily, on the first error.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

from dlg.errors import ModeError, ModeNotFoundError, Problem
from dlg.language.limits import MAX_DEPTH

if TYPE_CHECKING:
    import pluggy

__all__ = ["SourceDoc", "format_path", "is_path_like", "read_source", "reloadable"]

PathT = tuple[str | int, ...]


def format_path(path: PathT) -> str:
    out = "$"
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def is_path_like(ref: str) -> bool:
    return (
        os.sep in ref
        or "/" in ref
        or ref.endswith((".yaml", ".yml", ".json"))
        or ref.startswith(".")
    )


def reloadable(source: str | None) -> TypeGuard[str]:
    """Whether a mode's ``source`` says where to load it again (a file, a registered
    name), rather than a document that was only in memory (``<dict>``, ``<stdin>``)."""
    return bool(source) and not str(source).startswith("<")


@dataclass
class SourceDoc:
    """One mode document: its text, where it came from, and its parsed data."""

    text: str
    file: str  # what we show the user: a path or "plugin NAME: file"
    identity: str  # what cycle detection compares
    base_dir: Path | None = None  # for relative extends and prompt_file
    is_json: bool = False
    data: Any = None
    _rt: Any = field(default=None, repr=False)

    def parse(self) -> dict[str, Any]:
        from dlg.language.limits import LimitError, check_shape

        if self.is_json:
            try:
                self.data = json.loads(self.text)
            except json.JSONDecodeError as exc:
                raise ModeError(
                    Problem(
                        f"invalid JSON: {exc.msg}",
                        file=self.file,
                        line=exc.lineno,
                        column=exc.colno,
                    )
                ) from None
            except RecursionError:
                raise ModeError(Problem("invalid JSON: nested too deeply", file=self.file)
                                ) from None
            except ValueError as exc:  # e.g. an integer of thousands of digits
                raise ModeError(Problem(f"invalid JSON: {exc}", file=self.file)) from None
        else:
            self.data = _load_yaml(self.text, self.file, typ="safe")
        try:
            check_shape(self.data)
        except LimitError as exc:
            raise ModeError(self.problem(str(exc), exc.path)) from None
        if not isinstance(self.data, dict):
            kind = "empty" if self.data is None else f"a {type(self.data).__name__}"
            raise ModeError(
                Problem(
                    f"a mode must be a mapping of keys to values, but this document is {kind}",
                    file=self.file,
                    line=1,
                    column=1,
                )
            )
        return self.data

    def locate(self, path: PathT, *, key: bool = False) -> tuple[int | None, int | None]:
        """1-based (line, column) of the value at ``path`` (or of its key, with key=True)."""
        if self._rt is None:
            try:
                self._rt = _load_yaml(self.text, self.file, typ="rt")
            except ModeError:
                self._rt = False
        node = self._rt
        if node is False or node is None:
            return None, None
        pos: tuple[int, int] | None = (0, 0)
        for i, part in enumerate(path):
            last = i == len(path) - 1
            try:
                if isinstance(part, int):
                    pos = node.lc.item(part)
                else:
                    if part not in node:
                        break
                    pos = node.lc.key(part) if (last and key) else node.lc.value(part)
                node = node[part]
            except (AttributeError, KeyError, IndexError, TypeError):
                break
        if pos is None:
            return None, None
        return pos[0] + 1, pos[1] + 1

    def problem(self, message: str, path: PathT, *, key: bool = False, **kw: Any) -> Problem:
        line, column = self.locate(path, key=key)
        return Problem(
            message, file=self.file, path=format_path(path), line=line, column=column, **kw
        )


# "key: value: more" -- a plain (unquoted) value with ": " in it
_UNQUOTED_COLON = re.compile(
    r"^\s*(?:-\s+)?(?P<key>[A-Za-z_][\w-]*):\s+(?P<value>[^\s'\"|>&*!{\[#][^#]*?: .*)$")
_BRACKETS = re.compile(r"[^\[\]{}]+")


def _flow_depth(text: str) -> int:
    """How deep ``[`` and ``{`` nest in ``text`` (quoted text included: an upper bound)."""
    depth = deepest = 0
    for ch in _BRACKETS.sub("", text):
        if ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif depth:
            depth -= 1
    return deepest


def _load_yaml(text: str, file: str, *, typ: str) -> Any:
    from ruamel.yaml import YAML
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    if _flow_depth(text) > MAX_DEPTH:  # the YAML scanner is quadratic in this depth
        raise ModeError(Problem(f"invalid YAML: brackets nested more than {MAX_DEPTH} deep",
                                file=file))
    yaml = YAML(typ=typ, pure=typ == "rt")
    yaml.allow_duplicate_keys = False
    try:
        with warnings.catch_warnings():  # a reused anchor is valid YAML 1.2: no warning
            warnings.simplefilter("ignore")
            return yaml.load(text)
    except RecursionError:
        raise ModeError(Problem("invalid YAML: nested too deeply", file=file)) from None
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = " ".join(s for s in (exc.context, exc.problem) if s) or str(exc)
        message = message.replace("\n", " ")
        hint = None
        line = text.splitlines()[mark.line] if mark and mark.line < len(
            text.splitlines()) else ""
        unquoted = _UNQUOTED_COLON.match(line)
        if "mapping values are not allowed" in message and unquoted:
            key, value = unquoted.group("key"), unquoted.group("value").rstrip()
            quoted = value.replace('"', '\\"')
            hint = (f"a value that contains ': ' must be quoted: {key}: \"{quoted}\" "
                    f"(or use a block: {key}: |, then the text on the next lines)")
        elif any(s in message for s in ("expected <block end>",
                                        "mapping values are not allowed",
                                        "could not find expected ':'")):
            hint = "check the indentation of this line and the one before it"
        elif "found character '\\t'" in message:
            hint = "YAML does not allow tabs for indentation: use spaces"
        raise ModeError(
            Problem(
                f"invalid YAML: {message}",
                file=file,
                line=mark.line + 1 if mark else None,
                column=mark.column + 1 if mark else None,
                hint=hint,
            )
        ) from None
    except (YAMLError, ValueError, TypeError) as exc:
        # ValueError: an integer of thousands of digits; TypeError: an unhashable key
        text = str(exc).replace("\n", " ").strip() or type(exc).__name__
        raise ModeError(Problem(f"invalid YAML: {text}", file=file)) from None


def _from_path(path: Path) -> SourceDoc:
    from dlg.language.limits import LimitError, read_text

    try:
        text = read_text(path)
    except FileNotFoundError:
        raise ModeNotFoundError(f"no mode file at '{path}'") from None
    except IsADirectoryError:
        raise ModeNotFoundError(f"'{path}' is a directory, not a mode file") from None
    except LimitError as exc:
        raise ModeError(f"cannot load it: {exc}", file=str(path)) from None
    except UnicodeDecodeError as exc:
        raise ModeError(f"'{path}' is not UTF-8 text: {exc.reason} at byte {exc.start}",
                        file=str(path)) from None
    except OSError as exc:
        raise ModeError(f"cannot read '{path}': {exc.strerror}", file=str(path)) from None
    resolved = path.resolve()
    shown = str(path)
    if path.is_absolute():
        try:
            rel = os.path.relpath(resolved)
            shown = rel if not rel.startswith("..") else shown
        except ValueError:
            pass
    return SourceDoc(
        text=text,
        file=shown,
        identity=str(resolved),
        base_dir=resolved.parent,
        is_json=path.suffix.lower() == ".json",
    )


def _from_stdin() -> SourceDoc:
    """A mode piped in (``dlg run - < mode.yaml``): YAML, or JSON if it starts with '{'.
    Its folder, for ``extends`` and ``prompt_file``, is the working directory."""
    import sys

    from dlg.language.limits import MAX_FILE_BYTES

    data = sys.stdin.buffer.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise ModeError(f"the mode on standard input is over {MAX_FILE_BYTES:,} bytes",
                        file="<stdin>")
    try:
        text = data.decode("utf-8-sig")  # a byte order mark first is not part of the mode
    except UnicodeDecodeError as exc:
        raise ModeError(f"the mode on standard input is not UTF-8 text: {exc.reason} at "
                        f"byte {exc.start}", file="<stdin>") from None
    if not text.strip():
        raise ModeError("nothing on standard input: pipe a mode in (dlg run - < mode.yaml)",
                        file="<stdin>")
    return SourceDoc(text=text, file="<stdin>", identity="stdin", base_dir=Path.cwd(),
                     is_json=text.lstrip().startswith("{"))


def user_mode_dirs() -> list[Path]:
    """Directories searched for modes by name, after plugin-registered ones."""
    dirs = [Path(p) for p in os.environ.get("DLG_MODES_PATH", "").split(os.pathsep) if p]
    from dlg.paths import user_dir

    dirs.append(user_dir("config") / "modes")
    return dirs


_SUFFIXES = (".yaml", ".yml", ".json")


def user_modes() -> dict[str, Path]:
    """The modes found by name in ``user_mode_dirs``: name -> file, the first one the
    lookup by name would find (the earlier directory, then .yaml, .yml, .json)."""
    found: dict[str, Path] = {}
    for d in user_mode_dirs():
        if not d.is_dir():
            continue
        for suffix in _SUFFIXES:
            for path in sorted(d.glob(f"*{suffix}")):
                if path.is_file():
                    found.setdefault(path.stem, path)
    return found


def read_source(ref: Any, *, relative_to: Path | None = None,
                pm: pluggy.PluginManager | None = None) -> SourceDoc:
    """Find a mode by path, by registered name, or in the user's mode directories."""
    if isinstance(ref, os.PathLike):
        return _from_path(Path(ref))
    if not isinstance(ref, str):
        raise ModeNotFoundError(f"cannot load a mode from {type(ref).__name__}")
    if ref == "-":
        return _from_stdin()
    if is_path_like(ref):
        path = Path(ref).expanduser()
        if relative_to is not None and not path.is_absolute():
            path = relative_to / path
        return _from_path(path)

    from dlg import registrations

    registered = registrations.modes(pm)
    entry = registered.get(ref)
    if entry is not None:
        return _from_registered(entry)
    found = user_modes().get(ref)  # the one place that knows the folders' order
    if found is not None:
        return _from_path(found)
    if relative_to is not None:
        for suffix in _SUFFIXES:
            candidate = relative_to / f"{ref}{suffix}"
            try:
                found_here = candidate.is_file()
            except OSError:  # a name too long for the file system, ...: not a mode here
                found_here = False
            if found_here:
                return _from_path(candidate)
    import difflib

    close = difflib.get_close_matches(ref, [*registered, *user_modes()], n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise ModeNotFoundError(
        Problem(
            f"'{ref}' is not a known mode and not a file",
            hint=f"{hint}`dlg modes list` shows the known modes; pass a path to run a file",
        )
    )


def _from_registered(entry: Any) -> SourceDoc:
    src = entry.source
    if isinstance(src, dict):
        return SourceDoc(
            text=json.dumps(src),
            file=f"<mode '{entry.name}' from plugin {entry.plugin}>",
            identity=f"plugin:{entry.plugin}:{entry.name}",
            is_json=True,
        )
    if isinstance(src, str | os.PathLike) and not hasattr(src, "read_text"):
        doc = _from_path(Path(src))
        return doc
    # an importlib.resources Traversable
    name = getattr(src, "name", entry.name)
    text = src.read_text(encoding="utf-8")
    base = None
    try:
        base = Path(str(src)).parent if Path(str(src)).exists() else None
    except (OSError, ValueError):
        base = None
    return SourceDoc(
        text=text,
        file=str(src) if base else f"<{entry.plugin}>/{name}",
        identity=f"plugin:{entry.plugin}:{entry.name}",
        base_dir=base,
        is_json=str(name).endswith(".json"),
    )
