"""Counting a prompt's tokens: the model's own tokenizer where one is installed, else bounds.

A budget needs two numbers for a prompt (``PromptSize``):

- a **bound**, never below what the provider will count, for the reservation made before
  a call: the model's tokenizer's count plus a few tokens a message for the chat format,
  where a tokenizer for the model is registered (``register_tokenizer``); else the
  prompt's UTF-8 bytes plus that framing (no byte-level tokenizer makes more tokens than
  the text has bytes);
- an **estimate**, the best guess of what the provider bills, for what failed attempts
  are charged when no usage came back: the tokenizer's count plus framing, else about
  four characters a token and three a message (the role and separators).

A tokenizer's count takes in an output schema sent beside the messages (a turn's
``output``, which OpenAI takes as ``response_format`` and bills as input, though the
prompt's instruction says it too) as one more message. The byte bound needs no more: the
instruction's copy of the schema has several bytes a token.

Tokenizers come from two places: a model provider's plugin registers one for its models
(``register(name, factory, tokenizer=...)`` in ``register_models``: ``tokenizer(model_name,
options)`` gives a count, or None for a model it cannot count), and code registers one by
a prefix of the model's label (``register_tokenizer("acme/", count)``; the longest prefix
wins, and it comes before the provider's). A provider's ``tokenizer`` is asked once per
label per plugin manager and its answer kept, None too: a label it has no count for is
bounded by bytes on every later turn without asking again (nor a worker thread), until
that plugin manager's plugins change; a new plugin manager asks again. The answers of
the last ``MAX_ASKED`` labels are kept (a long-running ``dlg serve`` or a batch of
thousands of specs grows no further), and a provider slow to answer for one label keeps
no other label waiting. The ``openai``
plugin registers OpenAI's encodings (tiktoken) where their files are already in
tiktoken's cache; the embedded model's engine (``xllamacpp``) offers no way to tokenize
without running the model.
"""

from __future__ import annotations

import json
import math
import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pluggy

__all__ = ["PER_MESSAGE", "PromptSize", "byte_bound", "has_tokenizer", "register_tokenizer",
           "tokenizer_for", "unregister_tokenizer"]

PER_MESSAGE = 8  # tokens a chat format adds around each message, at most
ESTIMATED_FRAMING = 3  # what it adds as a rule (a message's role and separators)

MAX_ASKED = 1024  # labels whose provider's answer is kept per plugin manager, at most

_TOKENIZERS: dict[str, Callable[[str], int]] = {}
# per plugin manager, a label's answer from its provider's ``tokenizer`` (``_asked``)
_ASKED: weakref.WeakKeyDictionary[Any, dict[str, tuple[Any, Callable[[str], int] | None]]] = (
    weakref.WeakKeyDictionary())
# per label being asked, held while its provider is asked (loading may take 0.2 s): one
# label's slow load keeps no other label waiting (the event loop may ask for a fallback's)
_ASKING: dict[tuple[int, str], threading.Lock] = {}
_keeping = threading.Lock()  # held while the answers and the locks above change


def register_tokenizer(prefix: str, count: Callable[[str], int]) -> None:
    """Count the prompts of the models whose label starts with ``prefix`` with ``count``
    (a text's number of tokens, as the model's tokenizer makes them)."""
    if not callable(count):
        raise TypeError(f"the tokenizer for '{prefix}' must be callable")
    _TOKENIZERS[prefix] = count


def unregister_tokenizer(prefix: str) -> None:
    _TOKENIZERS.pop(prefix, None)


def tokenizer_for(label: str | None, pm: pluggy.PluginManager | None = None
                  ) -> Callable[[str], int] | None:
    """The tokenizer registered for ``label`` (the longest matching prefix), else the one
    its provider's plugin gives for a spec label (``provider:model?options``; the plugins
    of ``pm``, else of the process's plugin manager if it was built), or None."""
    if not label:
        return None
    found = [p for p in _TOKENIZERS if label.startswith(p)]
    if found:
        return _TOKENIZERS[max(found, key=len)]
    return _provider_tokenizer(label, pm)


def has_tokenizer(label: str | None, pm: pluggy.PluginManager | None = None) -> bool:
    """Whether ``label`` may have a tokenizer (one registered by a prefix, or its provider
    offers them), without making it: an encoding's file may be read the first time."""
    if not label:
        return False
    if any(label.startswith(p) for p in _TOKENIZERS):
        return True
    from dlg import registrations
    from dlg.models.spec import ModelSpec
    from dlg.plugin_manager import current_plugin_manager

    pm = pm or current_plugin_manager()
    if pm is None or ":" not in label:
        return False
    try:
        provider = registrations.model_providers(pm).get(ModelSpec.parse(label).provider)
    except Exception:
        return False
    if provider is None or provider.tokenizer is None:
        return False
    # its provider found none for it already: no worker thread to ask it again
    asked = _ASKED.get(pm, {}).get(label)
    return asked is None or asked[0] is not provider or asked[1] is not None


