"""Generated bad modes: every one loads or is a ModeError; none hangs.

The README's test command runs the first 1,000 cases; the 10,000-case run is marked
``long`` (``pytest -m long``, which ``.ci/run`` runs too).

The modes are mutations of the built-in ones, at the level of text (YAML punctuation,
tabs, bytes that are not UTF-8, cut-off files) and of structure (wrong types, null
turns, integer keys, deep nesting, huge numbers, aliases, unknown keys). The generator is
seeded, so a failure names a case that can be run again (``FUZZ_CASE=N``).
"""

from __future__ import annotations

import copy
import functools
import json
import os
import random
import time
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest

import dlg

QUICK_CASES = 1_000
LONG_CASES = int(os.environ.get("FUZZ_CASES", "10000"))
SEED = 20261130
PUNCTUATION = [*":{}[]-&*!|>'\"#%@,?\t\n ", "{{", "}}", "{%", "%}", ": ", "- ", "\\"]
VALUES: list[Any] = [
    None, True, 0, -1, 10**30, 1.5e308, float("nan"), "", "x" * 300, [], {}, [None],
    {"1": None}, [[[[[[[[[[[]]]]]]]]]]], "{{ undefined }}", "{% for %}", "{{ 'a' * 10**9 }}",
    "../../etc/passwd", "/dev/zero", {"id": "a"}, [{"id": 1, "role": [], "prompt": {}}],
]


def _builtin_texts() -> list[str]:
    folder = files("dlg.modes")
    return [folder.joinpath(n).read_text("utf-8") for n in sorted(
        p.name for p in folder.iterdir() if p.name.endswith((".yaml", ".json")))]


def _mutate_text(rng: random.Random, text: str) -> bytes:
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(len(text) + 1)
        kind = rng.randrange(6)
        if kind == 0:
            text = text[:i] + text[i + rng.randint(1, 40):]
        elif kind == 1:
            text = text[:i] + rng.choice(PUNCTUATION) + text[i:]
        elif kind == 2:
            lines = text.splitlines(keepends=True)
            if lines:
                j = rng.randrange(len(lines))
                lines.insert(rng.randrange(len(lines) + 1), lines[j])
                text = "".join(lines)
        elif kind == 3:
            text = text[:i]
        elif kind == 4:
            lines = text.splitlines(keepends=True)
            if len(lines) > 1:
                j = rng.randrange(len(lines))
                lines[j] = " " * rng.randint(1, 6) + lines[j].lstrip()
                text = "".join(lines)
        else:
            text = text[:i] + "&x " + text[i:] + "\ny: *x\n"
    data = text.encode("utf-8")
    if rng.random() < 0.03:
        j = rng.randrange(len(data) + 1)
        data = data[:j] + bytes([rng.choice([0xFF, 0xFE, 0xC3, 0x80])]) + data[j:]
    return data


def _nodes(data: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if len(path) > 40:  # already deep: mutate above here
        return out
    if isinstance(data, dict):
        for k, v in data.items():
            out.extend(_nodes(v, (*path, k)))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out.extend(_nodes(v, (*path, i)))
    return out


def _mutate_data(rng: random.Random, data: Any) -> Any:
    for _ in range(rng.randint(1, 3)):
        path = rng.choice(_nodes(data))
        if not path:
            continue
        parent = data
        for part in path[:-1]:
            parent = parent[part]
        last = path[-1]
        kind = rng.randrange(4)
        if kind == 0:
            parent[last] = json.loads(json.dumps(rng.choice(VALUES)))
        elif kind == 1 and isinstance(parent, dict):
            del parent[last]
        elif kind == 2 and isinstance(parent, dict):
            # a copy: a later mutation must not change the shared VALUES
            parent[rng.choice(["unknown", "turns", "extends", "prompt_file", "structure",
                               "phases", "add", "remove", "overrides"])] = json.loads(
                json.dumps(rng.choice(VALUES)))
        else:
            deep: Any = parent[last]
            for _ in range(rng.choice([3, 70, 300])):
                deep = [deep]
            parent[last] = deep
    return data


@functools.cache
def _parsed(text: str) -> Any:
    from ruamel.yaml import YAML

    return YAML(typ="safe").load(text)


def case(n: int, texts: list[str]) -> tuple[str, bytes]:
    rng = random.Random(SEED * 100_003 + n)
    text = rng.choice(texts)
    if rng.random() < 0.5:
        return "yaml", _mutate_text(rng, text)
    from ruamel.yaml import YAML

    data = _mutate_data(rng, copy.deepcopy(_parsed(text)))
    try:
        as_json = json.dumps(data).encode()
    except RecursionError:  # nested past what Python's encoder can write
        return "json", b"{\"name\": " + b"[" * 5000 + b"]" * 5000 + b"}"
    if rng.random() < 0.5:
        return "json", as_json
    import io

    out = io.StringIO()
    yaml = YAML(typ="safe")
    yaml.width = 10_000
    try:
        yaml.dump(data, out)
    except Exception:  # deep data the dumper cannot write: try it as JSON instead
        return "json", as_json
    return "yaml", out.getvalue().encode()


# about 25 s on a busy 2-core machine: marked long so the README's command keeps a margin
# under 4 minutes; test_properties' mutated modes are the quick case in the default run
@pytest.mark.long
def test_a_thousand_bad_modes_give_mode_errors_never_tracebacks(tmp_path: Path):
    _fuzz(tmp_path, QUICK_CASES)


@pytest.mark.long
def test_ten_thousand_bad_modes_give_mode_errors_never_tracebacks(tmp_path: Path):
    _fuzz(tmp_path, LONG_CASES)


def _fuzz(tmp_path: Path, cases: int) -> None:
    texts = _builtin_texts()
    only = os.environ.get("FUZZ_CASE")
    numbers = [int(only)] if only else range(cases)
    crashed: list[str] = []
    slow: list[str] = []
    outcomes = {"loaded": 0, "mode_error": 0}
    for n in numbers:
        suffix, data = case(n, texts)
        path = tmp_path / f"case.{suffix}"
        path.write_bytes(data)
        started = time.perf_counter()
        try:
            dlg.load_mode(path, use_cache=False)
            outcomes["loaded"] += 1
        except dlg.ModeError as exc:
            outcomes["mode_error"] += 1
            for problem in exc.problems:
                assert problem.file, f"case {n}: a problem without a file: {problem}"
        except BaseException as exc:
            crashed.append(f"case {n}: {type(exc).__name__}: {exc}"[:300])
        elapsed = time.perf_counter() - started
        if elapsed > 5:
            slow.append(f"case {n}: {elapsed:.1f}s")
    assert not crashed, f"{len(crashed)} tracebacks, e.g.:\n" + "\n".join(crashed[:10])
    assert not slow, f"{len(slow)} loads over 5 s: {slow[:10]}"
    if not only:
        assert outcomes["mode_error"] > cases * 0.6, outcomes  # the cases really are bad
