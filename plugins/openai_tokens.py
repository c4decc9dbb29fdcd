"""OpenAI models' own tokenizer for dlg's budgets: tiktoken's encodings, from its cache only.

A budget reserves a prompt's tokens before each call; without the model's tokenizer it
counts the prompt's UTF-8 bytes, about four times an English prompt's tokens. tiktoken
(installed with langchain-openai) knows OpenAI's encodings but downloads their files on
first use, from a host the user never named (and an offline machine hangs on it): dlg
never lets it. It reads an encoding's file only where tiktoken keeps one it downloaded
(as tiktoken's ``load.read_file_cached`` finds it: the directory ``TIKTOKEN_CACHE_DIR``,
else ``DATA_GYM_CACHE_DIR``, else ``data-gym-cache`` in the system's temporary directory,
the file named by the SHA-1 of its URL; an empty directory name turns that cache off),
checks the SHA-256 tiktoken expects of it and builds the encoding from it. No tiktoken, no
file, or a file that is not the one expected: the byte bound, said once in a debug log.
Fetch an encoding once with ``python -c "import tiktoken; tiktoken.get_encoding('o200k_base')"``
(``cl100k_base`` for gpt-4 and gpt-3.5).

An encoding is loaded once per process (about 0.2 s), the first time a budget counts a
prompt for one of its models; one found missing is not looked for again until the next
process. Text is counted as ordinary text: special-token text in a prompt
(``<|endoftext|>``) counts as its characters' tokens, as the API counts a message's
content (never fewer than the one special token), and never raises.

Only a model OpenAI serves is counted so: an ``openai:`` model whose ``base_url`` (or
``openai_api_base``, or else ``OPENAI_API_BASE`` / ``OPENAI_BASE_URL``) names another host
than ``api.openai.com`` or an Azure OpenAI resource (``*.openai.azure.com``) runs on a
server whose tokenizer dlg does not know, though its name be a GPT model's, and keeps the
byte bound.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
import stat
import tempfile
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

__all__ = ["encoding_name", "tokenizer"]

log = logging.getLogger(__name__)

# where tiktoken downloads an encoding's file from (tiktoken_ext.openai_public); the file's
# name in tiktoken's cache is the SHA-1 of this URL
URL = "https://openaipublic.blob.core.windows.net/encodings/{}.tiktoken"
# the encodings of OpenAI's chat models: the SHA-256 tiktoken expects of the file, and how
# the text is split before merging (tiktoken_ext.openai_public; a test holds both to the
# installed tiktoken)
ENCODINGS: dict[str, tuple[str, str]] = {
    "o200k_base": (
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        "|".join([
            r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
            r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
            r"""\p{N}{1,3}""",
            r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
            r"""\s*[\r\n]+""",
            r"""\s+(?!\S)""",
            r"""\s+""",
        ])),
    "cl100k_base": (
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""),  # noqa: E501
}
# the same ordinary tokens from the same file, other special tokens (gpt-oss)
_SAME_FILE = {"o200k_harmony": "o200k_base"}
# models tiktoken may not know yet that use o200k_base: gpt-4o, 4.1, 4.5, 5 and the
# o-series (o1, o3, o4-mini, ...), fine-tuned or not
_NEWER = re.compile(r"(ft:)?(chatgpt-4o|gpt-4o|gpt-4\.[15]|gpt-5|o\d)")
_MAX_FILE = 64 * 1024 * 1024  # the largest encoding file is about 3.6 MB

_LOADED: dict[str, Callable[[str], int] | None] = {}  # per process, by encoding
_lock = threading.Lock()


def encoding_name(model: str) -> str | None:
    """The encoding OpenAI's ``model`` counts with (``gpt-4o-mini``, dlg's default, when
    none is named), or None for one dlg cannot count (or without tiktoken)."""
    model = model or "gpt-4o-mini"
    try:
        import tiktoken
    except ImportError:
        return None
    name: str | None
    try:
        name = tiktoken.encoding_name_for_model(model)
    except KeyError:
        name = "o200k_base" if _NEWER.match(model) else None
    if name is None:
        return None
    name = _SAME_FILE.get(name, name)
    return name if name in ENCODINGS else None


def served_by_openai(options: dict[str, Any]) -> bool:
    """Whether an ``openai:`` model with these options is sent to OpenAI's own API (or an
    Azure OpenAI resource): its endpoint as ``openai.py``'s ``_make`` and the client find
    it, the model's options first, then the environment."""
    base = (options.get("base_url") or options.get("openai_api_base")
            or os.environ.get("OPENAI_API_BASE") or os.environ.get("OPENAI_BASE_URL"))
    if not base:
        return True
    try:
        host = (urlsplit(str(base)).hostname or "").lower()
    except ValueError:  # not a URL: not OpenAI's
        return False
    return host == "api.openai.com" or host.endswith(".openai.azure.com")