def _provider_tokenizer(label: str, pm: pluggy.PluginManager | None
                        ) -> Callable[[str], int] | None:
    from dlg import registrations
    from dlg.models.spec import ModelSpec
    from dlg.plugin_manager import current_plugin_manager

    pm = pm or current_plugin_manager()
    if pm is None or ":" not in label:
        return None
    try:
        spec = ModelSpec.parse(label)
        provider = registrations.model_providers(pm).get(spec.provider)
    except Exception:  # a bad spec: no tokenizer, the byte bound
        return None
    if provider is None or provider.tokenizer is None:
        return None
    asked = _asked(pm)
    found = asked.get(label)
    if found is None or found[0] is not provider:  # not asked yet (or its plugins changed)
        key = (id(pm), label)
        with _keeping:
            asking = _ASKING.setdefault(key, threading.Lock())
        try:
            with asking:
                found = asked.get(label)
                if found is None or found[0] is not provider:
                    try:
                        count = provider.tokenizer(spec.model, dict(spec.options))
                    except Exception:  # a plugin's mistake: no tokenizer, the byte bound
                        count = None
                    found = (provider, count if callable(count) else None)
                    _keep(asked, label, found)
        finally:
            with _keeping:
                if _ASKING.get(key) is asking and not asking.locked():
                    del _ASKING[key]
    return found[1]


def _keep(asked: dict[str, Any], label: str, answer: tuple[Any, Any]) -> None:
    """Keep ``answer`` for ``label``, the oldest answer dropped past ``MAX_ASKED``."""
    with _keeping:
        asked.pop(label, None)
        while len(asked) >= MAX_ASKED:
            del asked[next(iter(asked))]
        asked[label] = answer


def _asked(pm: pluggy.PluginManager) -> dict[str, tuple[Any, Callable[[str], int] | None]]:
    """What ``pm``'s providers answered for each label: the provider asked (its plugins
    may change) and the count it gave, None for none. Kept per plugin manager, dropped
    with it, so a test's or an embedder's later one asks again."""
    found = _ASKED.get(pm)
    if found is None:
        with _keeping:
            found = _ASKED.setdefault(pm, {})
    return found


def _current() -> Any:
    from dlg.plugin_manager import current_plugin_manager

    return current_plugin_manager()


def _texts(messages: Any) -> list[str]:
    if isinstance(messages, str):
        return [messages]
    return [str(getattr(m, "content", m)) for m in messages]


def _framing(messages: Any) -> int:
    """The chat format's tokens around the messages, at most."""
    if isinstance(messages, str):
        return 2 * PER_MESSAGE
    return PER_MESSAGE * (1 + len(messages))


def byte_bound(messages: Any) -> int:
    """An upper bound on the prompt's tokens without a tokenizer: UTF-8 bytes plus
    framing."""
    return sum(len(t.encode("utf-8")) for t in _texts(messages)) + _framing(messages)


class PromptSize:
    """One prompt's tokens for any model (see the module docstring); each model's count is
    made once. ``int(size)`` is the byte bound (no model named)."""

    __slots__ = ("_counted", "_pm", "_schema", "messages")

    def __init__(self, messages: Any, pm: pluggy.PluginManager | None = None,
                 schema: Any = None):
        self.messages = messages
        self._pm = pm  # whose providers' tokenizers count it (None: the process's)
        # an output schema sent beside the messages (OpenAI's ``response_format``), which
        # providers bill as input though the prompt's instruction says it too
        self._schema = None if schema is None else json.dumps(schema, ensure_ascii=False)
        self._counted: dict[str, int | None] = {}

    def counted(self, label: str | None) -> int | None:
        """The model's tokenizer's count plus framing, or None without a tokenizer (or if
        it failed)."""
        if not label:
            return None
        if label not in self._counted:
            try:
                count = tokenizer_for(label, self._pm)
                n = None if count is None else sum(int(count(t)) for t in self._all())
            except Exception:  # a tokenizer that breaks: the byte bound stands in
                n = None
            self._counted[label] = None if n is None or n < 0 else n + self._framing()
        return self._counted[label]

    def uncounted(self, labels: Any) -> list[str]:
        """The ``labels`` whose count is still to be made by a tokenizer: made in a worker
        thread (``count``) by an async caller, since loading an encoding or counting a
        long prompt would stall its event loop."""
        return [label for label in dict.fromkeys(labels) if label
                and label not in self._counted and has_tokenizer(label, self._pm)]

    def unasked(self, labels: Any) -> list[str]:
        """The ``labels`` whose provider's ``tokenizer`` is still to be asked (``count``'s
        ``ask``, in a worker thread: it may load an encoding)."""
        pm = self._pm or _current()
        if pm is None:
            return []
        answers = _asked(pm)
        out = []
        for label in dict.fromkeys(labels):
            if (not label or label in self._counted or label in answers
                    or any(label.startswith(p) for p in _TOKENIZERS)):
                continue
            if has_tokenizer(label, pm):
                out.append(label)
            else:  # its provider has none: kept so, not looked up again each turn
                _keep(answers, label, (None, None))
        return out

    def count(self, labels: Any, ask: Any = ()) -> None:
        """Count the prompt for each of ``labels`` now (``counted`` keeps it), and ask the
        providers of ``ask`` for their tokenizer (kept per label, see the module's
        docstring) without counting it."""
        for label in labels:
            self.counted(label)
        for label in ask:
            tokenizer_for(label, self._pm)

    def _all(self) -> list[str]:
        """The texts a provider bills: the messages', and the schema sent beside them."""
        texts = _texts(self.messages)
        return texts if self._schema is None else [*texts, self._schema]

    def _framing(self) -> int:
        return _framing(self.messages) + (0 if self._schema is None else PER_MESSAGE)

    def bound(self, label: str | None = None) -> int:
        counted = self.counted(label)
        return byte_bound(self.messages) if counted is None else counted

    def estimate(self, label: str | None = None) -> int:
        counted = self.counted(label)
        if counted is not None:
            return counted
        chars = sum(len(t) for t in _texts(self.messages))
        return math.ceil(chars / 4) + ESTIMATED_FRAMING * (1 + len(_texts(self.messages)))

    def __int__(self) -> int:
        return byte_bound(self.messages)
