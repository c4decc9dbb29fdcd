"""``dlg modes``: list, show, validate and convert modes."""

from __future__ import annotations

import json
from typing import Any

import click

from dlg.cli.base import EXIT_USAGE, DlgClickError, all_errors_option, cli
from dlg.cli.terminal import echo
from dlg.errors import DlgError, ModeError

# -- dlg modes ----------------------------------------------------------------------------


@cli.group()
def modes() -> None:
    """List, show, validate and convert modes."""


def mode_rows(*, inputs: bool = False) -> list[dict[str, Any]]:
    """The modes one can run by name, as ``dlg modes list --json`` lists them; with
    ``inputs``, each valid one's inputs too (``Input.to_dict``), as ``dlg mcp`` lists them."""
    from dlg import registrations
    from dlg.language.loader import load_mode
    from dlg.language.source import user_modes

    registered = registrations.modes()
    found: list[tuple[str, Any, dict[str, Any]]] = [
        (name, name, {"plugin": entry.plugin}) for name, entry in sorted(registered.items())]
    found += [(name, path, {"file": str(path)}) for name, path in sorted(user_modes().items())
              if name not in registered]  # a plugin's mode of the same name is the one run
    rows: list[dict[str, Any]] = []
    for name, ref, where in found:
        try:
            m = load_mode(ref)
            rows.append({"name": name, "structure": m.structure, "turns": len(m.turns),
                         **where, "description": m.description})
            if inputs:
                rows[-1]["inputs"] = {k: i.to_dict() for k, i in m.inputs.items()}
        except DlgError as exc:
            rows.append({"name": name, "structure": "-", "turns": 0, **where,
                         "description": f"INVALID: {str(exc).splitlines()[0]}"})
    return rows


@modes.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def modes_list(as_json: bool) -> None:
    """List the modes you can run by name: the plugins' (the built-ins included), then
    those in DLG_MODES_PATH and your dlg/modes folder."""
    rows = mode_rows()
    if as_json:
        echo(json.dumps(rows, indent=2))
        return
    width = max((len(r["name"]) for r in rows), default=4)
    for r in rows:
        desc = r["description"].strip().splitlines()[0] if r["description"] else ""
        echo(f"{r['name']:<{width}}  {r['structure']:<10}  {r['turns']:>2} turns  {desc}")


def _yaml_dump(data: Any) -> str:
    import io

    from ruamel.yaml import YAML
    from ruamel.yaml.scalarstring import LiteralScalarString

    def literal(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: literal(v) for k, v in value.items()}
        if isinstance(value, list):
            return [literal(v) for v in value]
        if isinstance(value, str) and "\n" in value:
            return LiteralScalarString(value if value.endswith("\n") else value + "\n")
        return value

    yaml = YAML()
    yaml.default_flow_style = False
    yaml.width = 100
    buf = io.StringIO()
    yaml.dump(literal(data), buf)
    return buf.getvalue()


@modes.command("show")
@click.argument("mode")
@click.option("--resolved", is_flag=True,
              help="Show the mode with inheritance applied and files inlined.")
@click.option("--format", "fmt", type=click.Choice(["yaml", "json"]), default="yaml",
              show_default=True, help="Output format for --resolved.")
@all_errors_option
def modes_show(mode: str, resolved: bool, fmt: str) -> None:
    """Show a mode's source, or with --resolved the mode that would run."""
    from dlg.language.loader import load_mode
    from dlg.language.source import read_source

    if not resolved:
        echo(read_source(mode).text, nl=False)
        return
    m = load_mode(mode)
    data = m.to_dict()
    if fmt == "json":
        echo(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        echo(_yaml_dump(data), nl=False)


@modes.command("validate")
@click.argument("files", nargs=-1, required=True)
@click.option("--all-errors", is_flag=True, help="Show every problem, not just the first.")
def modes_validate(files: tuple[str, ...], all_errors: bool) -> None:
    """Check mode files (or names) for every error before anything runs."""
    from dlg.language.loader import load_mode

    bad = 0
    for f in files:
        try:
            m = load_mode(f, use_cache=False)
        except ModeError as exc:
            bad += 1
            echo(exc.format(all_problems=all_errors), err=True)
            continue
        phases = f" in {len(m.phases)} phases" if len(m.phases) > 1 else ""
        echo(f"ok: {f}: mode '{m.name}', {len(m.turns)} turns{phases}")
    if bad:
        raise DlgClickError(f"{bad} of {len(files)} mode(s) invalid", EXIT_USAGE)


@modes.command("convert")
@click.argument("file")
@click.option("--out", "-o", type=click.Path(dir_okay=False, writable=True),
              help="Write the dlg mode here (default: stdout).")
def modes_convert(file: str, out: str | None) -> None:
    """Convert a mode in the original specification's JSON format to a dlg mode (YAML)."""
    from dlg.language.convert import convert, is_seed_format
    from dlg.language.loader import load_mode
    from dlg.language.source import read_source

    doc = read_source(file)
    doc.parse()
    if not is_seed_format(doc.data):
        raise DlgClickError(f"{file} is not in the original specification's format (no "
                            "numbered turns under 'prompts'): nothing to convert", EXIT_USAGE)
    try:
        converted, notes = convert(doc.data)
    except (ValueError, TypeError, AttributeError) as exc:
        raise DlgClickError(f"{file}: cannot convert: {exc}", EXIT_USAGE) from None
    text = _yaml_dump(converted)
    for note in notes:
        echo(f"note: {note}", err=True)
    if out is None:
        echo(text, nl=False)
        return
    import pathlib

    target = pathlib.Path(out)
    target.write_text(text, encoding="utf-8")
    try:
        load_mode(target, use_cache=False)
    except ModeError as exc:
        echo(f"wrote {out}, which still needs editing:\n{exc.format()}", err=True)
        raise DlgClickError(f"{out} is not yet a valid mode", EXIT_USAGE) from None
    echo(f"wrote {out}: `dlg run {out}` runs it", err=True)