def tokenizer(model: str, options: dict[str, Any]) -> Callable[[str], int] | None:
    """The ``openai`` provider's tokenizer (``register(tokenizer=...)``): the model's
    encoding's count of a text, or None where its file is not in tiktoken's cache or the
    model is served by another host than OpenAI's (``served_by_openai``)."""
    if not served_by_openai(options):
        return None
    name = encoding_name(model)
    if name is None:
        return None
    if name not in _LOADED:
        with _lock:
            if name not in _LOADED:
                _LOADED[name] = _load(name)
    return _LOADED[name]


def cache_path(name: str) -> str | None:
    """Where tiktoken keeps the encoding's file once downloaded (None: its cache is off)."""
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        directory = os.environ["TIKTOKEN_CACHE_DIR"]
    elif "DATA_GYM_CACHE_DIR" in os.environ:
        directory = os.environ["DATA_GYM_CACHE_DIR"]
    else:
        directory = os.path.join(tempfile.gettempdir(), "data-gym-cache")
    if not directory:
        return None
    return os.path.join(directory, hashlib.sha1(URL.format(name).encode()).hexdigest())


def _cached(name: str) -> bytes | str:
    """The encoding's file from tiktoken's cache, checked; or why not (a text)."""
    path = cache_path(name)
    if path is None:
        return "tiktoken's cache is turned off (an empty TIKTOKEN_CACHE_DIR)"
    try:
        # without waiting: opening a FIFO (anyone can make one in a shared temporary
        # directory) waits for a writer, before the check below could refuse it
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        with open(fd, "rb", buffering=0) as f:
            found = os.fstat(f.fileno())
            # a FIFO or a device in a shared temporary directory would never end
            if not stat.S_ISREG(found.st_mode) or found.st_size > _MAX_FILE:
                return f"{path} is not an encoding file"
            data = f.read(_MAX_FILE + 1)
    except OSError:
        return f"{path} is not there"
    if hashlib.sha256(data).hexdigest() != ENCODINGS[name][0]:
        return f"{path} is not the file tiktoken expects"
    return data


def _load(name: str) -> Callable[[str], int] | None:
    data = _cached(name)
    if isinstance(data, str):
        log.debug("no %s tokenizer for OpenAI models' budgets (%s): prompts are bounded by "
                  "their bytes; fetch it once with: python -c \"import tiktoken; "
                  "tiktoken.get_encoding('%s')\"", name, data, name)
        return None
    try:
        import tiktoken

        ranks = {}
        for line in data.splitlines():  # as tiktoken.load.load_tiktoken_bpe reads it
            if line:
                token, rank = line.split()
                ranks[base64.b64decode(token)] = int(rank)
        encoding = tiktoken.Encoding(name, pat_str=ENCODINGS[name][1], mergeable_ranks=ranks,
                                     special_tokens={})
    except Exception as exc:  # a tiktoken that changed: the byte bound stands in
        log.debug("could not build the %s tokenizer (%s): prompts are bounded by their "
                  "bytes", name, exc)
        return None

    def count(text: str) -> int:
        return len(encoding.encode_ordinary(text))

    return count
