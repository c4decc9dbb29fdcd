"""The models of a dialogue (or an orchestrator): made once per spec and event loop,
lazily, off the event loop, from the providers plugins register.

A model made for one event loop is not used in another: its HTTP client's pooled
connections belong to the loop that opened them, and a call in the next loop (the next
task on a reused Ray worker, the next ``run_sync``) failed with "Event loop is closed".
So each loop gets models of its own, and when the loop ends what they hold open is
closed: a model's own ``aclose()``, else its ``http_async_client`` (LangChain's field for
a client it was given), as providers give each model a client of its own."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from dlg.errors import ModelError, UnknownModelError
from dlg.models.spec import ModelSpec, endpoint, model_label, resolve_secrets

if TYPE_CHECKING:
    import pluggy

    from dlg.models.catalog import ModelRegistry

__all__ = ["ModelPool"]


class ModelPool:
    """Creates chat models lazily, once per spec and event loop, for one dialogue (or one
    orchestrator); see the module docstring."""

    def __init__(self, pm: pluggy.PluginManager | None = None,
                 registry: ModelRegistry | Callable[[], ModelRegistry] | None = None):
        self._pm = pm
        self._registry = registry  # a ModelRegistry, a function returning one, or None
        self._models: dict[str, Any] = {}  # made outside any event loop, not used in one
        self._in_loop: dict[Any, dict[str, Any]] = {}  # each event loop's models
        self._closers: dict[Any, Any] = {}  # each loop's: closes its models as it ends
        self._safe_labels: dict[str, str] = {}

    @property
    def plugin_manager(self) -> pluggy.PluginManager | None:
        """Whose providers make (and count the prompts of) this pool's models."""
        return self._pm

    def problem(self, spec: str) -> str | None:
        """Why ``spec`` cannot run here (unknown provider, missing package or key), if so."""
        from dlg import registrations

        parsed = ModelSpec.parse(spec)
        providers = registrations.model_providers(self._pm)
        provider = providers.get(parsed.provider)
        if provider is None:
            return self._no_provider(spec, parsed.provider, providers)
        try:
            options = resolve_secrets(dict(parsed.options))
        except ModelError as exc:
            return str(exc)
        from dlg.models.pacing import option_problem, without_limit_options

        bad = option_problem(options)  # rpm=, tpm=: dlg's pacing, not the provider's
        if bad is not None:
            return bad
        return provider.problem(parsed.model, without_limit_options(options), self._registry)

    def _no_provider(self, spec: str, name: str, providers: Mapping[str, Any]) -> str:
        """Why ``spec`` names no provider, with the spec meant: a registry model of that
        name (``gpt-4o``: ``openai:gpt-4o``, its options kept), else the closest
        provider."""
        import difflib

        installed = ", ".join(sorted(providers))
        meant = self._registry_spec(spec)
        if meant is not None:
            return (f"no provider '{name}' is installed; did you mean '{meant}'? (a model "
                    f"is given as provider:model; installed: {installed})")
        close = difflib.get_close_matches(name, list(providers), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        return f"no provider '{name}' is installed{hint} (installed: {installed})"

    def _registry_spec(self, spec: str) -> str | None:
        """The registry's ``provider:model`` whose model is named by ``spec`` (or is
        closest to it), with ``spec``'s options; None if none is."""
        import difflib

        from dlg.errors import DlgError
        from dlg.models.catalog import ModelRegistry, spec_key

        try:
            registry = self._registry() if callable(self._registry) else self._registry
            if registry is None:
                registry = ModelRegistry.load(pm=self._pm)
        except DlgError:  # a broken registry file is reported where it is used
            return None
        name, _, options = spec.partition("?")
        # the shortest spec of a model name wins (openai:gpt-4o, not a longer provider's)
        by_model = {key.partition(":")[2]: key
                    for key in sorted(registry.models, key=len, reverse=True) if ":" in key}
        close = difflib.get_close_matches(spec_key(name), list(by_model), n=1, cutoff=0.8)
        if not close:
            return None
        return by_model[close[0]] + (f"?{options}" if options else "")

    def check(self, spec: str) -> None:
        """Raise now if ``spec`` cannot run: an unknown provider, a missing package or key."""
        problem = self.problem(spec)
        if problem is None:
            return
        shown = self.safe_label(spec)  # a key given in the spec is not repeated
        if problem.startswith("no provider"):
            raise UnknownModelError(f"'{shown}' is not a known model: {problem}")
        raise ModelError(f"'{shown}' cannot run: {problem}")

    @staticmethod
    def check_given(model: Any, models: Mapping[str, Any], pool: Any) -> None:
        """Each model given to an orchestrator is a spec, a chat model (something with
        ``ainvoke``) or None: a wrong value fails here, not as an ``AttributeError`` when
        its first turn runs."""
        given = [("as model=", model),
                 *((f"for participant '{k}'", m) for k, m in models.items())]
        if isinstance(pool, Mapping):
            given += [(f"as pool model '{k}'", m) for k, m in pool.items()]
        elif pool is not None:
            given += [("in the pool", m) for m in pool]
        for where, value in given:
            if value is not None and not isinstance(value, str) and not callable(
                    getattr(value, "ainvoke", None)):
                raise ModelError(f"{value!r:.60} (given {where}) is not a model: give a "
                                 "model spec ('openai:gpt-4o', 'echo') or a LangChain chat "
                                 "model")

    def where(self, model: Any) -> frozenset[str]:
        """Where a chat model (an object) sends its calls: the endpoint it states, else
        the one its provider's plugin says its client takes from the environment
        (``register(endpoint_of=...)``); empty: the provider's own endpoint."""
        stated = frozenset(v for _, v in endpoint(model))
        if stated:
            return stated
        from dlg import registrations

        found = registrations.endpoint_of(model, self._pm)
        return frozenset() if found is None else frozenset({found})

    @staticmethod
    def label(spec_or_model: Any) -> str:
        """The model's name: the spec itself, or a model instance's name."""
        return spec_or_model if isinstance(spec_or_model, str) else model_label(spec_or_model)

    def safe_label(self, spec_or_model: Any) -> str:
        """``label`` with secrets (``?api_key=...``) redacted, for records and logs;
        computed once per label (redaction scans the environment, so it is not free)."""
        label = self.label(spec_or_model)
        safe = self._safe_labels.get(label)
        if safe is None:
            from dlg.observability.redact import redact

            safe = self._safe_labels[label] = redact(label)
        return safe

    def cached(self, spec_or_model: Any) -> tuple[Any, str] | None:
        """The model if it needs no creating (an instance, or a spec already made for
        the event loop running here)."""
        if not isinstance(spec_or_model, str):
            return spec_or_model, model_label(spec_or_model)
        loop = _running_loop()
        models = self._models if loop is None else self._in_loop.get(loop, {})
        model = models.get(spec_or_model)
        return None if model is None else (model, spec_or_model)

    async def aget(self, spec_or_model: Any) -> tuple[Any, str]:
        """``get`` for async code, for the event loop running it: a model that must be
        created (which imports its provider's package) is created in a worker thread, off
        the event loop."""
        found = self.cached(spec_or_model)
        if found is not None:
            return found
        loop = _running_loop()
        if loop is None:  # not asyncio's: one model per spec, as outside a loop
            import anyio

            return await anyio.to_thread.run_sync(self.get, spec_or_model)
        # one made outside any loop (to check it before the run) and never used: this
        # loop's now, and no other's
        model = self._models.pop(spec_or_model, None)
        if model is None:
            import anyio

            model = await anyio.to_thread.run_sync(self._make, spec_or_model)
        models = self._in_loop.get(loop)
        if models is None:
            models = self._in_loop[loop] = {}
            await self._close_with(loop, models)
        # two calls in the same loop may both have made one: the first kept is used
        return models.setdefault(spec_or_model, model), spec_or_model

    async def _close_with(self, loop: Any, models: dict[str, Any]) -> None:
        """Close ``models`` as ``loop`` ends. An async generator the loop has started is
        finalized by the loop as it shuts down (``asyncio.run``, ``anyio.run``: their
        ``shutdown_asyncgens``), in the loop, where the models' clients can close."""
        for old in [other for other in self._in_loop if other.is_closed()]:
            self._in_loop.pop(old, None)  # a loop closed without finalizing: forget it
            self._closers.pop(old, None)

        async def closing() -> Any:
            try:
                yield
            finally:
                self._in_loop.pop(loop, None)
                self._closers.pop(loop, None)
                for model in list(models.values()):
                    await _aclose(model)

        closer = closing()
        await closer.__anext__()
        self._closers[loop] = closer  # the loop holds the generators it runs weakly

    def get(self, spec_or_model: Any) -> tuple[Any, str]:
        """The chat model for a spec (or instance), and its label, for code outside an
        event loop (async code uses ``aget``: a model per loop)."""
        if not isinstance(spec_or_model, str):
            return spec_or_model, model_label(spec_or_model)
        model = self._models.get(spec_or_model)
        if model is None:
            model = self._models[spec_or_model] = self._make(spec_or_model)
        return model, spec_or_model

    def _make(self, spec_or_model: str) -> Any:
        """A new chat model for the spec, from its provider."""
        from dlg import registrations

        self.check(spec_or_model)
        parsed = ModelSpec.parse(spec_or_model)
        provider = registrations.model_providers(self._pm)[parsed.provider]
        try:
            from dlg.models.pacing import without_limit_options

            model = provider.make(parsed.model, without_limit_options(
                resolve_secrets(dict(parsed.options))), self._registry)
        except ModelError:
            raise
        except Exception as exc:
            from dlg.observability.redact import redact

            raise ModelError(redact(
                f"provider '{parsed.provider}' could not create '{spec_or_model}': "
                f"{_described(exc)}")) from exc
        return model


def _running_loop() -> Any:
    """The asyncio event loop running in this thread, or None."""
    import asyncio

    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


async def _aclose(model: Any) -> None:
    """Close what a model holds open (see the module docstring); a model that fails to
    close is left to the garbage collector, and does not stop the others closing."""
    close = getattr(model, "aclose", None)
    if not callable(close):
        close = getattr(getattr(model, "http_async_client", None), "aclose", None)
    if callable(close):
        import contextlib

        with contextlib.suppress(Exception):  # a courtesy: the run has ended
            await close()


def _described(exc: Exception) -> str:
    """Why a provider could not make a model, in a line: a chat model's own check of its
    options (pydantic's, for every LangChain model) names each option and what is wrong
    with the value given, without pydantic's links."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        return "; ".join(
            f"option '{'.'.join(map(str, e['loc'])) or '?'}': {e['msg'][:1].lower()}"
            f"{e['msg'][1:]} (given {e.get('input')!r:.60})" for e in exc.errors())
    return f"{type(exc).__name__}: {exc}"
